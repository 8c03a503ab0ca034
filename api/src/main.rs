//! The `api` binary: configuration and telemetry, then [`api::run`].

use api::config::ApiConfig;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::config::load_dotenv();
    let config = ApiConfig::parse();
    if config.print_openapi {
        println!("{}", api::routes::docs::openapi_document()?);
        return Ok(());
    }
    if let Err(why) = config.validate() {
        eprintln!("error: {why}");
        std::process::exit(2);
    }
    shared::telemetry::init(&config.telemetry);
    tracing::info!(database = %config.database.database_url, "starting api");
    let listener = tokio::net::TcpListener::bind(config.api_addr).await?;
    api::run(config, listener, shared::shutdown::signal()).await
}
