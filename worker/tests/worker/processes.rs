//! The real `api` and `worker` binaries as child processes, for end-to-end, crash and
//! shutdown tests.

use serde_json::{Value, json};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running binary; killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pub addr: String,
    pub log: PathBuf,
}

/// The URL of the test's own database, for the binaries.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let db = pool
        .connect_options()
        .get_database()
        .expect("a database name")
        .to_owned();
    match base.rfind('/') {
        Some(slash) => format!("{}/{db}", &base[..slash]),
        None => panic!("DATABASE_URL has no database part"),
    }
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// The path of a workspace binary. `cargo test --workspace` (the README's test command)
/// builds every binary of the workspace before the tests run; `cargo test -p worker`
/// alone builds only the worker's, hence the hint.
fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_worker")).with_file_name(name);
    assert!(
        path.exists(),
        "no {name} binary at {}: run `cargo build --bin {name}` or `cargo test --workspace`",
        path.display()
    );
    path
}

impl Process {
    /// Starts `name` with `env` (on top of a clean, test-friendly environment) and waits
    /// until its `/healthz` answers.
    pub async fn start(name: &str, tag: &str, env: &[(&str, String)]) -> Self {
        shared::tls::install_crypto_provider();
        let addr = free_addr();
        let log = std::env::temp_dir().join(format!("{name}-{tag}-{}.log", uuid::Uuid::new_v4()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .env(
                if name == "api" {
                    "API_ADDR"
                } else {
                    "WORKER_ADDR"
                },
                &addr,
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn");
        let process = Process {
            name: name.to_owned(),
            child,
            addr,
            log,
        };
        process.wait_healthy().await;
        process
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client
                .get(format!("http://{}/healthz", self.addr))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became healthy; log: {}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (up to `deadline`) for the exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} did not exit within {deadline:?}; log: {}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user registered and signed in through the api at `addr`, with a job posting and
/// one active session: the bearer token and the session id.
pub async fn signed_in_session(
    client: &reqwest::Client,
    addr: &str,
    email: &str,
) -> (String, String) {
    let url = |p: &str| format!("http://{addr}{p}");
    let credentials = json!({"email": email, "password": "long enough"});
    let registered = client
        .post(url("/api/v1/auth/register"))
        .json(&credentials)
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), 201);
    let login: Value = client
        .post(url("/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let posting: Value = client
        .post(url("/api/v1/job-postings"))
        .bearer_auth(&token)
        .json(&json!({"title": "SRE", "description": "Keep it up"}))
        .send()
        .await
        .expect("posting")
        .json()
        .await
        .expect("json");
    let session: Value = client
        .post(url("/api/v1/sessions"))
        .bearer_auth(&token)
        .json(&json!({"job_posting_id": posting["id"]}))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    let id = session["id"].as_str().expect("id").to_owned();
    (token, id)
}
