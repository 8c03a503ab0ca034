//! Serving connections, for every listener of both binaries: hyper's HTTP/1 server with
//! the timer and the bounds that `axum::serve` leaves out.
//!
//! `axum::serve` sets no hyper timer, so a client that opens a connection and sends
//! its headers one byte a minute (or never) holds a socket for good, and nothing
//! bounds how many it opens. Here:
//! - every connection must finish a request's headers within the header-read timeout,
//!   which hyper also applies while a keep-alive connection waits idle for its next
//!   request: a silent connection is closed after it either way;
//! - at most `max_connections` are open; the next one is accepted when one closes,
//!   waiting meanwhile in the kernel's listen backlog (never refused by us);
//! - each request carries its peer's address (`ConnectInfo`), for throttling;
//! - on shutdown, the listener closes, idle connections are closed, and requests in
//!   flight finish (hyper-util's graceful shutdown).

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and a keep-alive
    /// connection may sit idle); `None`: as long as it likes.
    pub header_read_timeout: Option<Duration>,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A permit first: at the bound, we stop accepting until a connection closes.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let service = tower::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                // A client that went away, or timed out on its headers: routine.
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutdown requested: finishing requests in flight");
    graceful.shutdown().await;
}

/// Whether the connection was closed for good (EOF, reset) or the process is out of
/// something: in the latter case, wait a moment instead of spinning.
async fn accept_failed(err: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    // EMFILE/ENFILE and the like: out of file descriptors. Accepting again at once
    // would fail the same way; a pause lets connections close.
    tracing::error!(error = %err, "accepting a connection failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
