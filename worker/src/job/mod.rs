//! A job, from claim to commit: the path every operation type takes ([`Work`]), with
//! what differs per type in [`question`] (`question_generation`) and [`feedback`]
//! (`feedback_analysis`).
//!
//! One attempt: move the operation to `processing` (counting the attempt), load the
//! context, ask the LLM, and commit the result in ONE transaction (a question: the
//! message, the session's counter and the operation's result; a feedback: the message
//! and the operation's result). What makes it exactly-once:
//! - the operation only moves forward (`attempt::start` refuses a finished one, so a
//!   late or second delivery is acknowledged and dropped);
//! - the commit locks the session row first (a question's counts it), so concurrent
//!   jobs of one session get consecutive question numbers;
//! - `session_messages.operation_id` is UNIQUE, so a second delivery racing the first
//!   cannot add a second message, and then it adds no increment either.
//!
//! Failures: one that may pass returns a retryable error, and apalis' retry layer runs
//! the next attempt after an exponential backoff; on the last attempt, or for one that
//! will not pass, the operation is set `failed` with a sentence for a person and the job
//! ends with [`AbortError`].
//!
//! "Last" is decided from both counters that bound the job, whichever runs out first,
//! each against the job's own `max_attempts` (the api's `LLM_MAX_ATTEMPTS` when it
//! enqueued; the worker has no budget of its own): ours (`operations.attempts`, counted
//! when an attempt starts, so a job re-delivered after a crash keeps its budget) and
//! apalis' own (the task's attempt, which a takeover or a drained shutdown raises
//! without running the handler). When either says last, whatever ends the attempt (a
//! database error, a panic, invalid output) fails the operation; the reconciler
//! ([`crate::upkeep`]) backs that up when even the failure cannot be written.
//!
//! An attempt uses one pooled connection at a time: holding one while acquiring a
//! second lets jobs wait on each other until the pool's timeout. Each database step
//! carries its name (`.context(…)`), so the one log line of a failed attempt says where.

pub mod feedback;
pub mod question;

use crate::limits::{Asked, Budget, Limits};
use crate::llm::{Generated, Llm, LlmError};
use anyhow::Context;
use apalis::prelude::{AbortError, BoxDynError, Data, FromRequest, Task, TaskId};
use futures::FutureExt;
use metrics::{counter, gauge, histogram};
use serde_json::json;
use shared::db::attempt::Started;
use shared::db::{operations, queue};
use shared::domain::{OperationId, OperationType, SessionId};
use shared::jobs::{Job, MAX_ATTEMPTS_CEILING, Origin, PAYLOAD_VERSION};
use sqlx::{Connection, PgConnection, PgPool};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// What every job of this worker shares.
#[derive(Debug)]
pub struct JobState {
    pub pool: PgPool,
    pub llm: Llm,
    /// The provider's limits, as this process meets them.
    pub limits: Limits,
    /// Earlier questions quoted into a prompt (`PROMPT_MAX_EARLIER_QUESTIONS`).
    pub max_earlier_questions: i64,
    /// The operator's intake switch, as this process applies it.
    pub intake: crate::intake::Intake,
}

/// apalis' view of this delivery: which run of the task this is (its stored attempt
/// count, raised by takeovers and drained shutdowns, plus the runs of this delivery),
/// and the `max_attempts` the job was enqueued with.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub attempt: usize,
    pub max_attempts: Option<usize>,
}

impl<Args: Sync> FromRequest<Task<Args>> for Delivery {
    type Error = Infallible;

    async fn from_request(task: &Task<Args>) -> Result<Self, Self::Error> {
        Ok(Self {
            attempt: task.ctx().attempt(),
            max_attempts: task.ctx().max_attempts(),
        })
    }
}

/// Where the job came from (`shared::jobs::Origin`, from its metadata): the request
/// whose id its log lines carry, and the span its runs continue.
#[derive(Debug, Clone, Default)]
pub struct JobOrigin(pub Origin);

impl<Args: Sync> FromRequest<Task<Args>> for JobOrigin {
    type Error = Infallible;

    async fn from_request(task: &Task<Args>) -> Result<Self, Self::Error> {
        Ok(Self(Origin::of(task.metadata())))
    }
}

impl Delivery {
    /// The job's budget of model calls: its `max_attempts` (every job the api pushes
    /// has one; a job pushed by other means without it gets the ceiling).
    fn budget(&self) -> u32 {
        self.max_attempts
            .and_then(|max| u32::try_from(max).ok())
            .unwrap_or(MAX_ATTEMPTS_CEILING)
    }

    /// Whether apalis will not run the task again after a failure of this run: its
    /// attempt count has reached the job's `max_attempts`.
    fn is_last(&self) -> bool {
        self.attempt >= self.budget() as usize
    }
}

/// How one attempt ended, before it is told to apalis.
#[derive(Debug)]
pub enum Ending {
    /// Committed, or nothing left to do (finished already, by this or another delivery).
    Done,
    /// Another attempt may succeed; `is_last` when no attempt follows all the same.
    Retry { why: String, is_last: bool },
    /// The operation is `failed` now; no further attempt.
    Abort(String),
}

/// A retryable failure, as apalis' retry layer sees it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Retryable(String);

/// What differs between operation types: how an attempt starts (and what it reads),
/// what the model is asked, and what the commit writes. The rest, the attempt's
/// budget, the provider's limits, the failure paths and the metrics, is [`handle`]'s,
/// the same for every type.
pub trait Work: Job + Copy + std::fmt::Debug {
    /// What the start reads for the prompt.
    type Inputs: Send;
    /// What the model is asked with.
    type Context: Send + Sync;
    /// What the model's reply becomes.
    type Output: Send;

    fn session_id(&self) -> SessionId;

    /// Marks the operation `processing`, counting the attempt, and reads its inputs;
    /// `None` when the operation has finished or is gone.
    fn start(
        &self,
        conn: &mut PgConnection,
        state: &JobState,
    ) -> impl Future<Output = Result<Option<Started<Self::Inputs>>, sqlx::Error>> + Send;

    /// The model's context from the inputs, or the sentence the operation fails with
    /// when they do not allow one (`None` inputs: the session or the answer is gone).
    fn context(&self, inputs: Option<Self::Inputs>) -> Result<Self::Context, String>;

    /// One request to the model.
    fn ask(
        llm: &Llm,
        context: &Self::Context,
    ) -> impl Future<Output = Result<Generated<Self::Output>, LlmError>> + Send;

    /// The ONE transaction that stores the result and completes the operation.
    fn commit(
        &self,
        state: &JobState,
        generated: Generated<Self::Output>,
        cost: Cost,
    ) -> impl Future<Output = anyhow::Result<Ending>> + Send;
}

/// The failure sentence of `J`'s type for `reason`.
fn sentence<J: Work>(reason: &str) -> String {
    J::TYPE.failure(reason)
}

/// The apalis handler, for every operation type.
pub async fn handle<J: Work>(
    job: J,
    state: Data<Arc<JobState>>,
    task_id: TaskId,
    delivery: Delivery,
    JobOrigin(origin): JobOrigin,
) -> Result<(), BoxDynError> {
    let job_type = J::TYPE.as_str();
    let span = tracing::info_span!(
        "job",
        otel.name = job_type,
        otel.status_code = tracing::field::Empty,
        job_type,
        job_id = %task_id,
        operation_id = %job.operation_id(),
        session_id = %job.session_id(),
        request_id = origin.request_id.as_deref().unwrap_or(""),
        attempt = tracing::field::Empty,
        delivery_attempt = delivery.attempt,
        outcome = tracing::field::Empty,
    );
    // Each run of the job is a child of the span that queued it, so a retried or
    // taken-over job shows every run in the request's trace.
    origin.continue_trace(&span);
    let state = Arc::clone(&state);
    if job.version() > PAYLOAD_VERSION {
        return put_back::<J>(&state, &task_id, job.version())
            .instrument(span)
            .await;
    }
    let is_question = J::TYPE == OperationType::QuestionGeneration;
    let started = Instant::now();
    let apalis_last = delivery.is_last();
    gauge!("jobs_in_flight", "job_type" => job_type).increment(1.0);
    if is_question {
        gauge!("question_jobs_in_flight").increment(1.0);
    }
    // A panic inside one attempt must not take the worker down or leave the job
    // claimed for good: it is caught here and treated as a failure that may pass.
    let mut ending = AssertUnwindSafe(attempt(&state, job, delivery).instrument(span.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Ending::Retry {
            why: "the attempt panicked".to_owned(),
            is_last: apalis_last,
        });
    if let Ending::Retry { why, is_last: true } = &ending {
        // No run follows this one: the operation must end here, whatever ended the
        // attempt. Best effort; the reconciler fails it if even this cannot be written.
        tracing::warn!(reason = %why, "the last attempt failed");
        ending = fail_last::<J>(&state, job.operation_id())
            .instrument(span.clone())
            .await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    gauge!("jobs_in_flight", "job_type" => job_type).decrement(1.0);
    histogram!("job_duration_seconds", "job_type" => job_type).record(elapsed);
    if is_question {
        gauge!("question_jobs_in_flight").decrement(1.0);
        histogram!("question_job_duration_seconds").record(elapsed);
    }

    let _entered = span.enter();
    let finished = |outcome: &'static str| {
        counter!("jobs_finished_total", "job_type" => job_type, "outcome" => outcome).increment(1);
        if is_question {
            counter!("question_jobs_finished_total", "outcome" => outcome).increment(1);
        }
    };
    let outcome = match &ending {
        Ending::Done => "done",
        Ending::Retry { .. } => "retry",
        Ending::Abort(_) => "failed",
    };
    span.record("outcome", outcome);
    if outcome != "done" {
        span.record("otel.status_code", "error");
    }
    match ending {
        Ending::Done => {
            finished("completed");
            Ok(())
        }
        Ending::Retry { why, .. } => {
            counter!("job_retries_total", "job_type" => job_type).increment(1);
            if is_question {
                counter!("question_job_retries_total").increment(1);
            }
            tracing::warn!(reason = %why, "attempt failed; will retry");
            Err(Retryable(why).into())
        }
        Ending::Abort(why) => {
            finished("failed");
            tracing::warn!(reason = %why, "operation failed");
            Err(AbortError::new(Retryable(why)).into())
        }
    }
}

/// How long a job of a payload version this worker does not know waits before a worker
/// takes it again: long enough not to spin while old and new workers run side by side,
/// short next to a rollout.
const PUT_BACK_FOR: Duration = Duration::from_secs(30);

/// Puts back a job written by a newer release (its payload version is past
/// [`PAYLOAD_VERSION`]) for a worker that knows it, counting no attempt: neither
/// ours (nothing was started) nor apalis' (its acknowledgement finds the job no longer
/// claimed by this worker, and leaves it). If the put-back cannot be written, the run
/// ends with an error like any other, and apalis retries it.
async fn put_back<J: Work>(
    state: &JobState,
    task_id: &TaskId,
    version: u32,
) -> Result<(), BoxDynError> {
    let worker = crate::queue::current_worker_name(J::TYPE);
    let mut conn = state.pool.acquire().await?;
    if !queue::put_back(&mut conn, &task_id.to_string(), &worker, PUT_BACK_FOR).await? {
        // Not claimed by this worker any more (taken over meanwhile): its
        // acknowledgement will not touch the row either. An error, never `Ok`, so that
        // nothing here can read as the job being done.
        return Err(Retryable("a job of a newer release, no longer this worker's".into()).into());
    }
    let reason = "unknown_payload_version";
    counter!("jobs_put_back_total", "job_type" => J::TYPE.as_str(), "reason" => reason)
        .increment(1);
    if J::TYPE == OperationType::QuestionGeneration {
        counter!("question_jobs_put_back_total", "reason" => reason).increment(1);
    }
    tracing::warn!(
        payload_version = version,
        known_up_to = PAYLOAD_VERSION,
        "a job of a newer release: put back for a worker that knows its payload"
    );
    Ok(())
}

/// One attempt. Database errors are failures that may pass (the database may be back
/// on the next attempt); nothing here leaves a partial write behind.
async fn attempt<J: Work>(state: &JobState, job: J, delivery: Delivery) -> Ending {
    // Until the attempt is counted, only apalis' counter knows whether it is the last.
    let mut is_last = delivery.is_last();
    match try_attempt(state, job, delivery.budget(), &mut is_last).await {
        Ok(ending) => ending,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "database error during the attempt");
            let unreachable = err
                .chain()
                .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
                .any(shared::db::is_unavailable);
            if unreachable {
                wait_for_database(&state.pool).await;
            }
            Ending::Retry {
                why: format!("database error: {err:#}"),
                is_last,
            }
        }
    }
}

/// The longest a job waits for an unreachable database before its next attempt.
const DATABASE_WAIT_MAX: Duration = Duration::from_secs(60);

/// Waits until the database answers again (or [`DATABASE_WAIT_MAX`] has passed), so
/// that an outage costs a job one attempt rather than every attempt its backoff fits
/// into the outage: apalis counts each run, and a restart of PostgreSQL outlasts a
/// backoff of milliseconds. The next attempt (or, on the last, the failure write) then
/// finds the database back. A wait, not a retry: nothing is counted meanwhile.
async fn wait_for_database(pool: &PgPool) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    while started.elapsed() < DATABASE_WAIT_MAX {
        let answered = match pool.acquire().await {
            Ok(mut conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
            Err(_) => false,
        };
        if answered {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "the database answers again"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn try_attempt<J: Work>(
    state: &JobState,
    job: J,
    budget: u32,
    is_last: &mut bool,
) -> anyhow::Result<Ending> {
    let id = job.operation_id();
    let mut conn = state
        .pool
        .acquire()
        .await
        .context("acquiring a connection to start the attempt")?;
    let Some(started) = job
        .start(&mut conn, state)
        .await
        .context("marking the operation processing and reading its inputs")?
    else {
        tracing::info!("operation already finished or gone; dropping the job");
        return Ok(Ending::Done);
    };
    tracing::Span::current().record("attempt", started.attempts);
    let attempts = u32::try_from(started.attempts).unwrap_or(u32::MAX);
    if attempts > budget {
        // Re-delivered after its budget was spent (e.g. a worker died on the last
        // attempt before it could record the failure).
        return fail(&mut conn, id, &sentence::<J>(ATTEMPTS_SPENT)).await;
    }
    *is_last |= attempts >= budget;

    let context = match job.context(started.inputs) {
        Ok(context) => context,
        Err(sentence) => return fail(&mut conn, id, &sentence).await,
    };
    // No connection is held while the LLM thinks.
    drop(conn);

    let patience = Budget {
        pool: &state.pool,
        operation_id: id,
        waited_before: Duration::from_millis(u64::try_from(started.waited_ms).unwrap_or(0)),
    };
    let (asked, spent) = state
        .limits
        .ask(|| J::ask(&state.llm, &context), patience)
        .await;
    let generated = match asked {
        Asked::Written(generated) => generated,
        Asked::Failed(err) => return llm_failure::<J>(state, id, err, *is_last).await,
        Asked::OperationFinished => {
            tracing::info!("operation finished while its job waited on the provider");
            return Ok(Ending::Done);
        }
        Asked::OutOfPatience(_) => {
            let mut conn = (state.pool.acquire().await)
                .context("acquiring a connection to record the spent wait budget")?;
            let sentence = crate::llm::Outcome::RateLimited.sentence(J::TYPE);
            return fail(&mut conn, id, &sentence).await;
        }
    };
    let cost = Cost {
        model_calls: u32::try_from(started.model_calls).unwrap_or(0) + spent.calls,
        waited: patience.waited_before + spent.waited,
        latency: spent.last_call,
    };
    job.commit(state, generated, cost)
        .instrument(tracing::info_span!("commit"))
        .await
}

/// What a result cost, for its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// Every model call made for it, refused ones included.
    pub model_calls: u32,
    /// Time spent waiting on the provider.
    pub waited: Duration,
    /// How long the call that wrote it took.
    pub latency: Duration,
}

impl Cost {
    /// The metadata every message the model wrote carries: which operation, which model
    /// and prompt, what it cost, and the provider's usage when it reported one.
    pub fn metadata<T>(
        &self,
        operation_id: OperationId,
        generated: &Generated<T>,
        prompt_version: &str,
    ) -> serde_json::Value {
        let mut metadata = json!({
            "operation_id": operation_id,
            "model": generated.model,
            "prompt_version": prompt_version,
            "attempts": self.model_calls,
            "waited_ms": self.waited.as_millis() as u64,
            "latency_ms": self.latency.as_millis() as u64,
        });
        if let Some(usage) = generated.usage {
            metadata["usage"] = json!(usage);
        }
        metadata
    }
}

/// The reason of a failure after every attempt was spent.
const ATTEMPTS_SPENT: &str = "every attempt failed.";
/// The reason of a failure on a session that is no longer active.
const SESSION_NOT_ACTIVE: &str = "the interview session is no longer active.";

async fn llm_failure<J: Work>(
    state: &JobState,
    id: OperationId,
    err: LlmError,
    is_last: bool,
) -> anyhow::Result<Ending> {
    tracing::warn!(error = %err, is_last, "LLM request failed");
    if err.outcome.may_pass() && !is_last {
        Ok(Ending::Retry {
            why: err.to_string(),
            is_last,
        })
    } else {
        // The LLM call held no connection; this is the attempt's only one now.
        let mut conn = (state.pool.acquire().await)
            .context("acquiring a connection to record the model's failure")?;
        fail(&mut conn, id, &err.outcome.sentence(J::TYPE)).await
    }
}

/// The transaction that ends an operation, on `conn`: whichever way it commits, the
/// operation finishes, and its long polls are woken after the commit, on `conn`, so that
/// the commit waits for no other notifying one (`shared::db::wake`). The caller sends
/// `Wake::operation_finished` on `conn` once the transaction committed.
pub async fn ending_transaction(
    conn: &mut PgConnection,
) -> anyhow::Result<sqlx::Transaction<'_, sqlx::Postgres>> {
    let mut tx = (conn.begin().await).context("beginning the commit's transaction")?;
    shared::db::wake::after_commit(&mut tx)
        .await
        .context("keeping the commit's notification for after it")?;
    Ok(tx)
}

/// Sets the operation `failed` (only if it has not finished) and ends the job.
pub async fn fail(
    conn: &mut PgConnection,
    id: OperationId,
    sentence: &str,
) -> anyhow::Result<Ending> {
    operations::fail(conn, id, sentence)
        .await
        .context("recording the operation's failure")?;
    Ok(Ending::Abort(sentence.to_owned()))
}

/// Ends the operation after a last attempt that failed on something other than the
/// model (a database error, a panic). Whether or not the write lands, the job ends:
/// if it does not, the job is terminal while the operation is not, which is what the
/// reconciler looks for.
async fn fail_last<J: Work>(state: &JobState, id: OperationId) -> Ending {
    let sentence = sentence::<J>(ATTEMPTS_SPENT);
    let written = match state.pool.acquire().await {
        Ok(mut conn) => operations::fail(&mut conn, id, &sentence).await.map(|_| ()),
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        tracing::error!(error = %err, "recording the last attempt's failure failed; the reconciler will");
    }
    Ending::Abort(sentence)
}
