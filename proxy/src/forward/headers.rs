//! Header rewriting between client and upstream.
//!
//! Hop-by-hop headers belong to one connection and are removed in both
//! directions (RFC 9110 §7.6.1), including every header the `Connection`
//! header names. Identity headers are heim's to set: whatever a client sends
//! under those names is removed before anything else, so a backend that
//! trusts them can never see a forged one. Header names with `_` are dropped
//! from requests (nginx's `underscores_in_headers off`): CGI-style servers
//! read `X_Heim_User` as `X-Heim-User`. `X-Forwarded-*` are set from what
//! heim saw, not appended to what the client claimed.

use std::net::SocketAddr;

use crate::trust::Forwarded;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TE, TRANSFER_ENCODING, UPGRADE,
};

/// What one header name is to heim.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Never crosses heim (RFC 9110 §7.6.1), besides those `Connection` names.
    HopByHop,
    /// Only heim may set it: identity, and forwarding or rewriting headers a
    /// client could forge. `x-heim-*` is a whole family, and so is every
    /// name with an underscore.
    Spoofable,
}

fn kind(name: &str) -> Kind {
    match name {
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "te"
        | "transfer-encoding"
        | "upgrade"
        | "proxy-authorization" => Kind::HopByHop,
        "forwarded"
        | "x-forwarded-user"
        | "x-forwarded-email"
        | "x-forwarded-groups"
        | "x-forwarded-preferred-username"
        | "x-auth-request-user"
        | "x-auth-request-email"
        | "x-auth-request-groups"
        | "x-auth-request-preferred-username"
        | "remote-user"
        | "x-remote-user"
        // Rewrite the path in some servers (IIS, Symfony): a route bypass.
        | "x-original-url"
        | "x-rewrite-url"
        | "x-original-uri"
        | "x-forwarded-uri"
        | "x-forwarded-prefix"
        | "x-forwarded-ssl"
        | "x-forwarded-scheme"
        | "x-scheme" => Kind::Spoofable,
        n if n.starts_with("x-heim-") || n.contains('_') => Kind::Spoofable,
        _ => Kind::Plain,
    }
}

/// True for headers that belong to one connection (never an identity
/// header's name).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    kind(name.as_str()) == Kind::HopByHop || name == http::header::HOST
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_HEIM_USER: HeaderName = HeaderName::from_static("x-heim-user");
pub static X_HEIM_EMAIL: HeaderName = HeaderName::from_static("x-heim-email");
pub static X_HEIM_GROUPS: HeaderName = HeaderName::from_static("x-heim-groups");
pub static X_HEIM_JWT: HeaderName = HeaderName::from_static("x-heim-jwt");

/// Removes hop-by-hop headers in either direction, and on requests
/// (`request`) the identity headers a client may have forged. Keeps
/// `Upgrade` and `Connection: upgrade` when heim relays an upgrade.
///
/// One pass over the names; the common request (nothing to remove) costs
/// no hashing and no allocation.
pub fn clean(headers: &mut HeaderMap, request: bool, keep_upgrade: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut connection_names_others = false;
    for name in headers.keys() {
        match kind(name.as_str()) {
            Kind::Plain => {}
            Kind::Spoofable if !request => {}
            // A message with both framings was read by Transfer-Encoding
            // (RFC 9112 §6.3); passing its Content-Length on would frame the
            // body differently on the next hop (a truncated or overlong body).
            Kind::HopByHop if name == TRANSFER_ENCODING => {
                doomed.push(name.clone());
                doomed.push(CONTENT_LENGTH);
            }
            Kind::HopByHop if name == CONNECTION => {
                connection_names_others =
                    headers.get_all(CONNECTION).iter().any(names_other_headers);
                doomed.push(name.clone());
            }
            _ => doomed.push(name.clone()),
        }
    }
    if doomed.is_empty() {
        return;
    }
    if connection_names_others {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            // `Connection: host` must not take the host away.
            .filter(|n| n != http::header::HOST)
            .collect();
        doomed.extend(named);
    }
    let upgrade = keep_upgrade
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    // `TE: trailers` is the one TE value allowed end to end (gRPC needs it).
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in doomed {
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

/// True when a `Connection` value names a header beyond the usual tokens.
fn names_other_headers(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            !(t.is_empty()
                || t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("upgrade"))
        })
    })
}

/// The `X-Forwarded-*` values that depend only on the connection, made
/// once per connection.
#[derive(Debug, Clone)]
pub struct ForwardedFor {
    ip: HeaderValue,
    port: HeaderValue,
    proto: HeaderValue,
}

impl ForwardedFor {
    pub fn new(remote: SocketAddr, local_port: u16, tls: bool) -> Self {
        Self {
            ip: HeaderValue::from_str(&remote.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            port: HeaderValue::from(local_port),
            proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }

    /// Sets the `X-Forwarded-*` family, replacing whatever the client
    /// claimed; `via` is what a trusted proxy in front said (see `trust`).
    pub fn apply(&self, headers: &mut HeaderMap, host: &HeaderValue, via: Option<&Forwarded>) {
        match via {
            None => {
                headers.insert(X_FORWARDED_FOR.clone(), self.ip.clone());
                headers.insert(X_REAL_IP.clone(), self.ip.clone());
                headers.insert(X_FORWARDED_PROTO.clone(), self.proto.clone());
            }
            Some(f) => {
                let client = HeaderValue::from_str(&f.client.to_string())
                    .unwrap_or_else(|_| self.ip.clone());
                headers.insert(X_FORWARDED_FOR.clone(), f.chain.clone());
                headers.insert(X_REAL_IP.clone(), client);
                let proto = f.proto.as_ref().unwrap_or(&self.proto);
                headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
            }
        }
        let port = via.and_then(|f| f.port.as_ref()).unwrap_or(&self.port);
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.insert(X_FORWARDED_PORT.clone(), port.clone());
    }
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
    fn plain_headers_stay() {
        let mut h = map(&[
            ("host", "a.test"),
            ("accept", "*/*"),
            ("connection", "keep-alive"),
        ]);
        clean(&mut h, true, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
        let mut h = map(&[("te", "trailers"), ("content-type", "application/grpc")]);
        clean(&mut h, true, false);
        assert_eq!(h["te"], "trailers");
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
        clean(&mut h, true, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
    }

    #[test]
    fn transfer_encoding_overrides_content_length() {
        for request in [true, false] {
            let mut h = map(&[
                ("content-length", "3"),
                ("transfer-encoding", "chunked"),
                ("content-type", "text/plain"),
            ]);
            clean(&mut h, request, false);
            let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, ["content-type"], "request: {request}");
        }
        let mut h = map(&[("content-length", "3")]);
        clean(&mut h, false, false);
        assert_eq!(h["content-length"], "3");
    }

    #[test]
    fn upgrade_survives_when_relayed() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        clean(&mut h, true, true);
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
            ("x_heim_user", "admin"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("x-auth-request-email", "a@b"),
            ("forwarded", "for=1.2.3.4"),
            ("x-heimdall", "kept"),
        ]);
        let mut response = h.clone();
        clean(&mut h, true, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-heimdall"]);
        // Upstreams may set heim-looking headers on responses.
        clean(&mut response, false, false);
        assert_eq!(response.len(), 10);
    }

    #[test]
    fn forwarded_headers_replace_client_claims() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ]);
        let fwd = ForwardedFor::new("[::1]:4000".parse().unwrap(), 443, true);
        fwd.apply(&mut h, &HeaderValue::from_static("a.test"), None);
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
