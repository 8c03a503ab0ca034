//! A fake model provider with limits of its own, speaking OpenAI's chat-completions
//! API over real HTTP: it serves `capacity` calls at once and refuses the rest `429`
//! with a `Retry-After`, can be switched down (`503`) or out of quota, and counts what
//! it sees (calls, refusals, the most calls it ever had in flight at once). wiremock
//! cannot count concurrency (its replies are built before their delay), so the tests of
//! the provider's limits, and the benchmarks, use this.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the provider answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Questions, after the latency, within the capacity.
    Serving,
    /// `503` to everything, with this `Retry-After` if any: an outage.
    Down { retry_after: Option<String> },
    /// `429 insufficient_quota` to everything.
    QuotaExhausted,
}

/// What it is like when serving.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Calls served at once; the rest get `429`. `None`: no limit.
    pub capacity: Option<usize>,
    /// The `Retry-After` of those `429`s; `None`: none.
    pub retry_after: Option<String>,
    /// How long a served call takes: from the first to the second, evenly spread.
    pub latency: (Duration, Duration),
    /// The share of served calls (0 to 1) answered with a `500` at once instead: the
    /// transient failures a real provider has.
    pub failure_rate: f64,
}

impl Behaviour {
    /// A provider without limits, each call taking `latency`.
    pub fn unlimited(latency: Duration) -> Self {
        Self {
            capacity: None,
            retry_after: None,
            latency: (latency, latency),
            failure_rate: 0.0,
        }
    }

    /// A provider serving `capacity` calls at once, refusing the rest with
    /// `Retry-After: 1`, each call taking 300–400 ms (the measurement).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: Some(capacity),
            retry_after: Some("1".to_owned()),
            latency: (Duration::from_millis(300), Duration::from_millis(400)),
            failure_rate: 0.0,
        }
    }
}

/// What the provider saw so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub calls: usize,
    pub served: usize,
    /// `429`s for lack of capacity.
    pub rate_limited: usize,
    /// `503`s while down.
    pub unavailable: usize,
    pub quota_refused: usize,
    /// `500`s of the [`Behaviour::failure_rate`].
    pub failed: usize,
    /// The most calls in flight at once, refused ones included (a refusal is in flight
    /// only while it is being answered).
    pub peak_in_flight: usize,
}

#[derive(Debug)]
struct Inner {
    behaviour: Behaviour,
    mode: Mutex<Mode>,
    seen: Mutex<Seen>,
    in_flight: AtomicUsize,
    serving: AtomicUsize,
}

/// A running fake provider; it serves until the test's runtime ends.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    /// The base URL to give as `OPENAI_BASE_URL` (`…/v1`).
    pub base_url: String,
    inner: Arc<Inner>,
}

impl FakeProvider {
    pub async fn start(behaviour: Behaviour) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            behaviour,
            mode: Mutex::new(Mode::Serving),
            seen: Mutex::new(Seen::default()),
            in_flight: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            inner,
        })
    }

    /// Switches how it answers from the next call on.
    pub fn set_mode(&self, mode: Mode) {
        *self
            .inner
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }

    pub fn seen(&self) -> Seen {
        *self
            .inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a call out of flight when its answer is built, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn complete(State(inner): State<Arc<Inner>>) -> Response {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = InFlight(&inner.in_flight);
    let mode = inner
        .mode
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let count = |field: fn(&mut Seen) -> &mut usize| {
        let mut seen = inner.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.calls += 1;
        seen.peak_in_flight = seen.peak_in_flight.max(now);
        *field(&mut seen) += 1;
    };
    match mode {
        Mode::Down { retry_after } => {
            count(|seen| &mut seen.unavailable);
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                retry_after.as_deref(),
            )
        }
        Mode::QuotaExhausted => {
            count(|seen| &mut seen.quota_refused);
            refusal(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", None)
        }
        Mode::Serving => {
            let serving = inner.serving.fetch_add(1, Ordering::SeqCst) + 1;
            let _serving = InFlight(&inner.serving);
            if inner
                .behaviour
                .capacity
                .is_some_and(|capacity| serving > capacity)
            {
                count(|seen| &mut seen.rate_limited);
                return refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    inner.behaviour.retry_after.as_deref(),
                );
            }
            if inner.behaviour.failure_rate > 0.0 && uniform() < inner.behaviour.failure_rate {
                count(|seen| &mut seen.failed);
                return refusal(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None);
            }
            count(|seen| &mut seen.served);
            let (low, high) = inner.behaviour.latency;
            let spread = high.saturating_sub(low).mul_f64(uniform());
            tokio::time::sleep(low + spread).await;
            axum::Json(completion()).into_response()
        }
    }
}

/// A number in [0, 1), evenly spread: the low 62 bits of a random UUID (above them sit
/// its variant bits), so no RNG crate for a fake.
fn uniform() -> f64 {
    const BITS: u32 = 62;
    (uuid::Uuid::new_v4().as_u128() & ((1 << BITS) - 1)) as f64 / (1u64 << BITS) as f64
}

fn refusal(status: StatusCode, kind: &str, retry_after: Option<&str>) -> Response {
    let body = json!({"error": {"message": "The fake provider refuses.", "type": kind, "param": null, "code": kind}});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn completion() -> serde_json::Value {
    let question = json!({
        "question_text": "Walk me through how you would make a job queue survive a crashed worker.",
        "question_type": "technical",
    });
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": question.to_string()}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}
    })
}
