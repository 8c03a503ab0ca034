//! The worker's settings: one `clap` parse of the environment (and `.env`).

use crate::limits::LimitSettings;
use crate::llm::openai::ReplyFormat;
use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};
use shared::config::{DatabaseConfig, Secret, TelemetryConfig};
use shared::db::reconcile::WorstCase;
use std::net::SocketAddr;
use std::time::Duration;

/// Which LLM provider writes the questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// Any OpenAI-compatible chat-completions server.
    Openai,
    /// The built-in deterministic generator: no network, for laptops, demos and CI.
    Offline,
}

/// `LLM_PROVIDER` as given: a provider, or empty (which counts as unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSetting(pub Option<Provider>);

impl From<Provider> for ProviderSetting {
    fn from(provider: Provider) -> Self {
        Self(Some(provider))
    }
}

/// Every setting of the `worker` binary; `worker --help` lists them with their defaults.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    version = shared::build::version_line(),
    about = "The interview service's question-generation worker"
)]
pub struct WorkerConfig {
    /// Address of the worker's /healthz and /metrics.
    #[arg(long, env = "WORKER_ADDR", default_value = "127.0.0.1:9090")]
    pub worker_addr: SocketAddr,

    /// Jobs in flight per worker process (the work waits on the LLM, not the CPU).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub worker_concurrency: u32,

    /// LLM provider: openai or offline [default: openai when OPENAI_API_KEY or
    /// OPENAI_BASE_URL is set, else offline]. Empty counts as unset, like the two below:
    /// compose passes `${OPENAI_API_KEY:-}` through as an empty value.
    #[arg(long, env = "LLM_PROVIDER", value_parser = clap::builder::PossibleValuesParser::new(["openai", "offline", ""]).map(|v| ProviderSetting(Provider::from_str(&v, true).ok())))]
    pub llm_provider: Option<ProviderSetting>,

    /// API key of the OpenAI-compatible server.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,

    /// Base URL of the OpenAI-compatible server [default: OpenAI's own endpoint].
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,

    /// Model name sent to the server.
    #[arg(long, env = "LLM_MODEL", default_value = "gpt-4o-mini")]
    pub llm_model: String,

    /// Seconds one LLM request may take (0.001 to 600; fractions allowed).
    #[arg(long, env = "LLM_TIMEOUT_SECS", default_value_t = 10.0, value_parser = llm_timeout_secs)]
    pub llm_timeout_secs: f64,

    /// Price of a million prompt tokens of LLM_MODEL, in any currency (0 to 1,000,000);
    /// with a completion price, it makes `llm_cost_total`. Unset: no cost is counted.
    #[arg(long, env = "LLM_PRICE_PER_MILLION_PROMPT_TOKENS", value_parser = price)]
    pub llm_price_per_million_prompt_tokens: Option<f64>,

    /// Price of a million completion tokens of LLM_MODEL (0 to 1,000,000).
    #[arg(long, env = "LLM_PRICE_PER_MILLION_COMPLETION_TOKENS", value_parser = price)]
    pub llm_price_per_million_completion_tokens: Option<f64>,

    /// How the reply is requested: json_schema, json_object, or text.
    #[arg(long, env = "LLM_RESPONSE_FORMAT", value_enum, default_value_t = ReplyFormat::JsonSchema)]
    pub llm_response_format: ReplyFormat,

    /// First retry delay in milliseconds (1 to 60000); doubles each retry, with jitter.
    #[arg(long, env = "LLM_BACKOFF_BASE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub llm_backoff_base_ms: u64,

    /// Longest retry delay in milliseconds (1 to 600000; at least the base).
    #[arg(long, env = "LLM_BACKOFF_MAX_MS", default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub llm_backoff_max_ms: u64,

    /// Model calls in flight at once across every worker process (0: no cap; at most
    /// 100,000). Each live worker takes a share, recomputed at each heartbeat; set it
    /// from the provider's concurrency or rate limit (deploy/README.md).
    #[arg(long, env = "LLM_MAX_IN_FLIGHT", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub llm_max_in_flight: u32,

    /// The longest one wait that a provider's `Retry-After` (or rate-limit reset) asks
    /// for, in seconds (1 to 3600): a longer hint is waited this long, then called again.
    #[arg(long, env = "LLM_RETRY_AFTER_MAX_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub llm_retry_after_max_secs: u64,

    /// Seconds an operation may spend waiting on the provider in all (rate limits, an
    /// open breaker, the cap) without counting an attempt (0 to 86,400); past it the
    /// operation fails as "busy".
    #[arg(long, env = "LLM_MAX_WAIT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub llm_max_wait_secs: u64,

    /// Seconds to finish jobs in flight after SIGTERM before exiting (0 to 3600).
    #[arg(long, env = "WORKER_SHUTDOWN_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub worker_shutdown_secs: u64,

    /// Seconds of silence after which a worker's jobs are taken over by others (2 to
    /// 3600). The process beats every quarter of it from a task of its own, busy or not.
    #[arg(long, env = "WORKER_HEARTBEAT_SECS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub worker_heartbeat_secs: u64,

    /// Days a finished job's queue row is kept before it is deleted (0: keep them all;
    /// at most 36,500). Operations and messages are never deleted by this.
    #[arg(long, env = "JOB_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub job_retention_days: u32,

    /// Days a finished operation is kept before it is deleted (0: keep them all; at
    /// most 36,500). Its question message stays: the operation is only a receipt.
    /// At least a day, so no idempotency key (kept 24 hours) is forgotten early.
    #[arg(long, env = "OPERATION_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub operation_retention_days: u32,

    /// Earlier questions of the session quoted into each prompt, the most recent ones
    /// (0 to 1,000): what the model is told not to repeat. The default keeps the whole
    /// history of any interview of ordinary length; the bound keeps a prompt's cost flat.
    #[arg(long, env = "PROMPT_MAX_EARLIER_QUESTIONS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub prompt_max_earlier_questions: u32,

    /// Operator token of the queue board (`/board` on WORKER_ADDR): unset or empty, the
    /// board is off and its routes answer 404; set, at least 16 bytes of visible ASCII,
    /// or the worker refuses to start. Sent as `Authorization: Bearer <token>`, or as the password of
    /// HTTP Basic (any user name) so that a browser asks for it.
    #[arg(long, env = "OPS_TOKEN", hide_env_values = true)]
    pub ops_token: Option<Secret>,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// `LLM_TIMEOUT_SECS`: a number of seconds from 0.001 to 600, fractions allowed (clap's
/// ranges are for integers only).
fn llm_timeout_secs(value: &str) -> Result<f64, String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if (0.001..=600.0).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("{value} is not in 0.001..=600"))
    }
}

/// A price per million tokens: a finite number from 0 to 1,000,000.
fn price(value: &str) -> Result<f64, String> {
    let price: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a price"))?;
    if (0.0..=1_000_000.0).contains(&price) {
        Ok(price)
    } else {
        Err(format!("{value} is not in 0..=1000000"))
    }
}

/// Heartbeats a worker may miss before its jobs are taken over.
pub const MISSED_HEARTBEATS: u32 = 4;

/// Added to a job's worst case before the reconciler calls it overdue: pickup after a
/// takeover, slow statements, a long pause of a process.
const WORST_CASE_MARGIN: Duration = Duration::from_secs(60);

/// The shortest `OPS_TOKEN` taken: 16 bytes (128 bits when random, as
/// `openssl rand -hex 16` prints them) cannot be guessed over HTTP.
pub const MIN_OPS_TOKEN_BYTES: usize = 16;

impl WorkerConfig {
    /// Checks what clap cannot, without echoing a secret (clap's errors quote the
    /// value): a set `OPS_TOKEN` must be long enough to guard the board, and visible
    /// ASCII, which is all an `Authorization` header carries (a token read from a file
    /// with its newline could otherwise never be sent, and the board would just refuse).
    pub fn validate(&self) -> Result<(), String> {
        let Some(token) = self.ops_token() else {
            return Ok(());
        };
        let token = token.expose();
        if token.len() < MIN_OPS_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "OPS_TOKEN must be at least {MIN_OPS_TOKEN_BYTES} bytes of visible ASCII, \
                 no spaces (e.g. openssl rand -hex 16); the worker refuses to start"
            ));
        }
        Ok(())
    }

    /// `OPS_TOKEN`, unless unset or empty: the queue board is on when this is `Some`.
    pub fn ops_token(&self) -> Option<&Secret> {
        self.ops_token
            .as_ref()
            .filter(|token| !token.expose().is_empty())
    }

    /// The model's prices, for `llm_cost_total`.
    pub fn llm_prices(&self) -> crate::llm::spend::Prices {
        crate::llm::spend::Prices {
            prompt_per_million: self.llm_price_per_million_prompt_tokens,
            completion_per_million: self.llm_price_per_million_completion_tokens,
        }
    }

    /// The provider in use: explicit, else `openai` when a key or base URL is set. An
    /// empty value is no value: `OPENAI_API_KEY=` alone means offline.
    pub fn provider(&self) -> Provider {
        self.llm_provider.and_then(|setting| setting.0).unwrap_or(
            if self.openai_api_key().is_some() || self.openai_base_url().is_some() {
                Provider::Openai
            } else {
                Provider::Offline
            },
        )
    }

    /// `OPENAI_API_KEY`, unless unset or empty.
    pub fn openai_api_key(&self) -> Option<&Secret> {
        self.openai_api_key
            .as_ref()
            .filter(|key| !key.expose().is_empty())
    }

    /// `OPENAI_BASE_URL`, unless unset or empty.
    pub fn openai_base_url(&self) -> Option<&str> {
        self.openai_base_url
            .as_deref()
            .filter(|url| !url.is_empty())
    }

    pub fn llm_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.llm_timeout_secs.max(0.001))
    }

    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.llm_backoff_base_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.llm_backoff_max_ms.max(self.llm_backoff_base_ms))
    }

    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.worker_shutdown_secs)
    }

    /// How long a worker may stay silent before its jobs are taken over. The heartbeat
    /// comes from a task of its own ([`crate::upkeep`]), not from free job slots, so
    /// this need not cover a job's length: a few seconds.
    pub fn heartbeat_window(&self) -> Duration {
        Duration::from_secs(self.worker_heartbeat_secs)
    }

    /// How often the process beats: [`MISSED_HEARTBEATS`] beats fit in the window.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_window() / MISSED_HEARTBEATS
    }

    /// The longest a job may take from its first start: each of its attempts (the
    /// job's `max_attempts`, which the api wrote from `LLM_MAX_ATTEMPTS`) may time out,
    /// wait the longest backoff, and lose its worker (a takeover window); once, it may
    /// wait on the provider for `LLM_MAX_WAIT_SECS`, plus a margin. An unfinished
    /// operation first started longer ago than this is failed by the reconciler. 490 s
    /// with the defaults: 5 × (10 s + 8 s + 8 s) + 300 s + 60 s.
    pub fn operation_worst_case(&self) -> WorstCase {
        WorstCase {
            per_attempt: self.llm_timeout() + self.backoff_max() + self.heartbeat_window(),
            waits: self.max_wait(),
            margin: WORST_CASE_MARGIN,
        }
    }

    /// `LLM_MAX_WAIT_SECS`: an operation's budget of waiting on the provider.
    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.llm_max_wait_secs)
    }

    /// `LLM_RETRY_AFTER_MAX_SECS`: the longest single wait a provider's hint gets.
    pub fn retry_after_max(&self) -> Duration {
        Duration::from_secs(self.llm_retry_after_max_secs)
    }

    /// The settings of the provider's limits.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            max_in_flight: self.llm_max_in_flight,
            retry_after_max: self.retry_after_max(),
            max_wait: self.max_wait(),
            backoff_base: self.backoff_base(),
            backoff_max: self.backoff_max(),
        }
    }

    /// Settings for tests: the offline provider, short timeouts and backoff.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            worker_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            worker_concurrency: 16,
            llm_provider: Some(Provider::Offline.into()),
            openai_api_key: None,
            openai_base_url: None,
            llm_model: "test-model".into(),
            llm_price_per_million_prompt_tokens: None,
            llm_price_per_million_completion_tokens: None,
            llm_timeout_secs: 2.0,
            llm_response_format: ReplyFormat::JsonSchema,
            llm_backoff_base_ms: 10,
            llm_backoff_max_ms: 50,
            llm_max_in_flight: 0,
            llm_retry_after_max_secs: 60,
            llm_max_wait_secs: 300,
            worker_shutdown_secs: 30,
            worker_heartbeat_secs: 8,
            job_retention_days: 7,
            operation_retention_days: 30,
            prompt_max_earlier_questions: 50,
            ops_token: None,
            database: DatabaseConfig::for_url(database_url),
            telemetry: TelemetryConfig::for_tests(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_take_a_dead_workers_jobs_over_within_seconds() {
        let config = WorkerConfig::try_parse_from(["worker"]).expect("defaults parse");
        assert_eq!(config.heartbeat_window(), Duration::from_secs(8));
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(2));
        // 5 × (10 s + 8 s + 8 s) + 300 s + 60 s
        let worst_case = config.operation_worst_case();
        assert_eq!(worst_case.per_attempt, Duration::from_secs(26));
        assert_eq!(worst_case.waits, Duration::from_secs(300));
        assert_eq!(worst_case.margin, Duration::from_secs(60));
        assert_eq!(config.llm_max_in_flight, 0, "no cap unless one is set");
        assert_eq!(config.retry_after_max(), Duration::from_secs(60));
        assert_eq!(config.provider(), Provider::Offline);
    }

    #[test]
    fn settings_out_of_their_range_are_refused_by_name() {
        for args in [
            ["worker", "--llm-backoff-base-ms", "0"],
            ["worker", "--llm-backoff-max-ms", "0"],
            ["worker", "--worker-heartbeat-secs", "1"],
            ["worker", "--worker-concurrency", "0"],
            ["worker", "--worker-shutdown-secs", "3601"],
            ["worker", "--job-retention-days", "36501"],
            ["worker", "--llm-timeout-secs", "0"],
            ["worker", "--llm-timeout-secs", "inf"],
            ["worker", "--llm-timeout-secs", "NaN"],
            ["worker", "--llm-timeout-secs", "ten"],
            ["worker", "--database-max-connections", "1"],
            ["worker", "--llm-max-in-flight", "100001"],
            ["worker", "--llm-retry-after-max-secs", "0"],
            ["worker", "--llm-max-wait-secs", "86401"],
            ["worker", "--llm-price-per-million-prompt-tokens", "1000001"],
            ["worker", "--llm-price-per-million-prompt-tokens", "NaN"],
            ["worker", "--llm-price-per-million-completion-tokens", "inf"],
            [
                "worker",
                "--llm-price-per-million-completion-tokens",
                "cheap",
            ],
        ] {
            let err = WorkerConfig::try_parse_from(args).expect_err("out of range");
            assert!(err.to_string().contains(&args[1][2..]), "{err}");
        }
    }

    #[test]
    fn empty_llm_settings_count_as_unset_and_mean_offline() {
        // Compose passes `OPENAI_API_KEY: ${OPENAI_API_KEY:-}`: unset and empty must
        // both resolve to the offline generator, never to OpenAI without a key.
        let unset = WorkerConfig::try_parse_from(["worker"]).expect("parse");
        assert_eq!(unset.provider(), Provider::Offline);
        let empty = WorkerConfig::try_parse_from([
            "worker",
            "--openai-api-key=",
            "--openai-base-url=",
            "--llm-provider=",
        ])
        .expect("empty values parse");
        assert_eq!(empty.provider(), Provider::Offline);
        assert!(empty.openai_api_key().is_none() && empty.openai_base_url().is_none());
        let keyed =
            WorkerConfig::try_parse_from(["worker", "--openai-api-key=sk-real"]).expect("parse");
        assert_eq!(keyed.provider(), Provider::Openai);
        assert!(WorkerConfig::try_parse_from(["worker", "--llm-provider=gpt"]).is_err());
        assert!(
            WorkerConfig::try_parse_from(["worker", "--prompt-max-earlier-questions", "1001"])
                .is_err()
        );
    }

    #[test]
    fn a_base_url_selects_the_openai_provider() {
        let config =
            WorkerConfig::try_parse_from(["worker", "--openai-base-url", "http://127.0.0.1:1/v1"])
                .expect("parse");
        assert_eq!(config.provider(), Provider::Openai);
    }

    #[test]
    fn response_formats_are_spelled_as_in_the_contract() {
        for (value, format) in [
            ("json_schema", ReplyFormat::JsonSchema),
            ("json_object", ReplyFormat::JsonObject),
            ("text", ReplyFormat::Text),
        ] {
            let config = WorkerConfig::try_parse_from(["worker", "--llm-response-format", value])
                .expect(value);
            assert_eq!(config.llm_response_format, format);
        }
        let config = WorkerConfig::try_parse_from([
            "worker",
            "--llm-provider",
            "openai",
            "--log-format",
            "json",
        ])
        .expect("parse");
        assert_eq!(config.provider(), Provider::Openai);
    }

    #[test]
    fn a_short_ops_token_is_refused_by_name_without_echoing_it() {
        let short = "fifteen-bytes!!";
        let config =
            WorkerConfig::try_parse_from(["worker", "--ops-token", short]).expect("parses");
        let err = config.validate().expect_err("too short");
        assert!(err.starts_with("OPS_TOKEN "), "{err}");
        assert!(!err.contains(short), "the token is not echoed: {err}");
        let newline = WorkerConfig::try_parse_from(["worker", "--ops-token", "0123456789abcdef\n"])
            .expect("parses");
        assert!(newline.validate().is_err(), "a newline could never be sent");
        let config = WorkerConfig::try_parse_from(["worker", "--ops-token", "sixteen-bytes!!!"])
            .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert!(config.ops_token().is_some());
        for off in [&["worker"][..], &["worker", "--ops-token="][..]] {
            let config = WorkerConfig::try_parse_from(off).expect("parses");
            assert_eq!(
                config.validate(),
                Ok(()),
                "unset or empty: the board is off"
            );
            assert!(config.ops_token().is_none());
        }
        assert!(!format!("{config:?}").contains("sixteen"), "Debug hides it");
    }

    #[test]
    fn an_explicit_heartbeat_wins() {
        let config = WorkerConfig::try_parse_from(["worker", "--worker-heartbeat-secs", "7"])
            .expect("parse");
        assert_eq!(config.heartbeat_window(), Duration::from_secs(7));
    }

    #[test]
    fn a_fractional_llm_timeout_is_accepted() {
        let config =
            WorkerConfig::try_parse_from(["worker", "--llm-timeout-secs", "0.5"]).expect("parse");
        assert_eq!(config.llm_timeout(), Duration::from_millis(500));
    }
}
