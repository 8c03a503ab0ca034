//! `POST /sessions/{id}/generate-question`: records the request durably and answers at
//! once; a worker does the generation.
//!
//! The operation row and its job are written in ONE transaction, so either both exist
//! or neither does: a crash in between can neither leave an operation `pending` forever
//! nor a job for nothing.
//!
//! The transaction holds the session's row lock from the first read to the commit: a
//! session's questions are generated one at a time, so a new operation whose session
//! has an unfinished one gets a held job, and the trigger that releases the next job
//! when an operation ends takes the same lock, so neither can miss the other
//! (docs/DESIGN.md, "One question at a time").

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Path};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::db::operations::{self, Operation};
use shared::db::{rate_limits, sessions};
use shared::domain::{OperationId, SessionId, SessionStatus, UserId};
use shared::jobs::{self, QuestionGenerationJob};
use sqlx::PgConnection;

/// The header that makes a retried request return the first one's operation.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// How long an idempotency key keeps pointing at its operation.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;
/// What the client should wait before its first poll: generation takes 2–10 s.
pub const RETRY_AFTER_SECS: u64 = 2;
/// What a client that hit the per-session cap is told to wait: about one question.
const PENDING_CAP_RETRY_AFTER_SECS: u64 = 5;

// Its responses are listed in full, as every handler's are (`routes/auth.rs` says why).

/// Queues the generation of the session's next question.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/generate-question", operation_id = "generate_question", tag = "questions",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; a repeat within 24 h returns the same operation", min_length = 1, max_length = 255, pattern = r"^[\x20-\x7e]{1,255}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued (or the operation of an earlier request with this Idempotency-Key)", body = Operation,
            headers(("Location" = String, description = "/api/v1/operations/{op_id}"), ("Retry-After" = u64, description = "Seconds before the first poll"))),
        (status = 400, description = "SESSION_NOT_ACTIVE", body = ErrorBody),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "INTERVIEW_COMPLETE: the session's question_limit is reached (generated and unfinished questions)", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR (bad id or key) or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: the per-user rate limit, or MAX_PENDING_PER_SESSION unfinished operations on this session", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
    ))]
pub async fn generate_question(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(session_id): Path<SessionId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut tx = state.begin().await?;
    let session = sessions::lock_owned(&mut tx, session_id, user)
        .await
        .context("locking the session")?
        .ok_or(ApiError::SessionNotFound)?;

    if let Some(key) = key {
        operations::release_expired_key(&mut tx, user, key, IDEMPOTENCY_TTL_SECS)
            .await
            .context("releasing an expired idempotency key")?;
        if let Some(earlier) = replay(&mut tx, user, session_id, key).await? {
            return Ok(accepted(earlier));
        }
    }
    if session.status != SessionStatus::Active {
        return Err(ApiError::SessionNotActive(session.status));
    }
    // Read afresh under the session's lock, so two requests cannot both take the last
    // place (the locked row's own figure may predate the lock).
    if session.question_limit.is_some() {
        let remaining = sessions::questions_remaining(&mut tx, session_id)
            .await
            .context("counting the questions left")?;
        if remaining == Some(0) {
            return Err(ApiError::InterviewComplete);
        }
    }
    per_user_limit(
        &mut tx,
        user,
        GENERATE_BUCKET,
        state.limits.generate_per_minute,
    )
    .await?;

    let unfinished = operations::count_unfinished(&mut tx, session_id)
        .await
        .context("counting the session's unfinished operations")?;
    let cap = state.limits.max_pending_per_session;
    if cap > 0 && unfinished >= i64::from(cap) {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: PENDING_CAP_RETRY_AFTER_SECS,
        });
    }

    let id = OperationId::new();
    let Some(operation) =
        operations::insert_question_generation(&mut tx, id, user, session_id, key)
            .await
            .context("inserting the operation")?
    else {
        // A concurrent request with the same key committed first (ON CONFLICT waited
        // for it): answer with its operation.
        drop(tx);
        let mut conn = state.conn().await?;
        let key = key.unwrap_or_default();
        return replay(&mut conn, user, session_id, key)
            .await?
            .map(accepted)
            .ok_or_else(|| {
                ApiError::internal(
                    "replaying the operation of a concurrent request",
                    anyhow::anyhow!("idempotency key conflict without a stored operation"),
                )
            });
    };
    let job = QuestionGenerationJob::new(id, session_id);
    // Held while an earlier operation of the session is unfinished: its end lets this
    // one run.
    jobs::enqueue(&mut tx, &job, state.limits.llm_max_attempts, unfinished > 0)
        .await
        .context("queueing the job")?;
    tx.commit()
        .await
        .context("committing the operation and its job")?;
    tracing::info!(operation_id = %id, session_id = %session_id, "question generation queued");
    Ok(accepted(operation))
}

/// The operation an earlier request with `key` created, if it was for this session;
/// `IDEMPOTENCY_KEY_REUSED` if it was for another.
async fn replay(
    conn: &mut PgConnection,
    user: UserId,
    session_id: SessionId,
    key: &str,
) -> Result<Option<Operation>, ApiError> {
    let earlier = operations::find_by_idempotency_key(conn, user, key)
        .await
        .context("reading the operation of the idempotency key")?;
    match earlier {
        Some(earlier) if earlier.session_id == Some(session_id) => Ok(Some(earlier.operation)),
        Some(_) => Err(ApiError::IdempotencyKeyReused),
        None => Ok(None),
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 printable ASCII characters.
/// The rate limit's bucket in `rate_limit_counters` (`RATE_LIMIT_GENERATE_PER_MINUTE`).
const GENERATE_BUCKET: &str = "generate_question";

/// Counts one hit against the user's `bucket` in the caller's transaction, and refuses
/// past `per_minute` (0: no limit) with `429` and the seconds left in the minute. The
/// hit is in the transaction, so a request refused later (or here) leaves no count.
pub(crate) async fn per_user_limit(
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

/// `202` with the operation, where to poll it, and when.
fn accepted(operation: Operation) -> Response {
    let location = format!("/api/v1/operations/{}", operation.id);
    let mut response = (StatusCode::ACCEPTED, axum::Json(operation)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}
