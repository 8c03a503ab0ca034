//! LLM chaos: the fake model fails like a bad day in production, and every operation
//! still ends, consistent, within its call budget.

use crate::helpers::*;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wiremock::{Request, Respond, ResponseTemplate};

/// A chat-completions server that fails like a bad day in production, in a fixed
/// pseudo-random pattern: 40 % 500 or 429, 10 % too slow, 10 % malformed, 40 % fine.
struct Chaos {
    calls: AtomicU64,
}

impl Respond for Chaos {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        // A fixed permutation of 0..10 (multiplier 7 is coprime to 10).
        match (n.wrapping_mul(7) + 3) % 10 {
            0 | 1 => error(500),
            2 | 3 => error(429),
            4 => question("Too slow to matter", "technical").set_delay(Duration::from_secs(3)),
            5 => completion("{ not json"),
            _ => question(&format!("Question from call {n}?"), "technical"),
        }
    }
}

#[sqlx::test(migrations = false)]
async fn under_llm_chaos_every_operation_ends_consistent_within_the_call_budget(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(Chaos {
            calls: AtomicU64::new(0),
        })
        .mount(&server)
        .await;
    // 300 operations on 30 sessions of 10: a session's questions run one at a time
    // (each waits for its predecessor, retries included), so the number of sessions
    // bounds how many run at once; with few sessions the run would crawl.
    let ops = enqueue_on(&pool, &sessions(&pool, 30).await, 10).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.worker_concurrency = 64;
            c.llm_timeout_secs = 0.5;
        }),
    )
    .await;
    for op in &ops {
        finished(&pool, *op).await;
    }
    settled_jobs(&pool).await;
    worker.stop().await;

    assert_consistent(&pool).await;
    let (completed, failed, max_attempts): (i64, i64, i32) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'), max(attempts) FROM operations",
    )
    .fetch_one(&pool)
    .await
    .expect("tally");
    let calls = calls(&server).await;
    eprintln!(
        "chaos: {completed} completed, {failed} failed, {calls} LLM calls for 300 operations"
    );
    assert_eq!(completed + failed, 300);
    assert!(
        max_attempts <= 5,
        "an operation took {max_attempts} attempts"
    );
    assert!(
        calls <= 300 * 5,
        "{calls} calls exceed the budget of 5 per operation"
    );
    // With 40 % good replies and 5 attempts, nearly everything completes.
    assert!(completed >= 270, "only {completed} completed");
}
