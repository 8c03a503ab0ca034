//! `/healthz`, `/readyz` and `/metrics`: for load balancers, orchestrators and Prometheus.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::time::Duration;

/// How long readiness waits for the database before saying no.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Alive while the process runs.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operability", responses((status = 200, description = "The process runs")))]
pub async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the database answers and holds this release's migrations.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operability", responses(
    (status = 200, description = "The database answers, with this release's schema"),
    (status = 503, description = "SERVICE_UNAVAILABLE: the database does not answer, or lacks migrations of this release (named in the message)", body = ErrorBody),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    let check = async {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&state.pool)
            .await?;
        state.schema.missing(&state.pool).await
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(missing)) if missing.is_empty() => Ok(axum::Json(json!({
            "status": "ready",
            // Not a condition of readiness: without it polls end at their deadline.
            "listener": if state.waiters.is_listening() { "connected" } else { "reconnecting" },
        }))),
        Ok(Ok(missing)) => {
            let missing = missing.join(", ");
            tracing::warn!(%missing, "not ready: migrations of this release are not applied");
            Err(ApiError::SchemaBehind { missing })
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "not ready: database error");
            Err(ApiError::ServiceUnavailable)
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer in time");
            Err(ApiError::ServiceUnavailable)
        }
    }
}

/// Prometheus text: this process's counters, plus queue depth and operations by status
/// read from the database by a background task every few seconds (so every replica
/// reports the whole queue, and a scrape costs no query).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operability", responses((status = 200, description = "Prometheus text format (404 here when METRICS_ADDR moves it to a private listener)", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (content_type, body) = shared::metrics::render(&state.metrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
