//! Cancelling, through the real binaries: the client cancels a question a worker is
//! generating right now; the worker's answer is discarded, and the session's next
//! question, held behind the cancelled one, runs.

use crate::support::worker_env;
use reqwest::StatusCode;
use serde_json::Value;
use shared::domain::{OperationId, SessionId};
use sqlx::PgPool;
use std::time::Duration;
use testkit::client::get_json;
use testkit::client::signed_in_session;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::postgres::database_url;
use testkit::process::Process;
use wiremock::MockServer;

#[sqlx::test(migrations = false)]
async fn a_cancelled_question_is_discarded_and_the_next_one_runs(pool: PgPool) {
    migrated(&pool).await;
    let llm = MockServer::start().await;
    // The first question takes 3 s, long enough to be cancelled while it is written.
    let slow = question("The cancelled question?", "technical").set_delay(Duration::from_secs(3));
    mount(&llm, 1, Some(1), slow).await;
    mount(&llm, 2, None, question("The next question?", "technical")).await;
    let api = Process::start(
        "api",
        "cancel",
        &[
            ("DATABASE_URL", database_url(&pool)),
            ("JWT_SECRET", "cancel-test-signing-key-of-32-bytes".into()),
        ],
    )
    .await;
    let _worker = Process::start("worker", "cancel", &worker_env(&pool, &llm, &[])).await;
    let (token, session) = signed_in_session(&api.addr, "cancel@example.com").await;
    let http = reqwest::Client::new();
    let url = |path: String| format!("http://{}/api/v1{path}", api.addr);
    let generate = || async {
        let response = http
            .post(url(format!("/sessions/{session}/generate-question")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("generate");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    };
    let first = generate().await;
    let second = generate().await;
    let first_id = OperationId(first.parse().expect("uuid"));
    until(&pool, first_id, |s| s.as_str() == "processing").await;

    let cancel = |id: String| {
        http.post(url(format!("/operations/{id}/cancel")))
            .bearer_auth(&token)
            .send()
    };
    let cancelled = cancel(first.clone()).await.expect("cancel");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let body: Value = cancelled.json().await.expect("json");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_message"], "Cancelled.");
    let again = cancel(first.clone()).await.expect("cancel");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["detail"]["code"], "OPERATION_FINISHED");

    // The held question goes on, and is the session's first.
    let next: Value = get_json(&http, &url(format!("/operations/{second}?wait=30")), &token).await;
    let next = match next["status"].as_str() {
        Some("completed") => next,
        _ => {
            let id = OperationId(second.parse().expect("uuid"));
            let done = finished(&pool, id).await;
            serde_json::to_value(&done).expect("json")
        }
    };
    assert_eq!(next["status"], "completed", "{next}");
    assert_eq!(next["result"]["question_text"], "The next question?");
    assert_eq!(next["result"]["question_number"], 1);

    // The worker finished writing the cancelled one, and threw it away.
    testkit::eventually("the slow call to end", Duration::from_secs(60), || async {
        (calls(&llm).await >= 2).then_some(())
    })
    .await;
    settled_jobs(&pool).await;
    let session = SessionId(session.parse().expect("uuid"));
    assert_eq!(question_count(&pool, session).await, 1);
    assert_eq!(counter(&pool, session).await, 1);
    let still = finished(&pool, first_id).await;
    assert_eq!(still.error_message.as_deref(), Some("Cancelled."));
    assert_consistent(&pool).await;
}
