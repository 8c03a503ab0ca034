//! The prompt: what the LLM is told about the job, the candidate and the interview so far.
//!
//! The prompt is versioned; the version is stored in each question's metadata, so a
//! question can always be traced to the wording that produced it.

use shared::db::job_postings::JobPosting;
use shared::domain::QuestionType;

/// Bumped whenever the wording below changes.
pub const PROMPT_VERSION: &str = "2026-11-24.1";

/// The most characters of resume and description quoted into a prompt: enough for the
/// substance, bounded so one huge document cannot blow the model's context. The api
/// stores whatever fits its 256 KiB body; this is where the budget is kept.
const MAX_QUOTED_CHARS: usize = 6_000;

/// The most characters of a job title or company name quoted into a prompt.
const MAX_NAME_CHARS: usize = 200;

/// Everything a question is written from: the dual context of job and candidate.
#[derive(Debug, Clone)]
pub struct QuestionContext {
    /// `None` when the job posting was deleted after the session began.
    pub job_posting: Option<JobPosting>,
    /// The candidate's resume, if they wrote one.
    pub resume: Option<String>,
    /// The session's latest questions (`PROMPT_MAX_EARLIER_QUESTIONS` of them at most),
    /// oldest first: not to be repeated.
    pub earlier_questions: Vec<String>,
    /// How many questions the session has had in all (`earlier_questions` may be fewer).
    pub questions_asked: i32,
    /// The type the rotation asks for next.
    pub requested_type: QuestionType,
}

/// A chat prompt: the standing instructions and this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub system: String,
    pub user: String,
}

/// Builds the prompt for one question.
pub fn build(context: &QuestionContext) -> Prompt {
    let system = "You are an experienced interviewer running a mock job interview. \
        Ask exactly one interview question at a time, specific to the role and to the \
        candidate's background, and never repeat or rephrase a question already asked. \
        Reply with a JSON object {\"question_text\": string, \"question_type\": \
        \"technical\" | \"behavioral\" | \"situational\"} and nothing else."
        .to_owned();

    let mut user = String::new();
    match &context.job_posting {
        Some(job) => {
            user.push_str(&format!("Role: {}", clip(&job.title, MAX_NAME_CHARS)));
            if let Some(company) = &job.company {
                user.push_str(&format!(" at {}", clip(company, MAX_NAME_CHARS)));
            }
            user.push_str(&format!(
                "\nJob description:\n{}\n",
                clip(&job.description, MAX_QUOTED_CHARS)
            ));
        }
        None => user
            .push_str("Role: (the job posting is no longer available; ask a general question)\n"),
    }
    match &context.resume {
        Some(resume) => user.push_str(&format!(
            "\nCandidate's resume:\n{}\n",
            clip(resume, MAX_QUOTED_CHARS)
        )),
        None => user.push_str("\nThe candidate has not shared a resume.\n"),
    }
    if !context.earlier_questions.is_empty() {
        user.push_str("\nQuestions already asked (do not repeat them):\n");
        // Numbered as asked: the list may be only the latest of a long interview.
        let first = usize::try_from(context.questions_asked)
            .unwrap_or(0)
            .saturating_sub(context.earlier_questions.len());
        for (n, question) in context.earlier_questions.iter().enumerate() {
            user.push_str(&format!("{}. {}\n", first + n + 1, question));
        }
    }
    user.push_str(&format!(
        "\nWrite question number {} of this interview. Its type must be \"{}\": {}",
        context.questions_asked + 1,
        context.requested_type,
        guidance(context.requested_type)
    ));
    Prompt { system, user }
}

fn guidance(kind: QuestionType) -> &'static str {
    match kind {
        QuestionType::Technical => "a question that tests the knowledge and skills the role needs.",
        QuestionType::Behavioral => {
            "a question about how the candidate acted in a real past situation."
        }
        QuestionType::Situational => {
            "a hypothetical scenario from the role, asking what the candidate would do."
        }
    }
}

fn clip(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shared::domain::{JobPostingId, UserId};

    fn context() -> QuestionContext {
        QuestionContext {
            job_posting: Some(JobPosting {
                id: JobPostingId::new(),
                user_id: UserId::new(),
                title: "Backend engineer".into(),
                company: Some("Acme".into()),
                description: "Build queues in Rust".into(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            resume: Some("Ten years of PostgreSQL".into()),
            earlier_questions: vec!["What is MVCC?".into()],
            questions_asked: 1,
            requested_type: QuestionType::Behavioral,
        }
    }

    #[test]
    fn the_prompt_carries_job_resume_earlier_questions_and_the_requested_type() {
        let prompt = build(&context());
        for needle in [
            "Backend engineer at Acme",
            "Build queues in Rust",
            "Ten years of PostgreSQL",
            "1. What is MVCC?",
            "\"behavioral\"",
            "question number 2",
        ] {
            assert!(
                prompt.user.contains(needle),
                "{needle:?} missing from {}",
                prompt.user
            );
        }
    }

    #[test]
    fn long_documents_are_clipped() {
        let mut ctx = context();
        ctx.resume = Some("é".repeat(MAX_QUOTED_CHARS * 2));
        assert!(build(&ctx).user.chars().filter(|c| *c == 'é').count() == MAX_QUOTED_CHARS);
        ctx.job_posting.as_mut().expect("posting").title = "ț".repeat(10_000);
        assert!(build(&ctx).user.chars().filter(|c| *c == 'ț').count() == MAX_NAME_CHARS);
    }

    #[test]
    fn a_long_interview_quotes_its_latest_questions_numbered_as_asked() {
        let mut ctx = context();
        ctx.earlier_questions = vec!["Q70?".into(), "Q71?".into()];
        ctx.questions_asked = 71;
        let prompt = build(&ctx).user;
        assert!(prompt.contains("70. Q70?\n71. Q71?\n"), "{prompt}");
        assert!(prompt.contains("question number 72"), "{prompt}");
    }
}
