//! SQL for apalis' own tables, `apalis.jobs` and `apalis.workers`, beyond what apalis
//! does itself: the gauges that read the queue, the worker's own heartbeat, the
//! retention that apalis leaves to us (it never deletes a row), and the read-only views
//! of the worker's queue board.
//!
//! Only rows of our queue (`job_type = 'question_generation'`) are touched. The enqueue
//! itself stays in [`crate::jobs`], since it goes through apalis' `push_tasks`.

use crate::domain::OperationId;
use crate::jobs::QUESTION_GENERATION_QUEUE;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// The SQL condition on a job row `j` that apalis will not run again: `Done`, `Killed`,
/// or `Failed` with its attempts spent (a `Failed` row with attempts left is fetched
/// again at once). Used by the reconciler and the purge, spelled once; a macro so that
/// the statements stay `&'static str` (sqlx refuses SQL built at run time).
#[macro_export]
macro_rules! ended_job {
    () => {
        "(j.status IN ('Done', 'Killed') OR (j.status = 'Failed' AND j.attempts >= j.max_attempts))"
    };
}

/// Jobs of the queue by apalis status (`Pending`, `Queued`, `Running`, `Done`,
/// `Failed`, `Killed`), as one cheap GROUP BY; `Pending` and `Queued` count only the
/// jobs that are due. One not due yet is `Held` (behind its session's earlier question:
/// `run_at` at the end of time) or `Scheduled` (due later), so that a session's queued
/// follow-ups do not read as work that more workers could take.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT CASE WHEN status NOT IN ('Pending', 'Queued') OR run_at <= now() THEN status
                     WHEN run_at >= question_job_held_until() THEN 'Held'
                     ELSE 'Scheduled' END,
                count(*)
         FROM apalis.jobs WHERE job_type = $1 GROUP BY 1",
    )
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

/// Marks the apalis worker `name` alive. apalis' own heartbeat is sent only when a job
/// slot is free; this one is sent by a task of the worker process's own, so a busy
/// worker is never taken for a dead one. Returns whether the row exists.
pub async fn beat(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE apalis.workers SET last_seen = now() WHERE id = $1 AND worker_type = $2",
    )
    .bind(name)
    .bind(QUESTION_GENERATION_QUEUE)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Rows deleted per statement by the purges: small enough that no statement holds
/// many row locks or a long transaction, large enough that a backlog goes in minutes.
pub const PURGE_BATCH: i64 = 1_000;

/// Deletes up to [`PURGE_BATCH`] ended jobs of the queue that ended more than
/// `older_than_days` ago, and held jobs whose operation went with its user (nothing
/// will release them, and their run_at, the end of time, never ages). The operations
/// and messages they produced are kept: only the queue's rows go. `None` when another
/// replica is purging now.
pub async fn purge_ended_jobs(
    pool: &PgPool,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge(
        pool,
        concat!(
            "DELETE FROM apalis.jobs WHERE id IN (
                 SELECT j.id FROM apalis.jobs j
                 WHERE j.job_type = $1
                   AND ((",
            ended_job!(),
            " AND coalesce(j.done_at, j.lock_at, j.run_at) < now() - make_interval(days => $2))
                        OR (j.run_at >= question_job_held_until()
                            AND NOT EXISTS (SELECT 1 FROM operations o
                                            WHERE o.id = j.idempotency_key::uuid)))
                 LIMIT $3)"
        ),
        older_than_days,
    )
    .await
}

/// Ends the job of a cancelled operation unless a worker is running it now: `Killed`,
/// so apalis never fetches it again and the board shows why. A running one finishes
/// its attempt and finds the operation failed at its commit, which then adds nothing.
pub async fn kill_unstarted(
    conn: &mut PgConnection,
    operation_id: OperationId,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE apalis.jobs
         SET status = 'Killed', done_at = now(),
             last_result = '{\"Err\": \"Cancelled by its owner.\"}'
         WHERE job_type = $1 AND idempotency_key = $2::text
           AND status IN ('Pending', 'Queued', 'Failed')",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(operation_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to [`PURGE_BATCH`] rows of workers silent for more than
/// `older_than_days` that no job refers to any more (`jobs.lock_by` is a foreign key
/// to them, and a job held by a worker row that is gone could never be taken over).
/// `None` when another replica is purging now.
pub async fn purge_silent_workers(
    pool: &PgPool,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge(
        pool,
        "DELETE FROM apalis.workers WHERE id IN (
             SELECT w.id FROM apalis.workers w
             WHERE w.worker_type = $1
               AND w.last_seen < now() - make_interval(days => $2)
               AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)
             LIMIT $3)",
        older_than_days,
    )
    .await
}

/// Runs one purge statement (binding the queue, the days and [`PURGE_BATCH`]) under
/// the purge lock; `None` when another replica holds it.
async fn purge(
    pool: &PgPool,
    sql: &'static str,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge_locked(
        pool,
        sqlx::query(sql)
            .bind(QUESTION_GENERATION_QUEUE)
            .bind(older_than_days as i32)
            .bind(PURGE_BATCH),
    )
    .await
}

/// Runs `statement`, a batch of a purge, in a transaction that holds the purge lock,
/// and returns the rows it deleted; `None` when another replica holds the lock. The
/// one runner for every retention statement (queue rows here, operations in
/// [`super::operations`]).
pub(crate) async fn purge_locked(
    pool: &PgPool,
    statement: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_purge_lock(&mut tx).await? {
        return Ok(None);
    }
    let done = statement.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(done.rows_affected()))
}

/// One replica purges at a time: the lock is released when the transaction ends.
async fn try_purge_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('interviewer.purge'))")
        .fetch_one(conn)
        .await
}

// The queue board (the worker's `/board`): read-only views for operators. Nothing here
// writes: an operator who must act does it through the lifecycle (the owner's cancel),
// never by editing a job behind the operation's back.

/// A job's state as the board names it, from its apalis status, its `run_at` and its
/// attempts: `pending` (due now), `held` (behind its session's earlier question),
/// `scheduled` (due later), `running`, `done`, `retrying` (`Failed` with attempts left,
/// fetched again at once), `failed` (`Failed` with its attempts spent), `killed`. One
/// expression for the counts and the list, so the two never disagree; a macro for the
/// same reason as [`ended_job!`].
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

/// Jobs of the queue by board state (see [`board_state!`]); a state without jobs is
/// absent. One scan of the queue's rows, which retention keeps to a few days.
pub async fn board_counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        board_state!(),
        " AS state, count(*)
         FROM apalis.jobs j
         WHERE j.job_type = $1
         GROUP BY 1"
    ))
    .bind(QUESTION_GENERATION_QUEUE)
    .fetch_all(pool)
    .await
}

/// One job as the board lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardJob {
    pub id: String,
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

/// The newest `limit` jobs of the queue (job ids are ULIDs: they sort by creation),
/// only those in `state` when one is given.
pub async fn board_jobs(
    pool: &PgPool,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<BoardJob>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT * FROM (
             SELECT j.id, ",
        board_state!(),
        " AS state, j.status, j.idempotency_key AS operation_id, j.attempts, j.max_attempts,
                    j.run_at, j.lock_by, j.lock_at, j.done_at,
                    j.last_result ->> 'Err' AS last_error
             FROM apalis.jobs j
             WHERE j.job_type = $1) AS jobs
         WHERE $2::text IS NULL OR jobs.state = $2
         ORDER BY jobs.id DESC
         LIMIT $3"
    ))
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(state)
    .bind(limit)
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
pub async fn board_job(pool: &PgPool, id: &str) -> Result<Option<BoardJobDetail>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        job: BoardJob,
        priority: Option<i32>,
        last_result: Option<serde_json::Value>,
    }
    let mut conn = pool.acquire().await?;
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT j.id, ",
        board_state!(),
        " AS state, j.status, j.idempotency_key AS operation_id, j.attempts, j.max_attempts,
                j.run_at, j.lock_by, j.lock_at, j.done_at,
                j.last_result ->> 'Err' AS last_error, j.priority, j.last_result
         FROM apalis.jobs j
         WHERE j.job_type = $1 AND j.id = $2"
    ))
    .bind(QUESTION_GENERATION_QUEUE)
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

/// A worker of the queue as the board lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoardWorker {
    pub id: String,
    pub last_seen: DateTime<Utc>,
    /// Seconds since `last_seen`, by the database's clock.
    pub age_secs: f64,
    /// Jobs it holds `Running` now.
    pub running: i64,
}

/// The queue's workers, the most recently seen first, at most `limit` (silent ones stay
/// until retention deletes them).
pub async fn board_workers(pool: &PgPool, limit: i64) -> Result<Vec<BoardWorker>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.id, w.last_seen,
                extract(epoch FROM now() - w.last_seen)::float8 AS age_secs,
                (SELECT count(*) FROM apalis.jobs j
                 WHERE j.lock_by = w.id AND j.status = 'Running') AS running
         FROM apalis.workers w
         WHERE w.worker_type = $1
         ORDER BY w.last_seen DESC
         LIMIT $2",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(limit)
    .fetch_all(pool)
    .await
}
