//! The api's one error type, and the one table from each variant to its status and
//! contract code. Every failure a handler can meet becomes one of these; the body is
//! always the contract's `{"detail": {"code", "message"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use shared::jobs::EnqueueError;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        fields: BTreeMap<String, String>,
    },
    #[error("Authentication is required: send a valid bearer token.")]
    NotAuthenticated,
    #[error("The email or password is wrong.")]
    InvalidCredentials,
    #[error("An account with this email already exists.")]
    EmailTaken,
    #[error("No job posting with this id.")]
    JobPostingNotFound,
    #[error("No resume stored yet.")]
    ResumeNotFound,
    #[error("No interview session with this id.")]
    SessionNotFound,
    #[error("No operation with this id.")]
    OperationNotFound,
    #[error("No answer with this id in this interview session.")]
    AnswerNotFound,
    #[error(
        "The operation has already finished; only a pending or processing one can be cancelled."
    )]
    OperationFinished,
    #[error("The interview session is {0}; only an active session can take this.")]
    SessionNotActive(shared::domain::SessionStatus),
    #[error("A {from} session cannot become {to}.")]
    InvalidStatusTransition {
        from: shared::domain::SessionStatus,
        to: shared::domain::SessionStatus,
    },
    #[error("This question has already been answered.")]
    AlreadyAnswered,
    #[error("The interview has asked all the questions it was set to ask.")]
    InterviewComplete,
    /// The answer has feedback already, finished or under way: this operation.
    #[error("This answer has feedback already (or it is being generated).")]
    FeedbackExists(shared::domain::OperationId),
    #[error("This Idempotency-Key was already used for another request.")]
    IdempotencyKeyReused,
    #[error("Too many requests: try again in {retry_after_secs} seconds.")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("No such resource.")]
    NotFound,
    #[error("This method is not allowed here.")]
    MethodNotAllowed,
    #[error("The request body is larger than 256 KiB.")]
    PayloadTooLarge,
    #[error("The service is temporarily unavailable; try again shortly.")]
    ServiceUnavailable,
    /// Readiness only: this release's migrations are not all applied (`MIGRATE=false`
    /// and the migrate step has not run yet).
    #[error(
        "Not ready: the database lacks this release's migrations {missing}; run `api migrate`."
    )]
    SchemaBehind { missing: String },
    #[error("The service is busy; try again in {retry_after_secs} seconds.")]
    Busy { retry_after_secs: u64 },
    #[error("Something went wrong on our side.")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let fields = BTreeMap::from([(field.to_owned(), message.clone())]);
        ApiError::Validation {
            message: format!("{field}: {message}"),
            fields,
        }
    }

    /// The one table: each variant's status and contract code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
            NotAuthenticated => (StatusCode::UNAUTHORIZED, "NOT_AUTHENTICATED"),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            EmailTaken => (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            JobPostingNotFound => (StatusCode::NOT_FOUND, "JOB_POSTING_NOT_FOUND"),
            SessionNotFound => (StatusCode::NOT_FOUND, "SESSION_NOT_FOUND"),
            ResumeNotFound => (StatusCode::NOT_FOUND, "RESUME_NOT_FOUND"),
            OperationNotFound => (StatusCode::NOT_FOUND, "OPERATION_NOT_FOUND"),
            AnswerNotFound => (StatusCode::NOT_FOUND, "ANSWER_NOT_FOUND"),
            OperationFinished => (StatusCode::CONFLICT, "OPERATION_FINISHED"),
            SessionNotActive(_) => (StatusCode::BAD_REQUEST, "SESSION_NOT_ACTIVE"),
            InvalidStatusTransition { .. } => {
                (StatusCode::BAD_REQUEST, "INVALID_STATUS_TRANSITION")
            }
            AlreadyAnswered => (StatusCode::CONFLICT, "ALREADY_ANSWERED"),
            InterviewComplete => (StatusCode::CONFLICT, "INTERVIEW_COMPLETE"),
            FeedbackExists(_) => (StatusCode::CONFLICT, "FEEDBACK_EXISTS"),
            IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
            TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"),
            NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ServiceUnavailable | SchemaBehind { .. } | Busy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE")
            }
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// A 500 for a failure at `step` ("hashing a password"): its one log line names the
    /// step, then the cause chain.
    pub fn internal(step: &'static str, err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into().context(step))
    }

    /// A database error met at `step`: `503` when the database cannot be reached or has
    /// no connection free, `401` when a write names a user deleted meanwhile, else a 500
    /// whose log line names the step.
    pub fn database(step: &'static str, err: sqlx::Error) -> Self {
        if shared::db::is_unavailable(&err) {
            tracing::warn!(step, error = %err, "database unavailable");
            ApiError::ServiceUnavailable
        } else if shared::db::refers_to_a_missing_user(&err) {
            // The token's user was deleted after the token was checked (a race with
            // the deletion's notification): the request speaks for nobody.
            ApiError::NotAuthenticated
        } else {
            ApiError::internal(step, err)
        }
    }
}

/// Names the step a fallible call is, turning its error into an [`ApiError`]:
/// `.context("inserting the operation")?`. There is deliberately no `From` for these
/// errors, so no database call can reach `?` without saying what it was doing.
pub trait Context<T> {
    /// The result, with an error converted as [`ApiError::database`] does.
    fn context(self, step: &'static str) -> Result<T, ApiError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, step: &'static str) -> Result<T, ApiError> {
        self.map_err(|err| ApiError::database(step, err))
    }
}

impl<T> Context<T> for Result<T, EnqueueError> {
    fn context(self, step: &'static str) -> Result<T, ApiError> {
        self.map_err(|err| match err {
            EnqueueError::Database(db) => ApiError::database(step, db),
            other => ApiError::internal(step, other),
        })
    }
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// UPPER_SNAKE_CASE, stable: clients branch on it.
    pub code: &'static str,
    pub message: String,
    /// For validation errors: what is wrong with each field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<BTreeMap<String, String>>,
    /// For `FEEDBACK_EXISTS`: the operation of the answer's existing feedback, to poll
    /// instead of asking again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<shared::domain::OperationId>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            // Logged once here, on one line: the step, then its causes ("inserting the
            // job posting: error returned from database: …"). The client gets only the
            // sentence.
            tracing::error!(error = %format_args!("{cause:#}"), "request failed");
        }
        let fields = match &self {
            ApiError::Validation { fields, .. } if !fields.is_empty() => Some(fields.clone()),
            _ => None,
        };
        let operation_id = match &self {
            ApiError::FeedbackExists(id) => Some(*id),
            _ => None,
        };
        let body = ErrorBody {
            detail: ErrorDetail {
                code,
                message: self.to_string(),
                fields,
                operation_id,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::NotAuthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::Busy { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::ServiceUnavailable | ApiError::SchemaBehind { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// The error for a response that a layer outside the handlers produced with only a
/// status (unknown route, body too large, timeout), so it too can speak the contract.
pub fn for_status(status: StatusCode) -> Option<ApiError> {
    match status {
        StatusCode::NOT_FOUND => Some(ApiError::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => Some(ApiError::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(ApiError::PayloadTooLarge),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            Some(ApiError::ServiceUnavailable)
        }
        _ => None,
    }
}
