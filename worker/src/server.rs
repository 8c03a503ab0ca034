//! The worker's small HTTP server: `/healthz` (the process runs) and `/readyz` (it can
//! take jobs: [`crate::readiness`]) for probes, and `/metrics` for Prometheus (on
//! `METRICS_ADDR` instead, when that is set).

use crate::readiness::Readiness;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// The bounds of the worker's listeners: they face probes, Prometheus and operators,
/// not the public, but a stuck or slow client must still not hold a socket for good.
pub const CONNECTION_LIMITS: shared::serve::ConnectionLimits = shared::serve::ConnectionLimits {
    max_connections: 256,
    per_address: None,
    header_read_timeout: Some(Duration::from_secs(10)),
};

/// The router of `WORKER_ADDR`: `/healthz`, `/readyz`, and `/metrics` unless it moved.
pub fn router(metrics: PrometheusHandle, with_metrics: bool, readiness: Arc<Readiness>) -> Router {
    let router = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = Arc::clone(&readiness);
                async move { readyz(&readiness).await }
            }),
        );
    let router = if with_metrics {
        router.route("/metrics", get(render))
    } else {
        router
    };
    router
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(metrics)
}

/// The router of `METRICS_ADDR`: `/metrics` alone.
pub fn metrics_router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(metrics)
}

/// `200 {"status":"ready"}`, or `503 {"status":"not_ready","reason":…}`.
async fn readyz(readiness: &Readiness) -> Response {
    match readiness.check().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

async fn render(State(metrics): State<PrometheusHandle>) -> impl IntoResponse {
    let (content_type, body) = shared::metrics::render(&metrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
