//! Who the client is, as far as throttling goes: the socket's peer, or, when that peer
//! is a proxy named in `TRUSTED_PROXIES`, the address it forwarded. The extractor that
//! asks this of each request is `crate::extract::ClientAddr`.
//!
//! `X-Forwarded-For` is a list each proxy appends to, and anything left of the last
//! trusted hop may be forged by the client. So the list is read from the right, past
//! the trusted proxies, and the first address that is not one is the client. From an
//! untrusted peer the header is ignored entirely.
//!
//! Proxies write a hop in more than one form: a bare address, `ip:port`, `[v6]` or
//! `[v6]:port`; each is read as its address, since a port would otherwise make the hop
//! unreadable and every client behind such a proxy would share the proxy's key. An
//! IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, what a dual-stack listener sees) is
//! its IPv4 address, so that an IPv4 entry of `TRUSTED_PROXIES` matches it.

use ipnet::IpNet;
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

    /// The proxies, for the connection bound that exempts them.
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(&peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(addr) => {
                    client = addr;
                    if !self.trusts(&addr) {
                        break;
                    }
                }
                // Garbage in the list: whoever wrote it is not to be believed further.
                None => break,
            }
        }
        client
    }
}

/// One hop of `X-Forwarded-For` as an address: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let addr = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })?;
    Some(addr.to_canonical())
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
    fn hops_with_ports_brackets_and_mapped_addresses_are_read_as_their_address() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        for (hop, client) in [
            ("198.51.100.7:51234", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
        ] {
            let header = [format!("203.0.113.9, {hop}, 10.0.0.2:8080")];
            assert_eq!(
                proxies.client(ip("10.0.0.1"), header.iter().map(String::as_str)),
                ip(client),
                "{hop}"
            );
        }
        // A dual-stack listener's mapped peer is matched by the IPv4 entry.
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.1"), ["198.51.100.7"].into_iter()),
            ip("198.51.100.7")
        );
        // Still garbage: a port without brackets on IPv6 is ambiguous, so not believed.
        assert_eq!(
            proxies.client(ip("10.0.0.1"), ["2001:db8::7:443x, 10.0.0.3"].into_iter()),
            ip("10.0.0.3")
        );
    }
}
