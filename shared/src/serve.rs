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
//! - at most `per_address.max` of them from one client address (an IPv6 client's /64):
//!   one more is answered `503 SERVICE_UNAVAILABLE` with `Retry-After: 1` and closed,
//!   so that one client cannot hold every connection and lock the others out. Peers in
//!   `per_address.exempt` (the trusted proxies: behind an ingress every connection
//!   comes from it) are not counted. A refused connection gives its place among
//!   `max_connections` back at once and has [`REFUSAL_HEADER_TIMEOUT`] to send its
//!   request; at most [`REFUSALS_AT_ONCE`] are answered at a time, and one more is
//!   closed unanswered. Otherwise the refusals themselves, held open by a client that
//!   sends nothing, would fill the bound they were refused to protect;
//! - each request carries its peer's address (`ConnectInfo`), for throttling;
//! - on shutdown, the listener closes, idle connections are closed, and requests in
//!   flight finish (hyper-util's graceful shutdown).

use crate::per_key::{PerKey, client_key};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The bounds of [`serve`].
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client; `None`: no bound of its own.
    pub per_address: Option<PerAddress>,
    /// How long a client may take to send a request's headers (and a keep-alive
    /// connection may sit idle); `None`: as long as it likes.
    pub header_read_timeout: Option<Duration>,
}

/// The bound on one client's connections.
#[derive(Debug, Clone)]
pub struct PerAddress {
    /// Connections open at once from one address (0: no bound).
    pub max: usize,
    /// Peers never counted: proxies, whose connections carry many clients.
    pub exempt: Arc<[IpNet]>,
}

impl PerAddress {
    /// The key `peer` is counted under, `None` when it is exempt.
    fn key(&self, peer: IpAddr) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        (!self.exempt.iter().any(|net| net.contains(&peer))).then(|| client_key(peer))
    }
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
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let per_address = limits
        .per_address
        .as_ref()
        .map(|bound| (bound, PerKey::<IpAddr>::new(bound.max)));
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
        let held = match &per_address {
            None => None,
            Some((bound, held)) => match bound.key(peer.ip()) {
                None => None,
                Some(key) => match held.try_hold(key) {
                    Some(hold) => Some(hold),
                    None => {
                        drop(permit);
                        refuse(&http, stream, &refusals, &graceful);
                        continue;
                    }
                },
            },
        };
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
            drop((held, permit));
        });
    }
    drop(listener);
    tracing::info!("shutdown requested: finishing requests in flight");
    graceful.shutdown().await;
}

/// Refused connections answered at once (each holding a socket for at most
/// [`REFUSAL_HEADER_TIMEOUT`]); past it, a refused connection is closed unanswered.
pub const REFUSALS_AT_ONCE: usize = 64;

/// How long a refused connection has to send its request before it is closed.
pub const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers one request on a connection past its client's bound with `503
/// SERVICE_UNAVAILABLE` (the contract's error body) and `Retry-After: 1`, then closes it;
/// closes it unanswered when [`REFUSALS_AT_ONCE`] are being answered already.
fn refuse(
    http: &hyper::server::conn::http1::Builder,
    stream: tokio::net::TcpStream,
    refusals: &Arc<Semaphore>,
    graceful: &GracefulShutdown,
) {
    metrics::counter!("connections_refused_total", "reason" => "per_address").increment(1);
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return; // dropping the stream closes it
    };
    let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
        let mut response = Response::new(axum::body::Body::from(TOO_MANY_CONNECTIONS));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut http = http.clone();
    http.keep_alive(false)
        .header_read_timeout(Some(REFUSAL_HEADER_TIMEOUT));
    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "a refused connection ended with an error");
        }
        drop(permit);
    });
}

/// The body of [`refuse`]'s answer.
const TOO_MANY_CONNECTIONS: &str = "{\"detail\":{\"code\":\"SERVICE_UNAVAILABLE\",\"message\":\"Too many connections from this address; try again shortly.\"}}";

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
