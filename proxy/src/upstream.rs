//! Upstream groups: the endpoints a route forwards to, round-robin choice,
//! and passive ejection of endpoints that fail to connect.
//!
//! Health is shared by every worker (atomics); connection pools are not (see
//! `forward::pool`), so that checking a connection out never takes a lock.
//! A group may speak TLS to its endpoints ([`UpstreamTls`], compiled once
//! per group by `forward::upstream_tls`). A sticky route's request may
//! prefer one endpoint ([`UpstreamGroup::pick_preferred`]); the group keeps
//! its endpoints' affinity tokens, made on the first sticky request.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use crate::forward::upstream_tls::{
    ClientCert, UpstreamTls, UpstreamTlsClient, UpstreamTlsError,
};

/// How heim speaks to an upstream; over TLS when the group has an
/// [`UpstreamTls`] (`H2c` then being HTTP/2 over TLS with ALPN `h2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive, pooled.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge, multiplexed.
    H2c,
}

/// Where an endpoint lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamAddr {
    /// An address known at config time.
    Socket(SocketAddr),
    /// A name resolved when a connection is opened.
    Name { host: String, port: u16 },
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddr::Socket(a) => write!(f, "{a}"),
            UpstreamAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// What passive health checking knows of an endpoint: shared by every
/// route and table that names the same address and protocol, so that a
/// swap (a reload, one changed Ingress) does not forget an ejection.
#[derive(Debug, Default)]
pub struct Health {
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
}

/// One upstream server.
#[derive(Debug)]
pub struct Endpoint {
    /// Identifies the endpoint's connection pool in every worker and its
    /// health; the same address, protocol and TLS settings keep the same id
    /// across swaps (and plain and TLS to one address never share a pool).
    pub id: u64,
    pub addr: UpstreamAddr,
    /// `host:port`, for logs.
    pub display: String,
    health: Arc<Health>,
}

impl Endpoint {
    /// A plain (no TLS) endpoint.
    pub fn new(addr: UpstreamAddr, protocol: UpstreamProtocol) -> Self {
        Self::with_health(addr, protocol, None, &mut HashMap::new())
    }

    /// An endpoint that shares the health `known` has for its id (a new
    /// one is added, for the next endpoint with that id).
    fn with_health(
        addr: UpstreamAddr,
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTls>,
        known: &mut HashMap<u64, Arc<Health>>,
    ) -> Self {
        let mut h = DefaultHasher::new();
        (&addr, protocol, tls).hash(&mut h);
        let id = h.finish();
        Self {
            id,
            display: addr.to_string(),
            addr,
            health: known.entry(id).or_default().clone(),
        }
    }

    fn ejected(&self, now_ms: u64) -> bool {
        self.health.ejected_until_ms.load(Relaxed) > now_ms
    }
}

/// A route's upstreams as its source declares them: plain values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamSpec {
    pub endpoints: Vec<UpstreamAddr>,
    pub protocol: UpstreamProtocol,
    pub limits: UpstreamLimits,
    /// TLS to the endpoints (`backend-protocol: HTTPS`/`GRPCS`); `None`: plain.
    pub tls: Option<UpstreamTls>,
}

/// Timeouts and bounds of a route's upstream connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamLimits {
    pub connect_timeout: Duration,
    /// To the response head, and between two pieces of the response body.
    pub response_timeout: Duration,
    /// How long a pooled keep-alive connection may idle.
    pub idle_timeout: Duration,
    /// HTTP/1 connections one worker keeps open to one endpoint, busy or
    /// idle (upgraded WebSockets aside): past it, requests wait in line.
    pub max_connections: usize,
    /// Requests one worker lets wait for a connection to one endpoint;
    /// past it, and after `connect_timeout` in line, a request gets 503.
    pub queue_size: usize,
}

/// The endpoints of one route and how to talk to them.
#[derive(Debug)]
pub struct UpstreamGroup {
    pub endpoints: Vec<Endpoint>,
    pub protocol: UpstreamProtocol,
    pub limits: UpstreamLimits,
    /// TLS to the endpoints, compiled once for the group; `None`: plain.
    pub tls: Option<UpstreamTlsClient>,
    next: AtomicUsize,
    /// Affinity cookie tokens, made only when a sticky route first asks.
    sticky: OnceLock<crate::affinity::EndpointTokens>,
}

/// After this many consecutive connect failures an endpoint is ejected.
const EJECT_AFTER_FAILURES: u32 = 1;
/// How long an ejected endpoint is skipped (nginx's `fail_timeout`).
const EJECT_FOR: Duration = Duration::from_secs(10);

impl UpstreamGroup {
    /// A plain (no TLS) group.
    pub fn new(
        endpoints: Vec<Endpoint>,
        protocol: UpstreamProtocol,
        limits: UpstreamLimits,
    ) -> Self {
        Self {
            endpoints,
            protocol,
            limits,
            tls: None,
            next: AtomicUsize::new(0),
            sticky: OnceLock::new(),
        }
    }

    /// Compiles a spec; endpoints `known` by id keep their health, and
    /// new ones are added to `known`.
    pub fn compile(spec: &UpstreamSpec, known: &mut HashMap<u64, Arc<Health>>) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|a| Endpoint::with_health(a.clone(), spec.protocol, spec.tls.as_ref(), known))
            .collect();
        Self {
            tls: spec.tls.as_ref().map(UpstreamTlsClient::new),
            ..Self::new(endpoints, spec.protocol, spec.limits)
        }
    }

    /// Each endpoint's id and health, for the next table to keep.
    pub fn health(&self) -> impl Iterator<Item = (u64, Arc<Health>)> + '_ {
        self.endpoints.iter().map(|e| (e.id, e.health.clone()))
    }

    /// Picks the next endpoint round-robin, skipping ejected ones and those in
    /// `tried`. When every untried endpoint is ejected, the one whose
    /// ejection ends first is tried anyway, so a route with a single
    /// endpoint recovers as soon as its backend does.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let now = now_ms();
        let mut fallback: Option<(u64, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if tried.contains(&i) {
                continue;
            }
            let ep = &self.endpoints[i];
            if !ep.ejected(now) {
                return Some(i);
            }
            let until = ep.health.ejected_until_ms.load(Relaxed);
            if fallback.is_none_or(|(u, _)| until < u) {
                fallback = Some((until, i));
            }
        }
        fallback.map(|(_, i)| i)
    }

    /// The endpoint `preferred` (a sticky session's) unless it is out of
    /// range, in `tried` or ejected; otherwise [`Self::pick`]'s choice.
    pub fn pick_preferred(&self, preferred: Option<usize>, tried: &[usize]) -> Option<usize> {
        if let Some(p) = preferred {
            if p < self.endpoints.len()
                && !tried.contains(&p)
                && !self.endpoints[p].ejected(now_ms())
            {
                return Some(p);
            }
        }
        self.pick(tried)
    }

    /// The endpoints' affinity cookie tokens (made on first use).
    pub fn affinity_tokens(&self) -> &crate::affinity::EndpointTokens {
        self.sticky
            .get_or_init(|| crate::affinity::EndpointTokens::new(&self.endpoints))
    }

    /// Records a failed connection attempt to endpoint `i`.
    pub fn report_failure(&self, i: usize) {
        let ep = &self.endpoints[i];
        let fails = ep.health.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if fails >= EJECT_AFTER_FAILURES {
            ep.health
                .ejected_until_ms
                .store(now_ms() + EJECT_FOR.as_millis() as u64, Relaxed);
            tracing::warn!(upstream = %ep.display, failures = fails, "upstream ejected");
        }
    }

    /// Records a successful connection to endpoint `i`.
    pub fn report_success(&self, i: usize) {
        let h = &self.endpoints[i].health;
        if h.consecutive_failures.load(Relaxed) != 0 {
            h.consecutive_failures.store(0, Relaxed);
            h.ejected_until_ms.store(0, Relaxed);
        }
    }
}

/// Milliseconds on a process-wide monotonic clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u16) -> UpstreamGroup {
        let eps = (0..n)
            .map(|i| {
                Endpoint::new(
                    UpstreamAddr::Socket(([127, 0, 0, 1], 1000 + i).into()),
                    UpstreamProtocol::Http1,
                )
            })
            .collect();
        let d = Duration::from_secs(1);
        let limits = UpstreamLimits {
            connect_timeout: d,
            response_timeout: d,
            idle_timeout: d,
            max_connections: 8,
            queue_size: 8,
        };
        UpstreamGroup::new(eps, UpstreamProtocol::Http1, limits)
    }

    #[test]
    fn round_robin_skips_ejected_and_tried() {
        let g = group(3);
        let picks: Vec<_> = (0..6).map(|_| g.pick(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        g.report_failure(1);
        let picks: Vec<_> = (0..4).map(|_| g.pick(&[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_eq!(
            g.pick(&[0, 2]),
            Some(1),
            "an ejected endpoint is still tried last"
        );
        assert_eq!(g.pick(&[0, 1, 2]), None);
        g.report_success(1);
        let picks: Vec<_> = (0..3).map(|_| g.pick(&[]).unwrap()).collect();
        assert!(picks.contains(&1));
    }

    #[test]
    fn the_preferred_endpoint_wins_unless_ejected_or_tried() {
        let g = group(3);
        for _ in 0..4 {
            assert_eq!(g.pick_preferred(Some(2), &[]), Some(2));
        }
        assert_eq!(g.pick_preferred(None, &[]), Some(0), "round-robin without");
        assert_eq!(
            g.pick_preferred(Some(9), &[]),
            Some(1),
            "out of range: round-robin"
        );
        let p = g.pick_preferred(Some(2), &[2]);
        assert!(p.is_some() && p != Some(2), "tried: another, {p:?}");
        g.report_failure(2);
        let picks: Vec<_> = (0..4)
            .map(|_| g.pick_preferred(Some(2), &[]).unwrap())
            .collect();
        assert!(!picks.contains(&2), "ejected: elsewhere {picks:?}");
        g.report_success(2);
        assert_eq!(
            g.pick_preferred(Some(2), &[]),
            Some(2),
            "back once it recovers"
        );
    }

    #[test]
    fn tokens_follow_the_endpoints() {
        let g = group(3);
        let t = g.affinity_tokens();
        assert_eq!(t.index(t.token(1).unwrap()), Some(1));
        assert!(std::ptr::eq(t, g.affinity_tokens()), "made once");
    }

    #[test]
    fn same_address_same_pool_id() {
        let a = Endpoint::new(
            UpstreamAddr::Socket(([127, 0, 0, 1], 80).into()),
            UpstreamProtocol::Http1,
        );
        let b = Endpoint::new(
            UpstreamAddr::Socket(([127, 0, 0, 1], 80).into()),
            UpstreamProtocol::Http1,
        );
        let c = Endpoint::new(
            UpstreamAddr::Socket(([127, 0, 0, 1], 80).into()),
            UpstreamProtocol::H2c,
        );
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    fn spec(tls: Option<UpstreamTls>) -> UpstreamSpec {
        let d = Duration::from_secs(1);
        UpstreamSpec {
            endpoints: vec![UpstreamAddr::Socket(([127, 0, 0, 1], 443).into())],
            protocol: UpstreamProtocol::Http1,
            limits: UpstreamLimits {
                connect_timeout: d,
                response_timeout: d,
                idle_timeout: d,
                max_connections: 8,
                queue_size: 8,
            },
            tls,
        }
    }

    #[test]
    fn tls_and_plain_to_one_address_never_share_a_pool() {
        let id = |tls: Option<UpstreamTls>| {
            let g = UpstreamGroup::compile(&spec(tls), &mut HashMap::new());
            g.endpoints[0].id
        };
        let plain = id(None);
        let unverified = id(Some(UpstreamTls::unverified()));
        let named = id(Some(UpstreamTls {
            server_name: Some("app.test".into()),
            ..UpstreamTls::default()
        }));
        assert_ne!(plain, unverified);
        assert_ne!(unverified, named);
        assert_eq!(
            unverified,
            id(Some(UpstreamTls::unverified())),
            "stable across swaps"
        );
        assert_eq!(
            plain,
            Endpoint::new(spec(None).endpoints[0].clone(), UpstreamProtocol::Http1).id
        );
    }

    #[test]
    fn a_group_compiles_its_tls_once() {
        let g = UpstreamGroup::compile(&spec(Some(UpstreamTls::unverified())), &mut HashMap::new());
        assert!(g.tls.as_ref().is_some_and(|t| t.error().is_none()));
        let g = UpstreamGroup::compile(&spec(None), &mut HashMap::new());
        assert!(g.tls.is_none());
    }
}
