//! The real `api` and `worker` binaries as child processes, for end-to-end, crash and
//! shutdown tests and for the benchmark harness: started on a free port with a clean
//! environment, awaited until `/healthz` answers, killed when dropped.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long a binary may take to answer `/healthz` after it starts (migrations
/// included, on a loaded machine).
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// A running binary; killed when dropped.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    /// `host:port` of its HTTP listener (`API_ADDR` or `WORKER_ADDR`).
    pub addr: String,
    log: PathBuf,
}

/// A free loopback address (`127.0.0.1:port`) for a child process to listen on.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").to_string()
}

/// The directory of the workspace's binaries, beside the running test or harness
/// (`target/<profile>/`, one level up from `deps/` for a test). `cargo test
/// --workspace` builds every binary before any test runs; `cargo build --bins` does
/// when a single crate's tests are run alone.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    let dir = exe.parent().expect("its directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("target/<profile>").to_owned()
    } else {
        dir.to_owned()
    }
}

impl Process {
    /// Starts `name` from `bin_dir`, logging to `log`, with nothing of this process's
    /// environment but `PATH` and `env` (on top of `RUST_LOG=info`, `LOG_FORMAT=json`),
    /// and waits until its `/healthz` answers.
    pub async fn spawn(
        bin_dir: &Path,
        name: &str,
        log: PathBuf,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let binary = bin_dir.join(name);
        if !binary.exists() {
            bail!(
                "no {name} binary at {}: run `cargo build --bins` (or `cargo test --workspace`)",
                binary.display()
            );
        }
        let addr = free_addr();
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let addr_var = if name == "api" {
            "API_ADDR"
        } else {
            "WORKER_ADDR"
        };
        let mut command = Command::new(&binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "json")
            .env(addr_var, &addr)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let process = Self {
            name: name.to_owned(),
            child,
            addr,
            log,
        };
        process.wait_healthy().await?;
        Ok(process)
    }

    /// [`Process::spawn`] for tests: the binary beside the test, a log in the temp
    /// directory named after `tag`; panics (with the log) if it does not come up.
    pub async fn start(name: &str, tag: &str, env: &[(&str, String)]) -> Self {
        shared::tls::install_crypto_provider();
        let log = std::env::temp_dir().join(format!("{name}-{tag}-{}.log", uuid::Uuid::new_v4()));
        match Self::spawn(&binary_dir(), name, log.clone(), env).await {
            Ok(process) => process,
            Err(err) => panic!(
                "{name} did not start: {err:#}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let health = format!("http://{}/healthz", self.addr);
        crate::wait::within(
            format!(
                "{} to answer /healthz (log: {})",
                self.name,
                self.log.display()
            ),
            HEALTHY_WITHIN,
            || async {
                Ok(client
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(()))
            },
        )
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (up to `deadline`) for the exit status; panics past it.
    pub async fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{} did not exit within {deadline:?} of SIGTERM; log: {}",
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
