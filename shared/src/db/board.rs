//! The queue board's views (the worker's `/board`): read-only, for operators. Nothing
//! here writes: an operator who must act does it through the lifecycle (the owner's
//! cancel), never by editing a job behind the operation's back. Rendering is the
//! worker's (`worker/src/board/`).

use crate::jobs::QUEUES;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A job's state as the board names it, from its apalis status, its `run_at` and its
/// attempts: `pending` (due now), `held` (behind its session's earlier question),
/// `scheduled` (due later), `running`, `done`, `retrying` (`Failed` with attempts left,
/// fetched again at once), `failed` (`Failed` with its attempts spent), `killed`. One
/// expression for the counts and the list, so the two never disagree; a macro for the
/// same reason as [`crate::ended_job!`].
#[macro_export]
macro_rules! board_state {
    () => {
        "CASE WHEN j.status IN ('Pending', 'Queued') AND j.run_at >= question_job_held_until() THEN 'held'
              WHEN j.status IN ('Pending', 'Queued') AND j.run_at > now() THEN 'scheduled'
              WHEN j.status IN ('Pending', 'Queued') THEN 'pending'
              WHEN j.status = 'Failed' AND j.attempts >= j.max_attempts THEN 'failed'
              WHEN j.status = 'Failed' THEN 'retrying'
              ELSE lower(j.status) END"
    };
}

/// The board's states, in the order it shows them.
pub const BOARD_STATES: [&str; 8] = [
    "pending",
    "held",
    "scheduled",
    "running",
    "retrying",
    "done",
    "failed",
    "killed",
];

/// Jobs of each queue by board state (see [`board_state!`]): `(job type, state,
/// count)`; a state without jobs is absent. One scan of the queues' rows, which
/// retention keeps to a few days.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT j.job_type, ",
        board_state!(),
        " AS state, count(*)
         FROM apalis.jobs j
         WHERE j.job_type = ANY($1)
         GROUP BY 1, 2"
    ))
    .bind(QUEUES)
    .fetch_all(pool)
    .await
}

/// One job as the board lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardJob {
    pub id: String,
    /// Its queue: the operation type it runs.
    pub job_type: String,
    /// The board's state (see [`board_state!`]).
    pub state: String,
    /// apalis' own status.
    pub status: String,
    /// The operation id: our jobs' idempotency key.
    pub operation_id: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    /// The worker that holds (or last held) the job.
    pub lock_by: Option<String>,
    pub lock_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    /// The error of the last result, when it was one (`{"Err": ...}`), as text.
    pub last_error: Option<String>,
}

/// The job types the board lists (`apalis.jobs.job_type`), for its type filter.
pub const JOB_TYPES: &[&str] = &QUEUES;

/// Which jobs the board lists; every field narrows, none set lists them all.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    /// A board state (see [`board_state!`]).
    pub state: Option<&'a str>,
    /// One of [`JOB_TYPES`]; `None`: all of them.
    pub job_type: Option<&'a str>,
    /// The jobs of the operation with this id, or of every operation of the session or
    /// the user with this id.
    pub find: Option<uuid::Uuid>,
    /// Only jobs older than this job id: the cursor of the next page.
    pub before: Option<&'a str>,
}

/// The newest `limit` jobs that `filter` lets through (job ids are ULIDs: they sort by
/// creation, so `before` pages back in time). Finding by id reads operations on their
/// primary key, `session_id` and `user_id` indexes; a job whose operation retention
/// removed is still found by the operation id, its idempotency key.
pub async fn jobs(
    pool: &PgPool,
    filter: JobFilter<'_>,
    limit: i64,
) -> Result<Vec<BoardJob>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT * FROM (
             SELECT j.id, j.job_type, ",
        board_state!(),
        " AS state, j.status, j.idempotency_key AS operation_id, j.attempts, j.max_attempts,
                    j.run_at, j.lock_by, j.lock_at, j.done_at,
                    j.last_result ->> 'Err' AS last_error
             FROM apalis.jobs j
             WHERE j.job_type = ANY($1)
               AND ($4::text IS NULL OR j.id < $4)
               AND ($5::uuid IS NULL
                    OR j.idempotency_key = $5::text
                    OR j.idempotency_key IN (
                        SELECT o.id::text FROM operations o
                        WHERE o.session_id = $5 OR o.user_id = $5))) AS jobs
         WHERE $2::text IS NULL OR jobs.state = $2
         ORDER BY jobs.id DESC
         LIMIT $3"
    ))
    .bind(match filter.job_type {
        Some(job_type) => vec![job_type],
        None => JOB_TYPES.to_vec(),
    })
    .bind(filter.state)
    .bind(limit)
    .bind(filter.before)
    .bind(filter.find)
    .fetch_all(pool)
    .await
}

/// One job with everything the board shows of it: its row, the whole last result, and
/// its operation when it still exists.
#[derive(Debug, Clone)]
pub struct BoardJobDetail {
    pub job: BoardJob,
    pub priority: Option<i32>,
    pub last_result: Option<serde_json::Value>,
    pub operation: Option<BoardOperation>,
}

/// The operation of a job, as the board shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardOperation {
    pub id: uuid::Uuid,
    pub status: String,
    pub attempts: i32,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
}

/// The job `id` of the queue with its operation; `None` when there is no such job. Any
/// text may be asked for: an id that is no job's finds nothing.
pub async fn job(pool: &PgPool, id: &str) -> Result<Option<BoardJobDetail>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        job: BoardJob,
        priority: Option<i32>,
        last_result: Option<serde_json::Value>,
    }
    let mut conn = pool.acquire().await?;
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT j.id, j.job_type, ",
        board_state!(),
        " AS state, j.status, j.idempotency_key AS operation_id, j.attempts, j.max_attempts,
                j.run_at, j.lock_by, j.lock_at, j.done_at,
                j.last_result ->> 'Err' AS last_error, j.priority, j.last_result
         FROM apalis.jobs j
         WHERE j.job_type = ANY($1) AND j.id = $2"
    ))
    .bind(QUEUES)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // Our jobs' keys are operation ids; one that is not (a job pushed by hand) simply
    // has no operation, rather than failing the page on a cast.
    let operation_id = row
        .job
        .operation_id
        .as_deref()
        .and_then(|key| uuid::Uuid::parse_str(key).ok());
    let operation = match operation_id {
        Some(operation_id) => {
            sqlx::query_as(
                "SELECT id, status, attempts, error_message, created_at, updated_at, started_at
                 FROM operations WHERE id = $1",
            )
            .bind(operation_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        None => None,
    };
    Ok(Some(BoardJobDetail {
        job: row.job,
        priority: row.priority,
        last_result: row.last_result,
        operation,
    }))
}

/// A user's model use over the last day, as the board lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardSpender {
    pub user_id: uuid::Uuid,
    /// Questions and feedback written for them in the window.
    pub questions: i64,
    /// Tokens those messages' calls reported (0 when the provider reported none).
    pub tokens: i64,
}

/// The most messages [`top_spenders`] reads: the newest, so that the board's cost stays
/// bounded however busy the day was.
pub const SPENDERS_SCAN: i64 = 100_000;

/// The `limit` users whose questions took the most tokens in the last 24 hours, from
/// the questions' metadata (`usage.total_tokens`), among the newest [`SPENDERS_SCAN`]
/// messages. Newest by id: ids are UUIDs v7, so the primary key is in time order and
/// no index of its own is needed. (A partial index on the questions' `created_at` was
/// tried and taken back: the planner ANDed it, whole, into every job's read of its
/// session's earlier questions, and the end-to-end figure fell from about 650 to 230
/// jobs/s.)
pub async fn top_spenders(pool: &PgPool, limit: i64) -> Result<Vec<BoardSpender>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.user_id, count(*) AS questions,
                coalesce(sum(CASE WHEN jsonb_typeof(m.metadata->'usage'->'total_tokens') = 'number'
                                  THEN (m.metadata->'usage'->>'total_tokens')::numeric END), 0)::int8
                    AS tokens
         FROM (SELECT session_id, metadata, message_type, created_at FROM session_messages
               ORDER BY id DESC
               LIMIT $1) m
         JOIN interview_sessions s ON s.id = m.session_id
         WHERE m.message_type IN ('question', 'feedback') AND m.created_at > now() - interval '24 hours'
         GROUP BY s.user_id
         ORDER BY tokens DESC, questions DESC
         LIMIT $2",
    )
    .bind(SPENDERS_SCAN)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A worker of the queue as the board lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardWorker {
    pub id: String,
    /// The queue it works (`apalis.workers.worker_type`).
    pub worker_type: String,
    pub last_seen: DateTime<Utc>,
    /// Seconds since `last_seen`, by the database's clock.
    pub age_secs: f64,
    /// Jobs it holds `Running` now.
    pub running: i64,
    /// Its share of `LLM_MAX_IN_FLIGHT` at its last beat; `None` without a cap (or
    /// before its first beat).
    pub cap_share: Option<i32>,
    /// Its model calls in flight at its last beat.
    pub in_flight: Option<i32>,
    /// Whether its breaker was open at its last beat.
    pub breaker_open: Option<bool>,
    /// Its build (`0.1.0 (commit abc1234)`), from its last beat.
    pub build: Option<String>,
    /// Whether it had paused its claims (the intake switch) at its last beat.
    pub paused: Option<bool>,
}

/// The queue's workers, the most recently seen first, at most `limit` (silent ones stay
/// until retention deletes them).
pub async fn workers(pool: &PgPool, limit: i64) -> Result<Vec<BoardWorker>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.id, w.worker_type, w.last_seen,
                extract(epoch FROM now() - w.last_seen)::float8 AS age_secs,
                (SELECT count(*) FROM apalis.jobs j
                 WHERE j.lock_by = w.id AND j.status = 'Running') AS running,
                l.cap_share, l.in_flight, l.breaker_open, l.paused,
                l.version || ' (commit ' || l.git_commit || ')' AS build
         FROM apalis.workers w
         LEFT JOIN worker_state l ON l.worker_id = w.id
         WHERE w.worker_type = ANY($1)
         ORDER BY w.last_seen DESC
         LIMIT $2",
    )
    .bind(QUEUES)
    .bind(limit)
    .fetch_all(pool)
    .await
}
