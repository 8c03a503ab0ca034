//! SQL for `operations`: the client-visible record of a question generation or a
//! feedback analysis.
//!
//! State changes are guarded in SQL (`WHERE status IN …`), so a second delivery of a
//! job, or a worker racing another, can never move an operation backwards or finish it
//! twice. Reaching `completed` or `failed` fires the `operation_finished` NOTIFY
//! (trigger in the migration), which wakes long-polls when the change commits.

use crate::domain::{MessageId, OperationId, OperationStatus, OperationType, SessionId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool};
use utoipa::ToSchema;

/// An operation as the client sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Operation {
    pub id: OperationId,
    pub operation_type: OperationType,
    pub status: OperationStatus,
    /// For a completed `question_generation`:
    /// `{question_text, question_type, message_id, question_number}`; for a completed
    /// `feedback_analysis`: `{message_id, answer_id, score, strengths, improvements,
    /// summary}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Json<serde_json::Value>>,
    /// Set only when `failed`: a sentence for a person.
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`Operation`], in its fields' order: one list for every statement
/// that returns an operation, so a new column cannot be forgotten in one of them. A
/// macro for the same reason as `session_columns!` in [`super::sessions`].
macro_rules! operation_columns {
    () => {
        "id, operation_type, status, result, error_message, created_at, updated_at"
    };
}

/// An operation found by its idempotency key, with what it was made for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Keyed {
    #[sqlx(flatten)]
    pub operation: Operation,
    pub session_id: Option<SessionId>,
    /// The answer a feedback analyses.
    pub answer_id: Option<MessageId>,
}

/// What a new operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The session's next question.
    Question(SessionId),
    /// Feedback on an answer of the session.
    Feedback(SessionId, MessageId),
}

/// Inserts a `pending` operation for `target`. With an idempotency key that the user
/// has used already, nothing is inserted and `None` comes back: the database decides,
/// so concurrent requests with one key create one operation.
pub async fn insert(
    conn: &mut PgConnection,
    id: OperationId,
    user_id: UserId,
    target: Target,
    idempotency_key: Option<&str>,
) -> Result<Option<Operation>, sqlx::Error> {
    let (kind, session_id, answer_id) = match target {
        Target::Question(session) => (OperationType::QuestionGeneration, session, None),
        Target::Feedback(session, answer) => {
            (OperationType::FeedbackAnalysis, session, Some(answer))
        }
    };
    sqlx::query_as(concat!(
        "INSERT INTO operations (id, user_id, session_id, operation_type, answer_id, idempotency_key)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT ON CONSTRAINT operations_user_idempotency_key DO NOTHING
         RETURNING ",
        operation_columns!()
    ))
    .bind(id)
    .bind(user_id)
    .bind(session_id)
    .bind(kind)
    .bind(answer_id)
    .bind(idempotency_key)
    .fetch_optional(conn)
    .await
}

/// Inserts a `pending` question generation ([`insert`] of a [`Target::Question`]).
pub async fn insert_question_generation(
    conn: &mut PgConnection,
    id: OperationId,
    user_id: UserId,
    session_id: SessionId,
    idempotency_key: Option<&str>,
) -> Result<Option<Operation>, sqlx::Error> {
    insert(
        conn,
        id,
        user_id,
        Target::Question(session_id),
        idempotency_key,
    )
    .await
}

/// The feedback on `answer_id` that counts: the one not failed, if any (the index
/// `operations_feedback_answer_key` allows one).
pub async fn feedback_of_answer(
    conn: &mut PgConnection,
    answer_id: MessageId,
) -> Result<Option<Operation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        operation_columns!(),
        " FROM operations WHERE answer_id = $1 AND status <> 'failed'"
    ))
    .bind(answer_id)
    .fetch_optional(conn)
    .await
}

/// The user's operation holding this idempotency key, if any.
pub async fn find_by_idempotency_key(
    conn: &mut PgConnection,
    user_id: UserId,
    key: &str,
) -> Result<Option<Keyed>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        operation_columns!(),
        ", session_id, answer_id
         FROM operations WHERE user_id = $1 AND idempotency_key = $2"
    ))
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Frees the key from an operation older than `ttl_secs`, so the key can start a new
/// one: a key is only a promise for 24 hours.
pub async fn release_expired_key(
    conn: &mut PgConnection,
    user_id: UserId,
    key: &str,
    ttl_secs: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operations SET idempotency_key = NULL
         WHERE user_id = $1 AND idempotency_key = $2
           AND created_at < now() - make_interval(secs => $3)",
    )
    .bind(user_id)
    .bind(key)
    .bind(ttl_secs as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// The operation, if it exists and belongs to `user_id`.
pub async fn find_owned(
    conn: &mut PgConnection,
    id: OperationId,
    user_id: UserId,
) -> Result<Option<Operation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        operation_columns!(),
        " FROM operations WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// The session an operation of `user_id` was made for: `None` when there is no such
/// operation, `Some(None)` when its session is gone.
pub async fn session_of_owned(
    conn: &mut PgConnection,
    id: OperationId,
    user_id: UserId,
) -> Result<Option<Option<SessionId>>, sqlx::Error> {
    sqlx::query_scalar("SELECT session_id FROM operations WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The sentence a cancelled operation fails with.
pub const CANCELLED: &str = "Cancelled.";

/// Fails a `pending` or `processing` operation of `user_id` as [`CANCELLED`]; `None`
/// when it has already finished or is not theirs. A worker holding it then finds it
/// finished at its commit and discards its answer.
pub async fn cancel(
    conn: &mut PgConnection,
    id: OperationId,
    user_id: UserId,
) -> Result<Option<Operation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE operations
         SET status = 'failed', error_message = $3, updated_at = now()
         WHERE id = $1 AND user_id = $2 AND status IN ('pending', 'processing')
         RETURNING ",
        operation_columns!()
    ))
    .bind(id)
    .bind(user_id)
    .bind(CANCELLED)
    .fetch_optional(conn)
    .await
}

/// The sentence a question fails with when its interview session is deleted before
/// it ends (by the api's delete, or found gone by the worker).
pub const SESSION_GONE: &str =
    "The question could not be generated: the interview session no longer exists.";
/// [`SESSION_GONE`] of a feedback.
pub const FEEDBACK_SESSION_GONE: &str =
    "The feedback could not be generated: the interview session no longer exists.";

/// Fails every unfinished operation of the session with its type's "no longer exists"
/// sentence ([`SESSION_GONE`], [`FEEDBACK_SESSION_GONE`]); their ids.
/// The caller holds the session's row lock (the order every writer keeps: the session,
/// then its operations) and ends their jobs ([`super::queue::kill_unstarted_all`]).
pub async fn fail_unfinished_of_session(
    conn: &mut PgConnection,
    session_id: SessionId,
) -> Result<Vec<OperationId>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE operations
         SET status = 'failed', updated_at = now(),
             error_message = CASE operation_type WHEN 'feedback_analysis' THEN $3 ELSE $2 END
         WHERE session_id = $1 AND status IN ('pending', 'processing')
         RETURNING id",
    )
    .bind(session_id)
    .bind(SESSION_GONE)
    .bind(FEEDBACK_SESSION_GONE)
    .fetch_all(conn)
    .await
}

/// The user's unfinished operations.
pub async fn unfinished_of_user(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<Vec<OperationId>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM operations WHERE user_id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The operation, whoever owns it.
pub async fn find(
    conn: &mut PgConnection,
    id: OperationId,
) -> Result<Option<Operation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        operation_columns!(),
        " FROM operations WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Fails the operation with a sentence for a person, unless it already ended.
///
/// Takes the operation's session row first, then the operation's: the order of every
/// writer of a session (the api's generate and cancel, the worker's commit), which the
/// `operations_release_next_question` trigger would otherwise reverse (it locks the
/// session after this update has locked the operation), so a cancel racing this write
/// could deadlock. Both happen in a transaction of their own, or in a savepoint of the
/// caller's, so the lock lasts until the update's end whatever `conn` is.
pub async fn fail(
    conn: &mut PgConnection,
    id: OperationId,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(
        "SELECT 1 FROM interview_sessions
         WHERE id = (SELECT session_id FROM operations WHERE id = $1)
         FOR UPDATE",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "UPDATE operations
         SET status = 'failed', error_message = $2, updated_at = now()
         WHERE id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(id)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Adds to what the operation has cost at the provider: `calls` model calls and
/// `waited_ms` of waiting on it. Written at each wait and when an attempt ends without
/// its question, so that the wait budget (`LLM_MAX_WAIT_SECS`) holds across attempts
/// and workers. Returns whether the operation is still unfinished: one cancelled (or
/// failed elsewhere) while its job waited needs no more calls.
pub async fn add_provider_cost(
    conn: &mut PgConnection,
    id: OperationId,
    calls: u32,
    waited_ms: u64,
) -> Result<bool, sqlx::Error> {
    let unfinished: Option<bool> = sqlx::query_scalar(
        "UPDATE operations
         SET model_calls = model_calls + $2, waited_ms = waited_ms + $3
         WHERE id = $1
         RETURNING status IN ('pending', 'processing')",
    )
    .bind(id)
    .bind(i32::try_from(calls).unwrap_or(i32::MAX))
    .bind(i64::try_from(waited_ms).unwrap_or(i64::MAX))
    .fetch_optional(conn)
    .await?;
    Ok(unfinished == Some(true))
}

/// A session's unfinished operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Unfinished {
    /// Of every type: what the api's cap per session counts.
    pub all: i64,
    /// Question generations: a new one waits for these (one question at a time).
    pub questions: i64,
}

/// How many operations of the session have not finished: the api's cap per session,
/// and whether a new question must wait for an earlier one.
pub async fn count_unfinished(
    conn: &mut PgConnection,
    session_id: SessionId,
) -> Result<Unfinished, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS \"all\",
                count(*) FILTER (WHERE operation_type = 'question_generation') AS questions
         FROM operations
         WHERE session_id = $1 AND status IN ('pending', 'processing')",
    )
    .bind(session_id)
    .fetch_one(conn)
    .await
}

/// One page of the session's operations in `statuses`, in the order they were
/// accepted (the order they run in).
pub async fn page_of_session(
    conn: &mut PgConnection,
    session_id: SessionId,
    statuses: &[&str],
    limit: i64,
    offset: i64,
) -> Result<Vec<Operation>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        operation_columns!(),
        " FROM operations WHERE session_id = $1 AND status = ANY($2)
         ORDER BY accepted_seq
         LIMIT $3 OFFSET $4"
    ))
    .bind(session_id)
    .bind(statuses)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many of the session's operations are in `statuses`.
pub async fn count_of_session(
    conn: &mut PgConnection,
    session_id: SessionId,
    statuses: &[&str],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM operations WHERE session_id = $1 AND status = ANY($2)")
        .bind(session_id)
        .bind(statuses)
        .fetch_one(conn)
        .await
}

/// How many operations are unfinished, in each of `pending` and `processing` (absent
/// statuses have none): through `operations_session_unfinished_idx` read whole, which
/// holds only those, so the cost follows the work in play, not the days of finished
/// operations kept.
/// Finished ones are counted apart, rarely ([`super::ended_counts`]).
pub async fn count_unfinished_by_status(
    pool: &PgPool,
) -> Result<Vec<(OperationStatus, i64)>, sqlx::Error> {
    sqlx::query_as(COUNT_UNFINISHED_BY_STATUS)
        .fetch_all(pool)
        .await
}

/// [`count_unfinished_by_status`]' statement, public so that a test can check that its
/// plan reads the index, not the table.
pub const COUNT_UNFINISHED_BY_STATUS: &str = "SELECT status, count(*) FROM operations
     WHERE status IN ('pending', 'processing') GROUP BY status";
