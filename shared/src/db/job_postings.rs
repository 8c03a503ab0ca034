//! SQL for `job_postings`. Every read and delete is scoped to the owner, so another
//! user's posting looks exactly like a missing one.

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
}

/// Inserts a job posting owned by `user_id`.
pub async fn insert(
    conn: &mut PgConnection,
    user_id: UserId,
    title: &str,
    company: Option<&str>,
    description: &str,
) -> Result<JobPosting, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO job_postings (id, user_id, title, company, description)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, user_id, title, company, description, created_at",
    )
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
    sqlx::query_as(
        "SELECT id, user_id, title, company, description, created_at
         FROM job_postings WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user_id)
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
