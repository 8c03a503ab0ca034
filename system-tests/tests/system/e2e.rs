//! End to end with the real binaries: the client's path over HTTP, two workers sharing a
//! queue, a worker killed mid-run, and a graceful shutdown with jobs in flight.

use serde_json::{Value, json};
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::Duration;
use testkit::client::{get_json, post_json};
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::postgres::database_url;
use testkit::process::Process;
use wiremock::MockServer;

fn worker_env(pool: &PgPool, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url(pool)),
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("LLM_BACKOFF_BASE_MS", "10".to_owned()),
        ("LLM_BACKOFF_MAX_MS", "50".to_owned()),
    ];
    for (k, v) in extra {
        let key: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.push((key, v.to_string()));
    }
    env
}

/// A fake LLM that takes `delay` for each question.
async fn slow_llm(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("How would you keep a queue exactly-once?", "technical").set_delay(delay),
    )
    .await;
    server
}

fn openai_env(server: &MockServer) -> [(&'static str, String); 3] {
    [
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("LLM_MODEL", "test-model".to_owned()),
    ]
}

#[sqlx::test(migrations = false)]
async fn a_client_gets_a_question_and_feedback_on_its_answer_through_the_real_binaries(
    pool: PgPool,
) {
    let db = database_url(&pool);
    let api = Process::start(
        "api",
        "e2e",
        &[
            ("DATABASE_URL", db.clone()),
            ("JWT_SECRET", "e2e-test-signing-key-of-32-bytes".into()),
        ],
    )
    .await;
    let worker = Process::start(
        "worker",
        "e2e",
        &worker_env(&pool, &[("LLM_PROVIDER", "offline")]),
    )
    .await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", api.addr);

    let registered = client
        .post(url("/api/v1/auth/register"))
        .json(&json!({"email": "e2e@example.com", "password": "long enough"}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    let login: Value = client
        .post(url("/api/v1/auth/login"))
        .json(&json!({"email": "e2e@example.com", "password": "long enough"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    client
        .put(url("/api/v1/resume"))
        .bearer_auth(&token)
        .json(&json!({"content": "Rust, PostgreSQL"}))
        .send()
        .await
        .expect("resume");
    let posting: Value = post_json(
        &client,
        &url("/api/v1/job-postings"),
        &token,
        &json!({"title": "Backend engineer", "description": "Queues and databases"}),
    )
    .await;
    let session: Value = post_json(
        &client,
        &url("/api/v1/sessions"),
        &token,
        &json!({"job_posting_id": posting["id"]}),
    )
    .await;
    let sid = session["id"].as_str().expect("id");

    let accepted = client
        .post(url(&format!("/api/v1/sessions/{sid}/generate-question")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("generate");
    assert_eq!(accepted.status(), 202);
    let location = accepted.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    // The last state seen, for the failure message: the long poll does the waiting.
    let seen = std::cell::RefCell::new(accepted.json::<Value>().await.expect("json"));
    let stuck = std::fmt::from_fn(|f| {
        write!(
            f,
            "the operation to finish (operation stuck: {})",
            seen.borrow()
        )
    });
    let op = testkit::eventually(stuck, Duration::from_secs(60), || async {
        let op = seen.borrow().clone();
        if op["status"] == "completed" || op["status"] == "failed" {
            return Some(op);
        }
        let polled: Value = get_json(&client, &url(&format!("{location}?wait=10")), &token).await;
        *seen.borrow_mut() = polled;
        None
    })
    .await;
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["result"]["question_number"], 1);

    let messages: Value = get_json(
        &client,
        &url(&format!("/api/v1/sessions/{sid}/messages")),
        &token,
    )
    .await;
    assert_eq!(messages["total"], 1);
    assert_eq!(
        messages["items"][0]["content"],
        op["result"]["question_text"]
    );
    let session: Value = get_json(&client, &url(&format!("/api/v1/sessions/{sid}")), &token).await;
    assert_eq!(session["current_question_number"], 1);

    // One operation can be followed across processes: the worker's JSON log line of the
    // commit carries the operation id, the job id and the attempt.
    let op_id = op["id"].as_str().expect("id").to_owned();
    let line = testkit::eventually(
        format!(
            "the commit line for {op_id} in {}",
            worker.log_path().display()
        ),
        Duration::from_secs(10),
        || async {
            worker
                .logs()
                .lines()
                .find(|l| l.contains("question committed") && l.contains(&op_id))
                .map(str::to_owned)
        },
    )
    .await;
    let line: Value = serde_json::from_str(&line).expect("a JSON log line");
    // The job's span is in the line's span chain (the innermost is its commit's).
    let span = line["spans"]
        .as_array()
        .and_then(|chain| chain.iter().find(|s| s["name"] == "job"))
        .unwrap_or_else(|| panic!("the job's span in {line}"));
    assert_eq!(span["operation_id"], op_id.as_str(), "{line}");
    assert_eq!(
        span["request_id"].as_str().map(str::len),
        Some(36),
        "{line}"
    );
    assert!(span["job_id"].is_string(), "{line}");
    assert_eq!(span["attempt"], 1, "{line}");

    // The walk goes on: answer the question, ask for feedback on the answer.
    let answer: Value = post_json(
        &client,
        &url(&format!("/api/v1/sessions/{sid}/answers")),
        &token,
        &json!({"content": "Make the commit idempotent on the operation id.",
                "question_id": op["result"]["message_id"]}),
    )
    .await;
    let answer_id = answer["id"].as_str().expect("answer id");
    let accepted: Value = post_json(
        &client,
        &url(&format!(
            "/api/v1/sessions/{sid}/answers/{answer_id}/feedback"
        )),
        &token,
        &json!(null),
    )
    .await;
    assert_eq!(
        accepted["operation_type"], "feedback_analysis",
        "{accepted}"
    );
    let feedback_op = accepted["id"].as_str().expect("id").to_owned();
    let review = testkit::eventually(
        format!("feedback operation {feedback_op} to finish"),
        Duration::from_secs(60),
        || async {
            let polled: Value = get_json(
                &client,
                &url(&format!("/api/v1/operations/{feedback_op}?wait=10")),
                &token,
            )
            .await;
            (polled["status"] == "completed" || polled["status"] == "failed").then_some(polled)
        },
    )
    .await;
    assert_eq!(review["status"], "completed", "{review}");
    assert_eq!(review["result"]["answer_id"], answer_id);
    let messages: Value = get_json(
        &client,
        &url(&format!("/api/v1/sessions/{sid}/messages")),
        &token,
    )
    .await;
    assert_eq!(messages["total"], 3, "{messages}");
    let last = &messages["items"][2];
    assert_eq!(last["message_type"], "feedback");
    assert_eq!(last["id"], review["result"]["message_id"]);
    assert_eq!(last["content"], review["result"]["summary"]);
    assert_eq!(last["metadata"]["answer_id"], answer_id);
    // A second request names the first operation.
    let again = client
        .post(url(&format!(
            "/api/v1/sessions/{sid}/answers/{answer_id}/feedback"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .expect("feedback again");
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["detail"]["code"], "FEEDBACK_EXISTS", "{body}");
    assert_eq!(body["detail"]["operation_id"], feedback_op.as_str());
    assert_consistent(&pool).await;
}

/// Every operation completed once: one message each, counters summing to the total,
/// and numbers 1..n in each session with no gap or repeat.
async fn assert_each_completed_once(pool: &PgPool, ops: &[OperationId], per_session: i64) {
    for op in ops {
        assert_eq!(finished(pool, *op).await.status.as_str(), "completed");
    }
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM session_messages")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(messages, ops.len() as i64);
    let counters: i64 =
        sqlx::query_scalar("SELECT sum(current_question_number)::bigint FROM interview_sessions")
            .fetch_one(pool)
            .await
            .expect("sum");
    assert_eq!(counters, ops.len() as i64);
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT session_id, array_agg((metadata->>'question_number')::int ORDER BY (metadata->>'question_number')::int) AS numbers
             FROM session_messages GROUP BY session_id
         ) s WHERE numbers <> ARRAY(SELECT generate_series(1, $1::int))",
    )
    .bind(per_session)
    .fetch_one(pool)
    .await
    .expect("numbering");
    assert_eq!(
        bad, 0,
        "a session has a gap or a repeat in its question numbers"
    );
}

#[sqlx::test(migrations = false)]
async fn two_worker_processes_on_300_jobs_over_10_sessions_make_300_questions(pool: PgPool) {
    migrated(&pool).await;
    let ops = enqueue_on(&pool, &sessions(&pool, 10).await, 30).await;
    let _one = Process::start(
        "worker",
        "pair-1",
        &worker_env(&pool, &[("LLM_PROVIDER", "offline")]),
    )
    .await;
    let _two = Process::start(
        "worker",
        "pair-2",
        &worker_env(&pool, &[("LLM_PROVIDER", "offline")]),
    )
    .await;
    assert_each_completed_once(&pool, &ops, 30).await;
}

#[sqlx::test(migrations = false)]
async fn a_worker_killed_mid_run_and_restarted_loses_and_duplicates_nothing(pool: PgPool) {
    migrated(&pool).await;
    let llm = slow_llm(Duration::from_millis(150)).await;
    let mut env = worker_env(&pool, &[("WORKER_HEARTBEAT_SECS", "3")]);
    env.extend(openai_env(&llm));
    let ops = enqueue_on(&pool, &sessions(&pool, 10).await, 20).await;
    let mut victim = Process::start("worker", "victim", &env).await;
    let _survivor = Process::start("worker", "survivor", &env).await;

    // Kill once the run is well under way, with jobs in flight on both workers.
    until_operations(&pool, "completed", 40).await;
    // The crash must interrupt real work: jobs claimed by the victim at that moment.
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE lock_by LIKE '%-' || $1 || '-%' AND status IN ('Queued', 'Running')")
        .bind(victim.pid().to_string())
        .fetch_one(&pool)
        .await
        .expect("held");
    victim.kill();
    let killed_at = std::time::Instant::now();
    assert!(held > 0, "the victim held no jobs when it was killed");
    let _restarted = Process::start("worker", "restarted", &env).await;
    assert_each_completed_once(&pool, &ops, 20).await;
    eprintln!(
        "kill -9 with {held} jobs held: all {} operations completed {:?} after the kill (heartbeat window 3 s)",
        ops.len(),
        killed_at.elapsed()
    );
}

#[sqlx::test(migrations = false)]
async fn sigterm_with_jobs_in_flight_exits_0_and_loses_nothing(pool: PgPool) {
    migrated(&pool).await;
    let llm = slow_llm(Duration::from_millis(800)).await;
    let mut env = worker_env(
        &pool,
        &[
            ("WORKER_SHUTDOWN_SECS", "20"),
            ("WORKER_HEARTBEAT_SECS", "3"),
        ],
    );
    env.extend(openai_env(&llm));
    let ops = enqueue_on(&pool, &sessions(&pool, 5).await, 6).await;
    let mut worker = Process::start("worker", "sigterm", &env).await;
    until_operations(&pool, "processing", 4).await;
    let in_flight: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM operations WHERE status = 'processing'")
            .fetch_all(&pool)
            .await
            .expect("in flight");
    let status = worker.terminate(Duration::from_secs(40)).await;
    assert!(
        status.success(),
        "exit status {status:?}; log: {}",
        worker.logs()
    );
    // What was in flight was finished before the exit, not left for others.
    let drained: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operations WHERE id = ANY($1) AND status = 'completed'",
    )
    .bind(&in_flight)
    .fetch_one(&pool)
    .await
    .expect("drained");
    assert_eq!(
        drained,
        in_flight.len() as i64,
        "jobs in flight at SIGTERM were not finished"
    );
    // Whatever it had not started goes to the next worker; nothing is lost.
    let _next = Process::start("worker", "after-sigterm", &env).await;
    assert_each_completed_once(&pool, &ops, 6).await;
}
