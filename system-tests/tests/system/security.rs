//! Unsafe settings, tried on the real binary: the api refuses to start on a signing key
//! anyone could guess, and says which setting is wrong.

use sqlx::PgPool;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::client::SignedIn;
use testkit::fixtures::migrated;
use testkit::postgres::database_url;
use testkit::process::{binary_dir, free_addr};

#[sqlx::test(migrations = false)]
async fn the_api_refuses_a_weak_jwt_secret_naming_it(pool: PgPool) {
    migrated(&pool).await;
    let db = database_url(&pool);
    for weak in [
        "",
        "short-secret",
        "REPLACE_WITH_OUTPUT_OF_openssl_rand_hex_32",
        "change-me-to-a-long-random-secret",
    ] {
        let mut child = Command::new(binary_dir().join("api"))
            .env_clear()
            .env("DATABASE_URL", &db)
            .env("API_ADDR", free_addr())
            .env("JWT_SECRET", weak)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the api");
        let status = testkit::eventually(
            format_args!("the api to exit on JWT_SECRET={weak:?}"),
            Duration::from_secs(30),
            || {
                let exited = child.try_wait().expect("wait");
                async move { exited }
            },
        )
        .await;
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{weak:?} was accepted");
        assert!(stderr.contains("JWT_SECRET"), "{weak:?}: {stderr}");
        assert!(
            weak.is_empty() || !stderr.contains(weak),
            "the secret was echoed: {stderr}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn credentials_in_the_models_url_reach_neither_the_log_nor_the_queue(pool: PgPool) {
    migrated(&pool).await;
    // Nothing listens there once the listener is dropped: every call fails to connect,
    // and the HTTP client's error names the URL. reqwest drops the user info from it by
    // itself; a token in the path (as some gateways take it) it keeps.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let secret = "s3cret-proxy-pass";
    let worker = testkit::process::Process::start(
        "worker",
        "url-credentials",
        &[
            ("DATABASE_URL", database_url(&pool)),
            (
                "OPENAI_BASE_URL",
                format!("http://proxyuser:{secret}@127.0.0.1:{port}/gateway/{secret}/v1"),
            ),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("LLM_BACKOFF_BASE_MS", "10".into()),
            ("LLM_BACKOFF_MAX_MS", "50".into()),
        ],
    )
    .await;
    let (user, session) = testkit::fixtures::session(&pool, 1).await;
    let op = testkit::fixtures::enqueue(&pool, user, session, 3).await;
    let done = testkit::fixtures::finished(&pool, op).await;
    assert_eq!(done.status.as_str(), "failed");
    let logs = worker.logs();
    assert!(
        logs.contains("connection_error"),
        "the calls failed as expected:\n{logs}"
    );
    assert!(
        !logs.contains(secret),
        "the log holds the URL's secret:\n{logs}"
    );
    let results: Vec<String> =
        sqlx::query_scalar("SELECT coalesce(last_result::text, '') FROM apalis.jobs")
            .fetch_all(&pool)
            .await
            .expect("jobs");
    assert!(results.iter().all(|r| !r.contains(secret)), "{results:?}");
}

/// The api's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

#[sqlx::test(migrations = false)]
async fn a_full_page_of_the_longest_answers_keeps_the_api_small(pool: PgPool) {
    migrated(&pool).await;
    let api = testkit::process::Process::start(
        "api",
        "page-memory",
        &[
            ("DATABASE_URL", database_url(&pool)),
            ("MIGRATE", "false".into()),
            ("JWT_SECRET", "page-memory-test-signing-key-32-bytes".into()),
            ("ANSWERS_PER_MINUTE", "0".into()),
        ],
    )
    .await;
    let user = SignedIn::register(&api.addr, "ada@example.com")
        .await
        .expect("sign up");
    let posting = user.job_posting().await.expect("posting");
    let session = user.session(&posting).await.expect("session");
    // The largest answers the defaults take: 5,000 four-byte characters (the most
    // bytes stored) and 5,000 control characters (the most bytes of JSON, six each).
    let widest = "\u{1F600}".repeat(5_000);
    let most_escaped = format!("x{}", "\u{1}".repeat(4_999));
    for n in 0..200 {
        let content = if n % 2 == 0 { &widest } else { &most_escaped };
        user.send(
            reqwest::Method::POST,
            &format!("/sessions/{session}/answers"),
            serde_json::json!({ "content": content }),
        )
        .await
        .expect("an answer at the limit is taken");
    }
    let url = format!("{}/sessions/{session}/messages?limit=200", user.base);
    for _round in 0..3 {
        let reads = (0..4).map(|_| testkit::client::get_json(&user.http, &url, &user.token));
        for page in futures::future::join_all(reads).await {
            assert_eq!(page["total"], 200, "a full page");
            assert_eq!(page["items"].as_array().map(Vec::len), Some(200));
        }
    }
    let peak = peak_rss_mib(api.pid());
    println!("api peak RSS after 3 × 4 page reads of 200 of the longest answers: {peak:.0} MiB");
    assert!(peak <= 160.0, "the api peaked at {peak:.0} MiB");
}

#[sqlx::test(migrations = false)]
async fn no_secret_of_a_full_run_reaches_a_log_or_a_stored_error(pool: PgPool) {
    use reqwest::StatusCode;
    use serde_json::json;
    migrated(&pool).await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let secret = |what: &str| format!("{what}-{tag}");
    let (jwt, db_password, api_key, ops_token) = (
        secret("jwt-signing-key"),
        secret("db-pass"),
        secret("sk-live"),
        secret("ops-token"),
    );
    let (password, wrong_password, forged) = (
        secret("user-pass"),
        secret("wrong-pass"),
        secret("forged.token"),
    );
    let plain_url = database_url(&pool);
    let with_userinfo =
        plain_url.replacen("://postgres@", &format!("://postgres:{db_password}@"), 1);
    assert_ne!(with_userinfo, plain_url, "the password is in the URL");
    let with_query = format!("{plain_url}?password={db_password}");
    // The model fails once (its error quoted back), then answers.
    let model = wiremock::MockServer::start().await;
    testkit::llm::mount(&model, 1, Some(1), testkit::llm::error(500)).await;
    testkit::llm::mount(
        &model,
        2,
        None,
        testkit::llm::question("Why Rust?", "technical"),
    )
    .await;
    // Every log line there is: debug, for both binaries.
    let api = testkit::process::Process::start(
        "api",
        "secrets",
        &[
            ("DATABASE_URL", with_userinfo),
            ("MIGRATE", "false".into()),
            ("JWT_SECRET", jwt.clone()),
            ("RUST_LOG", "debug".into()),
        ],
    )
    .await;
    let mut env = crate::support::worker_env(
        &pool,
        &model,
        &[
            ("RUST_LOG", "debug"),
            ("OPENAI_API_KEY", &api_key),
            ("OPS_TOKEN", &ops_token),
        ],
    );
    env.push(("DATABASE_URL", with_query));
    let worker = testkit::process::Process::start("worker", "secrets", &env).await;

    // A candidate's whole visit, a wrong password and a forged token included.
    let http = reqwest::Client::new();
    let base = format!("http://{}/api/v1", api.addr);
    let post = |path: &str, body: serde_json::Value| http.post(format!("{base}{path}")).json(&body);
    let credentials = json!({"email": "ada@example.com", "password": password});
    assert!(
        post("/auth/register", credentials.clone())
            .send()
            .await
            .expect("register")
            .status()
            .is_success()
    );
    let wrong = post(
        "/auth/login",
        json!({"email": "ada@example.com", "password": wrong_password}),
    )
    .send()
    .await
    .expect("login");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let login: serde_json::Value = post("/auth/login", credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let user = SignedIn {
        base: base.clone(),
        user_id: String::new(),
        token: token.clone(),
        http: http.clone(),
    };
    let posting = user.job_posting().await.expect("posting");
    let session = user.session(&posting).await.expect("session");
    let op = user
        .send(
            reqwest::Method::POST,
            &format!("/sessions/{session}/generate-question"),
            json!({}),
        )
        .await
        .expect("generate");
    let op_id = op["id"].as_str().expect("operation id").to_owned();
    let done = testkit::eventually("the question", Duration::from_secs(60), || async {
        let read =
            testkit::client::get_json(&http, &format!("{base}/operations/{op_id}?wait=10"), &token)
                .await;
        (read["status"] == "completed").then_some(read)
    })
    .await;
    assert_eq!(done["result"]["question_text"], "Why Rust?");
    user.send(
        reqwest::Method::POST,
        &format!("/sessions/{session}/answers"),
        json!({"content": "Because."}),
    )
    .await
    .expect("answer");
    let refreshed: serde_json::Value = user
        .send(reqwest::Method::POST, "/auth/refresh", json!({}))
        .await
        .expect("refresh");
    let refreshed = refreshed["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let forged_read = http
        .get(format!("{base}/sessions/{session}/messages"))
        .bearer_auth(&forged)
        .send()
        .await
        .expect("forged");
    assert_eq!(forged_read.status(), StatusCode::UNAUTHORIZED);
    let board = http
        .get(format!("http://{}/board", worker.addr))
        .bearer_auth(&ops_token)
        .send()
        .await
        .expect("board");
    assert_eq!(board.status(), StatusCode::OK);

    let logs = format!("{}\n{}", api.logs(), worker.logs());
    assert!(
        logs.contains("DEBUG") || logs.contains("\"debug\""),
        "debug logs were on"
    );
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(last_result::text, '') FROM apalis.jobs
         UNION ALL SELECT coalesce(error_message, '') FROM operations",
    )
    .fetch_all(&pool)
    .await
    .expect("stored errors");
    for (what, value) in [
        ("JWT_SECRET", &jwt),
        ("the database password", &db_password),
        ("OPENAI_API_KEY", &api_key),
        ("OPS_TOKEN", &ops_token),
        ("the user's password", &password),
        ("a wrong password", &wrong_password),
        ("an access token", &token),
        ("a refreshed token", &refreshed),
        ("a forged token", &forged),
    ] {
        assert!(!logs.contains(value.as_str()), "{what} is in a log");
        assert!(
            stored.iter().all(|s| !s.contains(value.as_str())),
            "{what} is stored"
        );
    }
}
