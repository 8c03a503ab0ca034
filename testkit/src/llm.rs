//! Replies of an OpenAI-compatible chat-completions server, for wiremock: the LLM is
//! faked only at its HTTP boundary, so the real client, timeouts and retries run.

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A chat-completions reply whose message content is `content`.
pub fn completion(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    }))
}

/// A valid JSON question reply.
pub fn question(text: &str, kind: &str) -> ResponseTemplate {
    completion(&json!({"question_text": text, "question_type": kind}).to_string())
}

/// A valid JSON feedback reply with `score` and `summary` (one strength, one
/// improvement). A score outside 1..=5 makes an invalid reply.
pub fn feedback(score: u8, summary: &str) -> ResponseTemplate {
    completion(
        &json!({
            "score": score,
            "strengths": ["Clear structure"],
            "improvements": ["Quantify the outcome"],
            "summary": summary,
        })
        .to_string(),
    )
}

/// An OpenAI-style error reply.
pub fn error(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {"message": "provider says no (secret detail)", "type": "error", "param": null, "code": null}}))
}

/// OpenAI's answer when the account's quota is used up: a `429`, like a rate limit,
/// but with `insufficient_quota` as its type and code.
pub fn quota_exhausted() -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}))
}

/// Mounts `reply` for the feedback requests alone (they name their schema,
/// `interview_feedback`), so that a model can answer questions and feedback apart:
/// mount the questions' reply at a lower priority (a higher number).
pub async fn mount_feedback(server: &MockServer, priority: u8, reply: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::body_string_contains(
            "interview_feedback",
        ))
        .respond_with(reply)
        .with_priority(priority)
        .mount(server)
        .await;
}

/// Mounts `reply` for chat completions, for at most `times` calls if given; earlier
/// mounts with a higher priority (lower number) answer first.
pub async fn mount(server: &MockServer, priority: u8, times: Option<u64>, reply: ResponseTemplate) {
    let mock = Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(reply)
        .with_priority(priority);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// How many chat-completion calls the fake server received.
pub async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// The bodies of the calls received, as JSON.
pub async fn call_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("JSON request"))
        .collect()
}
