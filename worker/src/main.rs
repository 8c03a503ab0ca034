//! The `worker` binary: configuration and telemetry, then [`worker::run`].

use clap::Parser;
use worker::config::WorkerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::config::load_dotenv();
    shared::tls::install_crypto_provider();
    let config = WorkerConfig::parse();
    if let Err(why) = config.validate() {
        eprintln!("error: {why}");
        std::process::exit(2);
    }
    let telemetry = shared::telemetry::init(&config.telemetry, "worker");
    tracing::info!(
        version = shared::build::VERSION,
        commit = shared::build::COMMIT,
        database = %config.database.database_url,
        "starting worker"
    );
    let listener = tokio::net::TcpListener::bind(config.worker_addr).await?;
    let worked = worker::run(config, listener, shared::shutdown::signal()).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    worked
}
