//! What a worker process does beside running jobs, each in a task of its own so that
//! none of it waits for a free job slot:
//! - the heartbeat: marks this process's apalis workers alive every quarter of the
//!   takeover window, takes over the jobs of workers silent for longer than it, and
//!   recomputes this process's share of the cap on model calls from the live peers;
//! - the reconciler: fails every operation that can no longer end by itself
//!   ([`shared::db::reconcile`]);
//! - retention: deletes ended queue rows and silent worker rows after
//!   `JOB_RETENTION_DAYS`, one replica at a time;
//! - operation retention: deletes finished operations after
//!   `OPERATION_RETENTION_DAYS`, likewise.
//!
//! Every replica runs all four; each statement is safe to run from several at once.
//! (The fifth task beside the jobs, the gauges' refresh, is `shared::metrics`'.)

use crate::job::JobState;
use crate::readiness::Readiness;
use metrics::counter;
use shared::db::heartbeat::{self, ProviderState};
use shared::db::reconcile::WorstCase;
use shared::db::{reconcile, retention};
use shared::domain::OperationType;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often the reconciler looks for stuck operations. A stuck operation is failed
/// within this of becoming stuck: short next to a job's worst case, long next to the
/// statement's cost (one index scan of the unfinished operations).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// How often retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Beats for this process's working apalis worker every `interval`, counts its live
/// peers for its share of the cap on model calls, and re-enqueues the jobs of workers
/// silent for `window` (apalis does that only in its own heartbeat, which a busy worker
/// does not send, so with every worker busy nobody would).
pub async fn heartbeat(
    state: Arc<JobState>,
    readiness: Arc<Readiness>,
    interval: Duration,
    window: Duration,
) {
    let mut every = tokio::time::interval(interval);
    // A late beat is sent at once, then the rhythm resumes; never a burst.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match beat_once(&state, window).await {
            // Not registered yet (the apalis worker is starting): beat again soon, so
            // that the count that makes it visible to its peers, and the share that
            // follows one interval later, come as early as they can.
            Ok(false) => every.reset_after(UNREGISTERED_RETRY.min(interval)),
            Ok(true) => readiness.beat(),
            // The share stays as it was: the peers' view is unknown, not changed.
            Err(err) => tracing::warn!(error = %err, "heartbeat failed; will try again"),
        }
    }
}

/// How soon a worker that found its row missing beats again.
const UNREGISTERED_RETRY: Duration = Duration::from_millis(100);

/// One beat for each of the process's apalis workers (the question worker's carries the
/// process's state), and the takeover on every queue; returns whether every worker's
/// row exists.
async fn beat_once(state: &JobState, window: Duration) -> anyhow::Result<bool> {
    let worker = crate::queue::current_worker_name(OperationType::QuestionGeneration);
    let limits = &state.limits;
    let (cap_share, in_flight) = limits.cap.now();
    let published = ProviderState {
        cap_share,
        in_flight,
        breaker_open: limits.breaker.is_open(),
        paused: state.intake.is_paused(),
    };
    let mut conn = state.pool.acquire().await?;
    let beat = heartbeat::beat(&mut conn, &worker, window, published).await?;
    limits.cap.counted(beat.registered.then(|| {
        let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
        (count(beat.peers), count(beat.peers_before))
    }));
    state.intake.apply(beat.intake_paused);
    let mut registered = beat.registered;
    for kind in OperationType::ALL {
        if *kind != OperationType::QuestionGeneration {
            let name = crate::queue::current_worker_name(*kind);
            registered &= heartbeat::touch(&mut conn, &name, kind.as_str()).await?;
        }
        apalis_postgres::queries::reenqueue_orphaned(&mut *conn, kind.as_str(), window.as_secs())
            .await?;
    }
    Ok(registered)
}

/// Fails stuck operations every [`RECONCILE_EVERY`] (`worst_case`: a job's longest
/// life from its first start).
pub async fn reconciler(pool: PgPool, worst_case: WorstCase) {
    let mut every = tokio::time::interval(RECONCILE_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(err) = reconcile_once(&pool, worst_case).await {
            tracing::warn!(error = %err, "reconciler could not run; will try again");
        }
    }
}

/// One pass: fails what is stuck now. Public for tests.
pub async fn reconcile_once(pool: &PgPool, worst_case: WorstCase) -> Result<usize, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let failed = reconcile::fail_stuck(&mut conn, worst_case).await?;
    for operation in &failed {
        counter!("operations_reconciled_total", "reason" => operation.reason.clone()).increment(1);
        tracing::warn!(operation_id = %operation.id, reason = %operation.reason, "reconciler failed a stuck operation");
    }
    Ok(failed.len())
}

/// Deletes ended jobs and silent workers older than `days`, hourly; `days == 0` keeps
/// everything.
pub async fn retention(pool: PgPool, days: u32) {
    if days == 0 {
        return;
    }
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match purge_once(&pool, days).await {
            Ok((0, 0)) => {}
            Ok((jobs, workers)) => {
                tracing::info!(jobs, workers, days, "deleted queue rows past retention")
            }
            Err(err) => tracing::warn!(error = %err, "could not delete old queue rows"),
        }
    }
}

/// Deletes finished operations older than `days`, hourly; `days == 0` keeps them all.
pub async fn operation_retention(pool: PgPool, days: u32) {
    if days == 0 {
        return;
    }
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        match purge_operations_once(&pool, days).await {
            Ok(0) => {}
            Ok(operations) => {
                tracing::info!(
                    operations,
                    days,
                    "deleted finished operations past retention"
                )
            }
            Err(err) => tracing::warn!(error = %err, "could not delete old operations"),
        }
    }
}

/// One pass of [`operation_retention`], batch after batch until nothing is left or
/// another replica holds the purge; returns how many were deleted. Public for tests.
pub async fn purge_operations_once(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    in_batches(|| retention::purge_finished_operations(pool, days)).await
}

/// One retention pass, batch after batch until nothing is left or another replica
/// holds the purge; returns (jobs, workers) deleted. Public for tests.
pub async fn purge_once(pool: &PgPool, days: u32) -> Result<(u64, u64), sqlx::Error> {
    let jobs = in_batches(|| retention::purge_ended_jobs(pool, days)).await?;
    let workers = retention::purge_silent_workers(pool, days)
        .await?
        .unwrap_or(0);
    Ok((jobs, workers))
}

/// How long retention rests between two full batches, in multiples of the last one's
/// time. Back to back, a first pass deleted a day of jobs (697,000) in 35 s on the
/// soak's machine, wrote 70–90 kB of WAL per job meanwhile against 11 kB without it,
/// and stalled the answers for a second; resting 3 times as long, it still moved the
/// p99 of the samples it spanned to 2–8 times the quiet ones'. A tenth of the time: a
/// day of history goes in about 4 minutes, an hour's (the hourly pass) in seconds.
const PURGE_REST_PER_BATCH: f64 = 9.0;

/// Runs `batch` (one purge statement) until it deletes less than a full batch or
/// another replica holds the purge lock; returns how many rows went. Between two full
/// batches it rests [`PURGE_REST_PER_BATCH`] times as long as the last one took: a
/// backlog (a day of jobs at a first pass) goes at a tenth of one connection's time
/// and of the WAL it could write, beside the jobs, instead of back to back.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<u64>, sqlx::Error>>,
{
    let mut deleted = 0;
    loop {
        let started = tokio::time::Instant::now();
        let Some(rows) = batch().await? else { break };
        deleted += rows;
        if rows < retention::PURGE_BATCH as u64 {
            break;
        }
        tokio::time::sleep(started.elapsed().mul_f64(PURGE_REST_PER_BATCH)).await;
    }
    Ok(deleted)
}
