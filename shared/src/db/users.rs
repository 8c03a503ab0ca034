//! SQL for `users`.

use crate::domain::UserId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// The unique index that makes an email belong to one account.
pub const EMAIL_KEY: &str = "users_email_key";

/// A user as the api shows it: never with the password hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub full_name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What login needs to check a password.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    pub id: UserId,
    pub password_hash: String,
}

/// Inserts a user; a taken email violates [`EMAIL_KEY`]. `email` must be lower-cased.
pub async fn insert(
    conn: &mut PgConnection,
    email: &str,
    password_hash: &str,
    full_name: Option<&str>,
) -> Result<User, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO users (id, email, password_hash, full_name)
         VALUES ($1, $2, $3, $4)
         RETURNING id, email, full_name, created_at",
    )
    .bind(UserId::new())
    .bind(email)
    .bind(password_hash)
    .bind(full_name)
    .fetch_one(conn)
    .await
}

/// The credentials of the user with this (lower-cased) email, if any.
pub async fn find_credentials(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(conn)
        .await
}

/// The user, if they exist.
pub async fn find(conn: &mut PgConnection, id: UserId) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, full_name, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Deletes a user and, by cascade, everything they own.
pub async fn delete(conn: &mut PgConnection, id: UserId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the user exists: what a valid token's `sub` is checked against.
pub async fn exists(conn: &mut PgConnection, id: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(id)
        .fetch_one(conn)
        .await
}
