//! A session's operations: held one behind another, capped per session, and listed in
//! the order they were accepted.

use crate::helpers::{TestApp, assert_error, assert_invalid, id_of};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

/// How many of the session's jobs apalis could run now, and how many are held.
async fn runnable_and_held(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE run_at <= now()),
                count(*) FILTER (WHERE run_at >= question_job_held_until())
         FROM apalis.jobs",
    )
    .fetch_one(&app.pool)
    .await
    .expect("jobs")
}

#[sqlx::test(migrations = false)]
async fn the_21st_unfinished_request_on_a_session_is_429_and_only_the_first_job_may_run(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let mut accepted = Vec::new();
    for _ in 0..20 {
        let response = app.generate(&user, &session).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        accepted.push(id_of(response).await);
    }
    let refused = app.generate(&user, &session).await;
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS").await;
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 20);
    // Every request got its job at once; only the first may run, the rest wait their turn.
    assert_eq!(runnable_and_held(&app).await, (1, 19));

    // Another session of the same user is not held back by this one.
    let other = app.create_session(&user).await;
    assert_eq!(
        app.generate(&user, &other).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(runnable_and_held(&app).await, (2, 19));

    // The first one ending lets the second run, in the same transaction.
    sqlx::query("UPDATE operations SET status = 'failed', error_message = 'x' WHERE id = $1::uuid")
        .bind(&accepted[0])
        .execute(&app.pool)
        .await
        .expect("end the first");
    assert_eq!(runnable_and_held(&app).await, (3, 18));
    let next: String = sqlx::query_scalar(
        "SELECT idempotency_key FROM apalis.jobs
         WHERE run_at <= now() ORDER BY run_at DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("released");
    assert_eq!(next, accepted[1], "the next one accepted, not any");
    // And room for one more request.
    assert_eq!(
        app.generate(&user, &session).await.status(),
        StatusCode::ACCEPTED
    );
}

#[sqlx::test(migrations = false)]
async fn a_sessions_unfinished_operations_are_listed_oldest_first_and_paged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let mut accepted = Vec::new();
    for _ in 0..5 {
        accepted.push(id_of(app.generate(&user, &session).await).await);
    }
    sqlx::query("UPDATE operations SET status = 'failed', error_message = 'x' WHERE id = $1::uuid")
        .bind(&accepted[0])
        .execute(&app.pool)
        .await
        .expect("end the first");
    let list = |query: &str| {
        app.request(
            reqwest::Method::GET,
            &format!("/api/v1/sessions/{session}/operations{query}"),
            Some(&user),
        )
        .send()
    };
    let waiting: Value = list("?status=pending,processing")
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = waiting["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|op| op["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, accepted[1..]);
    assert_eq!(waiting["total"], 4);
    assert_eq!(waiting["page"], 1);
    assert_eq!(waiting["limit"], 50);

    let all: Value = list("").await.expect("list").json().await.expect("json");
    assert_eq!(all["total"], 5);
    assert_eq!(all["items"][0]["status"], "failed");
    let second_page: Value = list("?page=2&limit=2")
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(second_page["items"][0]["id"], accepted[2].as_str());
    assert_eq!(second_page["items"].as_array().map(Vec::len), Some(2));

    assert_invalid(list("?status=pending,lost").await.expect("list")).await;
    let stranger = app.register("eve@example.com").await;
    let theirs = app
        .get(
            &format!("/api/v1/sessions/{session}/operations"),
            Some(&stranger),
        )
        .await;
    assert_error(theirs, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND").await;
}
