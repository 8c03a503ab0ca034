//! The `openai` provider: async-openai against OpenAI or any compatible server.
//!
//! async-openai's default client silently retries 429, 5xx and connection errors, which
//! would multiply our calls behind the back of our retry policy. We give it a plain
//! [`ReqwestService`] instead: one HTTP call per request, our timeout around it, and
//! [`HintedService`] around that to read a refusal's `Retry-After`.
//!
//! A question and a feedback take the same path (`OpenAiWriter::ask`): they differ
//! only in their prompt, the response format asked for, and how the reply is read.

use super::hints::{self, HintedService};
use super::{Generated, LlmError, Outcome, Usage, Writer, spend};
use crate::output::{self, Feedback, InvalidOutput};
use crate::prompt::{self, FeedbackContext, Prompt, QuestionContext};
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
    /// Plain text: the reply is the question, of the requested type. A feedback is
    /// still a JSON object, asked for in the prompt alone and found in whatever prose
    /// surrounds it.
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

/// Writes questions and feedback with an OpenAI-compatible chat-completions API.
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

    /// The response format of the configured [`ReplyFormat`], with `schema` for
    /// structured output.
    fn response_format(
        &self,
        schema: impl FnOnce() -> ResponseFormatJsonSchema,
    ) -> Option<ResponseFormat> {
        match self.settings.format {
            ReplyFormat::JsonSchema => Some(ResponseFormat::JsonSchema {
                json_schema: schema(),
            }),
            ReplyFormat::JsonObject => Some(ResponseFormat::JsonObject),
            ReplyFormat::Text => None,
        }
    }

    /// One chat completion: `prompt` (with `text_instruction` after it when no response
    /// format is asked for), under our timeout, the refusal's hint captured, the error
    /// classified, the tokens counted; the reply's content read with `parse`.
    async fn ask<T>(
        &self,
        prompt: Prompt,
        format: Option<ResponseFormat>,
        text_instruction: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidOutput> + Send,
    ) -> Result<Generated<T>, LlmError> {
        let user = match format {
            None => format!("{}\n{text_instruction}", prompt.user),
            Some(_) => prompt.user,
        };
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(&self.settings.model).messages([
            ChatCompletionRequestSystemMessage::from(prompt.system.as_str()).into(),
            ChatCompletionRequestUserMessage::from(user.as_str()).into(),
        ]);
        if let Some(format) = format {
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
        let output = parse(content)?;
        Ok(Generated {
            output,
            model: response.model,
            usage: response.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        })
    }
}

impl Writer for OpenAiWriter {
    async fn question(&self, context: &QuestionContext) -> Result<Generated, LlmError> {
        let requested = context.requested_type;
        let text = self.settings.format == ReplyFormat::Text;
        self.ask(
            prompt::build(context),
            self.response_format(question_schema),
            "Reply with the question only, as plain text.",
            move |content| {
                if text {
                    output::parse_text(content, requested)
                } else {
                    output::parse_json(content)
                }
            },
        )
        .await
    }

    async fn feedback(&self, context: &FeedbackContext) -> Result<Generated<Feedback>, LlmError> {
        self.ask(
            prompt::build_feedback(context),
            self.response_format(feedback_schema),
            "Reply with the JSON object only, with no other text.",
            output::parse_feedback,
        )
        .await
    }

    fn model(&self) -> &str {
        &self.settings.model
    }
}

/// Structured output for a question.
fn question_schema() -> ResponseFormatJsonSchema {
    ResponseFormatJsonSchema {
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
    }
}

/// Structured output for a feedback. Strict mode wants every property required and no
/// other allowed. The score is an `enum` rather than `minimum`/`maximum`, and the lists
/// carry no `minItems`/`maxItems`: some strict implementations refuse those keywords,
/// and every one knows `enum`. The bounds are the prompt's to ask and
/// [`output::parse_feedback`]'s to enforce.
fn feedback_schema() -> ResponseFormatJsonSchema {
    ResponseFormatJsonSchema {
        name: "interview_feedback".to_owned(),
        description: Some("Feedback on one answer of a mock interview.".to_owned()),
        schema: json!({
            "type": "object",
            "properties": {
                "score": {
                    "type": "integer",
                    "enum": [1, 2, 3, 4, 5],
                    "description": "1 (poor) to 5 (excellent)."
                },
                "strengths": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "1 to 3 strengths of the answer."
                },
                "improvements": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "1 to 3 improvements the candidate could make."
                },
                "summary": {
                    "type": "string",
                    "description": "1 to 3 sentences addressed to the candidate."
                }
            },
            "required": ["score", "strengths", "improvements", "summary"],
            "additionalProperties": false
        }),
        strict: Some(true),
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
        )
        .with_status(response.status_code.as_u16()),
        // Without its URL: `OPENAI_BASE_URL` may carry credentials, and the detail
        // goes to the logs and to the job's `last_result`, which the board shows.
        OpenAIError::Reqwest(err) if err.is_timeout() => {
            LlmError::new(Outcome::Timeout, err.without_url().to_string())
        }
        OpenAIError::Reqwest(err) => match err.status() {
            Some(status) => LlmError::new(by_status(status), err.without_url().to_string())
                .with_status(status.as_u16()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use shared::db::job_postings::JobPosting;
    use shared::domain::{JobPostingId, QuestionType, UserId};
    use testkit::llm;
    use wiremock::MockServer;

    fn writer(server: &MockServer, format: ReplyFormat) -> OpenAiWriter {
        OpenAiWriter::new(OpenAiSettings {
            base_url: Some(format!("{}/v1", server.uri())),
            api_key: Some(Secret::new("sk-test-key")),
            model: "test-model".into(),
            timeout: Duration::from_secs(10),
            format,
            prices: spend::Prices::default(),
        })
        .expect("client")
    }

    fn context() -> FeedbackContext {
        FeedbackContext {
            job_posting: Some(JobPosting {
                id: JobPostingId::new(),
                user_id: UserId::new(),
                title: "Backend engineer".into(),
                company: Some("Acme".into()),
                description: "Build queues in Rust".into(),
                created_at: Utc::now(),
                updated_at: Utc::now(),
            }),
            resume: None,
            question: "What is MVCC?".into(),
            question_type: Some(QuestionType::Technical),
            answer: "Readers see a snapshot; writers make new row versions.".into(),
        }
    }

    #[tokio::test]
    async fn feedback_asks_for_the_strict_schema_and_reads_the_reply() {
        let server = MockServer::start().await;
        llm::mount(&server, 1, None, llm::feedback(4, "A solid answer.")).await;
        let generated = writer(&server, ReplyFormat::JsonSchema)
            .feedback(&context())
            .await
            .expect("feedback");
        assert_eq!(generated.output.score, 4);
        assert_eq!(generated.output.summary, "A solid answer.");
        assert_eq!(generated.model, "test-model");
        assert_eq!(generated.usage.map(|u| u.total_tokens), Some(150));

        let bodies = llm::call_bodies(&server).await;
        assert_eq!(bodies.len(), 1);
        let format = &bodies[0]["response_format"];
        assert_eq!(format["type"], "json_schema");
        let schema = &format["json_schema"];
        assert_eq!(schema["name"], "interview_feedback");
        assert_eq!(schema["strict"], true);
        assert_eq!(schema["schema"]["additionalProperties"], false);
        assert_eq!(schema["schema"]["properties"]["score"]["type"], "integer");
        assert_eq!(
            schema["schema"]["properties"]["score"]["enum"],
            serde_json::json!([1, 2, 3, 4, 5])
        );
        // Strict mode: every property is required.
        let mut properties: Vec<&String> = schema["schema"]["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        let mut required: Vec<&str> = schema["schema"]["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        properties.sort();
        required.sort_unstable();
        assert_eq!(properties, required);
        let user = bodies[0]["messages"][1]["content"].as_str().expect("user");
        assert!(user.contains("<answer>\nReaders see a snapshot"), "{user}");
    }

    #[tokio::test]
    async fn json_object_format_asks_for_any_object() {
        let server = MockServer::start().await;
        llm::mount(&server, 1, None, llm::feedback(2, "Too short.")).await;
        let generated = writer(&server, ReplyFormat::JsonObject)
            .feedback(&context())
            .await
            .expect("feedback");
        assert_eq!(generated.output.score, 2);
        let bodies = llm::call_bodies(&server).await;
        assert_eq!(
            bodies[0]["response_format"],
            serde_json::json!({"type": "json_object"})
        );
    }

    #[tokio::test]
    async fn text_format_asks_for_the_object_in_words_and_finds_it_in_prose() {
        let server = MockServer::start().await;
        let reply = "Here is my feedback:\n\n{\"score\": 3, \"strengths\": [\"Accurate\"], \
            \"improvements\": [\"Give an example\"], \"summary\": \"Correct but thin.\"}\n\nGood luck!";
        llm::mount(&server, 1, None, llm::completion(reply)).await;
        let generated = writer(&server, ReplyFormat::Text)
            .feedback(&context())
            .await
            .expect("feedback");
        assert_eq!(
            generated.output,
            Feedback {
                score: 3,
                strengths: vec!["Accurate".into()],
                improvements: vec!["Give an example".into()],
                summary: "Correct but thin.".into(),
            }
        );
        let bodies = llm::call_bodies(&server).await;
        assert!(bodies[0].get("response_format").is_none(), "{}", bodies[0]);
        let user = bodies[0]["messages"][1]["content"].as_str().expect("user");
        assert!(
            user.ends_with("Reply with the JSON object only, with no other text."),
            "{user}"
        );
    }

    #[tokio::test]
    async fn a_score_out_of_range_is_invalid_output() {
        let server = MockServer::start().await;
        llm::mount(&server, 1, None, llm::feedback(9, "Off the scale.")).await;
        let err = writer(&server, ReplyFormat::JsonSchema)
            .feedback(&context())
            .await
            .expect_err("refused");
        assert_eq!(err.outcome, Outcome::InvalidOutput);
        assert!(err.detail.contains("score 9"), "{}", err.detail);
        assert!(err.outcome.may_pass());
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_a_rate_limit_with_its_wait() {
        let server = MockServer::start().await;
        llm::mount(
            &server,
            1,
            None,
            llm::error(429).insert_header("retry-after", "7"),
        )
        .await;
        let err = writer(&server, ReplyFormat::JsonSchema)
            .feedback(&context())
            .await
            .expect_err("refused");
        assert_eq!(err.outcome, Outcome::RateLimited);
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
        // One call: the client does not retry behind our back.
        assert_eq!(llm::calls(&server).await, 1);
    }

    #[tokio::test]
    async fn questions_take_the_same_path_with_their_own_schema() {
        let server = MockServer::start().await;
        llm::mount(
            &server,
            1,
            None,
            llm::question("What is a WAL?", "technical"),
        )
        .await;
        let question = QuestionContext {
            job_posting: context().job_posting,
            resume: None,
            earlier_questions: vec![],
            questions_asked: 0,
            requested_type: QuestionType::Technical,
        };
        let generated = writer(&server, ReplyFormat::JsonSchema)
            .question(&question)
            .await
            .expect("question");
        assert_eq!(generated.output.text, "What is a WAL?");
        let bodies = llm::call_bodies(&server).await;
        assert_eq!(
            bodies[0]["response_format"]["json_schema"]["name"],
            "interview_question"
        );
    }
}
