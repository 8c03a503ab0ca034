use crate::helpers::{TestApp, assert_error, assert_invalid, id_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn a_resume_is_one_per_user_and_replaced_on_put(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let first: Value = app
        .send(
            Method::PUT,
            "/api/v1/resume",
            Some(&user),
            Some(json!({"content": "Ten years of Rust"})),
        )
        .await
        .json()
        .await
        .expect("json");
    let second = app
        .send(
            Method::PUT,
            "/api/v1/resume",
            Some(&user),
            Some(json!({"content": "Eleven years of Rust"})),
        )
        .await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["content"], "Eleven years of Rust");
    assert_eq!(second["user_id"], user.user_id.as_str());
    assert_eq!(app.count("SELECT count(*) FROM resumes").await, 1);
    let empty = app
        .send(
            Method::PUT,
            "/api/v1/resume",
            Some(&user),
            Some(json!({"content": " "})),
        )
        .await;
    assert_invalid(empty).await;
}

#[sqlx::test(migrations = false)]
async fn job_postings_are_created_read_and_deleted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let created = app
        .post(
            "/api/v1/job-postings",
            Some(&user),
            json!({"title": "SRE", "description": "On call"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["company"], Value::Null);
    let id = created["id"].as_str().expect("id");
    let read: Value = app
        .get_json(&format!("/api/v1/job-postings/{id}"), Some(&user))
        .await;
    assert_eq!(read, created);

    let deleted = app
        .delete(&format!("/api/v1/job-postings/{id}"), Some(&user))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.get(&format!("/api/v1/job-postings/{id}"), Some(&user))
            .await,
        StatusCode::NOT_FOUND,
        "JOB_POSTING_NOT_FOUND",
    )
    .await;
    let again = app
        .delete(&format!("/api/v1/job-postings/{id}"), Some(&user))
        .await;
    assert_error(again, StatusCode::NOT_FOUND, "JOB_POSTING_NOT_FOUND").await;

    let missing_title = app
        .post(
            "/api/v1/job-postings",
            Some(&user),
            json!({"description": "x"}),
        )
        .await;
    assert_invalid(missing_title).await;
}

#[sqlx::test(migrations = false)]
async fn deleting_a_job_posting_keeps_its_sessions_with_a_null_posting(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let posting = app.create_posting(&user).await;
    let session = id_of(
        app.post(
            "/api/v1/sessions",
            Some(&user),
            json!({"job_posting_id": posting}),
        )
        .await,
    )
    .await;
    app.delete(&format!("/api/v1/job-postings/{posting}"), Some(&user))
        .await;
    let session: Value = app
        .get_json(&format!("/api/v1/sessions/{session}"), Some(&user))
        .await;
    assert_eq!(session["job_posting_id"], Value::Null);
}

#[sqlx::test(migrations = false)]
async fn a_session_starts_active_at_question_zero(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let posting = app.create_posting(&user).await;
    let response = app
        .post(
            "/api/v1/sessions",
            Some(&user),
            json!({"job_posting_id": posting}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let session: Value = response.json().await.expect("json");
    assert_eq!(session["status"], "active");
    assert_eq!(session["current_question_number"], 0);
    assert_eq!(session["job_posting_id"], posting.as_str());
    for field in [
        "id",
        "user_id",
        "job_posting_id",
        "status",
        "current_question_number",
        "created_at",
        "updated_at",
    ] {
        assert!(session.get(field).is_some(), "{field} missing");
    }
    let missing = app
        .post(
            "/api/v1/sessions",
            Some(&user),
            json!({"job_posting_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_error(missing, StatusCode::NOT_FOUND, "JOB_POSTING_NOT_FOUND").await;
    let not_uuid = app
        .post(
            "/api/v1/sessions",
            Some(&user),
            json!({"job_posting_id": "nope"}),
        )
        .await;
    assert_invalid(not_uuid).await;
}

#[sqlx::test(migrations = false)]
async fn sessions_list_newest_first_with_paging(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create_session(&user).await);
    }
    let page: Value = app
        .get_json("/api/v1/sessions?limit=2&offset=0", Some(&user))
        .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 0);
    let got: Vec<_> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got, [ids[2].clone(), ids[1].clone()]);
    let past: Value = app
        .get_json("/api/v1/sessions?limit=2&offset=10", Some(&user))
        .await;
    assert_eq!(past["items"], json!([]));
    assert_eq!(past["total"], 3);
    for bad in ["limit=0", "limit=101", "offset=-1", "limit=abc"] {
        let response = app
            .get(&format!("/api/v1/sessions?{bad}"), Some(&user))
            .await;
        assert_invalid(response).await;
    }
}

#[sqlx::test(migrations = false)]
async fn session_status_moves_between_active_and_paused_and_ends_at_completed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let path = format!("/api/v1/sessions/{session}");
    let patch = |status: &'static str| {
        let request = app
            .request(Method::PATCH, &path, Some(&user))
            .json(&json!({"status": status}));
        async move { request.send().await.expect("patch") }
    };
    for status in ["paused", "active", "paused", "completed"] {
        let response = patch(status).await;
        assert_eq!(response.status(), StatusCode::OK, "to {status}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], status);
    }
    for status in ["active", "paused"] {
        assert_error(
            patch(status).await,
            StatusCode::BAD_REQUEST,
            "INVALID_STATUS_TRANSITION",
        )
        .await;
    }
    assert_invalid(patch("archived").await).await;
    let session: Value = app.get_json(&path, Some(&user)).await;
    assert_eq!(session["status"], "completed");
}

#[sqlx::test(migrations = false)]
async fn answers_go_to_active_sessions_and_messages_page_oldest_first(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    let answers = format!("/api/v1/sessions/{session}/answers");
    for n in 1..=5 {
        let response = app
            .post(
                &answers,
                Some(&user),
                json!({"content": format!("answer {n}")}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let message: Value = response.json().await.expect("json");
        assert_eq!(message["message_type"], "answer");
        assert_eq!(message["question_type"], Value::Null);
        assert_eq!(message["metadata"], json!({}));
    }
    let empty = app
        .post(&answers, Some(&user), json!({"content": ""}))
        .await;
    assert_invalid(empty).await;

    let page: Value = app
        .get_json(
            &format!("/api/v1/sessions/{session}/messages?page=2&limit=2"),
            Some(&user),
        )
        .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 2);
    assert_eq!(page["limit"], 2);
    let contents: Vec<_> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!("answer 3"), json!("answer 4")]);
    let past: Value = app
        .get_json(
            &format!("/api/v1/sessions/{session}/messages?page=9"),
            Some(&user),
        )
        .await;
    assert_eq!(past["items"], json!([]));
    assert_eq!(past["total"], 5);
    for bad in ["limit=0", "limit=201", "page=0", "page=x"] {
        let response = app
            .get(
                &format!("/api/v1/sessions/{session}/messages?{bad}"),
                Some(&user),
            )
            .await;
        assert_invalid(response).await;
    }
    let max = app
        .get(
            &format!("/api/v1/sessions/{session}/messages?limit=200"),
            Some(&user),
        )
        .await;
    assert_eq!(max.status(), StatusCode::OK);

    app.send(
        Method::PATCH,
        &format!("/api/v1/sessions/{session}"),
        Some(&user),
        Some(json!({"status": "paused"})),
    )
    .await;
    let paused = app
        .post(&answers, Some(&user), json!({"content": "late"}))
        .await;
    assert_error(paused, StatusCode::BAD_REQUEST, "SESSION_NOT_ACTIVE").await;
    assert_eq!(app.count("SELECT count(*) FROM session_messages").await, 5);
}
