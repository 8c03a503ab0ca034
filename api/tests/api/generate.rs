//! `POST /sessions/{id}/generate-question`: the transactional enqueue.

use crate::helpers::{TestApp, assert_error, assert_invalid, assert_limited_for_the_minute};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

async fn jobs(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'question_generation'")
        .await
}

#[sqlx::test(migrations = false)]
async fn generate_question_answers_202_with_location_and_retry_after_and_queues_one_job(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let response = app.generate(&user, &session).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let op: Value = response.json().await.expect("json");
    assert_eq!(op["status"], "pending");
    assert_eq!(op["operation_type"], "question_generation");
    assert_eq!(op["result"], Value::Null);
    assert_eq!(op["error_message"], Value::Null);
    let id = op["id"].as_str().expect("id");
    assert_eq!(
        location.as_deref(),
        Some(format!("/api/v1/operations/{id}").as_str())
    );
    assert!(retry_after.is_some_and(|s| s >= 1));
    for field in [
        "id",
        "operation_type",
        "status",
        "result",
        "error_message",
        "created_at",
        "updated_at",
    ] {
        assert!(op.get(field).is_some(), "{field} missing");
    }

    // The job carries the operation, and its retry budget.
    let (payload, max_attempts): (Vec<u8>, i32) =
        sqlx::query_as("SELECT job, max_attempts FROM apalis.jobs")
            .fetch_one(&app.pool)
            .await
            .expect("one job");
    let payload: Value = serde_json::from_slice(&payload).expect("JSON payload");
    assert_eq!(
        payload,
        json!({"version": shared::jobs::PAYLOAD_VERSION, "operation_id": id, "session_id": session})
    );
    assert_eq!(max_attempts, 5);

    // The Location can be polled.
    let polled = app
        .get(location.as_deref().expect("location"), Some(&user))
        .await;
    assert_eq!(polled.status(), StatusCode::OK);
    assert!(polled.headers().contains_key("retry-after"));
}

#[sqlx::test(migrations = false)]
async fn each_call_without_a_key_creates_its_own_operation(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let first: Value = app
        .generate(&user, &session)
        .await
        .json()
        .await
        .expect("json");
    let second: Value = app
        .generate(&user, &session)
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(first["id"], second["id"]);
    assert_eq!(jobs(&app).await, 2);
}

#[sqlx::test(migrations = false)]
async fn paused_and_completed_sessions_refuse_generation_and_create_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    for status in ["paused", "completed"] {
        let patched = app
            .send(
                Method::PATCH,
                &format!("/api/v1/sessions/{session}"),
                Some(&user),
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(patched.status(), StatusCode::OK);
        assert_error(
            app.generate(&user, &session).await,
            StatusCode::BAD_REQUEST,
            "SESSION_NOT_ACTIVE",
        )
        .await;
    }
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 0);
    assert_eq!(jobs(&app).await, 0);
}

#[sqlx::test(migrations = false)]
async fn missing_session_and_bad_ids_are_404_and_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let missing = app.generate(&user, &uuid::Uuid::new_v4().to_string()).await;
    assert_error(missing, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND").await;
    assert_invalid(app.generate(&user, "not-a-uuid").await).await;
}

async fn generate_with_key(
    app: &TestApp,
    user: &crate::helpers::User,
    session: &str,
    key: &str,
) -> reqwest::Response {
    app.request(
        Method::POST,
        &format!("/api/v1/sessions/{session}/generate-question"),
        Some(user),
    )
    .header("Idempotency-Key", key)
    .send()
    .await
    .expect("request")
}

#[sqlx::test(migrations = false)]
async fn a_replayed_idempotency_key_returns_the_same_operation_and_queues_nothing_more(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let first = generate_with_key(&app, &user, &session, "click-1").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    let again = generate_with_key(&app, &user, &session, "click-1").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(again.headers().contains_key("location"));
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 1);
    assert_eq!(jobs(&app).await, 1);

    // Another user may use the same key for their own request.
    let other = app.register("bob@example.com").await;
    let other_session = app.create_session(&other).await;
    let theirs: Value = generate_with_key(&app, &other, &other_session, "click-1")
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(theirs["id"], first["id"]);
}

#[sqlx::test(migrations = false)]
async fn ten_concurrent_requests_with_one_key_make_one_operation_and_one_job(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let requests = (0..10).map(|_| generate_with_key(&app, &user, &session, "same-key"));
    let responses = futures::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let op: Value = response.json().await.expect("json");
        ids.insert(op["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 1);
    assert_eq!(jobs(&app).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_key_used_for_another_session_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let one = app.create_session(&user).await;
    let two = app.create_session(&user).await;
    assert_eq!(
        generate_with_key(&app, &user, &one, "k").await.status(),
        StatusCode::ACCEPTED
    );
    assert_error(
        generate_with_key(&app, &user, &two, "k").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_malformed_idempotency_key_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    for key in ["".to_owned(), "x".repeat(256)] {
        assert_invalid(generate_with_key(&app, &user, &session, &key).await).await;
    }
    assert_eq!(
        generate_with_key(&app, &user, &session, &"x".repeat(255))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_key_older_than_24_hours_starts_a_new_operation(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let first: Value = generate_with_key(&app, &user, &session, "old")
        .await
        .json()
        .await
        .expect("json");
    sqlx::query("UPDATE operations SET created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .expect("age");
    let second: Value = generate_with_key(&app, &user, &session, "old")
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(first["id"], second["id"]);
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 2);
}

/// The job push fails for real inside the transaction (a trigger on apalis' table
/// refuses the row): the operation must not survive, and the client must not get 202.
#[sqlx::test(migrations = false)]
async fn when_the_job_push_fails_no_operation_is_left_and_the_client_gets_a_5xx(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_job() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'queue refuses jobs'; END; $$;
         CREATE TRIGGER refuse_job BEFORE INSERT ON apalis.jobs FOR EACH ROW EXECUTE FUNCTION refuse_job();",
    )
    .execute(&app.pool)
    .await
    .expect("trigger");
    let response = app.generate(&user, &session).await;
    assert!(
        response.status().is_server_error(),
        "got {}",
        response.status()
    );
    let body: Value = response.json().await.expect("contract body");
    assert!(body["detail"]["code"].is_string());
    assert!(
        !body.to_string().contains("queue refuses jobs"),
        "internal cause leaked: {body}"
    );
    assert_eq!(app.count("SELECT count(*) FROM operations").await, 0);
    assert_eq!(jobs(&app).await, 0);
}

/// Holds the user's rate-limit window open for the next hour: every minute from this one
/// on gets the highest count the user has, so the next request meets the count that the
/// earlier ones left, whichever minute it lands in (the window is the database clock's
/// minute, `shared/src/db/rate_limits.rs`). Without it a minute turning over mid-test
/// would start a fresh count.
pub async fn hold_the_window(pool: &PgPool, user: &str, bucket: &str) {
    let user: uuid::Uuid = user.parse().expect("user id");
    sqlx::query(
        "INSERT INTO rate_limit_counters (user_id, bucket, window_start, hits)
         SELECT $1, $2, date_trunc('minute', now()) + m * interval '1 minute',
                coalesce((SELECT max(hits) FROM rate_limit_counters
                          WHERE user_id = $1 AND bucket = $2), 0)
         FROM generate_series(0, 60) AS m
         ON CONFLICT ON CONSTRAINT rate_limit_counters_pkey DO UPDATE SET hits = EXCLUDED.hits",
    )
    .bind(user)
    .bind(bucket)
    .execute(pool)
    .await
    .expect("hold the window");
}

#[sqlx::test(migrations = false)]
async fn the_rate_limit_answers_429_with_retry_after_and_holds_across_replicas(pool: PgPool) {
    // Two api processes on one database: the limit is shared.
    let one = TestApp::spawn_with(pool.clone(), |c| c.rate_limit_generate_per_minute = 3).await;
    let two = TestApp::spawn_with(pool, |c| c.rate_limit_generate_per_minute = 3).await;
    let user = one.register("ada@example.com").await;
    let session = one.create_session(&user).await;
    let mut statuses = Vec::new();
    for app in [&one, &two, &one, &two, &one] {
        hold_the_window(&one.pool, &user.user_id, "generate_question").await;
        let response = app.generate(&user, &session).await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_limited_for_the_minute(response).await;
        }
    }
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::ACCEPTED,
            S::ACCEPTED,
            S::ACCEPTED,
            S::TOO_MANY_REQUESTS,
            S::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(one.count("SELECT count(*) FROM operations").await, 3);
    // The refused requests left no hit behind.
    assert_eq!(
        one.count("SELECT max(hits)::int8 FROM rate_limit_counters")
            .await,
        3
    );
}

#[sqlx::test(migrations = false)]
async fn a_rate_limit_of_zero_is_off(pool: PgPool) {
    // 40 requests on one session: the per-session cap of unfinished operations (no
    // worker runs here, so all stay pending) is not what this test is about.
    let app = TestApp::spawn_with(pool, |c| {
        c.rate_limit_generate_per_minute = 0;
        c.max_pending_per_session = 0;
    })
    .await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    for _ in 0..40 {
        assert_eq!(
            app.generate(&user, &session).await.status(),
            StatusCode::ACCEPTED
        );
    }
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[sqlx::test(migrations = false)]
async fn while_intake_is_paused_requests_are_accepted_and_told_to_poll_every_30_s(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let switch = |paused: bool| {
        let pool = app.pool.clone();
        let view = app.intake.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            shared::db::intake::set(&mut conn, paused, "127.0.0.1")
                .await
                .expect("switch");
            // The api reads the switch every 2 s.
            testkit::eventually(
                format!("the api to read paused = {paused}"),
                std::time::Duration::from_secs(20),
                || async { (view.is_paused() == paused).then_some(()) },
            )
            .await;
        }
    };
    switch(true).await;
    let response = app.generate(&user, &session).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "nothing is refused"
    );
    assert_eq!(retry_after(&response), Some(30));
    assert_eq!(jobs(&app).await, 1);
    let pending = app
        .count("SELECT count(*) FROM operations WHERE status = 'pending'")
        .await;
    assert_eq!(pending, 1, "accepted work stays pending");

    switch(false).await;
    let response = app.generate(&user, &session).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(retry_after(&response), Some(2));
}
