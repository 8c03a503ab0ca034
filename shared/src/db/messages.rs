//! SQL for `session_messages`: questions and feedback written by the worker, answers by
//! the user.

use crate::domain::{MessageId, MessageType, OperationId, QuestionType, SessionId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use sqlx::types::Json;
use utoipa::ToSchema;

/// The constraint that allows one question message per operation.
pub const OPERATION_ID_KEY: &str = "session_messages_operation_id_key";

/// A question, an answer or a feedback in a session.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    pub message_type: MessageType,
    pub content: String,
    /// Set for questions, `null` for answers.
    pub question_type: Option<QuestionType>,
    /// For an answer, the question it answers, when the client said; `null` otherwise.
    pub question_id: Option<MessageId>,
    /// For questions: `operation_id`, `question_number`, `model`, `prompt_version`,
    /// `attempts`, `latency_ms`, and token usage when the provider reports it. For
    /// feedback: `operation_id`, `answer_id`, `score`, `strengths`, `improvements`,
    /// `model`, `prompt_version`, `attempts`, `latency_ms`, and usage likewise.
    #[schema(value_type = Object)]
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// The index that lets a question be answered once.
pub const QUESTION_ID_KEY: &str = "session_messages_question_id_key";

/// Stores a user's answer, to `question_id` if given (the caller has checked that it is
/// a question of this session: [`is_question_of`]); a second answer to one question
/// violates [`QUESTION_ID_KEY`].
pub async fn insert_answer(
    conn: &mut PgConnection,
    session_id: SessionId,
    content: &str,
    question_id: Option<MessageId>,
) -> Result<Message, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO session_messages (id, session_id, message_type, content, question_id)
         VALUES ($1, $2, 'answer', $3, $4)
         RETURNING id, session_id, message_type, content, question_type, question_id, metadata, created_at",
    )
    .bind(MessageId::new())
    .bind(session_id)
    .bind(content)
    .bind(question_id)
    .fetch_one(conn)
    .await
}

/// Whether `id` is a question message of `session_id`.
pub async fn is_question_of(
    conn: &mut PgConnection,
    id: MessageId,
    session_id: SessionId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM session_messages
                        WHERE id = $1 AND session_id = $2 AND message_type = 'question')",
    )
    .bind(id)
    .bind(session_id)
    .fetch_one(conn)
    .await
}

/// An answer of a session, as feedback needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct AnswerRef {
    pub id: MessageId,
    /// The question it answers, when the client said.
    pub question_id: Option<MessageId>,
}

/// The answer `id` of `session_id`; `None` when there is no such answer (another
/// session's, a question, or nothing).
pub async fn find_answer(
    conn: &mut PgConnection,
    id: MessageId,
    session_id: SessionId,
) -> Result<Option<AnswerRef>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, question_id FROM session_messages
         WHERE id = $1 AND session_id = $2 AND message_type = 'answer'",
    )
    .bind(id)
    .bind(session_id)
    .fetch_optional(conn)
    .await
}

/// One page of a session's messages, oldest first (ids are time-ordered, so they break
/// ties between messages of the same instant).
pub async fn page(
    conn: &mut PgConnection,
    session_id: SessionId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, session_id, message_type, content, question_type, question_id, metadata, created_at
         FROM session_messages WHERE session_id = $1
         ORDER BY created_at, id
         LIMIT $2 OFFSET $3",
    )
    .bind(session_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// How many messages the session has.
pub async fn count(conn: &mut PgConnection, session_id: SessionId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM session_messages WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(conn)
        .await
}

/// The question an operation produced, if any.
pub async fn find_by_operation(
    conn: &mut PgConnection,
    operation_id: OperationId,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, session_id, message_type, content, question_type, question_id, metadata, created_at
         FROM session_messages WHERE operation_id = $1",
    )
    .bind(operation_id)
    .fetch_optional(conn)
    .await
}
