//! The router: every endpoint of the contract, one module per resource, and the layers
//! that every response passes through (errors in the contract's body, limits, request
//! ids, metrics, timeouts).

pub mod auth;
pub mod docs;
pub mod enqueue;
pub mod feedback;
pub mod generate;
pub mod health;
pub mod job_postings;
pub mod messages;
pub mod operations;
pub mod resume;
pub mod session_operations;
pub mod sessions;
pub mod users;

use crate::error::{self, ApiError};
use crate::series;
use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 256 * 1024;

pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How the router is put together, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// How long an ordinary request may take (long polls get their `wait` on top).
    pub request_timeout: Duration,
    /// Whether `/metrics` is served here (`false` when `METRICS_ADDR` moves it).
    pub public_metrics: bool,
    /// Origins allowed to call from a browser; empty: no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
}

/// The whole application: routes, then the layers, outermost last.
pub fn router(state: AppState, routing: &Routing) -> Router {
    use axum::http::StatusCode;
    let request_timeout = routing.request_timeout;
    let timeout = |d| TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, d);
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/users/me", get(users::me).delete(users::delete_me))
        .route("/resume", put(resume::put_resume).get(resume::get_resume))
        .route(
            "/job-postings",
            post(job_postings::create).get(job_postings::list),
        )
        .route(
            "/job-postings/{id}",
            get(job_postings::get)
                .patch(job_postings::update)
                .delete(job_postings::delete),
        )
        .route("/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/sessions/{id}",
            get(sessions::get)
                .patch(sessions::update)
                .delete(sessions::delete),
        )
        .route(
            "/sessions/{id}/generate-question",
            post(generate::generate_question),
        )
        .route("/sessions/{id}/messages", get(messages::list))
        .route("/sessions/{id}/operations", get(session_operations::list))
        .route("/sessions/{id}/answers", post(messages::answer))
        .route(
            "/sessions/{id}/answers/{answer_id}/feedback",
            post(feedback::request_feedback),
        )
        .route("/operations/{id}/cancel", post(operations::cancel))
        .route("/openapi.json", get(docs::openapi_json))
        .layer(timeout(request_timeout))
        // Long polls wait up to 30 s by design, so they get their own, longer bound.
        .merge(
            Router::new()
                .route("/operations/{id}", get(operations::get))
                .layer(timeout(
                    request_timeout + Duration::from_secs(operations::MAX_WAIT_SECS),
                )),
        );

    let mut public = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/docs", get(docs::docs_page));
    if routing.public_metrics {
        public = public.route("/metrics", get(health::metrics));
    }
    let app = public
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(middleware::map_response(contract_body))
        .layer(middleware::from_fn(series::record))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(|response: &Response, _: Duration, span: &tracing::Span| {
                    span.record("http.response.status_code", response.status().as_u16());
                }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid));
    match cors(&routing.cors_allowed_origins) {
        // Outermost, so a preflight is answered before anything else runs.
        Some(cors) => app.layer(cors),
        None => app,
    }
}

/// The span of one request: what its log lines carry (method, path, request id, user),
/// and, when traces are exported, its server span, named for its route and continuing
/// the caller's trace when it sent a `traceparent`. Probes and scrapes (`/healthz`,
/// `/readyz`, `/metrics`) get a `debug` span: neither logged nor traced at the default
/// levels, or every few seconds of every pod would be a trace of its own.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                otel.name = format!("{} {route}", request.method()),
                otel.kind = "server",
                method = %request.method(),
                uri = %request.uri().path(),
                http.route = route,
                request_id,
                user_id = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        };
    }
    let span = match route {
        "/healthz" | "/readyz" | "/metrics" => request_span!(tracing::Level::DEBUG),
        _ => request_span!(tracing::Level::INFO),
    };
    shared::telemetry::continue_trace(&span, request.headers());
    span
}

/// `/metrics` alone, for the private listener at `METRICS_ADDR`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}

/// The CORS policy for `origins` (`*` allows any), or none when the list is empty:
/// then browsers on other origins are refused by their own same-origin rule.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                REQUEST_ID.clone(),
                // W3C trace context: a browser's trace continues into ours.
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            .expose_headers([header::LOCATION, header::RETRY_AFTER, REQUEST_ID.clone()])
            .max_age(Duration::from_secs(600)),
    )
}

/// Gives the contract's error body to error responses that layers made with only a
/// status (body too large, timeout), which would otherwise go out empty.
async fn contract_body(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    match error::for_status(response.status()) {
        Some(err) => err.into_response(),
        None => response,
    }
}
