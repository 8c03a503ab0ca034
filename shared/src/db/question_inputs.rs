//! The one read a question-generation attempt makes: the session with its job posting,
//! the owner's resume and the questions asked so far.
//!
//! It spans four tables in one statement, the exception to "SQL per table": the
//! attempt read them in four round trips before, and round trips are what a worker's
//! throughput is made of (BENCHMARKS.md, figure 3).

use crate::db::job_postings::JobPosting;
use crate::domain::{JobPostingId, SessionId, SessionStatus, UserId};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

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
struct Row {
    status: SessionStatus,
    current_question_number: i32,
    job_posting_id: Option<JobPostingId>,
    job_posting_user_id: Option<UserId>,
    title: Option<String>,
    company: Option<String>,
    description: Option<String>,
    job_posting_created_at: Option<DateTime<Utc>>,
    resume: Option<String>,
    earlier_questions: Vec<String>,
}

/// The inputs for the session's next question, with its last `max_earlier` questions;
/// `None` when the session is gone.
pub async fn load(
    conn: &mut PgConnection,
    session_id: SessionId,
    max_earlier: i64,
) -> Result<Option<QuestionInputs>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.status, s.current_question_number,
                p.id AS job_posting_id, p.user_id AS job_posting_user_id,
                p.title, p.company, p.description, p.created_at AS job_posting_created_at,
                r.content AS resume,
                ARRAY(SELECT latest.content FROM
                        (SELECT m.content, m.created_at, m.id FROM session_messages m
                         WHERE m.session_id = s.id AND m.message_type = 'question'
                         ORDER BY m.created_at DESC, m.id DESC
                         LIMIT $2) AS latest
                      ORDER BY latest.created_at, latest.id) AS earlier_questions
         FROM interview_sessions s
         LEFT JOIN job_postings p ON p.id = s.job_posting_id
         LEFT JOIN resumes r ON r.user_id = s.user_id
         WHERE s.id = $1",
    )
    .bind(session_id)
    .bind(max_earlier)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let job_posting = match (
            row.job_posting_id,
            row.job_posting_user_id,
            row.title,
            row.description,
            row.job_posting_created_at,
        ) {
            (Some(id), Some(user_id), Some(title), Some(description), Some(created_at)) => {
                Some(JobPosting {
                    id,
                    user_id,
                    title,
                    company: row.company,
                    description,
                    created_at,
                })
            }
            _ => None,
        };
        QuestionInputs {
            status: row.status,
            current_question_number: row.current_question_number,
            job_posting,
            resume: row.resume,
            earlier_questions: row.earlier_questions,
        }
    }))
}
