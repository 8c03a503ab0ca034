//! The api's settings: one `clap` parse of the environment (and `.env`).

use clap::Parser;
use ipnet::IpNet;
use shared::config::{DatabaseConfig, Secret, TelemetryConfig};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Every setting of the `api` binary; `api --help` lists them with their defaults.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version = shared::build::version_line(), about = "The interview service's HTTP api")]
pub struct ApiConfig {
    /// Address the HTTP server listens on.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,

    /// HS256 key that signs access tokens, at least 32 bytes. Unset: a random key per
    /// process, with a loud warning (tokens then die with the process and do not work
    /// across replicas). Set but shorter, or a known placeholder, the api refuses to
    /// start: an empty or guessable key lets anyone who knows a user id forge tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Lifetime of an access token, in seconds (60 to 2,592,000, which is 30 days).
    #[arg(long, env = "JWT_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub jwt_ttl_secs: u64,

    /// Requests for model work (generate-question and feedback, counted together)
    /// allowed per user and minute, across all replicas (0: off; at most 100,000).
    #[arg(long, env = "RATE_LIMIT_GENERATE_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rate_limit_generate_per_minute: u32,

    /// Answers allowed per user and minute, across all replicas (0: off; at most
    /// 100,000).
    #[arg(long, env = "ANSWERS_PER_MINUTE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub answers_per_minute: u32,

    /// The longest answer taken, in characters (1 to 100,000). It bounds a page of
    /// messages: 200 answers of 5,000 characters are at most 4 MB of text and 6 MB of
    /// JSON, where the 256 KiB body limit alone allowed 50 MB.
    #[arg(long, env = "ANSWER_MAX_CHARS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub answer_max_chars: u32,

    /// Unfinished operations one session may hold, questions and feedback together (0:
    /// off; at most 10,000). A session's questions are generated one at a time, so
    /// this bounds how long the last one waits: MAX_PENDING_PER_SESSION × a job's
    /// worst case.
    #[arg(long, env = "MAX_PENDING_PER_SESSION", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub max_pending_per_session: u32,

    /// Model calls a question may take in all, the first included: written on each job
    /// as its `max_attempts`, the one budget the workers read (they have no setting).
    #[arg(long, env = "LLM_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=i64::from(shared::jobs::MAX_ATTEMPTS_CEILING)))]
    pub llm_max_attempts: u32,

    /// Seconds a request may take before it is answered 503, 1 to 300 (long polls get
    /// their `wait` on top).
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub request_timeout_secs: u64,

    /// Password hashes (argon2id, 19 MiB and tens of ms of CPU each) computed at once,
    /// at most 1,024 [default: the number of cores, at most 4, so that the hashes' memory
    /// (76 MiB) fits the api pod's whatever node it lands on]. A registration or login
    /// that finds them all busy is answered 503 with Retry-After at once: a queue would
    /// only grow. 0 removes the bound (unsafe on a public port).
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", value_parser = clap::value_parser!(u32).range(0..=1_024))]
    pub password_hash_concurrency: Option<u32>,

    /// Failed logins allowed per minute, for one account and for one client address
    /// each (0: off; at most 10,000). Past it, 429 with Retry-After until the minute ends.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub login_attempts_per_minute: u32,

    /// Registrations allowed per minute from one client address (0: off; at most 10,000).
    #[arg(long, env = "REGISTRATIONS_PER_MINUTE_PER_ADDRESS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub registrations_per_minute_per_address: u32,

    /// Proxies whose X-Forwarded-For is believed: comma-separated addresses or CIDR
    /// ranges (e.g. `10.0.0.0/8,127.0.0.1`). Empty: the client is the socket's peer.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<Option<IpNet>>,

    /// Open client connections at most (at most 1,000,000; 0: no bound); more wait in
    /// the kernel's backlog until one closes. Keep the file limit (`ulimit -n`) above it.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_connections: u32,

    /// Open connections at most from one client address (an IPv6 client's /64); past
    /// it a connection is answered 503 with Retry-After: 1 and closed. 0: no bound of its
    /// own [default: a quarter of MAX_CONNECTIONS]. TRUSTED_PROXIES are not counted.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_connections_per_address: Option<u32>,

    /// Long polls (`wait` > 0) waiting at once (at most 1,000,000; 0: none, every poll
    /// answers at once). Past it, a poll answers at once with the operation's state and
    /// Retry-After, as if `wait=0`.
    #[arg(long, env = "MAX_LONG_POLLS", default_value_t = 2_048, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_long_polls: u32,

    /// Long polls one user may have waiting at once; past it a poll answers at once,
    /// as past MAX_LONG_POLLS. 0: no bound of its own [default: a quarter of
    /// MAX_LONG_POLLS].
    #[arg(long, env = "MAX_LONG_POLLS_PER_USER", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_long_polls_per_user: Option<u32>,

    /// Seconds a client may take to send a request's headers, at most 300 (0: no
    /// limit); also how long an idle keep-alive connection stays open.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub header_read_timeout_secs: u64,

    /// Origins a browser may call the api from, comma-separated
    /// (`https://app.example.com`); none by default, `*` for any.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// The window of the login and registration throttles: a minute, as their names
    /// say. Not a setting; tests shorten it.
    #[arg(skip = 60u64)]
    pub throttle_window_secs: u64,

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
            answers_per_minute: 0,
            answer_max_chars: 5_000,
            max_pending_per_session: 20,
            llm_max_attempts: 5,
            request_timeout_secs: 10,
            password_hash_concurrency: None,
            login_attempts_per_minute: 0,
            registrations_per_minute_per_address: 0,
            trusted_proxies: Vec::new(),
            max_connections: 4_096,
            max_connections_per_address: Some(0),
            max_long_polls: 2_048,
            max_long_polls_per_user: Some(0),
            header_read_timeout_secs: 10,
            cors_allowed_origins: Vec::new(),
            throttle_window_secs: 60,
            print_openapi: false,
            database: DatabaseConfig::for_url(database_url),
            telemetry: TelemetryConfig::for_tests(),
        }
    }

    /// How long an ordinary request may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Checks what clap cannot without echoing a secret into the logs (its errors quote
    /// the value): a set `JWT_SECRET` must be a usable key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(secret) = &self.jwt_secret {
            check_jwt_secret(secret.expose())
                .map_err(|why| format!("JWT_SECRET {why}; the api refuses to start"))?;
        }
        // An origin the CORS layer cannot use would be dropped silently: the browser
        // client it was meant for would fail with no clue on our side.
        for origin in self.cors_allowed_origins() {
            let usable = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.contains(char::is_whitespace)
                    && axum::http::HeaderValue::from_str(origin).is_ok()
                    && !origin.ends_with('/'));
            if !usable {
                return Err(format!(
                    "CORS_ALLOWED_ORIGINS has {origin:?}, which is not an origin \
                     (scheme://host[:port], no path, e.g. https://app.example.com) or *"
                ));
            }
        }
        Ok(())
    }

    /// Password hashes at once: the setting (0: no bound), else one per core, at most
    /// [`DEFAULT_MAX_PASSWORD_HASHES`].
    pub fn password_hash_concurrency(&self) -> usize {
        match self.password_hash_concurrency {
            None => std::thread::available_parallelism()
                .map_or(2, usize::from)
                .min(DEFAULT_MAX_PASSWORD_HASHES),
            Some(0) => tokio::sync::Semaphore::MAX_PERMITS,
            Some(n) => n as usize,
        }
    }

    /// Open connections at most (0: no bound).
    pub fn max_connections(&self) -> usize {
        match self.max_connections {
            0 => tokio::sync::Semaphore::MAX_PERMITS,
            n => n as usize,
        }
    }

    /// Open connections at most from one address: the setting, else a quarter of
    /// [`ApiConfig::max_connections`] (0: no bound of its own).
    pub fn max_connections_per_address(&self) -> usize {
        self.max_connections_per_address
            .map_or(quarter(self.max_connections), |n| n as usize)
    }

    /// Long polls at once for one user: the setting, else a quarter of
    /// `MAX_LONG_POLLS` (0: no bound of its own).
    pub fn max_long_polls_per_user(&self) -> usize {
        self.max_long_polls_per_user
            .map_or(quarter(self.max_long_polls), |n| n as usize)
    }

    /// The header-read timeout (0: none).
    pub fn header_read_timeout(&self) -> Option<Duration> {
        (self.header_read_timeout_secs > 0)
            .then(|| Duration::from_secs(self.header_read_timeout_secs))
    }

    /// The trusted proxies, empty entries (`TRUSTED_PROXIES=`) left out.
    pub fn trusted_proxies(&self) -> Vec<IpNet> {
        self.trusted_proxies.iter().flatten().copied().collect()
    }

    /// The allowed origins, empty entries left out.
    pub fn cors_allowed_origins(&self) -> Vec<&str> {
        self.cors_allowed_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .collect()
    }
}

/// The default bound on password hashes at once: 4 × 19 MiB stays well within the api
/// pod's 256 MiB on a node of any size (one hash per core of a 16-core node would not).
pub const DEFAULT_MAX_PASSWORD_HASHES: usize = 4;

/// A quarter of a global bound, for the per-client one it defaults to; 0 (no global
/// bound) stays 0, and a bound of 1 to 3 still leaves one.
fn quarter(bound: u32) -> usize {
    match bound {
        0 => 0,
        n => (n as usize / 4).max(1),
    }
}

/// The shortest `JWT_SECRET` taken: 32 bytes, HS256's own key size.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Words that mark a secret copied from an example rather than generated.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace",
    "placeholder",
    "example",
    "your-secret",
    "insecure",
    "not-for-production",
    "local-development",
];

/// Checks `JWT_SECRET`: at least 32 bytes and not a placeholder from an example file.
fn check_jwt_secret(value: &str) -> Result<(), String> {
    if value.len() < MIN_JWT_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes (it is {}): generate one with \
             `openssl rand -hex 32`, or leave JWT_SECRET unset for a random development key",
            value.len()
        ));
    }
    let lower = value.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|word| lower.contains(**word)) {
        return Err(format!(
            "is a placeholder (it contains {word:?}): generate one with `openssl rand -hex 32`"
        ));
    }
    if value.bytes().all(|b| b == value.as_bytes()[0]) {
        return Err("is one character repeated: generate one with `openssl rand -hex 32`".into());
    }
    Ok(())
}

/// One entry of `TRUSTED_PROXIES`: an address (a /32 or /128) or a CIDR range; empty is
/// no entry.
fn trusted_proxy(value: &str) -> Result<Option<IpNet>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map(Some)
        .map_err(|_| format!("{value:?} is neither an IP address nor a CIDR range"))
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
            ["api", "--password-hash-concurrency", "1025"],
            ["api", "--answer-max-chars", "0"],
            ["api", "--answer-max-chars", "100001"],
            ["api", "--answers-per-minute", "100001"],
            ["api", "--max-connections", "1000001"],
            ["api", "--header-read-timeout-secs", "301"],
            ["api", "--trusted-proxies", "10.0.0.0/33"],
            ["api", "--trusted-proxies", "proxy.internal"],
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
        assert_eq!(config.login_attempts_per_minute, 10);
        assert_eq!(config.registrations_per_minute_per_address, 10);
        assert!(config.max_connections >= 1_000 && config.max_long_polls >= 1_000);
        assert!((1..=DEFAULT_MAX_PASSWORD_HASHES).contains(&config.password_hash_concurrency()));
        assert_eq!(config.answers_per_minute, 30);
        assert_eq!(config.answer_max_chars, 5_000);
        assert_eq!(config.max_connections_per_address(), 1_024);
        assert_eq!(config.max_long_polls_per_user(), 512);
        let off = ApiConfig::try_parse_from([
            "api",
            "--max-connections-per-address",
            "0",
            "--max-long-polls-per-user",
            "0",
            "--max-connections",
            "100",
        ])
        .expect("0 turns the per-client bounds off");
        assert_eq!(off.max_connections_per_address(), 0);
        assert_eq!(off.max_long_polls_per_user(), 0);
        let small =
            ApiConfig::try_parse_from(["api", "--max-connections", "100", "--max-long-polls", "2"])
                .expect("parses");
        assert_eq!(small.max_connections_per_address(), 25);
        assert_eq!(small.max_long_polls_per_user(), 1);
        assert!(config.trusted_proxies().is_empty() && config.cors_allowed_origins().is_empty());
    }

    #[test]
    fn weak_jwt_secrets_are_refused_naming_the_variable() {
        let generated = "4f1c2a9be07d43d8a5c6e1f09b7d2c3e";
        for weak in [
            "",
            "short-secret",
            "change-me-change-me-change-me-change-me",
            "REPLACE_WITH_32_RANDOM_BYTES_FROM_OPENSSL",
            "this-is-an-example-secret-of-40-bytes!!!",
            "local-development-secret-not-for-production",
            &"a".repeat(64),
        ] {
            let config = ApiConfig::try_parse_from(["api", "--jwt-secret", weak]).expect("parses");
            let err = config.validate().expect_err(weak);
            assert!(err.starts_with("JWT_SECRET "), "{err}");
            assert!(
                weak.is_empty() || !err.contains(weak),
                "the secret is not echoed: {err}"
            );
        }
        let config =
            ApiConfig::try_parse_from(["api", "--jwt-secret", generated]).expect("a real key");
        assert_eq!(config.validate(), Ok(()));
        let unset = ApiConfig::try_parse_from(["api"]).expect("parses");
        assert_eq!(unset.validate(), Ok(()), "unset: a random development key");
    }

    #[test]
    fn cors_origins_must_be_origins() {
        for bad in ["app.example.com", "https://app.example.com/", "https://a b"] {
            let config =
                ApiConfig::try_parse_from(["api", "--cors-allowed-origins", bad]).expect("parses");
            let err = config.validate().expect_err(bad);
            assert!(err.starts_with("CORS_ALLOWED_ORIGINS"), "{err}");
        }
        let good = ApiConfig::try_parse_from([
            "api",
            "--cors-allowed-origins",
            "https://app.example.com,http://localhost:5173",
        ])
        .expect("parses");
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let config =
            ApiConfig::try_parse_from(["api", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1,,::1"])
                .expect("parse");
        let proxies = config.trusted_proxies();
        assert_eq!(proxies.len(), 3);
        assert!(proxies[0].contains(&"10.1.2.3".parse::<IpAddr>().expect("ip")));
        assert!(proxies[1].contains(&"127.0.0.1".parse::<IpAddr>().expect("ip")));
        assert!(!proxies[1].contains(&"127.0.0.2".parse::<IpAddr>().expect("ip")));
    }
}
