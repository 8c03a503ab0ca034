//! The model provider's limits on the real binaries: two worker processes share one cap
//! and the provider never sees more than it; a killed worker's share comes back to the
//! other; a 45 s outage costs few calls and loses nothing.

use crate::support::{scrape_showing, worker_env_at};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use testkit::fixtures::*;
use testkit::process::Process;
use testkit::provider::{Behaviour, FakeProvider, Mode};

/// Two workers sharing a cap of 6 (at full concurrency, beating every half second),
/// with a provider that serves 6 at once, once each has counted the other: three
/// calls each.
async fn two_workers_under_a_cap_of_6(pool: &PgPool, tag: &str) -> (FakeProvider, [Process; 2]) {
    let provider = FakeProvider::start(Behaviour::with_capacity(6))
        .await
        .expect("provider");
    let env = worker_env_at(
        pool,
        &provider.base_url,
        &[
            ("LLM_MAX_IN_FLIGHT", "6"),
            ("WORKER_CONCURRENCY", "64"),
            ("WORKER_HEARTBEAT_SECS", "2"),
        ],
    );
    let workers = [
        Process::start("worker", &format!("{tag}-a"), &env).await,
        Process::start("worker", &format!("{tag}-b"), &env).await,
    ];
    for worker in &workers {
        scrape_showing(&worker.addr, &[("llm_cap_share", 3.0)]).await;
    }
    (provider, workers)
}

#[sqlx::test(migrations = false)]
async fn two_workers_under_a_cap_of_6_complete_120_operations_and_the_provider_sees_at_most_6(
    pool: PgPool,
) {
    migrated(&pool).await;
    let (provider, _workers) = two_workers_under_a_cap_of_6(&pool, "cap").await;
    let ops = one_each(&pool, 120).await;
    all_completed(&pool, &ops).await;
    let seen = provider.seen();
    eprintln!("two workers, cap 6, a provider serving 6: {seen:?}");
    assert_eq!(seen.served, 120);
    assert_eq!(
        seen.rate_limited, 0,
        "the provider never had to refuse: {seen:?}"
    );
    assert!(seen.peak_in_flight <= 6, "{seen:?}");
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_killed_workers_share_of_the_cap_goes_back_to_the_other(pool: PgPool) {
    migrated(&pool).await;
    let (provider, [survivor, mut victim]) = two_workers_under_a_cap_of_6(&pool, "share").await;
    victim.kill();
    let killed = Instant::now();
    scrape_showing(&survivor.addr, &[("llm_cap_share", 6.0)]).await;
    eprintln!(
        "the survivor held the whole cap {:?} after the kill (takeover window 2 s)",
        killed.elapsed()
    );
    // And uses it: the provider sees six at once, and never more.
    let ops = one_each(&pool, 60).await;
    all_completed(&pool, &ops).await;
    let seen = provider.seen();
    assert_eq!(seen.peak_in_flight, 6, "the whole cap in use: {seen:?}");
    assert_eq!(seen.rate_limited, 0, "{seen:?}");
}

#[sqlx::test(migrations = false)]
async fn a_45_s_outage_costs_at_most_60_calls_and_every_operation_completes_after_it(pool: PgPool) {
    migrated(&pool).await;
    let provider = FakeProvider::start(Behaviour::unlimited(Duration::from_millis(100)))
        .await
        .expect("provider");
    provider.set_mode(Mode::Down {
        retry_after: Some("2".to_owned()),
    });
    let env = worker_env_at(&pool, &provider.base_url, &[("WORKER_CONCURRENCY", "64")]);
    let worker = Process::start("worker", "outage-45", &env).await;
    let ops = one_each(&pool, 20).await;
    until_operations(&pool, "processing", 20).await;
    let began = Instant::now();
    testkit::eventually("the breaker to open", Duration::from_secs(30), || async {
        crate::support::value(
            &crate::support::scrape(&worker.addr).await,
            "llm_breaker_open ",
        )
        .filter(|open| *open == 1.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(45).saturating_sub(began.elapsed())).await;
    let during = provider.seen();
    provider.set_mode(Mode::Serving);
    all_completed(&pool, &ops).await;
    for op in &ops {
        assert_eq!(attempts(&pool, *op).await, 1, "waiting counted no attempt");
    }
    eprintln!("calls during a 45 s outage with 20 operations waiting: {during:?}");
    assert!(during.unavailable <= 60, "{during:?}");
    assert_consistent(&pool).await;
}
