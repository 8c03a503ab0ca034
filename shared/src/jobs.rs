//! The jobs, one per operation type (`question_generation`, `feedback_analysis`): their
//! payloads, their queues (a queue is named for its operation type, so SQL can join a
//! job to its operation by `job_type = operation_type`), and the enqueue inside the
//! caller's transaction.
//!
//! The api inserts the operation and pushes the job in ONE transaction (a crash between
//! two separate writes would leave an operation `pending` forever, or a job for
//! nothing). apalis' own `PostgresStorage::push` uses the pool, so we call its
//! executor-generic `push_tasks` with the caller's connection instead. The rest of
//! the SQL on apalis' tables is in [`crate::db::queue`], `retention` and `board`.

use crate::db::wake::{self, Wake};
use crate::domain::{MessageId, OperationId, OperationType, SessionId};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::metadata::{Metadata as _, MetadataStore, TracingContext};
use apalis_core::task::task_id::TaskId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// Why an enqueue failed (apalis' error type: a database error, or a payload that
/// would not encode).
pub use apalis_postgres::Error as EnqueueError;

/// The apalis queue (`apalis.jobs.job_type`) that question generations go through.
pub const QUESTION_GENERATION_QUEUE: &str = OperationType::QuestionGeneration.as_str();
/// The apalis queue of feedback analyses.
pub const FEEDBACK_ANALYSIS_QUEUE: &str = OperationType::FeedbackAnalysis.as_str();
/// Every queue of ours: what the gauges, the board, retention and the takeover cover.
pub const QUEUES: [&str; 2] = [QUESTION_GENERATION_QUEUE, FEEDBACK_ANALYSIS_QUEUE];

/// A job payload: which operation it runs, and the queue it goes through.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The operation type the job runs, whose name is its queue's.
    const TYPE: OperationType;

    /// The operation it runs.
    fn operation_id(&self) -> OperationId;

    /// The payload's version ([`PAYLOAD_VERSION`] when written by this release).
    fn version(&self) -> u32;

    /// The job's id in apalis: the operation id read as a ULID (a v7 UUID is a valid
    /// one), so a job can be traced to its operation and back.
    fn task_id(&self) -> TaskId {
        TaskId::from_ulid(ulid::Ulid(self.operation_id().0.as_u128()))
    }
}

/// The payload version this release writes, and the newest it can run. A release
/// that changes what a payload means raises it; a worker that meets a newer one puts
/// the job back for a worker that knows it (docs/DESIGN.md, "Upgrades").
pub const PAYLOAD_VERSION: u32 = 1;

/// What a worker needs to generate one question; everything else it reads fresh from
/// the database, so a job never acts on stale data.
///
/// Fields are only ever added, with a default, never renamed or removed in one
/// release: serde ignores fields it does not know, so an older worker reads a newer
/// payload, and a newer one an older payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionGenerationJob {
    /// The payload's version ([`PAYLOAD_VERSION`] when written by this release); `1`
    /// for payloads written before versions existed.
    #[serde(default = "first_version")]
    pub version: u32,
    pub operation_id: OperationId,
    pub session_id: SessionId,
}

fn first_version() -> u32 {
    1
}

impl QuestionGenerationJob {
    /// The payload of this release for `operation_id` of `session_id`.
    pub fn new(operation_id: OperationId, session_id: SessionId) -> Self {
        Self {
            version: PAYLOAD_VERSION,
            operation_id,
            session_id,
        }
    }
}

impl Job for QuestionGenerationJob {
    const TYPE: OperationType = OperationType::QuestionGeneration;

    fn operation_id(&self) -> OperationId {
        self.operation_id
    }

    fn version(&self) -> u32 {
        self.version
    }
}

/// What a worker needs to analyse one answer; like [`QuestionGenerationJob`], the rest
/// is read fresh, and fields are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackAnalysisJob {
    #[serde(default = "first_version")]
    pub version: u32,
    pub operation_id: OperationId,
    pub session_id: SessionId,
    /// The answer analysed.
    pub answer_id: MessageId,
}

impl FeedbackAnalysisJob {
    /// The payload of this release for `operation_id`, on `answer_id` of `session_id`.
    pub fn new(operation_id: OperationId, session_id: SessionId, answer_id: MessageId) -> Self {
        Self {
            version: PAYLOAD_VERSION,
            operation_id,
            session_id,
            answer_id,
        }
    }
}

impl Job for FeedbackAnalysisJob {
    const TYPE: OperationType = OperationType::FeedbackAnalysis;

    fn operation_id(&self) -> OperationId {
        self.operation_id
    }

    fn version(&self) -> u32 {
        self.version
    }
}

/// `run_at` of a held job, as seconds since the epoch: 9999-12-31 23:59:59 UTC, which
/// apalis' fetch (`run_at < now()`) never reaches. The migrations' SQL function
/// `question_job_held_until()` is the same instant.
pub const HELD_UNTIL: u64 = 253_402_300_799;

/// The most attempts a job may be enqueued with (`LLM_MAX_ATTEMPTS` is 1 to this). The
/// worker's retry layer allows this many, so the job's own `max_attempts` is what binds.
pub const MAX_ATTEMPTS_CEILING: u32 = 100;

/// Pushes the job on `conn` (the caller's open transaction), on its type's queue;
/// `held` when an earlier question of the session is unfinished, so that the job waits
/// until that one ends (the trigger `operations_release_next_question` lets it run
/// then). Only question jobs are ever held.
///
/// `max_attempts` is the job's whole budget of model calls that no wait explains: the
/// worker reads it from the job (it has no setting of its own), and apalis' storage
/// stops re-fetching a failed row there (docs/APALIS.md, "Retries"). The operation id
/// doubles as the job's idempotency key, so a second job for one
/// operation is refused by apalis' unique index.
///
/// The job's metadata carries where it came from ([`Origin`]), for the worker's log
/// lines and its spans.
///
/// The insert does not notify the workers inside the transaction: the caller sends the
/// returned [`Wake`] after its commit ([`crate::db::wake`] says why).
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    max_attempts: u32,
    held: bool,
    origin: &Origin,
) -> Result<Wake, EnqueueError> {
    wake::after_commit(conn).await?;
    let bytes = serde_json::to_vec(job).map_err(EnqueueError::JsonError)?;
    let mut task = TaskBuilder::new(bytes)
        .task_id(job.task_id())
        .idempotency_key(job.operation_id().to_string())
        .max_attempts(max_attempts as usize)
        .with_metadata(origin.metadata());
    if held {
        task = task.run_at_timestamp(HELD_UNTIL);
    }
    let task = task.build();
    apalis_postgres::queries::push_tasks(conn, J::TYPE.as_str(), vec![task]).await?;
    Ok(Wake::job(
        J::TYPE.as_str(),
        &job.task_id().to_string(),
        !held,
    ))
}

/// The metadata key of the id of the request that queued a job.
pub const REQUEST_ID_KEY: &str = "request_id";

/// The longest request id carried into a job: a client may send its own `x-request-id`,
/// and the job's row and every log line of the worker repeat it.
const REQUEST_ID_MAX: usize = 128;

/// Where a job came from, carried in apalis' metadata column (`apalis.jobs.metadata`):
/// the request's id, for the worker's log lines, and the W3C trace context of the
/// span that queued it, in apalis' own [`TracingContext`], so that each run of the job
/// is a child of that span.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    /// Read back from a job's metadata; at the enqueue, the current span's is taken.
    pub trace: Option<TracingContext>,
}

impl Origin {
    /// The request `request_id` (cut to printable ASCII, at most 128 characters).
    pub fn request(request_id: &str) -> Self {
        let kept: String = request_id
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(REQUEST_ID_MAX)
            .collect();
        Self {
            request_id: (!kept.is_empty()).then_some(kept),
            trace: None,
        }
    }

    /// What a job's metadata says of its origin; a context that does not parse is
    /// none.
    pub fn of(metadata: &MetadataStore) -> Self {
        Self {
            request_id: metadata.get(REQUEST_ID_KEY).map(str::to_owned),
            trace: TracingContext::extract(metadata).ok(),
        }
    }

    /// Makes the span that queued the job the parent of `span`, when the job carries
    /// its context and traces are exported.
    pub fn continue_trace(&self, span: &tracing::Span) {
        let Some(trace) = &self.trace else {
            return;
        };
        if let (Some(trace_id), Some(span_id)) = (trace.trace_id(), trace.span_id()) {
            crate::telemetry::continue_remote(
                span,
                trace_id,
                span_id,
                trace.trace_flags().unwrap_or_default(),
                trace.trace_state().as_deref(),
            );
        }
    }

    /// The job's metadata: the request id, and the current span's trace context when
    /// traces are exported and it is sampled.
    fn metadata(&self) -> MetadataStore {
        let mut store = MetadataStore::new();
        // A fresh store refuses neither key.
        if let Some(id) = &self.request_id {
            let _ = store.insert(REQUEST_ID_KEY, id.clone());
        }
        if let Some((trace_id, span_id, flags, state)) = crate::telemetry::current_trace_context() {
            let mut context = TracingContext::new()
                .with_trace_id(trace_id)
                .with_span_id(span_id)
                .with_trace_flags(flags);
            if !state.is_empty() {
                context = context.with_trace_state(state);
            }
            let _ = context.inject(&mut store);
        }
        store
    }
}
