//! The two statements of a question-generation attempt: its start (the operation marked
//! `processing`, and everything the prompt is built from) and its completion (the
//! session's counter, the question message and the operation's result).
//!
//! Each spans several tables in one statement, the exception to "SQL per table": the
//! attempt took seven round trips to PostgreSQL before and takes four now, and round
//! trips are what a worker's throughput and a candidate's wait are made of
//! (BENCHMARKS.md, figures 3 and 8).

use crate::db::job_postings::JobPosting;
use crate::domain::{
    JobPostingId, MessageId, OperationId, QuestionType, SessionId, SessionStatus, UserId,
};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;

/// An attempt that has begun: the operation is `processing` and counts it. `I`: what
/// the prompt is built from (a question's inputs, or a feedback's).
#[derive(Debug, Clone)]
pub struct Started<I = QuestionInputs> {
    /// Attempts started so far, this one included.
    pub attempts: i32,
    /// Model calls made for the operation by earlier attempts, refused ones included.
    pub model_calls: i32,
    /// Milliseconds its earlier attempts waited on the provider.
    pub waited_ms: i64,
    /// `None` when the session (or what else the prompt needs) is gone.
    pub inputs: Option<I>,
}

/// What the prompt is built from.
#[derive(Debug, Clone)]
pub struct QuestionInputs {
    pub status: SessionStatus,
    pub current_question_number: i32,
    /// `None` when the job posting was deleted after the session began.
    pub job_posting: Option<JobPosting>,
    pub resume: Option<String>,
    /// The session's latest questions (at most the `max_earlier` asked for), oldest
    /// first; `current_question_number` counts them all.
    pub earlier_questions: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct StartRow {
    attempts: i32,
    model_calls: i32,
    waited_ms: i64,
    status: Option<SessionStatus>,
    current_question_number: Option<i32>,
    #[sqlx(flatten)]
    posting: PostingColumns,
    resume: Option<String>,
    earlier_questions: Option<Vec<String>>,
}

/// The session's job posting as an attempt's start reads it, through a LEFT JOIN
/// (every column NULL when there is none): the columns `posting_columns!` names.
#[derive(sqlx::FromRow)]
pub(crate) struct PostingColumns {
    job_posting_id: Option<JobPostingId>,
    job_posting_user_id: Option<UserId>,
    title: Option<String>,
    company: Option<String>,
    description: Option<String>,
    job_posting_created_at: Option<DateTime<Utc>>,
    job_posting_updated_at: Option<DateTime<Utc>>,
}

/// The select list of [`PostingColumns`] from a job posting `p`.
macro_rules! posting_columns {
    () => {
        "p.id AS job_posting_id, p.user_id AS job_posting_user_id,
         p.title, p.company, p.description, p.created_at AS job_posting_created_at,
         p.updated_at AS job_posting_updated_at"
    };
}
pub(crate) use posting_columns;

impl PostingColumns {
    /// The posting, when the join found one.
    pub(crate) fn into_posting(self) -> Option<JobPosting> {
        Some(JobPosting {
            id: self.job_posting_id?,
            user_id: self.job_posting_user_id?,
            title: self.title?,
            company: self.company,
            description: self.description?,
            created_at: self.job_posting_created_at?,
            updated_at: self.job_posting_updated_at?,
        })
    }
}

/// The `UPDATE` that starts an attempt of operation `$1`, for a CTE named `started`:
/// `processing`, one more attempt, the first start kept; it returns the operation's
/// `attempts`, `model_calls` and `waited_ms`, and relaxes the commit (see [`start`]).
macro_rules! start_operation {
    () => {
        "UPDATE operations
         SET status = 'processing', attempts = attempts + 1,
             started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1 AND status IN ('pending', 'processing')
         RETURNING attempts, model_calls, waited_ms,
                   set_config('synchronous_commit', 'off', true) AS relaxed"
    };
}
pub(crate) use start_operation;

/// Moves the operation to `processing`, counts one more attempt (recording when the
/// first began) and reads the session's inputs with its last `max_earlier` questions.
/// `None` when the operation is missing or already `completed`/`failed`: the job is
/// then dropped, so a late or second delivery changes nothing.
///
/// The mark commits with `synchronous_commit = off` (set for this statement's own
/// transaction only): the worker does not wait for a WAL flush before it asks the
/// model. What a PostgreSQL crash within the WAL writer's delay can cost is the mark
/// itself: the operation reads `pending` again, one attempt short in its count, and
/// its job, re-delivered, counts that attempt again, so an operation may get one model
/// call more than `LLM_MAX_ATTEMPTS`. It cannot cost a question: the completion
/// commits synchronously, and its flush makes every earlier write durable, this mark
/// included.
pub async fn start(
    conn: &mut PgConnection,
    operation_id: OperationId,
    session_id: SessionId,
    max_earlier: i64,
) -> Result<Option<Started>, sqlx::Error> {
    let row: Option<StartRow> = sqlx::query_as(concat!(
        "WITH started AS (",
        start_operation!(),
        ")
         SELECT started.attempts, started.model_calls, started.waited_ms, s.status, s.current_question_number, ",
        posting_columns!(),
        ", r.content AS resume,
                CASE WHEN s.id IS NOT NULL THEN ARRAY(
                    SELECT latest.content FROM
                        (SELECT m.content, m.created_at, m.id FROM session_messages m
                         WHERE m.session_id = s.id AND m.message_type = 'question'
                         ORDER BY m.created_at DESC, m.id DESC
                         LIMIT $3) AS latest
                    ORDER BY latest.created_at, latest.id) END AS earlier_questions
         FROM started
         LEFT JOIN interview_sessions s ON s.id = $2
         LEFT JOIN job_postings p ON p.id = s.job_posting_id
         LEFT JOIN resumes r ON r.user_id = s.user_id"
    ))
    .bind(operation_id)
    .bind(session_id)
    .bind(max_earlier)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let inputs = match (row.status, row.current_question_number) {
            (Some(status), Some(current_question_number)) => Some(QuestionInputs {
                status,
                current_question_number,
                job_posting: row.posting.into_posting(),
                resume: row.resume,
                earlier_questions: row.earlier_questions.unwrap_or_default(),
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

/// A generated question, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewQuestion<'a> {
    pub session_id: SessionId,
    pub operation_id: OperationId,
    pub content: &'a str,
    pub question_type: QuestionType,
    /// The message's metadata; `question_number` is added to it here.
    pub metadata: &'a serde_json::Value,
}

/// What [`complete`] did. Anything but `Completed` wrote something that must not
/// stand: the caller rolls the transaction back (or, for `SessionNotActive`, writes the
/// failure instead; nothing was written then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The question is stored as this session's `question_number`-th, and the
    /// operation is `completed` with it.
    Completed {
        question_number: i32,
        message_id: MessageId,
    },
    /// The session is missing or not `active`: nothing was written.
    SessionNotActive,
    /// Another delivery stored this operation's question first.
    AlreadyStored,
    /// The operation was finished meanwhile (failed by another delivery, cancelled).
    OperationFinished,
}

/// The statement of [`complete`]: `$1` session, `$2` operation, `$3` the new message's
/// id, `$4` the question's text, `$5` its type, `$6` the message's metadata. Public so
/// that the pgbench script that measures it (`scripts/bench/pgbench/complete.sql`) is
/// checked against it (the test below). The script repeats the statement on purpose:
/// pgbench runs plain SQL files, and the comparison is what keeps the copy true.
pub const COMPLETE: &str = "WITH counted AS (
    UPDATE interview_sessions
    SET current_question_number = current_question_number + 1, updated_at = now()
    WHERE id = $1 AND status = 'active'
    RETURNING current_question_number AS question_number
), stored AS (
    INSERT INTO session_messages
        (id, session_id, message_type, content, question_type, metadata, operation_id)
    SELECT $3, $1, 'question', $4, $5,
           $6 || jsonb_build_object('question_number', question_number), $2
    FROM counted
    ON CONFLICT ON CONSTRAINT session_messages_operation_id_key DO NOTHING
    RETURNING id, content
), completed AS (
    UPDATE operations
    SET status = 'completed', error_message = NULL, updated_at = now(),
        result = jsonb_build_object(
            'question_text', stored.content,
            'question_type', $5,
            'message_id', stored.id,
            'question_number', counted.question_number)
    FROM stored, counted
    WHERE operations.id = $2 AND operations.status = 'processing'
    RETURNING operations.id
)
SELECT counted.question_number, stored.id AS message_id,
       EXISTS (SELECT FROM completed) AS completed
FROM counted LEFT JOIN stored ON true";

#[derive(sqlx::FromRow)]
struct CompleteRow {
    question_number: i32,
    message_id: Option<MessageId>,
    completed: bool,
}

/// Counts the question, stores it and completes the operation, in one statement. Run
/// it in a transaction, and commit only on [`Completion::Completed`].
///
/// The statement takes its locks in the order every writer of a session uses (the
/// api's enqueue and cancel too): the session's row first, by the counter's `UPDATE`,
/// which orders concurrent completions of one session, so each reads the number the
/// previous one left; then the message, whose UNIQUE `operation_id` refuses a second
/// delivery's; then the operation, completed only if still `processing`.
pub async fn complete(
    conn: &mut PgConnection,
    question: &NewQuestion<'_>,
) -> Result<Completion, sqlx::Error> {
    let message_id = MessageId::new();
    let row: Option<CompleteRow> = sqlx::query_as(COMPLETE)
        .bind(question.session_id)
        .bind(question.operation_id)
        .bind(message_id)
        .bind(question.content)
        .bind(question.question_type)
        .bind(Json(question.metadata))
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        None => Completion::SessionNotActive,
        Some(CompleteRow {
            message_id: None, ..
        }) => Completion::AlreadyStored,
        Some(CompleteRow {
            completed: false, ..
        }) => Completion::OperationFinished,
        Some(CompleteRow {
            question_number,
            message_id: Some(message_id),
            completed: true,
        }) => Completion::Completed {
            question_number,
            message_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::COMPLETE;

    /// What the pgbench script writes in place of each parameter of [`COMPLETE`].
    const PGBENCH_ARGUMENTS: [(&str, &str); 6] = [
        ("md5('s' || :s)::uuid", "$1"),
        ("md5('op' || :idx)::uuid", "$2"),
        ("gen_random_uuid()", "$3"),
        (
            "'Walk me through how you would make a job queue survive a crashed worker.'",
            "$4",
        ),
        ("'technical'", "$5"),
        (
            "'{\"operation_id\": \"00000000-0000-0000-0000-000000000000\", \"model\": \"bench-model\", \"prompt_version\": \"v1\", \"attempts\": 1, \"latency_ms\": 0, \"usage\": {\"prompt_tokens\": 300, \"completion_tokens\": 30, \"total_tokens\": 330}}'::jsonb",
            "$6",
        ),
    ];

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_pgbench_script_runs_the_workers_completion_statement() {
        let script = include_str!("../../../scripts/bench/pgbench/complete.sql");
        let statement = script
            .split_once("BEGIN;")
            .and_then(|(_, rest)| rest.split_once(";\nEND;"))
            .map(|(statement, _)| statement)
            .expect("the script's statement between BEGIN; and END;");
        let mut statement = words(statement);
        for (literal, parameter) in PGBENCH_ARGUMENTS {
            statement = statement.replace(&words(literal), parameter);
        }
        assert_eq!(statement, words(COMPLETE));
    }
}
