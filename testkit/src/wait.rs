//! Waiting for work without sleeping for it: a probe is polled every few milliseconds
//! until it answers, and a deadline turns "never" into a failure that says what was
//! awaited. Deadlines are generous safety nets for loaded 2-core machines, never
//! measurements.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// How long to wait between two probes.
const EVERY: Duration = Duration::from_millis(10);

/// Polls `probe` until it returns `Some`, and returns that; panics with `what` once
/// `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: impl Display, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "gave up after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// Like [`eventually`], returning an error instead of panicking: for the benchmark
/// harness, whose runs report failures rather than abort.
pub async fn within<T, F, Fut>(
    what: impl Display,
    deadline: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= until {
            anyhow::bail!("gave up after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(EVERY).await;
    }
}
