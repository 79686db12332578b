//! Per-client request limits of a route: ingress-nginx's `limit-rps`,
//! `limit-rpm`, `limit-burst-multiplier`, `limit-connections` and
//! `limit-allowlist` (alias `limit-whitelist`).
//!
//! This module owns the arithmetic and the per-client state; it does not
//! read annotations (the controller builds a [`RateLimit`]), choose the
//! status code (503 by default in ingress-nginx, `limit-req-status-code`),
//! or decide who the client is (`trust` does). Nothing here awaits: a shard
//! is locked for a few arithmetic operations and released before return.
//!
//! What nginx does, and heim with it:
//! - `limit-rps` / `limit-rpm` are `limit_req zone=… burst=rate×multiplier
//!   nodelay`: a leaky bucket per client. With the client's excess `e`
//!   (in requests) last set at `last`, a request at `now` would set it to
//!   `max(0, e - rate·(now-last) + 1)`; it is admitted when that is at most
//!   the burst, and only then stored. A client never seen (or whose bucket
//!   has drained) starts at 0, so `1 + burst` requests pass at once:
//!   `limit-rps 1` with the default multiplier 5 admits 6, then one a
//!   second.
//! - Both set: both apply; a request passes only if both admit it, and a
//!   request refused by one is charged to neither (nginx's `limit_req`
//!   accounts all its zones only when the last one admits). rps is checked
//!   first (the template's order), so it names the refusal when both would.
//!   ingress-nginx's docs say "connections, rpm, rps"; its template and
//!   nginx say otherwise.
//! - `limit-connections` is `limit_conn`: requests in flight per client (on
//!   HTTP/2 each stream is a request). It runs after `limit_req` (nginx
//!   runs PREACCESS handlers in reverse module order), so a request
//!   refused for connections has already been charged to the rate.
//! - An allowlisted client has an empty zone key in nginx: exempt from all
//!   three limits, and not tracked.
//! - The key is the whole address (`$binary_remote_addr`): two IPv6
//!   addresses in one /64 are two clients, as in nginx. heim differs in one
//!   point: an IPv4-mapped IPv6 address is the IPv4 client it carries.
//!
//! Deliberate differences: nginx counts milli-requests per millisecond and
//! truncates (its `rate=1r/m` drains one request per 62.5 s, not 60 s);
//! heim counts exactly (units of 1/60e9 request per nanosecond).
//!
//! Memory: nginx keeps each zone in 5 MB of shared memory and, when full,
//! drops the least recently used `limit_req` state, or refuses a new
//! `limit_conn` client. heim keeps at most [`DEFAULT_MAX_CLIENTS`] clients
//! per route. When a shard is full, a new client first makes room by
//! forgetting clients whose state equals a fresh one (drained bucket, no
//! request in flight; forgetting them changes nothing); if that frees too
//! little (less than an eighth of the shard, so that the scan is paid for
//! by many inserts), it forgets the clients whose buckets drain soonest,
//! which only makes them as free as a new client. A client with a request
//! in flight is never forgotten (its slot must be given back): when a shard
//! holds only such clients, a new client is refused with
//! [`Rejected::TooManyClients`], as nginx's full `limit_conn` zone refuses.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::trust::{canonical, IpNet};

/// ingress-nginx's `limit-burst-multiplier` when the annotation is absent.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// Clients tracked per route by [`Limiter::new`] (nginx's 5 MB zone holds
/// some 40,000 to 80,000).
pub const DEFAULT_MAX_CLIENTS: usize = 65_536;

/// Shards at most; fewer for a small cap so that a shard is never tiny.
const MAX_SHARDS: usize = 16;
const MIN_PER_SHARD: usize = 1024;

/// One request, in the units excess is counted in: chosen so that both a
/// per-second and a per-minute rate drain a whole number of units per
/// nanosecond (`60·rps` and `rpm`), hence no rounding anywhere.
const REQUEST: u128 = 60_000_000_000;

/// The limits a route carries (from the `limit-*` annotations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// `limit-rps`: requests per second per client; `None` or 0 = none.
    pub per_second: Option<u32>,
    /// `limit-rpm`: requests per minute per client; `None` or 0 = none.
    pub per_minute: Option<u32>,
    /// `limit-burst-multiplier`: burst = rate × this (0 = no burst).
    pub burst_multiplier: u32,
    /// `limit-connections`: requests in flight per client; `None` or 0 =
    /// none.
    pub connections: Option<u32>,
    /// `limit-allowlist` / `limit-whitelist`: clients exempt from all three.
    pub allowlist: Vec<IpNet>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: None,
            per_minute: None,
            burst_multiplier: DEFAULT_BURST_MULTIPLIER,
            connections: None,
            allowlist: Vec::new(),
        }
    }
}

impl RateLimit {
    /// True when no limit is set (ingress-nginx then emits no zone at all).
    pub fn limits_nothing(&self) -> bool {
        positive(self.per_second).is_none()
            && positive(self.per_minute).is_none()
            && positive(self.connections).is_none()
    }
}

/// Why a request was refused: which limit (for the metric label and log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Over `limit-rps` (burst included).
    #[error("over limit-rps")]
    PerSecond,
    /// Over `limit-rpm` (burst included).
    #[error("over limit-rpm")]
    PerMinute,
    /// Over `limit-connections`.
    #[error("over limit-connections")]
    Connections,
    /// A new client, and every tracked client has a request in flight.
    #[error("too many clients with requests in flight")]
    TooManyClients,
}

impl Rejected {
    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::PerSecond => "limit-rps",
            Rejected::PerMinute => "limit-rpm",
            Rejected::Connections => "limit-connections",
            Rejected::TooManyClients => "limit-clients",
        }
    }
}

// === impl Limiter ===

/// The limit state of one route, shared by every worker; cheap to clone
/// (the clones share the state).
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

struct Inner {
    spec: RateLimit,
    per_second: Option<Bucket>,
    per_minute: Option<Bucket>,
    connections: Option<u32>,
    shards: Box<[Mutex<HashMap<IpAddr, Client>>]>,
    per_shard: usize,
    shard_hasher: RandomState,
}

/// A leaky bucket's constants, in [`REQUEST`] units.
#[derive(Clone, Copy)]
struct Bucket {
    drain_per_ns: u128,
    burst: u128,
}

impl Bucket {
    fn new(rate: Option<u32>, per_minute: bool, multiplier: u32) -> Option<Bucket> {
        let rate = positive(rate)?;
        let drain_per_ns = if per_minute {
            u128::from(rate)
        } else {
            u128::from(rate) * 60
        };
        let burst = u128::from(u64::from(rate) * u64::from(multiplier)) * REQUEST;
        Some(Bucket {
            drain_per_ns,
            burst,
        })
    }

    /// The excess a request at `now` would leave (nginx's
    /// `excess - rate*ms/1000 + 1000`, clamped at 0).
    fn next(&self, excess: u128, last: Instant, now: Instant) -> u128 {
        let drained = now
            .saturating_duration_since(last)
            .as_nanos()
            .saturating_mul(self.drain_per_ns);
        excess.saturating_add(REQUEST).saturating_sub(drained)
    }

    /// How long after the last admission the next request finds the
    /// bucket as a new client would (its `next` is 0).
    fn idle_after(&self, excess: u128) -> Duration {
        let ns = (excess + REQUEST).div_ceil(self.drain_per_ns);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// What is known of one client.
struct Client {
    /// When the excesses were last stored (the last admitted request).
    last: Instant,
    per_second: u128,
    per_minute: u128,
    /// From then on the rate state equals a new client's; `None`: beyond
    /// any reachable instant.
    idle_at: Option<Instant>,
    /// Requests in flight (held [`ConnGuard`]s).
    conns: u32,
}

impl Client {
    fn forgettable(&self, now: Instant) -> bool {
        self.conns == 0 && self.idle_at.is_some_and(|t| t <= now)
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("spec", &self.inner.spec)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl Limiter {
    /// A limiter for `spec` tracking up to [`DEFAULT_MAX_CLIENTS`] clients.
    pub fn new(spec: &RateLimit) -> Limiter {
        Limiter::with_capacity(spec, DEFAULT_MAX_CLIENTS)
    }

    /// A limiter for `spec` tracking up to `max_clients` clients (at least
    /// one).
    pub fn with_capacity(spec: &RateLimit, max_clients: usize) -> Limiter {
        let max_clients = max_clients.max(1);
        let shards = (max_clients / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let multiplier = spec.burst_multiplier;
        Limiter {
            inner: Arc::new(Inner {
                spec: spec.clone(),
                per_second: Bucket::new(spec.per_second, false, multiplier),
                per_minute: Bucket::new(spec.per_minute, true, multiplier),
                connections: positive(spec.connections),
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                per_shard: max_clients / shards,
                shard_hasher: RandomState::new(),
            }),
        }
    }

    /// The spec this limiter enforces (a reload may keep the limiter, and
    /// its state, when the spec is unchanged).
    pub fn spec(&self) -> &RateLimit {
        &self.inner.spec
    }

    /// Clients tracked now (bounded by the capacity).
    pub fn tracked(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Admits or refuses a request of `client` at `now`: allowlist, then
    /// rps and rpm, then a connection slot, held by the returned guard
    /// until it is dropped (`None`: no connection limit, or allowlisted).
    pub fn admit(&self, client: IpAddr, now: Instant) -> Result<Option<ConnGuard>, Rejected> {
        let inner = &self.inner;
        if inner.per_second.is_none() && inner.per_minute.is_none() && inner.connections.is_none() {
            return Ok(None);
        }
        let client = canonical(client);
        if inner.spec.allowlist.iter().any(|net| net.contains(client)) {
            return Ok(None);
        }
        let shard = (inner.shard_hasher.hash_one(client) % inner.shards.len() as u64) as usize;
        let mut map = lock(&inner.shards[shard]);

        // limit_req: both zones checked before either is charged.
        let (per_second, per_minute) = match map.get(&client) {
            Some(c) => (
                inner
                    .per_second
                    .map_or(0, |b| b.next(c.per_second, c.last, now)),
                inner
                    .per_minute
                    .map_or(0, |b| b.next(c.per_minute, c.last, now)),
            ),
            None => (0, 0),
        };
        if inner.per_second.is_some_and(|b| per_second > b.burst) {
            return Err(Rejected::PerSecond);
        }
        if inner.per_minute.is_some_and(|b| per_minute > b.burst) {
            return Err(Rejected::PerMinute);
        }

        if map.len() >= inner.per_shard
            && !map.contains_key(&client)
            && !make_room(&mut map, inner.per_shard, now)
        {
            return Err(Rejected::TooManyClients);
        }
        let idle_after = [
            inner.per_second.map(|b| b.idle_after(per_second)),
            inner.per_minute.map(|b| b.idle_after(per_minute)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Duration::ZERO);
        let c = map.entry(client).or_insert(Client {
            last: now,
            per_second: 0,
            per_minute: 0,
            idle_at: Some(now),
            conns: 0,
        });
        c.last = now;
        c.per_second = per_second;
        c.per_minute = per_minute;
        c.idle_at = now.checked_add(idle_after);

        // limit_conn, after limit_req as in nginx: the rate is charged even
        // when the slot is refused.
        let Some(limit) = inner.connections else {
            return Ok(None);
        };
        if c.conns >= limit {
            return Err(Rejected::Connections);
        }
        c.conns += 1;
        Ok(Some(ConnGuard {
            inner: self.inner.clone(),
            shard,
            client,
        }))
    }
}

/// Frees room in a full shard (see the module header); false when every
/// client in it has a request in flight.
fn make_room(map: &mut HashMap<IpAddr, Client>, cap: usize, now: Instant) -> bool {
    let target = cap - (cap / 8).max(1);
    map.retain(|_, c| !c.forgettable(now));
    if map.len() > target {
        // Forget the clients nearest to being forgotten anyway.
        let mut candidates: Vec<(Option<Instant>, IpAddr)> = map
            .iter()
            .filter(|(_, c)| c.conns == 0)
            .map(|(ip, c)| (c.idle_at, *ip))
            .collect();
        let excess = (map.len() - target).min(candidates.len());
        if excess > 0 {
            // `None` (never idle) sorts after every instant.
            let key = |(idle_at, _): &(Option<Instant>, IpAddr)| (idle_at.is_none(), *idle_at);
            if excess < candidates.len() {
                candidates.select_nth_unstable_by_key(excess, key);
            }
            for (_, ip) in &candidates[..excess] {
                map.remove(ip);
            }
        }
    }
    map.len() < cap
}

fn positive(n: Option<u32>) -> Option<u32> {
    n.filter(|&n| n > 0)
}

fn lock(shard: &Mutex<HashMap<IpAddr, Client>>) -> MutexGuard<'_, HashMap<IpAddr, Client>> {
    // Nothing panics while the lock is held; a poisoned shard is still
    // consistent.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl ConnGuard ===

/// A request's connection slot under `limit-connections`, given back when
/// dropped (hold it until the response is done).
#[must_use = "the connection slot is given back when the guard is dropped"]
pub struct ConnGuard {
    inner: Arc<Inner>,
    shard: usize,
    client: IpAddr,
}

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnGuard")
            .field("client", &self.client)
            .finish()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let inner = &self.inner;
        let mut map = lock(&inner.shards[self.shard]);
        // A client with a slot held is never forgotten, so it is there.
        if let Some(c) = map.get_mut(&self.client) {
            c.conns = c.conns.saturating_sub(1);
            // Like nginx's limit_conn node, a client known only for its
            // connections goes with the last one.
            if c.conns == 0 && inner.per_second.is_none() && inner.per_minute.is_none() {
                map.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rps(rate: u32, multiplier: u32) -> RateLimit {
        RateLimit {
            per_second: Some(rate),
            burst_multiplier: multiplier,
            ..RateLimit::default()
        }
    }

    fn rpm(rate: u32, multiplier: u32) -> RateLimit {
        RateLimit {
            per_minute: Some(rate),
            burst_multiplier: multiplier,
            ..RateLimit::default()
        }
    }

    /// Requests admitted at one instant before the first refusal, and that
    /// refusal.
    fn burst(l: &Limiter, client: IpAddr, now: Instant) -> (usize, Rejected) {
        for n in 0..1_000_000 {
            if let Err(r) = l.admit(client, now) {
                return (n, r);
            }
        }
        panic!("never refused");
    }

    #[test]
    fn burst_is_one_plus_rate_times_multiplier() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        // (spec, admitted at once): nginx admits the first request of a new
        // client at excess 0, then `burst` more.
        let table = [
            (rps(1, 5), 6, Rejected::PerSecond),
            (rps(10, 5), 51, Rejected::PerSecond),
            (rps(3, 1), 4, Rejected::PerSecond),
            (rps(5, 0), 1, Rejected::PerSecond),
            (rpm(60, 5), 301, Rejected::PerMinute),
            (rpm(1, 1), 2, Rejected::PerMinute),
            (rpm(1, 0), 1, Rejected::PerMinute),
        ];
        for (spec, want, why) in table {
            let l = Limiter::new(&spec);
            assert_eq!(burst(&l, c, t0), (want, why), "{spec:?}");
            // A refused request is not stored: still refused, not worse.
            assert_eq!(l.admit(c, t0).unwrap_err(), why);
        }
    }

    #[test]
    fn refill_one_per_interval() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&rps(1, 5));
        assert_eq!(burst(&l, c, t0).0, 6);
        assert_eq!(l.admit(c, t0 + ms(999)).unwrap_err(), Rejected::PerSecond);
        assert_eq!(burst(&l, c, t0 + ms(1000)).0, 1);
        // Excess 5 at 1 s; 4 s later 4 have drained: room for 4.
        assert_eq!(burst(&l, c, t0 + ms(5000)).0, 4);

        // Fully drained (excess 5 + the next request's 1 = 6 s): a whole
        // burst again, as for a new client.
        let l = Limiter::new(&rps(1, 5));
        assert_eq!(burst(&l, c, t0).0, 6);
        assert_eq!(burst(&l, c, t0 + ms(6000)).0, 6);
        // One second short: one less.
        let l = Limiter::new(&rps(1, 5));
        assert_eq!(burst(&l, c, t0).0, 6);
        assert_eq!(burst(&l, c, t0 + ms(5000)).0, 5);

        // rps 3 without burst: one per 333.3 ms, exactly.
        let l = Limiter::new(&rps(3, 0));
        assert!(l.admit(c, t0).is_ok());
        assert!(l.admit(c, t0 + ms(333)).is_err());
        assert!(l.admit(c, t0 + ms(334)).is_ok());
        assert!(l.admit(c, t0 + ms(334)).is_err());
    }

    #[test]
    fn per_minute_refills_one_per_sixty_seconds() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&rpm(1, 1));
        assert_eq!(burst(&l, c, t0).0, 2);
        assert_eq!(
            l.admit(c, t0 + ms(59_999)).unwrap_err(),
            Rejected::PerMinute
        );
        assert_eq!(burst(&l, c, t0 + ms(60_000)).0, 1);

        let l = Limiter::new(&rpm(60, 5));
        assert_eq!(burst(&l, c, t0).0, 301);
        assert_eq!(burst(&l, c, t0 + ms(1000)).0, 1);
        assert_eq!(burst(&l, c, t0 + ms(11_000)).0, 10);
    }

    #[test]
    fn per_second_and_per_minute_together() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        // rps 2 (burst 2: 3 at once), rpm 6 (burst 6: 7 at once, one per 10 s).
        let l = Limiter::new(&RateLimit {
            per_second: Some(2),
            per_minute: Some(6),
            burst_multiplier: 1,
            ..RateLimit::default()
        });
        assert_eq!(burst(&l, c, t0), (3, Rejected::PerSecond));
        // 1.5 s later rps has drained (excess 2 - 3 -> 0) and rpm barely
        // (2 - 0.15 + 1 = 2.85 for the next): rps stops it again.
        assert_eq!(burst(&l, c, t0 + ms(1500)), (3, Rejected::PerSecond));
        // rps drained again; rpm at 4.85 - 0.15 + 1 = 5.7: one more, then
        // rpm refuses (6.7 > 6).
        assert_eq!(burst(&l, c, t0 + ms(3000)), (1, Rejected::PerMinute));
        // Refused by rpm, charged to neither: had rps been charged, these
        // would turn into PerSecond after two.
        for _ in 0..5 {
            assert_eq!(l.admit(c, t0 + ms(3000)).unwrap_err(), Rejected::PerMinute);
        }
        // rpm excess 5.7, 7 s later 0.7 drained: room for exactly one.
        assert_eq!(burst(&l, c, t0 + ms(10_000)), (1, Rejected::PerMinute));
    }

    #[test]
    fn connection_slots_and_release() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&RateLimit {
            connections: Some(8),
            ..RateLimit::default()
        });
        // The e2e test: 20 concurrent requests, limit 8 -> 8 pass, 12 refused.
        let results: Vec<_> = (0..20).map(|_| l.admit(c, t0)).collect();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Rejected::Connections)))
            .count();
        let mut guards: Vec<ConnGuard> = results
            .into_iter()
            .filter_map(|r| r.ok().flatten())
            .collect();
        assert_eq!((guards.len(), refused), (8, 12));
        // Another client has its own slots.
        assert!(matches!(l.admit(ip("192.0.2.2"), t0), Ok(Some(_))));
        assert_eq!(l.admit(c, t0).unwrap_err(), Rejected::Connections);
        guards.pop();
        let again = l.admit(c, t0).unwrap().unwrap();
        assert!(l.admit(c, t0).is_err());
        drop(again);
        drop(guards);
        // Known only for its connections: forgotten with the last one.
        assert_eq!(l.tracked(), 0);
        assert_eq!(burst_guards(&l, c, t0), 8);
    }

    fn burst_guards(l: &Limiter, c: IpAddr, now: Instant) -> usize {
        let mut held = Vec::new();
        while let Ok(g) = l.admit(c, now) {
            held.push(g.unwrap());
        }
        held.len()
    }

    #[test]
    fn no_guard_without_a_connection_limit() {
        let l = Limiter::new(&rps(1, 5));
        assert!(l.admit(ip("192.0.2.1"), Instant::now()).unwrap().is_none());
    }

    #[test]
    fn refused_slot_is_still_charged_to_the_rate() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&RateLimit {
            per_second: Some(1),
            burst_multiplier: 0,
            connections: Some(1),
            ..RateLimit::default()
        });
        let held = l.admit(c, t0).unwrap();
        assert_eq!(
            l.admit(c, t0 + ms(1000)).unwrap_err(),
            Rejected::Connections
        );
        drop(held);
        // nginx's limit_req ran (and counted) before limit_conn refused.
        assert_eq!(l.admit(c, t0 + ms(1000)).unwrap_err(), Rejected::PerSecond);
        assert!(l.admit(c, t0 + ms(2000)).unwrap().is_some());
    }

    #[test]
    fn allowlist_is_exempt_from_every_limit() {
        let t0 = Instant::now();
        let l = Limiter::new(&RateLimit {
            per_second: Some(1),
            per_minute: Some(1),
            burst_multiplier: 0,
            connections: Some(1),
            allowlist: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
        });
        for client in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8:1::7"] {
            for _ in 0..100 {
                assert!(l.admit(ip(client), t0).unwrap().is_none(), "{client}");
            }
        }
        assert_eq!(l.tracked(), 0);
        let other = ip("192.0.2.1");
        let _held = l.admit(other, t0).unwrap().unwrap();
        assert_eq!(l.admit(other, t0).unwrap_err(), Rejected::PerSecond);
    }

    #[test]
    fn nothing_to_limit() {
        let l = Limiter::new(&RateLimit {
            per_second: Some(0),
            per_minute: Some(0),
            connections: Some(0),
            ..RateLimit::default()
        });
        assert!(l.spec().limits_nothing());
        for _ in 0..1000 {
            assert!(l.admit(ip("192.0.2.1"), Instant::now()).unwrap().is_none());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn keyed_by_whole_address_mapped_ipv4_is_ipv4() {
        let t0 = Instant::now();
        let l = Limiter::new(&rps(1, 0));
        // Same /64, two clients (nginx's $binary_remote_addr).
        assert!(l.admit(ip("2001:db8::1"), t0).is_ok());
        assert!(l.admit(ip("2001:db8::2"), t0).is_ok());
        assert!(l.admit(ip("2001:db8::1"), t0).is_err());
        assert!(l.admit(ip("192.0.2.1"), t0).is_ok());
        assert!(l.admit(ip("::ffff:192.0.2.1"), t0).is_err());
        assert!(l.admit(ip("192.0.2.2"), t0).is_ok());
        assert_eq!(l.tracked(), 4);
    }

    #[test]
    fn an_earlier_instant_drains_nothing() {
        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&rps(1, 0));
        assert!(l.admit(c, t0 + ms(1000)).is_ok());
        assert!(l.admit(c, t0).is_err());
        assert!(l.admit(c, t0 + ms(2000)).is_ok());
    }

    #[test]
    fn capacity_bounds_memory_and_admits_new_clients() {
        let t0 = Instant::now();
        let l = Limiter::with_capacity(&rps(1, 5), 64);
        // One client at its limit.
        let heavy = ip("192.0.2.1");
        assert_eq!(burst(&l, heavy, t0).0, 6);
        // Many new clients, all at once: none is idle yet, yet each is
        // admitted, and the heavy client (idle last) is kept.
        for i in 0..10_000u32 {
            let c = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            assert!(l.admit(c, t0 + ms(50)).is_ok(), "{c}");
            assert!(l.tracked() <= 64);
        }
        assert_eq!(
            l.admit(heavy, t0 + ms(100)).unwrap_err(),
            Rejected::PerSecond
        );
        // Spread over time, bursting: idle ones are forgotten first.
        for i in 0..10_000u32 {
            let c = IpAddr::from((0x0b00_0000 + i).to_be_bytes());
            let now = t0 + ms(200 + u64::from(i));
            assert_eq!(burst(&l, c, now).0, 6, "{c}");
            assert!(l.tracked() <= 64);
        }
        // IPv6 addresses are as plentiful as an attacker wants.
        let l = Limiter::new(&rps(1, 5));
        for i in 0..(DEFAULT_MAX_CLIENTS as u128 * 2) {
            let c = IpAddr::from(((0x2001_0db8_u128 << 96) | i).to_be_bytes());
            assert!(l.admit(c, t0).is_ok());
        }
        assert!(l.tracked() <= DEFAULT_MAX_CLIENTS);
    }

    #[test]
    fn held_slots_are_never_forgotten() {
        let t0 = Instant::now();
        let l = Limiter::with_capacity(
            &RateLimit {
                per_second: Some(100),
                connections: Some(1),
                ..RateLimit::default()
            },
            4,
        );
        let mut held: Vec<ConnGuard> = (1..=4)
            .map(|i| l.admit(ip(&format!("192.0.2.{i}")), t0).unwrap().unwrap())
            .collect();
        let fresh = ip("192.0.2.5");
        assert_eq!(
            l.admit(fresh, t0 + ms(60_000)).unwrap_err(),
            Rejected::TooManyClients
        );
        // Still tracked, still limited.
        assert_eq!(
            l.admit(ip("192.0.2.1"), t0 + ms(60_000)).unwrap_err(),
            Rejected::Connections
        );
        drop(held.remove(0));
        let _g = l.admit(fresh, t0 + ms(60_000)).unwrap().unwrap();
        assert!(l.tracked() <= 4);
    }

    #[test]
    fn shared_between_threads_counts_exactly() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Limiter>();
        send_sync::<ConnGuard>();

        let c = ip("192.0.2.1");
        let t0 = Instant::now();
        let l = Limiter::new(&rps(10, 5));
        let admitted: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..50).filter(|_| l.admit(c, t0).is_ok()).count()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(admitted, 51);
    }
}
