//! The second operation type, `feedback_analysis`: what it commits, exactly once, on
//! the same durable path as a question, beside the session's order of questions.

use crate::helpers::*;
use serde_json::Value;
use shared::db::{operations, reconcile};
use shared::domain::{MessageId, OperationId, SessionId};
use shared::jobs::FeedbackAnalysisJob;
use sqlx::PgPool;
use wiremock::MockServer;

const ANSWER: &str = "I would put the queue in PostgreSQL, claim jobs with SKIP LOCKED, \
     and make the commit idempotent on the operation id, so a crashed worker's job \
     runs again without a second result.";

/// A session with one question, and an answer to it whose feedback is enqueued.
async fn answered(pool: &PgPool, max_attempts: u32) -> (SessionId, MessageId, OperationId) {
    let (user, session) = session(pool, 1).await;
    let question = asked(pool, session, "How would you make a job queue durable?").await;
    let (answer, op) = enqueue_feedback(pool, user, session, question, ANSWER, max_attempts).await;
    (session, answer, op)
}

async fn feedback_messages(pool: &PgPool, op: OperationId) -> Vec<(uuid::Uuid, String, Value)> {
    sqlx::query_as(
        "SELECT id, content, metadata FROM session_messages
         WHERE operation_id = $1 AND message_type = 'feedback'",
    )
    .bind(op)
    .fetch_all(pool)
    .await
    .expect("feedback messages")
}

#[sqlx::test(migrations = false)]
async fn offline_feedback_commits_its_message_and_result_together(pool: PgPool) {
    migrated(&pool).await;
    let (session, answer, op) = answered(&pool, 5).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let done = finished(&pool, op).await;
    let scraped = worker.scrape().await;
    worker.stop().await;

    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.error_message
    );
    assert_eq!(done.operation_type.as_str(), "feedback_analysis");
    let result = done.result.expect("result").0;
    let messages = feedback_messages(&pool, op).await;
    let [(id, content, metadata)] = messages.as_slice() else {
        panic!("one feedback message: {messages:?}");
    };
    assert_eq!(result["message_id"], id.to_string());
    assert_eq!(result["answer_id"], answer.to_string());
    assert_eq!(result["summary"], content.as_str());
    let score = result["score"].as_u64().expect("score");
    assert!((1..=5).contains(&score), "{result}");
    assert!(
        !result["strengths"]
            .as_array()
            .expect("strengths")
            .is_empty()
    );
    assert!(
        !result["improvements"]
            .as_array()
            .expect("improvements")
            .is_empty()
    );
    assert_eq!(metadata["answer_id"], answer.to_string());
    assert_eq!(metadata["operation_id"], op.to_string());
    assert_eq!(metadata["score"], result["score"]);
    assert_eq!(metadata["strengths"], result["strengths"]);
    assert_eq!(metadata["model"], "offline");
    assert!(metadata["usage"]["total_tokens"].is_u64(), "{metadata}");
    // A feedback is no question: the counter stays.
    assert_eq!(counter(&pool, session).await, 1);
    // (The recorder is the test process's, shared with the tests running beside this
    // one: only the series' presence is this test's.)
    for metric in [
        "jobs_finished_total{job_type=\"feedback_analysis\",outcome=\"completed\"}",
        "jobs{job_type=\"feedback_analysis\",state=\"done\"}",
        "job_duration_seconds_bucket{job_type=\"feedback_analysis\"",
    ] {
        assert!(scraped.contains(metric), "{metric} missing:\n{scraped}");
    }
    assert_consistent(&pool).await;

    // Deterministic: the same answer to the same question gets the same feedback.
    let (_, _, again) = answered(&pool, 5).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let second = finished(&pool, again).await.result.expect("result").0;
    worker.stop().await;
    for field in ["score", "strengths", "improvements", "summary"] {
        assert_eq!(second[field], result[field], "{field}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_feedback_job_delivered_twice_makes_one_message(pool: PgPool) {
    migrated(&pool).await;
    let (session, answer, op) = answered(&pool, 5).await;
    deliver_again(&pool, &FeedbackAnalysisJob::new(op, session, answer), 5).await;

    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    finished(&pool, op).await;
    assert_eq!(settled_jobs(&pool).await, ["Done", "Done"]);
    worker.stop().await;
    assert_eq!(feedback_messages(&pool, op).await.len(), 1);
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn the_providers_limits_and_retries_hold_for_feedback(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    // A 429 with Retry-After (waited, no attempt), a 500 (an attempt), then feedback.
    mount(
        &server,
        1,
        Some(1),
        error(429).insert_header("Retry-After", "1"),
    )
    .await;
    mount(&server, 2, Some(1), error(500)).await;
    mount(&server, 3, None, feedback(4, "Solid and specific.")).await;
    let (_, _, op) = answered(&pool, 3).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_backoff_base_ms = 10;
            c.llm_backoff_max_ms = 50;
        }),
    )
    .await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.error_message
    );
    assert_eq!(calls(&server).await, 3);
    assert_eq!(attempts(&pool, op).await, 2, "the 500 and the success");
    let result = done.result.expect("result").0;
    assert_eq!(result["score"], 4);
    assert_eq!(result["summary"], "Solid and specific.");
    let metadata = &feedback_messages(&pool, op).await[0].2;
    assert_eq!(metadata["attempts"], 3, "{metadata}");
    assert!(metadata["waited_ms"].as_u64().expect("waited_ms") >= 1_000);
    assert_eq!(metadata["usage"]["total_tokens"], 150);
    // The model was asked about this answer to this question.
    let bodies = call_bodies(&server).await;
    let prompt = bodies.last().expect("a call").to_string();
    assert!(prompt.contains("SKIP LOCKED"), "{prompt}");
    assert!(prompt.contains("job queue durable"), "{prompt}");
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_poison_reply_every_time_fails_the_feedback_with_its_own_sentence(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, feedback(9, "\u{1b}[31mout of range")).await;
    let (_, _, op) = answered(&pool, 2).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_backoff_base_ms = 10;
            c.llm_backoff_max_ms = 50;
        }),
    )
    .await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(
        done.error_message.as_deref(),
        Some(
            "The feedback could not be generated: the language model did not produce usable feedback."
        )
    );
    assert_eq!(calls(&server).await, 2, "the job's two attempts");
    assert!(feedback_messages(&pool, op).await.is_empty());
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn feedback_runs_beside_the_sessions_questions_not_in_their_order(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let question = asked(&pool, session, "Tell me about a hard migration.").await;
    // The feedback first, unfinished; then two questions.
    let (_, review) = enqueue_feedback(&pool, user, session, question, ANSWER, 5).await;
    let first = enqueue(&pool, user, session, 5).await;
    let second = enqueue(&pool, user, session, 5).await;
    let held = |op: OperationId| {
        let pool = pool.clone();
        async move {
            scalar(
                &pool,
                "SELECT count(*) FROM apalis.jobs
                 WHERE idempotency_key = $1::text AND run_at >= question_job_held_until()",
                op.0,
            )
            .await
        }
    };
    assert_eq!(
        held(first).await,
        0,
        "an unfinished feedback holds no question"
    );
    assert_eq!(
        held(second).await,
        1,
        "the second question waits for the first"
    );

    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    all_completed(&pool, &[review, first, second]).await;
    worker.stop().await;
    assert_eq!(counter(&pool, session).await, 3);
    assert_consistent(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_feedback_whose_session_is_gone_fails_with_the_feedback_sentence(pool: PgPool) {
    migrated(&pool).await;
    let (session, _, op) = answered(&pool, 5).await;
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("delete");
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(
        done.error_message.as_deref(),
        Some(operations::FEEDBACK_SESSION_GONE)
    );
}

#[sqlx::test(migrations = false)]
async fn the_reconciler_fails_a_feedback_whose_job_ended_with_its_own_sentence(pool: PgPool) {
    migrated(&pool).await;
    let (_, _, op) = answered(&pool, 5).await;
    sqlx::query("UPDATE apalis.jobs SET status = 'Killed', done_at = now() WHERE idempotency_key = $1::text")
        .bind(op)
        .execute(&pool)
        .await
        .expect("kill");
    let worst_case = reconcile::WorstCase {
        per_attempt: std::time::Duration::from_secs(60),
        waits: std::time::Duration::from_secs(60),
        margin: std::time::Duration::from_secs(60),
    };
    assert_eq!(
        worker::upkeep::reconcile_once(&pool, worst_case)
            .await
            .expect("reconcile"),
        1
    );
    let mut conn = pool.acquire().await.expect("conn");
    let failed = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("op");
    assert_eq!(
        failed.error_message.as_deref(),
        Some(reconcile::FEEDBACK_JOB_ENDED)
    );

    // The previous release's reconciler knows no feedback job and would fail every
    // pending feedback at once with a question's sentence: the migration's guard keeps
    // the row as it was, for a worker that knows it.
    let (_, _, pending) = answered(&pool, 5).await;
    let changed =
        sqlx::query("UPDATE operations SET status = 'failed', error_message = $2 WHERE id = $1")
            .bind(pending)
            .bind(reconcile::JOB_ENDED)
            .execute(&mut *conn)
            .await
            .expect("the old reconciler's write");
    assert_eq!(changed.rows_affected(), 0);
    let kept = operations::find(&mut conn, pending)
        .await
        .expect("find")
        .expect("op");
    assert_eq!(kept.status.as_str(), "pending");
    drop(conn);
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    assert_eq!(finished(&pool, pending).await.status.as_str(), "completed");
    worker.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_session_deleted_while_its_feedback_is_with_the_model_fails_it_with_the_sentence(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        feedback(4, "Too late to matter.").set_delay(std::time::Duration::from_millis(1_500)),
    )
    .await;
    let (session, _, op) = answered(&pool, 5).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    // The model has the request: the operation is processing.
    until(&pool, op, |status| status.as_str() == "processing").await;
    eventually(
        "the model to be asked",
        std::time::Duration::from_secs(30),
        || async { (calls(&server).await == 1).then_some(()) },
    )
    .await;
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("delete");
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert_eq!(
        done.error_message.as_deref(),
        Some(operations::FEEDBACK_SESSION_GONE)
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM session_messages WHERE message_type = 'feedback'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored, 0);
}
