//! Counters per key over fixed one-minute windows, in this process's memory: failed
//! logins per account and per client address, registrations per address.
//!
//! Fixed windows, not sliding ones, on purpose: a key that went over its limit is
//! free again when its minute ends, so an attacker who spends an account's failed
//! logins locks its real owner out for at most the rest of that minute, never longer.
//!
//! Memory is bounded twice over. A key is kept as a 64-bit digest (SipHash under a key
//! drawn at start, so nobody can aim collisions at an account), whatever its length:
//! 100,000 keys take about 2 MB. And the map holds at most [`MAX_KEYS`] per window; past
//! that a new key is refused (`429`) until the window ends, never waved through,
//! because failing open is exactly what a flood of junk keys would be after. The cap is
//! out of reach for honest traffic and for a flood alike: the handlers take a key only
//! once they hold a password-hashing slot (a request refused `503` as busy leaves none),
//! so keys arrive at most as fast as hashes run, a few thousand a minute per replica.
//!
//! The counts are per replica: N api replicas allow N times the limit. That is the
//! price of keeping password checks off the database; the limit's purpose, making
//! guessing slow, holds.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most keys one window tracks.
pub const MAX_KEYS: usize = 100_000;

/// Events per key and window, with a limit.
#[derive(Debug)]
pub struct Throttle {
    /// Events allowed per key and window; 0 turns the throttle off.
    limit: u32,
    window: Duration,
    /// The digest's key, drawn at start.
    digest: RandomState,
    current: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Events per key digest.
    counts: HashMap<u64, u32>,
    warned_full: bool,
}

impl Throttle {
    /// A throttle of `limit` events per key and `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            digest: RandomState::new(),
            current: Mutex::new(Window {
                started: Instant::now(),
                counts: HashMap::new(),
                warned_full: false,
            }),
        }
    }

    /// Counts one event for `key` if it has events left, in one step: concurrent
    /// requests cannot all pass a check before any of them counts. `Err(seconds until
    /// the window ends)` when it has none.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let digest = self.digest.hash_one(key);
        let mut window = self.window();
        if let Some(count) = window.counts.get_mut(&digest) {
            if *count >= self.limit {
                return Err(self.retry_after(&window));
            }
            *count += 1;
        } else if window.counts.len() < MAX_KEYS {
            window.counts.insert(digest, 1);
        } else {
            if !window.warned_full {
                window.warned_full = true;
                tracing::warn!(
                    keys = MAX_KEYS,
                    "throttle full for this window: new keys are refused until it ends"
                );
            }
            return Err(self.retry_after(&window));
        }
        Ok(())
    }

    /// Gives back an event [`Throttle::take`] counted, when it turned out not to count
    /// (a login that succeeded, a registration refused as busy).
    pub fn give_back(&self, key: &str) {
        if self.limit == 0 {
            return;
        }
        let digest = self.digest.hash_one(key);
        if let Some(count) = self.window().counts.get_mut(&digest) {
            *count = count.saturating_sub(1);
        }
    }

    /// How many keys the current window counts (tests and the attack tests read it).
    pub fn keys(&self) -> usize {
        self.window().counts.len()
    }

    /// The current window, a fresh one if the last has ended.
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut window = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if window.started.elapsed() >= self.window {
            window.started = Instant::now();
            window.counts.clear();
            window.counts.shrink_to(1_024);
            window.warned_full = false;
        }
        window
    }

    /// Whole seconds until the window ends, at least 1.
    fn retry_after(&self, window: &Window) -> u64 {
        let left = self.window.saturating_sub(window.started.elapsed());
        (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_limit_waits_for_the_window_and_others_do_not() {
        let throttle = Throttle::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(throttle.take("ada").is_ok());
        }
        let retry_after = throttle.take("ada").expect_err("over the limit");
        assert_eq!(retry_after, 1);
        throttle.give_back("ada");
        assert!(
            throttle.take("ada").is_ok(),
            "a given-back event frees a place"
        );
        assert!(throttle.take("ada").is_err());
        assert!(throttle.take("grace").is_ok());
        // A new window forgives: polled with a deadline, since the window is time.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while throttle.take("ada").is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the window never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn concurrent_takes_never_pass_the_limit() {
        let throttle = std::sync::Arc::new(Throttle::new(10, Duration::from_secs(60)));
        let passed: usize = (0..8)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || {
                    (0..100).filter(|_| throttle.take("ada").is_ok()).count()
                })
            })
            .map(|thread| thread.join().expect("thread"))
            .sum();
        assert_eq!(passed, 10);
    }

    #[test]
    fn zero_is_off_and_past_the_cap_new_keys_are_refused() {
        let off = Throttle::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(off.take("ada").is_ok());
        }
        let throttle = Throttle::new(2, Duration::from_secs(60));
        for n in 0..MAX_KEYS {
            assert!(throttle.take(&n.to_string()).is_ok());
        }
        assert_eq!(throttle.window().counts.len(), MAX_KEYS);
        // Past the cap, a new key is refused until the window ends, never uncounted.
        let late = (MAX_KEYS + 5).to_string();
        assert!(throttle.take(&late).is_err());
        assert!(throttle.take(&late).is_err());
        assert_eq!(throttle.window().counts.len(), MAX_KEYS);
        // Keys already counted go on as before.
        assert!(throttle.take("0").is_ok());
        assert!(throttle.take("0").is_err());
    }

    #[test]
    fn a_key_costs_the_same_whatever_its_length() {
        let throttle = Throttle::new(1, Duration::from_secs(60));
        let huge = "\u{1F600}".repeat(254);
        assert!(throttle.take(&huge).is_ok());
        assert!(throttle.take(&huge).is_err(), "the same key, counted once");
        assert!(
            throttle.take(&huge[..huge.len() - 4]).is_ok(),
            "another key"
        );
        // The map stores digests: 8 bytes a key, not the key's kilobyte.
        let window = throttle.window();
        assert_eq!(window.counts.len(), 2);
        assert_eq!(
            std::mem::size_of_val(window.counts.keys().next().expect("a key")),
            8
        );
    }
}
