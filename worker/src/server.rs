//! The worker's small HTTP server: `/healthz` for probes and `/metrics` for Prometheus.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use std::time::Duration;

#[derive(Debug, Clone)]
struct ServerState {
    pool: PgPool,
    metrics: PrometheusHandle,
    /// A job's worst case, the bound of the `operations_overdue` gauge.
    worst_case: Duration,
}

/// The router of `WORKER_ADDR`.
pub fn router(pool: PgPool, metrics: PrometheusHandle, worst_case: Duration) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(render))
        .with_state(ServerState {
            pool,
            metrics,
            worst_case,
        })
}

async fn render(State(state): State<ServerState>) -> impl IntoResponse {
    if let Err(err) = shared::metrics::refresh_database_gauges(&state.pool).await {
        tracing::warn!(error = %err, "could not read queue depth for /metrics");
    }
    // Read at scrape time, not by the reconciler: it shows what the reconciler has not
    // (yet) caught, so a reconciler that stopped working shows here.
    match overdue(&state).await {
        Ok(count) => gauge!("operations_overdue").set(count as f64),
        Err(err) => tracing::warn!(error = %err, "could not count overdue operations"),
    }
    let (content_type, body) = shared::metrics::render(&state.metrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn overdue(state: &ServerState) -> Result<i64, sqlx::Error> {
    let mut conn = state.pool.acquire().await?;
    shared::db::reconcile::count_overdue(&mut conn, state.worst_case).await
}
