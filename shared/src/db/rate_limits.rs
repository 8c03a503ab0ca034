//! SQL for `rate_limit_counters`: per-user counts in fixed one-minute windows, kept in
//! PostgreSQL so that every api replica enforces one shared limit.

use crate::domain::UserId;
use sqlx::PgConnection;

/// The state of a user's window after one more hit.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Window {
    /// Hits in the current window, this one included.
    pub hits: i32,
    /// Seconds until the window ends and the count starts again.
    pub seconds_left: f64,
}

/// Counts one hit against `bucket` for the user and returns the window's count. The
/// upsert is atomic, so concurrent requests on any replica each get their own count.
pub async fn hit(
    conn: &mut PgConnection,
    user_id: UserId,
    bucket: &str,
) -> Result<Window, sqlx::Error> {
    // Finished windows are of no further use; dropping them here keeps the table at one
    // row per active user and bucket without a separate sweeper.
    sqlx::query(
        "DELETE FROM rate_limit_counters
         WHERE user_id = $1 AND bucket = $2 AND window_start < date_trunc('minute', now())",
    )
    .bind(user_id)
    .bind(bucket)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "INSERT INTO rate_limit_counters (user_id, bucket, window_start, hits)
         VALUES ($1, $2, date_trunc('minute', now()), 1)
         ON CONFLICT ON CONSTRAINT rate_limit_counters_pkey
         DO UPDATE SET hits = rate_limit_counters.hits + 1
         RETURNING hits,
                   extract(epoch FROM window_start + interval '1 minute' - now())::float8 AS seconds_left",
    )
    .bind(user_id)
    .bind(bucket)
    .fetch_one(conn)
    .await
}
