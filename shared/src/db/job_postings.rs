//! SQL for `job_postings`. Every read, change and delete is scoped to the owner, so
//! another user's posting looks exactly like a missing one.

use crate::domain::{JobPostingId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// A job posting a user practises for.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct JobPosting {
    pub id: JobPostingId,
    pub user_id: UserId,
    pub title: String,
    pub company: Option<String>,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`JobPosting`], one list for every statement that returns one (a
/// macro, so that the statements stay `&'static str`).
macro_rules! posting_columns {
    () => {
        "id, user_id, title, company, description, created_at, updated_at"
    };
}

/// Inserts a job posting owned by `user_id`.
pub async fn insert(
    conn: &mut PgConnection,
    user_id: UserId,
    title: &str,
    company: Option<&str>,
    description: &str,
) -> Result<JobPosting, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO job_postings (id, user_id, title, company, description)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING ",
        posting_columns!()
    ))
    .bind(JobPostingId::new())
    .bind(user_id)
    .bind(title)
    .bind(company)
    .bind(description)
    .fetch_one(conn)
    .await
}

/// The posting, if it exists and belongs to `user_id`.
pub async fn find_owned(
    conn: &mut PgConnection,
    id: JobPostingId,
    user_id: UserId,
) -> Result<Option<JobPosting>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        posting_columns!(),
        " FROM job_postings WHERE id = $1 AND user_id = $2"
    ))
    .bind(id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// One page of the user's postings, newest first.
pub async fn list(
    conn: &mut PgConnection,
    user_id: UserId,
    limit: i64,
    offset: i64,
) -> Result<Vec<JobPosting>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        posting_columns!(),
        " FROM job_postings WHERE user_id = $1
         ORDER BY created_at DESC, id DESC
         LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many postings the user has.
pub async fn count(conn: &mut PgConnection, user_id: UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM job_postings WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// What a change to a posting sets: `None` leaves a field as it is; `company:
/// Some(None)` clears it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change<'a> {
    pub title: Option<&'a str>,
    pub company: Option<Option<&'a str>>,
    pub description: Option<&'a str>,
}

/// Applies `change` to the posting if `user_id` owns it: `None` when it does not exist
/// or is someone else's. One statement, so no race with a delete.
pub async fn update_owned(
    conn: &mut PgConnection,
    id: JobPostingId,
    user_id: UserId,
    change: Change<'_>,
) -> Result<Option<JobPosting>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE job_postings
         SET title = coalesce($3, title),
             company = CASE WHEN $4 THEN $5 ELSE company END,
             description = coalesce($6, description),
             updated_at = now()
         WHERE id = $1 AND user_id = $2
         RETURNING ",
        posting_columns!()
    ))
    .bind(id)
    .bind(user_id)
    .bind(change.title)
    .bind(change.company.is_some())
    .bind(change.company.flatten())
    .bind(change.description)
    .fetch_optional(conn)
    .await
}

/// Deletes the posting if `user_id` owns it; its sessions keep their history with a
/// NULL `job_posting_id` (foreign key ON DELETE SET NULL).
pub async fn delete_owned(
    conn: &mut PgConnection,
    id: JobPostingId,
    user_id: UserId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM job_postings WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
