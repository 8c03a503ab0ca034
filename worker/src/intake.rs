//! The operator's intake switch, as this process applies it: while `intake.paused` is
//! set (the queue board flips it), this process's apalis workers are paused, so they
//! claim no new job and finish those they hold; unset, they resume. The heartbeat reads
//! the switch ([`shared::db::heartbeat::beat`]) and calls [`Intake::apply`], so a
//! pause or a resume takes effect within a beat.
//!
//! apalis pauses a worker by keeping its service "not ready": the worker then asks its
//! storage for no task, so nothing is fetched and nothing claimed. What a worker had
//! fetched already (at most a batch) stays claimed in its buffer until the resume; the
//! heartbeat keeps it alive meanwhile, and a takeover gives it to another worker if the
//! process dies (docs/DESIGN.md, "Pausing intake").

use apalis::prelude::WorkerContext;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// This process's side of the switch, shared by the heartbeat and the apalis workers.
#[derive(Debug, Default)]
pub struct Intake {
    paused: AtomicBool,
    /// The apalis workers running now (one per job type; a restarted one replaces its
    /// stopped predecessor).
    workers: Mutex<Vec<WorkerContext>>,
}

impl Intake {
    /// Whether this process has paused its claims.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Takes charge of an apalis worker that has just started (its `Start` event),
    /// pausing it at once while intake is paused: a worker restarted during a pause
    /// must not claim.
    pub fn adopt(&self, worker: &WorkerContext) {
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        workers.retain(|w| !w.is_stopped() && w.name() != worker.name());
        workers.push(worker.clone());
        if self.is_paused() {
            let _ = worker.pause();
        }
    }

    /// Lets go of an apalis worker that has exited.
    pub fn forget(&self, worker: &WorkerContext) {
        if let Ok(mut workers) = self.workers.lock() {
            workers.retain(|w| w.name() != worker.name());
        }
    }

    /// Brings every worker to the switch's state; idempotent, so each beat enforces it
    /// (a worker that could not be paused at its start is paused at the next beat).
    /// Returns whether the switch changed for this process.
    pub fn apply(&self, paused: bool) -> bool {
        let changed = self.paused.swap(paused, Ordering::SeqCst) != paused;
        if let Ok(workers) = self.workers.lock() {
            for worker in workers.iter() {
                // Errors mean "not running" or "shutting down": nothing to do.
                let _ = if paused && worker.is_running() {
                    worker.pause()
                } else if !paused && worker.is_paused() {
                    worker.resume()
                } else {
                    Ok(())
                };
            }
        }
        if changed {
            if paused {
                tracing::warn!(
                    "intake paused by an operator: claiming no new job, finishing those held"
                );
            } else {
                tracing::info!("intake resumed by an operator: claiming jobs again");
            }
        }
        changed
    }
}
