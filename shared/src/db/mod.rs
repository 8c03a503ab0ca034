//! Database access: the pool and the migrators ([`connect`] does both at start), and
//! the SQL, as plain statements returning typed rows.
//!
//! Layout: one module per table of ours (`users`, `resumes`, `job_postings`,
//! `sessions`, `messages`, `operations`, `rate_limits`, `intake` with its audit) and one for apalis' tables
//! (`queue`), none of which imports another; beside them, the modules whose one question
//! spans tables: `attempt` (a question's start and its one commit), `feedback` (the
//! same for a feedback), `reconcile` (which
//! operations can no longer end), `retention` (deleting old rows of every table),
//! `board` (the queue board's read-only views), `ended_counts` (the gauges' rare
//! count of ended work), `heartbeat` (a worker's beat, its
//! provider state and its count of live peers) and `wake` (notifications sent after a
//! commit rather than inside it).
//!
//! Query functions take `&mut PgConnection` (or a pool where one statement is the
//! whole story), so the caller owns the transaction and decides what commits together.

pub mod attempt;
pub mod board;
pub mod ended_counts;
pub mod feedback;
pub mod heartbeat;
pub mod intake;
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
pub mod wake;

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
        for applied in migrate(&pool).await? {
            tracing::info!(migration = %applied, "migration applied");
        }
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
/// ours, and returns the migrations it applied (`version description`, in order). Safe
/// to run concurrently from several processes: sqlx serialises migrators with an
/// advisory lock, and both histories skip what is applied.
///
/// A database ahead of this release (migrations applied that this binary does not
/// know, from a newer release in a rolling upgrade or before a rollback) is accepted:
/// each release only adds to the schema what the previous one can run beside
/// (docs/DESIGN.md, "Upgrades"), so an older binary starts and works on it.
pub async fn migrate(pool: &PgPool) -> Result<Vec<String>, MigrateError> {
    let before = missing_migrations(pool).await.map_err(MigrateError::Read)?;
    tolerant(queue_migrator())
        .run(pool)
        .await
        .map_err(MigrateError::Queue)?;
    tolerant(schema_migrator())
        .run(pool)
        .await
        .map_err(MigrateError::Schema)?;
    // Again after both migrators, whichever ran first on this database (the
    // migration that defines it says what it does and why).
    sqlx::query("SELECT queue_tuning()")
        .execute(pool)
        .await
        .map_err(MigrateError::Tune)?;
    let after = missing_migrations(pool).await.map_err(MigrateError::Read)?;
    Ok(before.into_iter().filter(|m| !after.contains(m)).collect())
}

/// The migrations this release knows that the database has not applied, apalis' and
/// ours, named `version description`; empty when the schema is up to date (or ahead).
pub async fn missing_migrations(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let mut missing = Vec::new();
    for (history, migrator) in [
        (History::Queue, queue_migrator()),
        (History::Schema, schema_migrator()),
    ] {
        let applied = history.applied(pool).await?;
        missing.extend(
            migrator
                .iter()
                .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
                .map(|m| format!("{} {}", m.version, m.description)),
        );
    }
    Ok(missing)
}

/// Whether this release's migrations are all applied, for readiness: asked until the
/// answer is yes, then remembered (migrations are never taken back).
#[derive(Debug, Default)]
pub struct SchemaCheck {
    current: std::sync::atomic::AtomicBool,
}

impl SchemaCheck {
    /// This release's migrations that are not applied yet; empty once they all are.
    pub async fn missing(&self, pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
        use std::sync::atomic::Ordering;
        if self.current.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let missing = missing_migrations(pool).await?;
        if missing.is_empty() {
            self.current.store(true, Ordering::Relaxed);
        }
        Ok(missing)
    }
}

/// Where each migrator keeps its history.
#[derive(Debug, Clone, Copy)]
enum History {
    /// apalis': `apalis._sqlx_migrations`.
    Queue,
    /// Ours: `public._sqlx_migrations`.
    Schema,
}

impl History {
    /// The versions applied successfully; none when the history does not exist yet.
    async fn applied(self, pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
        let (table, select) = match self {
            History::Queue => (
                "apalis._sqlx_migrations",
                "SELECT version FROM apalis._sqlx_migrations WHERE success",
            ),
            History::Schema => (
                "public._sqlx_migrations",
                "SELECT version FROM public._sqlx_migrations WHERE success",
            ),
        };
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(select).fetch_all(pool).await
    }
}

/// apalis' own migrations, as its `setup` runs them.
fn queue_migrator() -> Migrator {
    apalis_postgres::PostgresStorage::<()>::migrations()
}

/// Ours, as a value (the static [`MIGRATOR`] cannot be changed).
fn schema_migrator() -> Migrator {
    Migrator::with_migrations(MIGRATOR.iter().cloned().collect())
}

/// `migrator`, accepting versions applied that it does not know.
fn tolerant(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The migration histories could not be read.
    #[error("reading the applied migrations failed")]
    Read(#[source] sqlx::Error),
    /// apalis' own migrations failed.
    #[error("applying the job queue's migrations failed")]
    Queue(#[source] sqlx::migrate::MigrateError),
    /// Our migrations failed.
    #[error("applying the service's migrations failed")]
    Schema(#[source] sqlx::migrate::MigrateError),
    /// The queue's tuning (`queue_tuning()`) failed.
    #[error("tuning the job queue's table failed")]
    Tune(#[source] sqlx::Error),
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
