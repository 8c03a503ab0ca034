//! `/sessions/{id}/messages` (read) and `/sessions/{id}/answers` (the user's answers).

use crate::error::{ApiError, Context, ErrorBody};
use crate::extract::{CurrentUser, Json, Path, Query};
use crate::routes::enqueue::per_user_limit;
use crate::state::AppState;
use crate::validate;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::db::messages::{self, Message};
use shared::db::sessions;
use shared::domain::{MessageId, SessionId, SessionStatus};
use utoipa::{IntoParams, ToSchema};

/// The rate limit's bucket in `rate_limit_counters` (`ANSWERS_PER_MINUTE`).
const ANSWERS_BUCKET: &str = "answer";

/// The last page number accepted (it keeps `page × limit` far from overflow).
const MAX_PAGE: i64 = 10_000_000;

/// Paging of a session's messages (and operations).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 10,000,000; default 1.
    #[param(minimum = 1, maximum = 10_000_000)]
    pub page: Option<i64>,
    /// 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

impl PageParams {
    /// The page, the limit and the offset they make; a 422 naming the field when one
    /// is out of range.
    pub fn resolve(&self) -> Result<(i64, i64, i64), ApiError> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::field("page", "must be between 1 and 10,000,000"));
        }
        if !(1..=200).contains(&limit) {
            return Err(ApiError::field("limit", "must be between 1 and 200"));
        }
        Ok((page, limit, (page - 1) * limit))
    }
}

/// One page of messages, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    pub total: i64,
    pub page: i64,
    pub limit: i64,
}

/// The user's answer to the last question.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AnswerRequest {
    /// Not blank; at most `ANSWER_MAX_CHARS` characters (default 5,000).
    #[schema(pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: String,
    /// The question this answers: a question message of this session, answered at most
    /// once. Optional: without it the answer is stored unattached.
    pub question_id: Option<MessageId>,
}

/// Lists a session's messages, oldest first.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/messages", operation_id = "list_messages", tag = "messages", params(("id" = uuid::Uuid, Path, description = "Session id"), PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of messages", body = MessagePage),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: page < 1, limit outside 1–200, bad id", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(session_id): Path<SessionId>,
    Query(params): Query<PageParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let (page, limit, offset) = params.resolve()?;
    let mut conn = state.conn().await?;
    sessions::find_owned(&mut conn, session_id, user)
        .await
        .context("reading the session")?
        .ok_or(ApiError::SessionNotFound)?;
    let items = messages::page(&mut conn, session_id, limit, offset)
        .await
        .context("reading a page of messages")?;
    let total = messages::count(&mut conn, session_id)
        .await
        .context("counting the messages")?;
    Ok(Json(MessagePage {
        items,
        total,
        page,
        limit,
    }))
}

/// Records the user's answer in an active session.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/answers", operation_id = "create_answer", tag = "messages", request_body = AnswerRequest,
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored, with message_type answer", body = Message),
        (status = 400, description = "SESSION_NOT_ACTIVE", body = ErrorBody),
        (status = 401, description = "NOT_AUTHENTICATED", body = ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_ANSWERED: question_id has an answer already", body = ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body over 256 KiB", body = ErrorBody),
        (status = 422, description = "VALIDATION_ERROR: question_id not a question of this session; empty content, or longer than ANSWER_MAX_CHARS (default 5,000 characters)", body = ErrorBody),
        (status = 429, description = "TOO_MANY_REQUESTS: more than ANSWERS_PER_MINUTE answers by this user this minute", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
    ))]
pub async fn answer(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(session_id): Path<SessionId>,
    Json(req): Json<AnswerRequest>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let content = validate::text("content", &req.content)?;
    let max = state.limits.answer_max_chars;
    if content.chars().count() > max {
        return Err(ApiError::field(
            "content",
            format!("must be at most {max} characters"),
        ));
    }
    let mut tx = state.begin().await?;
    // Locked so a concurrent PATCH cannot complete the session between check and insert.
    let session = sessions::lock_owned(&mut tx, session_id, user)
        .await
        .context("locking the session")?
        .ok_or(ApiError::SessionNotFound)?;
    if session.status != SessionStatus::Active {
        return Err(ApiError::SessionNotActive(session.status));
    }
    if let Some(question) = req.question_id {
        let asked = messages::is_question_of(&mut tx, question, session_id)
            .await
            .context("finding the question")?;
        if !asked {
            return Err(ApiError::field(
                "question_id",
                "must be the id of a question of this session",
            ));
        }
    }
    // Counted in the answer's transaction: a refused or failed answer rolls its hit
    // back, so only stored answers count.
    per_user_limit(
        &mut tx,
        user,
        ANSWERS_BUCKET,
        state.limits.answers_per_minute,
    )
    .await?;
    let message = match messages::insert_answer(&mut tx, session_id, content, req.question_id).await
    {
        Ok(message) => message,
        Err(err) if shared::db::violates(&err, messages::QUESTION_ID_KEY) => {
            return Err(ApiError::AlreadyAnswered);
        }
        Err(err) => return Err(ApiError::database("inserting the answer", err)),
    };
    tx.commit().await.context("committing the answer")?;
    Ok((StatusCode::CREATED, Json(message)))
}
