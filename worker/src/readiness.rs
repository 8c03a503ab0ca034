//! Whether this worker process is ready to take jobs: what its `/readyz` answers and
//! Kubernetes' readiness probe reads. Its `/healthz` says only that the process runs.
//!
//! Ready means: not draining, the database answers, this release's migrations are all
//! applied, and the heartbeat has landed within the takeover window (a worker that
//! cannot beat is about to have its jobs taken over by the others).

use shared::db::SchemaCheck;
use sqlx::PgPool;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long a readiness check waits for the database before saying no.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the process knows of its own readiness.
#[derive(Debug)]
pub struct Readiness {
    pool: PgPool,
    pub schema: SchemaCheck,
    /// The takeover window: a heartbeat older than this is a worker the others may
    /// already be taking jobs from.
    window: Duration,
    last_beat: Mutex<Option<Instant>>,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(pool: PgPool, window: Duration) -> Self {
        Self {
            pool,
            schema: SchemaCheck::default(),
            window,
            last_beat: Mutex::new(None),
            draining: AtomicBool::new(false),
        }
    }

    /// The heartbeat landed now.
    pub fn beat(&self) {
        *self
            .last_beat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Shutdown was asked for: not ready from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready, else the reason, for a person.
    pub async fn check(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining: finishing its jobs before it exits".to_owned());
        }
        let database = async {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&self.pool)
                .await?;
            self.schema.missing(&self.pool).await
        };
        match tokio::time::timeout(CHECK_TIMEOUT, database).await {
            Err(_) => return Err("the database did not answer in time".to_owned()),
            Ok(Err(err)) => return Err(format!("the database is unavailable: {err}")),
            Ok(Ok(missing)) if !missing.is_empty() => {
                return Err(format!(
                    "the database lacks this release's migrations {}; run `api migrate`",
                    missing.join(", ")
                ));
            }
            Ok(Ok(_)) => {}
        }
        let last_beat = *self
            .last_beat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last_beat.map(|at| at.elapsed()) {
            None => Err("no heartbeat has landed yet".to_owned()),
            Some(age) if age > self.window => Err(format!(
                "the last heartbeat landed {:.1} s ago, past the {} s takeover window",
                age.as_secs_f64(),
                self.window.as_secs()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Waits until this release's migrations are all applied, logging what is missing
    /// every half minute: a worker started with `MIGRATE=false` before the migrate
    /// step has run takes no job meanwhile (its statements could name what is not
    /// there yet), and does not exit either.
    pub async fn wait_for_schema(&self) {
        let mut logged: Option<Instant> = None;
        loop {
            match self.schema.missing(&self.pool).await {
                Ok(missing) if missing.is_empty() => return,
                Ok(missing) => {
                    if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                        tracing::warn!(missing = %missing.join(", "), "waiting for this release's migrations (MIGRATE=false): run `api migrate`");
                        logged = Some(Instant::now());
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the applied migrations; will try again")
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
