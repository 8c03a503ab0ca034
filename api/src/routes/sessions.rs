//! `/sessions`: start, list, read and change the status of interview sessions.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json, Path, Query};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::db::sessions::{self, Session};
use shared::db::{operations, queue};
use shared::domain::{JobPostingId, SessionId, SessionStatus};
use utoipa::{IntoParams, ToSchema};

/// The job posting to interview for, and optionally how many questions to ask.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSessionRequest {
    pub job_posting_id: JobPostingId,
    /// 1 to 50; absent or `null`: no limit. Past it, generate-question is
    /// `409 INTERVIEW_COMPLETE`; reaching it does not complete the session.
    #[schema(minimum = 1, maximum = 50)]
    pub question_limit: Option<i32>,
}

/// The most questions a session may be set to ask.
pub const MAX_QUESTION_LIMIT: i32 = 50;

/// The status to move a session to.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateSessionRequest {
    pub status: SessionStatus,
}

/// Paging of the session and job-posting lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// 0 or more; default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

impl ListParams {
    /// The limit and the offset; a 422 naming the field when one is out of range.
    pub fn resolve(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(20);
        let offset = self.offset.unwrap_or(0);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::field("limit", "must be between 1 and 100"));
        }
        if offset < 0 {
            return Err(ApiError::field("offset", "must not be negative"));
        }
        Ok((limit, offset))
    }
}

/// One page of sessions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    pub items: Vec<Session>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Starts a session on one of the user's job postings.
#[utoipa::path(post, path = "/api/v1/sessions", operation_id = "create_session", tag = "sessions", request_body = CreateSessionRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Started: status active, current_question_number 0, questions_remaining = question_limit", body = Session),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "JOB_POSTING_NOT_FOUND", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: bad job_posting_id, question_limit outside 1–50", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(req): Json<CreateSessionRequest>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    if req
        .question_limit
        .is_some_and(|limit| !(1..=MAX_QUESTION_LIMIT).contains(&limit))
    {
        return Err(ApiError::field(
            "question_limit",
            "must be between 1 and 50, or absent for no limit",
        ));
    }
    let mut conn = state.conn().await?;
    let session =
        sessions::insert_for_posting(&mut conn, user, req.job_posting_id, req.question_limit)
            .await
            .context("inserting the session")?
            .ok_or(ApiError::JobPostingNotFound)?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Lists the user's sessions, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", operation_id = "list_sessions", tag = "sessions", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of sessions", body = SessionPage),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: limit outside 1–100 or negative offset", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(params): Query<ListParams>,
) -> Result<Json<SessionPage>, ApiError> {
    let (limit, offset) = params.resolve()?;
    let mut conn = state.conn().await?;
    let items = sessions::list(&mut conn, user, limit, offset)
        .await
        .context("listing the sessions")?;
    let total = sessions::count(&mut conn, user)
        .await
        .context("counting the sessions")?;
    Ok(Json(SessionPage {
        items,
        total,
        limit,
        offset,
    }))
}

/// Reads one of the user's sessions.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", operation_id = "get_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: id is not a UUID", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SessionId>,
) -> Result<Json<Session>, ApiError> {
    let mut conn = state.conn().await?;
    sessions::find_owned(&mut conn, id, user)
        .await
        .context("reading the session")?
        .map(Json)
        .ok_or(ApiError::SessionNotFound)
}

/// Pauses, resumes or completes a session: `active` ⇄ `paused`, either → `completed`.
#[utoipa::path(patch, path = "/api/v1/sessions/{id}", operation_id = "update_session", tag = "sessions", request_body = UpdateSessionRequest,
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated session (unchanged when already in that status)", body = Session),
        (status = 400, description = "INVALID_STATUS_TRANSITION: out of completed", body = ErrorBody),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: unknown status", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SessionId>,
    Json(req): Json<UpdateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    let mut tx = state.begin().await?;
    // Locked so the transition is checked against the status it replaces.
    let session = sessions::lock_owned(&mut tx, id, user)
        .await
        .context("locking the session")?
        .ok_or(ApiError::SessionNotFound)?;
    if session.status == req.status {
        return Ok(Json(session));
    }
    if !session.status.can_become(req.status) {
        return Err(ApiError::InvalidStatusTransition {
            from: session.status,
            to: req.status,
        });
    }
    let updated = sessions::set_status(&mut tx, id, req.status)
        .await
        .context("changing the session's status")?;
    tx.commit().await.context("committing the status change")?;
    Ok(Json(updated))
}

/// Deletes one of the user's sessions with its messages. Its unfinished operations end
/// first, failed with the sentence a worker would give (their jobs are ended, and one
/// running now finds its operation failed at its commit); they stay readable.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", operation_id = "delete_session", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: id is not a UUID", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<SessionId>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.begin().await?;
    // The session's row first, then its operations: the order of every writer.
    sessions::lock_owned(&mut tx, id, user)
        .await
        .context("locking the session")?
        .ok_or(ApiError::SessionNotFound)?;
    let ended = operations::fail_unfinished_of_session(&mut tx, id)
        .await
        .context("ending the session's operations")?;
    queue::kill_unstarted_all(&mut tx, &ended, "Its interview session was deleted.")
        .await
        .context("ending the session's jobs")?;
    sessions::delete(&mut tx, id)
        .await
        .context("deleting the session")?;
    tx.commit().await.context("committing the deletion")?;
    Ok(StatusCode::NO_CONTENT)
}
