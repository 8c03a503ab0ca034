//! The api against clients that mean harm or are merely careless: invented methods,
//! floods of sign-ups and guesses, forged and expired tokens, sockets that never send
//! their headers, too many long polls, browsers on other origins.

use crate::helpers::TestApp;
use crate::operations::pending_operation;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: these are safety nets on 2 loaded cores, not measurements.
const DEADLINE: Duration = Duration::from_secs(30);

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches us).
fn client_from(ip: [u8; 4]) -> Client {
    Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .expect("client")
}

#[sqlx::test(migrations = false)]
async fn invented_methods_do_not_grow_the_metrics(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for n in 0..600 {
        let method = Method::from_bytes(format!("BREW{n}").as_bytes()).expect("a token");
        let path = match n % 3 {
            0 => "/api/v1/sessions".to_owned(),
            1 => format!("/nowhere/{n}"),
            _ => format!("/api/v1/operations/{}", uuid::Uuid::new_v4()),
        };
        let response = app
            .request(method, &path, None)
            .send()
            .await
            .expect("request");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = app.get("/metrics", None).await.text().await.expect("text");
    assert!(!text.contains("BREW"), "an invented method became a label");
    // All 600 fall into one label per route template: three at most.
    let routes: BTreeSet<&str> = text
        .lines()
        .filter(|line| {
            line.starts_with("http_requests_total{") && line.contains(r#"method="other""#)
        })
        .filter_map(|line| line.split(r#"route=""#).nth(1)?.split('"').next())
        .collect();
    assert!(!routes.is_empty() && routes.len() <= 3, "{routes:?}");
}

#[sqlx::test(migrations = false)]
async fn a_registration_flood_is_bounded_and_a_normal_sign_up_still_works(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.password_hash_concurrency = Some(2);
        c.registrations_per_minute_per_address = 10;
    })
    .await;
    let flood = (0..96).map(|n| {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/register");
        async move {
            let response = client
                .post(url)
                .json(
                    &json!({"email": format!("bot{n}@example.com"), "password": "hunter2hunter2"}),
                )
                .send()
                .await
                .expect("request");
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status(), retry_after)
        }
    });
    let answers = futures::future::join_all(flood).await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (status, retry_after) in &answers {
        *by_status.entry(status.as_u16()).or_default() += 1;
        assert!(
            [201, 429, 503].contains(&status.as_u16()),
            "unexpected {status}: {by_status:?}"
        );
        if *status != StatusCode::CREATED {
            assert!(retry_after, "{status} without Retry-After");
        }
    }
    let created = by_status.get(&201).copied().unwrap_or(0);
    assert!((1..=10).contains(&created), "{by_status:?}");
    assert!(
        app.guards.hashing.peak() <= 2,
        "peak {}",
        app.guards.hashing.peak()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM users").await,
        created as i64,
        "{by_status:?}"
    );
    // Another address is not held back by the flood's limit.
    let response = client_from([127, 0, 0, 2])
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": "ada@example.com", "password": "correct horse"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[sqlx::test(migrations = false)]
async fn password_guessing_is_throttled_for_the_window_only(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.login_attempts_per_minute = 10;
        c.throttle_window_secs = 3;
    })
    .await;
    app.register("ada@example.com").await;
    let login = |password: &'static str| {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": password}),
        )
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let response = login("wrong password").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let retry_after: u64 = retry_after
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After on the 429");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    // The right password waits out the window too, then works.
    assert_eq!(
        login("correct horse").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    eventually("the window to end", DEADLINE, || async {
        (login(testkit::client::PASSWORD).await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[sqlx::test(migrations = false)]
async fn a_token_is_refreshed_while_valid_and_not_once_expired(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let user = app.register("ada@example.com").await;
    let exp = |token: &str| -> u64 {
        use base64::Engine;
        let payload = token.split('.').nth(1).expect("a JWT");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        let claims: Value = serde_json::from_slice(&claims).expect("claims");
        claims["exp"].as_u64().expect("exp")
    };
    let first = exp(&user.token);
    let refreshed = eventually("a later exp", DEADLINE, || async {
        let response = app
            .request(Method::POST, "/api/v1/auth/refresh", Some(&user))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 3600);
        let token = body["access_token"].as_str().expect("token").to_owned();
        (exp(&token) > first).then_some(token)
    })
    .await;
    let fresh = crate::helpers::User {
        token: refreshed,
        ..user.clone()
    };
    assert_eq!(
        app.get("/api/v1/sessions", Some(&fresh)).await.status(),
        StatusCode::OK
    );

    // A token that expired an hour ago, correctly signed: refused.
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user.user_id, "exp": first - 7_200, "iat": first - 10_800}),
        &jsonwebtoken::EncodingKey::from_secret(
            api::config::ApiConfig::for_tests("postgres://unused")
                .jwt_secret
                .expect("a test secret")
                .expose()
                .as_bytes(),
        ),
    )
    .expect("sign");
    let stale = crate::helpers::User {
        token: expired,
        ..user.clone()
    };
    assert_eq!(
        app.get("/api/v1/sessions", Some(&stale)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refused = app
        .request(Method::POST, "/api/v1/auth/refresh", Some(&stale))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.request(Method::POST, "/api/v1/auth/refresh", None)
            .send()
            .await
            .expect("request")
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Opens a connection and sends half a request's headers, then nothing.
async fn half_open(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .await
        .expect("write");
    stream
}

/// Whether the server closed `stream` (EOF or reset) within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before the close: keep reading to the end.
            Ok(Ok(_)) => continue,
        }
    }
}

#[sqlx::test(migrations = false)]
async fn connections_that_never_finish_their_headers_are_closed(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.header_read_timeout_secs = 2).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(half_open(app.addr).await);
    }
    // The 300 hold sockets; a normal client is still answered.
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    let closes = slow
        .iter_mut()
        .map(|stream| closed_within(stream, DEADLINE));
    let closed = futures::future::join_all(closes).await;
    assert_eq!(closed.iter().filter(|c| **c).count(), 300);
}

#[sqlx::test(migrations = false)]
async fn past_max_connections_a_client_waits_for_a_free_one(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.max_connections = 4;
        c.header_read_timeout_secs = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_open(app.addr).await);
    }
    // All four slots are taken: a fifth connection is not served while they last...
    let waiting = tokio::spawn({
        let url = app.url("/healthz");
        async move { Client::new().get(url).send().await.map(|r| r.status()) }
    });
    let early = Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
        .get(app.url("/healthz"))
        .send()
        .await;
    assert!(early.is_err(), "served past the bound: {early:?}");
    // ...and is once the header timeout frees the slots.
    let status = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("served after the slow ones were closed")
        .expect("task")
        .expect("request");
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn past_max_long_polls_a_poll_answers_at_once(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.max_long_polls = 1).await;
    let (user, id) = pending_operation(&app).await;
    let first = tokio::spawn(
        app.request(
            Method::GET,
            &format!("/api/v1/operations/{id}?wait=30"),
            Some(&user),
        )
        .send(),
    );
    let waiters = app.waiters.clone();
    eventually("the first poll to wait", DEADLINE, || async {
        (!waiters.is_empty()).then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    let second = app
        .get(&format!("/api/v1/operations/{id}?wait=30"), Some(&user))
        .await;
    assert!(started.elapsed() < Duration::from_secs(25), "it waited");
    assert_eq!(second.status(), StatusCode::OK);
    assert!(second.headers().get("retry-after").is_some());
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["status"], "pending");
    first.abort();
}

#[sqlx::test(migrations = false)]
async fn cors_answers_listed_origins_only(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.cors_allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/v1/sessions", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let listed = preflight("https://app.example.com").await.expect("request");
    assert!(listed.status().is_success(), "{}", listed.status());
    assert_eq!(
        listed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"https://app.example.com"[..])
    );
    let allowed = listed
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // A browser's W3C trace context may continue into ours.
    for header in ["authorization", "traceparent", "tracestate"] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    let other = preflight("https://evil.example.com")
        .await
        .expect("request");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A simple request from the listed origin carries the header too.
    let simple = app
        .request(Method::GET, "/healthz", None)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("request");
    assert!(
        simple
            .headers()
            .get("access-control-allow-origin")
            .is_some()
    );
    // Without the setting, no CORS header at all.
    let plain = TestApp::spawn(app.pool.clone()).await;
    let none = plain
        .request(Method::OPTIONS, "/api/v1/sessions", None)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("request");
    assert!(none.headers().get("access-control-allow-origin").is_none());
}

#[sqlx::test(migrations = false)]
async fn metrics_addr_moves_metrics_off_the_public_listener(pool: PgPool) {
    let private: SocketAddr = testkit::process::free_addr().parse().expect("addr");
    let app = TestApp::spawn_with(pool, |c| c.telemetry.metrics_addr = Some(private)).await;
    let public = app.get("/metrics", None).await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let scraped = eventually("the private metrics listener", DEADLINE, || async {
        let response = reqwest::get(format!("http://{private}/metrics"))
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let text = scraped.text().await.expect("text");
    assert!(text.contains("http_requests_total"), "{text}");
    let elsewhere = reqwest::get(format!("http://{private}/api/v1/sessions"))
        .await
        .expect("request");
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
}
