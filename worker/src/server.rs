//! The worker's small HTTP server: `/healthz` for probes and `/metrics` for Prometheus.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

#[derive(Debug, Clone)]
struct ServerState {
    pool: PgPool,
    metrics: PrometheusHandle,
}

/// The router of `WORKER_ADDR`.
pub fn router(pool: PgPool, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(render))
        .with_state(ServerState { pool, metrics })
}

async fn render(State(state): State<ServerState>) -> impl IntoResponse {
    if let Err(err) = shared::metrics::refresh_database_gauges(&state.pool).await {
        tracing::warn!(error = %err, "could not read queue depth for /metrics");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
