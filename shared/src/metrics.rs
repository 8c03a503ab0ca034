//! The Prometheus recorder, the rendering of a scrape, and the one loop that reads
//! gauges from the database (every [`GAUGE_REFRESH`], a task of each binary) so that
//! every replica reports the whole queue, not its own share.
//!
//! Here are only the series both binaries report: the queue and the operations. Each
//! binary describes and registers its own (the api's HTTP and abuse counters, the
//! worker's jobs and model calls) and passes its own database gauges, if any, to
//! [`refresh_gauges_every`]. Serving `/metrics` over HTTP is the binaries' part too.

use crate::db::{ended_counts, intake, operations, queue};
use crate::domain::OperationStatus;
use crate::jobs::{QUESTION_GENERATION_QUEUE, QUEUES};
use futures::future::BoxFuture;
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use std::time::Duration;

/// Histogram buckets for latencies from 1 ms to 30 s: HTTP requests sit at the low end,
/// LLM calls and whole jobs (0.1–30 s) at the high end.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
    20.0, 30.0, 60.0,
];

/// Histogram buckets for tokens per question: a prompt of a few hundred tokens at the
/// start of an interview, up to the prompt's budget (112,400 characters, about 30,000
/// tokens) at its longest.
const TOKEN_BUCKETS: &[f64] = &[
    250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0, 32_000.0, 64_000.0,
];

/// Installs the process-wide recorder (once; later calls return a handle to a fresh,
/// uninstalled recorder so tests that start several servers in one process still work).
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full("llm_tokens_per_question".to_owned()),
                        TOKEN_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    crate::build::register_build_info();
                    spawn_upkeep(handle.clone());
                    handle
                }
                // Another recorder is installed (only possible in tests): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// How often the installed recorder's histograms are drained ([`spawn_upkeep`]).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Drains the histograms every [`UPKEEP_EVERY`], on a thread of its own. The exporter
/// keeps each observation of a histogram until a scrape or an upkeep folds it into the
/// buckets, and `install_recorder` leaves the upkeep to its caller: a process that
/// nobody scraped grew by every observation (the soak's worker 2, whose metrics no one
/// read, 35 → 59 MiB in an hour, while worker 1, read every 10 s, stayed flat).
/// The crate's own upkeep task comes only with its `build`/`install`, which need its
/// HTTP listener feature; `/metrics` is served by our own servers instead.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "could not start the metrics' upkeep: histograms grow until scraped");
    }
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
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        "question_jobs",
        "Question-generation jobs in the queue, by state."
    );
    describe_gauge!(
        "question_jobs_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest job waiting to be picked up."
    );
    describe_gauge!(
        "jobs",
        "Jobs in the queue, by job type (question_generation, feedback_analysis) and state."
    );
    describe_gauge!(
        "jobs_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest job waiting to be picked up, by job type."
    );
    describe_gauge!("operations", "Operations by status.");
    describe_gauge!(
        "intake_paused",
        "1 while an operator has paused intake (workers claim no new job), else 0."
    );
    describe_gauge!(
        "intake_paused_seconds",
        Unit::Seconds,
        "How long intake has been paused; 0 while it runs."
    );
    describe_gauge!(
        "question_worker_heartbeat_age_seconds",
        Unit::Seconds,
        "Seconds since the freshest worker heartbeat (+Inf when no worker ever ran)."
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

/// How often [`refresh_gauges_every`] reads the database gauges: a scrape then costs
/// no query, and the gauges are at most this old.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(3);

/// A binary's own database gauges, read after the shared ones at each refresh.
pub type OwnGauges = Box<dyn Fn(&PgPool) -> BoxFuture<'_, Result<(), sqlx::Error>> + Send + Sync>;

/// The one loop that keeps the database gauges fresh: reads the queue's and the
/// operations' gauges, then the binary's `own`, now and every `period`, for as long as
/// the task runs. A scrape then costs no query at all, however often (or however many
/// clients) scrape. A failed read leaves the gauges at their last values.
pub async fn refresh_gauges_every(pool: PgPool, period: Duration, own: Option<OwnGauges>) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = refresh_queue_gauges(&pool).await {
            tracing::warn!(error = %err, "could not read queue depth for the metrics");
        }
        if let Some(own) = &own
            && let Err(err) = own(&pool).await
        {
            tracing::warn!(error = %err, "could not read this process's database gauges");
        }
    }
}

/// Reads queue depth and operation counts from the database into the gauges; states
/// with no rows are set to 0 so a drained queue reads 0, not stale. The work in play is
/// counted at each refresh; ended jobs and finished operations come from the shared
/// count ([`ended_counts`]), which this process recounts when it is due and no other
/// replica is at it, so they lag by up to [`ended_counts::MIN_PERIOD`] (more on a
/// database where counting them is slow).
pub async fn refresh_queue_gauges(pool: &PgPool) -> Result<(), sqlx::Error> {
    let recount = async { ended_counts::recount_if_due(&mut *pool.acquire().await?).await };
    if let Err(err) = recount.await {
        tracing::warn!(error = %err, "could not count the ended jobs for the metrics");
    }
    let ended = ended_counts::read(pool).await?;
    let counts = queue::count_in_play(pool).await?;
    let ages = queue::oldest_pending_age_secs(pool).await?;
    let by_state: Vec<(&str, &str, i64)> = counts
        .iter()
        .map(|c| (c.job_type.as_str(), c.status.as_str(), c.count))
        .chain(
            ended
                .jobs
                .iter()
                .map(|c| (c.job_type.as_str(), c.status.as_str(), c.count)),
        )
        .collect();
    for job_type in QUEUES {
        let mut depth = [
            ("pending", 0i64),
            ("held", 0),
            ("running", 0),
            ("done", 0),
            ("failed", 0),
        ];
        for (_, status, count) in by_state.iter().filter(|(queue, ..)| *queue == job_type) {
            if let Some(state) = queue_state(status)
                && let Some(slot) = depth.iter_mut().find(|(name, _)| *name == state)
            {
                slot.1 += count;
            }
        }
        let age = ages
            .iter()
            .find(|(queue, _)| queue == job_type)
            .map_or(0.0, |(_, age)| *age);
        for (state, count) in depth {
            gauge!("jobs", "job_type" => job_type, "state" => state).set(count as f64);
            // The first series, kept with its meaning: the question queue's.
            if job_type == QUESTION_GENERATION_QUEUE {
                gauge!("question_jobs", "state" => state).set(count as f64);
            }
        }
        gauge!("jobs_oldest_pending_age_seconds", "job_type" => job_type).set(age);
        if job_type == QUESTION_GENERATION_QUEUE {
            gauge!("question_jobs_oldest_pending_age_seconds").set(age);
        }
    }
    let switch = intake::read(&mut *pool.acquire().await?).await?;
    gauge!("intake_paused").set(if switch.paused { 1.0 } else { 0.0 });
    gauge!("intake_paused_seconds").set(if switch.paused { switch.for_secs } else { 0.0 });
    let heartbeat_age = queue::freshest_worker_heartbeat_age_secs(pool).await?;
    gauge!("question_worker_heartbeat_age_seconds").set(heartbeat_age.unwrap_or(f64::INFINITY));

    let unfinished = operations::count_unfinished_by_status(pool).await?;
    for status in OperationStatus::ALL {
        let count = if status.is_terminal() {
            ended
                .operations
                .iter()
                .find(|c| c.status == status.as_str())
                .map_or(0, |c| c.count)
        } else {
            unfinished
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n)
        };
        gauge!("operations", "status" => status.as_str()).set(count as f64);
    }
    Ok(())
}
