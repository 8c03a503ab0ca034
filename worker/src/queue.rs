//! apalis wiring: the PostgreSQL storages (one per job type), the workers' layers, and
//! the monitor that runs them. Every choice here follows a rule of docs/APALIS.md, named
//! where it is applied.

use crate::config::{MISSED_HEARTBEATS, WorkerConfig};
use crate::job::{self, JobState, Work};
use apalis::layers::retry::HasherRng;
use apalis::layers::retry::backoff::{ExponentialBackoffMaker, MakeBackoff};
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use shared::domain::OperationType;
use shared::jobs::{FeedbackAnalysisJob, QuestionGenerationJob};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often a quiet queue is polled, as a safety net under LISTEN/NOTIFY pickup.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The part of this process's worker names that no other process shares:
/// `{host}-{pid}-{nonce}-`. A new process reusing a dead worker's name left its job
/// Running for good (docs/APALIS.md), and the random nonce guards against pid reuse
/// (every container's first process is pid 1).
pub fn worker_name_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}-{}-", std::process::id(), &nonce[..8])
    })
}

/// Per job type (in `OperationType::ALL`'s order), the run of its apalis worker that is
/// working now: the monitor starts run 0 and a new run after each stop on an error.
static CURRENT_RUN: [AtomicUsize; OperationType::ALL.len()] =
    [const { AtomicUsize::new(0) }; OperationType::ALL.len()];

fn slot(kind: OperationType) -> &'static AtomicUsize {
    let index = OperationType::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default();
    &CURRENT_RUN[index]
}

/// The name of `kind`'s apalis worker: unique per process, per job type and per
/// restart (`run`); the newest becomes [`current_worker_name`].
pub fn worker_name(kind: OperationType, run: usize) -> String {
    slot(kind).store(run, Ordering::SeqCst);
    format!("{}{kind}-{run}", worker_name_prefix())
}

/// The name of `kind`'s apalis worker working now, the only one the heartbeat keeps
/// alive: a run that stopped on an error must be seen dead, so that the jobs it held
/// are taken over.
pub fn current_worker_name(kind: OperationType) -> String {
    format!(
        "{}{kind}-{}",
        worker_name_prefix(),
        slot(kind).load(Ordering::SeqCst)
    )
}

/// The storage configuration of `kind`'s queue, derived from the settings.
pub fn storage_config(config: &WorkerConfig, kind: OperationType) -> Config {
    // `batch_size ≥ concurrency / 4`, or shutdown deadlocks (docs/APALIS.md); more than
    // the concurrency would only park fetched jobs in memory.
    let batch_size = (config.worker_concurrency as usize).div_ceil(4).max(1);
    // apalis' own heartbeat and takeover use the same window as our heartbeat task.
    Config::default()
        .queue(kind.as_str())
        .batch_size(batch_size)
        .heartbeat_interval(config.heartbeat_interval())
        .missed_heartbeats(MISSED_HEARTBEATS as usize)
}

/// The monitor running one apalis worker per job type, each restarted (loudly) if it
/// stops on an error: one database error otherwise ends a worker and the process exits
/// 0. apalis' statements run on `queue_pool` (`shared::db::queue_pool`), the jobs' on
/// `state.pool`. Each job type runs up to `WORKER_CONCURRENCY` jobs at once; what
/// bounds the calls to the provider across them is `LLM_MAX_IN_FLIGHT`.
pub fn monitor(config: &WorkerConfig, state: Arc<JobState>, queue_pool: PgPool) -> Monitor {
    let monitor = Monitor::new()
        .should_restart(|ctx, err| {
            tracing::error!(worker = %ctx.name(), error = %err, "worker stopped on an error; restarting it");
            true
        })
        .shutdown_timeout(config.shutdown_deadline());
    let monitor = register::<QuestionGenerationJob>(monitor, config, &state, &queue_pool);
    register::<FeedbackAnalysisJob>(monitor, config, &state, &queue_pool)
}

/// Adds the apalis worker of `J`'s queue to `monitor`.
fn register<J: Work>(
    monitor: Monitor,
    config: &WorkerConfig,
    state: &Arc<JobState>,
    queue_pool: &PgPool,
) -> Monitor {
    let storage_config = storage_config(config, J::TYPE);
    let concurrency = config.worker_concurrency as usize;
    // The retry layer's own count is only a ceiling: each job's `max_attempts` bounds it,
    // since the handler aborts (which the layer never retries) on the job's last attempt.
    let retries = shared::jobs::MAX_ATTEMPTS_CEILING.saturating_sub(1) as usize;
    let (base, max) = (config.backoff_base(), config.backoff_max());
    tracing::info!(
        job_type = J::TYPE.as_str(),
        concurrency,
        batch_size = storage_config.batch_size,
        heartbeat_secs = storage_config.heartbeat_interval.as_secs_f64(),
        takeover_after_secs = storage_config.orphaned_duration().as_secs_f64(),
        "worker configured"
    );
    let state = Arc::clone(state);
    let queue_pool = queue_pool.clone();
    monitor.register(move |run| {
        let storage = PostgresStorage::<J>::new(&queue_pool)
            .with_config(storage_config.clone())
            // Millisecond pickup on insert, with a 1 s poll as a safety net.
            .with_pubsub()
            .poll_with_interval(POLL_INTERVAL);
        // Exponential backoff between attempts: the n-th wait is d = min(base × 2ⁿ,
        // max) plus a random extra of up to d, never past max (tower's jitter: not
        // "full jitter", the wait is never shorter than d). The bounds are valid by
        // construction: the settings' ranges make base ≥ 1 ms and max ≥ base.
        let backoff = ExponentialBackoffMaker::new(base, max, 1.0, HasherRng::default())
            .expect("backoff bounds are valid")
            .make_backoff();
        WorkerBuilder::new(worker_name(J::TYPE, run))
            .backend(storage)
            // First, so it is the outermost layer (docs/APALIS.md).
            .concurrency(concurrency)
            .retry(RetryPolicy::retries(retries).with_backoff(backoff))
            .data(Arc::clone(&state))
            // Paused at its start while intake is paused (crate::intake), forgotten at
            // its exit. A weak reference: the worker's context keeps this closure, and
            // the state keeps the context, so a strong one would keep both (and the
            // pool's connections) alive for good.
            .on_event({
                let state = Arc::downgrade(&state);
                move |worker, event| {
                    let Some(state) = state.upgrade() else {
                        return;
                    };
                    match event {
                        Event::Start => state.intake.adopt(worker),
                        Event::Exit => state.intake.forget(worker),
                        _ => {}
                    }
                }
            })
            .build(job::handle::<J>)
    })
}
