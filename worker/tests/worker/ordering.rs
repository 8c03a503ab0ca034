//! One session's questions are generated one after another, in the order the api
//! accepted them, each seeing every earlier question; different sessions run side by
//! side.

use crate::helpers::*;
use serde_json::Value;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};
use worker::llm::openai::ReplyFormat;

/// Answers "Question <n>?" for the n-th call (from 1), after `delay`; the call numbered
/// `fail_call`, if any, is refused with a 400 (a failure that will not pass).
struct Numbered {
    calls: AtomicU64,
    delay: Duration,
    fail_call: Option<u64>,
}

impl Numbered {
    fn new(delay: Duration, fail_call: Option<u64>) -> Self {
        Self {
            calls: AtomicU64::new(0),
            delay,
            fail_call,
        }
    }
}

impl Respond for Numbered {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let reply = if Some(n) == self.fail_call {
            error(400)
        } else {
            completion(&format!("Question {n}?"))
        };
        reply.set_delay(self.delay)
    }
}

/// A fake model answering in text mode, where the stored type is the requested one: the
/// rotation is then what the worker asked for.
async fn numbered_model(delay: Duration, fail_call: Option<u64>) -> MockServer {
    let server = MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(Numbered::new(delay, fail_call))
        .mount(&server)
        .await;
    server
}

fn text_mode(server: &MockServer) -> worker::config::WorkerConfig {
    openai_config(server, |c| c.llm_response_format = ReplyFormat::Text)
}

/// The prompt (the user message) of each call the model received, in order.
async fn prompts(server: &MockServer) -> Vec<String> {
    call_bodies(server)
        .await
        .iter()
        .map(|body| {
            body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn result(op: &shared::db::operations::Operation) -> Value {
    op.result.clone().expect("a completed operation's result").0
}

#[sqlx::test(migrations = false)]
async fn nine_requests_at_once_on_one_session_rotate_in_order_each_seeing_the_ones_before(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = numbered_model(Duration::from_millis(300), None).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, text_mode(&server)).await;
    // Accepted one after another, as nine clicks would be, while the worker runs.
    let mut ops: Vec<OperationId> = Vec::new();
    for _ in 0..9 {
        ops.push(enqueue(&pool, user, session, 5).await);
    }
    let mut done = Vec::new();
    for op in &ops {
        done.push(finished(&pool, *op).await);
    }
    worker.stop().await;

    for (i, op) in done.iter().enumerate() {
        assert_eq!(op.status.as_str(), "completed", "{op:?}");
        let result = result(op);
        // Written in the order accepted, and the model's n-th call made question n.
        assert_eq!(result["question_number"], i + 1, "{result}");
        assert_eq!(result["question_text"], format!("Question {}?", i + 1));
        let expected = ["technical", "behavioral", "situational"][i % 3];
        assert_eq!(result["question_type"], expected, "question {}", i + 1);
    }
    let prompts = prompts(&server).await;
    assert_eq!(prompts.len(), 9, "one call per question, none repeated");
    for (i, prompt) in prompts.iter().enumerate() {
        for earlier in 1..=i {
            assert!(
                prompt.contains(&format!("Question {earlier}?")),
                "the prompt of question {} misses question {earlier}:\n{prompt}",
                i + 1
            );
        }
        assert!(
            !prompt.contains(&format!("Question {}?", i + 1)),
            "question {} was in its own prompt",
            i + 1
        );
    }
}

#[sqlx::test(migrations = false)]
async fn eight_sessions_run_side_by_side_with_one_generation_each(pool: PgPool) {
    migrated(&pool).await;
    let server = numbered_model(Duration::from_millis(500), None).await;
    let fixtures = sessions(&pool, 8).await;
    let ops = enqueue_on(&pool, &fixtures, 2).await;
    let worker = RunningWorker::start(&pool, text_mode(&server)).await;
    // Sample what is in flight until everything is done.
    let peak = std::cell::Cell::new(0i64);
    eventually("16 questions", Duration::from_secs(120), || async {
        let (in_flight, doubled, open): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'processing'),
                    (SELECT count(*) FROM (
                        SELECT session_id FROM operations WHERE status = 'processing'
                        GROUP BY session_id HAVING count(*) > 1) d),
                    count(*) FILTER (WHERE status IN ('pending', 'processing'))
             FROM operations",
        )
        .fetch_one(&pool)
        .await
        .expect("sample");
        assert_eq!(doubled, 0, "two generations of one session at once");
        peak.set(peak.get().max(in_flight));
        (open == 0).then_some(())
    })
    .await;
    worker.stop().await;
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    assert_eq!(calls(&server).await, 16);
    assert_eq!(peak.get(), 8, "every session's first question at once");
}

#[sqlx::test(migrations = false)]
async fn one_that_fails_for_good_in_the_middle_lets_the_rest_complete_without_a_gap(pool: PgPool) {
    migrated(&pool).await;
    // The third call is refused (400): the third operation fails at once.
    let server = numbered_model(Duration::from_millis(50), Some(3)).await;
    let (user, session) = session(&pool, 1).await;
    let mut ops = Vec::new();
    for _ in 0..5 {
        ops.push(enqueue(&pool, user, session, 5).await);
    }
    let worker = RunningWorker::start(&pool, text_mode(&server)).await;
    let mut done = Vec::new();
    for op in &ops {
        done.push(finished(&pool, *op).await);
    }
    worker.stop().await;
    let statuses: Vec<&str> = done.iter().map(|op| op.status.as_str()).collect();
    assert_eq!(
        statuses,
        ["completed", "completed", "failed", "completed", "completed"]
    );
    let numbers: Vec<Value> = done
        .iter()
        .filter(|op| op.status.as_str() == "completed")
        .map(|op| result(op)["question_number"].clone())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(counter(&pool, session).await, 4);
}

#[sqlx::test(migrations = false)]
async fn a_paused_session_fails_its_queue_in_order_and_takes_new_questions_once_resumed(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = numbered_model(Duration::from_millis(50), None).await;
    let (user, session) = session(&pool, 1).await;
    let mut ops = Vec::new();
    for _ in 0..4 {
        ops.push(enqueue(&pool, user, session, 5).await);
    }
    sqlx::query("UPDATE interview_sessions SET status = 'paused' WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("pause");
    let worker = RunningWorker::start(&pool, text_mode(&server)).await;
    for op in &ops {
        let done = finished(&pool, *op).await;
        assert_eq!(done.status.as_str(), "failed");
        assert_eq!(
            done.error_message.as_deref(),
            Some("The question could not be generated: the interview session is no longer active.")
        );
    }
    sqlx::query("UPDATE interview_sessions SET status = 'active' WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("resume");
    let next = finished(&pool, enqueue(&pool, user, session, 5).await).await;
    worker.stop().await;
    assert_eq!(next.status.as_str(), "completed");
    assert_eq!(result(&next)["question_number"], 1);
    assert_eq!(calls(&server).await, 1, "the paused session asked nothing");
}

#[sqlx::test(migrations = false)]
async fn a_deleted_sessions_waiting_operations_all_end(pool: PgPool) {
    migrated(&pool).await;
    let server = numbered_model(Duration::from_millis(50), None).await;
    let (user, session) = session(&pool, 1).await;
    let mut ops = Vec::new();
    for _ in 0..3 {
        ops.push(enqueue(&pool, user, session, 5).await);
    }
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("delete");
    let worker = RunningWorker::start(&pool, text_mode(&server)).await;
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "failed");
    }
    worker.stop().await;
}
