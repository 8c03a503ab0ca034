//! What the endpoints that queue model work share (generate-question, feedback): one
//! transaction that holds the session's row lock from the first read to the commit,
//! the `Idempotency-Key` and its replay, the per-user rate limit (ONE bucket for all
//! model work), the per-session cap of unfinished operations, the operation and its job
//! written together, and the `202` that points at the operation. Each endpoint adds
//! its own checks between [`Enqueue::begin`] and [`Enqueue::admit`].
//!
//! The operation row and its job are written in ONE transaction, so either both exist
//! or neither does: a crash in between can neither leave an operation `pending` forever
//! nor a job for nothing.

use crate::error::{ApiError, Context};
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::db::operations::{self, Keyed, Operation, Target, Unfinished};
use shared::db::rate_limits;
use shared::db::sessions::{self, Session};
use shared::db::wake::Wake;
use shared::domain::{OperationId, OperationType, SessionId, UserId};
use shared::jobs::{self, Job};
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tracing::Instrument;

/// The header that makes a retried request return the first one's operation.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// How long an idempotency key keeps pointing at its operation.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;
/// What the client should wait before its first poll: generation takes 2–10 s.
pub const RETRY_AFTER_SECS: u64 = 2;
/// What a client that hit the per-session cap is told to wait: about one question.
const PENDING_CAP_RETRY_AFTER_SECS: u64 = 5;
/// The rate limit's bucket in `rate_limit_counters` (`RATE_LIMIT_GENERATE_PER_MINUTE`):
/// every request for model work counts here, questions and feedback together, since
/// both cost the same provider. Named for its first user, and kept so: renaming it
/// would reset every user's count mid-minute during a rollout.
const GENERATE_BUCKET: &str = "generate_question";

/// A request for model work on a session, between its session's lock and its commit.
#[derive(Debug)]
pub struct Enqueue<'k> {
    /// The request's transaction, on the handler's connection, holding the session's
    /// row lock: the endpoint's own checks read through it, so they see what the
    /// commit will.
    pub tx: Transaction<'k, Postgres>,
    /// The session, as locked.
    pub session: Session,
    user: UserId,
    target: Target,
    key: Option<&'k str>,
    /// The request's `x-request-id` (set by the router when the client sent none).
    request_id: &'k str,
}

/// How [`Enqueue::begin`] went.
#[derive(Debug)]
pub enum Begun<'k> {
    /// An earlier request with the same key made the operation: this is its `202`.
    Replayed(Response),
    /// A new request: the endpoint checks it, then [`Enqueue::admit`]s and commits it.
    New(Enqueue<'k>),
}

impl<'k> Enqueue<'k> {
    /// Checks the `Idempotency-Key` header (`422`), then, in a new transaction on
    /// `conn`, locks the user's session (`404 SESSION_NOT_FOUND`) and replays the key:
    /// the earlier operation when it was made for this same `target`,
    /// `422 IDEMPOTENCY_KEY_REUSED` when for anything else.
    ///
    /// The handler owns `conn` so that it can send the [`Wake`] that [`Enqueue::commit`]
    /// returns on the connection that committed, without going back to the pool.
    pub async fn begin(
        state: &AppState,
        conn: &'k mut PgConnection,
        user: UserId,
        target: Target,
        headers: &'k HeaderMap,
    ) -> Result<Begun<'k>, ApiError> {
        let key = idempotency_key(headers)?;
        let mut tx = conn.begin().await.context("beginning a transaction")?;
        let session = sessions::lock_owned(&mut tx, session_of(target), user)
            .await
            .context("locking the session")?
            .ok_or(ApiError::SessionNotFound)?;
        if let Some(key) = key {
            operations::release_expired_key(&mut tx, user, key, IDEMPOTENCY_TTL_SECS)
                .await
                .context("releasing an expired idempotency key")?;
            if let Some(earlier) = replay(&mut tx, user, target, key).await? {
                return Ok(Begun::Replayed(accepted(earlier, state)));
            }
        }
        Ok(Begun::New(Enqueue {
            tx,
            session,
            user,
            target,
            key,
            request_id: headers
                .get(super::REQUEST_ID.as_str())
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default(),
        }))
    }

    /// Counts the request against the user's rate limit, then refuses it (`429`) when
    /// the session holds `MAX_PENDING_PER_SESSION` unfinished operations of any type;
    /// the session's unfinished operations otherwise.
    pub async fn admit(&mut self, state: &AppState) -> Result<Unfinished, ApiError> {
        per_user_limit(
            &mut self.tx,
            self.user,
            GENERATE_BUCKET,
            state.limits.generate_per_minute,
        )
        .await?;
        let unfinished = operations::count_unfinished(&mut self.tx, self.session.id)
            .await
            .context("counting the session's unfinished operations")?;
        let cap = state.limits.max_pending_per_session;
        if cap > 0 && unfinished.all >= i64::from(cap) {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: PENDING_CAP_RETRY_AFTER_SECS,
            });
        }
        Ok(unfinished)
    }

    /// Inserts the operation and pushes its job (`held`: it waits for the session's
    /// earlier question to end), commits both, and answers `202`, with the workers'
    /// wake-up for the handler to send on its connection ([`shared::db::wake`]). When a
    /// concurrent request with the same key committed first, answers with its operation
    /// instead, and nothing to wake.
    pub async fn commit<J: Job>(
        mut self,
        state: &AppState,
        job: impl FnOnce(OperationId) -> J,
        held: bool,
    ) -> Result<(Response, Wake), ApiError> {
        let id = OperationId::new();
        let inserted = operations::insert(&mut self.tx, id, self.user, self.target, self.key)
            .await
            .context("inserting the operation")?;
        let Some(operation) = inserted else {
            // ON CONFLICT waited for the other request's commit, so its operation is
            // there for the next statement to read (a new snapshot, at READ COMMITTED);
            // this transaction has nothing to keep, and rolls back when dropped.
            let key = self.key.unwrap_or_default();
            return replay(&mut self.tx, self.user, self.target, key)
                .await?
                .map(|operation| (accepted(operation, state), Wake::default()))
                .ok_or_else(|| {
                    ApiError::internal(
                        "replaying the operation of a concurrent request",
                        anyhow::anyhow!("idempotency key conflict without a stored operation"),
                    )
                });
        };
        let origin = jobs::Origin::request(self.request_id);
        let wake = jobs::enqueue(
            &mut self.tx,
            &job(id),
            state.limits.llm_max_attempts,
            held,
            &origin,
        )
        .instrument(tracing::info_span!("enqueue", job_type = J::TYPE.as_str(), operation_id = %id))
        .await
        .context("queueing the job")?;
        self.tx
            .commit()
            .await
            .context("committing the operation and its job")?;
        tracing::info!(operation_id = %id, session_id = %self.session.id,
            operation_type = J::TYPE.as_str(), "operation queued");
        Ok((accepted(operation, state), wake))
    }
}

/// The session a target is on.
fn session_of(target: Target) -> SessionId {
    match target {
        Target::Question(session) | Target::Feedback(session, _) => session,
    }
}

/// What an operation found by its key was made for; `None` once its session is gone.
fn target_of(keyed: &Keyed) -> Option<Target> {
    match (
        keyed.operation.operation_type,
        keyed.session_id,
        keyed.answer_id,
    ) {
        (OperationType::QuestionGeneration, Some(session), None) => Some(Target::Question(session)),
        (OperationType::FeedbackAnalysis, Some(session), Some(answer)) => {
            Some(Target::Feedback(session, answer))
        }
        _ => None,
    }
}

/// The operation an earlier request with `key` created, if it was for this same
/// `target` (session, type and answer); `IDEMPOTENCY_KEY_REUSED` if for anything else.
async fn replay(
    conn: &mut PgConnection,
    user: UserId,
    target: Target,
    key: &str,
) -> Result<Option<Operation>, ApiError> {
    let earlier = operations::find_by_idempotency_key(conn, user, key)
        .await
        .context("reading the operation of the idempotency key")?;
    match earlier {
        Some(earlier) if target_of(&earlier) == Some(target) => Ok(Some(earlier.operation)),
        Some(_) => Err(ApiError::IdempotencyKeyReused),
        None => Ok(None),
    }
}

/// Counts one hit against the user's `bucket` in the caller's transaction, and refuses
/// past `per_minute` (0: no limit) with `429` and the seconds left in the minute. The
/// hit is in the transaction, so a request refused later (or here) leaves no count.
pub async fn per_user_limit(
    tx: &mut PgConnection,
    user: UserId,
    bucket: &str,
    per_minute: u32,
) -> Result<(), ApiError> {
    if per_minute == 0 {
        return Ok(());
    }
    let window = rate_limits::hit(tx, user, bucket)
        .await
        .context("counting the hit against the rate limit")?;
    if window.hits > per_minute as i32 {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: window.seconds_left.ceil().max(1.0) as u64,
        });
    }
    Ok(())
}

/// The `Idempotency-Key` header, if sent: 1 to 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    });
    key.map(Some).ok_or_else(|| {
        ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )
    })
}

/// `202` with the operation, where to poll it, and when (later while intake is
/// paused: `crate::intake`).
fn accepted(operation: Operation, state: &AppState) -> Response {
    let location = format!("/api/v1/operations/{}", operation.id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(operation)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    let retry_after = state.intake.retry_after_secs(RETRY_AFTER_SECS);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}
