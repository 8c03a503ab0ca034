//! Every operation ends: poison replies, a database that refuses the commit, apalis'
//! attempt counter ahead of ours, a session deleted under a running job, a starved pool,
//! and the reconciler for whatever still slips through.

use crate::helpers::*;
use shared::db::reconcile::{self, WorstCase};
use shared::domain::{OperationId, SessionId};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use wiremock::{MockServer, ResponseTemplate};

/// The job's row in `apalis.jobs` (its id is the operation id read as a ULID).
fn job_id(op: OperationId) -> String {
    ulid::Ulid(op.0.as_u128()).to_string()
}

async fn execute(pool: &PgPool, sql: &'static str, op: OperationId) {
    sqlx::query(sql)
        .bind(job_id(op))
        .execute(pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// A chat-completions reply whose raw body is `body`, bytes as they are.
fn raw_reply(body: Vec<u8>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

/// A reply whose message content is `content` spliced in as raw JSON text, so escapes
/// that serde would never write (a lone surrogate) reach the client as they are.
fn reply_with_raw_content(content: &str) -> ResponseTemplate {
    raw_reply(
        format!(
            r#"{{"id":"x","object":"chat.completion","created":1,"model":"test-model",
            "choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop","logprobs":null}}]}}"#
        )
        .into_bytes(),
    )
}

#[sqlx::test(migrations = false)]
async fn poison_replies_on_every_attempt_end_every_operation_and_store_nothing_unsafe(
    pool: PgPool,
) {
    migrated(&pool).await;
    let megabyte = "x".repeat(1 << 20);
    let mut invalid_utf8 = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"What is "#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    invalid_utf8.extend_from_slice(br#"?"},"finish_reason":"stop","logprobs":null}]}"#);
    let poisons: Vec<(&str, ResponseTemplate, &str)> = vec![
        (
            "nul",
            question("What is a\u{0}b?", "technical"),
            "completed",
        ),
        (
            "terminal control sequences",
            question("\u{1b}[2J\u{1b}[31mWhy\u{7}\u{9b}?\r", "technical"),
            "completed",
        ),
        ("1 MB of text", question(&megabyte, "technical"), "failed"),
        ("invalid UTF-8", raw_reply(invalid_utf8), "failed"),
        (
            "lone surrogate",
            reply_with_raw_content(
                r#"{\"question_text\": \"Why \\ud800?\", \"question_type\": \"technical\"}"#,
            ),
            "failed",
        ),
    ];
    for (n, (name, reply, expected)) in poisons.into_iter().enumerate() {
        let server = MockServer::start().await;
        mount(&server, 1, None, reply).await;
        let (user, session) = session(&pool, n).await;
        let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
        let op = enqueue(&pool, user, session, 5).await;
        let done = finished(&pool, op).await;
        assert_eq!(done.status.as_str(), expected, "{name}: {done:?}");
        assert!(attempts(&pool, op).await <= 5, "{name}: over the budget");
        assert!(calls(&server).await <= 5, "{name}: over the call budget");
        let stored: Option<String> =
            sqlx::query_scalar("SELECT content FROM session_messages WHERE operation_id = $1")
                .bind(op)
                .fetch_optional(&pool)
                .await
                .expect("message");
        if let Some(text) = &stored {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{name}: control characters stored: {text:?}"
            );
            assert!(text.chars().count() <= worker::output::MAX_QUESTION_CHARS);
        }
        assert_eq!(stored.is_some(), expected == "completed", "{name}");

        // The session goes on normally with the next question.
        server.reset().await;
        mount(
            &server,
            1,
            None,
            question("And the next one?", "behavioral"),
        )
        .await;
        let next = finished(&pool, enqueue(&pool, user, session, 5).await).await;
        assert_eq!(next.status.as_str(), "completed", "{name}: next question");
        let number = next.result.expect("result").0["question_number"].clone();
        assert_eq!(
            number,
            if expected == "completed" { 2 } else { 1 },
            "{name}"
        );
        worker.stop().await;
    }
}

#[sqlx::test(migrations = false)]
async fn a_commit_the_database_refuses_every_time_fails_the_operation_on_the_last_attempt(
    pool: PgPool,
) {
    migrated(&pool).await;
    // Stands for any reply the database cannot store, or any error of the commit.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'this database stores no questions'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON session_messages
             FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&pool)
    .await
    .expect("trigger");
    let server = MockServer::start().await;
    mount(&server, 1, None, question("Never stored?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    let statuses = settled_jobs(&pool).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(
        done.error_message.as_deref(),
        Some("The question could not be generated: every attempt failed.")
    );
    assert_eq!(
        calls(&server).await,
        5,
        "every attempt ran, then it stopped"
    );
    assert_eq!(statuses, ["Killed"]);
    assert_eq!(counter(&pool, session).await, 0);
}

#[sqlx::test(migrations = false)]
async fn apalis_counter_ahead_of_ours_still_makes_its_last_attempt_decide(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, error(500)).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // Four takeovers or drained shutdowns counted by apalis, none of them run by us.
    execute(
        &pool,
        "UPDATE apalis.jobs SET attempts = 4 WHERE id = $1",
        op,
    )
    .await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let done = finished(&pool, op).await;
    let statuses = settled_jobs(&pool).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(attempts(&pool, op).await, 1, "our own count had four left");
    assert_eq!(
        calls(&server).await,
        1,
        "apalis would not have run it again"
    );
    assert_eq!(statuses, ["Killed"]);
}

#[sqlx::test(migrations = false)]
async fn a_session_deleted_under_a_running_job_fails_its_operation_and_leaves_no_message(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Anyone there?", "technical").set_delay(Duration::from_millis(800)),
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    until(&pool, op, |s| s.as_str() == "processing").await;
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("delete the session");
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(
        done.error_message.as_deref(),
        Some("The question could not be generated: the interview session no longer exists.")
    );
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM session_messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(messages, 0);
}

#[sqlx::test(migrations = false)]
async fn a_pool_of_three_under_64_jobs_in_flight_ends_everything_without_a_retry(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Squeezed?", "technical").set_delay(Duration::from_millis(50)),
    )
    .await;
    // A hundred sessions with one job each: a session's questions run one at a time,
    // so 64 jobs can be in flight at once only if at least 64 sessions have one. Ten
    // of the sessions are paused: their jobs fail (90 complete, 10 fail).
    let fixtures = sessions(&pool, 100).await;
    let paused: Vec<SessionId> = fixtures[..10].iter().map(|(_, s)| *s).collect();
    for session in &paused {
        sqlx::query("UPDATE interview_sessions SET status = 'paused' WHERE id = $1")
            .bind(session)
            .execute(&pool)
            .await
            .expect("pause");
    }
    let ops: Vec<_> = enqueue_on(&pool, &fixtures, 1)
        .await
        .into_iter()
        .zip(fixtures.iter().map(|(_, s)| *s))
        .collect();
    // The worker's own pool: three connections for 64 jobs, the heartbeat, the
    // reconciler, apalis' fetches and acknowledgements.
    let small = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("small pool");
    let worker = RunningWorker::start(
        &small,
        openai_config(&server, |c| c.worker_concurrency = 64),
    )
    .await;
    for (op, session) in &ops {
        let done = finished(&pool, *op).await;
        let expected = if paused.contains(session) {
            "failed"
        } else {
            "completed"
        };
        assert_eq!(done.status.as_str(), expected, "{done:?}");
    }
    worker.stop().await;
    // A pool timeout would have failed an attempt, and the retry would show here.
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM operations WHERE attempts > 1")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(retried, 0, "attempts failed for want of a connection");
}

/// The default settings' worst case: 26 s per attempt (10 s timeout, 8 s backoff, 8 s
/// takeover window), 300 s of waits and 60 s once; 490 s for a job of 5 attempts.
const WORST_CASE: WorstCase = WorstCase {
    per_attempt: Duration::from_secs(26),
    waits: Duration::from_secs(300),
    margin: Duration::from_secs(60),
};

/// Reconciles now, as the worker's task does every few seconds.
async fn reconcile(pool: &PgPool, worst_case: WorstCase) -> Vec<(OperationId, String)> {
    let mut conn = pool.acquire().await.expect("conn");
    reconcile::fail_stuck(&mut conn, worst_case)
        .await
        .expect("reconcile")
        .into_iter()
        .map(|r| (r.id, r.reason))
        .collect()
}

#[sqlx::test(migrations = false)]
async fn the_reconciler_fails_operations_whose_job_ended_vanished_or_overran_and_nothing_else(
    pool: PgPool,
) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let mut op = Vec::new();
    for _ in 0..6 {
        op.push(enqueue(&pool, user, session, 5).await);
    }
    // 0: its job was killed while the operation was processing (the failure could
    //    not be written).
    execute(
        &pool,
        "UPDATE apalis.jobs SET status = 'Killed' WHERE id = $1",
        op[0],
    )
    .await;
    // 1: its job failed for good.
    execute(
        &pool,
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 5 WHERE id = $1",
        op[1],
    )
    .await;
    // 2: its job row is gone.
    execute(&pool, "DELETE FROM apalis.jobs WHERE id = $1", op[2]).await;
    // A worker began the operation `minutes` ago and has not finished it.
    let started_ago = |id: OperationId, minutes: i32| {
        sqlx::query(
            "UPDATE operations SET status = 'processing',
                 started_at = now() - make_interval(mins => $2::int)
             WHERE id = $1",
        )
        .bind(id)
        .bind(minutes)
        .execute(&pool)
    };
    // 3: first started an hour ago and still running.
    started_ago(op[3], 60).await.expect("age");
    // 4: failed with attempts left: apalis fetches it again, so it is not stuck.
    execute(
        &pool,
        "UPDATE apalis.jobs SET status = 'Failed', attempts = 2 WHERE id = $1",
        op[4],
    )
    .await;
    // 5: waiting in the backlog for an hour, never started: legitimate.
    sqlx::query("UPDATE operations SET created_at = now() - interval '1 hour' WHERE id = $1")
        .bind(op[5])
        .execute(&pool)
        .await
        .expect("age");
    // 6: started half an hour ago, but its job allows 100 attempts (the worst case is
    //    per job: 100 × 26 s + 300 s + 60 s), so it may still legitimately run.
    op.push(enqueue(&pool, user, session, 100).await);
    started_ago(op[6], 30).await.expect("age");
    // 7: started 7 minutes ago with 5 attempts: past 5 × 26 s + 60 s, but within the
    //    waits on the provider that no attempt counts (490 s in all).
    op.push(enqueue(&pool, user, session, 5).await);
    started_ago(op[7], 7).await.expect("age");

    let overdue = reconcile::count_overdue(&mut pool.acquire().await.expect("conn"), WORST_CASE)
        .await
        .expect("count");
    assert_eq!(
        overdue, 1,
        "only the operation past its own job's worst case"
    );
    let mut reconciled = reconcile(&pool, WORST_CASE).await;
    reconciled.sort_by_key(|(id, _)| op.iter().position(|o| o == id));
    assert_eq!(
        reconciled,
        [
            (op[0], "job_ended".to_owned()),
            (op[1], "job_ended".to_owned()),
            (op[2], "job_ended".to_owned()),
            (op[3], "overdue".to_owned()),
        ]
    );
    let mut conn = pool.acquire().await.expect("conn");
    for (id, sentence) in [
        (op[0], reconcile::JOB_ENDED),
        (op[2], reconcile::JOB_ENDED),
        (op[3], reconcile::OVERDUE),
    ] {
        let failed = shared::db::operations::find(&mut conn, id)
            .await
            .expect("find")
            .expect("exists");
        assert_eq!(failed.status.as_str(), "failed");
        assert_eq!(failed.error_message.as_deref(), Some(sentence));
    }
    for id in [op[4], op[5], op[6], op[7]] {
        let kept = shared::db::operations::find(&mut conn, id)
            .await
            .expect("find")
            .expect("exists");
        assert!(!kept.status.is_terminal(), "{id} was not stuck");
    }
    let overdue_job: String = sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
        .bind(job_id(op[3]))
        .fetch_one(&pool)
        .await
        .expect("job");
    assert_eq!(overdue_job, "Killed", "no worker may start it again");
    // A second pass finds nothing more: it is idempotent.
    assert!(reconcile(&pool, WORST_CASE).await.is_empty());
}

#[sqlx::test(migrations = false)]
async fn a_running_worker_reconciles_by_itself_and_reports_overdue_operations(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // The job ended without its operation: only the reconciler can end it now.
    execute(
        &pool,
        "UPDATE apalis.jobs SET status = 'Killed' WHERE id = $1",
        op,
    )
    .await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let done = finished(&pool, op).await;
    assert_eq!(done.status.as_str(), "failed");
    let body = worker.scrape().await;
    assert!(
        body.lines().any(|l| l == "operations_overdue 0"),
        "no overdue gauge at 0 in:\n{body}"
    );
    worker.stop().await;
}

#[sqlx::test(migrations = false)]
async fn readiness_needs_the_schema_a_recent_heartbeat_and_no_drain(pool: PgPool) {
    use worker::readiness::Readiness;
    migrated(&pool).await;
    let readiness = Readiness::new(pool.clone(), Duration::from_millis(300));
    let reason = readiness.check().await.expect_err("no beat yet");
    assert!(reason.contains("no heartbeat"), "{reason}");
    readiness.beat();
    assert_eq!(readiness.check().await, Ok(()));
    // Silent past the takeover window: the others may be taking its jobs.
    testkit::eventually("the beat to age", Duration::from_secs(10), || async {
        readiness.check().await.err()
    })
    .await;
    readiness.beat();
    readiness.drain();
    let reason = readiness.check().await.expect_err("draining");
    assert!(reason.starts_with("draining"), "{reason}");
}

#[sqlx::test(migrations = false)]
async fn a_worker_is_ready_once_it_has_beaten_and_not_ready_from_the_shutdown_on(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Slow", "technical").set_delay(Duration::from_secs(2)),
    )
    .await;
    let mut worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.worker_heartbeat_secs = 2;
            c.llm_timeout_secs = 30.0;
        }),
    )
    .await;
    let url = format!("http://{}/readyz", worker.metrics_addr);
    testkit::eventually("the worker ready", Duration::from_secs(30), || async {
        let response = reqwest::get(&url).await.expect("readyz");
        (response.status() == reqwest::StatusCode::OK).then_some(())
    })
    .await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    until(&pool, op, |s| s.as_str() == "processing").await;
    // Draining its job: not ready at once, and it says why.
    worker.request_stop();
    let body: serde_json::Value =
        testkit::eventually("not ready", Duration::from_secs(10), || async {
            let response = reqwest::get(&url).await.ok()?;
            (response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE)
                .then_some(response.json().await.expect("JSON"))
        })
        .await;
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("draining"),
        "{body}"
    );
    assert_eq!(
        finished(&pool, op).await.status.as_str(),
        "completed",
        "the drain finished it"
    );
    worker.stop().await;
}
