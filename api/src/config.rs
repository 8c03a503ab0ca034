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

    /// Lifetime of an access token, in seconds (60 to 2,592,000, which is 30 days).
    #[arg(long, env = "JWT_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub jwt_ttl_secs: u64,

    /// generate-question calls allowed per user and minute, across all replicas (0: off;
    /// at most 100,000).
    #[arg(long, env = "RATE_LIMIT_GENERATE_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rate_limit_generate_per_minute: u32,

    /// Unfinished operations one session may hold (0: off; at most 10,000). A session's
    /// questions are generated one at a time, so this bounds how long the last one
    /// waits: MAX_PENDING_PER_SESSION × a job's worst case.
    #[arg(long, env = "MAX_PENDING_PER_SESSION", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub max_pending_per_session: u32,

    /// LLM attempts a job may take in all; recorded on each job so the queue never runs
    /// it more often than the worker's retry budget. Keep it equal to the workers'.
    #[arg(long, env = "LLM_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub llm_max_attempts: u32,

    /// Seconds a request may take before it is answered 503, 1 to 300 (long polls get
    /// their `wait` on top).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
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
            max_pending_per_session: 20,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_their_range_are_refused_by_name() {
        for args in [
            ["api", "--jwt-ttl-secs", "59"],
            ["api", "--jwt-ttl-secs", "2592001"],
            ["api", "--rate-limit-generate-per-minute", "100001"],
            ["api", "--llm-max-attempts", "0"],
            ["api", "--request-timeout-secs", "0"],
            ["api", "--request-timeout-secs", "301"],
            ["api", "--database-max-connections", "1"],
            ["api", "--database-acquire-timeout-secs", "0"],
        ] {
            let err = ApiConfig::try_parse_from(args).expect_err("out of range");
            assert!(err.to_string().contains(&args[1][2..]), "{err}");
        }
    }

    #[test]
    fn the_defaults_parse_and_a_rate_limit_of_zero_is_allowed() {
        let config = ApiConfig::try_parse_from(["api"]).expect("defaults parse");
        assert_eq!(config.jwt_ttl_secs, 3600);
        assert_eq!(config.rate_limit_generate_per_minute, 30);
        assert_eq!(config.request_timeout(), Duration::from_secs(10));
        let off = ApiConfig::try_parse_from(["api", "--rate-limit-generate-per-minute", "0"])
            .expect("0 turns the limit off");
        assert_eq!(off.rate_limit_generate_per_minute, 0);
    }
}
