//! The `openai` provider: async-openai against OpenAI or any compatible server.
//!
//! async-openai's default client silently retries 429, 5xx and connection errors, which
//! would multiply our calls behind the back of our retry policy. We give it a plain
//! [`ReqwestService`] instead: one HTTP call per request, our timeout around it, and
//! [`HintedService`] around that to read a refusal's `Retry-After`.

use super::hints::{self, HintedService};
use super::{Generated, LlmError, Outcome, QuestionWriter, Usage, spend};
use crate::output;
use crate::prompt::{self, QuestionContext};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::{ApiError, OpenAIError};
use async_openai::middleware::ReqwestService;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs, ResponseFormat, ResponseFormatJsonSchema,
};
use reqwest::StatusCode;
use serde_json::json;
use shared::config::Secret;
use std::time::Duration;

/// How the reply is asked for (`LLM_RESPONSE_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ReplyFormat {
    /// Structured output against our JSON schema (OpenAI and servers that support it).
    #[default]
    JsonSchema,
    /// Any JSON object, checked by us (servers without structured output).
    JsonObject,
    /// Plain text: the reply is the question, of the requested type.
    Text,
}

/// Settings of the `openai` provider.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// `None`: OpenAI's own endpoint.
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub model: String,
    pub timeout: Duration,
    pub format: ReplyFormat,
    /// Prices per million tokens, for `llm_cost_total`.
    pub prices: spend::Prices,
}

/// Writes questions with an OpenAI-compatible chat-completions API.
#[derive(Debug)]
pub struct OpenAiWriter {
    client: Client<OpenAIConfig>,
    settings: OpenAiSettings,
}

impl OpenAiWriter {
    /// A client for the configured server; builds no connection yet.
    pub fn new(settings: OpenAiSettings) -> Result<Self, reqwest::Error> {
        shared::tls::install_crypto_provider();
        let mut config = OpenAIConfig::new();
        if let Some(base) = &settings.base_url {
            config = config.with_api_base(base.trim_end_matches('/'));
        }
        if let Some(key) = &settings.api_key {
            config = config.with_api_key(key.expose());
        }
        // reqwest has no default timeout; ours bounds the whole call, this one is a
        // backstop for the connection itself.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout + Duration::from_secs(1))
            .build()?;
        let client =
            Client::with_config(config).with_http_service(HintedService(ReqwestService::new(http)));
        Ok(Self { client, settings })
    }

    fn response_format(&self) -> Option<ResponseFormat> {
        match self.settings.format {
            ReplyFormat::JsonSchema => Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    name: "interview_question".to_owned(),
                    description: Some("One interview question and its type.".to_owned()),
                    schema: json!({
                        "type": "object",
                        "properties": {
                            "question_text": {"type": "string"},
                            "question_type": {"type": "string", "enum": ["technical", "behavioral", "situational"]}
                        },
                        "required": ["question_text", "question_type"],
                        "additionalProperties": false
                    }),
                    strict: Some(true),
                },
            }),
            ReplyFormat::JsonObject => Some(ResponseFormat::JsonObject),
            ReplyFormat::Text => None,
        }
    }
}

impl QuestionWriter for OpenAiWriter {
    async fn write(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
        let prompt = prompt::build(context);
        let user = match self.settings.format {
            ReplyFormat::Text => format!(
                "{}\nReply with the question only, as plain text.",
                prompt.user
            ),
            _ => prompt.user,
        };
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(&self.settings.model).messages([
            ChatCompletionRequestSystemMessage::from(prompt.system.as_str()).into(),
            ChatCompletionRequestUserMessage::from(user.as_str()).into(),
        ]);
        if let Some(format) = self.response_format() {
            args.response_format(format);
        }
        let request = args.build().map_err(|err| {
            LlmError::new(Outcome::Rejected, format!("building the request: {err}"))
        })?;

        let (sent, hint) = hints::capture(tokio::time::timeout(
            self.settings.timeout,
            self.client.chat().create(request),
        ))
        .await;
        let response = sent
            .map_err(|_| {
                LlmError::new(
                    Outcome::Timeout,
                    format!("no answer within {:?}", self.settings.timeout),
                )
            })?
            .map_err(|err| classify(err).with_retry_after(hint))?;
        // Billed whatever the content turns out to be.
        if let Some(usage) = &response.usage {
            spend::record(
                &self.settings.model,
                &self.settings.prices,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
        }

        let content = response
            .choices
            .first()
            .and_then(|choice| choice.message.content.as_deref())
            .ok_or_else(|| {
                LlmError::new(Outcome::InvalidOutput, "the reply has no message content")
            })?;
        let question = match self.settings.format {
            ReplyFormat::Text => output::parse_text(content, context.requested_type)?,
            ReplyFormat::JsonSchema | ReplyFormat::JsonObject => output::parse_json(content)?,
        };
        Ok(Generated {
            question,
            model: response.model,
            usage: response.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        })
    }

    fn model(&self) -> &str {
        &self.settings.model
    }
}

/// Sorts an async-openai error into what may pass and what will not.
fn classify(err: OpenAIError) -> LlmError {
    match err {
        OpenAIError::ApiError(response) => LlmError::new(
            if is_quota_exhausted(&response.api_error) {
                Outcome::QuotaExhausted
            } else {
                by_status(response.status_code)
            },
            format!(
                "HTTP {}: {}",
                response.status_code, response.api_error.message
            ),
        ),
        // Without its URL: `OPENAI_BASE_URL` may carry credentials, and the detail
        // goes to the logs and to the job's `last_result`, which the board shows.
        OpenAIError::Reqwest(err) if err.is_timeout() => {
            LlmError::new(Outcome::Timeout, err.without_url().to_string())
        }
        OpenAIError::Reqwest(err) => match err.status() {
            Some(status) => LlmError::new(by_status(status), err.without_url().to_string()),
            None => LlmError::new(Outcome::Connection, err.without_url().to_string()),
        },
        // A body we could not read: a proxy's HTML page, a truncated reply. Another
        // attempt may well get a proper one.
        OpenAIError::JSONDeserialize(err, _) => {
            LlmError::new(Outcome::InvalidOutput, format!("unreadable reply: {err}"))
        }
        OpenAIError::InvalidArgument(message) => LlmError::new(Outcome::Rejected, message),
        other => LlmError::new(Outcome::Connection, other.to_string()),
    }
}

/// OpenAI's "You exceeded your current quota": a `429` whose error names
/// `insufficient_quota` (as its code, its type, or both). Only money or a new key cures
/// it.
fn is_quota_exhausted(error: &ApiError) -> bool {
    [&error.code, &error.r#type]
        .iter()
        .any(|field| field.as_deref() == Some("insufficient_quota"))
}

fn by_status(status: StatusCode) -> Outcome {
    match status.as_u16() {
        429 => Outcome::RateLimited,
        408 | 409 | 425 => Outcome::Connection,
        500..=599 => Outcome::ServerError,
        _ => Outcome::Rejected,
    }
}
