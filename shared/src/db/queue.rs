//! SQL for apalis' own tables, `apalis.jobs` and `apalis.workers`, beyond what apalis
//! does itself: what the gauges read of the queue, a job put back for a newer worker,
//! and the end of a cancelled job.
//!
//! Only rows of our queues ([`QUEUES`]: one per operation type) are touched. Left to
//! others: the enqueue to [`crate::jobs`] (it goes through apalis' `push_tasks`),
//! deleting old rows to [`super::retention`], the board's views to [`super::board`], the
//! worker's heartbeat to [`super::heartbeat`].

use crate::domain::OperationId;
use crate::jobs::QUEUES;
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

/// Jobs of one queue in one apalis status.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueCount {
    pub job_type: String,
    /// apalis' status, or `Held` / `Scheduled` (see [`count_in_play`]).
    pub status: String,
    pub count: i64,
}

/// The SQL condition on a job row that apalis may still run: waiting (`Pending`, or
/// `Failed` with attempts left), claimed (`Queued`) or `Running`. Spelled as the
/// predicates of the two partial indexes that hold exactly those rows, apalis'
/// `idx_apalis_jobs_fetch_partial` and our `jobs_claimed_by_worker_idx`, so that
/// PostgreSQL reads them instead of the table: its cost follows the work in play, not
/// the days of ended jobs that retention keeps.
macro_rules! in_play {
    () => {
        "(status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)
          OR status = 'Queued' OR status = 'Running')"
    };
}

/// Jobs of each of our queues that apalis may still run, by apalis status (`Pending`,
/// `Queued`, `Running`, and `Failed` with attempts left); `Pending` and `Queued` count
/// only the jobs that are due. One not due yet is `Held` (behind its session's earlier
/// question: `run_at` at the end of time) or `Scheduled` (due later), so that a
/// session's queued follow-ups do not read as work that more workers could take.
/// Ended jobs are counted apart, rarely ([`super::ended_counts`]).
pub async fn count_in_play(pool: &PgPool) -> Result<Vec<QueueCount>, sqlx::Error> {
    sqlx::query_as(COUNT_IN_PLAY)
        .bind(QUEUES)
        .fetch_all(pool)
        .await
}

/// [`count_in_play`]'s statement (`$1`: the queues), public so that a test can check
/// that its plan reads the indexes, not the table.
pub const COUNT_IN_PLAY: &str = concat!(
    "SELECT job_type,
            CASE WHEN status NOT IN ('Pending', 'Queued') OR run_at <= now() THEN status
                 WHEN run_at >= question_job_held_until() THEN 'Held'
                 ELSE 'Scheduled' END AS status,
            count(*) AS count
     FROM apalis.jobs WHERE job_type = ANY($1) AND ",
    in_play!(),
    " GROUP BY 1, 2"
);

/// Per queue, seconds since its oldest job still waiting to be picked up was due (a
/// queue with none waiting is absent). Through the same partial indexes as
/// [`count_in_play`].
pub async fn oldest_pending_age_secs(pool: &PgPool) -> Result<Vec<(String, f64)>, sqlx::Error> {
    sqlx::query_as(OLDEST_PENDING_AGE)
        .bind(QUEUES)
        .fetch_all(pool)
        .await
}

/// [`oldest_pending_age_secs`]' statement (`$1`: the queues), public for the same test.
pub const OLDEST_PENDING_AGE: &str =
    "SELECT job_type, extract(epoch FROM now() - min(run_at))::float8
     FROM apalis.jobs
     WHERE job_type = ANY($1) AND (status = 'Pending' OR status = 'Queued') AND run_at <= now()
     GROUP BY job_type";

/// Seconds since the freshest heartbeat of any worker on our queues; `None` when no
/// worker ever registered.
pub async fn freshest_worker_heartbeat_age_secs(pool: &PgPool) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - max(last_seen))::float8 FROM apalis.workers WHERE worker_type = ANY($1)",
    )
    .bind(QUEUES)
    .fetch_one(pool)
    .await
}

/// Puts a job that this worker holds back in the queue, due in `delay`, without
/// counting a run: `Pending` again, its claim released, its `attempts` as they were.
/// apalis' acknowledgement of the run that follows only updates a row still claimed
/// by its worker (`lock_by`), so it leaves this one as written here. Returns whether
/// the job was this worker's to put back.
pub async fn put_back(
    conn: &mut PgConnection,
    job_id: &str,
    worker: &str,
    delay: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE apalis.jobs
         SET status = 'Pending', lock_by = NULL, lock_at = NULL,
             run_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND job_type = ANY($4) AND lock_by = $2",
    )
    .bind(job_id)
    .bind(worker)
    .bind(delay.as_secs_f64())
    .bind(QUEUES)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// [`kill_unstarted`] for many operations at once (those of a deleted session or user),
/// with `why` as each job's `last_result`.
pub async fn kill_unstarted_all(
    conn: &mut PgConnection,
    operation_ids: &[OperationId],
    why: &str,
) -> Result<u64, sqlx::Error> {
    let keys: Vec<String> = operation_ids.iter().map(|id| id.to_string()).collect();
    let done = sqlx::query(
        "UPDATE apalis.jobs
         SET status = 'Killed', done_at = now(), last_result = json_build_object('Err', $3::text)
         WHERE job_type = ANY($1) AND idempotency_key = ANY($2)
           AND status IN ('Pending', 'Queued', 'Failed')",
    )
    .bind(QUEUES)
    .bind(keys)
    .bind(why)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
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
         WHERE job_type = ANY($1) AND idempotency_key = $2::text
           AND status IN ('Pending', 'Queued', 'Failed')",
    )
    .bind(QUEUES)
    .bind(operation_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
