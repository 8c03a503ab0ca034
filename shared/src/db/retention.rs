//! Retention: the deletes that keep the tables to a few days of history. apalis never
//! deletes a queue row, and a finished operation is only a receipt, so each table's old
//! rows go here, in batches of [`PURGE_BATCH`], one replica at a time per table (an
//! advisory lock for each). The schedule (how often, how many days) is the worker's;
//! the statements are here, beside each other, because they share their runner.

use crate::ended_job;
use crate::jobs::QUEUES;
use sqlx::{PgConnection, PgPool};

/// Rows deleted per statement by the purges: small enough that no statement holds
/// many row locks or a long transaction, large enough that a backlog goes in minutes.
pub const PURGE_BATCH: i64 = 1_000;

/// The operation id a job's `idempotency_key` names, as a `uuid`, or NULL when the key
/// is not the lowercase, hyphenated text our enqueue writes (`OperationId`'s Display).
/// A cast alone would throw on one such key and fail the whole purge, every run; a CASE
/// is the one form whose order PostgreSQL promises (a filter beside the cast might be
/// evaluated after it), and its result is still a value that `operations`' primary
/// key is searched with. A key of another form is never released either: the trigger
/// matches keys by `operations.id::text`.
macro_rules! operation_of_key {
    () => {
        "CASE WHEN j.idempotency_key ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              THEN j.idempotency_key::uuid END"
    };
}

/// Deletes up to [`PURGE_BATCH`] ended jobs of our queues that ended more than
/// `older_than_days` ago, and up to as many held jobs with no operation to release
/// them: theirs went with its user, or their key names none (`operation_of_key!`).
/// Nothing will release them, and their run_at, the end of time, never ages. The
/// operations and messages they produced are kept: only the queue's rows go. `None`
/// when another replica is purging now.
pub async fn purge_ended_jobs(
    pool: &PgPool,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge(pool, PURGE_ENDED_JOBS, older_than_days).await
}

/// [`purge_ended_jobs`]' statement (`$1` the queues, `$2` the days, `$3` the batch),
/// public so that a test can check its plan. Each arm reads an index that holds only
/// its rows, a range of `jobs_ended_idx` by when the job ended and apalis' index of
/// waiting jobs (a held job is `Pending`), so a batch costs its own rows, not a scan
/// of the days kept (and of the dead rows the batches before it left).
pub const PURGE_ENDED_JOBS: &str = concat!(
    "DELETE FROM apalis.jobs WHERE id IN (
         (SELECT j.id FROM apalis.jobs j
          WHERE j.job_type = ANY($1) AND ",
    ended_job!(),
    "       AND coalesce(j.done_at, j.lock_at, j.run_at) < now() - make_interval(days => $2)
          ORDER BY coalesce(j.done_at, j.lock_at, j.run_at)
          LIMIT $3)
         UNION ALL
         (SELECT j.id FROM apalis.jobs j
          WHERE j.job_type = ANY($1) AND j.status = 'Pending'
            AND j.run_at >= question_job_held_until()
            AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = ",
    operation_of_key!(),
    ")
          LIMIT $3))"
);

/// Deletes up to [`PURGE_BATCH`] rows of workers silent for more than
/// `older_than_days` that no job refers to any more (`jobs.lock_by` is a foreign key
/// to them, and a job held by a worker row that is gone could never be taken over),
/// with the provider state their heartbeat published (`worker_state`).
/// `None` when another replica is purging now.
pub async fn purge_silent_workers(
    pool: &PgPool,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge(
        pool,
        "WITH chosen AS (
             SELECT w.id FROM apalis.workers w
             WHERE w.worker_type = ANY($1)
               AND w.last_seen < now() - make_interval(days => $2)
               AND NOT EXISTS (SELECT 1 FROM apalis.jobs j WHERE j.lock_by = w.id)
             LIMIT $3
         ),
         state AS (
             DELETE FROM worker_state s USING chosen WHERE s.worker_id = chosen.id
         )
         DELETE FROM apalis.workers WHERE id IN (SELECT id FROM chosen)",
        older_than_days,
    )
    .await
}

/// Deletes up to [`PURGE_BATCH`] finished operations last changed more than
/// `older_than_days` ago. Their question messages stay (their `operation_id` becomes
/// NULL): the message is the record, the operation only its receipt. Keys for
/// idempotency live 24 hours, so a retention of a day or more never forgets one that
/// still counts. `None` when another replica is purging now.
pub async fn purge_finished_operations(
    pool: &PgPool,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge_locked(
        pool,
        Purge::Operations,
        sqlx::query(PURGE_FINISHED_OPERATIONS)
            .bind(older_than_days as i32)
            .bind(PURGE_BATCH),
    )
    .await
}

/// [`purge_finished_operations`]' statement (`$1` the days, `$2` the batch), public so
/// that a test can check its plan: a range of `operations_finished_idx`, the oldest
/// first.
pub const PURGE_FINISHED_OPERATIONS: &str = "DELETE FROM operations WHERE id IN (
     SELECT id FROM operations
     WHERE status IN ('completed', 'failed')
       AND updated_at < now() - make_interval(days => $1)
     ORDER BY updated_at
     LIMIT $2)";

/// What a purge deletes, and so which lock it takes: one replica purges each at a time,
/// and the two never wait for each other. (With one lock for both, every worker's
/// first pass at its start met the others' purge of operations and skipped the queue's
/// for an hour; the soak found it.)
#[derive(Debug, Clone, Copy)]
enum Purge {
    /// Ended jobs and silent workers (`apalis.jobs`, `apalis.workers`).
    Queue,
    /// Finished operations.
    Operations,
}

impl Purge {
    fn lock_key(self) -> &'static str {
        match self {
            Purge::Queue => "interviewer.purge.queue",
            Purge::Operations => "interviewer.purge.operations",
        }
    }
}

/// Runs one purge statement of the queue (binding our queues, the days and
/// [`PURGE_BATCH`]) under the queue's purge lock; `None` when another replica holds it.
async fn purge(
    pool: &PgPool,
    sql: &'static str,
    older_than_days: u32,
) -> Result<Option<u64>, sqlx::Error> {
    purge_locked(
        pool,
        Purge::Queue,
        sqlx::query(sql)
            .bind(QUEUES)
            .bind(older_than_days as i32)
            .bind(PURGE_BATCH),
    )
    .await
}

/// Runs `statement`, a batch of the purge `kind`, in a transaction that holds its lock,
/// and returns the rows it deleted; `None` when another replica holds the lock. The
/// one runner for every retention statement.
async fn purge_locked(
    pool: &PgPool,
    kind: Purge,
    statement: sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !try_purge_lock(&mut tx, kind).await? {
        return Ok(None);
    }
    let done = statement.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(done.rows_affected()))
}

/// One replica purges `kind` at a time: the lock is released when the transaction ends.
async fn try_purge_lock(conn: &mut PgConnection, kind: Purge) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
        .bind(kind.lock_key())
        .fetch_one(conn)
        .await
}
