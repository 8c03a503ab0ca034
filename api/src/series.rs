//! The api's own series: HTTP request metrics, and the counters of what it refused or
//! cancelled. (The queue and operations gauges are shared with the worker:
//! `shared::metrics`.)
//!
//! Every label takes its value from a fixed set, so no client can grow `/metrics`: the
//! route is its template (never the raw path, whose ids are unbounded; `unmatched` for
//! every path without a route), and the method is one of the standard ones or `other`
//! (hyper accepts any token as a method).

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use std::time::Instant;

/// Describes the api's own series and registers its counters at zero, so that
/// dashboards and alerts find them before the first event. Called once the recorder is
/// installed (`shared::metrics::install_recorder`).
pub fn register() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route template."
    );
    describe_counter!(
        "password_hashes_refused_total",
        "Registrations and logins answered 503 because every hashing slot was busy."
    );
    describe_counter!(
        "long_polls_shed_total",
        "Long polls answered at once, by the bound that was full: global (MAX_LONG_POLLS) or per_user (MAX_LONG_POLLS_PER_USER)."
    );
    describe_counter!(
        "connections_refused_total",
        "Connections answered 503 and closed, by reason: per_address (MAX_CONNECTIONS_PER_ADDRESS)."
    );
    describe_counter!(
        "operations_cancelled_total",
        "Operations their owner cancelled."
    );
    describe_gauge!(
        "long_poll_listener_connected",
        "1 while the NOTIFY listener that wakes long polls is connected, else 0 (polls then wake on their deadline)."
    );
    gauge!("long_poll_listener_connected").set(0.0);
    counter!("password_hashes_refused_total").increment(0);
    for bound in ["global", "per_user"] {
        counter!("long_polls_shed_total", "bound" => bound).increment(0);
    }
    counter!("connections_refused_total", "reason" => "per_address").increment(0);
    counter!("operations_cancelled_total").increment(0);
}

/// Counts the request and times it: `http_requests_total{method,route,status}` and
/// `http_request_duration_seconds{method,route}`.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method's label: the standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        let invented = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
