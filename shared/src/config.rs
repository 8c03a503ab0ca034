//! Settings common to both binaries, read once at start from the environment.
//!
//! Each binary composes these with its own settings into one `clap` parser, so
//! `--help` lists every variable with its default and a bad value fails with the
//! variable's name. [`load_dotenv`] lets a `.env` file in the working directory fill in
//! what the environment leaves unset.

use clap::{Args, ValueEnum};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Reads `.env` from the working directory, if there is one; real environment
/// variables win over it.
pub fn load_dotenv() {
    // A missing file is the normal case; a malformed one is worth a word on stderr
    // (telemetry is not up yet).
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        eprintln!("warning: ignoring .env: {err}");
    }
}

/// How to reach PostgreSQL and how much of it to use.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/interviewer"
    )]
    pub database_url: DatabaseUrl,

    /// Connections this process keeps at most, 2 to 1,000: one is held for good by a
    /// listener (small pools are faster here; see docs/APALIS.md).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub database_max_connections: u32,

    /// Seconds to wait for a pooled connection before answering 503 (1 to 300).
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub database_acquire_timeout_secs: u64,

    /// Apply pending migrations at start (false to leave the schema to a separate step).
    #[arg(long, env = "MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

impl DatabaseConfig {
    /// Settings for `url` with the defaults above, for tests and tools.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            database_url: DatabaseUrl(url.into()),
            database_max_connections: 10,
            database_acquire_timeout_secs: 3,
            migrate: true,
        }
    }

    /// How long a request may wait for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.database_acquire_timeout_secs)
    }
}

/// A PostgreSQL URL whose `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The full URL, password included: for connecting, never for logging.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self(s.to_owned()))
        } else {
            Err("expected a postgres:// or postgresql:// URL".to_owned())
        }
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with its secrets replaced by `***`: the password of its user info
    /// (`scheme://user:***@host`), and the value of every query parameter whose name
    /// holds `password` (`?password=`, `sslpassword=`), which libpq accepts as well.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (base, query) = match self.0.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (self.0.as_str(), None),
        };
        f.write_str(&without_password(base))?;
        let Some(query) = query else {
            return Ok(());
        };
        f.write_str("?")?;
        for (n, pair) in query.split('&').enumerate() {
            if n > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    write!(f, "{key}=***")?
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// `scheme://user:password@host/…` with the password as `***` (the user info ends at
/// the authority's last `@`, before the path).
fn without_password(base: &str) -> String {
    let Some(scheme_end) = base.find("://").map(|at| at + 3) else {
        return base.to_owned();
    };
    let rest = &base[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority
        .rfind('@')
        .and_then(|at| Some((at, authority[..at].split_once(':')?.0)))
    {
        Some((at, user)) => format!("{}{user}:***{}", &base[..scheme_end], &rest[at..]),
        None => base.to_owned(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A secret string (a signing key, an API key) that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: pass it straight to what needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,

    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A private address for `/metrics` (e.g. `0.0.0.0:9464`, reachable by Prometheus
    /// but not published). When set, `/metrics` is served there only, and the public
    /// listener answers it 404. Unset, `/metrics` stays on the public listener.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Where traces go, over OTLP (e.g. `http://collector:4318` for http/protobuf,
    /// `http://collector:4317` for grpc). Unset (and no `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`):
    /// no trace is exported, and nothing of OpenTelemetry runs.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// The traces' own endpoint, used as it is (the standard's signal-specific
    /// variable); wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,

    /// OTLP's transport: `http/protobuf` or `grpc`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otel_exporter_otlp_protocol: OtlpProtocol,

    /// The `service.name` of this process's spans (default: the binary's name, `api`
    /// or `worker`).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
}

/// OTLP's transports (`OTEL_EXPORTER_OTLP_PROTOCOL`), spelled as the standard spells
/// them. `http/json` is the one standard value not offered: the collectors that take
/// OTLP all take protobuf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "grpc")]
    Grpc,
}

impl TelemetryConfig {
    /// Settings for tests: `info` text logs, metrics on the main listener.
    pub fn for_tests() -> Self {
        Self {
            rust_log: "info".into(),
            log_format: LogFormat::Text,
            metrics_addr: None,
            otel_exporter_otlp_endpoint: None,
            otel_exporter_otlp_traces_endpoint: None,
            otel_exporter_otlp_protocol: OtlpProtocol::HttpProtobuf,
            otel_service_name: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The shared settings alone, as each binary flattens them into its own.
    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        telemetry: TelemetryConfig,
    }

    #[test]
    fn settings_out_of_their_range_are_refused_by_name() {
        for args in [
            ["test", "--database-max-connections", "1"],
            ["test", "--database-max-connections", "1001"],
            ["test", "--database-acquire-timeout-secs", "0"],
            ["test", "--database-acquire-timeout-secs", "301"],
        ] {
            let err = Settings::try_parse_from(args).expect_err("out of range");
            assert!(err.to_string().contains(&args[1][2..]), "{err}");
        }
        let defaults = Settings::try_parse_from(["test"]).expect("defaults parse");
        assert_eq!(defaults.database.database_max_connections, 10);
        assert_eq!(defaults.database.acquire_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn database_url_hides_its_password() {
        let url: DatabaseUrl = "postgres://app:s3cret@db:5432/x".parse().expect("valid");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/x");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/x");
    }

    #[test]
    fn database_url_hides_passwords_given_as_query_parameters() {
        let url: DatabaseUrl =
            "postgres://app@db/x?sslmode=require&password=s3cret&sslpassword=k3y%40x"
                .parse()
                .expect("valid");
        assert_eq!(
            url.to_string(),
            "postgres://app@db/x?sslmode=require&password=***&sslpassword=***"
        );
        // An `@` in the query is not the end of the user info.
        let url: DatabaseUrl = "postgres://app:pw@db/x?application_name=a@b&PASSWORD=z"
            .parse()
            .expect("valid");
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db/x?application_name=a@b&PASSWORD=***"
        );
        for printed in [url.to_string(), format!("{url:?}")] {
            assert!(
                !printed.contains("pw@") && !printed.ends_with("=z"),
                "{printed}"
            );
        }
    }

    #[test]
    fn database_url_without_password_prints_as_is() {
        let url: DatabaseUrl = "postgres://postgres@127.0.0.1/db".parse().expect("valid");
        assert_eq!(url.to_string(), "postgres://postgres@127.0.0.1/db");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("k")), "Secret(***)");
    }
}
