//! The production shutdown signal of both binaries: SIGTERM (what an orchestrator sends)
//! or Ctrl-C (a terminal). What each binary does on it, drain requests or jobs, is its
//! own; it receives this future as the `shutdown` parameter of its `run`.

use std::future::Future;
use std::io;

/// Completes on the first SIGTERM or Ctrl-C, and logs which one came.
///
/// The SIGTERM handler is registered when this is called, not when the future is first
/// polled: a process is healthy (and may be told to stop) before its run loop polls its
/// shutdown future, and a SIGTERM with no handler yet kills it without a drain. Call it
/// inside the runtime, at start.
///
/// A signal whose handler cannot be registered is logged as an error and never
/// completes, so the other one still stops the process; this never returns early.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let sigterm = terminate();
    async move {
        let name = first_of(
            listen("Ctrl-C", tokio::signal::ctrl_c()),
            listen("SIGTERM", sigterm),
        )
        .await;
        tracing::info!(signal = name, "shutdown requested");
    }
}

/// The first of two signals to arrive.
async fn first_of(
    a: impl Future<Output = &'static str>,
    b: impl Future<Output = &'static str>,
) -> &'static str {
    tokio::select! {
        name = a => name,
        name = b => name,
    }
}

/// Completes with `name` when `arrival` does; when the signal cannot be listened for,
/// logs it and waits forever instead of reporting a signal that never came.
async fn listen(name: &'static str, arrival: impl Future<Output = io::Result<()>>) -> &'static str {
    match arrival.await {
        Ok(()) => name,
        Err(err) => {
            tracing::error!(signal = name, error = %err, "cannot listen for this signal; the other one still shuts down");
            std::future::pending().await
        }
    }
}

/// Registers the SIGTERM handler now; the future completes on the signal.
#[cfg(unix)]
fn terminate() -> impl Future<Output = io::Result<()>> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let registered = signal(SignalKind::terminate());
    async move {
        match registered?.recv().await {
            Some(()) => Ok(()),
            // The runtime is going away: no SIGTERM will ever be delivered.
            None => Err(io::Error::other("the signal stream ended")),
        }
    }
}

#[cfg(not(unix))]
fn terminate() -> impl Future<Output = io::Result<()>> + Send + 'static {
    std::future::pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `future` once: `Some` if it completed.
    async fn poll_once<T>(future: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            value = future => Some(value),
            () = std::future::ready(()) => None,
        }
    }

    #[tokio::test]
    async fn a_signal_that_cannot_be_listened_for_does_not_end_the_wait() {
        let refused = || async { Err(io::Error::other("no signal handling here")) };
        let never = std::future::pending::<io::Result<()>>();
        let wait = first_of(listen("Ctrl-C", refused()), listen("SIGTERM", never));
        assert_eq!(poll_once(wait).await, None);
        let wait = first_of(listen("Ctrl-C", refused()), listen("SIGTERM", refused()));
        assert_eq!(poll_once(wait).await, None);
    }

    #[tokio::test]
    async fn either_signal_ends_the_wait_and_is_named() {
        let refused = async { Err(io::Error::other("no signal handling here")) };
        let came = async { Ok(()) };
        let wait = first_of(listen("Ctrl-C", refused), listen("SIGTERM", came));
        assert_eq!(poll_once(wait).await, Some("SIGTERM"));
    }
}
