//! Header rewriting between client and upstream.
//!
//! Hop-by-hop headers belong to one connection and are removed in both
//! directions (RFC 9110 §7.6.1), including every header the `Connection`
//! header names. Identity headers are heim's to set: whatever a client sends
//! under those names is removed before anything else, so a backend that
//! trusts them can never see a forged one. `X-Forwarded-*` are set from
//! what heim saw, not appended to what the client claimed.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, UPGRADE};

/// Headers that never cross heim (besides those `Connection` names).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Headers only heim may set: identity, and the forwarding headers a client
/// could forge. Prefix `x-heim-` is matched as a whole family.
const SPOOFABLE: [&str; 9] = [
    "forwarded",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers; keeps `Upgrade`/`Connection: upgrade` when
/// the request is an upgrade heim relays.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if let Some(conn) = headers.get(CONNECTION) {
        // Fast path: the common values name no other header.
        let named = conn
            .to_str()
            .map(|v| {
                v.split(',').any(|t| {
                    !matches!(
                        t.trim().to_ascii_lowercase().as_str(),
                        "keep-alive" | "close" | "upgrade" | ""
                    )
                })
            })
            .unwrap_or(false);
        if named {
            let names: Vec<HeaderName> = headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                // `Connection: host` must not take the host away.
                .filter(|n| n != http::header::HOST)
                .collect();
            for n in names {
                headers.remove(n);
            }
        }
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    // `TE: trailers` is the one TE value allowed end to end (gRPC needs it).
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(UPGRADE, u);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes identity headers a client may have sent.
pub fn strip_spoofable(headers: &mut HeaderMap) {
    for name in SPOOFABLE {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("x-heim-")) {
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-heim-"))
            .cloned()
            .collect();
        for n in forged {
            headers.remove(n);
        }
    }
}

/// Sets the `X-Forwarded-*` family from what heim saw of the connection.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    remote: SocketAddr,
    tls: bool,
    host: &HeaderValue,
    port: u16,
) {
    let ip = ip_value(remote);
    headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
    headers.insert(X_REAL_IP.clone(), ip);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
}

fn ip_value(remote: SocketAddr) -> HeaderValue {
    let mut buf = [0u8; 48];
    let len = {
        use std::io::Write;
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(cur, "{}", remote.ip());
        cur.position() as usize
    };
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A client's `X-Request-Id` is kept when it is a sane token (ingress-nginx
/// does the same), so a trace can start before heim.
pub fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("host", "a.test"),
            ("connection", "keep-alive, x-secret, host"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
    }

    #[test]
    fn upgrade_survives_when_relayed() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn forged_identity_is_removed() {
        let mut h = map(&[
            ("x-heim-user", "admin"),
            ("X-Heim-Email", "root@example.com"),
            ("x-heim-jwt", "eyJ"),
            ("x-forwarded-user", "admin"),
            ("x-auth-request-email", "a@b"),
            ("forwarded", "for=1.2.3.4"),
            ("x-heimdall", "kept"),
        ]);
        strip_spoofable(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-heimdall"]);
    }

    #[test]
    fn forwarded_headers_replace_client_claims() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ]);
        set_forwarded(
            &mut h,
            "[::1]:4000".parse().unwrap(),
            true,
            &HeaderValue::from_static("a.test"),
            443,
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.test");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-real-ip"], "::1");
    }

    #[test]
    fn request_ids() {
        assert!(acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
    }
}
