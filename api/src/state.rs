//! What every handler shares: cheap to clone, built once in [`crate::App::new`].

use crate::auth::{JwtKeys, PasswordHashing};
use crate::config::ApiConfig;
use crate::error::{ApiError, Context};
use crate::known_users::KnownUsers;
use crate::long_poll::Waiters;
use crate::throttle::Throttle;
use crate::trusted_proxies::TrustedProxies;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::domain::UserId;
use shared::per_key::PerKey;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The api's shared state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub jwt: Arc<JwtKeys>,
    /// Long-polls waiting for an operation to finish, woken by the NOTIFY listener.
    pub waiters: Arc<Waiters>,
    /// Users lately found to exist, so a deleted user's token is refused cheaply.
    pub users: Arc<KnownUsers>,
    pub metrics: PrometheusHandle,
    pub limits: Limits,
    /// The bounds that keep a hostile or unlucky client from taking the process down.
    pub guards: Arc<Guards>,
    /// Whether this release's migrations are applied (`/readyz`).
    pub schema: Arc<shared::db::SchemaCheck>,
    /// The operator's intake switch, as last read.
    pub intake: Arc<crate::intake::IntakeView>,
}

impl AppState {
    /// A pooled connection; `503` when none comes free within the acquire timeout.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, ApiError> {
        self.pool.acquire().await.context("acquiring a connection")
    }

    /// A transaction on a pooled connection, for the handler to commit.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, ApiError> {
        self.pool.begin().await.context("beginning a transaction")
    }
}

/// The bounds on what clients can make this process do: password hashes at once,
/// failed logins and registrations per minute, long polls waiting at once.
#[derive(Debug)]
pub struct Guards {
    pub hashing: PasswordHashing,
    /// Failed logins per account (lower-cased email) and minute.
    pub failed_logins_by_account: Throttle,
    /// Failed logins per client address and minute.
    pub failed_logins_by_address: Throttle,
    /// Registrations per client address and minute.
    pub registrations_by_address: Throttle,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: TrustedProxies,
    /// One permit per long poll allowed to wait (`MAX_LONG_POLLS`).
    pub long_polls: Arc<Semaphore>,
    /// Long polls waiting per user (`MAX_LONG_POLLS_PER_USER`), so that one user
    /// cannot take every permit of [`Guards::long_polls`].
    pub long_polls_by_user: Arc<PerKey<UserId>>,
}

impl Guards {
    /// The guards the configuration asks for.
    pub fn new(config: &ApiConfig) -> Self {
        let window = Duration::from_secs(config.throttle_window_secs);
        let logins = config.login_attempts_per_minute;
        Self {
            hashing: PasswordHashing::new(config.password_hash_concurrency()),
            failed_logins_by_account: Throttle::new(logins, window),
            failed_logins_by_address: Throttle::new(logins, window),
            registrations_by_address: Throttle::new(
                config.registrations_per_minute_per_address,
                window,
            ),
            proxies: TrustedProxies::new(config.trusted_proxies()),
            long_polls: Arc::new(Semaphore::new(config.max_long_polls as usize)),
            long_polls_by_user: PerKey::new(config.max_long_polls_per_user()),
        }
    }
}

/// Per-request policy taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests for model work (generate-question and feedback together) per user and
    /// minute; 0 turns the limit off.
    pub generate_per_minute: u32,
    /// Answers per user and minute; 0 turns the limit off.
    pub answers_per_minute: u32,
    /// The longest answer taken, in characters.
    pub answer_max_chars: usize,
    /// The job's `max_attempts`: the workers' budget of model calls for it.
    pub llm_max_attempts: u32,
    /// Unfinished operations per session; 0 turns the cap off.
    pub max_pending_per_session: u32,
}
