//! The worker's small HTTP server: `/healthz` for probes and `/metrics` for Prometheus
//! (on `METRICS_ADDR` instead, when that is set).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;

/// The bounds of the worker's listeners: they face probes, Prometheus and operators,
/// not the public, but a stuck or slow client must still not hold a socket for good.
pub const CONNECTION_LIMITS: shared::serve::ConnectionLimits = shared::serve::ConnectionLimits {
    max_connections: 256,
    header_read_timeout: Some(Duration::from_secs(10)),
};

/// The router of `WORKER_ADDR`: `/healthz`, and `/metrics` unless it moved.
pub fn router(metrics: PrometheusHandle, with_metrics: bool) -> Router {
    let router = Router::new().route(
        "/healthz",
        get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
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

async fn render(State(metrics): State<PrometheusHandle>) -> impl IntoResponse {
    let (content_type, body) = shared::metrics::render(&metrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
