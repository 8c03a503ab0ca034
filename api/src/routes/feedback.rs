//! `POST /sessions/{id}/answers/{answer_id}/feedback`: queues the analysis of one
//! answer, as generate-question queues a question ([`super::enqueue`] holds what they
//! share: the session's lock, the key, the rate limit, the cap, the commit).
//!
//! Feedback runs beside the session's one-question-at-a-time order, not in it: its job
//! is never held, and an unfinished feedback holds back no question (the migration
//! `20261205000004_feedback.sql` says why). It does count against the session's cap of
//! unfinished operations and the user's rate limit for model work.
//!
//! One feedback per answer: the check below runs under the session's row lock, which
//! every request for this answer's feedback takes first, so two requests cannot both
//! pass it; the unique index `operations_feedback_answer_key` is the guarantee behind it.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Path};
use crate::routes::enqueue::{Begun, Enqueue};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use shared::db::messages;
use shared::db::operations::{self, Operation, Target};
use shared::domain::{MessageId, SessionId, SessionStatus};
use shared::jobs::FeedbackAnalysisJob;

/// Queues feedback on one of the session's answers: a score, strengths, improvements
/// and a summary, stored as a message of type `feedback`.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/answers/{answer_id}/feedback", operation_id = "request_feedback", tag = "feedback",
    params(
        ("id" = uuid::Uuid, Path, description = "Session id"),
        ("answer_id" = uuid::Uuid, Path, description = "The answer to analyse: an answer message of this session that names its question"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; a repeat within 24 h returns the same operation", min_length = 1, max_length = 255, pattern = r"^[\x20-\x7e]{1,255}$"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued (or the operation of an earlier request with this Idempotency-Key); operation_type feedback_analysis", body = Operation,
            headers(("Location" = String, description = "/api/v1/operations/{op_id}"), ("Retry-After" = u64, description = "Seconds before the first poll"))),
        (status = 400, description = "SESSION_NOT_ACTIVE", body = ErrorBody),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND, or ANSWER_NOT_FOUND: answer_id is not an answer of this session", body = ErrorBody),
        (status = 409, description = "FEEDBACK_EXISTS: the answer has feedback, finished or under way (a failed one does not count); detail.operation_id names its operation", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR (bad id or key; fields.answer_id: the answer names no question) or IDEMPOTENCY_KEY_REUSED (the key was used for another request)", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: the per-user rate limit (shared with generate-question), or MAX_PENDING_PER_SESSION unfinished operations on this session", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
    ))]
pub async fn request_feedback(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path((session_id, answer_id)): Path<(SessionId, MessageId)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let target = Target::Feedback(session_id, answer_id);
    let mut conn = state.conn().await?;
    let mut request = match Enqueue::begin(&state, &mut conn, user, target, &headers).await? {
        Begun::Replayed(earlier) => return Ok(earlier),
        Begun::New(request) => request,
    };
    let answer = messages::find_answer(&mut request.tx, answer_id, session_id)
        .await
        .context("finding the answer")?
        .ok_or(ApiError::AnswerNotFound)?;
    if request.session.status != SessionStatus::Active {
        return Err(ApiError::SessionNotActive(request.session.status));
    }
    if answer.question_id.is_none() {
        return Err(ApiError::field(
            "answer_id",
            "the answer names no question; feedback needs the question it answers",
        ));
    }
    let existing = operations::feedback_of_answer(&mut request.tx, answer_id)
        .await
        .context("finding the answer's feedback")?;
    if let Some(existing) = existing {
        return Err(ApiError::FeedbackExists(existing.id));
    }
    request.admit(&state).await?;
    let (response, wake) = request
        .commit(
            &state,
            |id| FeedbackAnalysisJob::new(id, session_id, answer_id),
            false,
        )
        .await?;
    // After the commit, on its connection: the workers' wake-up (`shared::db::wake`).
    wake.send(&mut conn).await;
    Ok(response)
}
