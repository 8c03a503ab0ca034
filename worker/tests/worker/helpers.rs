//! A worker running in this process over the test's own database; the fixtures and the
//! fake model's replies come from testkit.

use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::oneshot;
use wiremock::MockServer;
use worker::config::{Provider, WorkerConfig};

pub use testkit::eventually;
pub use testkit::fixtures::*;
pub use testkit::llm::*;

/// Test settings: `configure` adjusts the defaults of [`WorkerConfig::for_tests`].
pub fn config(configure: impl FnOnce(&mut WorkerConfig)) -> WorkerConfig {
    let mut config = WorkerConfig::for_tests("postgres://unused@127.0.0.1/unused");
    configure(&mut config);
    config
}

/// Settings pointing the `openai` provider at a fake server.
pub fn openai_config(
    server: &MockServer,
    configure: impl FnOnce(&mut WorkerConfig),
) -> WorkerConfig {
    config(|c| {
        c.llm_provider = Some(Provider::Openai.into());
        c.openai_base_url = Some(format!("{}/v1", server.uri()));
        c.openai_api_key = Some(shared::config::Secret::new("sk-test-key"));
        configure(c);
    })
}

/// A worker in this process; dropping it (or calling `stop`) shuts it down.
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics_addr: std::net::SocketAddr,
}

impl RunningWorker {
    pub async fn start(pool: &PgPool, config: WorkerConfig) -> Self {
        shared::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics_addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let pool = pool.clone();
        let task = tokio::spawn(async move {
            worker::work(&config, pool, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            stop: Some(stop),
            task,
            metrics_addr,
        }
    }

    /// Its `/metrics`, as Prometheus reads them.
    pub async fn scrape(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    }

    /// Asks it to shut down (SIGTERM, for a binary) without waiting for it to exit.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("worker stops")
            .expect("join")
            .expect("worker ran");
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
