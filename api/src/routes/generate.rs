//! `POST /sessions/{id}/generate-question`: records the request durably and answers at
//! once; a worker does the generation. What it shares with the other requests for
//! model work (the lock, the key, the limits, the commit) is in [`super::enqueue`].
//!
//! The transaction holds the session's row lock from the first read to the commit: a
//! session's questions are generated one at a time, so a new operation whose session
//! has an unfinished question gets a held job, and the trigger that releases the next
//! job when an operation ends takes the same lock, so neither can miss the other
//! (docs/DESIGN.md, "One question at a time"). Unfinished feedback does not hold it:
//! feedback runs beside that order, not in it.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Path};
use crate::routes::enqueue::{Begun, Enqueue};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use shared::db::operations::{Operation, Target};
use shared::db::sessions;
use shared::domain::{SessionId, SessionStatus};
use shared::jobs::QuestionGenerationJob;

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
        (status = 422, description = "VALIDATION_ERROR (bad id or key) or IDEMPOTENCY_KEY_REUSED (the key was used for another request)", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: the per-user rate limit (shared with feedback), or MAX_PENDING_PER_SESSION unfinished operations on this session", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
    ))]
pub async fn generate_question(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(session_id): Path<SessionId>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = Target::Question(session_id);
    let mut conn = state.conn().await?;
    let mut request = match Enqueue::begin(&state, &mut conn, user, target, &headers).await? {
        Begun::Replayed(earlier) => return Ok(earlier),
        Begun::New(request) => request,
    };
    if request.session.status != SessionStatus::Active {
        return Err(ApiError::SessionNotActive(request.session.status));
    }
    // Read afresh under the session's lock, so two requests cannot both take the last
    // place (the locked row's own figure may predate the lock).
    if request.session.question_limit.is_some() {
        let remaining = sessions::questions_remaining(&mut request.tx, session_id)
            .await
            .context("counting the questions left")?;
        if remaining == Some(0) {
            return Err(ApiError::InterviewComplete);
        }
    }
    let unfinished = request.admit(&state).await?;
    // Held while an earlier question of the session is unfinished: its end lets this
    // one run.
    let held = unfinished.questions > 0;
    let (response, wake) = request
        .commit(
            &state,
            |id| QuestionGenerationJob::new(id, session_id),
            held,
        )
        .await?;
    // After the commit, on its connection: the workers' wake-up (`shared::db::wake`).
    wake.send(&mut conn).await;
    Ok(response)
}
