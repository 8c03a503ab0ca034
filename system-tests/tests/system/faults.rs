//! Fault injection: an unreliable LLM, workers killed again and again, the api killed
//! right after accepting, a worker stopped with a full house in flight, and PostgreSQL
//! restarted under load. Each checks that nothing accepted is lost and nothing counted
//! twice.

use crate::support::worker_env;
use serde_json::Value;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::Duration;
use testkit::client::signed_in_session;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::postgres::database_url;
use testkit::process::Process;

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
    let ops = enqueue_on(&pool, &sessions(&pool, 20).await, 25).await;
    let mut workers = vec![
        Process::start("worker", "round-a", &env).await,
        Process::start("worker", "round-b", &env).await,
        Process::start("worker", "round-c", &env).await,
    ];
    for round in 1..=3i64 {
        until_operations(&pool, "completed", round * 100).await;
        let mut victim = workers.remove(0);
        victim.kill();
        workers.push(Process::start("worker", &format!("round-{round}-restart"), &env).await);
    }
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    assert_eq!(operations_in(&pool, "completed").await, 500);
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
            ("JWT_SECRET", "kill-test-signing-key-of-32-bytes".into()),
            ("RATE_LIMIT_GENERATE_PER_MINUTE", "0".into()),
            // The 50 go on one session: this test is about the api being killed, not
            // the per-session cap. They then run one after another.
            ("MAX_PENDING_PER_SESSION", "0".into()),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", api.addr);
    let (token, session_id) = signed_in_session(&api.addr, "k@example.com").await;
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
    let slow = Duration::from_secs(2);
    mount_feedback(
        &server,
        1,
        feedback(4, "Finished in the drain.").set_delay(slow),
    )
    .await;
    // Questions take longer, so that they are still in flight when the feedback
    // worker, which may start fetching a moment after the question worker, has begun.
    mount(
        &server,
        2,
        None,
        question("Finish me?", "technical").set_delay(slow * 2),
    )
    .await;
    let env = worker_env(
        &pool,
        &server,
        &[("WORKER_CONCURRENCY", "64"), ("WORKER_SHUTDOWN_SECS", "15")],
    );
    // Sixty sessions with one job each: a session's questions run one at a time, so
    // 50 can be in flight at once only if at least 50 sessions have one. Ten of the
    // sessions also have feedback to write: the drain finishes both job types.
    let fixtures = sessions(&pool, 60).await;
    let mut ops = enqueue_on(&pool, &fixtures, 1).await;
    for (user, session) in &fixtures[..10] {
        let question = asked(&pool, *session, "Drained?").await;
        ops.push(
            enqueue_feedback(&pool, *user, *session, question, "Yes.", 5)
                .await
                .1,
        );
    }
    let mut worker = Process::start("worker", "sigterm-50", &env).await;
    // At least 50 in flight, five of them feedback (each type has its own apalis
    // worker, which may start fetching a moment after the other).
    testkit::eventually(
        "50 jobs in flight, 5 of them feedback",
        Duration::from_secs(60),
        || async {
            let (all, feedback): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE operation_type = 'feedback_analysis')
             FROM operations WHERE status = 'processing'",
            )
            .fetch_one(&pool)
            .await
            .expect("count");
            (all >= 50 && feedback >= 5).then_some(())
        },
    )
    .await;
    let started = std::time::Instant::now();
    let status = worker.terminate(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}; log: {}", worker.logs());
    assert!(
        took < Duration::from_secs(15 + 5),
        "took {took:?} to exit, beyond WORKER_SHUTDOWN_SECS"
    );
    // What was in flight finished in the drain, feedback included, without a takeover.
    let drained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operations WHERE status = 'completed' AND operation_type = 'feedback_analysis'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert!(drained >= 5, "feedback finished in the drain: {drained}");
    let _next = Process::start("worker", "after-sigterm-50", &env).await;
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn kill_9_among_workers_running_questions_and_feedback_loses_and_duplicates_nothing(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    let slow = Duration::from_millis(100);
    mount_feedback(
        &server,
        1,
        feedback(3, "Fair, could go deeper.").set_delay(slow),
    )
    .await;
    mount(
        &server,
        2,
        None,
        question("Survive this?", "technical").set_delay(slow),
    )
    .await;
    let env = worker_env(&pool, &server, &[]);
    let fixtures = sessions(&pool, 20).await;
    let mut ops = Vec::new();
    for (user, session) in &fixtures {
        for n in 0..3 {
            let question = asked(&pool, *session, &format!("Question {n}?")).await;
            let (_, op) =
                enqueue_feedback(&pool, *user, *session, question, "My answer, at length.", 5)
                    .await;
            ops.push(op);
        }
    }
    ops.extend(enqueue_on(&pool, &fixtures, 3).await);
    let mut workers = vec![
        Process::start("worker", "mixed-a", &env).await,
        Process::start("worker", "mixed-b", &env).await,
    ];
    for round in 1..=2i64 {
        until_operations(&pool, "completed", round * 40).await;
        let mut victim = workers.remove(0);
        victim.kill();
        workers.push(Process::start("worker", &format!("mixed-{round}-restart"), &env).await);
    }
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    let feedback_messages: i64 =
        sqlx::query_scalar("SELECT count(*) FROM session_messages WHERE message_type = 'feedback'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(feedback_messages, 60);
    assert_eq!(operations_in(&pool, "completed").await, 120);
    assert_consistent(&pool).await;
}
