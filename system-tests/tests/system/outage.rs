//! PostgreSQL restarted under load, on a throwaway cluster this test owns (initdb in a
//! temporary directory, a free port), so it can stop and start it at will.

use serde_json::Value;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::client::get_json;
use testkit::client::signed_in_session;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::process::Process;

/// A PostgreSQL server of our own; stopped and removed when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(program));
            command
        } else {
            Command::new(self.bin.join(program))
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().expect(program);
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn create() -> Self {
        let root = std::env::temp_dir().join(format!("pg-outage-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("temp dir");
        // PostgreSQL refuses to run as root.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&root)
                .status()
                .expect("chown");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let cluster = Cluster {
            bin: testkit::postgres::bin_dir()
                .expect("PostgreSQL server programs (initdb, pg_ctl) are installed"),
            data: root.join("data"),
            port,
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        cluster.start();
        cluster
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            path(self.data.parent().expect("root"))
        );
        let log = self.data.parent().expect("root").join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "fast", "-w", "stop"],
        );
    }

    /// A crash, not a stop: no checkpoint, so what was committed without waiting for
    /// its WAL flush may be lost, and the next start runs crash recovery.
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&self.data), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(self.data.parent().expect("root"));
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A migrated cluster of our own, a pool on it, and a fake model answering after
/// `model_ms`.
async fn cluster_with_model(model_ms: u64) -> (Cluster, PgPool, wiremock::MockServer) {
    shared::tls::install_crypto_provider();
    let cluster = Cluster::create();
    let pool = PgPool::connect(&cluster.url()).await.expect("connect");
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Still here?", "technical").set_delay(Duration::from_millis(model_ms)),
    )
    .await;
    (cluster, pool, server)
}

/// A worker binary on the cluster and the fake model, with short backoffs.
async fn worker(
    tag: &str,
    db: String,
    server: &wiremock::MockServer,
    heartbeat_secs: u32,
) -> Process {
    Process::start(
        "worker",
        tag,
        &[
            ("DATABASE_URL", db),
            ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
            ("OPENAI_API_KEY", "sk-test".into()),
            ("LLM_BACKOFF_BASE_MS", "50".into()),
            ("LLM_BACKOFF_MAX_MS", "500".into()),
            ("WORKER_HEARTBEAT_SECS", heartbeat_secs.to_string()),
        ],
    )
    .await
}

/// The database outage as a client and an operator see it: 503s (never a 500, never a
/// hang), `/readyz` 503, and afterwards every accepted request completes, with the
/// workers and the long-poll listener back by themselves.
#[tokio::test]
async fn a_postgresql_restart_under_load_gives_503s_and_loses_no_accepted_request() {
    let (cluster, _pool, server) = cluster_with_model(50).await;

    let db = cluster.url();
    let api = Process::start(
        "api",
        "outage",
        &[
            ("DATABASE_URL", db.clone()),
            ("JWT_SECRET", "outage-test-signing-key-32-bytes".into()),
            ("RATE_LIMIT_GENERATE_PER_MINUTE", "0".into()),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "2".into()),
            // The load goes on one session: this test is about the outage, not the
            // per-session cap. Its 160 operations then run one after another.
            ("MAX_PENDING_PER_SESSION", "0".into()),
        ],
    )
    .await;
    let _worker = worker("outage", db, &server, 5).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let url = |p: &str| format!("http://{}{p}", api.addr);
    let status_of = |p: &'static str| {
        let request = client.get(url(p));
        async move { request.send().await.expect(p).status() }
    };
    let (token, session_id) = signed_in_session(&api.addr, "o@example.com").await;
    let generate = url(&format!("/api/v1/sessions/{session_id}/generate-question"));

    let mut accepted: Vec<uuid::Uuid> = Vec::new();
    let send = |client: &reqwest::Client| client.post(&generate).bearer_auth(&token).send();
    for _ in 0..80 {
        let response = send(&client).await.expect("request");
        assert_eq!(response.status(), 202);
        accepted.push(
            response.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
        );
    }

    cluster.stop();
    let started = Instant::now();
    let during = futures::future::join_all((0..40).map(|_| send(&client))).await;
    for response in during {
        let response = response.expect("an answer, not a hang");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("contract body");
        assert_eq!(status, 503, "during the outage: {body}");
        assert_eq!(body["detail"]["code"], "SERVICE_UNAVAILABLE");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503s took {:?}",
        started.elapsed()
    );
    assert_eq!(status_of("/readyz").await, 503);
    assert_eq!(status_of("/healthz").await, 200);
    // The long-poll listener lost its connection, and says so.
    crate::support::scrape_showing(&api.addr, &[("long_poll_listener_connected", 0.0)]).await;
    cluster.start();

    // Back: requests are accepted again as soon as the pool reconnects.
    // 80 before, 40 refused during, 80 after: 200 requests. Only a 503 ends a probe, so
    // the deadline bounds the refusals and never a run of accepted requests.
    let after = std::cell::RefCell::new(Vec::new());
    testkit::eventually(
        "160 accepted requests (still 503 a minute after the restart)",
        Duration::from_secs(60),
        || async {
            while accepted.len() + after.borrow().len() < 160 {
                let response = send(&client).await.expect("request");
                match response.status().as_u16() {
                    202 => {
                        let id: uuid::Uuid = response.json::<Value>().await.expect("json")["id"]
                            .as_str()
                            .expect("id")
                            .parse()
                            .expect("uuid");
                        after.borrow_mut().push(id);
                    }
                    503 => return None,
                    other => panic!(
                        "unexpected {other} after the restart: {}",
                        response.text().await.unwrap_or_default()
                    ),
                }
            }
            Some(())
        },
    )
    .await;
    accepted.extend(after.into_inner());
    assert_eq!(status_of("/readyz").await, 200);
    crate::support::scrape_showing(&api.addr, &[("long_poll_listener_connected", 1.0)]).await;
    let ready: Value = client
        .get(url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready["listener"], "connected", "{ready}");

    // The long-poll listener is back too: a poll asleep on a fresh operation is woken by
    // its commit (the fake LLM takes 50 ms; without a wake-up it would sleep 25 s). The
    // operation is on a NEW session (of another user): a session's questions run one at
    // a time, so on the loaded session it would wait behind everything accepted above.
    let (fresh_token, fresh_session) = signed_in_session(&api.addr, "o2@example.com").await;
    let op: Value = client
        .post(url(&format!(
            "/api/v1/sessions/{fresh_session}/generate-question"
        )))
        .bearer_auth(&fresh_token)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let id = op["id"].as_str().expect("id").to_owned();
    accepted.push(id.parse().expect("uuid"));
    let started = Instant::now();
    let polled: Value = get_json(
        &client,
        &url(&format!("/api/v1/operations/{id}?wait=25")),
        &fresh_token,
    )
    .await;
    assert_eq!(polled["status"], "completed", "{polled}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the long poll was not woken: {:?}",
        started.elapsed()
    );

    // Every request that got a 202 completes: the workers reconnected by themselves.
    let pool = PgPool::connect(&cluster.url()).await.expect("reconnect");
    for id in &accepted {
        assert_eq!(
            finished(&pool, OperationId(*id)).await.status.as_str(),
            "completed"
        );
    }
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM session_messages")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(messages, accepted.len() as i64);
}

/// A crash of PostgreSQL (not a clean stop) while jobs are between their start and
/// their commit. What commits without waiting for a WAL flush (apalis' claims and
/// acknowledgements, our `processing` marks: docs/DESIGN.md, step 3) may be lost with
/// it; what must hold: every job still ends, each question is stored and counted
/// once, and a lost mark costs at most one attempt more than the budget.
#[tokio::test]
async fn a_postgresql_crash_mid_job_loses_no_job_and_counts_no_question_twice() {
    let (cluster, pool, server) = cluster_with_model(600).await;
    let fixtures = sessions(&pool, 100).await;
    let ops = enqueue_on(&pool, &fixtures, 2).await;
    let _worker = worker("crash", cluster.url(), &server, 3).await;
    // The worst moment: some questions committed, others marked and with the model.
    until_operations(&pool, "completed", 20).await;
    until_operations(&pool, "processing", 10).await;
    cluster.crash();
    pool.close().await;
    cluster.start();

    let pool = PgPool::connect(&cluster.url()).await.expect("reconnect");
    for id in &ops {
        let op = finished(&pool, *id).await;
        assert_eq!(op.status.as_str(), "completed", "{:?}", op.error_message);
    }
    assert_consistent(&pool).await;
    let (most, retried, messages): (i64, i64, i64) = sqlx::query_as(
        "SELECT max(attempts)::bigint, count(*) FILTER (WHERE attempts > 1),
                (SELECT count(*) FROM session_messages)
         FROM operations",
    )
    .fetch_one(&pool)
    .await
    .expect("attempts and messages");
    eprintln!("after the crash: {retried} operations took more than one attempt, at most {most}");
    assert!(
        most <= 6,
        "an operation took {most} attempts (budget 5, +1 for a lost mark)"
    );
    assert_eq!(messages, ops.len() as i64);
}
