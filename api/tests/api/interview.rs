//! The interview beyond asking: answers that name their question, and a set length.

use crate::helpers::{TestApp, User, assert_error, assert_invalid, id_of, question_in};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

async fn answer(app: &TestApp, user: &User, session: &str, body: Value) -> reqwest::Response {
    app.post(
        &format!("/api/v1/sessions/{session}/answers"),
        Some(user),
        body,
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn an_answer_names_its_question_and_a_question_is_answered_once(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let question = question_in(&app, &session).await;

    let first = answer(
        &app,
        &ada,
        &session,
        json!({"content": "Safety.", "question_id": question}),
    )
    .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["question_id"], question.as_str());
    assert_eq!(first["message_type"], "answer");
    let again = answer(
        &app,
        &ada,
        &session,
        json!({"content": "Speed.", "question_id": question}),
    )
    .await;
    assert_error(again, StatusCode::CONFLICT, "ALREADY_ANSWERED").await;

    // Without question_id, as before: stored unattached.
    let plain = answer(&app, &ada, &session, json!({"content": "Also this."})).await;
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert_eq!(
        plain.json::<Value>().await.expect("json")["question_id"],
        Value::Null
    );

    // Not a question of this session: an answer, an unknown id, another user's question.
    let an_answer = first["id"].as_str().expect("id").to_owned();
    let grace = app.register("grace@example.com").await;
    let theirs = app.create_session(&grace).await;
    let their_question = question_in(&app, &theirs).await;
    for not_a_question in [an_answer, uuid::Uuid::new_v4().to_string(), their_question] {
        let refused = answer(
            &app,
            &ada,
            &session,
            json!({"content": "Hm.", "question_id": not_a_question}),
        )
        .await;
        let body = assert_invalid(refused).await;
        assert!(
            body["detail"]["fields"]["question_id"].is_string(),
            "{body}"
        );
    }
    assert_invalid(
        answer(
            &app,
            &ada,
            &session,
            json!({"content": "Hm.", "question_id": "nope"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM session_messages WHERE message_type = 'answer'")
            .await,
        2,
        "the refused answers stored nothing"
    );
    // The page shows which question each answer answers.
    let page = app
        .get_json(&format!("/api/v1/sessions/{session}/messages"), Some(&ada))
        .await;
    let answered: Vec<&Value> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| &m["question_id"])
        .collect();
    assert_eq!(answered, [&Value::Null, &json!(question), &Value::Null]);
}

#[sqlx::test(migrations = false)]
async fn two_answers_racing_for_one_question_store_one(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let question = question_in(&app, &session).await;
    let tries = (0..8).map(|n| {
        answer(
            &app,
            &ada,
            &session,
            json!({"content": format!("Answer {n}"), "question_id": question}),
        )
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7,
        "{statuses:?}"
    );
}

async fn session_with_limit(app: &TestApp, user: &User, limit: Value) -> reqwest::Response {
    let posting = app.create_posting(user).await;
    app.post(
        "/api/v1/sessions",
        Some(user),
        json!({"job_posting_id": posting, "question_limit": limit}),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn a_question_limit_bounds_the_questions_asked_and_in_flight(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    for bad in [json!(0), json!(51)] {
        let body = assert_invalid(session_with_limit(&app, &ada, bad.clone()).await).await;
        assert!(
            body["detail"]["fields"]["question_limit"].is_string(),
            "{bad}: {body}"
        );
    }
    for bad in [json!("three"), json!(2.5)] {
        assert_invalid(session_with_limit(&app, &ada, bad).await).await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM interview_sessions").await,
        0
    );
    let unlimited: Value = session_with_limit(&app, &ada, Value::Null)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(unlimited["question_limit"], Value::Null);
    assert_eq!(unlimited["questions_remaining"], Value::Null);

    let created = session_with_limit(&app, &ada, json!(2)).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let session: Value = created.json().await.expect("json");
    assert_eq!(
        (
            session["question_limit"].as_i64(),
            session["questions_remaining"].as_i64()
        ),
        (Some(2), Some(2))
    );
    let id = session["id"].as_str().expect("id").to_owned();
    let remaining = || async {
        app.get_json(&format!("/api/v1/sessions/{id}"), Some(&ada))
            .await["questions_remaining"]
            .as_i64()
    };

    // Five at once against a limit of two: exactly two are taken, whatever the order.
    let tries = (0..5).map(|_| app.generate(&ada, &id));
    let mut accepted = Vec::new();
    for response in futures::future::join_all(tries).await {
        match response.status() {
            StatusCode::ACCEPTED => accepted.push(id_of(response).await),
            _ => {
                assert_error(response, StatusCode::CONFLICT, "INTERVIEW_COMPLETE").await;
            }
        }
    }
    assert_eq!(accepted.len(), 2);
    assert_eq!(remaining().await, Some(0));
    // Reaching the limit does not complete the session; a cancelled question frees its place.
    let session_now = app
        .get_json(&format!("/api/v1/sessions/{id}"), Some(&ada))
        .await;
    assert_eq!(session_now["status"], "active");
    let cancelled = app
        .post(
            &format!("/api/v1/operations/{}/cancel", accepted[0]),
            Some(&ada),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(remaining().await, Some(1));
    assert_eq!(app.generate(&ada, &id).await.status(), StatusCode::ACCEPTED);
    // A generated question counts as the unfinished one did.
    sqlx::query("UPDATE interview_sessions SET current_question_number = 1 WHERE id = $1::uuid;")
        .bind(&id)
        .execute(&app.pool)
        .await
        .expect("one generated");
    sqlx::query("UPDATE operations SET status = 'completed', result = '{}' WHERE id = $1::uuid")
        .bind(&accepted[1])
        .execute(&app.pool)
        .await
        .expect("its operation completed");
    assert_eq!(remaining().await, Some(0));
    assert_error(
        app.generate(&ada, &id).await,
        StatusCode::CONFLICT,
        "INTERVIEW_COMPLETE",
    )
    .await;
    // An inactive session says so first.
    let paused = app
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/sessions/{id}"),
            Some(&ada),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    assert_error(
        app.generate(&ada, &id).await,
        StatusCode::BAD_REQUEST,
        "SESSION_NOT_ACTIVE",
    )
    .await;
}
