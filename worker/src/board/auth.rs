//! Who may read the board: whoever presents `OPS_TOKEN`, as `Authorization: Bearer
//! <token>` (scripts) or as the password of HTTP Basic with any user name (a browser
//! asks for it after a 401 carrying [`CHALLENGE`]). The ops listener is reachable
//! cluster-wide on Kubernetes, so the token is the board's only guard there.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The `WWW-Authenticate` of a 401: makes a browser prompt for a user and password.
pub const CHALLENGE: &str = "Basic realm=\"queue board\"";

/// Whether the `Authorization` header `value` carries `token`. Anything unreadable (an
/// unknown scheme, base64 that does not decode, no `user:password` pair) is refused,
/// never an error: it is only a wrong guess.
pub fn authorized(value: Option<&[u8]>, token: &[u8]) -> bool {
    value
        .and_then(presented)
        .is_some_and(|presented| same(&presented, token))
}

/// The token a header presents: a bearer token, or a Basic password.
fn presented(value: &[u8]) -> Option<Vec<u8>> {
    let mut parts = value.trim_ascii().splitn(2, |&byte| byte == b' ');
    let scheme = parts.next()?;
    let credentials = parts.next()?.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"Bearer") {
        Some(credentials.to_vec())
    } else if scheme.eq_ignore_ascii_case(b"Basic") {
        let pair = STANDARD.decode(credentials).ok()?;
        // The user name is anything; the password is what follows the first colon.
        pair.splitn(2, |&byte| byte == b':')
            .nth(1)
            .map(<[u8]>::to_vec)
    } else {
        None
    }
}

/// Compares in time that does not depend on where the first difference is, so the
/// token cannot be found a byte at a time by timing the answers. Its length is not
/// hidden: at least 16 random bytes, it tells a guesser nothing useful.
fn same(presented: &[u8], token: &[u8]) -> bool {
    if presented.len() != token.len() {
        return false;
    }
    let difference = presented
        .iter()
        .zip(token)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef-ops";

    fn basic(pair: &[u8]) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(pair)).into_bytes()
    }

    #[test]
    fn the_token_passes_as_bearer_or_as_a_basic_password() {
        assert!(authorized(Some(b"Bearer 0123456789abcdef-ops"), TOKEN));
        assert!(authorized(Some(b"bearer   0123456789abcdef-ops "), TOKEN));
        assert!(authorized(Some(&basic(b"ops:0123456789abcdef-ops")), TOKEN));
        assert!(authorized(Some(&basic(b":0123456789abcdef-ops")), TOKEN));
        // Any user name, even one with a colon in the password's place: the first
        // colon ends the user name.
        assert!(authorized(
            Some(&basic(b"anyone at all:0123456789abcdef-ops")),
            TOKEN
        ));
        assert!(authorized(
            Some(&basic(b"basic:0123456789abcdef-ops")),
            TOKEN
        ));
    }

    #[test]
    fn anything_else_is_refused() {
        for value in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer 0123456789abcdef-op",
            b"Bearer 0123456789abcdef-ops0",
            b"Bearer 0123456789abcdef-opt",
            b"Token 0123456789abcdef-ops",
            b"0123456789abcdef-ops",
            b"Basic 0123456789abcdef-ops",
            b"Basic !!!not base64!!!",
            b"Basic",
            &basic(b"ops:wrong-password-of-20"),
            &basic(b"ops"),
            &basic(b"0123456789abcdef-ops"),
            &basic(b"0123456789abcdef-ops:"),
            // Not UTF-8 once decoded: bytes like any others, and not the token.
            &basic(b"\xff\xfe:\x80\x81\x82"),
            &basic(b"ops:0123456789abcdef-ops\xff"),
        ] {
            assert!(
                !authorized(Some(value), TOKEN),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(!authorized(None, TOKEN));
        // Garbled base64 of every kind decodes to nothing, never to a panic.
        for garbled in ["Basic ====", "Basic YQ", "Basic Y=Q=", "Basic \u{e9}\u{e9}"] {
            assert!(!authorized(Some(garbled.as_bytes()), TOKEN), "{garbled}");
        }
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
