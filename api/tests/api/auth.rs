use crate::helpers::{TestApp, User, assert_error, assert_invalid};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[sqlx::test(migrations = false)]
async fn register_returns_the_user_without_its_password(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "Ada@Example.com", "password": "12345678"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["full_name"], Value::Null);
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());
    for field in ["id", "email", "full_name", "created_at"] {
        assert!(user.get(field).is_some(), "{field} missing in {user}");
    }
}

#[sqlx::test(migrations = false)]
async fn registering_a_taken_email_is_a_conflict_whatever_its_case(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("ada@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "ADA@example.com", "password": "12345678"}),
        )
        .await;
    assert_error(response, StatusCode::CONFLICT, "EMAIL_TAKEN").await;
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[sqlx::test(migrations = false)]
async fn register_refuses_a_bad_email_or_a_short_password(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let bad_email = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "not-an-email", "password": "12345678"}),
        )
        .await;
    let body = assert_invalid(bad_email).await;
    assert!(body["detail"]["fields"]["email"].is_string());
    let short = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "a@example.com", "password": "1234567"}),
        )
        .await;
    let body = assert_invalid(short).await;
    assert!(body["detail"]["fields"]["password"].is_string());
    let missing = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "a@example.com"}),
        )
        .await;
    assert_invalid(missing).await;
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
}

#[sqlx::test(migrations = false)]
async fn login_gives_a_bearer_token_that_authenticates(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let registered = app.register("ada@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": testkit::client::PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let user = User {
        token: body["access_token"].as_str().expect("token").to_owned(),
        ..registered
    };
    let sessions = app.get("/api/v1/sessions", Some(&user)).await;
    assert_eq!(sessions.status(), StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn login_with_a_wrong_password_or_unknown_email_is_refused_alike(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.register("ada@example.com").await;
    let wrong = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "wrong password"}),
        )
        .await;
    let wrong = assert_error(wrong, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS").await;
    let unknown = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "bob@example.com", "password": testkit::client::PASSWORD}),
        )
        .await;
    let unknown = assert_error(unknown, StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS").await;
    assert_eq!(wrong, unknown);
}

async fn assert_not_authenticated(app: &TestApp, authorization: Option<String>) {
    let mut request = app.client.get(app.url("/api/v1/sessions"));
    if let Some(value) = &authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("request");
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..]),
        "{authorization:?}"
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "NOT_AUTHENTICATED").await;
}

#[sqlx::test(migrations = false)]
async fn missing_garbage_expired_forged_and_unsigned_tokens_are_401(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let expired = sign(
        json!({"sub": user.user_id, "exp": now() - 3600, "iat": now() - 7200}),
        SECRET,
    );
    let wrong_signature = sign(
        json!({"sub": user.user_id, "exp": now() + 3600}),
        "another-secret",
    );
    let no_exp = sign(json!({"sub": user.user_id}), SECRET);
    // alg: none — a header and claims with an empty signature.
    let b64 = |v: Value| {
        use base64_url::encode;
        encode(&v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": user.user_id, "exp": now() + 3600}))
    );

    assert_not_authenticated(&app, None).await;
    assert_not_authenticated(&app, Some("Bearer garbage".into())).await;
    assert_not_authenticated(&app, Some(format!("Basic {}", user.token))).await;
    assert_not_authenticated(&app, Some(format!("Bearer {expired}"))).await;
    assert_not_authenticated(&app, Some(format!("Bearer {wrong_signature}"))).await;
    assert_not_authenticated(&app, Some(format!("Bearer {no_exp}"))).await;
    assert_not_authenticated(&app, Some(format!("Bearer {unsigned}"))).await;
    // And the real one works.
    assert_eq!(
        app.get("/api/v1/sessions", Some(&user)).await.status(),
        StatusCode::OK
    );
}

mod base64_url {
    /// Unpadded base64url, as JWTs use.
    pub fn encode(input: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = input.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

/// GET, PUT, POST and PATCH with `user`'s token, and their statuses.
async fn statuses_of_every_method(app: &TestApp, user: &User, session: &str, op: &str) -> Vec<u16> {
    use reqwest::Method;
    let requests = [
        app.request(Method::GET, &format!("/api/v1/operations/{op}"), Some(user)),
        app.request(Method::GET, "/api/v1/sessions", Some(user)),
        app.request(Method::PUT, "/api/v1/resume", Some(user))
            .json(&json!({"content": "Ten years of Rust"})),
        app.request(Method::POST, "/api/v1/job-postings", Some(user))
            .json(&json!({"title": "SRE", "description": "Pager"})),
        app.request(
            Method::PATCH,
            &format!("/api/v1/sessions/{session}"),
            Some(user),
        )
        .json(&json!({"status": "paused"})),
    ];
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.send().await.expect("request").status().as_u16());
    }
    statuses
}

#[sqlx::test(migrations = false)]
async fn a_token_of_a_deleted_user_is_401_on_every_method(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // One user deleted before the api ever saw their token, one after it did (the
    // api then forgets them on the deletion's notification).
    let cold = app.register("cold@example.com").await;
    let warm = app.register("warm@example.com").await;
    let mut fixtures = Vec::new();
    for user in [&cold, &warm] {
        let session = app.create_session(user).await;
        let op = crate::helpers::id_of(app.generate(user, &session).await).await;
        fixtures.push((session, op));
    }
    let delete = |user: &User| {
        sqlx::query("DELETE FROM users WHERE id = $1::uuid")
            .bind(user.user_id.clone())
            .execute(&app.pool)
    };
    // The api has seen `cold` now: start a second api that has not.
    let fresh = TestApp::spawn(app.pool.clone()).await;
    delete(&cold).await.expect("delete cold");
    let (session, op) = &fixtures[0];
    assert_eq!(
        statuses_of_every_method(&fresh, &cold, session, op).await,
        [401; 5]
    );

    let (session, op) = &fixtures[1];
    assert_eq!(
        statuses_of_every_method(&app, &warm, session, op).await,
        [200, 200, 200, 201, 200]
    );
    delete(&warm).await.expect("delete warm");
    // The notification arrives within milliseconds; poll until it has.
    testkit::eventually(
        "every method to refuse the deleted user",
        std::time::Duration::from_secs(30),
        || async {
            let statuses = statuses_of_every_method(&app, &warm, session, op).await;
            (statuses == [401; 5]).then_some(())
        },
    )
    .await;
    let response = app.get("/api/v1/sessions", Some(&warm)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "NOT_AUTHENTICATED").await;
}
