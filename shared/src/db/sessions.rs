//! SQL for `interview_sessions`. Reads and writes made for a user are scoped to that
//! user. The question counter is advanced only by the worker's one commit statement
//! (`super::attempt::complete`), which is what keeps question numbers gap-free.

use crate::domain::{JobPostingId, SessionId, SessionStatus, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// An interview session.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    /// `null` once the job posting was deleted.
    pub job_posting_id: Option<JobPostingId>,
    pub status: SessionStatus,
    /// Questions generated so far.
    pub current_question_number: i32,
    /// Questions the interview asks at most (1–50); `null`: no limit.
    pub question_limit: Option<i32>,
    /// Questions that can still be asked: the limit less the questions generated and
    /// those being generated; `null` without a limit.
    pub questions_remaining: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `questions_remaining` of a row of `interview_sessions`: the limit less the questions
/// generated and the question operations unfinished (a few rows of a partial index).
macro_rules! questions_remaining {
    () => {
        "CASE WHEN question_limit IS NULL THEN NULL ELSE greatest(0,
             question_limit - current_question_number
             - (SELECT count(*) FROM operations o
                WHERE o.session_id = interview_sessions.id
                  AND o.operation_type = 'question_generation'
                  AND o.status IN ('pending', 'processing')))::int4
         END"
    };
}

/// The columns of [`Session`], in its fields' order: one list for every statement that
/// returns a session, so a new column cannot be forgotten in one of them. A macro so
/// that the statements stay `&'static str` (sqlx refuses SQL built at run time).
macro_rules! session_columns {
    () => {
        concat!(
            "id, user_id, job_posting_id, status, current_question_number, question_limit, ",
            questions_remaining!(),
            " AS questions_remaining, created_at, updated_at"
        )
    };
}

/// Starts a session on a job posting, only if `user_id` owns the posting: `None` when
/// it does not exist or is someone else's. One statement, so no race with a delete.
pub async fn insert_for_posting(
    conn: &mut PgConnection,
    user_id: UserId,
    job_posting_id: JobPostingId,
    question_limit: Option<i32>,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO interview_sessions (id, user_id, job_posting_id, question_limit)
         SELECT $1, jp.user_id, jp.id, $4 FROM job_postings jp WHERE jp.id = $2 AND jp.user_id = $3
         RETURNING ",
        session_columns!()
    ))
    .bind(SessionId::new())
    .bind(job_posting_id)
    .bind(user_id)
    .bind(question_limit)
    .fetch_optional(conn)
    .await
}

/// One page of the user's sessions, newest first.
pub async fn list(
    conn: &mut PgConnection,
    user_id: UserId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM interview_sessions WHERE user_id = $1
         ORDER BY created_at DESC, id DESC
         LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many sessions the user has.
pub async fn count(conn: &mut PgConnection, user_id: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM interview_sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// The session, if it exists and belongs to `user_id`.
pub async fn find_owned(
    conn: &mut PgConnection,
    id: SessionId,
    user_id: UserId,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM interview_sessions WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Like [`find_owned`], and holds the row lock until the transaction ends, so a status
/// check and what depends on it see the same status.
///
/// Spelled out beside [`find_owned`] rather than folded into it behind a flag: whether a
/// statement takes a row lock is a decision the reader of the caller must see by name.
pub async fn lock_owned(
    conn: &mut PgConnection,
    id: SessionId,
    user_id: UserId,
) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM interview_sessions WHERE id = $1 AND user_id = $2
         FOR UPDATE"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// The session, whoever owns it: for the worker, which acts for the owner already.
pub async fn find(conn: &mut PgConnection, id: SessionId) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        session_columns!(),
        " FROM interview_sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The session's `questions_remaining`, read afresh: call it after [`lock_owned`] when
/// deciding on it. The row that a locking read returns is re-read once the lock is
/// granted, but a subquery in it still sees the statement's first snapshot, so the
/// figure in that row can miss an operation committed while it waited for the lock.
pub async fn questions_remaining(
    conn: &mut PgConnection,
    id: SessionId,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "SELECT ",
        questions_remaining!(),
        " FROM interview_sessions WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Sets the status (the caller has checked the transition under [`lock_owned`]).
pub async fn set_status(
    conn: &mut PgConnection,
    id: SessionId,
    status: SessionStatus,
) -> Result<Session, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE interview_sessions SET status = $2, updated_at = now()
         WHERE id = $1
         RETURNING ",
        session_columns!()
    ))
    .bind(id)
    .bind(status)
    .fetch_one(conn)
    .await
}

/// Deletes the session (the caller holds its lock, from [`lock_owned`], and has ended
/// its unfinished operations); its messages go with it, its operations stay with
/// `session_id` NULL.
pub async fn delete(conn: &mut PgConnection, id: SessionId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks every session of the user, in one order, before the user's deletion cascades
/// to them: a worker's commit takes a session's row before its operation's, and so
/// does this, so the two never wait on each other in a circle.
pub async fn lock_all_of_user(conn: &mut PgConnection, user_id: UserId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM interview_sessions WHERE user_id = $1 ORDER BY id FOR UPDATE")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}
