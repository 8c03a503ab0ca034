//! Every rejection speaks the contract's error body.

use crate::helpers::{TestApp, assert_error, assert_invalid};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use std::sync::{Arc, Mutex, PoisonError};

#[sqlx::test(migrations = false)]
async fn unknown_routes_and_methods_get_the_error_body(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_error(
        app.get("/api/v1/nope", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get("/nope", None).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    let wrong_method = app.delete("/api/v1/sessions", None).await;
    assert_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn bad_json_is_a_422_with_the_error_body(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let syntax = app
        .request(Method::POST, "/api/v1/job-postings", Some(&user))
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .expect("request");
    assert_invalid(syntax).await;
    let wrong_type = app
        .post(
            "/api/v1/job-postings",
            Some(&user),
            json!({"title": 5, "description": "x"}),
        )
        .await;
    assert_invalid(wrong_type).await;
    let no_content_type = app
        .request(Method::POST, "/api/v1/job-postings", Some(&user))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_invalid(no_content_type).await;
    assert_eq!(app.count("SELECT count(*) FROM job_postings").await, 0);
}

#[sqlx::test(migrations = false)]
async fn a_path_id_that_is_not_a_uuid_is_a_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    for path in [
        "/api/v1/sessions/abc",
        "/api/v1/job-postings/1",
        "/api/v1/sessions/abc/messages",
        "/api/v1/operations/xyz",
    ] {
        let body = assert_invalid(app.get(path, Some(&user)).await).await;
        assert!(body["detail"]["fields"]["id"].is_string(), "{path}: {body}");
    }
}

#[sqlx::test(migrations = false)]
async fn bodies_over_256_kib_are_413_and_store_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let big = "x".repeat(300 * 1024);
    let response = app
        .post(
            &format!("/api/v1/sessions/{session}/answers"),
            Some(&user),
            json!({"content": big}),
        )
        .await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    // Without a Content-Length (chunked), the limit still holds.
    let chunks = futures::stream::iter((0..300).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let chunked = app
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{session}/answers"),
            Some(&user),
        )
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_error(chunked, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(app.count("SELECT count(*) FROM session_messages").await, 0);
    // Text takes whatever fits the body: a 238,000-byte resume is stored whole (the
    // worker, not the api, cuts what reaches the model).
    let resume = "r".repeat(238_000);
    let stored = app
        .send(
            Method::PUT,
            "/api/v1/resume",
            Some(&user),
            Some(json!({"content": resume})),
        )
        .await;
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(
        app.count("SELECT length(content)::bigint FROM resumes")
            .await,
        238_000
    );
    // An answer at its own bound (ANSWER_MAX_CHARS, 5,000 characters) is taken however
    // it is spelled: 5,000 emoji, each JSON-escaped as a surrogate pair.
    let escaped = format!(r#"{{"content": "{}"}}"#, r"\ud83d\ude00".repeat(5_000));
    let fits = app
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{session}/answers"),
            Some(&user),
        )
        .header("content-type", "application/json")
        .body(escaped)
        .send()
        .await
        .expect("request");
    assert_eq!(fits.status(), StatusCode::CREATED);
    assert_eq!(app.count("SELECT count(*) FROM session_messages").await, 1);
}

#[sqlx::test(migrations = false)]
async fn responses_carry_a_request_id_and_echo_the_callers(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let made = app.get("/healthz", None).await;
    assert!(
        made.headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty())
    );
    let echoed = app
        .request(Method::GET, "/healthz", None)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(
        echoed.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"trace-me-42"[..])
    );
}

#[sqlx::test(migrations = false)]
async fn health_readiness_and_metrics_answer(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    app.generate(&user, &session).await;
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("question_jobs{state=\"pending\"}"), "{text}");
    assert!(text.contains("operations{status=\"pending\"}"), "{text}");
    assert!(text.contains("http_requests_total{method=\"POST\",route=\"/api/v1/sessions/{id}/generate-question\",status=\"202\"}"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_database_outage_is_503_not_500_or_a_hang(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    // Close the pool under the server: every acquire now fails as an outage would.
    app.pool.close().await;
    let started = std::time::Instant::now();
    assert_error(
        app.get("/api/v1/sessions", Some(&user)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert_error(
        app.get("/readyz", None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

/// The log lines written on this thread while it is held, as text.
#[derive(Debug, Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures this thread's log lines until the guard drops. `#[sqlx::test]` runs the
    /// test, and the server it spawns, on one current-thread runtime, so the server's
    /// lines are among them.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[sqlx::test(migrations = false)]
async fn an_internal_error_is_a_500_in_the_contract_body_and_its_one_log_line_names_the_step(
    pool: PgPool,
) {
    let logs = Logs::default();
    let _capture = logs.capture();
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    // A constraint the api knows nothing of refuses the insert: not an outage (503), not
    // a deleted user (401), so an internal error.
    sqlx::query(
        "ALTER TABLE job_postings ADD CONSTRAINT job_postings_no_doom CHECK (title <> 'Doomed')",
    )
    .execute(&app.pool)
    .await
    .expect("constraint");

    let response = app
        .post(
            "/api/v1/job-postings",
            Some(&user),
            json!({"title": "Doomed", "description": "Rust, PostgreSQL"}),
        )
        .await;
    let body = assert_error(
        response,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
    )
    .await;
    assert_eq!(
        body,
        json!({"detail": {"code": "INTERNAL_ERROR", "message": "Something went wrong on our side."}})
    );

    let logs = logs.text();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("request failed"))
        .collect();
    assert_eq!(failures.len(), 1, "logged once: {logs}");
    // The step, then the cause chain, on the one line.
    let line = failures[0];
    assert!(
        line.contains("inserting the job posting: ") && line.contains("job_postings_no_doom"),
        "{line}"
    );
    assert_eq!(app.count("SELECT count(*) FROM job_postings").await, 0);
}
