//! Database access: the pool and the migrators ([`connect`] does both at start), and
//! the SQL, as plain statements returning typed rows.
//!
//! Layout: one module per table of ours (`users`, `resumes`, `job_postings`,
//! `sessions`, `messages`, `operations`, `rate_limits`) and one for apalis' tables
//! (`queue`), none of which imports another; beside them, the modules whose one question
//! spans tables: `attempt` (a question's start and its one commit), `reconcile` (which
//! operations can no longer end), `retention` (deleting old rows of every table),
//! `board` (the queue board's read-only views) and `heartbeat` (a worker's beat, its
//! provider state and its count of live peers).
//!
//! Query functions take `&mut PgConnection` (or a pool where one statement is the
//! whole story), so the caller owns the transaction and decides what commits together.

pub mod attempt;
pub mod board;
pub mod heartbeat;
pub mod job_postings;
pub mod messages;
pub mod operations;
pub mod queue;
pub mod rate_limits;
pub mod reconcile;
pub mod resumes;
pub mod retention;
pub mod sessions;
pub mod users;

use crate::config::DatabaseConfig;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

/// Our schema, embedded from `migrations/` (history in `public._sqlx_migrations`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A pool sized by the configuration. Connections are opened lazily, so a process can
/// start (and report `/readyz` 503) while the database is still coming up.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.database_url.expose())?;
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(config.acquire_timeout())
        .connect_lazy_with(options))
}

/// Connections of [`queue_pool`]: three uses and one of headroom. apalis runs one
/// statement at a time per worker (its fetch, acknowledgement and heartbeat share one
/// state machine), its LISTEN holds one for good, and a worker restarted after an error
/// needs one while the old one closes.
pub const QUEUE_POOL_CONNECTIONS: u32 = 4;

/// The pool apalis' own statements run on, beside `main` (same server and timeouts):
/// - its own, so that fetches and acknowledgements never queue behind the jobs'
///   transactions for a connection: apalis acknowledges before it fetches again, so a
///   slow acknowledgement delays every pickup (BENCHMARKS.md, the overhead figure);
/// - `synchronous_commit = off` on every connection: a claim, an acknowledgement or a
///   heartbeat lost in a PostgreSQL crash (the last few hundred ms of them) is
///   recoverable by design: the job is re-delivered and the commit path, whose own
///   transaction stays synchronous, drops a delivery of a finished operation;
/// - no test query before each checkout (one round trip less per statement): a dead
///   connection fails its statement, and apalis' worker restarts on the error.
pub fn queue_pool(main: &PgPool) -> PgPool {
    let options = (*main.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(QUEUE_POOL_CONNECTIONS)
        .acquire_timeout(main.options().get_acquire_timeout())
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// The process's pool, with the schema brought up to date unless `MIGRATE=false`: what
/// both binaries do at start. With migrations on, the first connection is made here, so
/// an unreachable database fails the start; with them off, nothing connects until the
/// first query.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, ConnectError> {
    let pool = pool(config).map_err(ConnectError::Url)?;
    if config.migrate {
        migrate(&pool).await?;
    }
    Ok(pool)
}

/// Why the database could not be readied at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `DATABASE_URL` does not parse as connection settings.
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    Url(#[source] sqlx::Error),
    /// The migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// Applies both schemas: apalis' queue tables (schema `apalis`, its own history) and
/// ours. Safe to run concurrently from several processes: sqlx serialises migrators
/// with an advisory lock, and both histories skip what is applied.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    apalis_postgres::PostgresStorage::<()>::setup(pool)
        .await
        .map_err(MigrateError::Queue)?;
    MIGRATOR.run(pool).await.map_err(MigrateError::Schema)?;
    Ok(())
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// apalis' own migrations failed.
    #[error("applying the job queue's migrations failed")]
    Queue(#[source] apalis_postgres::Error),
    /// Our migrations failed.
    #[error("applying the service's migrations failed")]
    Schema(#[source] sqlx::migrate::MigrateError),
}

/// Whether a database error is the named constraint refusing a row.
pub fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some(constraint))
}

/// Whether a write was refused because the user it names no longer exists: a foreign
/// key to `users` (every such constraint is named `<table>_user_id_fkey`).
pub fn refers_to_a_missing_user(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23503")
            && db.constraint().is_some_and(|c| c.ends_with("_user_id_fkey")))
}

/// Whether an error means the database could not be reached or had no connection free,
/// as opposed to refusing a statement: the api answers 503 for these.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        // 57P01..57P03: admin shutdown, crash shutdown, cannot connect now;
        // 08xxx: connection exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
