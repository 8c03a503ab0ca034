//! The api's settings: one `clap` parse of the environment (and `.env`).

use clap::Parser;
use shared::config::{DatabaseConfig, Secret, TelemetryConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// Every setting of the `api` binary; `api --help` lists them with their defaults.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version, about = "The interview service's HTTP api")]
pub struct ApiConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,

    /// HS256 key that signs access tokens. Unset: a random key per process, with a loud
    /// warning (tokens then die with the process and do not work across replicas).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "JWT_TTL_SECS", default_value_t = 3600)]
    pub jwt_ttl_secs: u64,

    /// generate-question calls allowed per user and minute, across all replicas (0: off).
    #[arg(long, env = "RATE_LIMIT_GENERATE_PER_MINUTE", default_value_t = 30)]
    pub rate_limit_generate_per_minute: u32,

    /// LLM attempts a job may take in all; recorded on each job so the queue never runs
    /// it more often than the worker's retry budget. Keep it equal to the workers'.
    #[arg(long, env = "LLM_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub llm_max_attempts: u32,

    /// Seconds a request may take before it is answered 503 (long polls are bounded
    /// separately, by their `wait`).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Print the OpenAPI document and exit (for validators and client generators).
    #[arg(long)]
    pub print_openapi: bool,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl ApiConfig {
    /// Settings for tests: the given database, defaults elsewhere, a fixed JWT secret.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: Some(Secret::new("test-secret-that-is-long-enough-for-hs256")),
            jwt_ttl_secs: 3600,
            rate_limit_generate_per_minute: 0,
            llm_max_attempts: 5,
            request_timeout_secs: 10,
            print_openapi: false,
            database: DatabaseConfig::for_url(database_url),
            telemetry: TelemetryConfig {
                rust_log: "info".into(),
                log_format: Default::default(),
            },
        }
    }

    /// How long an ordinary request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}
