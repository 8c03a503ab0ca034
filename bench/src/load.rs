//! Closed-loop HTTP load: `connections` clients, each sending its next request as soon
//! as the previous one is answered, for a set time after a warm-up.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a load run measured after its warm-up.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latency of every request, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs `request(client, n)` in a closed loop on `connections` connections (one
/// client each, so the count is exact). A request is an error when it returns `false`
/// or fails.
pub async fn closed_loop<F, Fut>(
    connections: usize,
    warmup: Duration,
    measure: Duration,
    request: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(reqwest::Client, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send,
{
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::with_capacity(connections);
    for connection in 0..connections {
        let request = request.clone();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .http1_only()
            .build()?;
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut n = connection as u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let ok = request(client.clone(), n).await.unwrap_or(false);
                n += connections as u64;
                if sent >= start {
                    outcome.requests += 1;
                    outcome.errors += u64::from(!ok);
                    outcome
                        .latencies_ms
                        .push(sent.elapsed().as_secs_f64() * 1000.0);
                }
            }
            outcome
        }));
    }
    let mut total = Outcome {
        seconds: measure.as_secs_f64(),
        ..Outcome::default()
    };
    for task in tasks {
        let outcome = task.await?;
        total.requests += outcome.requests;
        total.errors += outcome.errors;
        total.latencies_ms.extend(outcome.latencies_ms);
    }
    Ok(total)
}
