//! apalis wiring: the PostgreSQL storage, the worker's layers, and the monitor that runs
//! it. Every choice here follows a rule of APALIS.md, named where it is applied.

use crate::config::WorkerConfig;
use crate::job::{self, JobState};
use apalis::layers::retry::HasherRng;
use apalis::layers::retry::backoff::{ExponentialBackoffMaker, MakeBackoff};
use apalis::prelude::*;
use apalis_postgres::{Config, PostgresStorage};
use shared::jobs::{QUESTION_GENERATION_QUEUE, QuestionGenerationJob};
use std::sync::Arc;
use std::time::Duration;

/// How often a quiet queue is polled, as a safety net under LISTEN/NOTIFY pickup.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeats that may be missed before a worker counts as dead.
const MISSED_HEARTBEATS: u32 = 4;

/// A worker name unique per process and per restart: a new process reusing a dead
/// worker's name left its job Running for good (APALIS.md). The random part guards
/// against pid reuse (every container's first process is pid 1).
pub fn worker_name(run: usize) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let nonce = NONCE.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    format!("{host}-{}-{nonce}-{run}", std::process::id())
}

/// The storage configuration derived from the settings.
pub fn storage_config(config: &WorkerConfig) -> Config {
    let window = config.heartbeat_window();
    // `batch_size ≥ concurrency / 4`, or shutdown deadlocks (APALIS.md); more than the
    // concurrency would only park fetched jobs in memory.
    let batch_size = (config.worker_concurrency as usize).div_ceil(4).max(1);
    Config::default()
        .queue(QUESTION_GENERATION_QUEUE)
        .batch_size(batch_size)
        .heartbeat_interval((window / MISSED_HEARTBEATS).max(Duration::from_millis(500)))
        .missed_heartbeats(MISSED_HEARTBEATS as usize)
}

/// The monitor running one apalis worker over the queue, restarted (loudly) if it stops
/// on an error: one database error otherwise ends a worker and the process exits 0.
pub fn monitor(config: &WorkerConfig, state: Arc<JobState>) -> Monitor {
    let storage_config = storage_config(config);
    let concurrency = config.worker_concurrency as usize;
    let retries = config.llm_max_attempts.saturating_sub(1) as usize;
    let (base, max) = (config.backoff_base(), config.backoff_max());
    tracing::info!(
        concurrency,
        batch_size = storage_config.batch_size,
        heartbeat_secs = storage_config.heartbeat_interval.as_secs_f64(),
        takeover_after_secs = storage_config.orphaned_duration().as_secs_f64(),
        "worker configured"
    );
    Monitor::new()
        .register(move |run| {
            let storage = PostgresStorage::<QuestionGenerationJob>::new(&state.pool)
                .with_config(storage_config.clone())
                // Millisecond pickup on insert, with a 1 s poll as a safety net.
                .with_pubsub()
                .poll_with_interval(POLL_INTERVAL);
            // Exponential backoff with full jitter between attempts.
            let backoff = ExponentialBackoffMaker::new(base, max, 1.0, HasherRng::default())
                .expect("backoff bounds are valid")
                .make_backoff();
            WorkerBuilder::new(worker_name(run))
                .backend(storage)
                // First, so it is the outermost layer (APALIS.md).
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(retries).with_backoff(backoff))
                .data(Arc::clone(&state))
                .build(job::handle)
        })
        .should_restart(|ctx, err| {
            tracing::error!(worker = %ctx.name(), error = %err, "worker stopped on an error; restarting it");
            true
        })
        .shutdown_timeout(config.shutdown_deadline())
}
