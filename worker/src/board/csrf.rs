//! CSRF tokens for the board's actions. A browser that has signed in to the board with
//! HTTP Basic sends the credentials with every request to it, a form posted from any
//! other site included; such a site cannot read the board's pages, so a token that only
//! the board's own page carries proves the POST came from it. The token is an
//! HMAC-SHA256, keyed by `OPS_TOKEN`, of the hour it was made in, so every replica
//! makes and checks the same one without sharing state, and one copied out of a page
//! stops working within two hours.

use ring::hmac;
use std::time::{SystemTime, UNIX_EPOCH};

/// How long one token is made for; a token of this or the previous window passes.
const WINDOW_SECS: u64 = 3600;

/// The token of the window `now` is in.
pub fn token(ops_token: &[u8], now: SystemTime) -> String {
    of_window(ops_token, window(now))
}

/// Whether `presented` is this window's token or the previous one's.
pub fn valid(ops_token: &[u8], presented: &str, now: SystemTime) -> bool {
    let current = window(now);
    [current, current.saturating_sub(1)].iter().any(|w| {
        let expected = of_window(ops_token, *w);
        // Compared whole, in time that does not depend on the contents.
        expected.len() == presented.len() && ring_eq(expected.as_bytes(), presented.as_bytes())
    })
}

fn window(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / WINDOW_SECS)
}

fn of_window(ops_token: &[u8], window: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, ops_token);
    let tag = hmac::sign(&key, format!("queue-board-csrf:{window}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OPS: &[u8] = b"0123456789abcdef-ops";

    #[test]
    fn a_token_passes_for_its_hour_and_the_next_and_then_expires() {
        let made = UNIX_EPOCH + Duration::from_secs(1_000 * WINDOW_SECS + 10);
        let token = token(OPS, made);
        assert_eq!(token.len(), 64);
        assert!(valid(OPS, &token, made));
        assert!(valid(OPS, &token, made + Duration::from_secs(WINDOW_SECS)));
        assert!(!valid(
            OPS,
            &token,
            made + Duration::from_secs(2 * WINDOW_SECS)
        ));
    }

    #[test]
    fn another_key_or_a_changed_token_fails() {
        let now = SystemTime::now();
        let token = token(OPS, now);
        assert!(!valid(b"another-ops-token-000", &token, now));
        let mut changed = token.clone().into_bytes();
        changed[0] = if changed[0] == b'0' { b'1' } else { b'0' };
        assert!(!valid(OPS, &String::from_utf8(changed).expect("hex"), now));
        assert!(!valid(OPS, "", now));
        assert!(!valid(OPS, &token[..63], now));
    }
}
