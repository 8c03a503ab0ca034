//! `GET /sessions/{id}/operations`: a session's operations in the order they were
//! accepted (the order they run in), so a client that reloads the page finds what it
//! is still waiting for (`?status=pending,processing`).

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json, Path, Query};
use crate::routes::messages::PageParams;
use crate::state::AppState;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use shared::db::operations::{self, Operation};
use shared::db::sessions;
use shared::domain::{OperationStatus, SessionId};
use utoipa::{IntoParams, ToSchema};

/// Which operations to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusFilter {
    /// Comma-separated statuses (`pending`, `processing`, `completed`, `failed`);
    /// default all four.
    #[param(
        pattern = r"^(pending|processing|completed|failed)(,(pending|processing|completed|failed))*$"
    )]
    pub status: Option<String>,
}

/// One page of a session's operations, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationPage {
    pub items: Vec<Operation>,
    pub total: i64,
    pub page: i64,
    pub limit: i64,
}

/// Lists a session's operations in the order they were accepted.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/operations", operation_id = "list_session_operations", tag = "operations",
    params(("id" = uuid::Uuid, Path, description = "Session id"), StatusFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the session's operations, oldest first", body = OperationPage),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: unknown status, page < 1, limit outside 1–200, bad id", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(session_id): Path<SessionId>,
    Query(filter): Query<StatusFilter>,
    Query(paging): Query<PageParams>,
) -> Result<Json<OperationPage>, ApiError> {
    let statuses = statuses(filter.status.as_deref())?;
    let (page, limit, offset) = paging.resolve()?;
    let mut conn = state.conn().await?;
    sessions::find_owned(&mut conn, session_id, user)
        .await
        .context("reading the session")?
        .ok_or(ApiError::SessionNotFound)?;
    let items = operations::page_of_session(&mut conn, session_id, &statuses, limit, offset)
        .await
        .context("reading a page of the session's operations")?;
    let total = operations::count_of_session(&mut conn, session_id, &statuses)
        .await
        .context("counting the session's operations")?;
    Ok(Json(OperationPage {
        items,
        total,
        page,
        limit,
    }))
}

/// The statuses named in `?status=`, each once; all of them when absent.
fn statuses(filter: Option<&str>) -> Result<Vec<&'static str>, ApiError> {
    let Some(filter) = filter else {
        return Ok(OperationStatus::ALL.iter().map(|s| s.as_str()).collect());
    };
    let mut chosen = Vec::new();
    for name in filter.split(',') {
        let status = OperationStatus::ALL
            .iter()
            .find(|s| s.as_str() == name.trim())
            .ok_or_else(|| {
                ApiError::field(
                    "status",
                    "must be a comma-separated list of pending, processing, completed, failed",
                )
            })?;
        if !chosen.contains(&status.as_str()) {
            chosen.push(status.as_str());
        }
    }
    Ok(chosen)
}
