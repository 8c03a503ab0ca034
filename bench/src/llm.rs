//! A fake model for figures with both kinds of work: it answers a feedback request
//! (the worker asks for the JSON schema named `interview_feedback`, so the body holds
//! that name) with a valid feedback, and anything else with a question, at once.
//!
//! testkit's [`FakeProvider`](testkit::provider::FakeProvider) answers questions only,
//! and the harness may not add a server crate without changing Cargo.lock, so this one
//! speaks just the HTTP/1.1 the worker's client sends: requests with a Content-Length,
//! on kept-alive connections. Its replies are built once; telling the two apart is one
//! search through a body of a few KiB, so a question costs what it costs the other
//! fake.

use anyhow::{Context, bail};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the worker's feedback request names (`worker/src/llm/openai.rs`).
const FEEDBACK_MARK: &[u8] = b"interview_feedback";
/// The most a request may take, head and body: the worker's are a few KiB.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The two replies, each a whole HTTP response.
struct Replies {
    question: Vec<u8>,
    feedback: Vec<u8>,
}

/// Starts the fake on a free port; its base URL (`…/v1`). It serves until the
/// runtime ends.
pub async fn start() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let replies = Arc::new(Replies {
        question: response(&json!({
            "question_text": "Walk me through how you would make a job queue survive a crashed worker.",
            "question_type": "technical",
        })),
        feedback: response(&json!({
            "score": 4,
            "strengths": ["Clear structure"],
            "improvements": ["Quantify the outcome"],
            "summary": "A solid answer that names the failure modes.",
        })),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                if let Err(err) = serve(stream, &replies).await {
                    eprintln!("fake LLM: {err:#}");
                }
            });
        }
    });
    Ok(format!("http://{addr}/v1"))
}

/// Answers one connection's requests in order until the client closes it.
async fn serve(mut stream: TcpStream, replies: &Replies) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // The head, then the body it announces; the next request may follow at once.
        let (head_end, length) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).context("a head not in UTF-8")?;
                break (end + 4, content_length(head)?);
            }
            if !fill(&mut stream, &mut buf, &mut chunk).await? {
                return Ok(());
            }
        };
        if head_end + length > MAX_REQUEST_BYTES {
            bail!("a request of {} bytes", head_end + length);
        }
        while buf.len() < head_end + length {
            if !fill(&mut stream, &mut buf, &mut chunk).await? {
                bail!("the connection closed inside a body");
            }
        }
        let body = &buf[head_end..head_end + length];
        let reply = if find(body, FEEDBACK_MARK).is_some() {
            &replies.feedback
        } else {
            &replies.question
        };
        stream.write_all(reply).await?;
        buf.drain(..head_end + length);
    }
}

/// Reads what has arrived into `buf`; false at the end of the stream.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> anyhow::Result<bool> {
    let n = stream.read(chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    if buf.len() > MAX_REQUEST_BYTES {
        bail!("a request over {MAX_REQUEST_BYTES} bytes");
    }
    Ok(n > 0)
}

/// The body's length from a request head; 0 without one. A chunked body is refused:
/// the worker's client never sends one.
fn content_length(head: &str) -> anyhow::Result<usize> {
    let mut length = 0;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().context("a bad Content-Length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a body with Transfer-Encoding {value}");
        }
    }
    Ok(length)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A whole `200` response carrying a chat completion whose content is `content`.
fn response(content: &serde_json::Value) -> Vec<u8> {
    let body = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}
    })
    .to_string();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_their_body_length() {
        let head = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 42\r\nhost: x";
        assert_eq!(content_length(head).expect("a length"), 42);
        assert_eq!(content_length("GET / HTTP/1.1").expect("none"), 0);
        assert!(content_length("POST / HTTP/1.1\r\ntransfer-encoding: chunked").is_err());
    }

    #[tokio::test]
    async fn feedback_requests_get_feedback_and_others_a_question() {
        shared::tls::install_crypto_provider();
        let base = start().await.expect("started");
        let http = reqwest::Client::new();
        for (body, key) in [
            (
                json!({"response_format": {"json_schema": {"name": "interview_feedback"}}}),
                "score",
            ),
            (
                json!({"response_format": {"json_schema": {"name": "interview_question"}}}),
                "question_text",
            ),
        ] {
            // Twice each, on one kept-alive connection.
            for _ in 0..2 {
                let reply: serde_json::Value = http
                    .post(format!("{base}/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .expect("sent")
                    .json()
                    .await
                    .expect("JSON");
                let content = reply["choices"][0]["message"]["content"]
                    .as_str()
                    .expect("content");
                let content: serde_json::Value =
                    serde_json::from_str(content).expect("JSON content");
                assert!(content.get(key).is_some(), "{content}");
            }
        }
    }
}
