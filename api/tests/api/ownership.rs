//! Another user's resources are indistinguishable from missing ones, and stay as they were.

use crate::helpers::{TestApp, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn user_b_sees_404_for_everything_of_user_a_and_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let a = app.register("a@example.com").await;
    let b = app.register("b@example.com").await;
    let posting = app.create_posting(&a).await;
    let session = app.create_session(&a).await;
    let op: serde_json::Value = app.generate(&a, &session).await.json().await.expect("json");
    let op = op["id"].as_str().expect("id").to_owned();
    let before = app
        .count("SELECT count(*) + sum(current_question_number) FROM interview_sessions")
        .await;

    let cases: Vec<(Method, String, Option<serde_json::Value>, &str)> = vec![
        (
            Method::GET,
            format!("/api/v1/job-postings/{posting}"),
            None,
            "JOB_POSTING_NOT_FOUND",
        ),
        (
            Method::DELETE,
            format!("/api/v1/job-postings/{posting}"),
            None,
            "JOB_POSTING_NOT_FOUND",
        ),
        (
            Method::POST,
            "/api/v1/sessions".into(),
            Some(json!({"job_posting_id": posting})),
            "JOB_POSTING_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{session}"),
            None,
            "SESSION_NOT_FOUND",
        ),
        (
            Method::PATCH,
            format!("/api/v1/sessions/{session}"),
            Some(json!({"status": "completed"})),
            "SESSION_NOT_FOUND",
        ),
        (
            Method::POST,
            format!("/api/v1/sessions/{session}/generate-question"),
            None,
            "SESSION_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{session}/messages"),
            None,
            "SESSION_NOT_FOUND",
        ),
        (
            Method::POST,
            format!("/api/v1/sessions/{session}/answers"),
            Some(json!({"content": "mine now"})),
            "SESSION_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/api/v1/operations/{op}"),
            None,
            "OPERATION_NOT_FOUND",
        ),
        (
            Method::GET,
            format!("/api/v1/operations/{op}?wait=1"),
            None,
            "OPERATION_NOT_FOUND",
        ),
    ];
    for (method, path, body, code) in cases {
        let mut request = app.request(method.clone(), &path, Some(&b));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        assert_error(response, StatusCode::NOT_FOUND, code).await;
    }

    // A's things are untouched.
    assert_eq!(
        app.get(&format!("/api/v1/job-postings/{posting}"), Some(&a))
            .await
            .status(),
        StatusCode::OK
    );
    let session: serde_json::Value = app
        .get_json(&format!("/api/v1/sessions/{session}"), Some(&a))
        .await;
    assert_eq!(session["status"], "active");
    assert_eq!(app.count("SELECT count(*) FROM session_messages").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM interview_sessions").await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) + sum(current_question_number) FROM interview_sessions")
            .await,
        before
    );
}
