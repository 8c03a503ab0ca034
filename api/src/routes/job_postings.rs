//! `/job-postings`: create, read and delete a user's job postings.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json, Path};
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use shared::db::job_postings::{self, JobPosting};
use shared::domain::JobPostingId;
use utoipa::ToSchema;

/// A job posting to practise for.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JobPostingRequest {
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub title: String,
    #[schema(pattern = r"^[^\x00]*$")]
    pub company: Option<String>,
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub description: String,
}

/// Creates a job posting.
#[utoipa::path(post, path = "/api/v1/job-postings", operation_id = "create_job_posting", tag = "job postings", request_body = JobPostingRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = JobPosting),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Json(req): Json<JobPostingRequest>,
) -> Result<(StatusCode, Json<JobPosting>), ApiError> {
    let title = validate::text("title", &req.title)?;
    let company = validate::optional_text("company", req.company.as_deref())?;
    let description = validate::text("description", &req.description)?;
    let mut conn = state.conn().await?;
    let posting = job_postings::insert(&mut conn, user, title, company, description)
        .await
        .context("inserting the job posting")?;
    Ok((StatusCode::CREATED, Json(posting)))
}

/// Reads one of the user's job postings.
#[utoipa::path(get, path = "/api/v1/job-postings/{id}", operation_id = "get_job_posting", tag = "job postings",
    params(("id" = uuid::Uuid, Path, description = "Job posting id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The job posting", body = JobPosting),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "JOB_POSTING_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: id is not a UUID", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<JobPostingId>,
) -> Result<Json<JobPosting>, ApiError> {
    let mut conn = state.conn().await?;
    job_postings::find_owned(&mut conn, id, user)
        .await
        .context("reading the job posting")?
        .map(Json)
        .ok_or(ApiError::JobPostingNotFound)
}

/// Deletes one of the user's job postings; its sessions keep their history.
#[utoipa::path(delete, path = "/api/v1/job-postings/{id}", operation_id = "delete_job_posting", tag = "job postings",
    params(("id" = uuid::Uuid, Path, description = "Job posting id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted; its sessions now have job_posting_id null"),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "JOB_POSTING_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: id is not a UUID", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<JobPostingId>,
) -> Result<StatusCode, ApiError> {
    let mut conn = state.conn().await?;
    if job_postings::delete_owned(&mut conn, id, user)
        .await
        .context("deleting the job posting")?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::JobPostingNotFound)
    }
}
