//! The request's way through heim, as named phases in order, each a plain
//! function that `serve` calls (so each can be tested without a socket):
//!
//! 1. [`parse`] — host and path, normalised, and who the client is;
//!    malformed -> 400.
//!    Then **ACME HTTP-01**: plain HTTP `/.well-known/acme-challenge/TOKEN`
//!    for a token heim's ACME client is being validated for -> 200.
//! 2. [`route`] — the current `RouteTable`; no match -> 404; plain-HTTP
//!    requests for https routes -> 308 (**redirect**).
//! 3. [`authorize`] — the route's policy; deny by default -> 403.
//! 4. [`limit`] — the route's body size -> 413.
//! 5. [`rewrite`] — hop-by-hop and forged identity headers out,
//!    `X-Forwarded-*` and `X-Request-Id` in.
//! 6. **backend** — `echo`, or `forward` to an upstream.
//! 7. **log** — metrics and the access log line, once, at the end
//!    ([`handle`]).
//!
//! Sign-in slots in as a `/.heim/` phase before `route` and an
//! `authenticate` phase between `route` and `authorize`.

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
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::auth::policy::Session;
use crate::auth::Auth;
use crate::body::{ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::forward::headers::{self, X_REQUEST_ID};
use crate::metrics::ClientErrorKind;
use crate::route::{
    host_and_port, normalize_host, normalize_path, routing_path, Backend, IdentityField, Policy,
    Route,
};
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
    /// What is left of the reset budget, and when it was last topped up.
    resets_left: Cell<(f64, Instant)>,
    /// Set once the connection is over: requests dropped then were not
    /// given up on by the client.
    pub ended: Cell<bool>,
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

/// Streams an HTTP/2 client may reset after heim accepted them, at once
/// (the budget), and then per second (its refill) before its connection is
/// cut. A browser cancels a stream now and then; a rapid-reset flood
/// cancels thousands a second, each having cost an upstream request.
/// Answered requests do not refill it, so it cannot be paid in advance.
const RESET_BUDGET: f64 = 100.0;
const RESETS_PER_SECOND: f64 = 10.0;

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
            resets_left: Cell::new((RESET_BUDGET, Instant::now())),
            ended: Cell::new(false),
        }
    }

    /// Counts a stream the client reset after heim accepted it; cuts the
    /// connection once the budget is spent.
    fn count_reset(&self) {
        self.requests_cancelled
            .set(self.requests_cancelled.get() + 1);
        self.shared
            .metrics
            .client_error(ClientErrorKind::StreamReset);
        let (left, since) = self.resets_left.get();
        let now = Instant::now();
        let refill = now.duration_since(since).as_secs_f64() * RESETS_PER_SECOND;
        let left = (left + refill).min(RESET_BUDGET) - 1.0;
        self.resets_left.set((left, now));
        if left < 0.0 {
            self.close(Closing::Calm);
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
        if !self.answered && conn.http2() && !conn.ended.get() {
            conn.count_reset();
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
    /// The client's slot under the route's `limit-connections`, held until
    /// the response head is out.
    slot: Option<crate::limit::ConnGuard>,
    /// The request went to the route's canary backend.
    canary: bool,
    /// The client's request target, kept for a route's error pages
    /// (`X-Original-URI`) before `rewrite` changes it.
    original_uri: Option<Uri>,
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
        slot: None,
        canary: false,
        original_uri: None,
    };
    // For CORS, which answers every response of its routes (heim's own too).
    let mut origins = HeaderMap::new();
    for o in req.headers().get_all(http::header::ORIGIN) {
        origins.append(http::header::ORIGIN, o.clone());
    }
    let mut resp = match serve(req, &conn, body_timeout, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(kind) = e.client_error() {
                conn.shared.metrics.client_error(kind);
            }
            let resp = e.response();
            outcome.error = Some(e);
            resp
        }
    };

    in_flight.answered = true;
    outcome.slot = None;
    if let Some(route) = &outcome.route {
        if let Some(cors) = &route.spec.cors {
            cors.apply(&origins, resp.headers_mut());
        }
        crate::forward::edits::apply(
            &route.spec.response_headers,
            resp.status(),
            resp.headers_mut(),
        );
    }
    // Not on a 101: its `Connection: upgrade` must stay (RFC 6455 §4.1),
    // and the connection is the WebSocket's from then on.
    if last && !conn.http2() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
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
            (Some(r), Some(i)) => if outcome.canary {
                &r.canary
            } else {
                &r.upstream
            }
            .as_ref()
            .and_then(|g| g.endpoints.get(i))
            .map(|e| e.display.as_str()),
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
            error = outcome.error.as_ref().map(tracing::field::display),
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
    let parsed = parse(&req, conn)?;
    if let Some(f) = &parsed.forwarded {
        out.client = f.client;
    }
    // === ACME HTTP-01 === heim's own tokens, before any redirect or route.
    if !parsed.secure {
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PATH) {
            if let Some(answer) = conn.shared.acme_challenges.http01(token) {
                let mut resp = Response::new(ProxyBody::local(answer));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Ok(resp);
            }
        }
    }
    if parsed.secure && req.method() == Method::GET && req.uri().path() == crate::tunnel::ENDED_PATH
    {
        return Ok(crate::tunnel::ended(&req, &conn.shared));
    }
    if parsed.secure && req.uri().path() == heim_tunnel_wire::CONNECT_PATH {
        return crate::tunnel::agents::accept(req, conn.remote, &conn.shared);
    }
    let auth = conn.shared.auth.load_full();
    // === heim endpoints === `/.heim/*`, over https, before any route.
    if parsed.secure && is_heim_path(&req, &parsed) {
        let Some(auth) = &auth else {
            return Err(ProxyError::NoRoute);
        };
        if let Some(answer) = crate::auth::endpoints::serve(req, &parsed, conn, auth).await {
            return answer;
        }
        return Err(ProxyError::NoRoute);
    }
    let route = match route(&req, &parsed, conn)? {
        Routed::To(route) => route,
        Routed::Redirect(location) => return Ok(redirect(location)),
    };
    out.route = Some(route.clone());
    // === CORS === a preflight from an allowed origin is answered here, as
    // nginx answers it in its rewrite phase (before the location's own
    // `return`), before any access check.
    if let Some(cors) = &route.spec.cors {
        if let Some(answer) = cors.preflight(req.method(), req.headers()) {
            return Ok(answer.map(|()| ProxyBody::local("")));
        }
    }
    // === redirect === a route's own (ingress-nginx's `return`): before
    // sign-in and policy, as in nginx's rewrite phase.
    if let Some(r) = &route.spec.redirect {
        let path = parsed.new_path.as_deref().unwrap_or(req.uri().path());
        if !r.root_only || path == "/" {
            let to = expand_redirect(&r.to, &req, &parsed);
            let to = HeaderValue::from_str(&to)
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
            let mut resp = redirect(to);
            *resp.status_mut() =
                StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return Ok(resp);
        }
    }
    // === limit === the route's request rates and requests in flight per
    // client (nginx's preaccess phase: before address blocks and auth).
    if let Some(limiter) = &route.limiter {
        match limiter.admit(out.client, Instant::now()) {
            Ok(slot) => out.slot = slot,
            Err(over) => return Err(ProxyError::Limited(over.label())),
        }
    }
    // === source === the route's address blocks (the client as a trusted
    // proxy gives it, else the peer); a denied block wins.
    if route
        .spec
        .denied_ranges
        .iter()
        .any(|n| n.contains(out.client))
    {
        return Err(ProxyError::Forbidden);
    }
    if !route.spec.source_ranges.is_empty()
        && !route
            .spec
            .source_ranges
            .iter()
            .any(|n| n.contains(out.client))
    {
        return Err(ProxyError::Forbidden);
    }
    // === oauth2-proxy's paths === on a host heim's sign-in took over,
    // over https only, after the address blocks.
    if route.spec.backend == Backend::OAuth2Paths {
        let (Some(auth), true) = (&auth, parsed.secure) else {
            return Err(ProxyError::NoRoute);
        };
        let session = auth.session(req.headers(), &conn.shared.auth_state, &parsed.host);
        let rules = match &route.spec.policy {
            Policy::Allow(rules) => Some(rules.as_ref()),
            _ => None,
        };
        let port = conn.shared.https_port();
        return crate::auth::oauth2_paths::answer(
            &req,
            &parsed.host,
            &crate::auth::endpoints::origin(&parsed.host, port),
            &crate::auth::endpoints::origin(&auth.auth_host, port),
            session.as_ref(),
            rules,
        );
    }
    // === basic auth === and === auth service === ingress-nginx's
    // `auth-type: basic` and `auth-url`, after the address blocks.
    if let Some(basic) = &route.spec.basic_auth {
        check_basic(req.headers(), basic).await?;
    }
    let external = match &route.spec.external_auth {
        Some(ext) => {
            Some(ask_auth_service(ext, &req, &parsed, &route, auth.as_deref(), out).await?)
        }
        None => None,
    };
    let session = authenticate(&req, &parsed.host, &route, auth.as_deref(), conn);
    authorize(
        &req,
        &parsed,
        &route,
        session.as_ref(),
        auth.as_deref(),
        conn,
    )?;
    // === tunnel === `CONNECT` is for tunnel routes, and they take nothing else.
    match (
        route.spec.backend.is_tunnel(),
        req.method() == Method::CONNECT,
    ) {
        (true, true) => {
            let reauth = crate::auth::Reauth {
                shared: conn.shared.clone(),
                session,
                host: parsed.host.clone(),
                path: "/".to_owned(),
            };
            return crate::tunnel::connect(req, &route.spec.backend, &conn.shared, reauth).await;
        }
        (true, false) | (false, true) => return Err(ProxyError::MethodNotAllowed),
        (false, false) => {}
    }
    limit(&req, &route)?;
    // ingress-nginx's `rewrite-target`: a new path, or a 302.
    let rewritten = match &route.spec.rewrite {
        None => None,
        Some(rw) => {
            let path = parsed.new_path.as_deref().unwrap_or(req.uri().path());
            let path = routing_path(path).ok_or(ProxyError::BadRequest("invalid path"))?;
            match rw.apply(&path, req.uri().query()) {
                Some(crate::route::Rewritten::Redirect(to)) => {
                    let to = HeaderValue::from_str(&to)
                        .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
                    let mut resp = redirect(to);
                    *resp.status_mut() = StatusCode::FOUND;
                    return Ok(resp);
                }
                Some(crate::route::Rewritten::Path(pq)) => Some(pq),
                None => None,
            }
        }
    };
    let parsed = Parsed {
        rewritten,
        ..parsed
    };
    if route.spec.error_backend.is_some() {
        out.original_uri = Some(req.uri().clone());
    }
    // The canary is chosen by what the client sent (nginx's `$http_*`),
    // before heim's rewrite or an auth service's headers.
    out.canary = route
        .spec
        .canary
        .as_ref()
        .is_some_and(|c| c.chooses(req.headers()));
    let upgrade = rewrite(&mut req, &parsed, &route, conn, &out.request_id)?;
    if route.spec.basic_auth.is_some() {
        req.headers_mut().remove(http::header::AUTHORIZATION);
    }
    for (name, value) in &route.spec.request_headers {
        match value {
            Some(v) => req.headers_mut().insert(name.clone(), v.clone()),
            None => req.headers_mut().remove(name),
        };
    }
    let mut auth_cookies = Vec::new();
    if let Some(crate::auth::external::AuthVerdict::Allow {
        set_headers,
        set_cookies,
    }) = external
    {
        crate::auth::external::apply_upstream_headers(&set_headers, req.headers_mut());
        auth_cookies = set_cookies;
    }
    if let Some(auth) = &auth {
        auth.strip_credentials(req.headers_mut());
        if let Some(s) = &session {
            identify(&mut req, &parsed, &route, s, auth, conn);
        }
    }
    let mut resp = backend(
        req,
        &parsed,
        &route,
        upgrade,
        conn,
        body_timeout,
        session.as_ref(),
        out,
    )
    .await?;
    // The auth service's cookies, on the statuses nginx adds them to.
    if let Some(ext) = &route.spec.external_auth {
        if ext.passes_cookies(resp.status()) {
            for c in auth_cookies {
                resp.headers_mut().append(http::header::SET_COOKIE, c);
            }
        }
    }
    Ok(resp)
}

/// ingress-nginx's `custom-http-errors`: the error backend's answer to a
/// GET (a HEAD stays one) of `/`, told what happened in the headers
/// ingress-nginx's default backends read (`X-Original-URI` is the
/// client's request target).
async fn custom_error(
    eb: &crate::route::ErrorBackend,
    errors: &crate::upstream::UpstreamGroup,
    (head, uri, host, accept): (bool, Uri, Option<HeaderValue>, Option<HeaderValue>),
    status: StatusCode,
    request_id: &HeaderValue,
    conn: &ConnCtx,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut req = Request::new(());
    *req.method_mut() = if head { Method::HEAD } else { Method::GET };
    let original = uri
        .path_and_query()
        .and_then(|p| HeaderValue::from_str(p.as_str()).ok());
    // As ingress-nginx's error location (`rewrite (.*) / break`).
    *req.uri_mut() = Uri::from_static("/");
    let h = req.headers_mut();
    if let Some(host) = host {
        h.insert(HOST, host);
    }
    let text = |v: &str| HeaderValue::from_str(v).ok();
    let pairs = [
        ("x-code", text(status.as_str())),
        ("x-format", accept.or_else(|| text("text/html"))),
        ("x-original-uri", original),
        ("x-namespace", text(&eb.namespace)),
        ("x-ingress-name", text(&eb.ingress)),
        ("x-service-name", text(&eb.service)),
        ("x-service-port", text(&eb.port)),
        ("x-request-id", Some(request_id.clone())),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            h.insert(http::HeaderName::from_static(name), v);
        }
    }
    let (body, sent) = UpstreamBody::buffered(bytes::Bytes::new());
    let (parts, ()) = req.into_parts();
    let out = crate::forward::Outgoing {
        request: Request::from_parts(parts, body),
        sent,
    };
    let (resp, _) = crate::forward::forward(out, errors, &conn.shared.metrics).await?;
    Ok(resp)
}

/// ingress-nginx's basic auth: a user of the Secret with the right
/// password passes, and its `Authorization` goes no further; anyone else
/// gets 401 with the realm's challenge; a missing Secret, 503. A hash
/// (bcrypt, SHA-crypt) costs milliseconds: it is checked on the blocking
/// pool, never on the connection's thread.
async fn check_basic(
    headers: &HeaderMap,
    basic: &Arc<crate::route::BasicAuth>,
) -> Result<(), ProxyError> {
    if basic.users.is_none() {
        return Err(ProxyError::AuthAnswer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers: Vec::new(),
        });
    }
    let credentials = headers
        .get(http::header::AUTHORIZATION)
        .and_then(crate::auth::htpasswd::basic_credentials);
    let admitted = match credentials {
        None => false,
        Some((user, password)) => {
            // A few hashes at a time: a flood of guesses waits here instead
            // of filling the blocking pool that DNS lookups also need.
            static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
            let _turn = HASHING.acquire().await;
            let basic = Arc::clone(basic);
            tokio::task::spawn_blocking(move || {
                basic
                    .users
                    .as_ref()
                    .is_some_and(|u| u.verify(&user, &password))
            })
            .await
            .unwrap_or(false)
        }
    };
    if admitted {
        return Ok(());
    }
    Err(ProxyError::AuthAnswer {
        status: StatusCode::UNAUTHORIZED,
        headers: vec![(
            http::header::WWW_AUTHENTICATE,
            crate::auth::htpasswd::challenge(&basic.realm),
        )],
    })
}

/// ingress-nginx's `auth-url`: the auth service's verdict on this request.
/// `Allow` goes on (its headers and cookies applied later); every other
/// verdict is the answer, with the service's cookies.
async fn ask_auth_service(
    ext: &crate::auth::external::ExternalAuth,
    req: &Request<Incoming>,
    parsed: &Parsed,
    route: &Route,
    auth: Option<&crate::auth::Auth>,
    out: &Outcome,
) -> Result<crate::auth::external::AuthVerdict, ProxyError> {
    use crate::auth::external::{AuthContext, AuthVerdict};
    let expand = |t: &str| expand_redirect(t, req, parsed);
    // The client's headers go to the auth service, but never heim's own
    // session cookie or CLI token: those are for heim alone.
    let mut probe = Request::new(());
    *probe.method_mut() = req.method().clone();
    *probe.uri_mut() = req.uri().clone();
    *probe.version_mut() = req.version();
    *probe.headers_mut() = req.headers().clone();
    if let Some(auth) = auth {
        auth.strip_credentials(probe.headers_mut());
    }
    let req = &probe;
    let ctx = AuthContext {
        route: &route.spec.name,
        client: out.client,
        https: parsed.secure,
        request_id: &out.request_id,
        expand: &expand,
    };
    let verdict = ext.check(req, &ctx).await;
    let status = verdict.status();
    let mut headers: Vec<(http::HeaderName, HeaderValue)> = Vec::new();
    match &verdict {
        AuthVerdict::Allow { .. } => return Ok(verdict),
        AuthVerdict::SignIn { location, .. } => {
            headers.push((LOCATION, location.clone()));
        }
        AuthVerdict::Unauthorized {
            www_authenticate, ..
        } => {
            headers.extend(
                www_authenticate
                    .iter()
                    .map(|v| (http::header::WWW_AUTHENTICATE, v.clone())),
            );
        }
        AuthVerdict::Forbidden { .. } | AuthVerdict::Error { .. } => {}
    }
    headers.extend(
        verdict
            .set_cookies()
            .iter()
            .map(|c| (http::header::SET_COOKIE, c.clone())),
    );
    Err(ProxyError::AuthAnswer { status, headers })
}

/// Where ACME HTTP-01 tokens are fetched (RFC 8555 §8.3).
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// True for heim's own pages, `/.heim/...` (by the normalised path).
fn is_heim_path<B>(req: &Request<B>, parsed: &Parsed) -> bool {
    parsed
        .new_path
        .as_deref()
        .unwrap_or(req.uri().path())
        .starts_with("/.heim/")
}

/// What the parse phase found out about a request.
#[derive(Debug)]
pub struct Parsed {
    /// The `Host` (or authority) as sent, for the upstream.
    pub host_value: HeaderValue,
    /// Lowercase, without port: what routes and certificates are matched by.
    pub host: String,
    /// The normalised path, when normalising changed it.
    pub new_path: Option<String>,
    /// What a trusted proxy in front said about the client.
    pub forwarded: Option<Forwarded>,
    /// The client used TLS (to heim, or to a trusted proxy that says so).
    pub secure: bool,
    /// The path and query the route's `rewrite` made, for the upstream.
    pub rewritten: Option<String>,
}

/// The route phase's verdict.
#[derive(Debug)]
pub enum Routed {
    To(Arc<Route>),
    /// Plain HTTP for an https route: 308 to this https URL.
    Redirect(HeaderValue),
}

/// === parse === the host and path, normalised; malformed -> 400.
pub fn parse<B>(req: &Request<B>, conn: &ConnCtx) -> Result<Parsed, ProxyError> {
    let host_value = request_host(req)?;
    let host_str = host_value
        .to_str()
        .map_err(|_| ProxyError::BadRequest("invalid Host"))?;
    let host = normalize_host(host_str)
        .ok_or(ProxyError::BadRequest("invalid Host"))?
        .into_owned();
    // A trusted proxy's word on the client (and its scheme), else the peer.
    let forwarded: Option<Forwarded> = conn
        .trusted_peer
        .as_ref()
        .and_then(|t| t.forwarded(conn.remote.ip(), req.headers()));
    let secure = conn.tls.is_some()
        || forwarded
            .as_ref()
            .is_some_and(|f| f.proto.as_ref().is_some_and(|p| p == "https"));
    // A tunnel (`CONNECT host:port`) has no path; it is routed as `/`, and
    // only over https.
    let new_path = if req.method() == Method::CONNECT {
        if !secure {
            return Err(ProxyError::MethodNotAllowed);
        }
        Some("/".to_owned())
    } else {
        match normalize_path(req.uri().path()).ok_or(ProxyError::BadRequest("invalid path"))? {
            Cow::Borrowed(_) => None,
            Cow::Owned(p) => Some(p),
        }
    };
    Ok(Parsed {
        host_value,
        host,
        new_path,
        forwarded,
        secure,
        rewritten: None,
    })
}

/// === route === the current `RouteTable` (no match -> 404), and
/// === redirect === plain-HTTP requests for https routes -> 308.
pub fn route<B>(req: &Request<B>, parsed: &Parsed, conn: &ConnCtx) -> Result<Routed, ProxyError> {
    let table = conn.shared.routes.load();
    let path = parsed.new_path.as_deref().unwrap_or(req.uri().path());
    let path = routing_path(path).ok_or(ProxyError::BadRequest("invalid path"))?;
    let route = table.lookup(&parsed.host, &path).cloned();
    // Plain HTTP: routes that allow it are served; everything else is
    // redirected, but only for hosts heim names (a rule or a certificate),
    // never to any Host a client makes up. A route for an ACME HTTP-01 path
    // (cert-manager's solver) is served as it is: validation is plain HTTP.
    let acme_solver = route
        .as_ref()
        .is_some_and(|r| r.spec.path.starts_with(ACME_CHALLENGE_PATH));
    if !parsed.secure && !acme_solver && route.as_ref().is_none_or(|r| r.spec.https_redirect) {
        if table.names_host(&parsed.host) || conn.shared.certs.load().covers(&parsed.host) {
            return https_url(&parsed.host, req, conn)
                .map(Routed::Redirect)
                .ok_or(ProxyError::BadRequest("invalid request target"));
        }
        return Err(ProxyError::NoRoute);
    }
    route.map(Routed::To).ok_or(ProxyError::NoRoute)
}

/// === authenticate === the session of a request to a route that needs
/// one: the session cookie or a CLI bearer token, opened and checked
/// (expiry, revocation). Public and denied routes skip it.
pub fn authenticate<B>(
    req: &Request<B>,
    host: &str,
    route: &Route,
    auth: Option<&Auth>,
    conn: &ConnCtx,
) -> Option<Session> {
    match (&route.spec.policy, auth) {
        (Policy::Allow(_), Some(auth)) => {
            auth.session(req.headers(), &conn.shared.auth_state, host)
        }
        _ => None,
    }
}

/// === authorize === the route's policy; deny by default. No session: a
/// browser is sent to sign in (302), anything else gets 401; a session the
/// rules do not admit gets the 403 page.
pub fn authorize<B>(
    req: &Request<B>,
    parsed: &Parsed,
    route: &Route,
    session: Option<&Session>,
    auth: Option<&Auth>,
    conn: &ConnCtx,
) -> Result<(), ProxyError> {
    let rules = match &route.spec.policy {
        Policy::Public => return Ok(()),
        // The signature is checked with the body, in `backend`; a webhook
        // is a POST, never an upgrade.
        Policy::Webhook(_)
            if req.method() != Method::POST || req.headers().contains_key(UPGRADE) =>
        {
            return Err(ProxyError::MethodNotAllowed)
        }
        Policy::Webhook(_) => return Ok(()),
        Policy::Deny => return Err(ProxyError::Forbidden),
        Policy::Allow(rules) => rules,
    };
    let Some(auth) = auth else {
        return Err(ProxyError::Forbidden);
    };
    if session.is_some_and(|s| rules.allows(s)) {
        return Ok(());
    }
    // Refused: only now the URLs the answer needs (not on every admitted
    // request).
    let port = conn.shared.https_port();
    let auth_origin = crate::auth::endpoints::origin(&auth.auth_host, port);
    let here = {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        format!("{}{pq}", crate::auth::endpoints::origin(&parsed.host, port))
    };
    match session {
        Some(s) => Err(ProxyError::Denied(Box::new(crate::error::Denied {
            user: s.user.clone(),
            email: s.email.clone(),
            switch_url: format!(
                "{auth_origin}/.heim/logout?rd={}",
                crate::auth::endpoints::url_encode(&crate::auth::endpoints::login_url(
                    &auth_origin,
                    &here
                ))
            ),
        }))),
        None if is_browser(req) => {
            let (location, cookie) = crate::auth::endpoints::sign_in_redirect(&auth_origin, &here);
            match (
                HeaderValue::from_str(&location),
                HeaderValue::from_str(&cookie),
            ) {
                (Ok(location), Ok(set_cookie)) => Err(ProxyError::SignIn {
                    location,
                    set_cookie,
                }),
                _ => Err(ProxyError::Unauthorized),
            }
        }
        None => Err(ProxyError::Unauthorized),
    }
}

/// A browser navigating (it asks for HTML), not a script or an API client.
fn is_browser<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let html = h
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let xhr = h
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
    html && !xhr
}

/// The signed-in user's identity for the backend: `X-Heim-User`, `-Email`,
/// `-Groups`, `-Jwt` and the route's `identity_headers`, after `rewrite`
/// removed whatever the client sent under those names.
fn identify<B>(
    req: &mut Request<B>,
    parsed: &Parsed,
    route: &Route,
    s: &Session,
    auth: &Auth,
    conn: &ConnCtx,
) {
    let port = conn.shared.https_port();
    let iss = crate::auth::endpoints::origin(&auth.auth_host, port);
    let jwt = crate::auth::jwt::for_request(&auth.signing, &iss, &parsed.host, s);
    let h = req.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).ok();
    let groups = s.groups.join(",");
    for (name, v) in [
        (&headers::X_HEIM_USER, value(&s.user)),
        (&headers::X_HEIM_EMAIL, s.email.as_deref().and_then(value)),
        (
            &headers::X_HEIM_GROUPS,
            (!groups.is_empty()).then(|| value(&groups)).flatten(),
        ),
        (&headers::X_HEIM_JWT, jwt),
    ] {
        if let Some(v) = v {
            h.insert(name.clone(), v);
        }
    }
    for (name, field) in &route.spec.identity_headers {
        let v = match field {
            IdentityField::Email => s.email.as_deref().and_then(value),
            IdentityField::User => value(&s.user),
            IdentityField::Groups => value(&groups),
        };
        if let Some(v) = v {
            h.insert(name.clone(), v);
        }
    }
}

/// === limit === the route's body size, by `Content-Length` -> 413 (a
/// streamed body is cut off as it passes the limit, in `UpstreamBody`).
pub fn limit<B>(req: &Request<B>, route: &Route) -> Result<(), ProxyError> {
    match (route.spec.max_body_bytes, content_length(req)) {
        (Some(max), Some(len)) if len > max => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// === rewrite === the request as the upstream gets it: its target, hop-by-hop
/// and forged identity headers out, `X-Forwarded-*` and `X-Request-Id` in.
/// True when it is a WebSocket upgrade to relay.
pub fn rewrite<B>(
    req: &mut Request<B>,
    parsed: &Parsed,
    route: &Route,
    conn: &ConnCtx,
    request_id: &HeaderValue,
) -> Result<bool, ProxyError> {
    // Only WebSocket is relayed: any other `Upgrade` (h2c among them) is
    // dropped as the hop-by-hop header it is, so a client can never talk to
    // a backend around heim.
    let upgrade = req.version() == Version::HTTP_11
        && req.method() == Method::GET
        && req
            .headers()
            .get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && connection_upgrade(req);
    let protocol = match &route.upstream {
        // Upgrades always speak HTTP/1.1 to the upstream.
        Some(g) if !upgrade => g.protocol,
        _ => UpstreamProtocol::Http1,
    };
    if req.version() == Version::HTTP_2 && protocol == UpstreamProtocol::Http1 {
        join_cookies(req.headers_mut());
    }
    set_upstream_uri(
        req,
        parsed.new_path.as_deref(),
        parsed.rewritten.as_deref(),
        route
            .spec
            .upstream_host
            .as_ref()
            .unwrap_or(&parsed.host_value),
        protocol,
    )?;
    let h = req.headers_mut();
    headers::clean(h, true, upgrade);
    // Identity headers any route names are heim's to set, like `X-Heim-*`,
    // and so are the headers this route's auth service was to set.
    for name in route.identity_names.iter().chain(&route.spec.strip_headers) {
        h.remove(name);
    }
    conn.forwarded
        .apply(h, &parsed.host_value, parsed.forwarded.as_ref());
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    let host = route
        .spec
        .upstream_host
        .as_ref()
        .unwrap_or(&parsed.host_value);
    match protocol {
        UpstreamProtocol::Http1 => {
            h.insert(HOST, host.clone());
        }
        UpstreamProtocol::H2c => {
            h.remove(HOST);
        }
    }
    if let (Some(_), Some(prefix)) = (
        &parsed.rewritten,
        route
            .spec
            .rewrite
            .as_ref()
            .and_then(|r| r.forwarded_prefix.as_ref()),
    ) {
        h.insert(
            http::header::HeaderName::from_static("x-forwarded-prefix"),
            prefix.clone(),
        );
    }
    Ok(upgrade)
}

/// The client's body on its way to the backend.
enum ClientBody {
    Stream(Incoming),
    /// Read whole, and its webhook signature checked.
    Verified(bytes::Bytes),
}

/// === backend === `echo`, or `forward` to an upstream (a relayed upgrade
/// included).
#[allow(clippy::too_many_arguments)]
async fn backend(
    mut req: Request<Incoming>,
    parsed: &Parsed,
    route: &Route,
    upgrade: bool,
    conn: &ConnCtx,
    body_timeout: Duration,
    session: Option<&Session>,
    out: &mut Outcome,
) -> Result<Response<ProxyBody>, ProxyError> {
    if route.spec.backend == Backend::NotFound {
        return Err(ProxyError::NoRoute);
    }
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // A webhook is read whole and its signature checked before the
    // backend sees a byte.
    let body = match &route.spec.policy {
        Policy::Webhook(w) => {
            let limit = route.spec.max_body_bytes;
            ClientBody::Verified(
                crate::auth::webhook::verify(&parts.headers, body, w, limit, body_timeout).await?,
            )
        }
        _ => ClientBody::Stream(body),
    };
    // ingress-nginx's default-backend serves while the Service has no endpoint.
    let idle = route
        .upstream
        .as_ref()
        .filter(|g| g.endpoints.is_empty())
        .and(route.error_group.as_ref());
    // Sticky sessions: a client pinned to a mainline endpoint stays on the
    // mainline, one pinned to a canary endpoint on the canary (ingress-nginx's
    // `affinity-canary-behavior: sticky`), whatever the canary rule drew.
    let affinity = route.spec.affinity.as_deref().filter(|_| idle.is_none());
    let token = affinity.and_then(|a| a.token(&parts.headers));
    if let Some(t) = token {
        if route
            .upstream
            .as_ref()
            .is_some_and(|g| g.affinity_tokens().index(t).is_some())
        {
            out.canary = false;
        } else if route
            .canary
            .as_ref()
            .is_some_and(|g| g.affinity_tokens().index(t).is_some())
        {
            out.canary = true;
        }
    }
    let canary = route.canary.as_ref().filter(|_| out.canary);
    // What a custom error page's request needs of this one.
    let error_page = route
        .spec
        .error_backend
        .as_ref()
        .filter(|e| !e.codes.is_empty() && on_upgrade.is_none())
        .map(|_| {
            (
                parts.method == Method::HEAD,
                out.original_uri
                    .clone()
                    .unwrap_or_else(|| parts.uri.clone()),
                parts.headers.get(http::header::HOST).cloned(),
                parts.headers.get(http::header::ACCEPT).cloned(),
            )
        });
    let group = match canary.or(idle).or(route.upstream.as_ref()) {
        None => {
            return Ok(crate::echo::respond(
                &Request::from_parts(parts, ()),
                conn,
                &route.spec.name,
                &parsed.host,
                &out.request_id,
                out.client,
                session,
            ))
        }
        Some(g) => g,
    };
    let (body, sent) = match body {
        ClientBody::Verified(bytes) => UpstreamBody::buffered(bytes),
        ClientBody::Stream(body) => {
            UpstreamBody::new(body, route.spec.max_body_bytes, body_timeout)
        }
    };
    let wanted = token.and_then(|t| group.affinity_tokens().index(t));
    let user_agent = affinity
        .filter(|a| a.conditional_same_site_none)
        .and_then(|_| parts.headers.get(http::header::USER_AGENT).cloned());
    let request = Request::from_parts(parts, body);
    let (mut resp, endpoint) = match on_upgrade {
        Some(on_upgrade) => {
            let reauth = crate::auth::Reauth {
                shared: conn.shared.clone(),
                session: session.cloned(),
                host: parsed.host.clone(),
                path: routing_path(request.uri().path())
                    .map(|p| p.into_owned())
                    .unwrap_or_default(),
            };
            crate::forward::forward_upgrade(
                request,
                on_upgrade,
                group,
                wanted,
                &conn.shared,
                reauth,
            )
            .await?
        }
        None => {
            let out = crate::forward::Outgoing { request, sent };
            crate::forward::forward_to(out, group, wanted, &conn.shared.metrics).await?
        }
    };
    out.upstream = Some(endpoint);
    if let (Some(eb), Some(errors), Some(page)) =
        (&route.spec.error_backend, &route.error_group, error_page)
    {
        if eb.codes.contains(&resp.status().as_u16()) {
            resp = custom_error(eb, errors, page, resp.status(), &out.request_id, conn).await?;
        }
    }
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade {
        // A 101 nobody asked for would leave the client in limbo.
        return Err(ProxyError::UpstreamProtocol);
    }
    headers::clean(resp.headers_mut(), false, switching);
    crate::auth::strip_heim_set_cookies(resp.headers_mut());
    if let Some(a) = affinity.filter(|a| a.sets_cookie(wanted, endpoint)) {
        let ua = user_agent.as_ref().and_then(|v| v.to_str().ok());
        if let Some(c) = group
            .affinity_tokens()
            .token(endpoint)
            .and_then(|t| a.set_cookie(t, parsed.secure, ua, std::time::SystemTime::now()))
        {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
    }
    Ok(resp)
}

/// The host a request is for: the URI's authority (HTTP/2's `:authority`,
/// or an absolute-form target), else the `Host` header. More than one
/// `Host`, or a `Host` that disagrees with the authority, is refused (RFC
/// 9112 §3.2, RFC 9113 §8.3.1): heim never guesses which one a backend
/// would believe.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    match (req.uri().authority(), host) {
        (Some(a), Some(h)) if !same_authority(req, a.as_str(), h) => Err(ProxyError::BadRequest(
            "Host disagrees with the request's authority",
        )),
        (Some(a), _) => {
            HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadRequest("invalid Host"))
        }
        (None, Some(h)) => Ok(h.clone()),
        (None, None) => Err(ProxyError::BadRequest("missing Host")),
    }
}

/// The authority and `Host` name the same host and port, once normalised
/// (case, a trailing dot, the scheme's default port: RFC 9113 §8.3.1).
fn same_authority<B>(req: &Request<B>, authority: &str, host: &HeaderValue) -> bool {
    let default = if req.uri().scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let parse = |raw: &str| host_and_port(raw).map(|(h, p)| (h.into_owned(), p.unwrap_or(default)));
    match (parse(authority), host.to_str().ok().and_then(parse)) {
        (Some(a), Some(h)) => a == h,
        _ => false,
    }
}

fn connection_upgrade<B>(req: &Request<B>) -> bool {
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

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Points the request at the upstream: origin-form for HTTP/1 (the
/// normalised path, the query untouched), absolute-form for h2c.
fn set_upstream_uri<B>(
    req: &mut Request<B>,
    new_path: Option<&str>,
    rewritten: Option<&str>,
    host: &HeaderValue,
    protocol: UpstreamProtocol,
) -> Result<(), ProxyError> {
    let bad = |_| ProxyError::BadRequest("invalid request target");
    let needs_rebuild = new_path.is_some()
        || rewritten.is_some()
        || req.uri().scheme().is_some()
        || protocol == UpstreamProtocol::H2c;
    if needs_rebuild {
        let pq: PathAndQuery = match (rewritten, new_path, req.uri().query()) {
            (Some(pq), _, _) => pq.parse().map_err(bad)?,
            (None, None, _) => req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            (None, Some(p), None) => p.parse().map_err(bad)?,
            (None, Some(p), Some(q)) => format!("{p}?{q}").parse().map_err(bad)?,
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

/// The same host, path and query over https. Only hosts heim has routes or
/// certificates for get here, so this is never an open redirect.
fn https_url<B>(host: &str, req: &Request<B>, conn: &ConnCtx) -> Option<HeaderValue> {
    let port = conn.shared.https_port();
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
    HeaderValue::from_str(&location).ok()
}

/// A `308` to `location`.
/// A route redirect's target for this request: its nginx variables
/// expanded, a path made absolute on the request's scheme and host.
fn expand_redirect<B>(template: &str, req: &Request<B>, parsed: &Parsed) -> String {
    let scheme = if parsed.secure { "https" } else { "http" };
    let http_host = parsed.host_value.to_str().unwrap_or(&parsed.host);
    let request_uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let query = req.uri().query().unwrap_or("");
    let escaped = || -> String {
        request_uri
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let value = |name: &str| -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(match name {
            "escaped_request_uri" => return std::borrow::Cow::Owned(escaped()),
            "request_uri" => request_uri,
            "http_host" => http_host,
            "is_args" => {
                if query.is_empty() {
                    ""
                } else {
                    "?"
                }
            }
            "scheme" => scheme,
            "host" => &parsed.host,
            "args" => query,
            "uri" => req.uri().path(),
            _ => "",
        })
    };
    let mut out = String::with_capacity(template.len() + request_uri.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        // The whole name, as nginx reads it (checked when the route was made).
        let n = body
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        out.push_str(&value(&body[..n]));
        rest = &body[n..];
        if braced {
            rest = rest.strip_prefix('}').unwrap_or(rest);
        }
    }
    out.push_str(rest);
    if out.starts_with('/') {
        out = format!("{scheme}://{http_host}{out}");
    }
    out
}

fn redirect(location: HeaderValue) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(""));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(LOCATION, location);
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

    /// A connection context over a config of `routes`, with a throwaway
    /// certificate for `app.test`; `peer` is the client's address.
    fn conn(server_extra: &str, routes: &str, peer: &str) -> ConnCtx {
        let (compiled, metrics) = crate::state::test_compiled(server_extra, routes);
        let shared = Shared::new(compiled, metrics);
        let tls = TlsInfo {
            sni: Some("app.test".into()),
            alpn: Some("http/1.1"),
            version: "TLSv1.3",
        };
        let remote = SocketAddr::new(peer.parse().unwrap(), 40000);
        ConnCtx::new(shared, remote, "127.0.0.1:443".parse().unwrap(), Some(tls))
    }

    const ADMIN: &str =
        "[[route]]\nhost = \"app.test\"\npath = \"/\"\necho = true\npublic = true\n\
                         [[route]]\nhost = \"app.test\"\npath = \"/admin\"\necho = true\n";

    fn request(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// The phases a request takes up to `authorize`, as a status: 200 when
    /// it would reach its backend.
    fn verdict(conn: &ConnCtx, req: &Request<()>) -> u16 {
        let parsed = match parse(req, conn) {
            Ok(p) => p,
            Err(e) => return e.status().as_u16(),
        };
        match route(req, &parsed, conn) {
            Ok(Routed::To(r)) => match authorize(req, &parsed, &r, None, None, conn) {
                Ok(()) => 200,
                Err(e) => e.status().as_u16(),
            },
            Ok(Routed::Redirect(_)) => 308,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn every_way_of_spelling_admin_meets_its_policy() {
        let c = conn("", ADMIN, "127.0.0.1");
        let host = [("host", "app.test")];
        for path in [
            "/admin",
            "/./admin",
            "//admin",
            "/%61dmin",
            "/admin%2F",
            "/admin%2Fusers",
            "/admin;x",
            "/public/..;/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public%5C..%5Cadmin",
        ] {
            assert_eq!(verdict(&c, &request(path, &host)), 403, "{path}");
        }
        for path in ["/", "/public", "/adminx", "/public/admin"] {
            assert_eq!(verdict(&c, &request(path, &host)), 200, "{path}");
        }
        assert_eq!(verdict(&c, &request("/..", &host)), 400);
    }

    #[test]
    fn only_an_acme_challenge_route_is_served_over_plain_http() {
        let routes = "[[route]]\nhost = \"app.test\"\npath = \"/\"\necho = true\npublic = true\n\
                      [[route]]\nhost = \"solver.test\"\npath = \"/.well-known/acme-challenge/\"\necho = true\npublic = true\n\
                      [[route]]\nhost = \"solver.test\"\npath = \"/\"\necho = true\npublic = true\n";
        let tls = conn("", routes, "127.0.0.1");
        let plain = ConnCtx::new(
            tls.shared.clone(),
            tls.remote,
            "127.0.0.1:80".parse().unwrap(),
            None,
        );
        let at = |host: &str, path: &str| verdict(&plain, &request(path, &[("host", host)]));
        // A catch-all route is redirected, challenge path or not.
        assert_eq!(at("app.test", "/.well-known/acme-challenge/tok"), 308);
        assert_eq!(at("app.test", "/"), 308);
        // cert-manager's solver route is served as it is; the host's other
        // paths are still redirected.
        assert_eq!(at("solver.test", "/.well-known/acme-challenge/tok"), 200);
        assert_eq!(at("solver.test", "/x"), 308);
    }

    #[test]
    fn malformed_hosts_are_refused() {
        let c = conn("", ADMIN, "127.0.0.1");
        let cases: [(Request<()>, u16); 7] = [
            (
                request("/", &[("host", "app.test"), ("host", "app.test")]),
                400,
            ),
            (request("https://other.test/", &[("host", "app.test")]), 400),
            (request("https://APP.test/", &[("host", "app.TEST")]), 200),
            (
                request("https://app.test:443/", &[("host", "app.test.")]),
                200,
            ),
            (
                request("https://app.test/", &[("host", "app.test:8443")]),
                400,
            ),
            (request("/", &[]), 400),
            (request("/", &[("host", "app.test:99999")]), 400),
        ];
        for (req, want) in cases {
            assert_eq!(verdict(&c, &req), want, "{req:?}");
        }
        // A tunnel is routed as `/` of its host; the tunnel phase (after
        // authorize) refuses it unless the route is a `tcp` one.
        let connect = Request::connect("app.test:22").body(()).unwrap();
        let parsed = parse(&connect, &c).expect("CONNECT parses");
        assert_eq!(
            (parsed.host.as_str(), parsed.new_path.as_deref()),
            ("app.test", Some("/"))
        );
    }

    #[test]
    fn trusted_proxies_name_the_client_and_others_cannot() {
        let routes = "[[route]]\nhost = \"app.test\"\necho = true\npublic = true\n";
        let trusted = "trusted_proxies = [\"10.0.0.0/8\"]";
        let forged = [
            ("host", "app.test"),
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-heim-user", "admin"),
            ("x_heim_user", "admin"),
        ];
        for (peer, client, xff) in [
            ("10.0.0.1", "198.51.100.7", "198.51.100.7, 10.0.0.1"),
            ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
        ] {
            let c = conn(trusted, routes, peer);
            let mut req = request("/", &forged);
            let parsed = parse(&req, &c).unwrap();
            let Routed::To(r) = route(&req, &parsed, &c).unwrap() else {
                panic!("routed")
            };
            let id = HeaderValue::from_static("id");
            rewrite(&mut req, &parsed, &r, &c, &id).unwrap();
            let got = parsed
                .forwarded
                .as_ref()
                .map_or(c.remote.ip(), |f| f.client);
            assert_eq!(got.to_string(), client, "peer {peer}");
            let h = req.headers();
            assert_eq!(h["x-forwarded-for"], xff, "peer {peer}");
            assert_eq!(h["x-real-ip"], client);
            assert!(h.get("x-heim-user").is_none() && h.get("x_heim_user").is_none());
        }
    }

    #[test]
    fn body_limit_by_content_length() {
        let routes =
            "[[route]]\nhost = \"app.test\"\necho = true\npublic = true\nmax_body_bytes = 10\n";
        let c = conn("", routes, "127.0.0.1");
        let req = request("/", &[("host", "app.test"), ("content-length", "11")]);
        let parsed = parse(&req, &c).unwrap();
        let Routed::To(r) = route(&req, &parsed, &c).unwrap() else {
            panic!("routed")
        };
        assert_eq!(limit(&req, &r), Err(ProxyError::BodyTooLarge));
        let req = request("/", &[("host", "app.test"), ("content-length", "10")]);
        assert_eq!(limit(&req, &r), Ok(()));
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }
}
