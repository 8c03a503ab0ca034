//! The router: every endpoint of the contract, one module per resource, and the layers
//! that every response passes through (errors in the contract's body, limits, request
//! ids, metrics, timeouts).

pub mod auth;
pub mod docs;
pub mod generate;
pub mod health;
pub mod job_postings;
pub mod messages;
pub mod operations;
pub mod resume;
pub mod session_operations;
pub mod sessions;

use crate::error::{self, ApiError};
use crate::http_metrics;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 256 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: routes, then the layers, outermost last.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    use axum::http::StatusCode;
    let timeout = |d| TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, d);
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/resume", put(resume::put_resume))
        .route("/job-postings", post(job_postings::create))
        .route(
            "/job-postings/{id}",
            get(job_postings::get).delete(job_postings::delete),
        )
        .route("/sessions", post(sessions::create).get(sessions::list))
        .route("/sessions/{id}", get(sessions::get).patch(sessions::update))
        .route(
            "/sessions/{id}/generate-question",
            post(generate::generate_question),
        )
        .route("/sessions/{id}/messages", get(messages::list))
        .route("/sessions/{id}/operations", get(session_operations::list))
        .route("/sessions/{id}/answers", post(messages::answer))
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

    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/docs", get(docs::docs_page))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(middleware::map_response(contract_body))
        .layer(middleware::from_fn(http_metrics::record))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id, user_id = tracing::field::Empty)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
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
