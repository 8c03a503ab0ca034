//! Every extractor of the api: those whose rejections speak the contract (malformed
//! JSON, a missing field, a path id that is not a UUID or a bad query value all become
//! `422 VALIDATION_ERROR`, and a missing or bad token `401 NOT_AUTHENTICATED`; handlers
//! use these instead of axum's own, whose rejections are plain text), the current user,
//! and the client's address as a throttling key.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::domain::UserId;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

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

/// The client's address, as a throttling key. IPv6 clients are keyed by their /64:
/// one host usually holds a whole /64, and per-address limits must not be dodged by
/// stepping through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The key under which this client is counted.
    pub fn key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let segments = v6.segments();
                    format!(
                        "{:x}:{:x}:{:x}:{:x}::/64",
                        segments[0], segments[1], segments[2], segments[3]
                    )
                }
            },
        }
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Served by shared::serve, every request carries its peer; a request built in
        // memory (none in production) counts as one unknown client.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        Ok(ClientAddr(state.guards.proxies.client(peer, forwarded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientAddr(ip("2001:db8:1:2:bbbb::2"));
        assert_eq!(a.key(), b.key());
        assert_eq!(ClientAddr(ip("::ffff:192.0.2.1")).key(), "192.0.2.1");
    }
}
