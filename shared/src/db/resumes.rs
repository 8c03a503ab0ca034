//! SQL for `resumes`: one per user, replaced on every write.

use crate::domain::{ResumeId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// A user's resume.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Resume {
    pub id: ResumeId,
    pub user_id: UserId,
    pub content: String,
    pub updated_at: DateTime<Utc>,
}

/// The user's resume, if they stored one.
pub async fn find(conn: &mut PgConnection, user_id: UserId) -> Result<Option<Resume>, sqlx::Error> {
    sqlx::query_as("SELECT id, user_id, content, updated_at FROM resumes WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// Creates or replaces the user's resume, keeping its id across replacements.
pub async fn upsert(
    conn: &mut PgConnection,
    user_id: UserId,
    content: &str,
) -> Result<Resume, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO resumes (id, user_id, content)
         VALUES ($1, $2, $3)
         ON CONFLICT ON CONSTRAINT resumes_one_per_user
         DO UPDATE SET content = EXCLUDED.content, updated_at = now()
         RETURNING id, user_id, content, updated_at",
    )
    .bind(ResumeId::new())
    .bind(user_id)
    .bind(content)
    .fetch_one(conn)
    .await
}
