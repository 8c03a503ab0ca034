//! Who the client is, as far as throttling goes: the socket's peer, or, when that peer
//! is a proxy named in `TRUSTED_PROXIES`, the address it forwarded. The extractor that
//! asks this of each request is `crate::extract::ClientAddr`.
//!
//! `X-Forwarded-For` is a list each proxy appends to, and anything left of the last
//! trusted hop may be forged by the client. So the list is read from the right, past
//! the trusted proxies, and the first address that is not one is the client. From an
//! untrusted peer the header is ignored entirely.

use ipnet::IpNet;
use std::net::IpAddr;
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
}
