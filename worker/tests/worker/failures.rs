//! LLM failures: what is retried, how often, and that a failure leaves the session as it was.

use crate::helpers::*;
use shared::domain::{OperationId, SessionId};
use sqlx::PgPool;
use std::time::Duration;
use wiremock::MockServer;

/// The failed operation left nothing behind: no message, counter unchanged, and a
/// sentence for a person that carries nothing of the provider's.
async fn assert_failed_cleanly(pool: &PgPool, op: OperationId, session: SessionId) -> String {
    let done = finished(pool, op).await;
    assert_eq!(done.status.as_str(), "failed");
    assert!(done.result.is_none());
    let message = done.error_message.expect("error_message");
    for leak in ["secret", "sk-test", "http", "127.0.0.1", "provider says"] {
        assert!(!message.contains(leak), "{leak:?} leaked into {message:?}");
    }
    assert_eq!(question_count(pool, session).await, 0);
    assert_eq!(counter(pool, session).await, 0);
    message
}

#[sqlx::test(migrations = false)]
async fn two_server_errors_then_success_completes_after_exactly_three_calls(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, Some(2), error(500)).await;
    mount(&server, 2, None, question("Third time lucky?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "completed");
    assert_eq!(calls(&server).await, 3);
    assert_eq!(attempts(&pool, op).await, 3);
    let metadata: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM session_messages WHERE operation_id = $1")
            .bind(op)
            .fetch_one(&pool)
            .await
            .expect("message");
    assert_eq!(metadata["attempts"], 3);
    assert_eq!(counter(&pool, session).await, 1);
}

#[sqlx::test(migrations = false)]
async fn server_errors_every_time_fail_after_exactly_the_jobs_max_attempts_calls(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, error(500)).await;
    let (user, session) = session(&pool, 1).await;
    // The worker has no budget of its own: the job's max_attempts (the api's
    // LLM_MAX_ATTEMPTS when it enqueued) is the one bound.
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 4).await;
    let message = assert_failed_cleanly(&pool, op, session).await;
    // The job is over (Killed: no re-fetch of a failed row), and only then do we count.
    let statuses = settled_jobs(&pool).await;
    worker.stop().await;
    assert_eq!(calls(&server).await, 4);
    assert_eq!(attempts(&pool, op).await, 4);
    assert!(message.contains("had an error"), "{message}");
    assert_eq!(statuses, ["Killed"], "the job ends, it is not re-fetched");
}

#[sqlx::test(migrations = false)]
async fn an_exhausted_quota_fails_each_operation_after_one_call_within_seconds(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, quota_exhausted()).await;
    // A backoff long enough that a retried 429 could not end within the deadline below.
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_backoff_base_ms = 30_000;
            c.llm_backoff_max_ms = 60_000;
        }),
    )
    .await;
    let mut ops = Vec::new();
    for n in 0..5 {
        let (user, session) = session(&pool, n).await;
        ops.push((enqueue(&pool, user, session, 5).await, session));
    }
    let started = std::time::Instant::now();
    for (op, session) in &ops {
        let message = assert_failed_cleanly(&pool, *op, *session).await;
        assert!(message.contains("configuration"), "{message}");
        assert!(!message.contains("quota"), "quotes the provider: {message}");
        assert_eq!(attempts(&pool, *op).await, 1);
    }
    let elapsed = started.elapsed();
    worker.stop().await;
    assert_eq!(calls(&server).await, 5, "one call per operation");
    // A safety net, not a measurement: a single retry would wait 30 s at least.
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}: it waited"
    );
}

#[sqlx::test(migrations = false)]
async fn unauthorized_fails_at_once_after_one_call(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, error(401)).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    assert_failed_cleanly(&pool, op, session).await;
    worker.stop().await;
    assert_eq!(calls(&server).await, 1);
    assert_eq!(attempts(&pool, op).await, 1);
}

#[sqlx::test(migrations = false)]
async fn bad_request_forbidden_and_not_found_do_not_retry(pool: PgPool) {
    migrated(&pool).await;
    for status in [400, 403, 404] {
        let server = MockServer::start().await;
        mount(&server, 1, None, error(status)).await;
        let (user, session) = session(&pool, status as usize).await;
        let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
        let op = enqueue(&pool, user, session, 5).await;
        assert_failed_cleanly(&pool, op, session).await;
        worker.stop().await;
        assert_eq!(calls(&server).await, 1, "status {status}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_timeout_is_retried(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        Some(1),
        question("Too slow", "technical").set_delay(Duration::from_secs(5)),
    )
    .await;
    mount(&server, 2, None, question("In time", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker =
        RunningWorker::start(&pool, openai_config(&server, |c| c.llm_timeout_secs = 0.5)).await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(
        done.result.expect("completed").0["question_text"],
        "In time"
    );
    assert_eq!(calls(&server).await, 2);
    assert_eq!(attempts(&pool, op).await, 2);
}

#[sqlx::test(migrations = false)]
async fn timing_out_every_time_fails_after_the_budget(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Too slow", "technical").set_delay(Duration::from_secs(5)),
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let worker =
        RunningWorker::start(&pool, openai_config(&server, |c| c.llm_timeout_secs = 0.3)).await;
    let op = enqueue(&pool, user, session, 2).await;
    let message = assert_failed_cleanly(&pool, op, session).await;
    worker.stop().await;
    assert!(message.contains("in time"), "{message}");
    assert_eq!(attempts(&pool, op).await, 2);
}

#[sqlx::test(migrations = false)]
async fn malformed_unknown_type_and_empty_replies_are_retried_then_fail(pool: PgPool) {
    migrated(&pool).await;
    let replies = [
        completion("this is not JSON"),
        completion(r#"{"question_text": "Why?", "question_type": "trivia"}"#),
        completion(r#"{"question_text": "   ", "question_type": "technical"}"#),
    ];
    for (n, reply) in replies.into_iter().enumerate() {
        let server = MockServer::start().await;
        mount(&server, 1, None, reply).await;
        let (user, session) = session(&pool, n).await;
        let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
        let op = enqueue(&pool, user, session, 3).await;
        let message = assert_failed_cleanly(&pool, op, session).await;
        worker.stop().await;
        assert_eq!(calls(&server).await, 3, "reply {n}");
        assert!(message.contains("usable question"), "{message}");
    }
}

#[sqlx::test(migrations = false)]
async fn a_malformed_reply_then_a_good_one_completes(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, Some(1), completion("{\"question_text\": ")).await;
    mount(&server, 2, None, question("Recovered?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");
    worker.stop().await;
    assert_eq!(calls(&server).await, 2);
}

#[sqlx::test(migrations = false)]
async fn a_session_paused_while_its_job_waits_on_the_llm_fails_the_operation(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Too late", "technical").set_delay(Duration::from_secs(2)),
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let worker =
        RunningWorker::start(&pool, openai_config(&server, |c| c.llm_timeout_secs = 30.0)).await;
    let op = enqueue(&pool, user, session, 5).await;
    until(&pool, op, |s| s.as_str() == "processing").await;
    sqlx::query("UPDATE interview_sessions SET status = 'paused' WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("pause");
    let message = assert_failed_cleanly(&pool, op, session).await;
    worker.stop().await;
    assert!(message.contains("no longer active"), "{message}");
}

#[sqlx::test(migrations = false)]
async fn a_deleted_session_fails_the_operation_without_calling_the_llm(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, question("Nobody asked", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    // The operation outlives the session only if it is detached first (the FK cascades).
    let op = enqueue(&pool, user, session, 5).await;
    sqlx::query("UPDATE operations SET session_id = NULL WHERE id = $1")
        .bind(op)
        .execute(&pool)
        .await
        .expect("detach");
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(session)
        .execute(&pool)
        .await
        .expect("delete");
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    assert_eq!(done.status.as_str(), "failed");
    assert!(
        done.error_message
            .expect("message")
            .contains("no longer exists")
    );
    assert_eq!(calls(&server).await, 0);
}
