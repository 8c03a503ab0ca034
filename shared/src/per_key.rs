//! Bounds on what one client holds at once: connections per address (in [`crate::serve`])
//! and long polls per user (in the api). A global bound alone lets one client take all
//! of it and lock everyone else out; a bound per key leaves room for the others.
//!
//! Memory follows what is held, not what was seen: a key is in the map only while one
//! of its holds is alive, and every hold is something the global bound already counts.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Holds per key, at most `max` each.
#[derive(Debug)]
pub struct PerKey<K: Eq + Hash + Clone> {
    /// Holds allowed per key; `usize::MAX` when the bound is off.
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> PerKey<K> {
    /// At most `max` holds per key; 0 turns the bound off.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: if max == 0 { usize::MAX } else { max },
            held: Mutex::new(HashMap::new()),
        })
    }

    /// One more hold for `key`, or `None` when it has its `max` already. The hold
    /// ends when the returned guard is dropped.
    pub fn try_hold(self: &Arc<Self>, key: K) -> Option<Held<K>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Held {
            owner: self.clone(),
            key,
        })
    }

    /// How many holds `key` has now.
    pub fn holding(&self, key: &K) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).copied().unwrap_or(0)
    }

    /// How many keys hold anything now.
    pub fn keys(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One hold of a key in a [`PerKey`]; dropping it gives the place back.
#[derive(Debug)]
pub struct Held<K: Eq + Hash + Clone> {
    owner: Arc<PerKey<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The address one client is counted under: an IPv4 address (also when it arrives
/// mapped into IPv6, `::ffff:a.b.c.d`, as a dual-stack listener sees it), or an IPv6
/// client's /64, since one host is routinely given a whole /64 and could otherwise
/// count as 2^64 clients.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_own_bound_and_leaves_no_trace() {
        let per_key = PerKey::new(2);
        let a1 = per_key.try_hold("a").expect("first");
        let _a2 = per_key.try_hold("a").expect("second");
        assert!(per_key.try_hold("a").is_none(), "a third is past the bound");
        let _b = per_key.try_hold("b").expect("another key is not affected");
        drop(a1);
        assert!(
            per_key.try_hold("a").is_some(),
            "a dropped hold frees a place"
        );
        drop(_b);
        assert_eq!(per_key.holding(&"b"), 0);
        assert_eq!(per_key.keys(), 1, "a key without holds is forgotten");
    }

    #[test]
    fn zero_is_off() {
        let per_key = PerKey::new(0);
        let holds: Vec<_> = (0..1_000).filter_map(|_| per_key.try_hold(1)).collect();
        assert_eq!(holds.len(), 1_000);
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_ipv6_counts_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(client_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
    }
}
