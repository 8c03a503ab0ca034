//! Who the client is, as far as throttling goes: the socket's peer, or, when that peer
//! is a proxy named in `TRUSTED_PROXIES`, the address it forwarded.
//!
//! `X-Forwarded-For` is a list each proxy appends to, and anything left of the last
//! trusted hop may be forged by the client. So the list is read from the right, past
//! the trusted proxies, and the first address that is not one is the client. From an
//! untrusted peer the header is ignored entirely.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(proxies: Vec<IpNet>) -> Self {
        Self(Arc::new(proxies))
    }

    fn trusts(&self, addr: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(addr))
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.trusts(&peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(addr) => {
                    client = addr;
                    if !self.trusts(&addr) {
                        break;
                    }
                }
                // Garbage in the list: whoever wrote it is not to be believed further.
                Err(_) => break,
            }
        }
        client
    }
}

/// The client's address, as a throttling key. IPv6 clients are keyed by their /64:
/// one host usually holds a whole /64, and per-address limits must not be dodged by
/// stepping through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The key under which this client is counted.
    pub fn key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let segments = v6.segments();
                    format!(
                        "{:x}:{:x}:{:x}:{:x}::/64",
                        segments[0], segments[1], segments[2], segments[3]
                    )
                }
            },
        }
    }
}

impl FromRequestParts<crate::state::AppState> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        // Served by shared::serve, every request carries its peer; a request built in
        // memory (none in production) counts as one unknown client.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        Ok(ClientAddr(state.guards.proxies.client(peer, forwarded)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let header = ["203.0.113.9, 198.51.100.7, 10.0.0.2"];
        // From a trusted proxy: right to left past the trusted hops.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), header.into_iter()),
            ip("198.51.100.7")
        );
        // From anyone else, the header is the client's own claim: ignored.
        assert_eq!(
            proxies.client(ip("192.0.2.1"), header.into_iter()),
            ip("192.0.2.1")
        );
        // Nothing forwarded, or garbage: the proxy itself, or the last sane hop.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), std::iter::empty()),
            ip("10.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.1"), ["evil, 10.0.0.3"].into_iter()),
            ip("10.0.0.3")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client(ip("10.0.0.1"), header.into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientAddr(ip("2001:db8:1:2:bbbb::2"));
        assert_eq!(a.key(), b.key());
        assert_eq!(ClientAddr(ip("::ffff:192.0.2.1")).key(), "192.0.2.1");
    }
}
