//! The `api` binary: configuration and telemetry, then [`api::run`]; or, as
//! `api migrate`, [`api::migrate::run`].

use api::config::ApiConfig;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    shared::config::load_dotenv();
    if api::migrate::requested() {
        return Ok(api::migrate::run().await);
    }
    let config = ApiConfig::parse();
    if config.print_openapi {
        println!("{}", api::routes::docs::openapi_document()?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Err(why) = config.validate() {
        eprintln!("error: {why}");
        std::process::exit(2);
    }
    let telemetry = shared::telemetry::init(&config.telemetry, "api");
    tracing::info!(
        version = shared::build::VERSION,
        commit = shared::build::COMMIT,
        database = %config.database.database_url,
        "starting api"
    );
    let listener = tokio::net::TcpListener::bind(config.api_addr).await?;
    let served = api::run(config, listener, shared::shutdown::signal()).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    served?;
    Ok(std::process::ExitCode::SUCCESS)
}
