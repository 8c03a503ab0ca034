//! The `offline` provider: deterministic, network-free questions written from the job
//! posting and resume, and feedback from the answer and its question, so the system
//! runs end to end on a laptop with no key.
//!
//! Same context, same question; a question already asked in the session is skipped.
//! Same answer, same feedback; its score follows the answer's length and whether it
//! speaks to the question's own terms, so that different answers plausibly differ.
//!
//! It reports the tokens a model would have been billed for, estimated at four
//! characters a token of the real prompt and of a JSON reply, so that a local run's
//! token and cost panels show the shape of real use (under `model="offline"`).

use super::spend::{self, Prices};
use super::{Generated, LlmError, Usage, Writer};
use crate::output::{Feedback, Question};
use crate::prompt::{FeedbackContext, Prompt, QuestionContext};
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

impl Writer for OfflineWriter {
    async fn question(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
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
        // The reply a model would send: the JSON object around the question.
        let usage = self.bill(
            &crate::prompt::build(context),
            question.chars().count() + 48,
        );
        Ok(Generated {
            output: Question {
                text: question,
                question_type: context.requested_type,
            },
            model: MODEL.to_owned(),
            usage: Some(usage),
        })
    }

    async fn feedback(&self, context: &FeedbackContext) -> Result<Generated<Feedback>, LlmError> {
        let feedback = assess(context);
        // The reply a model would send: the feedback as JSON.
        let reply = serde_json::to_string(&feedback).map_or(0, |json| json.chars().count());
        let usage = self.bill(&crate::prompt::build_feedback(context), reply);
        Ok(Generated {
            output: feedback,
            model: MODEL.to_owned(),
            usage: Some(usage),
        })
    }

    fn model(&self) -> &str {
        MODEL
    }
}

impl OfflineWriter {
    /// The usage a model would report for `prompt` and a reply of `reply_chars`
    /// characters, counted as a model's would be.
    fn bill(&self, prompt: &Prompt, reply_chars: usize) -> Usage {
        let estimate =
            |chars: usize| u32::try_from(chars.div_ceil(CHARS_PER_TOKEN)).unwrap_or(u32::MAX);
        let prompt_tokens = estimate(prompt.system.chars().count() + prompt.user.chars().count());
        let completion_tokens = estimate(reply_chars);
        spend::record(MODEL, &self.prices, prompt_tokens, completion_tokens);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// What an answer has, as far as counting can tell.
struct Traits {
    words: usize,
    /// The question's own terms that the answer uses too (whatever their case), in the
    /// question's order and spelling.
    shared_terms: Vec<String>,
    /// A number: a result measured, a size, a date.
    has_numbers: bool,
    /// "I" or "my": the candidate's own part, which a behavioral answer needs.
    first_person: bool,
}

impl Traits {
    fn of(context: &FeedbackContext) -> Self {
        let answer_words: Vec<String> = context
            .answer
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let answer_set: std::collections::HashSet<&str> =
            answer_words.iter().map(String::as_str).collect();
        let mut shared_terms: Vec<String> = Vec::new();
        for term in terms(&context.question) {
            let lower = term.to_lowercase();
            if answer_set.contains(lower.as_str())
                && !shared_terms.iter().any(|t| t.to_lowercase() == lower)
            {
                shared_terms.push(term.to_owned());
            }
        }
        Traits {
            words: answer_words.len(),
            shared_terms,
            has_numbers: context.answer.chars().any(|c| c.is_ascii_digit()),
            first_person: answer_set.contains("i") || answer_set.contains("my"),
        }
    }

    /// 1 for next to nothing; then up with length, and one more for an answer of some
    /// length that speaks to the question's terms.
    fn score(&self) -> u8 {
        let by_length = match self.words {
            0..5 => return 1,
            5..20 => 2,
            20..60 => 3,
            _ => 4,
        };
        let on_topic = u8::from(self.shared_terms.len() >= 2 && self.words >= 20);
        (by_length + on_topic).min(5)
    }
}

/// The words of a question worth finding in its answer: four letters or more, not the
/// words every question is made of, and not absurdly long (a term is quoted back).
fn terms(question: &str) -> impl Iterator<Item = &str> {
    const COMMON: &[&str] = &[
        "about", "could", "describe", "does", "explain", "first", "from", "have", "into", "most",
        "some", "tell", "that", "them", "then", "there", "they", "this", "time", "walk", "were",
        "what", "when", "where", "which", "while", "will", "with", "would", "your",
    ];
    question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| (4..=30).contains(&w.chars().count()))
        .filter(|w| !COMMON.contains(&w.to_lowercase().as_str()))
}

const GENERAL_STRENGTHS: &[&str] = &[
    "It answers without hedging.",
    "It stays on the question rather than drifting.",
    "It is easy to follow.",
];

const GENERAL_IMPROVEMENTS: &[&str] = &[
    "Close with what you learned, or what you would do differently next time.",
    "Name the trade-offs you weighed, not only the choice you made.",
    "Lead with your main point, then support it.",
];

/// The summary's opening, by score.
const SUMMARIES: [&str; 5] = [
    "The answer is too brief to show what you can do.",
    "The answer makes a start, but it needs more substance to convince.",
    "A reasonable answer that covers the basics, with room to go deeper.",
    "A good answer that responds to the question with substance.",
    "An excellent answer: relevant, specific and well developed.",
];

/// The feedback on an answer, from its [`Traits`] alone: same answer, same feedback.
fn assess(context: &FeedbackContext) -> Feedback {
    let traits = Traits::of(context);
    let score = traits.score();
    let pick = usize::try_from(answer_seed(&context.answer)).unwrap_or(0);

    let mut strengths = Vec::new();
    if let Some(term) = traits.shared_terms.first() {
        strengths.push(format!("It speaks directly to the question, on {term}."));
    }
    if traits.has_numbers {
        strengths.push("It gives concrete figures, which makes it credible.".to_owned());
    }
    if traits.words >= 60 {
        strengths.push("It goes into real detail.".to_owned());
    }
    if strengths.is_empty() {
        strengths.push(GENERAL_STRENGTHS[pick % GENERAL_STRENGTHS.len()].to_owned());
    }

    let mut improvements = Vec::new();
    if traits.words < 20 {
        improvements
            .push("Develop the answer: explain your reasoning and give an example.".to_owned());
    }
    if traits.shared_terms.len() < 2 {
        improvements.push("Address the question's own terms more directly.".to_owned());
    }
    if !traits.has_numbers {
        improvements.push("Quantify the outcome: a number makes a result memorable.".to_owned());
    }
    if context.question_type == Some(QuestionType::Behavioral) && !traits.first_person {
        improvements
            .push("Say what you did yourself: situation, task, action and result.".to_owned());
    }
    if improvements.is_empty() {
        improvements.push(GENERAL_IMPROVEMENTS[pick % GENERAL_IMPROVEMENTS.len()].to_owned());
    }
    strengths.truncate(3);
    improvements.truncate(3);

    let mut advice = improvements[0].chars();
    let advice: String = advice
        .next()
        .map(|first| first.to_lowercase().chain(advice).collect())
        .unwrap_or_default();
    let summary = format!(
        "{} Above all, next time: {advice}",
        SUMMARIES[usize::from(score.clamp(1, 5) - 1)],
    );
    Feedback {
        score,
        strengths,
        improvements,
        summary,
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

/// A stable number from the context, so the same context gives the same question.
fn seed(context: &QuestionContext) -> u64 {
    let title = context
        .job_posting
        .as_ref()
        .map_or("", |j| j.title.as_str());
    fnv1a(title.bytes().chain(context.questions_asked.to_le_bytes())) % 1_000
}

/// A stable number from an answer, so the same answer gets the same feedback.
fn answer_seed(answer: &str) -> u64 {
    fnv1a(answer.trim().bytes()) % 1_000
}

/// FNV-1a: stable across runs and builds, unlike the standard library's hasher.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
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
            .question(&context(QuestionType::Technical, vec![]))
            .await
            .expect("question");
        let b = OfflineWriter::default()
            .question(&context(QuestionType::Technical, vec![]))
            .await
            .expect("question");
        assert_eq!(a.output, b.output);
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
        assert_eq!(a.output.question_type, QuestionType::Technical);
        let text = &a.output.text;
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
                .question(&context(kind, earlier.clone()))
                .await
                .expect("question");
            assert!(
                !earlier.contains(&q.output.text),
                "repeated {:?}",
                q.output.text
            );
            earlier.push(q.output.text);
        }
    }

    fn feedback_context(answer: &str) -> FeedbackContext {
        let question = context(QuestionType::Behavioral, vec![]);
        FeedbackContext {
            job_posting: question.job_posting,
            resume: question.resume,
            question: "Tell me about a time you had to recover a PostgreSQL cluster after \
                a failed Kubernetes upgrade."
                .into(),
            question_type: Some(QuestionType::Behavioral),
            answer: answer.into(),
        }
    }

    const STRONG: &str = "Last year our Kubernetes upgrade left the PostgreSQL cluster with \
        a broken replica and a primary that would not start. I took the incident: I froze \
        deploys, restored the primary from the last base backup plus WAL, and promoted a \
        healthy replica while I rebuilt the other one. We were back in 40 minutes and lost \
        no committed data. Afterwards I added a staging upgrade rehearsal and a runbook for \
        the cluster, and the next upgrade went through without any downtime at all.";

    async fn feedback(answer: &str) -> Generated<Feedback> {
        OfflineWriter::default()
            .feedback(&feedback_context(answer))
            .await
            .expect("feedback")
    }

    #[tokio::test]
    async fn offline_feedback_is_deterministic_and_follows_the_answer() {
        let a = feedback(STRONG).await;
        assert_eq!(a.output, feedback(STRONG).await.output);
        assert_eq!(a.model, MODEL);
        assert!(a.output.score >= 4, "{:?}", a.output);
        assert!(
            a.output.strengths[0].contains("PostgreSQL"),
            "{:?}",
            a.output
        );
        let weak = feedback("I would fix it.").await;
        assert!(weak.output.score < a.output.score, "{weak:?}");
        assert_ne!(weak.output, a.output);
        let middling = feedback(
            "I would check the logs first, then restore from a backup and bring the \
             service back, and afterwards write down what happened for the team.",
        )
        .await;
        assert!(
            weak.output.score < middling.output.score && middling.output.score < a.output.score,
            "{middling:?}"
        );
        // Its usage is an estimate of the real prompt and reply, never nothing.
        let usage = a.usage.expect("an estimate");
        assert!(
            usage.prompt_tokens > 50 && usage.completion_tokens > 20,
            "{usage:?}"
        );
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
    }

    #[tokio::test]
    async fn an_empty_or_nearly_empty_answer_scores_lowest() {
        for answer in ["", "   \n", "Yes.", "I don't know"] {
            let got = feedback(answer).await.output;
            assert_eq!(got.score, 1, "{answer:?}: {got:?}");
            assert!(
                got.improvements
                    .iter()
                    .any(|i| i.contains("Develop the answer")),
                "{got:?}"
            );
        }
    }

    #[tokio::test]
    async fn offline_feedback_is_always_within_the_bounds_a_model_reply_is_held_to() {
        let long_word = "x".repeat(5_000);
        let answers = [
            String::new(),
            "I don't know".to_owned(),
            STRONG.to_owned(),
            STRONG.repeat(20),
            format!("{long_word} {long_word} PostgreSQL Kubernetes"),
            "émigré naïve façade 42 ".repeat(100),
        ];
        for answer in answers {
            let mut ctx = feedback_context(&answer);
            ctx.question = format!("{long_word} {}", ctx.question);
            for kind in [
                None,
                Some(QuestionType::Technical),
                Some(QuestionType::Behavioral),
            ] {
                ctx.question_type = kind;
                let got = OfflineWriter::default()
                    .feedback(&ctx)
                    .await
                    .expect("feedback")
                    .output;
                let json = serde_json::to_string(&got).expect("serializable");
                let reparsed = crate::output::parse_feedback(&json)
                    .unwrap_or_else(|err| panic!("{err}: {json}"));
                assert_eq!(reparsed, got);
                assert!((1..=3).contains(&got.strengths.len()), "{got:?}");
                assert!((1..=3).contains(&got.improvements.len()), "{got:?}");
            }
        }
    }
}
