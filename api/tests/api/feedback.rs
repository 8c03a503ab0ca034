//! `POST /sessions/{id}/answers/{answer_id}/feedback`: the enqueue of a feedback, beside
//! the session's questions, sharing their key, rate limit and cap.

use crate::generate::hold_the_window;
use crate::helpers::{
    TestApp, User, assert_error, assert_invalid, assert_limited_for_the_minute, id_of, question_in,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A question in `session` and the user's answer to it; the answer's id.
async fn answered(app: &TestApp, user: &User, session: &str) -> String {
    let question = question_in(app, session).await;
    answer(
        app,
        user,
        session,
        json!({"content": "Safety.", "question_id": question}),
    )
    .await
}

/// An answer posted over HTTP with `body`; its id.
async fn answer(app: &TestApp, user: &User, session: &str, body: Value) -> String {
    let posted = app
        .post(
            &format!("/api/v1/sessions/{session}/answers"),
            Some(user),
            body,
        )
        .await;
    assert_eq!(posted.status(), StatusCode::CREATED);
    id_of(posted).await
}

async fn feedback(app: &TestApp, user: &User, session: &str, answer: &str) -> Response {
    app.request(
        Method::POST,
        &format!("/api/v1/sessions/{session}/answers/{answer}/feedback"),
        Some(user),
    )
    .send()
    .await
    .expect("request")
}

async fn feedback_with_key(
    app: &TestApp,
    user: &User,
    session: &str,
    answer: &str,
    key: &str,
) -> Response {
    app.request(
        Method::POST,
        &format!("/api/v1/sessions/{session}/answers/{answer}/feedback"),
        Some(user),
    )
    .header("Idempotency-Key", key)
    .send()
    .await
    .expect("request")
}

async fn generate_with_key(app: &TestApp, user: &User, session: &str, key: &str) -> Response {
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

/// Operations and jobs, of every type: what a refused request must leave as it was.
async fn written(app: &TestApp) -> (i64, i64) {
    (
        app.count("SELECT count(*) FROM operations").await,
        app.count("SELECT count(*) FROM apalis.jobs").await,
    )
}

/// The job of operation `id`: its queue, whether apalis may run it now, its status.
async fn job_of(app: &TestApp, id: &str) -> (String, bool, String) {
    sqlx::query_as(
        "SELECT job_type, run_at <= now(), status FROM apalis.jobs WHERE idempotency_key = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("the operation's job")
}

async fn fail(app: &TestApp, id: &str) {
    sqlx::query("UPDATE operations SET status = 'failed', error_message = 'x' WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("fail the operation");
}

#[sqlx::test(migrations = false)]
async fn feedback_answers_202_with_location_and_retry_after_and_queues_a_job_that_may_run_now(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    let response = feedback(&app, &ada, &session, &answer).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (location, retry_after) = (header("location"), header("retry-after"));
    let op: Value = response.json().await.expect("json");
    assert_eq!(op["operation_type"], "feedback_analysis");
    assert_eq!(op["status"], "pending");
    assert_eq!(op["result"], Value::Null);
    let id = op["id"].as_str().expect("id");
    assert_eq!(location, Some(format!("/api/v1/operations/{id}")));
    assert!(
        retry_after
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );

    // Its job is on the feedback queue, keyed by the operation, and not held.
    assert_eq!(
        job_of(&app, id).await,
        ("feedback_analysis".to_owned(), true, "Pending".to_owned())
    );
    let (payload, max_attempts): (Vec<u8>, i32) =
        sqlx::query_as("SELECT job, max_attempts FROM apalis.jobs")
            .fetch_one(&app.pool)
            .await
            .expect("one job");
    let payload: Value = serde_json::from_slice(&payload).expect("JSON payload");
    assert_eq!(
        payload,
        json!({"version": shared::jobs::PAYLOAD_VERSION, "operation_id": id,
               "session_id": session, "answer_id": answer})
    );
    assert_eq!(max_attempts, 5);

    // The operation endpoints take it as they take a question.
    let polled = app
        .get(&format!("/api/v1/operations/{id}"), Some(&ada))
        .await;
    assert_eq!(polled.status(), StatusCode::OK);
    assert!(polled.headers().contains_key("retry-after"));
    let polled: Value = polled.json().await.expect("json");
    assert_eq!(polled["operation_type"], "feedback_analysis");
}

#[sqlx::test(migrations = false)]
async fn feedback_is_404_on_another_users_session_and_for_anything_but_an_answer_of_the_session(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let question = question_in(&app, &session).await;
    let answer = answer(
        &app,
        &ada,
        &session,
        json!({"content": "Safety.", "question_id": question}),
    )
    .await;
    let other_session = app.create_session(&ada).await;
    let elsewhere = answered(&app, &ada, &other_session).await;

    let eve = app.register("eve@example.com").await;
    assert_error(
        feedback(&app, &eve, &session, &answer).await,
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    .await;
    let missing = uuid::Uuid::new_v4().to_string();
    assert_error(
        feedback(&app, &ada, &missing, &answer).await,
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    .await;
    // An answer of another session, a question, nothing at all.
    for not_an_answer in [&elsewhere, &question, &missing] {
        let body = assert_error(
            feedback(&app, &ada, &session, not_an_answer).await,
            StatusCode::NOT_FOUND,
            "ANSWER_NOT_FOUND",
        )
        .await;
        assert_eq!(body["detail"]["operation_id"], Value::Null, "{body}");
    }
    assert_invalid(feedback(&app, &ada, "not-a-uuid", &answer).await).await;
    assert_invalid(feedback(&app, &ada, &session, "not-a-uuid").await).await;
    assert_eq!(written(&app).await, (0, 0));
}

#[sqlx::test(migrations = false)]
async fn an_inactive_session_is_400_and_an_answer_that_names_no_question_is_422(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    let unattached = self::answer(&app, &ada, &session, json!({"content": "Also."})).await;

    let body = assert_invalid(feedback(&app, &ada, &session, &unattached).await).await;
    assert!(body["detail"]["fields"]["answer_id"].is_string(), "{body}");

    let paused = app
        .send(
            Method::PATCH,
            &format!("/api/v1/sessions/{session}"),
            Some(&ada),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    for of in [&answer, &unattached] {
        assert_error(
            feedback(&app, &ada, &session, of).await,
            StatusCode::BAD_REQUEST,
            "SESSION_NOT_ACTIVE",
        )
        .await;
    }
    // Whether the answer is the session's is told first, whatever its status.
    assert_error(
        feedback(&app, &ada, &session, &uuid::Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
        "ANSWER_NOT_FOUND",
    )
    .await;
    assert_eq!(written(&app).await, (0, 0));
}

#[sqlx::test(migrations = false)]
async fn an_answer_has_one_feedback_and_a_failed_one_can_be_asked_again(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    let first = id_of(feedback(&app, &ada, &session, &answer).await).await;

    let body = assert_error(
        feedback(&app, &ada, &session, &answer).await,
        StatusCode::CONFLICT,
        "FEEDBACK_EXISTS",
    )
    .await;
    assert_eq!(body["detail"]["operation_id"], first.as_str(), "{body}");
    assert_eq!(written(&app).await, (1, 1));

    // A failed feedback does not count: the candidate may ask again.
    fail(&app, &first).await;
    let second = feedback(&app, &ada, &session, &answer).await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let second = id_of(second).await;
    assert_ne!(second, first);
    // A completed one counts as an unfinished one does.
    sqlx::query("UPDATE operations SET status = 'completed', result = '{}' WHERE id = $1::uuid")
        .bind(&second)
        .execute(&app.pool)
        .await
        .expect("complete it");
    let body = assert_error(
        feedback(&app, &ada, &session, &answer).await,
        StatusCode::CONFLICT,
        "FEEDBACK_EXISTS",
    )
    .await;
    assert_eq!(body["detail"]["operation_id"], second.as_str(), "{body}");
    assert_eq!(written(&app).await, (2, 2));
}

#[sqlx::test(migrations = false)]
async fn a_replayed_key_returns_the_same_feedback_and_a_key_used_for_another_request_is_422(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    let another_answer = answered(&app, &ada, &session).await;

    let first = feedback_with_key(&app, &ada, &session, &answer, "fb-1").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = id_of(first).await;
    // The replay comes before the one-feedback check: the same operation, not a 409.
    let again = feedback_with_key(&app, &ada, &session, &answer, "fb-1").await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(again.headers().contains_key("location"));
    assert_eq!(id_of(again).await, first);
    assert_eq!(written(&app).await, (1, 1));

    // The key of a feedback, for another answer or for a question: refused.
    for refused in [
        feedback_with_key(&app, &ada, &session, &another_answer, "fb-1").await,
        generate_with_key(&app, &ada, &session, "fb-1").await,
    ] {
        assert_error(
            refused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
        )
        .await;
    }
    // The key of a question, for a feedback: refused too.
    let question = generate_with_key(&app, &ada, &session, "q-1").await;
    assert_eq!(question.status(), StatusCode::ACCEPTED);
    assert_error(
        feedback_with_key(&app, &ada, &session, &another_answer, "q-1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    assert_eq!(written(&app).await, (2, 2));
}

#[sqlx::test(migrations = false)]
async fn questions_and_feedback_share_one_rate_limit(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.rate_limit_generate_per_minute = 3).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answers = [
        answered(&app, &ada, &session).await,
        answered(&app, &ada, &session).await,
    ];
    let mut statuses = Vec::new();
    for step in 0..5 {
        hold_the_window(&app.pool, &ada.user_id, "generate_question").await;
        let response = match step {
            1 => feedback(&app, &ada, &session, &answers[0]).await,
            3 => feedback(&app, &ada, &session, &answers[1]).await,
            _ => app.generate(&ada, &session).await,
        };
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
    assert_eq!(written(&app).await, (3, 3));
    assert_eq!(
        app.count("SELECT max(hits)::int8 FROM rate_limit_counters")
            .await,
        3,
        "one bucket, and the refused requests left no hit"
    );
}

#[sqlx::test(migrations = false)]
async fn feedback_counts_against_the_sessions_cap_of_unfinished_operations(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.max_pending_per_session = 2).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answers = [
        answered(&app, &ada, &session).await,
        answered(&app, &ada, &session).await,
    ];
    assert_eq!(
        app.generate(&ada, &session).await.status(),
        StatusCode::ACCEPTED
    );
    let first = id_of(feedback(&app, &ada, &session, &answers[0]).await).await;
    for refused in [
        feedback(&app, &ada, &session, &answers[1]).await,
        app.generate(&ada, &session).await,
    ] {
        assert_eq!(
            refused
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
        assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS").await;
    }
    assert_eq!(written(&app).await, (2, 2));
    // A finished feedback frees its place.
    fail(&app, &first).await;
    assert_eq!(
        feedback(&app, &ada, &session, &answers[1]).await.status(),
        StatusCode::ACCEPTED
    );
}

#[sqlx::test(migrations = false)]
async fn feedback_neither_waits_for_a_question_nor_holds_one_back(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answers = [
        answered(&app, &ada, &session).await,
        answered(&app, &ada, &session).await,
    ];
    // With a feedback unfinished, the next question may run at once.
    let early_feedback = id_of(feedback(&app, &ada, &session, &answers[0]).await).await;
    let first_question = id_of(app.generate(&ada, &session).await).await;
    assert!(
        job_of(&app, &first_question).await.1,
        "not held by the feedback"
    );
    // Behind an unfinished question, a question is held and a feedback is not.
    let second_question = id_of(app.generate(&ada, &session).await).await;
    let late_feedback = id_of(feedback(&app, &ada, &session, &answers[1]).await).await;
    assert!(
        !job_of(&app, &second_question).await.1,
        "held by the first question"
    );
    assert!(
        job_of(&app, &late_feedback).await.1,
        "feedback is never held"
    );
    // The feedback ending releases no question; the first question ending does.
    fail(&app, &early_feedback).await;
    assert!(!job_of(&app, &second_question).await.1);
    fail(&app, &first_question).await;
    assert!(job_of(&app, &second_question).await.1);
}

#[sqlx::test(migrations = false)]
async fn a_feedback_is_cancelled_and_listed_like_a_question(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    let question = id_of(app.generate(&ada, &session).await).await;
    let id = id_of(feedback(&app, &ada, &session, &answer).await).await;

    let listed = app
        .get_json(
            &format!("/api/v1/sessions/{session}/operations"),
            Some(&ada),
        )
        .await;
    let types: Vec<(&str, &str)> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|op| {
            (
                op["id"].as_str().expect("id"),
                op["operation_type"].as_str().expect("type"),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            (question.as_str(), "question_generation"),
            (id.as_str(), "feedback_analysis")
        ]
    );

    let cancelled = app
        .post(
            &format!("/api/v1/operations/{id}/cancel"),
            Some(&ada),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.expect("json");
    assert_eq!(
        (&cancelled["status"], &cancelled["error_message"]),
        (&json!("failed"), &json!("Cancelled."))
    );
    assert_eq!(job_of(&app, &id).await.2, "Killed");
    assert_eq!(
        job_of(&app, &question).await.2,
        "Pending",
        "the question's job is left"
    );
    // A long poll on it answers at once, finished.
    let polled = app
        .get_json(&format!("/api/v1/operations/{id}?wait=5"), Some(&ada))
        .await;
    assert_eq!(polled["status"], "failed");
    let failed = app
        .get_json(
            &format!("/api/v1/sessions/{session}/operations?status=failed"),
            Some(&ada),
        )
        .await;
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["operation_type"], "feedback_analysis");
}

#[sqlx::test(migrations = false)]
async fn the_messages_list_carries_feedback_messages(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let answer = answered(&app, &ada, &session).await;
    // As a worker's commit would leave it (no worker runs here).
    sqlx::query(
        "INSERT INTO session_messages (id, session_id, message_type, content, metadata)
         VALUES (gen_random_uuid(), $1::uuid, 'feedback', 'Clear and correct.',
                 jsonb_build_object('answer_id', $2::text, 'score', 8))",
    )
    .bind(&session)
    .bind(&answer)
    .execute(&app.pool)
    .await
    .expect("a feedback message");
    let page = app
        .get_json(&format!("/api/v1/sessions/{session}/messages"), Some(&ada))
        .await;
    let last = &page["items"][2];
    assert_eq!(last["message_type"], "feedback", "{page}");
    assert_eq!(last["content"], "Clear and correct.");
    assert_eq!(last["metadata"]["answer_id"], answer.as_str());
    assert_eq!(last["question_id"], Value::Null);
}
