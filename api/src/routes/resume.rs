//! `/resume`: one resume per user, replaced on every write, read back by the client to
//! rebuild its screens.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json};
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use serde::Deserialize;
use shared::db::resumes::{self, Resume};
use utoipa::ToSchema;

/// The resume's text.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResumeRequest {
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: String,
}

/// Reads the user's resume.
#[utoipa::path(get, path = "/api/v1/resume", operation_id = "get_resume", tag = "resume",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The resume", body = Resume),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "RESUME_NOT_FOUND: none stored yet", body = ErrorBody),
    ))]
pub async fn get_resume(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Resume>, ApiError> {
    let mut conn = state.conn().await?;
    resumes::find(&mut conn, user)
        .await
        .context("reading the resume")?
        .map(Json)
        .ok_or(ApiError::ResumeNotFound)
}

/// Creates or replaces the user's resume.
#[utoipa::path(put, path = "/api/v1/resume", operation_id = "put_resume", tag = "resume", request_body = ResumeRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored", body = Resume),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: empty content", body = ErrorBody),
    ))]
pub async fn put_resume(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(req): Json<ResumeRequest>,
) -> Result<Json<Resume>, ApiError> {
    let content = validate::text("content", &req.content)?;
    let mut conn = state.conn().await?;
    let resume = resumes::upsert(&mut conn, user, content)
        .await
        .context("storing the resume")?;
    Ok(Json(resume))
}
