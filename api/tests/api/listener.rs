//! The NOTIFY listener against a database that lets it connect and LISTEN, then cuts
//! the connection (a pooler without LISTEN support, a flapping network): it must wait
//! before each reconnection, never loop on connecting.

use api::known_users::KnownUsers;
use api::long_poll::{self, Waiters};
use sqlx::PgPool;
use sqlx::postgres::{PgPoolOptions, PgSslMode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The end of a reply to a query: `ReadyForQuery`, idle.
const READY: &[u8] = &[b'Z', 0, 0, 0, 5, b'I'];

/// A TCP proxy to PostgreSQL that cuts every connection once the LISTEN it carries has
/// been answered, and counts the connections it accepted.
struct CuttingProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(cut_after_listen(client, upstream.clone()));
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection until the server has answered a LISTEN, then closes both sides.
async fn cut_after_listen(client: TcpStream, upstream: (String, u16)) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let listened = AtomicBool::new(false);
    let up = async {
        let mut buf = [0u8; 8192];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if buf[..n].windows(6).any(|w| w == b"LISTEN") {
                listened.store(true, Ordering::SeqCst);
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = [0u8; 8192];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            client_write.write_all(&buf[..n]).await?;
            if listened.load(Ordering::SeqCst) && buf[..n].ends_with(READY) {
                return Ok(());
            }
        }
    };
    // Whichever ends first, both sockets close when the halves drop.
    let _ = tokio::select! {
        ended = up => ended,
        ended = down => ended,
    };
}

#[sqlx::test(migrations = false)]
async fn a_listener_cut_after_every_listen_waits_ever_longer_before_reconnecting(pool: PgPool) {
    let options = pool.connect_options();
    let proxy = CuttingProxy::start((options.get_host().to_owned(), options.get_port())).await;
    let through_proxy = PgPoolOptions::new().max_connections(2).connect_lazy_with(
        (*options)
            .clone()
            .host("127.0.0.1")
            .port(proxy.port)
            .ssl_mode(PgSslMode::Disable),
    );
    let began = Instant::now();
    let listening = tokio::spawn(long_poll::listen(
        through_proxy,
        Arc::new(Waiters::default()),
        Arc::new(KnownUsers::default()),
    ));
    // A cut costs the listener one connection, or two (sqlx reconnects once by itself
    // before reporting the loss), so nine connections take at least five connections'
    // lives, and four waits between them: 100 + 200 + 400 + 800 ms. Reconnecting at
    // once, they took about 0.1 s.
    testkit::eventually("nine connections", Duration::from_secs(60), || async {
        (proxy.accepted() >= 9).then_some(())
    })
    .await;
    let took = began.elapsed();
    listening.abort();
    assert!(
        took >= Duration::from_millis(1_500),
        "{} connections in {took:?}: the listener reconnected without waiting",
        proxy.accepted()
    );
}
