//! What every handler shares: cheap to clone, built once in [`crate::App::new`].

use crate::auth::JwtKeys;
use crate::error::{ApiError, Context};
use crate::known_users::KnownUsers;
use crate::long_poll::Waiters;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;

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

/// Per-request policy taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// generate-question calls per user and minute; 0 turns the limit off.
    pub generate_per_minute: u32,
    /// The job's `max_attempts`, equal to the workers' LLM attempt budget.
    pub llm_max_attempts: u32,
    /// Unfinished operations per session; 0 turns the cap off.
    pub max_pending_per_session: u32,
}
