//! The `question_generation` job: its payload, its queue, and its enqueue inside the
//! caller's transaction.
//!
//! The api inserts the operation and pushes the job in ONE transaction (a crash between
//! two separate writes would leave an operation `pending` forever, or a job for
//! nothing). apalis' own `PostgresStorage::push` uses the pool, so we call its
//! executor-generic `push_tasks` with the caller's connection instead.

use crate::domain::{OperationId, SessionId};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// Why an enqueue failed (apalis' error type: a database error, or a payload that
/// would not encode).
pub use apalis_postgres::Error as EnqueueError;

/// The apalis queue (`apalis.jobs.job_type`) that question generations go through.
pub const QUESTION_GENERATION_QUEUE: &str = "question_generation";

/// What a worker needs to generate one question; everything else it reads fresh from
/// the database, so a job never acts on stale data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionGenerationJob {
    pub operation_id: OperationId,
    pub session_id: SessionId,
}

impl QuestionGenerationJob {
    /// The job's id in apalis: the operation id read as a ULID (a v7 UUID is a valid
    /// one), so a job can be traced to its operation and back.
    pub fn task_id(&self) -> TaskId {
        TaskId::from_ulid(ulid::Ulid(self.operation_id.0.as_u128()))
    }
}

/// Pushes the job on `conn` (the caller's open transaction).
///
/// `max_attempts` must equal the worker's retry budget: apalis' storage otherwise
/// re-fetches a failed row at once, up to 25 times (APALIS.md, "Retries"). The
/// operation id doubles as the job's idempotency key, so a second job for one
/// operation is refused by apalis' unique index.
pub async fn enqueue(
    conn: &mut PgConnection,
    job: &QuestionGenerationJob,
    max_attempts: u32,
) -> Result<(), EnqueueError> {
    let bytes = serde_json::to_vec(job).map_err(EnqueueError::JsonError)?;
    let task = TaskBuilder::new(bytes)
        .task_id(job.task_id())
        .idempotency_key(job.operation_id.to_string())
        .max_attempts(max_attempts as usize)
        .build();
    apalis_postgres::queries::push_tasks(conn, QUESTION_GENERATION_QUEUE, vec![task]).await
}

/// Jobs of the queue by apalis status (`Pending`, `Queued`, `Running`, `Done`,
/// `Failed`, `Killed`), as one cheap GROUP BY.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM apalis.jobs WHERE job_type = $1 GROUP BY status")
        .bind(QUESTION_GENERATION_QUEUE)
        .fetch_all(pool)
        .await
}

/// Seconds since the oldest job still waiting to be picked up was due (0 when none is).
pub async fn oldest_pending_age_secs(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM now() - min(run_at)), 0)::float8
         FROM apalis.jobs
         WHERE job_type = $1 AND status IN ('Pending', 'Queued') AND run_at <= now()",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .fetch_one(pool)
    .await
}

/// Seconds since the freshest heartbeat of any worker on the queue; `None` when no
/// worker ever registered.
pub async fn freshest_worker_heartbeat_age_secs(pool: &PgPool) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - max(last_seen))::float8 FROM apalis.workers WHERE worker_type = $1",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .fetch_one(pool)
    .await
}

/// Deletes finished jobs (Done, Killed) of the queue that ended more than
/// `older_than_days` ago; apalis never deletes rows itself. Returns how many went.
/// The operations and messages they produced are kept: only the queue's rows go.
pub async fn purge_finished(pool: &PgPool, older_than_days: u32) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM apalis.jobs
         WHERE job_type = $1 AND status IN ('Done', 'Killed')
           AND coalesce(done_at, lock_at, run_at) < now() - make_interval(days => $2)",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(older_than_days as i32)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
