//! Who the client is: the peers heim believes about it (`trusted_proxies`),
//! and what it believes from them.
//!
//! A connection's peer is the client, unless the peer is a trusted proxy: a
//! balancer in front of heim. Then heim believes, in this order, the PROXY
//! protocol header the balancer sent (see `listen::proxy_protocol`), and on
//! each request the `X-Forwarded-For` chain, read from the right: the
//! rightmost address that is not a trusted proxy is the client (every hop
//! left of it could have been written by the client itself, so it is
//! dropped). This is ingress-nginx's `use-forwarded-headers` with
//! `real_ip_recursive`, done safely: a client that is not a trusted proxy
//! can never choose its own address. Nothing here reads a socket.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};

use crate::forward::headers::{X_FORWARDED_FOR, X_FORWARDED_PORT, X_FORWARDED_PROTO};

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32
/// (or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// True when `ip` is in this block (IPv4-mapped IPv6 addresses count as
    /// the IPv4 address they carry).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "not an address or CIDR block (e.g. \"10.0.0.0/8\")".to_string())?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `::ffff:a.b.c.d` is `a.b.c.d` (a dual-stack socket reports IPv4 peers so).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The `trusted_proxies` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

/// X-Forwarded-For hops read at most, from the right.
const MAX_HOPS: usize = 32;

/// What a trusted proxy told heim about a request's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The client, as the rightmost untrusted hop.
    pub client: IpAddr,
    /// The chain to pass on: from the client to the peer, in order.
    pub chain: HeaderValue,
    /// The scheme the client used, when the proxy said `http` or `https`.
    pub proto: Option<HeaderValue>,
    /// The port the client used: the proxy's `X-Forwarded-Port`, else the
    /// scheme's default when it named one.
    pub port: Option<HeaderValue>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// Reads `X-Forwarded-For`/`-Proto`/`-Port` of a request from `peer`,
    /// which the caller found trusted. `None` when the request carries none
    /// of them: the peer is then the client, as it is when only `-Proto`
    /// is there.
    pub fn forwarded(&self, peer: IpAddr, headers: &HeaderMap) -> Option<Forwarded> {
        let mut hops: Vec<&str> = Vec::new();
        for v in headers.get_all(&X_FORWARDED_FOR) {
            hops.extend(v.to_str().ok()?.split(',').map(str::trim));
        }
        let proto = headers
            .get(&X_FORWARDED_PROTO)
            .filter(|p| *p == "https" || *p == "http")
            .cloned();
        if hops.is_empty() && proto.is_none() {
            return None;
        }
        let port = headers
            .get(&X_FORWARDED_PORT)
            .filter(|p| p.to_str().is_ok_and(|p| p.parse::<u16>().is_ok()))
            .cloned()
            .or_else(|| {
                proto
                    .as_ref()
                    .map(|p| HeaderValue::from_static(if p == "https" { "443" } else { "80" }))
            });
        // Walk from the right while the hops are trusted proxies; the first
        // hop that is not is the client. A hop that is no address stops the
        // walk: the last good one is the client.
        let mut client = canonical(peer);
        let mut kept = 0;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            kept += 1;
            if !self.contains(ip) {
                break;
            }
        }
        let mut chain = String::new();
        for hop in &hops[hops.len() - kept..] {
            if let Some(ip) = parse_hop(hop) {
                chain.push_str(&ip.to_string());
                chain.push_str(", ");
            }
        }
        chain.push_str(&canonical(peer).to_string());
        Some(Forwarded {
            client,
            chain: HeaderValue::from_str(&chain).ok()?,
            proto,
            port,
        })
    }
}

/// One `X-Forwarded-For` hop: an address, maybe with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok().map(canonical);
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn cidr_blocks() {
        let t = proxies(&["10.0.0.0/8", "192.0.2.7", "fd00::/8"]);
        for (ip, want) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("::ffff:10.9.9.9", true),
            ("fd12::1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(t.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let cases: &[(&[&str], &str, &str)] = &[
            // The client forged a first hop: it is dropped.
            (
                &["6.6.6.6, 198.51.100.7"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.1",
            ),
            // Trusted hops are walked over.
            (
                &["198.51.100.7, 10.0.0.9"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.9, 10.0.0.1",
            ),
            // Several header lines are one list.
            (
                &["6.6.6.6", "198.51.100.7"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.1",
            ),
            // Ports and brackets.
            (
                &["[2001:db8::1]:443"],
                "2001:db8::1",
                "2001:db8::1, 10.0.0.1",
            ),
            (
                &["198.51.100.7:5000"],
                "198.51.100.7",
                "198.51.100.7, 10.0.0.1",
            ),
            // Garbage stops the walk at the last good hop.
            (
                &["198.51.100.7, garbage, 10.0.0.9"],
                "10.0.0.9",
                "10.0.0.9, 10.0.0.1",
            ),
            (&["garbage"], "10.0.0.1", "10.0.0.1"),
            // Everything trusted: the leftmost is the client.
            (
                &["10.0.0.5, 10.0.0.6"],
                "10.0.0.5",
                "10.0.0.5, 10.0.0.6, 10.0.0.1",
            ),
        ];
        for (xff, client, chain) in cases {
            let mut h = HeaderMap::new();
            for v in *xff {
                h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
            }
            let f = t.forwarded(peer, &h).expect("a chain");
            assert_eq!(f.client.to_string(), *client, "{xff:?}");
            assert_eq!(f.chain, *chain, "{xff:?}");
        }
        assert_eq!(t.forwarded(peer, &HeaderMap::new()), None);
        // A TLS-terminating balancer may send only the scheme.
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let f = t.forwarded(peer, &h).expect("the scheme alone");
        assert_eq!(f.client, peer);
        assert_eq!(f.chain, "10.0.0.1");
        assert_eq!(f.port.unwrap(), "443");
        h.insert(&X_FORWARDED_PORT, HeaderValue::from_static("8443"));
        assert_eq!(t.forwarded(peer, &h).unwrap().port.unwrap(), "8443");
        h.insert(&X_FORWARDED_PORT, HeaderValue::from_static("x"));
        assert_eq!(t.forwarded(peer, &h).unwrap().port.unwrap(), "443");
    }

    #[test]
    fn only_plain_schemes_are_believed() {
        let t = proxies(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for (proto, want) in [
            ("https", Some("https")),
            ("http", Some("http")),
            ("javascript", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7"));
            h.insert(&X_FORWARDED_PROTO, HeaderValue::from_str(proto).unwrap());
            let f = t.forwarded(peer, &h).unwrap();
            assert_eq!(f.proto.as_ref().map(|p| p.to_str().unwrap()), want);
        }
    }
}
