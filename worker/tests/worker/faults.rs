//! Fault injection: an unreliable LLM, workers killed again and again, the api killed
//! right after accepting, a worker stopped with a full house in flight, and PostgreSQL
//! restarted under load. Each checks that nothing accepted is lost and nothing counted
//! twice.

use crate::helpers::*;
use crate::processes::{Process, database_url, signed_in_session};
use serde_json::Value;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wiremock::{Request, Respond, ResponseTemplate};

/// Every completed operation is consistent (its message exists and matches its result),
/// every failed one left no message, and each session's counter equals its questions,
/// numbered 1..n with no gap or repeat.
pub async fn assert_consistent(pool: &PgPool) {
    let inconsistent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operations o
         LEFT JOIN session_messages m ON m.operation_id = o.id
         WHERE (o.status = 'completed' AND (m.id IS NULL OR o.result->>'message_id' <> m.id::text
                                            OR o.result->>'question_text' <> m.content))
            OR (o.status = 'failed' AND m.id IS NOT NULL)
            OR o.status NOT IN ('completed', 'failed')",
    )
    .fetch_one(pool)
    .await
    .expect("consistency");
    assert_eq!(
        inconsistent, 0,
        "operations whose state and messages disagree"
    );
    let bad_sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM interview_sessions s
         WHERE s.current_question_number <> (SELECT count(*) FROM session_messages m WHERE m.session_id = s.id)
            OR ARRAY(SELECT (metadata->>'question_number')::int FROM session_messages m WHERE m.session_id = s.id ORDER BY 1)
               <> ARRAY(SELECT generate_series(1, s.current_question_number))",
    )
    .fetch_one(pool)
    .await
    .expect("sessions");
    assert_eq!(
        bad_sessions, 0,
        "sessions whose counter and questions disagree"
    );
}

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
    let mut fixtures = Vec::new();
    for n in 0..10 {
        fixtures.push(session(&pool, n).await);
    }
    let mut ops: Vec<OperationId> = Vec::new();
    for _ in 0..30 {
        for (user, session) in &fixtures {
            ops.push(enqueue(&pool, *user, *session, 5).await);
        }
    }
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

pub fn worker_env(
    pool: &PgPool,
    server: &wiremock::MockServer,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url(pool)),
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("LLM_BACKOFF_BASE_MS", "10".to_owned()),
        ("LLM_BACKOFF_MAX_MS", "50".to_owned()),
        ("WORKER_HEARTBEAT_SECS", "3".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

async fn completed_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM operations WHERE status = 'completed'")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrations = false)]
async fn three_rounds_of_kill_9_among_three_workers_lose_and_duplicate_nothing(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Survive this?", "technical").set_delay(Duration::from_millis(100)),
    )
    .await;
    let env = worker_env(&pool, &server, &[]);
    let mut fixtures = Vec::new();
    for n in 0..20 {
        fixtures.push(session(&pool, n).await);
    }
    let mut ops = Vec::new();
    for _ in 0..25 {
        for (user, session) in &fixtures {
            ops.push(enqueue(&pool, *user, *session, 5).await);
        }
    }
    let mut workers = vec![
        Process::start("worker", "round-a", &env).await,
        Process::start("worker", "round-b", &env).await,
        Process::start("worker", "round-c", &env).await,
    ];
    for round in 1..=3i64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while completed_count(&pool).await < round * 100 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: no progress"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut victim = workers.remove(0);
        victim.kill();
        workers.push(Process::start("worker", &format!("round-{round}-restart"), &env).await);
    }
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    assert_eq!(completed_count(&pool).await, 500);
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn every_202_completes_after_the_api_is_killed_right_after_accepting(pool: PgPool) {
    migrated(&pool).await;
    let db = database_url(&pool);
    let mut api = Process::start(
        "api",
        "killed",
        &[
            ("DATABASE_URL", db.clone()),
            ("JWT_SECRET", "kill-secret".into()),
            ("RATE_LIMIT_GENERATE_PER_MINUTE", "0".into()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", api.addr);
    let (token, session_id) = signed_in_session(&client, &api.addr, "k@example.com").await;
    let path = url(&format!("/api/v1/sessions/{session_id}/generate-question"));

    let burst = (0..50).map(|_| client.post(&path).bearer_auth(&token).send());
    let mut accepted = Vec::new();
    for response in futures::future::join_all(burst).await {
        let response = response.expect("request");
        assert_eq!(response.status(), 202);
        let op: Value = response.json().await.expect("json");
        accepted.push(
            op["id"]
                .as_str()
                .expect("id")
                .parse::<uuid::Uuid>()
                .expect("uuid"),
        );
    }
    api.kill();

    let worker = Process::start(
        "worker",
        "after-api-kill",
        &[("DATABASE_URL", db), ("LLM_PROVIDER", "offline".into())],
    )
    .await;
    for id in &accepted {
        assert_eq!(
            finished(&pool, OperationId(*id)).await.status.as_str(),
            "completed"
        );
    }
    drop(worker);
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn sigterm_with_50_jobs_in_flight_exits_0_in_time_and_loses_nothing(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Finish me?", "technical").set_delay(Duration::from_secs(2)),
    )
    .await;
    let env = worker_env(
        &pool,
        &server,
        &[("WORKER_CONCURRENCY", "64"), ("WORKER_SHUTDOWN_SECS", "15")],
    );
    let mut fixtures = Vec::new();
    for n in 0..10 {
        fixtures.push(session(&pool, n).await);
    }
    let mut ops = Vec::new();
    for _ in 0..6 {
        for (user, session) in &fixtures {
            ops.push(enqueue(&pool, *user, *session, 5).await);
        }
    }
    let mut worker = Process::start("worker", "sigterm-50", &env).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM operations WHERE status = 'processing'",
    )
    .fetch_one(&pool)
    .await
    .expect("count")
        < 50
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "50 jobs never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let status = worker.terminate(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}; log: {}", worker.logs());
    assert!(
        took < Duration::from_secs(15 + 5),
        "took {took:?} to exit, beyond WORKER_SHUTDOWN_SECS"
    );
    let _next = Process::start("worker", "after-sigterm-50", &env).await;
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    assert_consistent(&pool).await;
}
