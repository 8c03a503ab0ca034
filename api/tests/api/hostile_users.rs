//! What one signed-up user, or one client with many connections, could do to the api
//! and no longer can: answers without end, junk logins that empty the throttles, every
//! connection or every long poll held by one client (issue 23; SECURITY.md's table).

use crate::generate::hold_the_window;
use crate::helpers::{TestApp, assert_invalid, assert_limited_for_the_minute};
use crate::operations::pending_operation;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous: these are safety nets on 2 loaded cores, not measurements.
const DEADLINE: Duration = Duration::from_secs(30);

async fn answer(
    app: &TestApp,
    user: &crate::helpers::User,
    session: &str,
    content: &str,
) -> reqwest::Response {
    app.post(
        &format!("/api/v1/sessions/{session}/answers"),
        Some(user),
        json!({ "content": content }),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn an_answer_longer_than_answer_max_chars_is_refused_and_stores_nothing(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.answer_max_chars = 50).await;
    let user = app.register("ada@example.com").await;
    let session = app.create_session(&user).await;
    // Characters, not bytes: 50 four-byte characters are taken.
    let longest = "\u{1F600}".repeat(50);
    assert_eq!(
        answer(&app, &user, &session, &longest).await.status(),
        StatusCode::CREATED
    );
    let body = assert_invalid(answer(&app, &user, &session, &format!("{longest}a")).await).await;
    assert!(
        body["detail"]["fields"]["content"]
            .as_str()
            .is_some_and(|m| m.contains("at most 50 characters")),
        "{body}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM session_messages").await,
        1,
        "the refused answer left nothing"
    );
}

#[sqlx::test(migrations = false)]
async fn answers_are_limited_per_user_across_replicas(pool: PgPool) {
    // Two api processes on one database: the limit is shared.
    let one = TestApp::spawn_with(pool.clone(), |c| c.answers_per_minute = 3).await;
    let two = TestApp::spawn_with(pool, |c| c.answers_per_minute = 3).await;
    let user = one.register("ada@example.com").await;
    let session = one.create_session(&user).await;
    let mut statuses = Vec::new();
    for app in [&one, &two, &one, &two, &one] {
        hold_the_window(&one.pool, &user.user_id, "answer").await;
        let response = answer(app, &user, &session, "An answer.").await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_limited_for_the_minute(response).await;
        }
    }
    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::CREATED,
            S::CREATED,
            S::CREATED,
            S::TOO_MANY_REQUESTS,
            S::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(one.count("SELECT count(*) FROM session_messages").await, 3);
    // Another user has a limit of their own.
    let grace = one.register("grace@example.com").await;
    let theirs = one.create_session(&grace).await;
    assert_eq!(
        answer(&two, &grace, &theirs, "Mine.").await.status(),
        StatusCode::CREATED
    );
}

#[sqlx::test(migrations = false)]
async fn logins_refused_as_busy_leave_no_key_in_the_throttles(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.password_hash_concurrency = Some(1);
        c.login_attempts_per_minute = 10;
    })
    .await;
    // The one hashing slot is taken: every login is refused as busy...
    let slot = app.guards.hashing.slot().expect("the only slot");
    let client = Client::new();
    for n in 0..200 {
        let response = client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": format!("junk{n}@example.com"), "password": "whatever"}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    // ...and none of them left a key: junk cannot fill the throttles this way.
    assert_eq!(app.guards.failed_logins_by_account.keys(), 0);
    assert_eq!(app.guards.failed_logins_by_address.keys(), 0);
    drop(slot);
    let wrong = client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "junk0@example.com", "password": "whatever"}))
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.guards.failed_logins_by_account.keys(), 1);
}

/// A connection from `ip` that sends half a request's headers, then nothing.
async fn hold_from(ip: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind a loopback address");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: held\r\nX-Held: ")
        .await
        .expect("write");
    stream
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address reaches us).
fn client_from(ip: [u8; 4]) -> Client {
    Client::builder()
        .local_address(IpAddr::from(ip))
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

#[sqlx::test(migrations = false)]
async fn one_address_cannot_hold_every_connection(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.max_connections = 8;
        c.max_connections_per_address = Some(3);
        c.header_read_timeout_secs = 60;
        c.trusted_proxies = vec![Some("127.0.0.9/32".parse().expect("net"))];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hold_from([127, 0, 0, 1], app.addr).await);
    }
    // A fourth connection from the same address is answered 503 and closed...
    let mut fourth = hold_from([127, 0, 0, 1], app.addr).await;
    fourth
        .write_all(b"x\r\n\r\n")
        .await
        .expect("finish the headers");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, fourth.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("a body"))
        .expect("the contract's error body");
    assert_eq!(body["detail"]["code"], "SERVICE_UNAVAILABLE");
    // ...while another address is served at once, though the first holds its three.
    let other = client_from([127, 0, 0, 2])
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(other.status(), StatusCode::OK);
    // Refused connections that never send a byte do not fill the global bound
    // either: 20 of them, and another address is still served at once (with the
    // 60 s header timeout, it would otherwise wait for them).
    let mut silent = Vec::new();
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        silent.push(socket.connect(app.addr).await.expect("connect"));
    }
    let still = client_from([127, 0, 0, 3])
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(still.status(), StatusCode::OK);
    // A trusted proxy carries many clients: its connections are not counted.
    let mut proxied = Vec::new();
    for _ in 0..4 {
        proxied.push(hold_from([127, 0, 0, 9], app.addr).await);
    }
    let through_proxy = client_from([127, 0, 0, 9])
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("served");
    assert_eq!(through_proxy.status(), StatusCode::OK);
    drop(held);
    // Each refusal is counted for the operator (at least these: the recorder is the
    // process's, shared with the other tests).
    let refused = metric(&app, r#"connections_refused_total{reason="per_address"}"#).await;
    assert!(refused >= 21.0, "{refused}");
}

/// The value of one series of the api's `/metrics`.
async fn metric(app: &TestApp, series: &str) -> f64 {
    let scraped = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{scraped}"))
}

#[sqlx::test(migrations = false)]
async fn one_user_cannot_hold_every_long_poll(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| {
        c.max_long_polls = 8;
        c.max_long_polls_per_user = Some(2);
    })
    .await;
    let (ada, id) = pending_operation(&app).await;
    let poll = |user: &crate::helpers::User, id: &str, wait: u64| {
        app.request(
            Method::GET,
            &format!("/api/v1/operations/{id}?wait={wait}"),
            Some(user),
        )
        .send()
    };
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(poll(&ada, &id, 30))).collect();
    let permits = app.guards.long_polls.clone();
    eventually("ada's two polls to wait", DEADLINE, || async {
        (permits.available_permits() == 6).then_some(())
    })
    .await;
    // Ada's third answers at once, with the state and Retry-After...
    let third = poll(&ada, &id, 30).await.expect("third");
    assert_eq!(third.status(), StatusCode::OK);
    assert!(third.headers().get("retry-after").is_some());
    assert_eq!(
        third.json::<Value>().await.expect("json")["status"],
        "pending"
    );
    assert_eq!(permits.available_permits(), 6, "it took no global permit");
    // ...and another user's poll still waits: it holds a permit while in flight.
    let grace = app.register("grace@example.com").await;
    let session = app.create_session(&grace).await;
    let theirs = crate::helpers::id_of(app.generate(&grace, &session).await).await;
    let waiting = tokio::spawn(poll(&grace, &theirs, 30));
    eventually("grace's poll to wait", DEADLINE, || async {
        (permits.available_permits() == 5).then_some(())
    })
    .await;
    let shed = metric(&app, r#"long_polls_shed_total{bound="per_user"}"#).await;
    assert!(shed >= 1.0, "{shed}");
    for poll in held {
        poll.abort();
    }
    waiting.abort();
}
