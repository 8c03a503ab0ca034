//! `/users/me`: the signed-in user's account, to read or to delete.

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{ClientAddr, CurrentUser, Json};
use crate::routes::auth::check_password;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use shared::db::users::{self, User};
use shared::db::{operations, queue, sessions};
use utoipa::ToSchema;

/// The password, again: deleting an account cannot be undone, so a token alone (which
/// may have been left on a shared machine) is not enough.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteAccountRequest {
    pub password: String,
}

/// Reads the signed-in user.
#[utoipa::path(get, path = "/api/v1/users/me", operation_id = "get_me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
    ))]
pub async fn me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<User>, ApiError> {
    let mut conn = state.conn().await?;
    users::find(&mut conn, user)
        .await
        .context("reading the user")?
        .map(Json)
        // Deleted since the token's check: the token speaks for nobody now.
        .ok_or(ApiError::NotAuthenticated)
}

/// Deletes the signed-in user and everything of theirs: resume, job postings, sessions
/// with their messages, operations. Their tokens are refused from then on.
#[utoipa::path(delete, path = "/api/v1/users/me", operation_id = "delete_me", tag = "auth", request_body = DeleteAccountRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted, with everything of theirs"),
        (status = 401, description = "NOT_AUTHENTICATED, or INVALID_CREDENTIALS: wrong password", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: no password", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: too many failed logins for this account or from this address this minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
        (status = 503, description = "SERVICE_UNAVAILABLE: every password-hashing slot is busy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds before trying again"))),
    ))]
pub async fn delete_me(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    client: ClientAddr,
    Json(req): Json<DeleteAccountRequest>,
) -> Result<StatusCode, ApiError> {
    let email = {
        let mut conn = state.conn().await?;
        users::find(&mut conn, user)
            .await
            .context("reading the user")?
            .ok_or(ApiError::NotAuthenticated)?
            .email
    };
    // The password is checked exactly as at login: a stolen token must not become a way
    // around the login throttle to guess the password.
    let confirmed = check_password(&state, &client, &email, req.password).await?;
    if confirmed != Some(user) {
        return Err(ApiError::InvalidCredentials);
    }
    let mut tx = state.begin().await?;
    sessions::lock_all_of_user(&mut tx, user)
        .await
        .context("locking the user's sessions")?;
    let unfinished = operations::unfinished_of_user(&mut tx, user)
        .await
        .context("finding the user's unfinished operations")?;
    queue::kill_unstarted_all(&mut tx, &unfinished, "Its user was deleted.")
        .await
        .context("ending the user's jobs")?;
    users::delete(&mut tx, user)
        .await
        .context("deleting the user")?;
    tx.commit().await.context("committing the deletion")?;
    // Every replica forgets the user on the `user_deleted` notification; this one at once.
    state.users.forget(user);
    Ok(StatusCode::NO_CONTENT)
}
