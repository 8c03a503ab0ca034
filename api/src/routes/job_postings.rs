//! `/job-postings`: create, list, read, change and delete a user's job postings.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json, Path, Query};
use crate::routes::sessions::ListParams;
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use shared::db::job_postings::{self, Change, JobPosting};
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

/// A change to a job posting: each field given is set, each one left out is kept;
/// `company: null` clears the company.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JobPostingChange {
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, pattern = r"^[^\x00]*$")]
    pub company: Option<Option<String>>,
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub description: Option<String>,
}

/// A field that was given, `null` included (`Some(None)`), told apart from one left out
/// (`None`, by `#[serde(default)]`).
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One page of job postings, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPostingPage {
    pub items: Vec<JobPosting>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Lists the user's job postings, newest first.
#[utoipa::path(get, path = "/api/v1/job-postings", operation_id = "list_job_postings", tag = "job postings", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of job postings", body = JobPostingPage),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: limit outside 1–100 or negative offset", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(params): Query<ListParams>,
) -> Result<Json<JobPostingPage>, ApiError> {
    let (limit, offset) = params.resolve()?;
    let mut conn = state.conn().await?;
    let items = job_postings::list(&mut conn, user, limit, offset)
        .await
        .context("listing the job postings")?;
    let total = job_postings::count(&mut conn, user)
        .await
        .context("counting the job postings")?;
    Ok(Json(JobPostingPage {
        items,
        total,
        limit,
        offset,
    }))
}

/// Changes one of the user's job postings.
#[utoipa::path(patch, path = "/api/v1/job-postings/{id}", operation_id = "update_job_posting", tag = "job postings", request_body = JobPostingChange,
    params(("id" = uuid::Uuid, Path, description = "Job posting id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = JobPosting),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "JOB_POSTING_NOT_FOUND", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: a blank title or description, NUL, bad id", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<JobPostingId>,
    Json(req): Json<JobPostingChange>,
) -> Result<Json<JobPosting>, ApiError> {
    let change = Change {
        title: req
            .title
            .as_deref()
            .map(|title| validate::text("title", title))
            .transpose()?,
        company: req
            .company
            .as_ref()
            .map(|company| validate::optional_text("company", company.as_deref()))
            .transpose()?,
        description: req
            .description
            .as_deref()
            .map(|description| validate::text("description", description))
            .transpose()?,
    };
    let mut conn = state.conn().await?;
    job_postings::update_owned(&mut conn, id, user, change)
        .await
        .context("changing the job posting")?
        .map(Json)
        .ok_or(ApiError::JobPostingNotFound)
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
