//! The model provider's limits, as one process meets them (docs/DESIGN.md, "The
//! provider's limits"): [`Limits::ask`] makes the calls of one attempt, and between
//! them waits whatever the provider's refusals ask for without counting an attempt:
//! - the cap on calls in flight across every worker ([`cap`]);
//! - the breaker, open while the provider is down ([`breaker`]);
//! - a `429` or a `503` with `Retry-After` (or a rate limit's reset) is waited out,
//!   jittered, at most `LLM_RETRY_AFTER_MAX_SECS` at a time; a `429` without a hint
//!   waits the backoff.
//!
//! Every wait comes out of the operation's budget, `LLM_MAX_WAIT_SECS`, kept in the
//! operation's row so that it holds across attempts and workers; a wait that would pass
//! it ends the attempt as [`Asked::OutOfPatience`]. What no wait explains (a `5xx` or a
//! connection failure without a hint, a timeout, invalid output) ends the attempt as
//! [`Asked::Failed`], and the job's retry policy counts it, as before.

pub mod breaker;
pub mod cap;

use crate::llm::{LlmError, Outcome};
use breaker::{Breaker, Verdict};
use cap::Cap;
use metrics::{counter, histogram};
use rand::Rng;
use shared::db::operations;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Why a job waited (the `reason` label of `llm_wait_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// A `429`: the provider's rate limit.
    RateLimited,
    /// A `503` with `Retry-After`, or the open breaker.
    Unavailable,
    /// The cap on calls in flight.
    Cap,
}

impl WaitReason {
    pub fn label(self) -> &'static str {
        match self {
            WaitReason::RateLimited => "rate_limited",
            WaitReason::Unavailable => "unavailable",
            WaitReason::Cap => "cap",
        }
    }
}

/// The settings of the limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// `LLM_MAX_IN_FLIGHT`; 0: no cap.
    pub max_in_flight: u32,
    /// `LLM_RETRY_AFTER_MAX_SECS`.
    pub retry_after_max: Duration,
    /// `LLM_MAX_WAIT_SECS`.
    pub max_wait: Duration,
    /// The backoff of a `429` without a hint: `LLM_BACKOFF_BASE_MS`, doubling, up to
    /// `LLM_BACKOFF_MAX_MS`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// One process's side of the provider's limits, shared by all its jobs.
#[derive(Debug)]
pub struct Limits {
    pub cap: Cap,
    pub breaker: Breaker,
    settings: LimitSettings,
}

/// How an attempt's asking ended; `T`: what a call that succeeded returned.
#[derive(Debug)]
pub enum Asked<T> {
    Written(T),
    /// A failure no wait explains: the attempt counts it.
    Failed(LlmError),
    /// The next wait would pass the operation's `LLM_MAX_WAIT_SECS`.
    OutOfPatience(WaitReason),
    /// The operation finished while its job waited (its owner cancelled it): no call
    /// is made for it any more.
    OperationFinished,
}

/// What an attempt's asking cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Model calls made, refused ones included.
    pub calls: u32,
    /// Time spent waiting on the provider.
    pub waited: Duration,
    /// How long the last call took.
    pub last_call: Duration,
}

/// The operation whose budget the waits come out of, and where it is kept.
#[derive(Debug, Clone, Copy)]
pub struct Budget<'a> {
    pub pool: &'a PgPool,
    pub operation_id: OperationId,
    /// What its earlier attempts waited already.
    pub waited_before: Duration,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            cap: Cap::new(settings.max_in_flight),
            breaker: Breaker::default(),
            settings,
        }
    }

    /// Makes `call` (one request to the model), as many times as the provider's refusals explain,
    /// waiting between them; returns how it ended and what it cost. What is not yet
    /// in the operation's row when it returns is the cost of the attempt's last call
    /// (and none when it was written: the question's metadata says it).
    pub async fn ask<T, F, Fut>(&self, call: F, budget: Budget<'_>) -> (Asked<T>, Spent)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let patience_ends =
            Instant::now() + self.settings.max_wait.saturating_sub(budget.waited_before);
        let mut spent = Spent::default();
        let mut kept = Spent::default();
        let mut hintless_429s = 0u32;
        loop {
            let waiting = Instant::now();
            let Some(admission) = self.breaker.admit(patience_ends).await else {
                spent.waited += self.waited(WaitReason::Unavailable, waiting);
                return self
                    .give_up(WaitReason::Unavailable, spent, kept, budget)
                    .await;
            };
            spent.waited += self.waited(WaitReason::Unavailable, waiting);
            let waiting = Instant::now();
            let Some(permit) = self.cap.acquire(patience_ends).await else {
                spent.waited += self.waited(WaitReason::Cap, waiting);
                return self.give_up(WaitReason::Cap, spent, kept, budget).await;
            };
            spent.waited += self.waited(WaitReason::Cap, waiting);

            let started = Instant::now();
            let written = call().await;
            drop(permit);
            spent.last_call = started.elapsed();
            histogram!("llm_request_duration_seconds").record(spent.last_call.as_secs_f64());
            spent.calls += 1;
            let outcome = written.as_ref().err().map(|err| err.outcome);
            counter!("llm_requests_total", "outcome" => outcome.map_or("ok", Outcome::label))
                .increment(1);
            let hint = written.as_ref().err().and_then(|err| err.retry_after);
            self.breaker.record(admission, Verdict::of(outcome), hint);
            let err = match written {
                Ok(generated) => return (Asked::Written(generated), spent),
                Err(err) => err,
            };

            let (reason, wait) = match (err.outcome, err.retry_after) {
                (Outcome::RateLimited, Some(hint)) => (WaitReason::RateLimited, self.hinted(hint)),
                (Outcome::ServerError, Some(hint)) => (WaitReason::Unavailable, self.hinted(hint)),
                (Outcome::RateLimited, None) => {
                    hintless_429s += 1;
                    (WaitReason::RateLimited, self.backoff(hintless_429s))
                }
                _ => {
                    // Failed either way; whether the operation finished meanwhile,
                    // the job's failure path finds out.
                    let _ = self.keep(&mut kept, spent, budget).await;
                    return (Asked::Failed(err), spent);
                }
            };
            let wait_ms = wait.as_millis() as u64;
            tracing::info!(error = %err, wait_ms, "the model provider asked for a wait");
            if Instant::now() + wait > patience_ends {
                return self.give_up(reason, spent, kept, budget).await;
            }
            let waiting = Instant::now();
            tokio::time::sleep(wait)
                .instrument(tracing::info_span!(
                    "provider wait",
                    otel.name = "wait for the provider",
                    reason = reason.label(),
                    wait_ms,
                ))
                .await;
            spent.waited += self.waited(reason, waiting);
            if !self.keep(&mut kept, spent, budget).await {
                return (Asked::OperationFinished, spent);
            }
        }
    }

    /// The wait for a provider's hint: a little jitter on top (up to a tenth, so that
    /// the jobs it refused together do not call again together), at most
    /// `LLM_RETRY_AFTER_MAX_SECS`.
    fn hinted(&self, hint: Duration) -> Duration {
        (hint + jitter(hint / 10 + Duration::from_millis(50))).min(self.settings.retry_after_max)
    }

    /// The wait after the n-th `429` without a hint: the backoff, doubling from its
    /// base up to its maximum, plus up to as much again within that maximum.
    fn backoff(&self, n: u32) -> Duration {
        let LimitSettings {
            backoff_base,
            backoff_max,
            ..
        } = self.settings;
        let exponential = backoff_base.saturating_mul(1 << n.saturating_sub(1).min(20));
        let wait = exponential.min(backoff_max);
        (wait + jitter(wait)).min(backoff_max)
    }

    /// Records a wait that began at `since`, when there was one.
    fn waited(&self, reason: WaitReason, since: Instant) -> Duration {
        let waited = since.elapsed();
        if waited >= Duration::from_millis(1) {
            histogram!("llm_wait_seconds", "reason" => reason.label()).record(waited.as_secs_f64());
        }
        waited
    }

    async fn give_up<T>(
        &self,
        reason: WaitReason,
        spent: Spent,
        mut kept: Spent,
        budget: Budget<'_>,
    ) -> (Asked<T>, Spent) {
        tracing::warn!(
            reason = reason.label(),
            waited_ms = spent.waited.as_millis() as u64,
            "the operation's wait budget is spent"
        );
        let _ = self.keep(&mut kept, spent, budget).await;
        (Asked::OutOfPatience(reason), spent)
    }

    /// Writes what `spent` adds to what is `kept` in the operation's row already, and
    /// says whether the operation is still unfinished. Best effort: a lost write costs
    /// the budget's precision, never a question (the operation counts as unfinished).
    async fn keep(&self, kept: &mut Spent, spent: Spent, budget: Budget<'_>) -> bool {
        let calls = spent.calls - kept.calls;
        let waited = spent.waited.saturating_sub(kept.waited);
        let written = match budget.pool.acquire().await {
            Ok(mut conn) => {
                operations::add_provider_cost(
                    &mut conn,
                    budget.operation_id,
                    calls,
                    waited.as_millis() as u64,
                )
                .await
            }
            Err(err) => Err(err),
        };
        match written {
            Ok(unfinished) => {
                *kept = spent;
                unfinished
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not record the wait on the operation");
                true
            }
        }
    }
}

/// A random duration from zero to `up_to`.
fn jitter(up_to: Duration) -> Duration {
    up_to.mul_f64(rand::rng().random::<f64>())
}
