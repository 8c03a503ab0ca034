//! The Prometheus recorder, the rendering of a scrape, and the gauges that are read
//! from the database (every few seconds, by a task of each binary) so that every
//! replica reports the whole queue, not its own share. Serving `/metrics` over HTTP is
//! the binaries' part.

use crate::db::operations;
use crate::db::queue;
use crate::domain::OperationStatus;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Histogram buckets for latencies from 1 ms to 30 s: HTTP requests sit at the low end,
/// LLM calls and whole jobs (0.1–30 s) at the high end.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
    20.0, 30.0, 60.0,
];

/// Installs the process-wide recorder (once; later calls return a handle to a fresh,
/// uninstalled recorder so tests that start several servers in one process still work).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder is installed (only possible in tests): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The content type of Prometheus' text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The body of a `/metrics` response and its content type: what both binaries answer a
/// scrape with. It reads nothing: the database gauges are kept fresh by
/// [`refresh_gauges_every`].
pub fn render(handle: &PrometheusHandle) -> (&'static str, String) {
    (CONTENT_TYPE, handle.render())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "question_jobs",
        "Question-generation jobs in the queue, by state."
    );
    describe_gauge!(
        "question_jobs_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest job waiting to be picked up."
    );
    describe_gauge!("operations", "Operations by status.");
    describe_gauge!(
        "operations_overdue",
        "Unfinished operations first started longer ago than a job's worst case (must read 0)."
    );
    describe_counter!(
        "operations_reconciled_total",
        "Operations the reconciler failed, by reason (job_ended, overdue)."
    );
    describe_gauge!(
        "question_worker_heartbeat_age_seconds",
        Unit::Seconds,
        "Seconds since the freshest worker heartbeat (+Inf when no worker ever ran)."
    );
    describe_histogram!(
        "question_job_duration_seconds",
        Unit::Seconds,
        "Wall time of one job attempt, LLM call included."
    );
    describe_histogram!(
        "llm_request_duration_seconds",
        Unit::Seconds,
        "Duration of one LLM request."
    );
    describe_counter!("llm_requests_total", "LLM requests by outcome.");
    describe_counter!(
        "question_job_retries_total",
        "Job attempts that failed and will be tried again."
    );
    describe_counter!(
        "question_jobs_finished_total",
        "Jobs that ended, by outcome (completed or failed)."
    );
    describe_gauge!(
        "question_jobs_in_flight",
        "Jobs this worker process is running now."
    );
    describe_counter!(
        "password_hashes_refused_total",
        "Registrations and logins answered 503 because every hashing slot was busy."
    );
    describe_counter!(
        "long_polls_shed_total",
        "Long polls answered at once because MAX_LONG_POLLS were already waiting."
    );
    describe_counter!(
        "operations_cancelled_total",
        "Operations their owner cancelled."
    );
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template."
    );
}

/// The contract's queue states, from apalis' job statuses.
fn queue_state(apalis_status: &str) -> Option<&'static str> {
    match apalis_status {
        "Pending" | "Queued" => Some("pending"),
        "Held" => Some("held"),
        "Running" => Some("running"),
        "Done" => Some("done"),
        "Failed" | "Killed" => Some("failed"),
        _ => None,
    }
}

/// How often [`refresh_gauges_every`] reads the database gauges.
pub const GAUGE_REFRESH: std::time::Duration = std::time::Duration::from_secs(3);

/// Keeps the database gauges fresh: reads them now, then every `period`, for as long
/// as the task runs. A scrape then costs no query at all, however often (or however
/// many clients) scrape; the gauges are at most `period` old.
pub async fn refresh_gauges_every(pool: PgPool, period: std::time::Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = refresh_database_gauges(&pool).await {
            // The gauges keep their last values; the process's own series are unaffected.
            tracing::warn!(error = %err, "could not read queue depth for the metrics");
        }
    }
}

/// Reads queue depth and operation counts from the database into the gauges; states
/// with no rows are set to 0 so a drained queue reads 0, not stale.
pub async fn refresh_database_gauges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut depth = [
        ("pending", 0i64),
        ("held", 0),
        ("running", 0),
        ("done", 0),
        ("failed", 0),
    ];
    for (status, count) in queue::count_by_status(pool).await? {
        if let Some(state) = queue_state(&status)
            && let Some(slot) = depth.iter_mut().find(|(name, _)| *name == state)
        {
            slot.1 += count;
        }
    }
    for (state, count) in depth {
        gauge!("question_jobs", "state" => state).set(count as f64);
    }
    gauge!("question_jobs_oldest_pending_age_seconds")
        .set(queue::oldest_pending_age_secs(pool).await?);
    let heartbeat_age = queue::freshest_worker_heartbeat_age_secs(pool).await?;
    gauge!("question_worker_heartbeat_age_seconds").set(heartbeat_age.unwrap_or(f64::INFINITY));

    let counts = operations::count_by_status(pool).await?;
    for status in OperationStatus::ALL {
        let count = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        gauge!("operations", "status" => status.as_str()).set(count as f64);
    }
    Ok(())
}

/// Registers the api's own counters at zero, so that dashboards and alerts find them
/// before the first event.
pub fn register_api_series() {
    counter!("password_hashes_refused_total").increment(0);
    counter!("long_polls_shed_total").increment(0);
    counter!("operations_cancelled_total").increment(0);
}

/// Registers the worker's own series at zero, so that dashboards and alerts find them
/// from the first scrape, before the first job.
pub fn register_worker_series() {
    let _ = histogram!("question_job_duration_seconds");
    let _ = histogram!("llm_request_duration_seconds");
    counter!("llm_requests_total", "outcome" => "ok").increment(0);
    counter!("question_job_retries_total").increment(0);
    for outcome in ["completed", "failed"] {
        counter!("question_jobs_finished_total", "outcome" => outcome).increment(0);
    }
    gauge!("question_jobs_in_flight").set(0.0);
    gauge!("operations_overdue").set(0.0);
    for reason in ["job_ended", "overdue"] {
        counter!("operations_reconciled_total", "reason" => reason).increment(0);
    }
}
