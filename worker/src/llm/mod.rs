//! The LLM layer: one trait, [`Writer`], for the two things the model writes — an
//! interview question, and the feedback on an answer — and two providers: `openai` (any
//! OpenAI-compatible server, through async-openai) and `offline` (deterministic, no
//! network). Errors are classified here once, whatever was asked for: which may pass on
//! another attempt, which will not, and the sentence a person is shown for each, worded
//! for the operation that failed.

pub mod hints;
pub mod offline;
pub mod openai;
pub mod spend;

use crate::output::{Feedback, Question};
use crate::prompt::{FeedbackContext, QuestionContext};
use shared::domain::OperationType;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// What the model wrote (a [`Question`] or a [`Feedback`]) and what produced it.
#[derive(Debug, Clone)]
pub struct Generated<T = Question> {
    pub output: T,
    /// The model that wrote it, as the provider names it.
    pub model: String,
    pub usage: Option<Usage>,
}

/// Writes what the interview needs from the model. Each method is one request to the
/// provider with no retries of its own: the job's retry policy is the only one, and it
/// is visible in metrics.
pub trait Writer: Send + Sync {
    /// Asks for one interview question.
    fn question(
        &self,
        context: &QuestionContext,
    ) -> impl Future<Output = Result<Generated, LlmError>> + Send;

    /// Asks for the feedback on one answer.
    fn feedback(
        &self,
        context: &FeedbackContext,
    ) -> impl Future<Output = Result<Generated<Feedback>, LlmError>> + Send;

    /// The configured model name, for logs and metadata.
    fn model(&self) -> &str;
}

/// The configured provider.
#[derive(Debug)]
pub enum Llm {
    OpenAi(Box<openai::OpenAiWriter>),
    Offline(offline::OfflineWriter),
}

/// Each call is one span: a client span in OpenTelemetry's GenAI vocabulary (the
/// configured model, the tokens, the outcome and the HTTP status), so that a trace
/// shows every call a job made, the refused ones too.
impl Writer for Llm {
    async fn question(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
        let span = call_span(self.model());
        let written = match self {
            Llm::OpenAi(writer) => writer.question(context).instrument(span.clone()).await,
            Llm::Offline(writer) => writer.question(context).instrument(span.clone()).await,
        };
        record_call(&span, &written);
        written
    }

    async fn feedback(&self, context: &FeedbackContext) -> Result<Generated<Feedback>, LlmError> {
        let span = call_span(self.model());
        let written = match self {
            Llm::OpenAi(writer) => writer.feedback(context).instrument(span.clone()).await,
            Llm::Offline(writer) => writer.feedback(context).instrument(span.clone()).await,
        };
        record_call(&span, &written);
        written
    }

    fn model(&self) -> &str {
        match self {
            Llm::OpenAi(writer) => writer.model(),
            Llm::Offline(writer) => writer.model(),
        }
    }
}

/// The span of one call to the model, its outcome recorded by [`record_call`].
fn call_span(model: &str) -> tracing::Span {
    tracing::info_span!(
        "model call",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        retry_after_ms = tracing::field::Empty,
    )
}

fn record_call<T>(span: &tracing::Span, written: &Result<Generated<T>, LlmError>) {
    match written {
        Ok(generated) => {
            span.record("outcome", "ok");
            span.record("gen_ai.response.model", generated.model.as_str());
            if let Some(usage) = generated.usage {
                span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
                span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
            }
        }
        Err(err) => {
            span.record("outcome", err.outcome.label());
            span.record("otel.status_code", "error");
            if let Some(status) = err.http_status {
                span.record("http.response.status_code", status);
            }
            if let Some(wait) = err.retry_after {
                span.record("retry_after_ms", wait.as_millis() as u64);
            }
        }
    }
}

/// What kind of failure an LLM request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No answer within `LLM_TIMEOUT_SECS`.
    Timeout,
    /// The server could not be reached, or the connection broke.
    Connection,
    /// `429`: the provider's rate limit.
    RateLimited,
    /// `5xx`.
    ServerError,
    /// `400`, `401`, `403`, `404` and other refusals that will not pass by retrying.
    Rejected,
    /// The account's quota is used up (OpenAI's `insufficient_quota`, sent as a `429`):
    /// no wait cures it, so it is not a rate limit.
    QuotaExhausted,
    /// An answer that is not one valid question, or feedback.
    InvalidOutput,
}

impl Outcome {
    /// Whether another attempt may succeed.
    pub fn may_pass(self) -> bool {
        !matches!(self, Outcome::Rejected | Outcome::QuotaExhausted)
    }

    /// The `outcome` label of `llm_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Timeout => "timeout",
            Outcome::Connection => "connection_error",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::Rejected => "rejected",
            Outcome::QuotaExhausted => "quota_exhausted",
            Outcome::InvalidOutput => "invalid_output",
        }
    }

    /// What a person is told when an operation of type `kind` fails this way: never a
    /// key, a URL or what the provider said.
    pub fn sentence(self, kind: OperationType) -> String {
        let reason = match self {
            Outcome::Timeout => "the language model did not answer in time.",
            Outcome::Connection => "the language model service could not be reached.",
            Outcome::RateLimited => "the language model service is busy. Please try again later.",
            Outcome::ServerError => "the language model service had an error.",
            Outcome::Rejected | Outcome::QuotaExhausted => {
                "the language model service refused the request. The service's configuration needs attention."
            }
            Outcome::InvalidOutput => match kind {
                OperationType::QuestionGeneration => {
                    "the language model did not produce a usable question."
                }
                OperationType::FeedbackAnalysis => {
                    "the language model did not produce usable feedback."
                }
            },
        };
        kind.failure(reason)
    }
}

/// A failed LLM request: its kind, and a detail for the logs only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("LLM request failed ({}): {detail}", outcome.label())]
pub struct LlmError {
    pub outcome: Outcome,
    /// For logs: may quote the provider. Never shown to users.
    pub detail: String,
    /// How long the provider asked us to wait before calling again (`Retry-After` and
    /// kin, on a `429` or a `503`): a wait that costs no attempt.
    pub retry_after: Option<Duration>,
    /// The provider's HTTP status, when it answered with one.
    pub http_status: Option<u16>,
}

impl LlmError {
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            retry_after: None,
            http_status: None,
        }
    }

    /// The same failure, with the HTTP status the provider answered.
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The same failure, with the wait the provider asked for. A quota cannot be
    /// waited out, whatever the headers say.
    pub fn with_retry_after(mut self, hint: Option<Duration>) -> Self {
        if self.outcome != Outcome::QuotaExhausted {
            self.retry_after = hint;
        }
        self
    }
}

impl From<crate::output::InvalidOutput> for LlmError {
    fn from(err: crate::output::InvalidOutput) -> Self {
        LlmError::new(Outcome::InvalidOutput, err.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Outcome; 7] = [
        Outcome::Timeout,
        Outcome::Connection,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Rejected,
        Outcome::QuotaExhausted,
        Outcome::InvalidOutput,
    ];

    #[test]
    fn question_sentences_are_worded_as_they_always_were() {
        let expected = [
            "The question could not be generated: the language model did not answer in time.",
            "The question could not be generated: the language model service could not be reached.",
            "The question could not be generated: the language model service is busy. Please try again later.",
            "The question could not be generated: the language model service had an error.",
            "The question could not be generated: the language model service refused the request. The service's configuration needs attention.",
            "The question could not be generated: the language model service refused the request. The service's configuration needs attention.",
            "The question could not be generated: the language model did not produce a usable question.",
        ];
        for (outcome, sentence) in ALL.into_iter().zip(expected) {
            assert_eq!(
                outcome.sentence(OperationType::QuestionGeneration),
                sentence
            );
        }
    }

    #[test]
    fn feedback_sentences_say_that_the_feedback_failed() {
        for outcome in ALL {
            let sentence = outcome.sentence(OperationType::FeedbackAnalysis);
            assert!(
                sentence.starts_with("The feedback could not be generated: the language model"),
                "{sentence}"
            );
            assert!(!sentence.contains("question"), "{sentence}");
        }
        assert_eq!(
            Outcome::InvalidOutput.sentence(OperationType::FeedbackAnalysis),
            "The feedback could not be generated: the language model did not produce usable feedback."
        );
    }
}
