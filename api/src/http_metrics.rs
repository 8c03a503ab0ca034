//! HTTP request metrics, labelled by route template (never the raw path, whose ids
//! would make the label set unbounded).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};
use std::time::Instant;

/// Counts the request and times it: `http_requests_total{method,route,status}` and
/// `http_request_duration_seconds{method,route}`.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
