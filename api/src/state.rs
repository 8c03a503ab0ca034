//! What every handler shares: cheap to clone, built once in [`crate::App::new`].

use crate::auth::JwtKeys;
use crate::known_users::KnownUsers;
use crate::long_poll::Waiters;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
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

/// Per-request policy taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// generate-question calls per user and minute; 0 turns the limit off.
    pub generate_per_minute: u32,
    /// The job's `max_attempts`, equal to the workers' LLM attempt budget.
    pub llm_max_attempts: u32,
}
