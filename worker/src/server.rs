//! The worker's small HTTP server: `/healthz` for probes and `/metrics` for Prometheus
//! (on `METRICS_ADDR` instead, when that is set), and the task that keeps the gauges
//! read from the database fresh.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
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

/// Reads the database gauges every [`shared::metrics::GAUGE_REFRESH`], so a scrape costs
/// no query: the queue and operations (as the api does) and `operations_overdue`.
pub async fn refresh_gauges(pool: PgPool, worst_case: Duration) {
    let mut ticks = tokio::time::interval(shared::metrics::GAUGE_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = shared::metrics::refresh_database_gauges(&pool).await {
            tracing::warn!(error = %err, "could not read queue depth for the metrics");
        }
        // Counted here, not by the reconciler: it shows what the reconciler has not
        // (yet) caught, so a reconciler that stopped working shows here.
        match overdue(&pool, worst_case).await {
            Ok(count) => gauge!("operations_overdue").set(count as f64),
            Err(err) => tracing::warn!(error = %err, "could not count overdue operations"),
        }
    }
}

async fn overdue(pool: &PgPool, worst_case: Duration) -> Result<i64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    shared::db::reconcile::count_overdue(&mut conn, worst_case).await
}
