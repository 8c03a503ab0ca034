//! The interview service's HTTP api: authentication, ownership, validation, the
//! transactional enqueue of question generations and feedback, and reads (with
//! long-poll).
//!
//! Layout:
//! - [`config`]: every setting, from the environment;
//! - [`routes`]: the router, one module per resource, and the OpenAPI document;
//! - [`error`]: the one error type and its table of statuses and codes;
//! - [`extract`]: every extractor: contract rejections, the current user, the client's
//!   address;
//! - [`auth`]: password hashing and access tokens;
//! - [`long_poll`]: the NOTIFY listener that wakes waiting polls (and forgets deleted
//!   users in [`known_users`], the cache that checks a token's user exists);
//! - [`throttle`], [`trusted_proxies`]: failed logins and registrations per key and
//!   minute, and whose `X-Forwarded-For` names the client;
//! - [`series`]: the api's own metric series (HTTP requests, refusals);
//! - [`intake`]: the operator's intake switch, read every 2 s (a paused intake makes
//!   accepted requests poll later);
//! - [`state`], [`validate`]: the small parts the handlers share;
//! - [`migrate`]: `api migrate`, the schema brought up to date as a step of its own.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod intake;
pub mod known_users;
pub mod long_poll;
pub mod migrate;
pub mod routes;
pub mod series;
pub mod state;
pub mod throttle;
pub mod trusted_proxies;
pub mod validate;

use crate::config::ApiConfig;
use crate::state::{AppState, Guards, Limits};
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
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
    routing: routes::Routing,
    connections: shared::serve::ConnectionLimits,
    metrics_addr: Option<SocketAddr>,
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
            schema: Arc::new(shared::db::SchemaCheck::default()),
            intake: Arc::new(intake::IntakeView::default()),
            metrics: {
                let handle = shared::metrics::install_recorder();
                series::register();
                handle
            },
            limits: Limits {
                generate_per_minute: config.rate_limit_generate_per_minute,
                answers_per_minute: config.answers_per_minute,
                answer_max_chars: config.answer_max_chars as usize,
                llm_max_attempts: config.llm_max_attempts,
                max_pending_per_session: config.max_pending_per_session,
            },
            guards: Arc::new(Guards::new(config)),
        };
        Self {
            state,
            routing: routes::Routing {
                request_timeout: config.request_timeout(),
                public_metrics: config.telemetry.metrics_addr.is_none(),
                cors_allowed_origins: config
                    .cors_allowed_origins()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            },
            connections: shared::serve::ConnectionLimits {
                max_connections: config.max_connections(),
                per_address: Some(shared::serve::PerAddress {
                    max: config.max_connections_per_address(),
                    exempt: config.trusted_proxies().into(),
                }),
                header_read_timeout: config.header_read_timeout(),
            },
            metrics_addr: config.telemetry.metrics_addr,
        }
    }

    /// The long-polls waiting now (tests use it to know a request is asleep).
    pub fn waiters(&self) -> Arc<long_poll::Waiters> {
        self.state.waiters.clone()
    }

    /// The bounds on clients (tests read the hashing high-water mark from it).
    pub fn guards(&self) -> Arc<Guards> {
        self.state.guards.clone()
    }

    /// The intake switch as this process reads it (tests wait for it to follow the
    /// database).
    pub fn intake(&self) -> Arc<intake::IntakeView> {
        self.state.intake.clone()
    }

    /// Serves on `listener` until `shutdown` completes and requests in flight finish;
    /// `/metrics` too, on its own listener when `METRICS_ADDR` is set.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut background = vec![
            tokio::spawn(long_poll::listen(
                self.state.pool.clone(),
                self.state.waiters.clone(),
                self.state.users.clone(),
            )),
            tokio::spawn(shared::metrics::refresh_gauges_every(
                self.state.pool.clone(),
                shared::metrics::GAUGE_REFRESH,
                None,
            )),
            tokio::spawn(intake::follow(
                self.state.pool.clone(),
                self.state.intake.clone(),
            )),
        ];
        if let Some(addr) = self.metrics_addr {
            let metrics_listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %metrics_listener.local_addr()?, "api metrics listening");
            let metrics = routes::metrics_router(self.state.clone());
            // The same connection hygiene as the public listener; it ends with the
            // process (the task is aborted below), not with a drain of its own.
            let connections = self.connections.clone();
            background.push(tokio::spawn(shared::serve::serve(
                metrics_listener,
                metrics,
                connections,
                std::future::pending(),
            )));
        }
        let app = routes::router(self.state, &self.routing);
        tracing::info!(addr = %listener.local_addr()?, "api listening");
        shared::serve::serve(listener, app, self.connections, shutdown).await;
        for task in background {
            task.abort();
        }
        tracing::info!("api stopped");
        Ok(())
    }
}
