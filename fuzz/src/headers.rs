//! The request head heim rewrites before hyper sends it on: `clean`,
//! `ForwardedFor`, `acceptable_request_id`.
//!
//! Input: a first line of flags and connection facts, then one header a
//! line (`name: value`); names or values `http` refuses are skipped, as
//! hyper would have refused the request. The first line is
//! `<flags> <peer IP> <local port>`, the flags `u` (heim relays an upgrade),
//! `t` (the client came over TLS) and `p` (the peer is a trusted proxy):
//!
//! ```text
//! up 10.0.0.1 8443
//! connection: upgrade, x-secret
//! upgrade: websocket
//! x-forwarded-for: 6.6.6.6, 198.51.100.7
//! ```
//!
//! Properties, in both directions: no hop-by-hop header survives (`TE` only
//! as exactly `trailers`, `Upgrade` and `Connection: upgrade` only when an
//! upgrade is relayed), nor any header `Connection` names, nor a
//! `Content-Length` beside a `Transfer-Encoding`; `Host` and other
//! end-to-end headers survive. On requests, also no name with `_`, no
//! `x-heim-*` and none of the names only heim may set; then
//! `X-Forwarded-*` hold exactly what heim saw, or what a trusted proxy in
//! front said: a chain from the client to the peer, with only trusted
//! proxies after the client. A request id heim keeps is
//! a short token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use heim_proxy::forward::headers::{acceptable_request_id, clean, ForwardedFor};
use heim_proxy::trust::{Forwarded, IpNet, TrustedProxies};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Never cross heim (RFC 9110 §7.6.1), `te` and `upgrade` aside.
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "proxy-authorization",
];

/// The names headers.rs lists as only heim's to set (besides `x-heim-*`
/// and every name with `_`).
const SPOOFABLE: [&str; 19] = [
    "forwarded",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "remote-user",
    "x-remote-user",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-scheme",
];

/// End-to-end headers `clean` must leave alone (unless `Connection` names
/// them; `Host` even then).
const END_TO_END: [&str; 4] = ["host", "accept", "content-type", "user-agent"];

/// One request head as the fuzzer wrote it.
struct Head {
    headers: HeaderMap,
    keep_upgrade: bool,
    tls: bool,
    trusted_peer: bool,
    peer: SocketAddr,
    local_port: u16,
}

impl Head {
    fn parse(data: &[u8]) -> Head {
        let mut lines = data.split(|b| *b == b'\n');
        let first = String::from_utf8_lossy(lines.next().unwrap_or_default());
        let mut facts = first.split_whitespace();
        let flags = facts.next().unwrap_or("");
        let ip = facts
            .next()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let local_port = facts.next().and_then(|s| s.parse().ok()).unwrap_or(443);
        let mut headers = HeaderMap::new();
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii_start();
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        Head {
            headers,
            keep_upgrade: flags.contains('u'),
            tls: flags.contains('t'),
            trusted_peer: flags.contains('p'),
            peer: SocketAddr::new(ip, 40000),
            local_port,
        }
    }
}

/// Runs every property on one input.
pub fn check(data: &[u8]) {
    let head = Head::parse(data);
    let original = &head.headers;

    let mut request = original.clone();
    clean(&mut request, true, head.keep_upgrade);
    hop_by_hop_gone(original, &request, head.keep_upgrade);
    end_to_end_kept(original, &request);
    forged_gone(&request);

    let host = original
        .get(http::header::HOST)
        .cloned()
        .unwrap_or(HeaderValue::from_static("app.example.test"));
    forwarded_for(original, &mut request, &head, &host);

    let mut response = original.clone();
    clean(&mut response, false, head.keep_upgrade);
    hop_by_hop_gone(original, &response, head.keep_upgrade);
    end_to_end_kept(original, &response);

    for v in original.values() {
        if acceptable_request_id(v) {
            let b = v.as_bytes();
            assert!(
                !b.is_empty()
                    && b.len() <= 128
                    && b.iter()
                        .all(|c| c.is_ascii_graphic() && !b",;\"\\".contains(c)),
                "request id {v:?} is not a short token"
            );
        }
    }
}

/// The one place this target uses `ForwardedFor` and `TrustedProxies`:
/// adapt it here when they change. With the `p` flag the peer is a trusted
/// proxy (as are 10.0.0.0/8 and fd00::/8), and heim reads the client's
/// `X-Forwarded-For` from the head as it came, before `clean`.
fn forwarded_for(came: &HeaderMap, headers: &mut HeaderMap, head: &Head, host: &HeaderValue) {
    let peer = head.peer.ip();
    let via = head.trusted_peer.then(|| {
        let nets = [
            "10.0.0.0/8".to_string(),
            "fd00::/8".to_string(),
            peer.to_string(),
        ];
        let nets = nets.iter().filter_map(|n| n.parse::<IpNet>().ok());
        let trusted = TrustedProxies::new(nets.collect());
        assert!(
            trusted.contains(peer),
            "{peer} is not in its own trusted list"
        );
        let via = trusted.forwarded(peer, came)?;
        chain_believed(came, &trusted, peer, &via);
        Some(via)
    });
    let via = via.flatten();
    ForwardedFor::new(head.peer, head.local_port, head.tls).apply(headers, host, via.as_ref());

    // Without a trusted proxy's word, what heim saw itself.
    let ip = peer.to_string();
    let own_proto = if head.tls { "https" } else { "http" };
    let own_port = head.local_port.to_string();
    let said = |v: &Option<HeaderValue>, or: &str| match v {
        Some(v) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        None => or.to_string(),
    };
    let (chain, client, proto, port) = match &via {
        None => (ip.clone(), ip, own_proto.to_string(), own_port),
        Some(f) => (
            String::from_utf8_lossy(f.chain.as_bytes()).into_owned(),
            f.client.to_string(),
            said(&f.proto, own_proto),
            said(&f.port, &own_port),
        ),
    };
    for (name, want) in [
        ("x-forwarded-for", chain.as_bytes()),
        ("x-real-ip", client.as_bytes()),
        ("x-forwarded-proto", proto.as_bytes()),
        ("x-forwarded-port", port.as_bytes()),
        ("x-forwarded-host", host.as_bytes()),
    ] {
        let got: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        assert_eq!(got, [want], "{name} after apply (peer {})", head.peer);
    }
}

/// What heim believes from a trusted peer: the chain it passes on runs
/// from the client to the peer, every hop after the client is a trusted
/// proxy, and the client is the peer or an address the head named.
fn chain_believed(came: &HeaderMap, trusted: &TrustedProxies, peer: IpAddr, via: &Forwarded) {
    let chain = via.chain.to_str().unwrap_or_default();
    let hops: Vec<IpAddr> = chain.split(", ").filter_map(|h| h.parse().ok()).collect();
    assert_eq!(
        hops.len(),
        chain.split(", ").count(),
        "chain {chain:?} holds a non-address"
    );
    assert_eq!(
        hops.first(),
        Some(&via.client),
        "chain {chain:?} does not start at the client"
    );
    assert!(
        hops.iter().skip(1).all(|h| trusted.contains(*h)),
        "chain {chain:?}: an untrusted hop after the client"
    );
    assert_eq!(
        hops.last(),
        Some(&unmapped(peer)),
        "chain {chain:?} does not end at the peer {peer}"
    );
    let named = came
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop_names(hop.trim(), via.client));
    assert!(
        via.client == unmapped(peer) || named,
        "client {} is neither the peer {peer} nor a hop the head named",
        via.client
    );
    if let Some(p) = &via.proto {
        assert!(p == "http" || p == "https", "believed scheme {p:?}");
    }
    if let Some(p) = &via.port {
        let port = p.to_str().ok().and_then(|p| p.parse::<u16>().ok());
        assert!(port.is_some(), "believed port {p:?}");
    }
}

/// True when an `X-Forwarded-For` hop (`ip`, `ip:port`, `[ip]:port`) is `ip`.
fn hop_names(hop: &str, ip: IpAddr) -> bool {
    let bare = hop.rsplit_once(':').map_or(hop, |(h, _)| h);
    [
        hop,
        bare,
        hop.trim_start_matches('[').split(']').next().unwrap_or(""),
    ]
    .iter()
    .filter_map(|h| h.parse::<IpAddr>().ok())
    .any(|h| unmapped(h) == ip)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, as heim compares peers.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn hop_by_hop_gone(original: &HeaderMap, cleaned: &HeaderMap, keep_upgrade: bool) {
    for name in HOP_BY_HOP {
        assert!(!cleaned.contains_key(name), "{name} crossed heim");
    }
    let relayed = keep_upgrade && original.contains_key("upgrade");
    let values =
        |name: &str| -> Vec<&[u8]> { cleaned.get_all(name).iter().map(|v| v.as_bytes()).collect() };
    if relayed {
        assert_eq!(values("connection"), [b"upgrade"], "relayed upgrade");
        let want = original.get("upgrade").map(|v| v.as_bytes());
        assert_eq!(values("upgrade").first().copied(), want, "relayed upgrade");
        assert_eq!(values("upgrade").len(), 1, "relayed upgrade");
    } else {
        assert!(
            !cleaned.contains_key("connection"),
            "connection crossed heim"
        );
        assert!(!cleaned.contains_key("upgrade"), "upgrade crossed heim");
    }
    if cleaned.contains_key("te") {
        assert_eq!(values("te"), [b"trailers"], "te other than trailers");
        assert!(
            original
                .get_all("te")
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")),
            "te: trailers out of nowhere"
        );
    }
    if original.contains_key("transfer-encoding") {
        assert!(
            !cleaned.contains_key("content-length"),
            "content-length beside transfer-encoding"
        );
    }
    for named in connection_names(original) {
        let exempt = match named.as_str() {
            "host" | "close" | "connection" | "te" => true,
            "upgrade" => relayed,
            _ => false,
        };
        if !exempt {
            assert!(
                !cleaned.contains_key(&named),
                "Connection names {named}, yet it stays"
            );
        }
    }
}

fn end_to_end_kept(original: &HeaderMap, cleaned: &HeaderMap) {
    let named = connection_names(original);
    for name in END_TO_END {
        if name != "host" && named.iter().any(|n| n == name) {
            continue;
        }
        let before: Vec<_> = original.get_all(name).iter().collect();
        let after: Vec<_> = cleaned.get_all(name).iter().collect();
        assert_eq!(before, after, "clean changed {name}");
    }
}

fn forged_gone(cleaned: &HeaderMap) {
    for name in cleaned.keys() {
        let n = name.as_str();
        assert!(
            !n.contains('_') && !n.starts_with("x-heim-") && !SPOOFABLE.contains(&n),
            "a client's {n} reached the backend"
        );
    }
}

/// The header names a message's `Connection` values list.
fn connection_names(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}
