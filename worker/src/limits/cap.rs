//! The cap on model calls in flight across every worker (`LLM_MAX_IN_FLIGHT`), as this
//! process holds it: a share of the cap, recomputed at each heartbeat from the live
//! workers it counted, and a count of its calls in flight against that share.
//!
//! Why a share and not a slot table (docs/DESIGN.md, "The provider's limits"): a share
//! costs no statement per job (the heartbeat's one statement counts the peers), while
//! slots cost two per call and a wake-up path across processes. A dead worker leaks
//! nothing: it stops beating, drops out of the others' count within the takeover
//! window, and their shares grow back at their next beat.

use metrics::gauge;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;
use tokio::time::Instant;

/// This process's share of the cap, and its calls in flight.
#[derive(Debug)]
pub struct Cap {
    /// `LLM_MAX_IN_FLIGHT`; 0: no cap.
    total: u32,
    state: Mutex<State>,
    /// Signalled when a call ends or the share changes.
    room: Notify,
}

#[derive(Debug, Default)]
struct State {
    share: u32,
    in_flight: u32,
    /// Beats at which this worker was registered (visible to its peers) so far.
    counted: u32,
}

/// The share of a cap of `total` for the worker of rank `rank` (0-based, by name) among
/// `live` workers: the cap divided evenly, the remainder going to the lowest ranks, so
/// that the shares of all sum to the cap.
pub fn share_of(total: u32, live: u32, rank: u32) -> u32 {
    let live = live.max(1);
    total / live + u32::from(rank < total % live)
}

impl Cap {
    /// A cap of `total` calls across all workers (0: none). Until it has counted its
    /// peers, a worker under a cap starts no call.
    pub fn new(total: u32) -> Self {
        let cap = Self {
            total,
            state: Mutex::new(State::default()),
            room: Notify::new(),
        };
        cap.publish(&cap.lock());
        cap
    }

    /// Whether a cap is set.
    pub fn is_set(&self) -> bool {
        self.total > 0
    }

    /// This process's share now (`None` without a cap), and its calls in flight.
    pub fn now(&self) -> (Option<u32>, u32) {
        let state = self.lock();
        (self.is_set().then_some(state.share), state.in_flight)
    }

    /// Takes the heartbeat's count: `None` when this worker is not registered yet (its
    /// peers cannot see it), else its live peers and how many of them rank before it.
    ///
    /// A worker's first count after it became visible gives it no share yet: the
    /// others learn of it at their next beat, which comes within one beat interval,
    /// and only then may it start calls without the sum passing the cap. (Calls the
    /// others began before they counted it may still run out their course.)
    pub fn counted(&self, peers: Option<(u32, u32)>) {
        let mut state = self.lock();
        match peers {
            None => {
                state.counted = 0;
                state.share = 0;
            }
            Some((peers, before)) => {
                state.counted = state.counted.saturating_add(1);
                state.share = if state.counted < 2 {
                    0
                } else {
                    share_of(self.total, peers.saturating_add(1), before)
                };
            }
        }
        self.publish(&state);
        drop(state);
        self.room.notify_waiters();
    }

    /// Waits until this process may start one more call, or `deadline` passes (`None`).
    /// Without a cap it never waits.
    pub async fn acquire(&self, deadline: Instant) -> Option<Permit<'_>> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.lock();
                if !self.is_set() || state.in_flight < state.share {
                    state.in_flight += 1;
                    self.publish(&state);
                    return Some(Permit { cap: self });
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters, consistent after every statement: a panic
        // elsewhere while it was held leaves nothing half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: &State) {
        gauge!("llm_in_flight").set(f64::from(state.in_flight));
        if self.is_set() {
            gauge!("llm_cap_share").set(f64::from(state.share));
        }
    }
}

/// One call in flight; dropping it makes room for the next.
#[derive(Debug)]
pub struct Permit<'a> {
    cap: &'a Cap,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.cap.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        self.cap.publish(&state);
        drop(state);
        self.cap.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_sum_to_the_cap_and_the_remainder_goes_by_rank() {
        for total in [1, 5, 6, 7, 64, 1000] {
            for live in 1..=9 {
                let shares: Vec<u32> = (0..live).map(|rank| share_of(total, live, rank)).collect();
                assert_eq!(shares.iter().sum::<u32>(), total, "{total} over {live}");
                assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
                assert!(shares[0] - shares[live as usize - 1] <= 1, "{shares:?}");
            }
        }
        assert_eq!(share_of(6, 2, 0), 3);
        assert_eq!(share_of(7, 2, 0), 4);
        assert_eq!(share_of(7, 2, 1), 3);
        assert_eq!(
            share_of(1, 3, 2),
            0,
            "more workers than the cap: some get none"
        );
    }

    #[tokio::test]
    async fn a_new_worker_starts_no_call_until_its_second_count() {
        let cap = Cap::new(6);
        let soon = || Instant::now() + Duration::from_millis(20);
        assert!(cap.acquire(soon()).await.is_none(), "not counted yet");
        cap.counted(None);
        assert!(cap.acquire(soon()).await.is_none(), "not registered yet");
        cap.counted(Some((1, 0)));
        assert!(
            cap.acquire(soon()).await.is_none(),
            "the peer has not seen it yet"
        );
        cap.counted(Some((1, 0)));
        assert_eq!(cap.now(), (Some(3), 0));
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| cap.acquire(soon())))
            .await
            .into_iter()
            .map(|permit| permit.expect("within the share"))
            .collect();
        assert_eq!(cap.now(), (Some(3), 3));
        assert!(cap.acquire(soon()).await.is_none(), "the share is full");
        drop(held);
        assert_eq!(cap.now(), (Some(3), 0));
    }

    #[tokio::test]
    async fn a_freed_call_or_a_larger_share_wakes_a_waiter() {
        let cap = std::sync::Arc::new(Cap::new(2));
        cap.counted(Some((1, 1)));
        cap.counted(Some((1, 1)));
        assert_eq!(cap.now(), (Some(1), 0));
        let first = cap.acquire(Instant::now()).await.expect("room for one");
        let later = Instant::now() + Duration::from_secs(30);
        let waiter = {
            let cap = std::sync::Arc::clone(&cap);
            tokio::spawn(async move { cap.acquire(later).await.is_some() })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.expect("joined"), "the freed call's room");

        let _second = cap.acquire(Instant::now()).await.expect("room for one");
        let waiter = {
            let cap = std::sync::Arc::clone(&cap);
            tokio::spawn(async move { cap.acquire(later).await.is_some() })
        };
        tokio::task::yield_now().await;
        // The peer died: this worker is alone and takes the whole cap.
        cap.counted(Some((0, 0)));
        assert!(waiter.await.expect("joined"), "the larger share's room");
    }

    #[tokio::test]
    async fn without_a_cap_nothing_waits() {
        let cap = Cap::new(0);
        let permits: Vec<_> =
            futures::future::join_all((0..100).map(|_| cap.acquire(Instant::now()))).await;
        assert!(permits.iter().all(Option::is_some));
        assert_eq!(cap.now(), (None, 100));
    }
}
