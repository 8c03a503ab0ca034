//! An OpenAI-compatible chat-completions server that answers every request with a
//! valid question after a set delay: the LLM's latency without its variance or cost.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use std::time::Duration;

/// Serves on a free port until the process ends; returns the base URL (`…/v1`).
pub async fn start(latency: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(latency);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/v1"))
}

async fn complete(State(latency): State<Duration>) -> axum::Json<Value> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let question = json!({
        "question_text": "Walk me through how you would make a job queue survive a crashed worker.",
        "question_type": "technical",
    });
    axum::Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": question.to_string()}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}
    }))
}
