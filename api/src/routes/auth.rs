//! `POST /auth/register`, `POST /auth/login` and `POST /auth/refresh`.

use crate::auth::{self, HashingSlot};
use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{ClientAddr, CurrentUser, Json};
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::db::users::{self, User};
use shared::domain::UserId;
use utoipa::ToSchema;

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f]+(\.[^@\s.\x00-\x1f\x7f-\x9f]+)+$"
    )]
    pub email: String,
    /// At least 8 characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: String,
    #[schema(pattern = r"^[^\x00]*$")]
    pub full_name: Option<String>,
}

/// Credentials to exchange for a token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// An access token for `Authorization: Bearer …`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

// Each handler's `#[utoipa::path]` lists its own responses in full, though the 413, 429
// and 503 rows read alike across handlers: each list is that operation's contract in the
// OpenAPI document, utoipa takes literals there, and a shared list would promise an
// operation a response it never gives. (A `//` comment: utoipa turns `///` into the
// operation's description.)

/// Registers a user.
#[utoipa::path(post, path = "/api/v1/auth/register", operation_id = "register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = User),
        (status = 409, description = "EMAIL_TAKEN", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: bad email, password under 8 characters", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: too many registrations from this address this minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
        (status = 503, description = "SERVICE_UNAVAILABLE: every password-hashing slot is busy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds before trying again"))),
    ))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let email = validate::email(&req.email)?;
    let password = validate::password(&req.password)?.to_owned();
    let full_name = validate::optional_text("full_name", req.full_name.as_deref())?;
    let guards = &state.guards;
    // A hashing slot before the throttle: refused as busy, the request leaves no trace.
    let slot = guards.hashing.slot()?;
    let address = client.key();
    guards
        .registrations_by_address
        .take(&address)
        .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    let hash = match slot.hash(password).await {
        Ok(hash) => hash,
        Err(err) => {
            // Failed: it stored nothing, so it does not count.
            guards.registrations_by_address.give_back(&address);
            return Err(err);
        }
    };
    let mut conn = state.conn().await?;
    match users::insert(&mut conn, &email, &hash, full_name).await {
        Ok(user) => Ok((StatusCode::CREATED, Json(user))),
        Err(err) if shared::db::violates(&err, users::EMAIL_KEY) => Err(ApiError::EmailTaken),
        Err(err) => Err(ApiError::database("inserting the user", err)),
    }
}

/// Exchanges email and password for an access token.
#[utoipa::path(post, path = "/api/v1/auth/login", operation_id = "login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "INVALID_CREDENTIALS", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: too many failed logins for this account or from this address this minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
        (status = 503, description = "SERVICE_UNAVAILABLE: every password-hashing slot is busy", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds before trying again"))),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    Json(req): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let email = req.email.trim().to_lowercase();
    if email.contains('\0') || email.chars().count() > validate::MAX_EMAIL_CHARS {
        // No account can have it (registration refuses it): SQL cannot take a NUL, and
        // a 200 KiB "email" must not become a 200 KiB throttle key.
        return Err(ApiError::InvalidCredentials);
    }
    match check_password(&state, &client, &email, req.password).await? {
        Some(user) => Ok(Json(token_for(&state, user)?)),
        None => Err(ApiError::InvalidCredentials),
    }
}

/// The user whose (lower-cased) `email` and `password` these are, or `None`, behind the
/// same guards for every caller (login, and the account's deletion, where a stolen
/// token must not become a way around them): the hashing bound, then the failed-login
/// throttles for the account and for the address.
pub(crate) async fn check_password(
    state: &AppState,
    client: &ClientAddr,
    email: &str,
    password: String,
) -> Result<Option<UserId>, ApiError> {
    // Throttled before any work: a guesser past the limit costs no hash and no query.
    // Each attempt takes its place first, so a burst cannot pass the check together;
    // a login that succeeds gives its places back. The hashing slot comes first of all:
    // a login refused as busy leaves no key in the throttles (which is what bounds how
    // fast keys can arrive: one per hash).
    let guards = &state.guards;
    let slot = guards.hashing.slot()?;
    let address = client.key();
    guards
        .failed_logins_by_address
        .take(&address)
        .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    if let Err(retry_after_secs) = guards.failed_logins_by_account.take(email) {
        guards.failed_logins_by_address.give_back(&address);
        return Err(ApiError::TooManyRequests { retry_after_secs });
    }
    let give_back = || {
        guards.failed_logins_by_account.give_back(email);
        guards.failed_logins_by_address.give_back(&address);
    };
    match verify(state, slot, email, password).await {
        Ok(Some(user)) => {
            give_back();
            Ok(Some(user))
        }
        Ok(None) => Ok(None),
        Err(err) => {
            // Broken (the database, the blocking pool): not a guess that failed.
            give_back();
            Err(err)
        }
    }
}

/// The user whose password this is, `None` for a wrong password or unknown email.
async fn verify(
    state: &AppState,
    slot: HashingSlot,
    email: &str,
    password: String,
) -> Result<Option<UserId>, ApiError> {
    let credentials = {
        let mut conn = state.conn().await?;
        users::find_credentials(&mut conn, email)
            .await
            .context("reading the credentials")?
    };
    // Verify against a dummy hash when the account is unknown, so the answer takes as
    // long either way and does not reveal which emails are registered.
    let (user, stored) = match credentials {
        Some(c) => (Some(c.id), c.password_hash),
        None => (None, auth::dummy_hash().to_owned()),
    };
    let matches = slot.verify(password, stored).await?;
    Ok(user.filter(|_| matches))
}

/// Exchanges a valid, unexpired token for a fresh one: a candidate deep in an
/// interview keeps going without signing in again. An expired token cannot be
/// refreshed (`401`): refresh before `expires_in` runs out.
#[utoipa::path(post, path = "/api/v1/auth/refresh", operation_id = "refresh_token", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh token", body = TokenResponse),
        (status = 401, description = "NOT_AUTHENTICATED: missing, invalid or expired token", body = ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(token_for(&state, user)?))
}

fn token_for(state: &AppState, user: UserId) -> Result<TokenResponse, ApiError> {
    Ok(TokenResponse {
        access_token: state.jwt.issue(user)?,
        token_type: "bearer",
        expires_in: state.jwt.ttl_secs(),
    })
}
