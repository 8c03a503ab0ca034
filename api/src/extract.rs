//! Extractors whose rejections speak the contract: malformed JSON, a missing field, a
//! path id that is not a UUID or a bad query value all become `422 VALIDATION_ERROR`,
//! and a missing or bad token `401 NOT_AUTHENTICATED`. Handlers use these instead of
//! axum's own, whose rejections are plain text.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::domain::UserId;

/// `axum::Json` with contract rejections; also a JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        serde_json::from_value(value)
            .map(Json)
            .map_err(|err| ApiError::Validation {
                message: format!("The body does not fit: {err}"),
                fields: Default::default(),
            })
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "Expected a JSON body with Content-Type: application/json.".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => "The body is not valid JSON.".to_owned(),
        // serde's message names the field and what was expected of it.
        JsonRejection::JsonDataError(err) => format!(
            "The body does not fit: {}",
            err.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ),
        other => other.body_text(),
    };
    ApiError::Validation {
        message,
        fields: Default::default(),
    }
}

/// `axum::extract::Path` with contract rejections.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection @ PathRejection::FailedToDeserializePathParams(_)) => {
                tracing::debug!(%rejection, "bad path parameter");
                Err(ApiError::field("id", "must be a UUID"))
            }
            Err(other) => Err(ApiError::internal(
                "extracting the path parameters",
                anyhow::anyhow!("{other}"),
            )),
        }
    }
}

/// `axum::extract::Query` with contract rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => Err(ApiError::Validation {
                message: format!(
                    "Bad query string: {}",
                    err.body_text()
                        .trim_start_matches("Failed to deserialize query string: ")
                ),
                fields: Default::default(),
            }),
            Err(other) => Err(ApiError::Validation {
                message: other.body_text(),
                fields: Default::default(),
            }),
        }
    }
}

/// The authenticated user of the request, from `Authorization: Bearer <JWT>`.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser(pub UserId);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ApiError::NotAuthenticated)?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .ok_or(ApiError::NotAuthenticated)?;
        let user = state.jwt.verify(token.trim())?;
        // A valid signature is not enough: the user may have been deleted since.
        state.users.check(&state.pool, user).await?;
        tracing::Span::current().record("user_id", tracing::field::display(user));
        Ok(CurrentUser(user))
    }
}
