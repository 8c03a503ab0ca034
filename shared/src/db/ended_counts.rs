//! The shared count of ended work (`ended_counts`): jobs of our queues that apalis will
//! not run again, and finished operations. Retention keeps days of them, millions on a
//! busy week, so counting them costs seconds; the gauges need them, but not every 3 s
//! from every process. One replica recounts at a time ([`recount_if_due`]), no more
//! often than [`MIN_PERIOD`] and never more than 1/[`PERIOD_PER_COUNT`] of the time,
//! and every process reads the last count ([`read`]), one row by its key.

use crate::ended_job;
use crate::jobs::QUEUES;
use sqlx::PgPool;
use sqlx::types::Json;
use std::time::Duration;

/// The shortest time between two counts: what a gauge of ended work may lag behind.
pub const MIN_PERIOD: Duration = Duration::from_secs(10);
/// The next count waits this many times as long as the last one took, so counting
/// takes at most 1/20 of one connection's time, whatever the history.
pub const PERIOD_PER_COUNT: f64 = 20.0;

/// Ended jobs of one queue in one apalis status (`Done`, `Failed`, `Killed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct EndedJobs {
    pub job_type: String,
    pub status: String,
    pub count: i64,
}

/// Finished operations in one status (`completed`, `failed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FinishedOperations {
    pub status: String,
    pub count: i64,
}

/// The last count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndedCounts {
    pub jobs: Vec<EndedJobs>,
    pub operations: Vec<FinishedOperations>,
}

/// Recounts unless another replica is counting now or the last count is recent
/// (younger than [`MIN_PERIOD`] and [`PERIOD_PER_COUNT`] times its own duration).
/// Returns whether this call counted.
pub async fn recount_if_due(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('interviewer.ended_counts'))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(false);
    }
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ended_counts
                        WHERE counted_at > now() - make_interval(secs => greatest($1, took_ms / 1000 * $2)))",
    )
    .bind(MIN_PERIOD.as_secs_f64())
    .bind(PERIOD_PER_COUNT)
    .fetch_one(&mut *tx)
    .await?;
    if recent {
        return Ok(false);
    }
    // Bookkeeping, not the service's work: without parallel workers, a count over
    // millions of rows takes one core, not all of them (two on the soak's machine).
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
        .execute(&mut *tx)
        .await?;
    let started = std::time::Instant::now();
    let (jobs, operations): (serde_json::Value, serde_json::Value) = sqlx::query_as(COUNT_ENDED)
        .bind(QUEUES)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO ended_counts (jobs, operations, counted_at, took_ms)
         VALUES ($1, $2, now(), $3)
         ON CONFLICT (singleton) DO UPDATE
         SET jobs = excluded.jobs, operations = excluded.operations,
             counted_at = excluded.counted_at, took_ms = excluded.took_ms",
    )
    .bind(jobs)
    .bind(operations)
    .bind(started.elapsed().as_secs_f64() * 1000.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The count itself (`$1`: the queues), public so that a test can check its plan:
/// `jobs_ended_idx` alone for the jobs (an index-only scan), and the index of
/// operations by status.
pub const COUNT_ENDED: &str = concat!(
    "SELECT (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                 SELECT j.job_type, j.status, count(*) AS count FROM apalis.jobs j
                 WHERE j.job_type = ANY($1) AND ",
    ended_job!(),
    "        GROUP BY 1, 2) c),
            (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                 SELECT status, count(*) AS count FROM operations
                 WHERE status IN ('completed', 'failed')
                 GROUP BY 1) c)"
);

/// The row as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    jobs: Json<Vec<EndedJobs>>,
    operations: Json<Vec<FinishedOperations>>,
}

/// The last count; empty before the first.
pub async fn read(pool: &PgPool) -> Result<EndedCounts, sqlx::Error> {
    let stored: Option<Stored> =
        sqlx::query_as("SELECT jobs, operations FROM ended_counts WHERE singleton")
            .fetch_optional(pool)
            .await?;
    Ok(
        stored.map_or_else(EndedCounts::default, |stored| EndedCounts {
            jobs: stored.jobs.0,
            operations: stored.operations.0,
        }),
    )
}
