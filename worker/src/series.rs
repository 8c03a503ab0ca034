//! The worker's own metric series: its jobs, its model calls, and the reconciler's
//! figures. (The queue and operations gauges are shared with the api:
//! `shared::metrics`.)

use futures::FutureExt;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use shared::db::reconcile::{self, WorstCase};
use shared::metrics::OwnGauges;

/// Describes the worker's own series and registers them at zero, so that dashboards
/// and alerts find them from the first scrape, before the first job. Called once the
/// recorder is installed (`shared::metrics::install_recorder`).
pub fn register() {
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
        "llm_tokens_total",
        "Tokens the provider reported, by model (LLM_MODEL) and kind (prompt or completion), for every reply that reported usage."
    );
    describe_gauge!(
        "llm_cost_total",
        "What llm_tokens_total cost at LLM_PRICE_PER_MILLION_*_TOKENS, by model; only grows (read it with increase()); absent without prices."
    );
    describe_histogram!(
        "llm_tokens_per_question",
        "Tokens (prompt and completion) of the call that wrote each committed question."
    );
    describe_gauge!(
        "llm_in_flight",
        "Model calls this worker process has in flight now."
    );
    describe_gauge!(
        "llm_cap_share",
        "This process's share of LLM_MAX_IN_FLIGHT, recomputed at each heartbeat (absent without a cap)."
    );
    describe_histogram!(
        "llm_wait_seconds",
        Unit::Seconds,
        "Waits on the model provider that cost no attempt, by reason (rate_limited, unavailable, cap)."
    );
    describe_gauge!(
        "llm_breaker_open",
        "1 while this process's breaker is open (the provider keeps failing; one probe at a time), else 0."
    );
    describe_counter!(
        "question_job_retries_total",
        "Job attempts that failed and will be tried again."
    );
    describe_counter!(
        "question_jobs_finished_total",
        "Jobs that ended, by outcome (completed or failed)."
    );
    describe_counter!(
        "question_jobs_put_back_total",
        "Jobs put back in the queue without counting a run, by reason (unknown_payload_version: written by a newer release)."
    );
    describe_gauge!(
        "question_jobs_in_flight",
        "Jobs this worker process is running now."
    );
    describe_histogram!(
        "job_duration_seconds",
        Unit::Seconds,
        "Wall time of one job attempt, LLM call included, by job type."
    );
    describe_counter!(
        "job_retries_total",
        "Job attempts that failed and will be tried again, by job type."
    );
    describe_counter!(
        "jobs_finished_total",
        "Jobs that ended, by job type and outcome (completed or failed)."
    );
    describe_counter!(
        "jobs_put_back_total",
        "Jobs put back in the queue without counting a run, by job type and reason."
    );
    describe_gauge!(
        "jobs_in_flight",
        "Jobs this worker process is running now, by job type."
    );
    describe_gauge!(
        "operations_overdue",
        "Unfinished operations first started longer ago than their job's worst case (must read 0)."
    );
    describe_counter!(
        "operations_reconciled_total",
        "Operations the reconciler failed, by reason (job_ended, overdue)."
    );
    let _ = histogram!("question_job_duration_seconds");
    let _ = histogram!("llm_request_duration_seconds");
    for reason in ["rate_limited", "unavailable", "cap"] {
        let _ = histogram!("llm_wait_seconds", "reason" => reason);
    }
    gauge!("llm_in_flight").set(0.0);
    gauge!("llm_breaker_open").set(0.0);
    // Every outcome from the first scrape: an alert on increase() misses the first
    // event of a series that appears with it (LLMQuotaExhausted).
    for outcome in ["ok", "quota_exhausted"] {
        counter!("llm_requests_total", "outcome" => outcome).increment(0);
    }
    counter!("question_job_retries_total").increment(0);
    counter!("question_jobs_put_back_total", "reason" => "unknown_payload_version").increment(0);
    for outcome in ["completed", "failed"] {
        counter!("question_jobs_finished_total", "outcome" => outcome).increment(0);
    }
    gauge!("question_jobs_in_flight").set(0.0);
    for job_type in shared::jobs::QUEUES {
        let _ = histogram!("job_duration_seconds", "job_type" => job_type);
        counter!("job_retries_total", "job_type" => job_type).increment(0);
        counter!("jobs_put_back_total", "job_type" => job_type, "reason" => "unknown_payload_version")
            .increment(0);
        for outcome in ["completed", "failed"] {
            counter!("jobs_finished_total", "job_type" => job_type, "outcome" => outcome)
                .increment(0);
        }
        gauge!("jobs_in_flight", "job_type" => job_type).set(0.0);
    }
    gauge!("operations_overdue").set(0.0);
    for reason in ["job_ended", "overdue"] {
        counter!("operations_reconciled_total", "reason" => reason).increment(0);
    }
}

/// The worker's own database gauge, read by the shared refresh loop: `operations_overdue`.
/// Counted here, not by the reconciler: it shows what the reconciler has not (yet)
/// caught, so a reconciler that stopped working shows here.
pub fn database_gauges(worst_case: WorstCase) -> OwnGauges {
    Box::new(move |pool| {
        async move {
            let mut conn = pool.acquire().await?;
            let overdue = reconcile::count_overdue(&mut conn, worst_case).await?;
            gauge!("operations_overdue").set(overdue as f64);
            Ok(())
        }
        .boxed()
    })
}
