//! A client rebuilding its screens after a reload, and a candidate leaving: the reads
//! of the user's own resources, the change of a posting, the deletion of a session and
//! of the account.

use crate::helpers::{TestApp, User, assert_error, assert_invalid, id_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

async fn patch_posting(app: &TestApp, user: &User, id: &str, body: Value) -> reqwest::Response {
    app.send(
        Method::PATCH,
        &format!("/api/v1/job-postings/{id}"),
        Some(user),
        Some(body),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn a_client_reads_back_the_user_the_resume_and_the_postings(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let me = app.get_json("/api/v1/users/me", Some(&ada)).await;
    assert_eq!(me["email"], "ada@example.com");
    assert!(me.get("password_hash").is_none(), "{me}");

    assert_error(
        app.get("/api/v1/resume", Some(&ada)).await,
        StatusCode::NOT_FOUND,
        "RESUME_NOT_FOUND",
    )
    .await;
    let put = app
        .send(
            Method::PUT,
            "/api/v1/resume",
            Some(&ada),
            Some(json!({"content": "Ten years of PostgreSQL"})),
        )
        .await;
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(
        app.get_json("/api/v1/resume", Some(&ada)).await["content"],
        "Ten years of PostgreSQL"
    );

    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(app.create_posting(&ada).await);
    }
    let first = app
        .get_json("/api/v1/job-postings?limit=2", Some(&ada))
        .await;
    assert_eq!(
        (
            first["total"].as_i64(),
            first["limit"].as_i64(),
            first["offset"].as_i64()
        ),
        (Some(3), Some(2), Some(0))
    );
    let ids: Vec<&str> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [made[2].as_str(), made[1].as_str()], "newest first");
    let rest = app
        .get_json("/api/v1/job-postings?limit=2&offset=2", Some(&ada))
        .await;
    assert_eq!(rest["items"][0]["id"], made[0].as_str());
    for bad in ["limit=0", "limit=101", "offset=-1", "limit=x"] {
        assert_invalid(
            app.get(&format!("/api/v1/job-postings?{bad}"), Some(&ada))
                .await,
        )
        .await;
    }
    let grace = app.register("grace@example.com").await;
    let theirs = app.get_json("/api/v1/job-postings", Some(&grace)).await;
    assert_eq!(
        (
            theirs["total"].as_i64(),
            theirs["items"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

#[sqlx::test(migrations = false)]
async fn a_posting_changes_field_by_field_and_only_for_its_owner(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let id = app.create_posting(&ada).await;
    let before = app
        .get_json(&format!("/api/v1/job-postings/{id}"), Some(&ada))
        .await;

    let renamed = patch_posting(&app, &ada, &id, json!({"title": "Staff engineer"})).await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = renamed.json().await.expect("json");
    assert_eq!(renamed["title"], "Staff engineer");
    assert_eq!(renamed["company"], before["company"], "left out: kept");
    assert_eq!(renamed["description"], before["description"]);
    assert_ne!(renamed["updated_at"], before["updated_at"]);
    let cleared: Value = patch_posting(&app, &ada, &id, json!({"company": null}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cleared["company"], Value::Null, "null: cleared");
    assert_eq!(cleared["title"], "Staff engineer");
    let unchanged = patch_posting(&app, &ada, &id, json!({})).await;
    assert_eq!(unchanged.status(), StatusCode::OK);

    for bad in [
        json!({"title": "  "}),
        json!({"description": ""}),
        json!({"title": "a\u{0}b"}),
        json!({"title": 5}),
    ] {
        assert_invalid(patch_posting(&app, &ada, &id, bad).await).await;
    }
    let grace = app.register("grace@example.com").await;
    assert_error(
        patch_posting(&app, &grace, &id, json!({"title": "Mine now"})).await,
        StatusCode::NOT_FOUND,
        "JOB_POSTING_NOT_FOUND",
    )
    .await;
    let after = app
        .get_json(&format!("/api/v1/job-postings/{id}"), Some(&ada))
        .await;
    assert_eq!(
        after["title"], "Staff engineer",
        "refused changes left it as it was"
    );
}

#[sqlx::test(migrations = false)]
async fn deleting_a_session_ends_its_operations_which_stay_readable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ada = app.register("ada@example.com").await;
    let session = app.create_session(&ada).await;
    let running = id_of(app.generate(&ada, &session).await).await;
    let held = id_of(app.generate(&ada, &session).await).await;
    app.post(
        &format!("/api/v1/sessions/{session}/answers"),
        Some(&ada),
        json!({"content": "Hi"}),
    )
    .await;
    let grace = app.register("grace@example.com").await;
    assert_error(
        app.delete(&format!("/api/v1/sessions/{session}"), Some(&grace))
            .await,
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM interview_sessions").await,
        1,
        "another user deletes nothing"
    );

    assert_eq!(
        app.delete(&format!("/api/v1/sessions/{session}"), Some(&ada))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        app.get(&format!("/api/v1/sessions/{session}"), Some(&ada))
            .await,
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    .await;
    assert_error(
        app.delete(&format!("/api/v1/sessions/{session}"), Some(&ada))
            .await,
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    .await;
    for op in [&running, &held] {
        let read = app
            .get_json(&format!("/api/v1/operations/{op}"), Some(&ada))
            .await;
        assert_eq!(read["status"], "failed", "{read}");
        assert_eq!(
            read["error_message"],
            "The question could not be generated: the interview session no longer exists."
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM session_messages").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE status <> 'Killed'")
            .await,
        0,
        "no job is left to run"
    );
}

async fn delete_me(app: &TestApp, user: &User, password: &str) -> reqwest::Response {
    app.send(
        Method::DELETE,
        "/api/v1/users/me",
        Some(user),
        Some(json!({"password": password})),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn deleting_the_account_takes_everything_and_its_tokens_at_once(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.login_attempts_per_minute = 3).await;
    let ada = app.register("ada@example.com").await;
    app.send(
        Method::PUT,
        "/api/v1/resume",
        Some(&ada),
        Some(json!({"content": "CV"})),
    )
    .await;
    let session = app.create_session(&ada).await;
    let op = id_of(app.generate(&ada, &session).await).await;
    let grace = app.register("grace@example.com").await;
    let hers = app.create_session(&grace).await;

    // A wrong password deletes nothing, and counts as a failed login.
    for _ in 0..2 {
        assert_error(
            delete_me(&app, &ada, "wrong password").await,
            StatusCode::UNAUTHORIZED,
            "INVALID_CREDENTIALS",
        )
        .await;
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 2);
    assert_invalid(
        app.send(
            Method::DELETE,
            "/api/v1/users/me",
            Some(&ada),
            Some(json!({})),
        )
        .await,
    )
    .await;
    assert_eq!(
        delete_me(&app, &ada, testkit::client::PASSWORD)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    // Its tokens are refused at once, everywhere.
    for path in [
        "/api/v1/users/me",
        "/api/v1/resume",
        &format!("/api/v1/operations/{op}"),
    ] {
        assert_error(
            app.get(path, Some(&ada)).await,
            StatusCode::UNAUTHORIZED,
            "NOT_AUTHENTICATED",
        )
        .await;
    }
    // Nothing of it is left, and no job of it will run.
    let ada_id: uuid::Uuid = ada.user_id.parse().expect("id");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM users WHERE id = $1)
              + (SELECT count(*) FROM resumes WHERE user_id = $1)
              + (SELECT count(*) FROM job_postings WHERE user_id = $1)
              + (SELECT count(*) FROM interview_sessions WHERE user_id = $1)
              + (SELECT count(*) FROM operations WHERE user_id = $1)
              + (SELECT count(*) FROM rate_limit_counters WHERE user_id = $1)
              + (SELECT count(*) FROM session_messages m
                 WHERE NOT EXISTS (SELECT 1 FROM interview_sessions s WHERE s.id = m.session_id))",
    )
    .bind(ada_id)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(left, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE status NOT IN ('Killed', 'Done')")
            .await,
        0
    );
    // Grace keeps everything.
    assert_eq!(
        app.generate(&grace, &hers).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.get_json("/api/v1/users/me", Some(&grace)).await["email"],
        "grace@example.com"
    );
}

#[sqlx::test(migrations = false)]
async fn guessing_the_password_through_account_deletion_meets_the_login_throttle(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.login_attempts_per_minute = 3).await;
    let ada = app.register("ada@example.com").await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        let response = app
            .send(
                Method::DELETE,
                "/api/v1/users/me",
                Some(&ada),
                Some(json!({"password": format!("guess {n}")})),
            )
            .await;
        statuses.push(response.status());
    }
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::UNAUTHORIZED,
            S::TOO_MANY_REQUESTS,
            S::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}
