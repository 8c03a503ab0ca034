//! The interview service's HTTP api: authentication, ownership, validation, the
//! transactional enqueue of question generations, and reads (with long-poll).
//!
//! Layout:
//! - [`config`]: every setting, from the environment;
//! - [`routes`]: the router, one module per resource, and the OpenAPI document;
//! - [`error`]: the one error type and its table of statuses and codes;
//! - [`extract`]: extractors whose rejections speak the contract, and the current user;
//! - [`auth`]: password hashing and access tokens;
//! - [`long_poll`]: the NOTIFY listener that wakes waiting polls (and forgets deleted
//!   users in [`known_users`], the cache that checks a token's user exists);
//! - [`http_metrics`], [`state`], [`validate`]: the small parts the handlers share.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod http_metrics;
pub mod known_users;
pub mod long_poll;
pub mod routes;
pub mod state;
pub mod validate;

use crate::config::ApiConfig;
use crate::state::{AppState, Limits};
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Runs the api on `listener` until `shutdown` completes: connects, migrates (unless
/// `MIGRATE=false`), then serves; in-flight requests finish before it returns. Tests
/// skip the start-up and build an [`App`] on their own database.
pub async fn run(
    config: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = shared::db::connect(&config.database).await?;
    App::new(&config, pool).serve(listener, shutdown).await
}

/// The api, built and not yet serving.
#[derive(Debug)]
pub struct App {
    state: AppState,
    request_timeout: std::time::Duration,
}

impl App {
    /// Builds the state from the configuration and an (already migrated) pool.
    pub fn new(config: &ApiConfig, pool: PgPool) -> Self {
        let state = AppState {
            pool,
            jwt: Arc::new(auth::JwtKeys::new(
                config.jwt_secret.as_ref(),
                config.jwt_ttl_secs,
            )),
            waiters: Arc::new(long_poll::Waiters::default()),
            users: Arc::new(known_users::KnownUsers::default()),
            metrics: shared::metrics::install_recorder(),
            limits: Limits {
                generate_per_minute: config.rate_limit_generate_per_minute,
                llm_max_attempts: config.llm_max_attempts,
                max_pending_per_session: config.max_pending_per_session,
            },
        };
        Self {
            state,
            request_timeout: config.request_timeout(),
        }
    }

    /// The long-polls waiting now (tests use it to know a request is asleep).
    pub fn waiters(&self) -> Arc<long_poll::Waiters> {
        self.state.waiters.clone()
    }

    /// Serves on `listener` until `shutdown` completes and requests in flight finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener_task = tokio::spawn(long_poll::listen(
            self.state.pool.clone(),
            self.state.waiters.clone(),
            self.state.users.clone(),
        ));
        let app = routes::router(self.state, self.request_timeout);
        tracing::info!(addr = %listener.local_addr()?, "api listening");
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutdown requested: finishing requests in flight");
        };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        listener_task.abort();
        served?;
        tracing::info!("api stopped");
        Ok(())
    }
}
