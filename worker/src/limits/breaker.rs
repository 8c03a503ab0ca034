//! The breaker: one per worker process. When calls keep failing in a way that says the
//! provider is down (a `5xx`, a connection that fails), the process stops sending them
//! and probes instead: one call at a time, at most one per `Retry-After` (or per
//! second without one), until a call gets an answer; then it closes again.
//!
//! While it is open, jobs wait without calling (their wait is the operation's, within
//! `LLM_MAX_WAIT_SECS`, and counts no attempt); only the probe's own failure counts,
//! for its job, as any call's would.

use crate::llm::Outcome;
use metrics::gauge;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Failures in a row, with no answer between, that open the breaker. Below it, a blip
/// costs nothing; at it, a process of 64 jobs has learnt what one call would tell it.
pub const OPENS_AFTER: u32 = 5;

/// Between probes when the provider named no wait.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The breaker of one process.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    /// Signalled when it closes or a probe ends.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    failures_in_a_row: u32,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    /// No probe before this.
    next_probe: Instant,
    /// A probe is out now.
    probing: bool,
}

/// Leave to make one call: through a closed breaker, or as the open breaker's probe.
/// Hand it back to [`Breaker::record`] with the call's result; dropped unrecorded (the
/// job ended some other way), a probe lets the next one go.
#[derive(Debug)]
pub struct Admission<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

/// What a call's result says about the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (a question, a refusal, a rate limit): it is up.
    Answered,
    /// It is down: a `5xx` or a connection that failed.
    Down,
    /// Nothing either way (a timeout: a slow model, or a slow provider).
    Unclear,
}

impl Verdict {
    /// How a call that ended with `outcome` (`None`: a question) reads.
    pub fn of(outcome: Option<Outcome>) -> Self {
        match outcome {
            Some(Outcome::ServerError | Outcome::Connection) => Verdict::Down,
            Some(Outcome::Timeout) => Verdict::Unclear,
            None
            | Some(
                Outcome::RateLimited
                | Outcome::Rejected
                | Outcome::QuotaExhausted
                | Outcome::InvalidOutput,
            ) => Verdict::Answered,
        }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        let breaker = Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        };
        gauge!("llm_breaker_open").set(0.0);
        breaker
    }
}

impl Breaker {
    /// Whether it is open now.
    pub fn is_open(&self) -> bool {
        self.lock().open.is_some()
    }

    /// Waits until a call may go (`None` when `deadline` passes first): at once when it
    /// is closed; when open, until this caller may be the probe, or it closes.
    pub async fn admit(&self, deadline: Instant) -> Option<Admission<'_>> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake_at = {
                let mut state = self.lock();
                match &mut state.open {
                    None => return Some(self.admission(false)),
                    Some(open) if !open.probing && Instant::now() >= open.next_probe => {
                        open.probing = true;
                        return Some(self.admission(true));
                    }
                    Some(open) if open.probing => deadline,
                    Some(open) => open.next_probe.min(deadline),
                }
            };
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    /// Takes a call's result: an answer closes the breaker; a failure that says the
    /// provider is down counts toward opening it, and while it is open puts the next
    /// probe `retry_after` (or [`PROBE_EVERY`]) away.
    pub fn record(
        &self,
        admission: Admission<'_>,
        verdict: Verdict,
        retry_after: Option<Duration>,
    ) {
        let probe = admission.probe;
        std::mem::forget(admission);
        let mut state = self.lock();
        match verdict {
            Verdict::Answered => {
                state.failures_in_a_row = 0;
                if state.open.take().is_some() {
                    tracing::info!("the model provider answers again: breaker closed");
                }
            }
            Verdict::Down => {
                state.failures_in_a_row = state.failures_in_a_row.saturating_add(1);
                let failures = state.failures_in_a_row;
                let next_probe = Instant::now() + retry_after.unwrap_or(PROBE_EVERY);
                match &mut state.open {
                    Some(open) => {
                        open.next_probe = open.next_probe.max(next_probe);
                        open.probing &= !probe;
                    }
                    None if failures >= OPENS_AFTER => {
                        tracing::warn!(
                            failures,
                            "the model provider keeps failing: breaker open, probing"
                        );
                        state.open = Some(Open {
                            next_probe,
                            probing: false,
                        });
                    }
                    None => {}
                }
            }
            Verdict::Unclear => Self::end_probe(&mut state, probe),
        }
        gauge!("llm_breaker_open").set(if state.open.is_some() { 1.0 } else { 0.0 });
        drop(state);
        self.changed.notify_waiters();
    }

    fn admission(&self, probe: bool) -> Admission<'_> {
        Admission {
            breaker: self,
            probe,
        }
    }

    /// A probe that ended without a verdict: the next may go after [`PROBE_EVERY`].
    fn end_probe(state: &mut State, probe: bool) {
        if let Some(open) = state.open.as_mut().filter(|_| probe) {
            open.probing = false;
            open.next_probe = open.next_probe.max(Instant::now() + PROBE_EVERY);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain fields, consistent after every statement: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            Breaker::end_probe(&mut self.breaker.lock(), true);
            self.breaker.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    async fn fail(breaker: &Breaker, times: u32, retry_after: Option<Duration>) {
        for _ in 0..times {
            let admission = breaker.admit(soon()).await.expect("admitted");
            breaker.record(admission, Verdict::Down, retry_after);
        }
    }

    #[tokio::test]
    async fn it_opens_after_failures_in_a_row_and_an_answer_resets_the_count() {
        let breaker = Breaker::default();
        fail(&breaker, OPENS_AFTER - 1, None).await;
        let answered = breaker.admit(soon()).await.expect("closed");
        breaker.record(answered, Verdict::Answered, None);
        fail(&breaker, OPENS_AFTER - 1, None).await;
        assert!(!breaker.is_open(), "an answer between resets the count");
        fail(&breaker, 1, None).await;
        assert!(breaker.is_open());
    }

    #[tokio::test]
    async fn open_it_lets_one_probe_per_retry_after_and_closes_on_an_answer() {
        let breaker = Breaker::default();
        let retry_after = Some(Duration::from_millis(300));
        fail(&breaker, OPENS_AFTER, retry_after).await;
        assert!(
            breaker.admit(soon()).await.is_none(),
            "no call before the probe's time"
        );
        let far = Instant::now() + Duration::from_secs(60);
        let probe = breaker.admit(far).await.expect("the probe");
        assert!(probe.probe);
        // While the probe is out, nobody else calls.
        assert!(
            breaker
                .admit(Instant::now() + Duration::from_millis(500))
                .await
                .is_none()
        );
        breaker.record(probe, Verdict::Down, retry_after);
        let started = Instant::now();
        let probe = breaker.admit(far).await.expect("the next probe");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "one per Retry-After"
        );
        breaker.record(probe, Verdict::Answered, None);
        assert!(!breaker.is_open());
        let closed = breaker
            .admit(Instant::now())
            .await
            .expect("closed: at once");
        assert!(!closed.probe);
    }

    #[tokio::test]
    async fn a_probe_dropped_unrecorded_lets_the_next_one_go() {
        let breaker = Breaker::default();
        fail(&breaker, OPENS_AFTER, None).await;
        let far = Instant::now() + Duration::from_secs(60);
        drop(breaker.admit(far).await.expect("the probe"));
        let next = breaker.admit(far).await.expect("the next probe");
        assert!(next.probe);
    }
}
