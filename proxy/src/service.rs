//! The request's way through heim, as named phases in order:
//!
//! 1. **parse** — host and path, normalised; malformed -> 400.
//! 2. **route** — the current `RouteTable`; no match -> 404.
//! 3. **redirect** — plain-HTTP requests for https routes -> 308.
//! 4. **authorize** — the route's policy; deny by default -> 403.
//! 5. **limit** — the route's body size -> 413.
//! 6. **rewrite** — hop-by-hop and forged identity headers out,
//!    `X-Forwarded-*` and `X-Request-Id` in.
//! 7. **backend** — `echo`, or `forward` to an upstream.
//! 8. **log** — metrics and the access log line, once, at the end.
//!
//! Sign-in will slot in between 2 and 4 as an `authenticate` phase.

use std::borrow::Cow;
use std::cell::Cell;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, COOKIE, HOST, LOCATION, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::body::{ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::forward::headers::{self, X_REQUEST_ID};
use crate::metrics::ClientErrorKind;
use crate::route::{normalize_host, normalize_path, routing_path, Backend, Policy, Route};
use crate::state::Shared;
use crate::trust::{Forwarded, TrustedProxies};
use crate::upstream::UpstreamProtocol;

/// What heim knows about the client connection a request came on.
#[derive(Debug)]
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    /// The client: the TCP peer, or what a trusted balancer's PROXY
    /// protocol header said.
    pub remote: SocketAddr,
    pub tls: Option<TlsInfo>,
    /// Made once per connection, applied to every request.
    pub forwarded: headers::ForwardedFor,
    /// `Some` when `remote` is a trusted proxy, whose `X-Forwarded-For` is
    /// believed.
    pub trusted_peer: Option<TrustedProxies>,
    /// Requests started on this connection, those not answered yet (HTTP/2
    /// closes connections that stay idle), and those the client gave up
    /// on before their answer (HTTP/2 resets).
    pub requests_started: Cell<u64>,
    pub requests_in_flight: Cell<u32>,
    pub requests_cancelled: Cell<u64>,
    /// How the connection should end, set by its requests, acted on by
    /// `listen` when `close_signal` fires.
    pub closing: Cell<Closing>,
    pub close_signal: tokio::sync::Notify,
}

/// How a client connection should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closing {
    /// It may go on.
    No,
    /// After the requests in flight (HTTP/2 GOAWAY `NO_ERROR`): it made
    /// `keepalive_requests` requests.
    Graceful,
    /// At once, with GOAWAY `ENHANCE_YOUR_CALM`: it reset too many of the
    /// streams heim had accepted (rapid reset).
    Calm,
}

/// Streams an HTTP/2 client may reset after heim accepted them before its
/// connection is cut, if they are also more than half its streams. A
/// browser cancels a stream now and then; a rapid-reset flood cancels
/// nearly all of them, each having cost an upstream request.
const RESETS_ALLOWED: u64 = 100;

impl ConnCtx {
    /// `local` is the address the client connected to (its port goes into
    /// `X-Forwarded-Port`).
    pub fn new(
        shared: Arc<Shared>,
        remote: SocketAddr,
        local: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> Self {
        let forwarded = headers::ForwardedFor::new(remote, local.port(), tls.is_some());
        let trusted_peer = {
            let proxies = &shared.settings.load().trusted_proxies;
            proxies.contains(remote.ip()).then(|| proxies.clone())
        };
        Self {
            shared,
            remote,
            tls,
            forwarded,
            trusted_peer,
            requests_started: Cell::new(0),
            requests_in_flight: Cell::new(0),
            requests_cancelled: Cell::new(0),
            closing: Cell::new(Closing::No),
            close_signal: tokio::sync::Notify::new(),
        }
    }

    fn http2(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.alpn == Some("h2"))
    }

    /// Asks `listen` to end the connection (the stronger wish wins).
    fn close(&self, how: Closing) {
        if how > self.closing.get() {
            self.closing.set(how);
            self.close_signal.notify_one();
        }
    }
}

/// Counts a request in flight on its connection until it is answered, or
/// dropped unanswered (the client went away, or reset its HTTP/2 stream).
struct InFlight<'a> {
    conn: &'a ConnCtx,
    answered: bool,
}

impl<'a> InFlight<'a> {
    fn new(conn: &'a ConnCtx) -> Self {
        conn.requests_started.set(conn.requests_started.get() + 1);
        conn.requests_in_flight
            .set(conn.requests_in_flight.get() + 1);
        Self {
            conn,
            answered: false,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let conn = self.conn;
        conn.requests_in_flight
            .set(conn.requests_in_flight.get().saturating_sub(1));
        if !self.answered && conn.http2() {
            let cancelled = conn.requests_cancelled.get() + 1;
            conn.requests_cancelled.set(cancelled);
            conn.shared
                .metrics
                .client_error(ClientErrorKind::StreamReset);
            if cancelled > RESETS_ALLOWED && cancelled * 2 > conn.requests_started.get() {
                conn.close(Closing::Calm);
            }
        }
    }
}

/// The TLS session of a connection.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub sni: Option<String>,
    pub alpn: Option<&'static str>,
    pub version: &'static str,
}

/// What the phases found out, for metrics and the access log.
struct Outcome {
    /// The client's address: the peer's, or the one a trusted proxy named.
    client: IpAddr,
    route: Option<Arc<Route>>,
    upstream: Option<usize>,
    request_id: HeaderValue,
    /// Why heim answered itself, if it did.
    error: Option<ProxyError>,
}

/// hyper's entry point: one request, one response, never an error.
pub async fn handle(
    req: Request<Incoming>,
    conn: Rc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let mut in_flight = InFlight::new(&conn);
    let (access_log, body_timeout, keepalive_requests) = {
        let s = conn.shared.settings.load();
        (s.access_log, s.request_head_timeout, s.keepalive_requests)
    };
    // The connection's last request (nginx's `keepalive_requests`): HTTP/2
    // says so with a GOAWAY at once, HTTP/1 on this response.
    let last = conn.requests_started.get() >= keepalive_requests;
    if last && conn.http2() {
        conn.close(Closing::Graceful);
    }
    let logged = access_log.then(|| {
        (
            req.method().clone(),
            req.uri().path().to_owned(),
            req.version(),
        )
    });
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if headers::acceptable_request_id(v) => v.clone(),
        _ => new_request_id(),
    };
    let mut outcome = Outcome {
        client: conn.remote.ip(),
        route: None,
        upstream: None,
        request_id,
        error: None,
    };
    let mut resp = match serve(req, &conn, body_timeout, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            outcome.error = Some(e);
            if let Some(kind) = e.client_error() {
                conn.shared.metrics.client_error(kind);
            }
            e.response()
        }
    };

    in_flight.answered = true;
    if last && !conn.http2() {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }

    // === log ===
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    let metrics = match &outcome.route {
        Some(r) => &r.metrics,
        None => &conn.shared.metrics.unrouted,
    };
    metrics.record(status, elapsed);
    if let Some((method, path, version)) = logged {
        let upstream = match (&outcome.route, outcome.upstream) {
            (Some(r), Some(i)) => match &r.spec.backend {
                Backend::Upstream(g) => g.endpoints.get(i).map(|e| e.display.as_str()),
                Backend::Echo => None,
            },
            _ => None,
        };
        tracing::info!(
            target: "heim::access",
            method = %method,
            path = %path,
            version = ?version,
            status,
            duration_us = elapsed.as_micros() as u64,
            route = outcome.route.as_ref().map(|r| r.spec.name.as_str()),
            upstream,
            error = outcome.error.map(tracing::field::display),
            remote = %outcome.client,
            request_id = outcome.request_id.to_str().unwrap_or(""),
            "request"
        );
    }
    Ok(resp)
}

async fn serve(
    mut req: Request<Incoming>,
    conn: &ConnCtx,
    body_timeout: Duration,
    out: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    // === parse ===
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let host_value = request_host(&req)?;
    let host_str = host_value
        .to_str()
        .map_err(|_| ProxyError::BadRequest("invalid Host"))?;
    let host = normalize_host(host_str).ok_or(ProxyError::BadRequest("invalid Host"))?;
    // A trusted proxy's word on the client (and its scheme), else the peer.
    let forwarded: Option<Forwarded> = conn
        .trusted_peer
        .as_ref()
        .and_then(|t| t.forwarded(conn.remote.ip(), req.headers()));
    if let Some(f) = &forwarded {
        out.client = f.client;
    }
    let secure = conn.tls.is_some()
        || forwarded
            .as_ref()
            .is_some_and(|f| f.proto.as_ref().is_some_and(|p| p == "https"));
    // Owned only when normalising changed the path.
    let new_path =
        match normalize_path(req.uri().path()).ok_or(ProxyError::BadRequest("invalid path"))? {
            Cow::Borrowed(_) => None,
            Cow::Owned(p) => Some(p),
        };

    // === route ===
    let route = {
        let table = conn.shared.routes.load();
        let path = new_path.as_deref().unwrap_or(req.uri().path());
        let path = routing_path(path).ok_or(ProxyError::BadRequest("invalid path"))?;
        let route = table.lookup(&host, &path).cloned();
        // === redirect ===
        // Plain HTTP: routes that allow it are served; everything else is
        // redirected, but only for hosts heim names (a rule or a
        // certificate), never to any Host a client makes up.
        if !secure && route.as_ref().is_none_or(|r| r.spec.https_redirect) {
            if table.names_host(&host) || conn.shared.certs.load().covers(&host) {
                return Ok(redirect_to_https(&host, &req, conn));
            }
            return Err(ProxyError::NoRoute);
        }
        route.ok_or(ProxyError::NoRoute)?
    };
    out.route = Some(route.clone());

    // === authorize ===
    if route.spec.policy != Policy::Public {
        return Err(ProxyError::Forbidden);
    }

    // === limit ===
    if let (Some(max), Some(len)) = (route.spec.max_body_bytes, content_length(&req)) {
        if len > max {
            return Err(ProxyError::BodyTooLarge);
        }
    }

    // === rewrite ===
    // Only WebSocket is relayed: any other `Upgrade` (h2c among them) is
    // dropped as the hop-by-hop header it is, so a client can never talk to
    // a backend around heim.
    let upgrade = req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_upgrade(&req);
    let protocol = match &route.spec.backend {
        // Upgrades always speak HTTP/1.1 to the upstream.
        Backend::Upstream(g) if !upgrade => g.protocol,
        _ => UpstreamProtocol::Http1,
    };
    if req.version() == Version::HTTP_2 && protocol == UpstreamProtocol::Http1 {
        join_cookies(req.headers_mut());
    }
    set_upstream_uri(&mut req, new_path.as_deref(), &host_value, protocol)?;
    {
        let h = req.headers_mut();
        headers::clean(h, true, upgrade);
        conn.forwarded.apply(h, &host_value, forwarded.as_ref());
        h.insert(X_REQUEST_ID.clone(), out.request_id.clone());
        match protocol {
            UpstreamProtocol::Http1 => {
                h.insert(HOST, host_value.clone());
            }
            UpstreamProtocol::H2c => {
                h.remove(HOST);
            }
        }
    }

    // === backend ===
    let group = match &route.spec.backend {
        Backend::Echo => {
            return Ok(crate::echo::respond(
                &req,
                conn,
                &route.spec.name,
                &host,
                &out.request_id,
                out.client,
            ))
        }
        Backend::Upstream(g) => g,
    };
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, sent) = UpstreamBody::new(body, route.spec.max_body_bytes, body_timeout);
    let request = Request::from_parts(parts, body);
    let (mut resp, endpoint) = match on_upgrade {
        Some(on_upgrade) => {
            crate::forward::forward_upgrade(request, on_upgrade, group, &conn.shared).await?
        }
        None => {
            let out = crate::forward::Outgoing { request, sent };
            crate::forward::forward(out, group, &conn.shared.metrics).await?
        }
    };
    out.upstream = Some(endpoint);
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade {
        // A 101 nobody asked for would leave the client in limbo.
        return Err(ProxyError::UpstreamProtocol);
    }
    headers::clean(resp.headers_mut(), false, switching);
    Ok(resp)
}

/// The host a request is for: the URI's authority (HTTP/2's `:authority`,
/// or an absolute-form target), else the `Host` header. More than one
/// `Host`, or a `Host` that disagrees with the authority, is refused (RFC
/// 9112 §3.2, RFC 9113 §8.3.1): heim never guesses which one a backend
/// would believe.
fn request_host(req: &Request<Incoming>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    match (req.uri().authority(), host) {
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => Err(
            ProxyError::BadRequest("Host disagrees with the request's authority"),
        ),
        (Some(a), _) => {
            HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest("invalid Host"))
        }
        (None, Some(h)) => Ok(h.clone()),
        (None, None) => Err(ProxyError::BadRequest("missing Host")),
    }
}

fn connection_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// HTTP/2 clients may split `Cookie` into several fields; HTTP/1.1 servers
/// expect one (RFC 9113 §8.2.3), joined with `; `.
fn join_cookies(headers: &mut http::HeaderMap) {
    if headers.get_all(COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Points the request at the upstream: origin-form for HTTP/1 (the
/// normalised path, the query untouched), absolute-form for h2c.
fn set_upstream_uri(
    req: &mut Request<Incoming>,
    new_path: Option<&str>,
    host: &HeaderValue,
    protocol: UpstreamProtocol,
) -> Result<(), ProxyError> {
    let bad = |_| ProxyError::BadRequest("invalid request target");
    let needs_rebuild =
        new_path.is_some() || req.uri().scheme().is_some() || protocol == UpstreamProtocol::H2c;
    if needs_rebuild {
        let pq: PathAndQuery = match (new_path, req.uri().query()) {
            (None, _) => req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            (Some(p), None) => p.parse().map_err(bad)?,
            (Some(p), Some(q)) => format!("{p}?{q}").parse().map_err(bad)?,
        };
        *req.uri_mut() = match protocol {
            UpstreamProtocol::Http1 => Uri::from(pq),
            UpstreamProtocol::H2c => Uri::builder()
                .scheme("http")
                .authority(host.as_bytes())
                .path_and_query(pq)
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?,
        };
    }
    *req.version_mut() = match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    Ok(())
}

/// `308` to the same host, path and query over https. Only hosts heim has
/// routes for get here, so this is never an open redirect.
fn redirect_to_https(host: &str, req: &Request<Incoming>, conn: &ConnCtx) -> Response<ProxyBody> {
    let port = conn.shared.settings.load().https_port;
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = Response::new(ProxyBody::local(""));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

thread_local! {
    static REQUEST_IDS: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((
        std::collections::hash_map::RandomState::new().build_hasher().finish(),
        0,
    ));
}

/// A new request id: a random per-worker prefix and a counter, 32 hex digits.
fn new_request_id() -> HeaderValue {
    let (prefix, n) = REQUEST_IDS.with(|c| {
        let (p, n) = c.get();
        c.set((p, n.wrapping_add(1)));
        (p, n)
    });
    let mut buf = [0u8; 32];
    let digits = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        let v = if i < 16 {
            prefix >> ((15 - i) * 4)
        } else {
            n >> ((31 - i) * 4)
        };
        *b = digits[(v & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
