//! The `question_generation` job, from claim to commit.
//!
//! One attempt: move the operation to `processing` (counting the attempt), load the
//! context, ask the LLM once, and commit the question, the session's counter and the
//! operation's result in ONE transaction. What makes it exactly-once:
//! - the operation only moves forward (`attempt::start` refuses a finished one, so a
//!   late or second delivery is acknowledged and dropped);
//! - the commit counts the question first, which locks the session row, so concurrent
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

use crate::limits::{Asked, Budget, Limits};
use crate::llm::{Generated, Llm, LlmError, Outcome};
use crate::prompt::{PROMPT_VERSION, QuestionContext};
use anyhow::Context;
use apalis::prelude::{AbortError, BoxDynError, Data, FromRequest, Task, TaskId};
use futures::FutureExt;
use metrics::{counter, gauge, histogram};
use serde_json::json;
use shared::db::attempt::{self, Completion};
use shared::db::{operations, queue, sessions};
use shared::domain::{OperationId, QuestionType, SessionStatus};
use shared::jobs::{MAX_ATTEMPTS_CEILING, PAYLOAD_VERSION, QuestionGenerationJob};
use sqlx::{PgConnection, PgPool};
use std::convert::Infallible;
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
enum Ending {
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

/// The apalis handler.
pub async fn handle(
    job: QuestionGenerationJob,
    state: Data<Arc<JobState>>,
    task_id: TaskId,
    delivery: Delivery,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "job",
        job_id = %task_id,
        operation_id = %job.operation_id,
        session_id = %job.session_id,
        attempt = tracing::field::Empty,
        delivery_attempt = delivery.attempt,
    );
    let state = Arc::clone(&state);
    if job.version > PAYLOAD_VERSION {
        return put_back(&state, &task_id, job.version)
            .instrument(span)
            .await;
    }
    let started = Instant::now();
    let apalis_last = delivery.is_last();
    gauge!("question_jobs_in_flight").increment(1.0);
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
        ending = fail_last(&state, job.operation_id)
            .instrument(span.clone())
            .await;
    }
    gauge!("question_jobs_in_flight").decrement(1.0);
    histogram!("question_job_duration_seconds").record(started.elapsed().as_secs_f64());

    let _entered = span.enter();
    match ending {
        Ending::Done => {
            counter!("question_jobs_finished_total", "outcome" => "completed").increment(1);
            Ok(())
        }
        Ending::Retry { why, .. } => {
            counter!("question_job_retries_total").increment(1);
            tracing::warn!(reason = %why, "attempt failed; will retry");
            Err(Retryable(why).into())
        }
        Ending::Abort(why) => {
            counter!("question_jobs_finished_total", "outcome" => "failed").increment(1);
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
async fn put_back(state: &JobState, task_id: &TaskId, version: u32) -> Result<(), BoxDynError> {
    let worker = crate::queue::current_worker_name();
    let mut conn = state.pool.acquire().await?;
    if !queue::put_back(&mut conn, &task_id.to_string(), &worker, PUT_BACK_FOR).await? {
        // Not claimed by this worker any more (taken over meanwhile): its
        // acknowledgement will not touch the row either. An error, never `Ok`, so that
        // nothing here can read as the job being done.
        return Err(Retryable("a job of a newer release, no longer this worker's".into()).into());
    }
    counter!("question_jobs_put_back_total", "reason" => "unknown_payload_version").increment(1);
    tracing::warn!(
        payload_version = version,
        known_up_to = PAYLOAD_VERSION,
        "a job of a newer release: put back for a worker that knows its payload"
    );
    Ok(())
}

/// One attempt. Database errors are failures that may pass (the database may be back
/// on the next attempt); nothing here leaves a partial write behind.
async fn attempt(state: &JobState, job: QuestionGenerationJob, delivery: Delivery) -> Ending {
    // Until the attempt is counted, only apalis' counter knows whether it is the last.
    let mut is_last = delivery.is_last();
    match try_attempt(state, job, delivery.budget(), &mut is_last).await {
        Ok(ending) => ending,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "database error during the attempt");
            Ending::Retry {
                why: format!("database error: {err:#}"),
                is_last,
            }
        }
    }
}

async fn try_attempt(
    state: &JobState,
    job: QuestionGenerationJob,
    budget: u32,
    is_last: &mut bool,
) -> anyhow::Result<Ending> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .context("acquiring a connection to start the attempt")?;
    let Some(started) = attempt::start(
        &mut conn,
        job.operation_id,
        job.session_id,
        state.max_earlier_questions,
    )
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
        return fail(&mut conn, job.operation_id, ATTEMPTS_SPENT).await;
    }
    *is_last |= attempts >= budget;

    let Some(inputs) = started.inputs else {
        return fail(&mut conn, job.operation_id, operations::SESSION_GONE).await;
    };
    if inputs.status != SessionStatus::Active {
        return fail(&mut conn, job.operation_id, SESSION_NOT_ACTIVE).await;
    }
    let context = QuestionContext {
        job_posting: inputs.job_posting,
        resume: inputs.resume,
        earlier_questions: inputs.earlier_questions,
        questions_asked: inputs.current_question_number,
        requested_type: QuestionType::for_position(inputs.current_question_number),
    };
    // No connection is held while the LLM thinks.
    drop(conn);

    let patience = Budget {
        pool: &state.pool,
        operation_id: job.operation_id,
        waited_before: Duration::from_millis(u64::try_from(started.waited_ms).unwrap_or(0)),
    };
    let (asked, spent) = state.limits.ask(&state.llm, &context, patience).await;
    let generated = match asked {
        Asked::Written(generated) => generated,
        Asked::Failed(err) => return llm_failure(state, job.operation_id, err, *is_last).await,
        Asked::OperationFinished => {
            tracing::info!("operation finished while its job waited on the provider");
            return Ok(Ending::Done);
        }
        Asked::OutOfPatience(_) => {
            let mut conn = (state.pool.acquire().await)
                .context("acquiring a connection to record the spent wait budget")?;
            return fail(&mut conn, job.operation_id, Outcome::RateLimited.sentence()).await;
        }
    };
    let cost = Cost {
        model_calls: u32::try_from(started.model_calls).unwrap_or(0) + spent.calls,
        waited: patience.waited_before + spent.waited,
        latency: spent.last_call,
    };
    commit(state, job, generated, cost).await
}

/// What a question cost, for its metadata.
#[derive(Debug, Clone, Copy)]
struct Cost {
    /// Every model call made for it, refused ones included.
    model_calls: u32,
    /// Time spent waiting on the provider.
    waited: Duration,
    /// How long the call that wrote it took.
    latency: Duration,
}

const ATTEMPTS_SPENT: &str = "The question could not be generated: every attempt failed.";
const SESSION_NOT_ACTIVE: &str =
    "The question could not be generated: the interview session is no longer active.";

async fn llm_failure(
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
        fail(&mut conn, id, err.outcome.sentence()).await
    }
}

/// Sets the operation `failed` (only if it has not finished) and ends the job.
async fn fail(conn: &mut PgConnection, id: OperationId, sentence: &str) -> anyhow::Result<Ending> {
    operations::fail(conn, id, sentence)
        .await
        .context("recording the operation's failure")?;
    Ok(Ending::Abort(sentence.to_owned()))
}

/// Ends the operation after a last attempt that failed on something other than the
/// model (a database error, a panic). Whether or not the write lands, the job ends:
/// if it does not, the job is terminal while the operation is not, which is what the
/// reconciler looks for.
async fn fail_last(state: &JobState, id: OperationId) -> Ending {
    let written = match state.pool.acquire().await {
        Ok(mut conn) => operations::fail(&mut conn, id, ATTEMPTS_SPENT)
            .await
            .map(|_| ()),
        Err(err) => Err(err),
    };
    if let Err(err) = written {
        tracing::error!(error = %err, "recording the last attempt's failure failed; the reconciler will");
    }
    Ending::Abort(ATTEMPTS_SPENT.to_owned())
}

/// The ONE transaction: message, counter and result together, or nothing.
async fn commit(
    state: &JobState,
    job: QuestionGenerationJob,
    generated: Generated,
    cost: Cost,
) -> anyhow::Result<Ending> {
    let mut metadata = json!({
        "operation_id": job.operation_id,
        "model": generated.model,
        "prompt_version": PROMPT_VERSION,
        "attempts": cost.model_calls,
        "waited_ms": cost.waited.as_millis() as u64,
        "latency_ms": cost.latency.as_millis() as u64,
    });
    if let Some(usage) = generated.usage {
        metadata["usage"] = json!(usage);
    }
    // Every call the question took is billed, but only the one that wrote it reports
    // usage here: the figure is that call's tokens (`llm_tokens_total` counts them all).
    let tokens = generated.usage.map(|usage| usage.total_tokens);
    let question = attempt::NewQuestion {
        session_id: job.session_id,
        operation_id: job.operation_id,
        content: &generated.question.text,
        question_type: generated.question.question_type,
        metadata: &metadata,
    };
    let mut tx = (state.pool.begin().await).context("beginning the commit's transaction")?;
    // An ending that wrote what must not stand (`AlreadyStored`, `OperationFinished`)
    // returns without committing: the dropped transaction rolls it back.
    let completion = attempt::complete(&mut tx, &question)
        .await
        .context("storing the question, its number and the operation's result")?;
    match completion {
        Completion::Completed {
            question_number,
            message_id,
        } => {
            tx.commit().await.context("committing the question")?;
            if let Some(tokens) = tokens {
                histogram!("llm_tokens_per_question").record(f64::from(tokens));
            }
            tracing::info!(question_number, message_id = %message_id, "question committed");
            Ok(Ending::Done)
        }
        Completion::SessionNotActive => {
            // Nothing was written: the failure goes on the same connection.
            let session = sessions::find(&mut tx, job.session_id)
                .await
                .context("reading the session that refused the question")?;
            let sentence = match session {
                Some(_) => SESSION_NOT_ACTIVE,
                None => operations::SESSION_GONE,
            };
            let ending = fail(&mut tx, job.operation_id, sentence).await?;
            tx.commit()
                .await
                .context("committing the operation's failure")?;
            Ok(ending)
        }
        Completion::AlreadyStored => {
            tracing::info!("another delivery already stored this operation's question");
            Ok(Ending::Done)
        }
        Completion::OperationFinished => {
            // Failed meanwhile by another delivery, or cancelled: keep its verdict.
            tracing::info!("operation finished elsewhere; discarding this question");
            Ok(Ending::Done)
        }
    }
}
