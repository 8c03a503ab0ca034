//! `GET /operations/{id}`, plain and long-poll.

use crate::helpers::{TestApp, assert_error, assert_invalid, id_of};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::{Duration, Instant};

pub async fn pending_operation(app: &TestApp) -> (crate::helpers::User, String) {
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let id = id_of(app.generate(&user, &session).await).await;
    (user, id)
}

/// An operation as [`pending_operation`], then completed as a worker would leave it.
async fn completed_operation(app: &TestApp) -> (crate::helpers::User, String) {
    let (user, id) = pending_operation(app).await;
    complete(&app.pool, &id).await;
    (user, id)
}

async fn complete(pool: &PgPool, id: &str) {
    sqlx::query("UPDATE operations SET status = 'completed', result = $2 WHERE id = $1::uuid")
        .bind(id)
        .bind(json!({"question_text": "Why?", "question_type": "technical", "message_id": uuid::Uuid::nil(), "question_number": 1}))
        .execute(pool)
        .await
        .expect("complete");
}

#[sqlx::test(migrations = false)]
async fn a_pending_operation_reads_with_retry_after_and_a_finished_one_without(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = pending_operation(&app).await;
    let pending = app
        .get(&format!("/api/v1/operations/{id}"), Some(&user))
        .await;
    assert_eq!(pending.status(), StatusCode::OK);
    assert!(pending.headers().contains_key("retry-after"));
    complete(&app.pool, &id).await;
    let done = app
        .get(&format!("/api/v1/operations/{id}?wait=0"), Some(&user))
        .await;
    assert!(!done.headers().contains_key("retry-after"));
    let done: Value = done.json().await.expect("json");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["question_number"], 1);
}

#[sqlx::test(migrations = false)]
async fn a_long_poll_is_woken_by_the_commit(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = pending_operation(&app).await;
    let request = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/operations/{id}?wait=30"),
            Some(&user),
        )
        .send();
    let poll = tokio::spawn(async move {
        let response = request.await.expect("request");
        (
            Instant::now(),
            response.status(),
            response.json::<Value>().await.expect("json"),
        )
    });
    // Complete only once the request is asleep in the long poll, so the wake-up must
    // come from the NOTIFY and not from its first read.
    let waiters = app.waiters.clone();
    testkit::eventually("the long poll to wait", Duration::from_secs(30), || async {
        (!waiters.is_empty()).then_some(())
    })
    .await;
    let committed = Instant::now();
    complete(&app.pool, &id).await;
    let (answered, status, body) = poll.await.expect("poll task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "completed");
    let latency = answered.duration_since(committed);
    eprintln!("long-poll wake latency: {latency:?}");
    // A safety net, not a measurement: far below the 30 s it would otherwise wait.
    assert!(latency < Duration::from_secs(10), "woken after {latency:?}");
    assert!(app.waiters.is_empty(), "the waiter is gone once answered");
}

#[sqlx::test(migrations = false)]
async fn a_long_poll_answers_with_the_current_state_when_wait_runs_out(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = pending_operation(&app).await;
    let started = Instant::now();
    let response = app
        .get(&format!("/api/v1/operations/{id}?wait=1"), Some(&user))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "pending");
}

#[sqlx::test(migrations = false)]
async fn a_long_poll_on_a_finished_operation_answers_at_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = completed_operation(&app).await;
    let started = Instant::now();
    let body: Value = app
        .get_json(&format!("/api/v1/operations/{id}?wait=30"), Some(&user))
        .await;
    assert_eq!(body["status"], "completed");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[sqlx::test(migrations = false)]
async fn wait_out_of_range_missing_operations_and_bad_ids_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = pending_operation(&app).await;
    for bad in ["wait=31", "wait=-1", "wait=soon"] {
        assert_invalid(
            app.get(&format!("/api/v1/operations/{id}?{bad}"), Some(&user))
                .await,
        )
        .await;
    }
    let missing = app
        .get(
            &format!("/api/v1/operations/{}", uuid::Uuid::new_v4()),
            Some(&user),
        )
        .await;
    assert_error(missing, StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND").await;
    assert_invalid(app.get("/api/v1/operations/123", Some(&user)).await).await;
}

#[sqlx::test(migrations = false)]
async fn cancel_fails_a_pending_operation_drops_its_job_and_releases_the_next(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(id_of(app.generate(&user, &session).await).await);
    }
    let cancel = |id: &str, who: &crate::helpers::User| {
        app.request(
            reqwest::Method::POST,
            &format!("/api/v1/operations/{id}/cancel"),
            Some(who),
        )
        .send()
    };
    // Not theirs, or not there: 404, and nothing changes.
    let other = app.register("eve@example.com").await;
    let stranger = cancel(&ids[0], &other).await.expect("request");
    assert_error(stranger, StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND").await;
    let missing = cancel(&uuid::Uuid::new_v4().to_string(), &user)
        .await
        .expect("request");
    assert_error(missing, StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND").await;

    let cancelled = cancel(&ids[0], &user).await.expect("request");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let body: Value = cancelled.json().await.expect("json");
    assert_eq!(body["status"], "failed");
    assert_eq!(body["error_message"], "Cancelled.");
    assert_eq!(body["id"], ids[0].as_str());
    let polled: Value = app
        .get_json(&format!("/api/v1/operations/{}", ids[0]), Some(&user))
        .await;
    assert_eq!(polled["status"], "failed");
    // Its job will never run; the second, held behind it, is released at once.
    let jobs: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT idempotency_key, status, run_at <= now() FROM apalis.jobs ORDER BY run_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("jobs");
    let job = |id: &str| jobs.iter().find(|j| j.0 == id).expect("its job").clone();
    assert_eq!(job(&ids[0]).1, "Killed");
    assert_eq!((job(&ids[1]).1.as_str(), job(&ids[1]).2), ("Pending", true));

    // Finished already: 409, for a failed one and for a completed one alike.
    let twice = cancel(&ids[0], &user).await.expect("request");
    assert_error(twice, StatusCode::CONFLICT, "OPERATION_FINISHED").await;
    complete(&app.pool, &ids[1]).await;
    let done = cancel(&ids[1], &user).await.expect("request");
    assert_error(done, StatusCode::CONFLICT, "OPERATION_FINISHED").await;
    let kept: Value = app
        .get_json(&format!("/api/v1/operations/{}", ids[1]), Some(&user))
        .await;
    assert_eq!(kept["status"], "completed");
}

#[sqlx::test(migrations = false)]
async fn an_operation_deleted_by_retention_polls_as_404(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (user, id) = completed_operation(&app).await;
    sqlx::query(
        "UPDATE operations SET updated_at = now() - interval '31 days' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .expect("age");
    let purged = shared::db::retention::purge_finished_operations(&app.pool, 30)
        .await
        .expect("purge");
    assert_eq!(purged, Some(1));
    let gone = app
        .get(&format!("/api/v1/operations/{id}"), Some(&user))
        .await;
    assert_error(gone, StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND").await;
}
