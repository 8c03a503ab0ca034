//! The question-generation worker: takes `question_generation` jobs from PostgreSQL
//! (apalis), asks the LLM, and commits each question exactly once.
//!
//! Layout:
//! - [`config`]: every setting, from the environment, and the derived heartbeat window;
//! - [`queue`]: apalis wiring (storage, layers, monitor);
//! - [`job`]: one attempt, from claim to the one commit transaction;
//! - [`llm`]: the provider trait, `openai` and `offline`;
//! - [`limits`]: the provider's limits: the cap across workers, waits that cost no
//!   attempt, the breaker;
//! - [`prompt`], [`output`]: what the LLM is asked, and the strict reading of its reply;
//! - [`upkeep`]: the heartbeat, the reconciler and retention, beside the jobs;
//! - [`intake`]: the operator's switch that pauses claims, as the heartbeat applies it;
//! - [`server`]: `/healthz`, `/readyz` ([`readiness`]) and `/metrics`; [`series`]: the
//!   worker's own metric series;
//! - [`board`]: the queue board for operators, beside them when `OPS_TOKEN` is set.

pub mod board;
pub mod config;
pub mod intake;
pub mod job;
pub mod limits;
pub mod llm;
pub mod output;
pub mod prompt;
pub mod queue;
pub mod readiness;
pub mod series;
pub mod server;
pub mod upkeep;

use crate::config::{Provider, WorkerConfig};
use crate::job::JobState;
use crate::limits::Limits;
use crate::llm::Llm;
use crate::llm::openai::{OpenAiSettings, OpenAiWriter};
use crate::readiness::Readiness;
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs the worker until `shutdown` completes: connects, migrates (unless
/// `MIGRATE=false`; then it waits until this release's migrations are applied), serves
/// `/healthz`, `/readyz` and `/metrics` on `listener`, and works the queue. On shutdown it stops taking jobs and finishes those in flight, up to
/// `WORKER_SHUTDOWN_SECS`.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = shared::db::connect(&config.database).await?;
    work(&config, pool, listener, shutdown).await
}

/// Works the queue on an existing (migrated) pool: what [`run`] does after start-up, and
/// what tests call with their own database.
pub async fn work(
    config: &WorkerConfig,
    pool: PgPool,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let llm = llm(config)?;
    tracing::info!(provider = ?config.provider(), model = %llm::Writer::model(&llm), "LLM provider ready");
    let metrics = shared::metrics::install_recorder();
    series::register();
    let state = Arc::new(JobState {
        pool: pool.clone(),
        llm,
        limits: Limits::new(config.limit_settings()),
        max_earlier_questions: i64::from(config.prompt_max_earlier_questions),
        intake: intake::Intake::default(),
    });

    let readiness = Arc::new(Readiness::new(pool.clone(), config.heartbeat_window()));
    // Shutdown, as a flag every waiter can watch: readiness turns 503 at once, the
    // wait for the schema ends, and the queue drains.
    let (stopping, mut stop_requested) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let readiness = Arc::clone(&readiness);
        async move {
            shutdown.await;
            readiness.drain();
            let _ = stopping.send(true);
        }
    });

    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_addr = config.telemetry.metrics_addr;
    let ops = server::router(
        metrics.clone(),
        metrics_addr.is_none(),
        Arc::clone(&readiness),
    )
    .merge(board::router(pool.clone(), config));
    let server = tokio::spawn(shared::serve::serve(
        listener,
        ops,
        server::CONNECTION_LIMITS,
        async {
            let _ = server_stopped.await;
        },
    ));

    if !config.database.migrate {
        tokio::select! {
            () = readiness.wait_for_schema() => {}
            () = stopped(&mut stop_requested) => {
                let _ = server_stop.send(());
                let _ = server.await;
                tracing::info!("worker stopped before its migrations were applied");
                return Ok(());
            }
        }
    }

    let mut upkeep = vec![
        tokio::spawn(shared::metrics::refresh_gauges_every(
            pool.clone(),
            shared::metrics::GAUGE_REFRESH,
            Some(series::database_gauges(config.operation_worst_case())),
        )),
        tokio::spawn(upkeep::heartbeat(
            Arc::clone(&state),
            Arc::clone(&readiness),
            config.heartbeat_interval(),
            config.heartbeat_window(),
        )),
        tokio::spawn(upkeep::reconciler(
            pool.clone(),
            config.operation_worst_case(),
        )),
        tokio::spawn(upkeep::retention(pool.clone(), config.job_retention_days)),
        tokio::spawn(upkeep::operation_retention(
            pool.clone(),
            config.operation_retention_days,
        )),
    ];
    if let Some(addr) = metrics_addr {
        let metrics_listener = TcpListener::bind(addr).await?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "worker metrics listening");
        let router = server::metrics_router(metrics);
        upkeep.push(tokio::spawn(shared::serve::serve(
            metrics_listener,
            router,
            server::CONNECTION_LIMITS,
            std::future::pending(),
        )));
    }
    let signal = async move {
        stopped(&mut stop_requested).await;
        tracing::info!("shutdown requested: taking no new jobs, finishing those in flight");
        Ok(())
    };
    // The heartbeat goes on while jobs in flight drain, so none is taken over.
    let queue_pool = shared::db::queue_pool(&pool);
    let outcome = queue::monitor(config, state, queue_pool)
        .run_with_signal(signal)
        .await;
    for task in upkeep {
        task.abort();
    }
    let _ = server_stop.send(());
    let _ = server.await;
    outcome?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Waits until shutdown is asked for (or the flag's sender is gone).
async fn stopped(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// The configured LLM provider.
pub fn llm(config: &WorkerConfig) -> anyhow::Result<Llm> {
    Ok(match config.provider() {
        Provider::Offline => {
            tracing::warn!(
                "LLM_PROVIDER=offline: questions come from the built-in generator, not a language model"
            );
            Llm::Offline(llm::offline::OfflineWriter {
                prices: config.llm_prices(),
            })
        }
        Provider::Openai => Llm::OpenAi(Box::new(OpenAiWriter::new(OpenAiSettings {
            base_url: config.openai_base_url().map(str::to_owned),
            api_key: config.openai_api_key().cloned(),
            model: config.llm_model.clone(),
            timeout: config.llm_timeout(),
            format: config.llm_response_format,
            prices: config.llm_prices(),
        })?)),
    })
}
