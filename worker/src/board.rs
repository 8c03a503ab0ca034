//! The queue board: a few read-only HTML views of the queue for operators, served on
//! the ops listener (`WORKER_ADDR`) when `OPS_TOKEN` is set, and only to its bearer
//! ([`auth`]). Off (no token), its routes are not there at all and answer 404.
//!
//! It shows the intake switch, jobs by state, the newest jobs, one job's attempts and
//! last error with its operation, the workers, and the operators' actions. Its one
//! action is the intake switch (pause, resume): a POST with a CSRF token ([`csrf`]),
//! written to the audit with the operator's address. Nothing acts on operations or
//! jobs: retrying a failed job would contradict the lifecycle (a failed operation stays
//! failed) and cancelling is the owner's, through the api. The SQL is in
//! [`shared::db::board`] and [`shared::db::intake`].

pub mod auth;
pub mod csrf;
pub mod html;
pub mod pages;

use crate::config::WorkerConfig;
use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use shared::db::board::{self as views, BOARD_STATES};
use shared::db::intake;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

/// Jobs listed on `/board`.
const LISTED_JOBS: i64 = 50;

/// Workers listed on `/board`.
const LISTED_WORKERS: i64 = 50;
/// Users listed under "Top users by tokens".
const LISTED_SPENDERS: i64 = 10;
/// Operator actions listed under "Recent actions".
const LISTED_ACTIONS: i64 = 20;

/// What the handlers share. No `Debug`: it holds the token.
#[derive(Clone)]
struct Board {
    pool: PgPool,
    token: Arc<[u8]>,
    heartbeat_window: Duration,
}

/// The board's routes, to merge into the ops router; none when `OPS_TOKEN` is unset or
/// empty, so the ops router's 404 answers them.
pub fn router(pool: PgPool, config: &WorkerConfig) -> Router {
    let Some(token) = config.ops_token() else {
        return Router::new();
    };
    Router::new()
        .route("/board", get(overview))
        .route("/board/jobs/{id}", get(job))
        .route("/board/intake", post(switch_intake))
        .with_state(Board {
            pool,
            token: Arc::from(token.expose().as_bytes()),
            heartbeat_window: config.heartbeat_window(),
        })
}

/// Proof that the request carries the token; the first extractor of every handler, so
/// that nothing else about a request is looked at before it.
struct Operator;

impl FromRequestParts<Board> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, board: &Board) -> Result<Self, Response> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if auth::authorized(value, &board.token) {
            return Ok(Self);
        }
        if value.is_some() {
            // A browser's first request carries no credentials; a wrong one is news.
            tracing::info!(path = %parts.uri.path(), "queue board: wrong credentials");
        }
        let mut response = html(
            StatusCode::UNAUTHORIZED,
            pages::notice(
                "Sign in",
                "The queue board needs the operator token (OPS_TOKEN).",
            ),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::CHALLENGE),
        );
        Err(response)
    }
}

/// `/board`'s query: every field optional, an empty one (as a form sends it) absent.
#[derive(Debug, Deserialize)]
struct Filter {
    state: Option<String>,
    /// An operation, session or user id.
    q: Option<String>,
    /// A job type.
    r#type: Option<String>,
    /// The cursor: jobs older than this job id.
    before: Option<String>,
}

/// A query field, `None` when absent or empty.
fn given(field: &Option<String>) -> Option<&str> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Whether `id` could be a job id (a ULID); anything far from one is refused before
/// the database sees it (which would refuse a NUL in text with an error).
fn plausible_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn overview(
    _: Operator,
    State(board): State<Board>,
    Query(filter): Query<Filter>,
) -> Result<Response, BoardError> {
    let state = given(&filter.state);
    let refused =
        |title: &str, why: String| Ok(html(StatusCode::BAD_REQUEST, pages::notice(title, &why)));
    if let Some(state) = state
        && !BOARD_STATES.contains(&state)
    {
        return refused(
            "No such state",
            format!(
                "No state {state:?}: the states are {}.",
                BOARD_STATES.join(", ")
            ),
        );
    }
    let job_type = given(&filter.r#type);
    if let Some(job_type) = job_type
        && !views::JOB_TYPES.contains(&job_type)
    {
        return refused(
            "No such job type",
            format!(
                "No job type {job_type:?}: the types are {}.",
                views::JOB_TYPES.join(", ")
            ),
        );
    }
    let find = match given(&filter.q) {
        None => None,
        Some(q) => match q.parse::<uuid::Uuid>() {
            Ok(id) => Some(id),
            Err(_) => {
                return refused(
                    "Not an id",
                    format!("{q:?} is not an operation, session or user id (a UUID)."),
                );
            }
        },
    };
    let before = given(&filter.before);
    if before.is_some_and(|id| !plausible_job_id(id)) {
        return refused(
            "Not a job id",
            "The page cursor is not a job id.".to_owned(),
        );
    }
    let query = views::JobFilter {
        state,
        job_type,
        find,
        before,
    };
    let counts = views::counts(&board.pool)
        .await
        .map_err(failed("count the jobs by state"))?;
    let jobs = views::jobs(&board.pool, query, LISTED_JOBS)
        .await
        .map_err(failed("list the newest jobs"))?;
    let workers = views::workers(&board.pool, LISTED_WORKERS)
        .await
        .map_err(failed("list the workers"))?;
    let spenders = views::top_spenders(&board.pool, LISTED_SPENDERS)
        .await
        .map_err(failed("sum the last day's tokens per user"))?;
    let mut conn = (board.pool.acquire().await).map_err(failed("read the intake switch"))?;
    let switch = intake::read(&mut conn)
        .await
        .map_err(failed("read the intake switch"))?;
    drop(conn);
    let actions = intake::audit(&board.pool, LISTED_ACTIONS)
        .await
        .map_err(failed("list the operators' actions"))?;
    let page = pages::Overview {
        intake: &switch,
        actions: &actions,
        csrf: &csrf::token(&board.token, SystemTime::now()),
        counts: &counts,
        jobs: &jobs,
        workers: &workers,
        spenders: &spenders,
        filter: query,
        page_size: LISTED_JOBS,
        heartbeat_window: board.heartbeat_window,
    }
    .render();
    Ok(html(StatusCode::OK, page))
}

async fn job(
    _: Operator,
    State(board): State<Board>,
    Path(id): Path<String>,
) -> Result<Response, BoardError> {
    if !plausible_job_id(&id) {
        return Ok(no_job());
    }
    match views::job(&board.pool, &id)
        .await
        .map_err(failed("read the job"))?
    {
        Some(detail) => Ok(html(StatusCode::OK, pages::job(&detail))),
        None => Ok(no_job()),
    }
}

/// The intake switch's form: `action` (`pause` or `resume`) and its CSRF token. Both
/// default to empty, so that a form without them is refused by the checks below (a
/// `403` for the token), not by the parser.
#[derive(Debug, Deserialize)]
struct IntakeAction {
    #[serde(default)]
    action: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /board/intake`: pauses or resumes intake, writes the action to the audit with
/// the operator's address, and sends the browser back to the board (`303`). Without
/// the page's CSRF token, `403` and nothing changes.
async fn switch_intake(
    _: Operator,
    State(board): State<Board>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<IntakeAction>,
) -> Result<Response, BoardError> {
    if !csrf::valid(&board.token, &form.csrf, SystemTime::now()) {
        tracing::warn!(peer = %peer, "queue board: an action without a valid CSRF token was refused");
        return Ok(html(
            StatusCode::FORBIDDEN,
            pages::notice(
                "Refused",
                "The action did not come from the board's own page (its CSRF token is missing or old): reload the board and try again.",
            ),
        ));
    }
    let paused = match form.action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Ok(html(
                StatusCode::BAD_REQUEST,
                pages::notice(
                    "No such action",
                    &format!("No action {other:?}: the actions are pause and resume."),
                ),
            ));
        }
    };
    let mut conn = (board.pool.acquire().await).map_err(failed("switch intake"))?;
    let changed = intake::set(&mut conn, paused, &peer.ip().to_string())
        .await
        .map_err(failed("switch intake"))?;
    tracing::warn!(action = %form.action, changed, peer = %peer, "queue board: intake switched by an operator");
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/board")]).into_response())
}

fn no_job() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::notice(
            "Not found",
            "No such job in the queue (finished jobs go after JOB_RETENTION_DAYS).",
        ),
    )
}

/// An HTML answer with headers that keep it private and inert: never cached (it
/// names workers and errors), no script may run, no other site may frame it.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

/// The board's one error: a read that failed, logged with the step it was at.
#[derive(Debug)]
struct BoardError {
    step: &'static str,
    source: sqlx::Error,
}

fn failed(step: &'static str) -> impl FnOnce(sqlx::Error) -> BoardError {
    move |source| BoardError { step, source }
}

impl IntoResponse for BoardError {
    fn into_response(self) -> Response {
        tracing::error!(step = self.step, error = %self.source, "queue board: could not read the queue");
        html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::notice(
                "Error",
                &format!("Could not {}: the worker's log says why.", self.step),
            ),
        )
    }
}
