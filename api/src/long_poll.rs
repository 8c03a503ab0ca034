//! Long-poll wake-ups: one `LISTEN operation_finished` connection per api process,
//! fanned out in memory to the requests waiting on each operation.
//!
//! A waiting request holds no pooled connection: it registers here, reads the
//! operation, and sleeps until this module wakes it or its `wait` runs out. The NOTIFY
//! is sent by a trigger when an operation becomes `completed` or `failed`, and is
//! delivered only when that transaction commits, so a woken request always reads the
//! final state.
//!
//! When the listening connection drops (database restart), every waiter is woken to
//! re-read its operation (a notification may have been lost in the gap), and the
//! listener reconnects with backoff by itself.
//!
//! The same connection hears `user_deleted`, for [`KnownUsers`]: one listening
//! connection per process, whatever it listens for.

use crate::known_users::KnownUsers;
use shared::domain::{OperationId, UserId};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The channel the `operations_notify_finished` trigger sends on.
pub const CHANNEL: &str = "operation_finished";
/// The channel the `users_notify_deleted` trigger sends on.
pub const USER_DELETED: &str = "user_deleted";

/// The requests waiting on each operation.
#[derive(Debug, Default)]
pub struct Waiters {
    /// One `Notify` per operation with at least one waiter, and how many wait on it.
    by_operation: Mutex<HashMap<OperationId, (Arc<Notify>, usize)>>,
    /// Whether the NOTIFY listener is connected now (`/readyz`'s body, and the gauge
    /// `long_poll_listener_connected`).
    listening: std::sync::atomic::AtomicBool,
}

/// A request's place in [`Waiters`]; leaving it (drop) removes the entry when it was
/// the last one, so the map only ever holds operations somebody is waiting on.
#[derive(Debug)]
pub struct Registration<'a> {
    waiters: &'a Waiters,
    id: OperationId,
    notify: Arc<Notify>,
}

impl Registration<'_> {
    /// The `Notify` to wait on. Create and `enable()` the `notified()` future *before*
    /// reading the operation, so a wake-up between the read and the wait is not lost.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self
            .waiters
            .by_operation
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Waiters {
    /// Registers interest in `id` finishing.
    pub fn register(&self, id: OperationId) -> Registration<'_> {
        let mut map = self.by_operation.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry(id)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            waiters: self,
            id,
            notify: entry.0.clone(),
        }
    }

    /// Wakes the requests waiting on `id`.
    pub fn wake(&self, id: OperationId) {
        let map = self.by_operation.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notify, _)) = map.get(&id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiting request, to re-read its operation.
    pub fn wake_all(&self) {
        let map = self.by_operation.lock().unwrap_or_else(|e| e.into_inner());
        for (notify, _) in map.values() {
            notify.notify_waiters();
        }
    }

    /// How many operations have waiters (tests read it to know a request is asleep).
    pub fn len(&self) -> usize {
        self.by_operation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the NOTIFY listener is connected: without it, polls still end, at their
    /// deadline, so this slows long polls and is not a reason to take the replica out.
    pub fn is_listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_listening(&self, listening: bool) {
        self.listening
            .store(listening, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("long_poll_listener_connected").set(if listening { 1.0 } else { 0.0 });
    }
}

/// Listens for finished operations and deleted users until the process ends,
/// reconnecting by itself.
pub async fn listen(pool: PgPool, waiters: Arc<Waiters>, users: Arc<KnownUsers>) {
    let mut reconnect = Reconnect::default();
    loop {
        let began = tokio::time::Instant::now();
        let listened = listen_once(&pool, &waiters, &users).await;
        waiters.set_listening(false);
        let retry_in = reconnect.after(began.elapsed());
        let retry_in_ms = retry_in.as_millis() as u64;
        match listened {
            // Accepted, then dropped: a restart, or a pooler that cannot LISTEN and
            // drops us at once; `listen_once` has woken everyone already.
            Ok(()) => {
                tracing::warn!(retry_in_ms, "long-poll listener's connection dropped")
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms, "long-poll listener lost the database");
                missed_everything(&waiters, &users);
            }
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// When the listener connects again: after every connection, however it ended, a wait
/// that doubles from [`Reconnect::FIRST`] to [`Reconnect::MOST`], and starts again
/// from the first only after a connection that stayed up [`Reconnect::STEADY`]. So a
/// database that accepts and drops at once costs one connection per 5 s, never a
/// tight loop, and one restart after hours of calm is retried within 100 ms.
#[derive(Debug)]
struct Reconnect {
    /// The wait before the next connection, unless the last one was steady.
    next: Duration,
}

impl Reconnect {
    /// The first wait: a restarted database is usually back within it.
    const FIRST: Duration = Duration::from_millis(100);
    /// The longest wait: long polls still end meanwhile, at their deadline, only later.
    const MOST: Duration = Duration::from_secs(5);
    /// How long a connection must last to count as working again: longer than any
    /// accept-then-drop, short next to the hours a healthy one lasts.
    const STEADY: Duration = Duration::from_secs(30);

    /// How long to wait after a connection (or an attempt at one) that lasted `lasted`.
    fn after(&mut self, lasted: Duration) -> Duration {
        if lasted >= Self::STEADY {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MOST);
        wait
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

/// What was sent while nobody listened is lost: every waiter re-reads, and every
/// user is checked again.
fn missed_everything(waiters: &Waiters, users: &KnownUsers) {
    waiters.wake_all();
    users.forget_all();
}

/// One connection's life: returns `Ok` when the connection dropped after working.
async fn listen_once(
    pool: &PgPool,
    waiters: &Waiters,
    users: &KnownUsers,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([CHANNEL, USER_DELETED]).await?;
    tracing::info!(channel = CHANNEL, "long-poll listener connected");
    waiters.set_listening(true);
    // Anything that happened while we were not listening has been missed.
    missed_everything(waiters, users);
    loop {
        let Some(notification) = listener.try_recv().await? else {
            // The connection dropped (sqlx has already tried to reconnect): whatever
            // was sent in the gap is lost.
            missed_everything(waiters, users);
            return Ok(());
        };
        let payload = notification.payload();
        match (notification.channel(), payload.parse()) {
            (CHANNEL, Ok(id)) => waiters.wake(OperationId(id)),
            (USER_DELETED, Ok(id)) => users.forget(UserId(id)),
            (channel, _) => tracing::warn!(channel, payload, "unexpected notification"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reconnect;
    use std::time::Duration;

    const AT_ONCE: Duration = Duration::ZERO;

    #[test]
    fn a_connection_dropped_at_once_is_retried_ever_later_up_to_five_seconds() {
        let mut reconnect = Reconnect::default();
        let waits: Vec<u64> = (0..9)
            .map(|_| reconnect.after(AT_ONCE).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000],
            "never 0: every reconnection waits"
        );
    }

    #[test]
    fn only_a_connection_that_stayed_up_resets_the_wait() {
        let mut reconnect = Reconnect::default();
        for _ in 0..8 {
            reconnect.after(AT_ONCE);
        }
        let short = Reconnect::STEADY - Duration::from_millis(1);
        assert_eq!(reconnect.after(short), Reconnect::MOST);
        assert_eq!(reconnect.after(Reconnect::STEADY), Reconnect::FIRST);
        assert_eq!(reconnect.after(AT_ONCE), 2 * Reconnect::FIRST);
    }
}
