//! The `offline` provider: deterministic, network-free questions written from the job
//! posting and resume, so the system runs end to end on a laptop with no key.
//!
//! Same context, same question; a question already asked in the session is skipped.
//!
//! It reports the tokens a model would have been billed for, estimated at four
//! characters a token of the real prompt and of a JSON reply, so that a local run's
//! token and cost panels show the shape of real use (under `model="offline"`).

use super::spend::{self, Prices};
use super::{Generated, LlmError, QuestionWriter, Usage};
use crate::output::Question;
use crate::prompt::QuestionContext;
use shared::domain::QuestionType;

/// The model name recorded for offline questions.
pub const MODEL: &str = "offline";

/// The built-in generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OfflineWriter {
    /// Prices for `llm_cost_total`, as a model's would be.
    pub prices: Prices,
}

/// Characters per token, the usual estimate for English text.
const CHARS_PER_TOKEN: usize = 4;

const TECHNICAL: &[&str] = &[
    "In the role of {role}, how would you design a system around {topic}, and which trade-offs would you weigh first?",
    "Walk me through how you would debug a production problem involving {topic}.",
    "What are the most common failure modes of {topic}, and how would you guard against them as {role}?",
    "How would you test code that depends on {topic}, from unit tests to production checks?",
    "Explain {topic} to a new teammate: what matters most to get right, and why?",
    "Your experience mentions {experience}. How would you apply it to {topic} in this role?",
];

const BEHAVIORAL: &[&str] = &[
    "Tell me about a time you had to learn {topic} quickly to deliver something. What did you do?",
    "Describe a disagreement with a colleague about {topic}. How did you resolve it?",
    "Tell me about a mistake you made involving {experience}. What did you change afterwards?",
    "Describe a project where you took ownership beyond your role. What was the outcome?",
    "Tell me about a time you had to give difficult feedback to a teammate.",
    "Describe a situation where you had to deliver under a tight deadline as {role}. How did you prioritise?",
];

const SITUATIONAL: &[&str] = &[
    "Imagine that on your first week as {role}, a critical system built on {topic} goes down. What do you do in the first hour?",
    "Suppose a stakeholder asks for a feature that would compromise {topic}. How would you handle it?",
    "If you joined {company} and found no documentation for {topic}, where would you start?",
    "Your team must choose between rewriting and repairing a system built on {topic}. How would you decide?",
    "A junior colleague's change to {topic} broke production. How would you handle the next day?",
    "You have two weeks to bring {experience} to a team new to it. What is your plan?",
];

impl QuestionWriter for OfflineWriter {
    async fn write(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
        let templates = match context.requested_type {
            QuestionType::Technical => TECHNICAL,
            QuestionType::Behavioral => BEHAVIORAL,
            QuestionType::Situational => SITUATIONAL,
        };
        let words = Words::from(context);
        let start = seed(context) as usize;
        let question = (0..templates.len() * words.topics.len().max(1))
            .map(|i| {
                let template = templates[(start + i) % templates.len()];
                let topic = words
                    .topics
                    .get((start + i / templates.len()) % words.topics.len().max(1));
                fill(
                    template,
                    &words,
                    topic.map_or("the core of this role", String::as_str),
                )
            })
            .find(|q| !context.earlier_questions.contains(q))
            .unwrap_or_else(|| {
                format!(
                    "Question {}: what else should we know about how you would succeed as {}?",
                    context.questions_asked + 1,
                    words.role
                )
            });
        let prompt = crate::prompt::build(context);
        let estimate =
            |chars: usize| u32::try_from(chars.div_ceil(CHARS_PER_TOKEN)).unwrap_or(u32::MAX);
        let prompt_tokens = estimate(prompt.system.chars().count() + prompt.user.chars().count());
        // The reply a model would send: the JSON object around the question.
        let completion_tokens = estimate(question.chars().count() + 48);
        let usage = Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        };
        spend::record(MODEL, &self.prices, prompt_tokens, completion_tokens);
        Ok(Generated {
            question: Question {
                text: question,
                question_type: context.requested_type,
            },
            model: MODEL.to_owned(),
            usage: Some(usage),
        })
    }

    fn model(&self) -> &str {
        MODEL
    }
}

/// The words the templates are filled with, picked from the job and the resume.
struct Words {
    role: String,
    company: String,
    topics: Vec<String>,
    experience: String,
}

impl From<&QuestionContext> for Words {
    fn from(context: &QuestionContext) -> Self {
        let (role, company, description) = match &context.job_posting {
            Some(job) => (
                job.title.clone(),
                job.company.clone().unwrap_or_else(|| "the company".into()),
                job.description.as_str(),
            ),
            None => ("this role".into(), "the company".into(), ""),
        };
        let resume = context.resume.as_deref().unwrap_or("");
        let topics = keywords(description, 4);
        let experience = keywords(resume, 1)
            .pop()
            .unwrap_or_else(|| "your past work".into());
        Words {
            role,
            company,
            topics,
            experience,
        }
    }
}

fn fill(template: &str, words: &Words, topic: &str) -> String {
    template
        .replace("{role}", &words.role)
        .replace("{company}", &words.company)
        .replace("{topic}", topic)
        .replace("{experience}", &words.experience)
}

/// Distinctive words of a text: names first (a capital inside a sentence, as in
/// PostgreSQL, Kubernetes, APIs), then the longest other words.
fn keywords(text: &str, n: usize) -> Vec<String> {
    const STOP: &[&str] = &[
        "experience",
        "responsibilities",
        "requirements",
        "including",
        "ability",
        "working",
        "years",
    ];
    let mut ranked: Vec<(bool, usize, &str)> = Vec::new();
    let mut sentence_start = true;
    for token in text.split_whitespace() {
        let word = token.trim_matches(|c: char| !(c.is_alphanumeric() || c == '+' || c == '#'));
        let is_name = !sentence_start && word.chars().next().is_some_and(char::is_uppercase)
            || word.chars().skip(1).any(char::is_uppercase);
        sentence_start = token.ends_with(['.', '!', '?', ':']);
        if word.chars().count() >= 3 && !STOP.contains(&word.to_lowercase().as_str()) {
            ranked.push((is_name, word.chars().count(), word));
        }
    }
    let mut seen = std::collections::HashSet::new();
    ranked.retain(|(_, _, w)| seen.insert(w.to_lowercase()));
    // Stable: ties keep their order in the text.
    ranked.sort_by_key(|(is_name, len, _)| (std::cmp::Reverse(*is_name), std::cmp::Reverse(*len)));
    ranked
        .into_iter()
        .filter(|(is_name, len, _)| *is_name || *len >= 5)
        .take(n)
        .map(|(_, _, w)| w.to_owned())
        .collect()
}

/// A stable number from the context (FNV-1a), so the same context gives the same question.
fn seed(context: &QuestionContext) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let title = context
        .job_posting
        .as_ref()
        .map_or("", |j| j.title.as_str());
    for byte in title.bytes().chain(context.questions_asked.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shared::db::job_postings::JobPosting;
    use shared::domain::{JobPostingId, UserId};

    fn context(kind: QuestionType, earlier: Vec<String>) -> QuestionContext {
        QuestionContext {
            job_posting: Some(JobPosting {
                id: JobPostingId::new(),
                user_id: UserId::new(),
                title: "Platform engineer".into(),
                company: Some("Acme".into()),
                description: "Operate PostgreSQL clusters and Kubernetes workloads".into(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            resume: Some("Built observability pipelines".into()),
            questions_asked: earlier.len() as i32,
            earlier_questions: earlier,
            requested_type: kind,
        }
    }

    #[tokio::test]
    async fn offline_questions_are_deterministic_typed_and_drawn_from_the_context() {
        let a = OfflineWriter::default()
            .write(&context(QuestionType::Technical, vec![]))
            .await
            .expect("question");
        let b = OfflineWriter::default()
            .write(&context(QuestionType::Technical, vec![]))
            .await
            .expect("question");
        assert_eq!(a.question, b.question);
        // Its usage is an estimate of the real prompt and reply, never nothing.
        let usage = a.usage.expect("an estimate");
        assert!(
            usage.prompt_tokens > 50 && usage.completion_tokens > 10,
            "{usage:?}"
        );
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
        assert_eq!(a.question.question_type, QuestionType::Technical);
        let text = &a.question.text;
        assert!(
            [
                "PostgreSQL",
                "Kubernetes",
                "workloads",
                "clusters",
                "Platform engineer",
                "observability"
            ]
            .iter()
            .any(|w| text.contains(w)),
            "{text}"
        );
    }

    #[test]
    fn keywords_prefer_names_of_technologies() {
        let words = keywords(
            "Design durable job queues and APIs on PostgreSQL and Kubernetes.",
            3,
        );
        assert_eq!(words, ["PostgreSQL", "Kubernetes", "APIs"]);
    }

    #[tokio::test]
    async fn offline_never_repeats_an_earlier_question() {
        let mut earlier = Vec::new();
        for n in 0..30 {
            let kind = QuestionType::for_position(n);
            let q = OfflineWriter::default()
                .write(&context(kind, earlier.clone()))
                .await
                .expect("question");
            assert!(
                !earlier.contains(&q.question.text),
                "repeated {:?}",
                q.question.text
            );
            earlier.push(q.question.text);
        }
    }
}
