//! The model provider's limits, in-process: waits that cost no attempt, the breaker,
//! the wait budget, and the cap on calls in flight. (Two worker processes sharing a
//! cap, and a killed one's share, are in system-tests: one process has one worker name.)

use crate::helpers::*;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use testkit::provider::{Behaviour, FakeProvider, Mode};
use wiremock::MockServer;

fn refused(status: u16, retry_after: Option<&str>) -> wiremock::ResponseTemplate {
    let reply = error(status);
    match retry_after {
        Some(value) => reply.insert_header("retry-after", value),
        None => reply,
    }
}

async fn metadata(pool: &PgPool, op: OperationId) -> serde_json::Value {
    sqlx::query_scalar("SELECT metadata FROM session_messages WHERE operation_id = $1")
        .bind(op)
        .fetch_one(pool)
        .await
        .expect("message")
}

/// Waits for `op` to end, and asserts that it failed as "busy", quoting nothing of
/// either fake provider.
async fn failed_busy(pool: &PgPool, op: OperationId) {
    let done = finished(pool, op).await;
    assert_eq!(done.status.as_str(), "failed");
    let message = done.error_message.expect("a sentence");
    assert!(
        message.contains("the language model service is busy"),
        "{message}"
    );
    for quote in ["provider says", "fake provider"] {
        assert!(!message.contains(quote), "quotes the provider: {message}");
    }
}

/// The worker settings for a fake provider at `base_url`.
fn provider_config(
    base_url: &str,
    configure: impl FnOnce(&mut worker::config::WorkerConfig),
) -> worker::config::WorkerConfig {
    config(|c| {
        c.llm_provider = Some(worker::config::Provider::Openai.into());
        c.openai_base_url = Some(base_url.to_owned());
        c.openai_api_key = Some(shared::config::Secret::new("sk-test-key"));
        c.worker_heartbeat_secs = 2;
        c.worker_concurrency = 64;
        c.llm_timeout_secs = 10.0;
        configure(c);
    })
}

#[sqlx::test(migrations = false)]
async fn a_429_with_retry_after_is_waited_out_and_counts_no_attempt(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, Some(2), refused(429, Some("1"))).await;
    mount(&server, 2, None, question("Worth the wait?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    // One attempt allowed: only a call that no wait explains may count.
    let op = enqueue(&pool, user, session, 1).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "completed");
    assert_eq!(calls(&server).await, 3);
    assert_eq!(attempts(&pool, op).await, 1, "the waits counted no attempt");
    let metadata = metadata(&pool, op).await;
    assert_eq!(
        metadata["attempts"], 3,
        "every call made for it: {metadata}"
    );
    let waited = metadata["waited_ms"].as_u64().expect("waited_ms");
    assert!(
        waited >= 2_000,
        "two waits of Retry-After: 1 s each: {waited} ms"
    );
}

#[sqlx::test(migrations = false)]
async fn a_503_with_an_http_date_is_waited_out_too(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    let in_a_second =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    mount(&server, 1, Some(1), refused(503, Some(&in_a_second))).await;
    mount(&server, 2, None, question("Back?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 1).await;
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");
    worker.stop().await;
    assert_eq!(calls(&server).await, 2);
    assert_eq!(attempts(&pool, op).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_429_without_a_hint_waits_the_backoff_then_fails_busy_past_the_wait_budget(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, refused(429, None)).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_max_wait_secs = 2;
            c.llm_backoff_base_ms = 100;
            c.llm_backoff_max_ms = 400;
        }),
    )
    .await;
    let op = enqueue(&pool, user, session, 5).await;
    failed_busy(&pool, op).await;
    worker.stop().await;
    assert_eq!(attempts(&pool, op).await, 1, "no wait counted an attempt");
    let (calls_kept, waited_ms): (i32, i64) =
        sqlx::query_as("SELECT model_calls, waited_ms FROM operations WHERE id = $1")
            .bind(op)
            .fetch_one(&pool)
            .await
            .expect("cost");
    assert_eq!(
        calls_kept as usize,
        calls(&server).await,
        "every call is on record"
    );
    assert!(
        calls_kept >= 4,
        "a 2 s budget of 100–400 ms backoffs: {calls_kept} calls"
    );
    assert!(
        (1_000..=2_000).contains(&waited_ms),
        "waited {waited_ms} ms of a 2 s budget"
    );
}

#[sqlx::test(migrations = false)]
async fn a_permanent_503_without_retry_after_fails_after_exactly_the_jobs_max_attempts_calls(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, refused(503, None)).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    // More attempts than the breaker lets pass before it opens: its probes are the
    // operation's own attempts, so the count stays exact.
    let op = enqueue(&pool, user, session, 7).await;
    let done = finished(&pool, op).await;
    let statuses = settled_jobs(&pool).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert!(
        done.error_message
            .expect("sentence")
            .contains("had an error")
    );
    assert_eq!(calls(&server).await, 7);
    assert_eq!(attempts(&pool, op).await, 7);
    assert_eq!(statuses, ["Killed"]);
}

#[sqlx::test(migrations = false)]
async fn an_outage_with_retry_after_costs_few_calls_and_every_operation_completes_after_it(
    pool: PgPool,
) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::unlimited(Duration::from_millis(50)))
        .await
        .expect("provider");
    provider.set_mode(Mode::Down {
        retry_after: Some("2".to_owned()),
    });
    let worker = RunningWorker::start(&pool, provider_config(&provider.base_url, |_| {})).await;
    let outage = Duration::from_secs(12);
    let ops = one_each(&pool, 20).await;
    let started = Instant::now();
    until_operations(&pool, "processing", 20).await;
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    let during = provider.seen();
    provider.set_mode(Mode::Serving);
    eprintln!("calls during a {outage:?} outage: {during:?}");
    all_completed(&pool, &ops).await;
    for op in &ops {
        assert_eq!(attempts(&pool, *op).await, 1, "waiting counted no attempt");
    }
    worker.stop().await;
    // Without the breaker, 20 jobs calling every ~2 s would make ~120 calls in 12 s.
    // With it: the 20 first calls, then one probe per Retry-After.
    assert!(
        during.unavailable <= 20 + 12 / 2 + 2,
        "calls during the outage: {during:?}"
    );
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn an_outage_longer_than_the_wait_budget_fails_every_operation_within_about_it(pool: PgPool) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::unlimited(Duration::ZERO))
        .await
        .expect("provider");
    provider.set_mode(Mode::Down {
        retry_after: Some("2".to_owned()),
    });
    let worker = RunningWorker::start(
        &pool,
        provider_config(&provider.base_url, |c| c.llm_max_wait_secs = 15),
    )
    .await;
    let ops = one_each(&pool, 5).await;
    let started = Instant::now();
    for op in &ops {
        failed_busy(&pool, *op).await;
        assert_eq!(attempts(&pool, *op).await, 1);
    }
    let elapsed = started.elapsed();
    worker.stop().await;
    eprintln!(
        "5 operations under an endless outage, a 15 s wait budget: all failed after {elapsed:?}; {:?}",
        provider.seen()
    );
    // Safety nets around the budget, not measurements: no operation gives up before
    // most of its 15 s are spent, and none waits far past them.
    assert!(
        elapsed >= Duration::from_secs(11),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "waited on: {elapsed:?}");
}

#[sqlx::test(migrations = false)]
async fn with_no_cap_a_provider_serving_four_at_once_completes_all_80(pool: PgPool) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::with_capacity(4))
        .await
        .expect("provider");
    let worker = RunningWorker::start(&pool, provider_config(&provider.base_url, |_| {})).await;
    let ops = one_each(&pool, 80).await;
    all_completed(&pool, &ops).await;
    worker.stop().await;
    let seen = provider.seen();
    eprintln!("no cap, a provider serving 4: {seen:?}");
    assert_eq!(seen.served, 80);
    assert!(seen.rate_limited > 0, "the provider did refuse: {seen:?}");
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_cap_keeps_the_provider_within_its_capacity_and_nothing_is_refused(pool: PgPool) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::with_capacity(4))
        .await
        .expect("provider");
    let worker = RunningWorker::start(
        &pool,
        provider_config(&provider.base_url, |c| c.llm_max_in_flight = 4),
    )
    .await;
    // Until the worker has counted its peers (none), it starts no call.
    testkit::eventually(
        "the worker's share of the cap",
        Duration::from_secs(60),
        || async {
            let share: Option<i32> = sqlx::query_scalar("SELECT max(cap_share) FROM worker_state")
                .fetch_one(&pool)
                .await
                .expect("share");
            (share == Some(4)).then_some(())
        },
    )
    .await;
    let ops = one_each(&pool, 40).await;
    all_completed(&pool, &ops).await;
    worker.stop().await;
    let seen = provider.seen();
    eprintln!("a cap of 4, a provider serving 4: {seen:?}");
    assert_eq!(seen.served, 40);
    assert_eq!(seen.rate_limited, 0, "{seen:?}");
    assert!(seen.peak_in_flight <= 4, "{seen:?}");
}

#[sqlx::test(migrations = false)]
async fn an_operation_cancelled_while_its_job_waits_gets_no_more_calls(pool: PgPool) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::unlimited(Duration::ZERO))
        .await
        .expect("provider");
    provider.set_mode(Mode::Down {
        retry_after: Some("1".to_owned()),
    });
    let worker = RunningWorker::start(&pool, provider_config(&provider.base_url, |_| {})).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    testkit::eventually("a refused call", Duration::from_secs(60), || async {
        (provider.seen().calls >= 1).then_some(())
    })
    .await;
    let mut conn = pool.acquire().await.expect("conn");
    shared::db::operations::cancel(&mut conn, op, user)
        .await
        .expect("cancel")
        .expect("it was unfinished");
    let at_cancel = provider.seen().calls;
    // Its job ends at its next wait's end (Done: nothing failed), not at the budget.
    assert_eq!(settled_jobs(&pool).await, ["Done"]);
    worker.stop().await;
    assert!(
        provider.seen().calls <= at_cancel + 1,
        "calls went on after the cancel: {} then {:?}",
        at_cancel,
        provider.seen()
    );
    assert_eq!(
        finished(&pool, op).await.error_message.as_deref(),
        Some(shared::db::operations::CANCELLED)
    );
}
