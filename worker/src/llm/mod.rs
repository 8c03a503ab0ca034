//! The LLM layer: one trait, [`QuestionWriter`], and two providers — `openai` (any
//! OpenAI-compatible server, through async-openai) and `offline` (deterministic, no
//! network). Errors are classified here once: which may pass on another attempt, which
//! will not, and the sentence a person is shown for each.

pub mod hints;
pub mod offline;
pub mod openai;
pub mod spend;

use crate::output::Question;
use crate::prompt::QuestionContext;
use std::future::Future;
use std::time::Duration;

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// A question and what produced it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub question: Question,
    /// The model that wrote it, as the provider names it.
    pub model: String,
    pub usage: Option<Usage>,
}

/// Writes one interview question from its context.
pub trait QuestionWriter: Send + Sync {
    /// Asks for one question: one request to the provider, no retries of its own
    /// (the job's retry policy is the only one, and it is visible in metrics).
    fn write(
        &self,
        context: &QuestionContext,
    ) -> impl Future<Output = Result<Generated, LlmError>> + Send;

    /// The configured model name, for logs and metadata.
    fn model(&self) -> &str;
}

/// The configured provider.
#[derive(Debug)]
pub enum Llm {
    OpenAi(Box<openai::OpenAiWriter>),
    Offline(offline::OfflineWriter),
}

impl QuestionWriter for Llm {
    async fn write(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
        match self {
            Llm::OpenAi(writer) => writer.write(context).await,
            Llm::Offline(writer) => writer.write(context).await,
        }
    }

    fn model(&self) -> &str {
        match self {
            Llm::OpenAi(writer) => writer.model(),
            Llm::Offline(writer) => writer.model(),
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
    /// An answer that is not one valid question.
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

    /// What a person is told when the operation fails this way: never a key, a URL or
    /// what the provider said.
    pub fn sentence(self) -> &'static str {
        match self {
            Outcome::Timeout => {
                "The question could not be generated: the language model did not answer in time."
            }
            Outcome::Connection => {
                "The question could not be generated: the language model service could not be reached."
            }
            Outcome::RateLimited => {
                "The question could not be generated: the language model service is busy. Please try again later."
            }
            Outcome::ServerError => {
                "The question could not be generated: the language model service had an error."
            }
            Outcome::Rejected | Outcome::QuotaExhausted => {
                "The question could not be generated: the language model service refused the request. The service's configuration needs attention."
            }
            Outcome::InvalidOutput => {
                "The question could not be generated: the language model did not produce a usable question."
            }
        }
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
}

impl LlmError {
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
            retry_after: None,
        }
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
