//! The operator's intake switch as the api sees it: while intake is paused (the queue
//! board flips `intake.paused`), requests for model work are still accepted (nothing is
//! lost: their operations stay `pending` until the resume), but told to poll every
//! [`PAUSED_RETRY_AFTER_SECS`] rather than every 2 s. Read every [`REFRESH`], about a
//! worker's heartbeat, so that no request reads the database for it.

use shared::db::intake;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The `Retry-After` of a `202` while intake is paused.
pub const PAUSED_RETRY_AFTER_SECS: u64 = 30;

/// How often the switch is read: a worker's beat at the default settings.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The switch as last read.
#[derive(Debug, Default)]
pub struct IntakeView {
    paused: AtomicBool,
}

impl IntakeView {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The `Retry-After` of an accepted request: `normal`, or
    /// [`PAUSED_RETRY_AFTER_SECS`] while paused.
    pub fn retry_after_secs(&self, normal: u64) -> u64 {
        if self.is_paused() {
            PAUSED_RETRY_AFTER_SECS
        } else {
            normal
        }
    }
}

/// Keeps `view` to the database's switch, every [`REFRESH`], for as long as the task
/// runs. A failed read keeps the last value.
pub async fn follow(pool: PgPool, view: Arc<IntakeView>) {
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let read = match pool.acquire().await {
            Ok(mut conn) => intake::read(&mut conn).await,
            Err(err) => Err(err),
        };
        match read {
            Ok(switch) => view.paused.store(switch.paused, Ordering::Relaxed),
            Err(err) => tracing::warn!(error = %err, "could not read the intake switch"),
        }
    }
}
