//! `GET /operations/{id}`: poll, or long-poll with `wait`, an operation; and
//! `POST /operations/{id}/cancel`.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Path, Query};
use crate::routes::enqueue::RETRY_AFTER_SECS;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::Deserialize;
use shared::db::operations::{self, Operation};
use shared::db::{queue, sessions};
use shared::domain::{OperationId, UserId};
use shared::per_key::Held;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use utoipa::IntoParams;

/// The longest a long poll may wait.
pub const MAX_WAIT_SECS: u64 = 30;

/// How long to wait for the operation to finish.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// 0 to 30 seconds; default 0 (answer at once).
    #[param(minimum = 0, maximum = 30)]
    pub wait: Option<u64>,
}

/// Reads an operation; with `wait`, answers as soon as it finishes or when `wait` ends.
#[utoipa::path(get, path = "/api/v1/operations/{id}", operation_id = "get_operation", tag = "operations", params(("id" = uuid::Uuid, Path, description = "Operation id"), WaitParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The operation; Retry-After while pending or processing", body = Operation,
            headers(("Retry-After" = u64, description = "Seconds before the next poll (only while unfinished)"))),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "OPERATION_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: wait outside 0–30, bad id", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<OperationId>,
    Query(params): Query<WaitParams>,
) -> Result<Response, ApiError> {
    let wait = params.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::field("wait", "must be between 0 and 30 seconds"));
    }
    // Past MAX_LONG_POLLS waiting at once, or the user's own MAX_LONG_POLLS_PER_USER,
    // a poll answers at once, as `wait=0` would: the client polls again after
    // Retry-After, and nothing waits unbounded.
    let permit = match wait {
        0 => None,
        _ => long_poll_permit(&state, user),
    };
    let operation = match permit {
        None => read(&state, id, user).await?,
        Some(_permit) => wait_for(&state, id, user, Duration::from_secs(wait)).await?,
    };
    Ok(respond(operation))
}

/// A place to wait among the user's and everyone's long polls, `None` (counted as shed,
/// by the bound that refused) when either is full. The user's place is taken first, so
/// a user at their own bound never takes a global permit.
fn long_poll_permit(
    state: &AppState,
    user: UserId,
) -> Option<(Held<UserId>, OwnedSemaphorePermit)> {
    let guards = &state.guards;
    let Some(held) = guards.long_polls_by_user.try_hold(user) else {
        counter!("long_polls_shed_total", "bound" => "per_user").increment(1);
        return None;
    };
    let Ok(permit) = guards.long_polls.clone().try_acquire_owned() else {
        counter!("long_polls_shed_total", "bound" => "global").increment(1);
        return None;
    };
    Some((held, permit))
}

async fn read(state: &AppState, id: OperationId, user: UserId) -> Result<Operation, ApiError> {
    let mut conn = state.conn().await?;
    operations::find_owned(&mut conn, id, user)
        .await
        .context("reading the operation")?
        .ok_or(ApiError::OperationNotFound)
}

/// Reads the operation until it is finished or `wait` has passed, sleeping between
/// reads until the NOTIFY listener wakes us; no connection is held while asleep.
async fn wait_for(
    state: &AppState,
    id: OperationId,
    user: UserId,
    wait: Duration,
) -> Result<Operation, ApiError> {
    let deadline = Instant::now() + wait;
    let registration = state.waiters.register(id);
    loop {
        // Armed before the read: a wake-up that lands between the read and the
        // wait below is kept, not lost.
        let notified = registration.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let operation = read(state, id, user).await?;
        if operation.status.is_terminal() || Instant::now() >= deadline {
            return Ok(operation);
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return read(state, id, user).await,
        }
    }
}

fn respond(operation: Operation) -> Response {
    let unfinished = !operation.status.is_terminal();
    let mut response = axum::Json(operation).into_response();
    if unfinished {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    response
}

/// Cancels a `pending` or `processing` operation: it becomes `failed` with
/// "Cancelled.", its job is dropped (or, if a worker runs it now, the worker discards
/// its answer at the commit), and the session's next question, if one waits, goes on.
#[utoipa::path(post, path = "/api/v1/operations/{id}/cancel", operation_id = "cancel_operation", tag = "operations", params(("id" = uuid::Uuid, Path, description = "Operation id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled: the operation, now failed", body = Operation),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "OPERATION_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "OPERATION_FINISHED: it completed or failed already", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: bad id", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<OperationId>,
) -> Result<axum::Json<Operation>, ApiError> {
    let mut tx = state.begin().await?;
    let session = operations::session_of_owned(&mut tx, id, user)
        .await
        .context("finding the operation")?
        .ok_or(ApiError::OperationNotFound)?;
    // The session's row first, then the operation's: the order every writer that ends
    // an operation keeps (generate, the worker's commit and failure write, the
    // reconciler) and the one the release trigger needs, so a cancel never deadlocks
    // against them (worker/tests/worker/locks.rs races them).
    if let Some(session) = session {
        sessions::lock_owned(&mut tx, session, user)
            .await
            .context("locking the session")?;
    }
    let Some(cancelled) = operations::cancel(&mut tx, id, user)
        .await
        .context("cancelling the operation")?
    else {
        return Err(ApiError::OperationFinished);
    };
    queue::kill_unstarted(&mut tx, id)
        .await
        .context("dropping the operation's job")?;
    tx.commit().await.context("committing the cancel")?;
    counter!("operations_cancelled_total").increment(1);
    Ok(axum::Json(cancelled))
}
