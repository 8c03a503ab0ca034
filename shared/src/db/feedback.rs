//! The two statements of a feedback attempt, as [`super::attempt`] has them for a
//! question: its start (the operation marked `processing`, with the answer, its
//! question, the job posting and the resume) and its completion (the feedback message
//! and the operation's result, in one statement).

use super::attempt::{PostingColumns, Started, posting_columns, start_operation};
use crate::db::job_postings::JobPosting;
use crate::domain::{MessageId, OperationId, QuestionType, SessionId};
use sqlx::PgConnection;
use sqlx::types::Json;

/// What a feedback's prompt is built from.
#[derive(Debug, Clone)]
pub struct FeedbackInputs {
    pub question: String,
    pub question_type: Option<QuestionType>,
    pub answer: String,
    /// `None` when the job posting was deleted after the session began.
    pub job_posting: Option<JobPosting>,
    pub resume: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StartRow {
    attempts: i32,
    model_calls: i32,
    waited_ms: i64,
    answer: Option<String>,
    question: Option<String>,
    question_type: Option<QuestionType>,
    #[sqlx(flatten)]
    posting: PostingColumns,
    resume: Option<String>,
}

/// Moves the operation to `processing`, counts one more attempt and reads the answer
/// `answer_id` of `session_id` with its question; `inputs` is `None` when the session,
/// the answer or its question is gone. `None` when the operation is missing or already
/// finished. The mark commits relaxed, as a question's does ([`super::attempt::start`]
/// says why that is safe).
pub async fn start(
    conn: &mut PgConnection,
    operation_id: OperationId,
    session_id: SessionId,
    answer_id: MessageId,
) -> Result<Option<Started<FeedbackInputs>>, sqlx::Error> {
    let row: Option<StartRow> = sqlx::query_as(concat!(
        "WITH started AS (",
        start_operation!(),
        ")
         SELECT started.attempts, started.model_calls, started.waited_ms,
                a.content AS answer, q.content AS question, q.question_type, ",
        posting_columns!(),
        ", r.content AS resume
         FROM started
         LEFT JOIN interview_sessions s ON s.id = $2
         LEFT JOIN session_messages a
                ON a.id = $3 AND a.session_id = s.id AND a.message_type = 'answer'
         LEFT JOIN session_messages q ON q.id = a.question_id
         LEFT JOIN job_postings p ON p.id = s.job_posting_id
         LEFT JOIN resumes r ON r.user_id = s.user_id"
    ))
    .bind(operation_id)
    .bind(session_id)
    .bind(answer_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let inputs = match (row.answer, row.question) {
            (Some(answer), Some(question)) => Some(FeedbackInputs {
                question,
                question_type: row.question_type,
                answer,
                job_posting: row.posting.into_posting(),
                resume: row.resume,
            }),
            _ => None,
        };
        Started {
            attempts: row.attempts,
            model_calls: row.model_calls,
            waited_ms: row.waited_ms,
            inputs,
        }
    }))
}

/// A feedback, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewFeedback<'a> {
    pub session_id: SessionId,
    pub operation_id: OperationId,
    /// The message's content: the feedback's summary.
    pub summary: &'a str,
    pub metadata: &'a serde_json::Value,
    /// The operation's result; `message_id` is added to it here.
    pub result: &'a serde_json::Value,
}

/// What [`complete`] did. Anything but `Completed` wrote nothing that may stand: the
/// caller rolls the transaction back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The feedback is stored, and the operation is `completed` with it.
    Completed { message_id: MessageId },
    /// The session is gone: nothing was written.
    SessionGone,
    /// Another delivery stored this operation's feedback first.
    AlreadyStored,
    /// The operation was finished meanwhile (failed by another delivery, cancelled).
    OperationFinished,
}

#[derive(sqlx::FromRow)]
struct CompleteRow {
    message_id: Option<MessageId>,
    completed: bool,
}

/// Stores the feedback message and completes the operation, in one statement. Run it
/// in a transaction, and commit only on [`Completion::Completed`].
///
/// Locks in the order of every writer of a session: the session's row first (a
/// feedback changes nothing in it, but completing the operation fires the trigger that
/// releases the session's next question, which locks it), then the message, whose
/// UNIQUE `operation_id` refuses a second delivery's, then the operation. A feedback
/// is stored whatever the session's status: a candidate who asks for feedback on their
/// last answer and then ends the interview still gets it.
pub async fn complete(
    conn: &mut PgConnection,
    feedback: &NewFeedback<'_>,
) -> Result<Completion, sqlx::Error> {
    let row: Option<CompleteRow> = sqlx::query_as(
        "WITH locked AS (
             SELECT id FROM interview_sessions WHERE id = $1 FOR UPDATE
         ), stored AS (
             INSERT INTO session_messages (id, session_id, message_type, content, metadata, operation_id)
             SELECT $3, locked.id, 'feedback', $4, $5, $2 FROM locked
             ON CONFLICT ON CONSTRAINT session_messages_operation_id_key DO NOTHING
             RETURNING id
         ), completed AS (
             UPDATE operations
             SET status = 'completed', error_message = NULL, updated_at = now(),
                 result = $6 || jsonb_build_object('message_id', stored.id)
             FROM stored
             WHERE operations.id = $2 AND operations.status = 'processing'
             RETURNING operations.id
         )
         SELECT stored.id AS message_id, EXISTS (SELECT FROM completed) AS completed
         FROM locked LEFT JOIN stored ON true",
    )
    .bind(feedback.session_id)
    .bind(feedback.operation_id)
    .bind(MessageId::new())
    .bind(feedback.summary)
    .bind(Json(feedback.metadata))
    .bind(Json(feedback.result))
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Completion::SessionGone,
        Some(CompleteRow {
            message_id: None, ..
        }) => Completion::AlreadyStored,
        Some(CompleteRow {
            completed: false, ..
        }) => Completion::OperationFinished,
        Some(CompleteRow {
            message_id: Some(message_id),
            completed: true,
        }) => Completion::Completed { message_id },
    })
}
