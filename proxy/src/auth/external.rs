//! ingress-nginx's `auth-url`: an external authentication sub-request per
//! request, made as ingress-nginx's `auth_request` location makes it, for
//! auth services other than oauth2-proxy (heim's own sign-in replaces that).
//!
//! It owns the annotations' validation ([`ExternalAuth::from_nginx`]), the
//! sub-request (method, target, headers), the verdict mapping (2xx allow,
//! 401 sign-in redirect or 401, 403, anything else 500), the verdict cache
//! (`auth-cache-key`), and a small keep-alive pool to the auth services.
//! It does not own the request path: the caller turns an [`AuthVerdict`]
//! into a response or into upstream headers, and decides which final
//! statuses get the auth service's cookies ([`ExternalAuth::passes_cookies`]).
//!
//! Variables in `auth-url`, `auth-signin` and `auth-cache-key` are heim's
//! fixed list ([`crate::route::REDIRECT_VARIABLES`]), expanded by the
//! caller's expander (the one route redirects use), passed in
//! [`AuthContext::expand`], so there is one expander in heim.
//!
//! Choices where nginx gives none or heim differs on purpose:
//! * **Timeout**: nginx's auth location has no timeouts of its own, so its
//!   built-in 60 s connect and 60 s read apply; heim gives the exchange
//!   (connect, TLS, response head) one 60 s deadline ([`DEFAULT_TIMEOUT`]).
//! * **https**: nginx's `proxy_pass` does not verify the auth service's
//!   certificate (`proxy_ssl_verify off`) but sends SNI
//!   (`proxy_ssl_server_name on`). heim does the same — in-cluster auth
//!   services often have certificates no public root signs — so `https://`
//!   buys privacy on the wire, not authenticity.
//! * **Keep-alive**: nginx opens a connection per sub-request (unless
//!   `auth-keepalive`); heim keeps idle HTTP/1.1 connections per target
//!   (hyper-util's pooled client is not among the workspace's features, so
//!   a small pool here), and retries once on a fresh connection when a
//!   pooled one turns out dead.
//! * **Set-Cookie**: nginx's `$upstream_http_set_cookie` joins several
//!   `Set-Cookie` lines into one (which breaks all but the first cookie);
//!   heim passes each one.
//! * The response body is discarded (nginx reads only the head of an
//!   `auth_request` answer); heim drains at most 64 KiB of it in the
//!   background to reuse the connection, and never waits on it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, EXPECT, HOST, SET_COOKIE,
    TE, VARY, WWW_AUTHENTICATE,
};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::forward::headers::{self, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID};
use crate::route::redirect_variables_known;

/// Time allowed for connecting to the auth service and reading its answer's head.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The query parameter the sign-in URL gets the original URL in.
pub const DEFAULT_REDIRECT_PARAM: &str = "rd";
/// `auth-cache-duration` when only `auth-cache-key` is given.
pub const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// Largest answer head (status line and headers) read from an auth service.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest answer body drained to keep a connection; a longer one closes it.
const MAX_DRAINED_BODY: usize = 64 * 1024;
/// Time allowed for draining a body in the background.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Idle connections older than this are not reused (ingress-nginx's
/// `auth-keepalive-timeout` default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 32;
/// Targets with idle connections kept: `$host` in `auth-url` makes the
/// target depend on the request.
const MAX_POOL_TARGETS: usize = 64;
/// Verdicts kept per `ExternalAuth`, and their approximate size in bytes.
const MAX_CACHE_ENTRIES: usize = 10_000;
const MAX_CACHE_BYTES: usize = 8 << 20;

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
static X_ACCEL_EXPIRES: HeaderName = HeaderName::from_static("x-accel-expires");

/// The `auth-*` annotation values of one Ingress, as written (`None`: absent).
#[derive(Clone, Debug, Default)]
pub struct NginxAuthAnnotations<'a> {
    /// `auth-url`.
    pub url: &'a str,
    /// `auth-method`.
    pub method: Option<&'a str>,
    /// `auth-signin`.
    pub signin: Option<&'a str>,
    /// `auth-signin-redirect-param`.
    pub signin_redirect_param: Option<&'a str>,
    /// `auth-response-headers`, comma-separated.
    pub response_headers: Option<&'a str>,
    /// `auth-request-redirect`.
    pub request_redirect: Option<&'a str>,
    /// `auth-cache-key`.
    pub cache_key: Option<&'a str>,
    /// `auth-cache-duration`.
    pub cache_duration: Option<&'a str>,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: Option<&'a str>,
    /// The data of the `auth-proxy-set-headers` ConfigMap.
    pub proxy_set_headers: &'a [(String, String)],
}

/// An annotation value ingress-nginx would refuse (it denies the location).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{annotation}: {reason}")]
pub struct AnnotationError {
    /// The annotation's name without the `nginx.ingress.kubernetes.io/` prefix.
    pub annotation: &'static str,
    pub reason: String,
}

fn refuse(annotation: &'static str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        annotation,
        reason: reason.into(),
    }
}

/// A route's external authentication, compared by its spec (the pool and
/// the verdict cache beside it are not part of `==`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    /// The auth service's URL; may hold heim's variables.
    pub url: String,
    /// Where a 401 is redirected (302); may hold heim's variables.
    pub signin: Option<String>,
    /// The query parameter the original URL goes in (`rd`).
    pub signin_redirect_param: String,
    /// Copied from the auth answer onto the upstream request.
    pub response_headers: Vec<HeaderName>,
    /// The sub-request's method (GET).
    pub method: Method,
    /// `auth-method` was given: nginx then also sends `X-Original-URI` and
    /// `X-Scheme`.
    pub method_set: bool,
    /// `X-Auth-Request-Redirect` instead of the request URI.
    pub request_redirect: Option<HeaderValue>,
    /// The auth service's cookies go onto every final response, not only
    /// on successful ones.
    pub always_set_cookie: bool,
    pub cache: Option<CacheSpec>,
    /// Extra headers on the sub-request (`auth-proxy-set-headers`).
    pub proxy_set_headers: Vec<(HeaderName, HeaderValue)>,
    /// See [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    live: Live,
}

/// `auth-cache-key` and `auth-cache-duration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// Expanded per request; the route is added, so routes never share.
    pub key: String,
    /// In nginx's order: the first entry for the status (or `any`) wins.
    pub valid: Vec<CacheValid>,
}

/// One status (`None`: nginx's `any`) and how long its verdict is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheValid {
    pub status: Option<u16>,
    pub duration: Duration,
}

/// What the request phases know that the sub-request needs.
pub struct AuthContext<'a> {
    /// The route's name: verdicts are cached per route.
    pub route: &'a str,
    /// The client's address (after trusted-proxy processing): `X-Real-IP`
    /// and `X-Forwarded-For`.
    pub client: IpAddr,
    /// The client used https (to heim or to a trusted proxy in front).
    pub https: bool,
    /// The request's id, as sent upstream.
    pub request_id: &'a HeaderValue,
    /// Expands heim's variables for this request (the route redirects'
    /// expander; a result starting with `/` is made absolute on the
    /// request's scheme and `Host`).
    pub expand: &'a dyn Fn(&str) -> String,
}

/// What the auth service said, in nginx's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthVerdict {
    /// 2xx: forward, with these upstream headers set (`None`: remove the
    /// client's); add the cookies to the final response when
    /// [`ExternalAuth::passes_cookies`] allows its status.
    Allow {
        set_headers: Vec<(HeaderName, Option<HeaderValue>)>,
        set_cookies: Vec<HeaderValue>,
    },
    /// 401 with `auth-signin`: answer 302 to `location`, with the cookies.
    SignIn {
        location: HeaderValue,
        set_cookies: Vec<HeaderValue>,
    },
    /// 401: answer 401 with the auth service's `WWW-Authenticate` (nginx's
    /// `auth_request` passes it) and the cookies.
    Unauthorized {
        www_authenticate: Vec<HeaderValue>,
        set_cookies: Vec<HeaderValue>,
    },
    /// 403: answer 403 with the cookies.
    Forbidden { set_cookies: Vec<HeaderValue> },
    /// Any other status, a timeout or a failed connection: answer 500 with
    /// the cookies.
    Error { set_cookies: Vec<HeaderValue> },
}

impl AuthVerdict {
    /// The status heim answers with (`Allow`: the upstream's, 200 here).
    pub fn status(&self) -> StatusCode {
        match self {
            AuthVerdict::Allow { .. } => StatusCode::OK,
            AuthVerdict::SignIn { .. } => StatusCode::FOUND,
            AuthVerdict::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AuthVerdict::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthVerdict::Error { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The auth service's `Set-Cookie` values this verdict carries (already
    /// filtered for the refusals; for `Allow`, see `passes_cookies`).
    pub fn set_cookies(&self) -> &[HeaderValue] {
        match self {
            AuthVerdict::Allow { set_cookies, .. }
            | AuthVerdict::SignIn { set_cookies, .. }
            | AuthVerdict::Unauthorized { set_cookies, .. }
            | AuthVerdict::Forbidden { set_cookies }
            | AuthVerdict::Error { set_cookies } => set_cookies,
        }
    }
}

/// Sets an `Allow`'s headers on the upstream request: each replaces the
/// client's value, `None` removes it (nginx sends no empty header).
pub fn apply_upstream_headers(set: &[(HeaderName, Option<HeaderValue>)], headers: &mut HeaderMap) {
    for (name, value) in set {
        match value {
            Some(v) => {
                headers.insert(name.clone(), v.clone());
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

// === impl ExternalAuth ===

impl ExternalAuth {
    /// Validates the annotations as ingress-nginx does (plus heim's
    /// variable list) and builds the spec.
    pub fn from_nginx(a: &NginxAuthAnnotations<'_>) -> Result<ExternalAuth, AnnotationError> {
        let url = a.url.trim();
        check_url_template("auth-url", url, false)?;
        let method = match a.method.map(str::trim).filter(|m| !m.is_empty()) {
            None => None,
            Some(m) => {
                const METHODS: &[&str] = &[
                    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                ];
                if !METHODS.contains(&m) {
                    return Err(refuse(
                        "auth-method",
                        format!("{m:?} is not one of {METHODS:?}"),
                    ));
                }
                Some(
                    Method::from_bytes(m.as_bytes())
                        .map_err(|_| refuse("auth-method", "invalid method"))?,
                )
            }
        };
        let signin = match a.signin.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                check_url_template("auth-signin", s, true)?;
                Some(s.to_owned())
            }
        };
        let signin_redirect_param = match a.signin_redirect_param.map(str::trim) {
            None | Some("") => DEFAULT_REDIRECT_PARAM.to_owned(),
            Some(p) => {
                // ingress-nginx's `URLIsValidRegex`, less what would end the
                // parameter's name early.
                if !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,".contains(&b))
                {
                    return Err(refuse(
                        "auth-signin-redirect-param",
                        format!("{p:?} holds a character a query parameter name cannot"),
                    ));
                }
                p.to_owned()
            }
        };
        let mut response_headers = Vec::new();
        for h in a.response_headers.unwrap_or("").split(',') {
            let h = h.trim();
            if h.is_empty() {
                continue;
            }
            response_headers.push(header_name(h).map_err(|r| refuse("auth-response-headers", r))?);
        }
        let request_redirect = match a.request_redirect.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(r) => {
                // `URLIsValidRegex`: no variables, no quotes, no spaces.
                if !r
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~/:,?&=".contains(&b))
                {
                    return Err(refuse(
                        "auth-request-redirect",
                        format!("{r:?} holds a character ingress-nginx refuses"),
                    ));
                }
                Some(
                    HeaderValue::from_str(r)
                        .map_err(|_| refuse("auth-request-redirect", "not a header value"))?,
                )
            }
        };
        let always_set_cookie = match a.always_set_cookie.map(str::trim) {
            None | Some("") => false,
            Some(v) => parse_bool(v).ok_or_else(|| {
                refuse(
                    "auth-always-set-cookie",
                    format!("{v:?} is not true or false"),
                )
            })?,
        };
        let cache = match a.cache_key.map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => Some(CacheSpec::parse(k, a.cache_duration)?),
        };
        let mut proxy_set_headers = Vec::new();
        for (name, value) in a.proxy_set_headers {
            let n = header_name(name).map_err(|r| refuse("auth-proxy-set-headers", r))?;
            // nginx would expand `$name` in the value; heim sends values as
            // written, so refuse what would differ.
            if value.contains('$') {
                return Err(refuse(
                    "auth-proxy-set-headers",
                    format!("{name}: nginx variables in values are not supported"),
                ));
            }
            let v = HeaderValue::from_str(value).map_err(|_| {
                refuse(
                    "auth-proxy-set-headers",
                    format!("{name}: not a header value"),
                )
            })?;
            proxy_set_headers.push((n, v));
        }
        // nginx writes the ConfigMap's lines sorted.
        proxy_set_headers.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        Ok(ExternalAuth {
            url: url.to_owned(),
            signin,
            signin_redirect_param,
            response_headers,
            method_set: method.is_some(),
            method: method.unwrap_or(Method::GET),
            request_redirect,
            always_set_cookie,
            cache,
            proxy_set_headers,
            timeout: DEFAULT_TIMEOUT,
            live: Live::default(),
        })
    }

    /// Whether the auth service's cookies go onto a final response with
    /// this status (nginx's `add_header` list, or always).
    pub fn passes_cookies(&self, status: StatusCode) -> bool {
        self.always_set_cookie
            || matches!(
                status.as_u16(),
                200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
            )
    }

    /// Asks the auth service about `req` (or the cache) and maps its answer.
    pub async fn check<B>(&self, req: &Request<B>, ctx: &AuthContext<'_>) -> AuthVerdict {
        // nginx's `proxy_cache_methods` default: only GET and HEAD are cached.
        let cache = self
            .cache
            .as_ref()
            .filter(|_| self.method == Method::GET || self.method == Method::HEAD);
        let key = cache.map(|c| cache_key(ctx.route, &(ctx.expand)(&c.key)));
        if let Some(key) = &key {
            if let Some(hit) = self.live.cached(key) {
                return self.verdict(
                    hit.status,
                    hit.headers,
                    Vec::new(),
                    hit.www_authenticate,
                    ctx,
                );
            }
        }
        let (target, sub) = match self.sub_request(req, ctx) {
            Ok(r) => r,
            Err(reason) => {
                // Reasons never hold the URL: its query may carry a key.
                tracing::warn!(route = ctx.route, %reason, "external auth: no sub-request");
                return AuthVerdict::Error {
                    set_cookies: Vec::new(),
                };
            }
        };
        let answer = match tokio::time::timeout(self.timeout, self.exchange(&target, sub)).await {
            Ok(Ok(a)) => a,
            Ok(Err(reason)) => {
                tracing::warn!(route = ctx.route, %reason, "external auth failed");
                return AuthVerdict::Error {
                    set_cookies: Vec::new(),
                };
            }
            Err(_) => {
                tracing::warn!(route = ctx.route, "external auth timed out");
                return AuthVerdict::Error {
                    set_cookies: Vec::new(),
                };
            }
        };
        let status = answer.status().as_u16();
        let picked = self.picked_headers(answer.headers());
        let set_cookies: Vec<HeaderValue> = answer
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let www_authenticate: Vec<HeaderValue> = answer
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .cloned()
            .collect();
        if let (Some(key), Some(c)) = (key, cache) {
            if let Some(d) = cache_validity(c, status, answer.headers()) {
                self.live.store(key, status, &picked, &www_authenticate, d);
            }
        }
        self.verdict(status, picked, set_cookies, www_authenticate, ctx)
    }

    fn verdict(
        &self,
        status: u16,
        set_headers: Vec<(HeaderName, Option<HeaderValue>)>,
        set_cookies: Vec<HeaderValue>,
        www_authenticate: Vec<HeaderValue>,
        ctx: &AuthContext<'_>,
    ) -> AuthVerdict {
        // nginx adds `Set-Cookie` to its own 401/403/500 only with `always`.
        let refused_cookies = || {
            if self.always_set_cookie {
                set_cookies.clone()
            } else {
                Vec::new()
            }
        };
        match status {
            200..=299 => AuthVerdict::Allow {
                set_headers,
                set_cookies,
            },
            401 => match &self.signin {
                Some(signin) => {
                    let to =
                        (ctx.expand)(&signin_with_redirect(signin, &self.signin_redirect_param));
                    match HeaderValue::from_str(&to) {
                        // The signin location's `add_header` (no `always`):
                        // a 302 is on nginx's list.
                        Ok(location) => AuthVerdict::SignIn {
                            location,
                            set_cookies,
                        },
                        Err(_) => AuthVerdict::Error {
                            set_cookies: refused_cookies(),
                        },
                    }
                }
                None => AuthVerdict::Unauthorized {
                    www_authenticate,
                    set_cookies: refused_cookies(),
                },
            },
            403 => AuthVerdict::Forbidden {
                set_cookies: refused_cookies(),
            },
            _ => AuthVerdict::Error {
                set_cookies: refused_cookies(),
            },
        }
    }

    /// `auth-response-headers` from the answer: several lines joined with
    /// `, ` (nginx's `$upstream_http_*`), an empty one as absent.
    fn picked_headers(&self, answer: &HeaderMap) -> Vec<(HeaderName, Option<HeaderValue>)> {
        self.response_headers
            .iter()
            .map(|name| {
                let mut values = answer.get_all(name).iter().filter(|v| !v.is_empty());
                let value = match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(v), None) => Some(v.clone()),
                    (Some(first), Some(second)) => {
                        let mut joined = first.as_bytes().to_vec();
                        for v in std::iter::once(second).chain(values) {
                            joined.extend_from_slice(b", ");
                            joined.extend_from_slice(v.as_bytes());
                        }
                        HeaderValue::from_bytes(&joined).ok()
                    }
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// The sub-request: the expanded `auth-url`, no body, the client's
    /// headers (less hop-by-hop ones) and nginx's `proxy_set_header` lines.
    fn sub_request<B>(
        &self,
        req: &Request<B>,
        ctx: &AuthContext<'_>,
    ) -> Result<(Target, Request<Empty<Bytes>>), String> {
        let url = (ctx.expand)(&self.url);
        let (target, uri) = parse_target(&url)?;
        let request_uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let request_uri =
            HeaderValue::from_str(request_uri).map_err(|_| "invalid request URI".to_owned())?;
        let mut h = req.headers().clone();
        // `proxy_pass_request_headers on`, less what belongs to the client's
        // connection or body (nginx's defaults clear `Connection`,
        // `Keep-Alive`, `TE`, `Expect`, `Upgrade`, and the auth location
        // `Content-Length`), and names with `_`, which nginx ignores
        // (`underscores_in_headers off`).
        headers::clean(&mut h, false, false);
        for name in [&CONTENT_LENGTH, &TE, &EXPECT, &HOST, &X_FORWARDED_PROTO] {
            h.remove(name);
        }
        let underscored: Vec<HeaderName> = h
            .keys()
            .filter(|n| n.as_str().contains('_'))
            .cloned()
            .collect();
        for n in underscored {
            h.remove(n);
        }
        for (name, _) in &self.proxy_set_headers {
            h.remove(name);
        }
        let host = HeaderValue::from_str(&target.host).map_err(|_| "invalid host".to_owned())?;
        h.insert(HOST, host);
        let original_url = (ctx.expand)("$scheme://$http_host$request_uri");
        h.insert(
            X_ORIGINAL_URL.clone(),
            HeaderValue::from_str(&original_url).map_err(|_| "invalid Host".to_owned())?,
        );
        h.insert(
            X_ORIGINAL_METHOD.clone(),
            HeaderValue::from_str(req.method().as_str())
                .map_err(|_| "invalid method".to_owned())?,
        );
        h.insert(
            X_SENT_FROM.clone(),
            HeaderValue::from_static("nginx-ingress-controller"),
        );
        let client = HeaderValue::from_str(&ctx.client.to_string())
            .map_err(|_| "invalid client address".to_owned())?;
        h.insert(X_REAL_IP.clone(), client.clone());
        h.insert(X_FORWARDED_FOR.clone(), client);
        h.insert(
            X_AUTH_REQUEST_REDIRECT.clone(),
            self.request_redirect
                .clone()
                .unwrap_or_else(|| request_uri.clone()),
        );
        h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        if self.method_set {
            h.insert(X_ORIGINAL_URI.clone(), request_uri);
            h.insert(
                X_SCHEME.clone(),
                HeaderValue::from_static(if ctx.https { "https" } else { "http" }),
            );
        }
        for (name, value) in &self.proxy_set_headers {
            h.append(name.clone(), value.clone());
        }
        let mut sub = Request::new(Empty::new());
        *sub.method_mut() = self.method.clone();
        *sub.uri_mut() = uri;
        *sub.headers_mut() = h;
        Ok((target, sub))
    }

    /// Sends the sub-request on a pooled connection (retrying once on a
    /// fresh one when the pooled one was dead) and returns the answer's
    /// head; its body is drained in the background for the pool.
    async fn exchange(
        &self,
        target: &Target,
        sub: Request<Empty<Bytes>>,
    ) -> Result<http::Response<()>, String> {
        let (parts, _) = sub.into_parts();
        let build = || {
            let mut r = Request::new(Empty::<Bytes>::new());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.headers_mut() = parts.headers.clone();
            r
        };
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut retried = false;
        loop {
            let (mut sender, reused) = match self.live.idle(target) {
                Some(s) => (s, true),
                None => (connect(target).await?, false),
            };
            let sent = match sender.ready().await {
                Ok(()) => sender.try_send_request(build()).await,
                Err(e) => {
                    if reused && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(format!("connection: {e}"));
                }
            };
            match sent {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    self.live.keep_after(target.clone(), sender, body);
                    return Ok(http::Response::from_parts(parts, ()));
                }
                Err(mut e) => {
                    let unsent = e.take_message().is_some();
                    if reused && !retried && (unsent || idempotent) {
                        retried = true;
                        continue;
                    }
                    return Err(format!("exchange: {}", e.into_error()));
                }
            }
        }
    }

    #[cfg(test)]
    fn advance_clock(&self, by: Duration) {
        if let Ok(mut skew) = self.live.0.skew.lock() {
            *skew += by;
        }
    }
}

/// Where a sub-request goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    https: bool,
    /// Without brackets: what is resolved, sent as `Host` and as SNI.
    host: String,
    port: u16,
}

/// An expanded auth URL as a target and its origin-form request URI.
fn parse_target(url: &str) -> Result<(Target, Uri), String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("not an http or https URL".to_owned()),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "url host is empty".to_owned())?;
    if host.contains("..") {
        return Err("invalid url host".to_owned());
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = if pq.is_empty() { "/" } else { pq };
    let origin: Uri = pq.parse().map_err(|_| "not a URL".to_owned())?;
    Ok((Target { https, host, port }, origin))
}

/// `auth-url` and `auth-signin` as ingress-nginx validates them
/// (`URLWithNginxVariableRegex`, then a URL with a scheme and a host), with
/// heim's variables only. A sign-in URL may also be a path.
fn check_url_template(
    annotation: &'static str,
    template: &str,
    path_allowed: bool,
) -> Result<(), AnnotationError> {
    if template.is_empty() {
        return Err(refuse(annotation, "empty"));
    }
    if let Some(c) = template
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~/:, ?&=$".contains(*c)))
    {
        return Err(refuse(
            annotation,
            format!("{template:?}: {c:?} is a character ingress-nginx refuses"),
        ));
    }
    redirect_variables_known(template).map_err(|r| refuse(annotation, r))?;
    if path_allowed && template.starts_with('/') {
        return Ok(());
    }
    // Each variable as a placeholder: the URL must parse whatever they hold.
    let placeholder = placeholder_expand(template);
    parse_target(&placeholder)
        .map(|_| ())
        .map_err(|r| refuse(annotation, format!("could not parse {template:?}: {r}")))
}

/// `template` with every variable replaced by `x`.
fn placeholder_expand(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        out.push('x');
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// An `auth-response-headers` or ConfigMap header name
/// (ingress-nginx's `^[a-zA-Z\d\-_]+$`).
fn header_name(name: &str) -> Result<HeaderName, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("{name:?} is not a valid header name"));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

/// Go's `strconv.ParseBool`, which ingress-nginx uses.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// ingress-nginx's `buildAuthSignURL`: the original URL is appended as the
/// redirect parameter unless the sign-in URL already has it (with a value).
/// `$scheme` is heim's `$pass_access_scheme`: the client's scheme, as a
/// trusted proxy in front says.
fn signin_with_redirect(signin: &str, param: &str) -> String {
    const ORIGINAL: &str = "$scheme://$http_host$escaped_request_uri";
    match signin.split_once('?') {
        None => format!("{signin}?{param}={ORIGINAL}"),
        Some((_, query)) => {
            let pairs = go_query(query);
            if pairs.is_empty() {
                format!("{signin}?{param}={ORIGINAL}")
            } else if pairs
                .iter()
                .find(|(k, _)| k == param)
                .is_some_and(|(_, v)| !v.is_empty())
            {
                signin.to_owned()
            } else {
                format!("{signin}&{param}={ORIGINAL}")
            }
        }
    }
}

/// A query's pairs as Go's `url.Query` reads them: `&`-separated, pairs
/// with `;` or a bad escape skipped, `+` a space.
fn go_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !p.contains(';'))
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((go_unescape(k)?, go_unescape(v)?))
        })
        .collect()
}

fn go_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

// === impl CacheSpec ===

impl CacheSpec {
    /// `auth-cache-key` and `auth-cache-duration` (`None`: the default
    /// `200 202 401 5m`), validated as ingress-nginx and nginx do.
    pub fn parse(key: &str, durations: Option<&str>) -> Result<CacheSpec, AnnotationError> {
        // ingress-nginx's `NGINXVariable`.
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b))
        {
            return Err(refuse(
                "auth-cache-key",
                format!("{key:?} holds a character ingress-nginx refuses"),
            ));
        }
        redirect_variables_known(key).map_err(|r| refuse("auth-cache-key", r))?;
        let mut valid = Vec::new();
        for entry in durations.unwrap_or("").split(',') {
            let entry = entry.trim();
            if !entry.is_empty() {
                parse_cache_valid(entry, &mut valid)
                    .map_err(|r| refuse("auth-cache-duration", r))?;
            }
        }
        if valid.is_empty() {
            parse_cache_valid(DEFAULT_CACHE_DURATION, &mut valid)
                .map_err(|r| refuse("auth-cache-duration", r))?;
        }
        Ok(CacheSpec {
            key: key.to_owned(),
            valid,
        })
    }

    /// How long a verdict with this status is kept, by the durations alone.
    pub fn duration_for(&self, status: u16) -> Option<Duration> {
        self.valid
            .iter()
            .find(|v| v.status.is_none_or(|s| s == status))
            .map(|v| v.duration)
    }
}

/// One `proxy_cache_valid`: statuses (or `any`) then one time; a time
/// alone means 200, 301 and 302.
fn parse_cache_valid(entry: &str, out: &mut Vec<CacheValid>) -> Result<(), String> {
    let words: Vec<&str> = entry.split(' ').filter(|w| !w.is_empty()).collect();
    let Some((time, codes)) = words.split_last() else {
        return Err("empty".to_owned());
    };
    let duration = parse_nginx_time(time).ok_or_else(|| {
        format!("invalid cache duration: {entry:?} (must end with a time such as 5m)")
    })?;
    if codes.is_empty() {
        for s in [200, 301, 302] {
            out.push(CacheValid {
                status: Some(s),
                duration,
            });
        }
        return Ok(());
    }
    for c in codes {
        let status = if *c == "any" {
            None
        } else {
            match c.parse::<u16>() {
                Ok(s) if c.len() == 3 && (100..=599).contains(&s) => Some(s),
                _ => {
                    return Err(format!(
                        "invalid cache duration: {entry:?}: {c:?} is not a status"
                    ))
                }
            }
        };
        out.push(CacheValid { status, duration });
    }
    Ok(())
}

/// ingress-nginx's `^\d+(ms|s|m|h|d|w|M|y)$`, in nginx's units.
fn parse_nginx_time(t: &str) -> Option<Duration> {
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = t[..digits].parse().ok()?;
    let secs = |mul: u64| n.checked_mul(mul).map(Duration::from_secs);
    match &t[digits..] {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        "M" => secs(30 * 86_400),
        "y" => secs(365 * 86_400),
        _ => None,
    }
}

/// How long nginx's `proxy_cache` keeps this answer: `X-Accel-Expires`,
/// then `Cache-Control`, then the durations; `None` when it is not cached
/// (a `Set-Cookie`, `Vary: *`, `no-cache`/`no-store`/`private`, a zero).
fn cache_validity(spec: &CacheSpec, status: u16, h: &HeaderMap) -> Option<Duration> {
    if h.contains_key(SET_COOKIE)
        || h.get_all(VARY).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii() == b"*")
        })
    {
        return None;
    }
    if let Some(x) = h.get(&X_ACCEL_EXPIRES) {
        let x = x.to_str().ok()?.trim();
        if !x.starts_with('@') {
            let n: u64 = x.parse().ok()?;
            return (n > 0).then(|| Duration::from_secs(n));
        }
    }
    for cc in h.get_all(CACHE_CONTROL) {
        let cc = cc.to_str().ok()?.to_ascii_lowercase();
        if cc.contains("no-cache") || cc.contains("no-store") || cc.contains("private") {
            return None;
        }
        let age = cc
            .find("s-maxage=")
            .map(|i| &cc[i + 9..])
            .or_else(|| cc.find("max-age=").map(|i| &cc[i + 8..]));
        if let Some(age) = age {
            let digits = age.bytes().take_while(u8::is_ascii_digit).count();
            let n: u64 = age[..digits].parse().ok()?;
            return (n > 0).then(|| Duration::from_secs(n));
        }
    }
    spec.duration_for(status).filter(|d| !d.is_zero())
}

/// The cache key: the route and the expanded key, hashed (nginx hashes
/// `server + auth location + key` with SHA-1), so it is short whatever
/// the request holds.
fn cache_key(route: &str, expanded: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(route.as_bytes());
    ctx.update(&[0]);
    ctx.update(expanded.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

// === impl Live ===

/// A connection to an auth service, for sub-requests.
type Sender = http1::SendRequest<Empty<Bytes>>;

/// What lives beside a spec: the idle connections and the verdict cache.
/// Shared by clones, ignored by `==`.
#[derive(Clone, Default)]
struct Live(Arc<LiveState>);

#[derive(Default)]
struct LiveState {
    pool: Mutex<HashMap<Target, Vec<(Sender, Instant)>>>,
    cache: Mutex<Cache>,
    /// Added to the clock, so tests can expire entries without sleeping.
    #[cfg(test)]
    skew: Mutex<Duration>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], Cached>,
    bytes: usize,
}

#[derive(Clone)]
struct Cached {
    status: u16,
    headers: Vec<(HeaderName, Option<HeaderValue>)>,
    www_authenticate: Vec<HeaderValue>,
    until: Instant,
    bytes: usize,
}

impl PartialEq for Live {
    fn eq(&self, _: &Live) -> bool {
        true
    }
}

impl Eq for Live {}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

impl Live {
    fn now(&self) -> Instant {
        let now = Instant::now();
        #[cfg(test)]
        let now = now + self.0.skew.lock().map_or(Duration::ZERO, |s| *s);
        now
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Cached> {
        let now = self.now();
        let mut cache = self.0.cache.lock().ok()?;
        let hit = cache.entries.get(key)?.clone();
        if hit.until > now {
            return Some(hit);
        }
        cache.entries.remove(key);
        cache.bytes = cache.bytes.saturating_sub(hit.bytes);
        None
    }

    fn store(
        &self,
        key: [u8; 32],
        status: u16,
        headers: &[(HeaderName, Option<HeaderValue>)],
        www_authenticate: &[HeaderValue],
        valid: Duration,
    ) {
        let now = self.now();
        let Some(until) = now.checked_add(valid) else {
            return;
        };
        let bytes = 96
            + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, HeaderValue::len) + 48)
                .sum::<usize>()
            + www_authenticate.iter().map(|v| v.len() + 48).sum::<usize>();
        let Ok(mut cache) = self.0.cache.lock() else {
            return;
        };
        if let Some(old) = cache.entries.remove(&key) {
            cache.bytes = cache.bytes.saturating_sub(old.bytes);
        }
        if cache.entries.len() >= MAX_CACHE_ENTRIES || cache.bytes + bytes > MAX_CACHE_BYTES {
            cache.entries.retain(|_, e| e.until > now);
            cache.bytes = cache.entries.values().map(|e| e.bytes).sum();
            // Still full: start over rather than track recency on every hit.
            if cache.entries.len() >= MAX_CACHE_ENTRIES || cache.bytes + bytes > MAX_CACHE_BYTES {
                cache.entries.clear();
                cache.bytes = 0;
            }
        }
        cache.bytes += bytes;
        cache.entries.insert(
            key,
            Cached {
                status,
                headers: headers.to_vec(),
                www_authenticate: www_authenticate.to_vec(),
                until,
                bytes,
            },
        );
    }

    /// The most recently idled live connection to `target`.
    fn idle(&self, target: &Target) -> Option<Sender> {
        let mut pool = self.0.pool.lock().ok()?;
        let idle = pool.get_mut(target)?;
        let mut found = None;
        while let Some((s, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && !s.is_closed() {
                found = Some(s);
                break;
            }
        }
        if idle.is_empty() {
            pool.remove(target);
        }
        found
    }

    fn put(&self, target: Target, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut pool) = self.0.pool.lock() else {
            return;
        };
        if !pool.contains_key(&target) && pool.len() >= MAX_POOL_TARGETS {
            pool.retain(|_, idle| {
                idle.retain(|(s, since)| since.elapsed() < IDLE_TIMEOUT && !s.is_closed());
                !idle.is_empty()
            });
            if pool.len() >= MAX_POOL_TARGETS {
                return;
            }
        }
        let idle = pool.entry(target).or_default();
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push((sender, Instant::now()));
        }
    }

    /// Returns the connection to the pool once the answer's body is read
    /// (at once when it has none).
    fn keep_after(&self, target: Target, sender: Sender, body: hyper::body::Incoming) {
        use http_body::Body as _;
        if body.is_end_stream() {
            self.put(target, sender);
            return;
        }
        let live = self.clone();
        tokio::spawn(async move {
            let drained =
                tokio::time::timeout(DRAIN_TIME, Limited::new(body, MAX_DRAINED_BODY).collect())
                    .await;
            if matches!(drained, Ok(Ok(_))) {
                live.put(target, sender);
            }
        });
    }
}

/// A new HTTP/1.1 connection to `target`; its task runs on the runtime.
async fn connect(target: &Target) -> Result<Sender, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect to {}:{}: {e}", target.host, target.port))?;
    let _ = tcp.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder.max_header_size(MAX_RESPONSE_HEAD);
    let handshake = |e: hyper::Error| format!("HTTP handshake: {e}");
    if target.https {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| format!("{}: not a TLS server name", target.host))?;
        let tls = tokio_rustls::TlsConnector::from(unverified_tls())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS to {}: {e}", target.host))?;
        let (sender, conn) = builder
            .handshake(TokioIo::new(tls))
            .await
            .map_err(handshake)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    } else {
        let (sender, conn) = builder
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(handshake)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// TLS as nginx's `proxy_pass` does it by default: SNI sent, the
/// certificate not checked (the handshake's signatures still are).
fn unverified_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = Arc::new(crate::forward::upstream_tls::UpstreamVerifier::unverified(
                provider.clone(),
            ));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(verifier)
                        .with_no_client_auth()
                });
            // The default protocol versions are always available.
            Arc::new(config.unwrap_or_else(|_| unreachable!("TLS 1.2 and 1.3 are built in")))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::body::Incoming;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// How the test auth service answers.
    #[derive(Clone)]
    struct Script {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
        /// Read the request, then drop the connection without an answer.
        close: bool,
        keep_alive: bool,
    }

    /// A sub-request as the test auth service received it.
    #[derive(Clone, Debug)]
    struct Seen {
        method: Method,
        uri: String,
        headers: HeaderMap,
        body_len: usize,
    }

    struct AuthServer {
        addr: SocketAddr,
        script: Arc<Mutex<Script>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
        sni: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl AuthServer {
        async fn start() -> AuthServer {
            AuthServer::start_with(None).await
        }

        async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> AuthServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let script = Arc::new(Mutex::new(Script {
                status: 200,
                headers: Vec::new(),
                body: String::new(),
                delay: Duration::ZERO,
                close: false,
                keep_alive: true,
            }));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(AtomicUsize::new(0));
            let sni = Arc::new(Mutex::new(Vec::new()));
            {
                let (script, seen, connections, sni) = (
                    script.clone(),
                    seen.clone(),
                    connections.clone(),
                    sni.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let Ok((mut tcp, _)) = listener.accept().await else {
                            return;
                        };
                        connections.fetch_add(1, Ordering::SeqCst);
                        let s = script.lock().unwrap().clone();
                        if s.close {
                            let mut buf = [0u8; 4096];
                            let _ = tcp.read(&mut buf).await;
                            drop(tcp);
                            continue;
                        }
                        let (script, seen, sni, tls) =
                            (script.clone(), seen.clone(), sni.clone(), tls.clone());
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                                let (script, seen) = (script.clone(), seen.clone());
                                async move {
                                    let s = script.lock().unwrap().clone();
                                    if s.close {
                                        // Gone: hyper drops the connection unanswered.
                                        return Err(std::io::Error::other("closed"));
                                    }
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map_err(std::io::Error::other)?
                                        .to_bytes();
                                    seen.lock().unwrap().push(Seen {
                                        method: parts.method,
                                        uri: parts.uri.to_string(),
                                        headers: parts.headers,
                                        body_len: body.len(),
                                    });
                                    if !s.delay.is_zero() {
                                        tokio::time::sleep(s.delay).await;
                                    }
                                    let mut resp =
                                        http::Response::new(Full::new(Bytes::from(s.body)));
                                    *resp.status_mut() = StatusCode::from_u16(s.status).unwrap();
                                    for (n, v) in &s.headers {
                                        resp.headers_mut().append(
                                            HeaderName::from_bytes(n.as_bytes()).unwrap(),
                                            HeaderValue::from_str(v).unwrap(),
                                        );
                                    }
                                    Ok::<_, std::io::Error>(resp)
                                }
                            });
                            let mut server = hyper::server::conn::http1::Builder::new();
                            server.keep_alive(s.keep_alive);
                            match tls {
                                Some(acceptor) => {
                                    let Ok(stream) = acceptor.accept(tcp).await else {
                                        return;
                                    };
                                    let name = stream.get_ref().1.server_name().map(str::to_owned);
                                    sni.lock().unwrap().push(name);
                                    let _ =
                                        server.serve_connection(TokioIo::new(stream), svc).await;
                                }
                                None => {
                                    let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
                                }
                            }
                        });
                    }
                })
            };
            AuthServer {
                addr,
                script,
                seen,
                connections,
                sni,
            }
        }

        fn answer(&self, status: u16, headers: &[(&str, &str)]) {
            let mut s = self.script.lock().unwrap();
            s.status = status;
            s.headers = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
        }

        fn edit(&self, f: impl FnOnce(&mut Script)) {
            f(&mut self.script.lock().unwrap());
        }

        fn requests(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    /// A stand-in for the request's expander (service's `expand_redirect`,
    /// which the request path passes): the same variables, escaping and
    /// absolute-path rule, for one request.
    fn expander(
        scheme: &'static str,
        http_host: &str,
        request_uri: &str,
    ) -> impl Fn(&str) -> String {
        let http_host = http_host.to_owned();
        let request_uri = request_uri.to_owned();
        move |template: &str| {
            let host = http_host
                .split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let (path, query) = request_uri.split_once('?').unwrap_or((&request_uri, ""));
            let escaped: String = request_uri
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let mut out = String::new();
            let mut rest = template;
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                rest = &rest[i + 1..];
                let n = rest
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                out.push_str(match &rest[..n] {
                    "escaped_request_uri" => &escaped,
                    "request_uri" => &request_uri,
                    "http_host" => &http_host,
                    "is_args" if !query.is_empty() => "?",
                    "scheme" => scheme,
                    "host" => &host,
                    "args" => query,
                    "uri" => path,
                    _ => "",
                });
                rest = &rest[n..];
            }
            out.push_str(rest);
            if out.starts_with('/') {
                out = format!("{scheme}://{http_host}{out}");
            }
            out
        }
    }

    fn auth(url: &str) -> ExternalAuth {
        ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url,
            ..Default::default()
        })
        .unwrap()
    }

    fn get(uri: &str, host: &str) -> Request<()> {
        Request::builder()
            .uri(uri)
            .header(HOST, host)
            .body(())
            .unwrap()
    }

    /// Runs one check as route `route` for a plain-HTTP request.
    async fn check_as(ext: &ExternalAuth, route: &str, req: &Request<()>) -> AuthVerdict {
        let host = req.headers()[HOST].to_str().unwrap().to_owned();
        let uri = req.uri().path_and_query().unwrap().as_str().to_owned();
        let expand = expander("http", &host, &uri);
        let id = HeaderValue::from_static("req-1234");
        let ctx = AuthContext {
            route,
            client: "10.1.2.3".parse().unwrap(),
            https: false,
            request_id: &id,
            expand: &expand,
        };
        ext.check(req, &ctx).await
    }

    async fn check(ext: &ExternalAuth, req: &Request<()>) -> AuthVerdict {
        check_as(ext, "default/app", req).await
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    // === the sub-request ===

    #[tokio::test]
    async fn sub_request_is_get_without_body_with_nginx_headers() {
        let server = AuthServer::start().await;
        let ext = auth(&server.url("/basic-auth/user/password?x=1"));
        let req = Request::builder()
            .method("POST")
            .uri("/?a=b&c=d")
            .header(HOST, "App.Example:8080")
            .header("cookie", "s=1")
            .header("authorization", "Basic dXNlcjpwYXNzd29yZA==")
            .header("accept", "text/html")
            .header("x-custom", "kept")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("x-original-url", "http://evil/")
            .header("x-sent-from", "forged")
            .header("x-request-id", "forged")
            .header("content-length", "5")
            .header("connection", "keep-alive, x-dropped")
            .header("x-dropped", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("expect", "100-continue")
            .header("upgrade", "websocket")
            .header("x_under", "1")
            .body(())
            .unwrap();
        let verdict = check(&ext, &req).await;
        assert!(matches!(verdict, AuthVerdict::Allow { .. }), "{verdict:?}");
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, Method::GET);
        // The URL as written: the client's path is not appended.
        assert_eq!(s.uri, "/basic-auth/user/password?x=1");
        assert_eq!(s.body_len, 0);
        let h = &s.headers;
        assert_eq!(values(h, "host"), ["127.0.0.1"]);
        assert_eq!(
            values(h, "x-original-url"),
            ["http://App.Example:8080/?a=b&c=d"]
        );
        assert_eq!(values(h, "x-original-method"), ["POST"]);
        assert_eq!(values(h, "x-auth-request-redirect"), ["/?a=b&c=d"]);
        assert_eq!(values(h, "x-sent-from"), ["nginx-ingress-controller"]);
        assert_eq!(values(h, "x-real-ip"), ["10.1.2.3"]);
        assert_eq!(values(h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(values(h, "x-request-id"), ["req-1234"]);
        assert_eq!(values(h, "cookie"), ["s=1"]);
        assert_eq!(values(h, "authorization"), ["Basic dXNlcjpwYXNzd29yZA=="]);
        assert_eq!(values(h, "accept"), ["text/html"]);
        assert_eq!(values(h, "x-custom"), ["kept"]);
        for absent in [
            "x-forwarded-proto",
            "content-length",
            "x-dropped",
            "keep-alive",
            "te",
            "expect",
            "upgrade",
            "x_under",
            "x-original-uri",
            "x-scheme",
        ] {
            assert!(!h.contains_key(absent), "{absent} was sent: {h:?}");
        }
    }

    #[tokio::test]
    async fn auth_method_sets_method_original_uri_and_scheme() {
        let server = AuthServer::start().await;
        let url = server.url("/check");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            method: Some("POST"),
            request_redirect: Some("https://app.example/landing"),
            ..Default::default()
        })
        .unwrap();
        let req = get("/p?q=1", "app.example");
        let expand = expander("https", "app.example", "/p?q=1");
        let id = HeaderValue::from_static("id-1");
        let ctx = AuthContext {
            route: "r",
            client: "2001:db8::1".parse().unwrap(),
            https: true,
            request_id: &id,
            expand: &expand,
        };
        assert!(matches!(
            ext.check(&req, &ctx).await,
            AuthVerdict::Allow { .. }
        ));
        let s = &server.requests()[0];
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.body_len, 0);
        assert!(!s.headers.contains_key("content-length"), "{:?}", s.headers);
        assert!(!s.headers.contains_key("transfer-encoding"));
        assert_eq!(values(&s.headers, "x-original-uri"), ["/p?q=1"]);
        assert_eq!(values(&s.headers, "x-scheme"), ["https"]);
        assert_eq!(
            values(&s.headers, "x-original-url"),
            ["https://app.example/p?q=1"]
        );
        assert_eq!(
            values(&s.headers, "x-auth-request-redirect"),
            ["https://app.example/landing"]
        );
        assert_eq!(values(&s.headers, "x-forwarded-for"), ["2001:db8::1"]);
    }

    #[tokio::test]
    async fn proxy_set_headers_replace_the_clients() {
        let server = AuthServer::start().await;
        let url = server.url("/check");
        let cm = [("My-Custom-Header".to_owned(), "42".to_owned())];
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            proxy_set_headers: &cm,
            ..Default::default()
        })
        .unwrap();
        let mut req = get("/", "app");
        req.headers_mut()
            .insert("my-custom-header", HeaderValue::from_static("client"));
        check(&ext, &req).await;
        assert_eq!(
            values(&server.requests()[0].headers, "my-custom-header"),
            ["42"]
        );
    }

    #[tokio::test]
    async fn auth_url_variables_are_expanded() {
        let server = AuthServer::start().await;
        let ext = auth(&format!(
            "http://127.0.0.1:{}/auth/$host$request_uri",
            server.addr.port()
        ));
        check(&ext, &get("/x?y=1", "app.example")).await;
        assert_eq!(server.requests()[0].uri, "/auth/app.example/x?y=1");
    }

    // === the verdict ===

    #[tokio::test]
    async fn statuses_map_as_nginx_auth_request() {
        let server = AuthServer::start().await;
        let plain = auth(&server.url("/check"));
        let url = server.url("/check");
        let with_signin = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            signin: Some("http://$host/auth/start"),
            ..Default::default()
        })
        .unwrap();
        let req = get("/", "auth");
        for (status, want) in [
            (200, StatusCode::OK),
            (202, StatusCode::OK),
            (204, StatusCode::OK),
            (401, StatusCode::UNAUTHORIZED),
            (403, StatusCode::FORBIDDEN),
            (500, StatusCode::INTERNAL_SERVER_ERROR),
            (503, StatusCode::INTERNAL_SERVER_ERROR),
            (404, StatusCode::INTERNAL_SERVER_ERROR),
            (302, StatusCode::INTERNAL_SERVER_ERROR),
            (400, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            server.answer(status, &[]);
            assert_eq!(
                check(&plain, &req).await.status(),
                want,
                "auth answered {status}"
            );
        }
        // `auth-signin` reacts to 401 only.
        server.answer(401, &[]);
        assert_eq!(check(&with_signin, &req).await.status(), StatusCode::FOUND);
        server.answer(403, &[]);
        assert_eq!(
            check(&with_signin, &req).await.status(),
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn unauthorized_passes_www_authenticate() {
        let server = AuthServer::start().await;
        server.answer(401, &[("www-authenticate", "Basic realm=\"x\"")]);
        let v = check(&auth(&server.url("/check")), &get("/", "app")).await;
        assert_eq!(
            v,
            AuthVerdict::Unauthorized {
                www_authenticate: vec![HeaderValue::from_static("Basic realm=\"x\"")],
                set_cookies: vec![],
            }
        );
    }

    #[tokio::test]
    async fn timeout_is_an_error() {
        let server = AuthServer::start().await;
        server.edit(|s| s.delay = Duration::from_secs(30));
        let mut ext = auth(&server.url("/check"));
        ext.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let v = check(&ext, &get("/", "app")).await;
        assert_eq!(
            v,
            AuthVerdict::Error {
                set_cookies: vec![]
            }
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn closed_connection_is_an_error() {
        let server = AuthServer::start().await;
        server.edit(|s| s.close = true);
        let v = check(&auth(&server.url("/check")), &get("/", "app")).await;
        assert_eq!(
            v,
            AuthVerdict::Error {
                set_cookies: vec![]
            }
        );
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let v = check(&auth(&format!("http://{addr}/check")), &get("/", "app")).await;
        assert_eq!(
            v,
            AuthVerdict::Error {
                set_cookies: vec![]
            }
        );
    }

    #[tokio::test]
    async fn a_url_bad_after_expansion_is_an_error() {
        // `$http_host` may hold a port or odd characters; the URL must
        // still parse, else 500.
        let ext = auth("http://$host/check");
        let v = check(&ext, &get("/", "a:b:c")).await;
        assert_eq!(
            v,
            AuthVerdict::Error {
                set_cookies: vec![]
            }
        );
    }

    // === auth-response-headers ===

    #[tokio::test]
    async fn response_headers_overwrite_and_remove_the_clients() {
        let server = AuthServer::start().await;
        server.answer(
            202,
            &[
                ("foo", "from-auth"),
                ("x-empty", ""),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("x-unlisted", "1"),
            ],
        );
        let url = server.url("/check");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            response_headers: Some("Foo, X-Missing,X-Empty , X-Multi,"),
            ..Default::default()
        })
        .unwrap();
        let mut client = get("/", "app");
        client
            .headers_mut()
            .insert("foo", HeaderValue::from_static("bar"));
        client
            .headers_mut()
            .insert("x-missing", HeaderValue::from_static("spoof"));
        client
            .headers_mut()
            .insert("x-other", HeaderValue::from_static("kept"));
        let AuthVerdict::Allow { set_headers, .. } = check(&ext, &client).await else {
            panic!("not allowed");
        };
        assert_eq!(
            set_headers,
            vec![
                (
                    HeaderName::from_static("foo"),
                    Some(HeaderValue::from_static("from-auth"))
                ),
                (HeaderName::from_static("x-missing"), None),
                (HeaderName::from_static("x-empty"), None),
                (
                    HeaderName::from_static("x-multi"),
                    Some(HeaderValue::from_static("a, b"))
                ),
            ]
        );
        let mut upstream = client.headers().clone();
        apply_upstream_headers(&set_headers, &mut upstream);
        assert_eq!(values(&upstream, "foo"), ["from-auth"]);
        assert!(!upstream.contains_key("x-missing"));
        assert!(!upstream.contains_key("x-unlisted"));
        assert_eq!(values(&upstream, "x-other"), ["kept"]);
    }

    // === Set-Cookie ===

    #[tokio::test]
    async fn cookies_pass_on_success_and_with_always() {
        let server = AuthServer::start().await;
        let cookies = [("set-cookie", "alma=armud"), ("set-cookie", "b=2; Path=/")];
        let both = vec![
            HeaderValue::from_static("alma=armud"),
            HeaderValue::from_static("b=2; Path=/"),
        ];
        let url = server.url("/cookies/set/alma/armud");
        let annotations = NginxAuthAnnotations {
            url: &url,
            signin: Some("http://$host/auth/start"),
            ..Default::default()
        };
        let default = ExternalAuth::from_nginx(&annotations).unwrap();
        let always = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            always_set_cookie: Some("true"),
            ..annotations.clone()
        })
        .unwrap();
        let req = get("/?a=b&c=d", "auth-check-cookies");

        server.answer(200, &cookies);
        let v = check(&default, &req).await;
        assert_eq!(v.set_cookies(), both.as_slice());
        // The upstream's status decides (e2e: 200 keeps it, 503 does not).
        assert!(default.passes_cookies(StatusCode::OK));
        assert!(default.passes_cookies(StatusCode::FOUND));
        assert!(!default.passes_cookies(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!default.passes_cookies(StatusCode::NOT_FOUND));
        assert!(always.passes_cookies(StatusCode::SERVICE_UNAVAILABLE));

        // The sign-in 302 carries them.
        server.answer(401, &cookies);
        assert_eq!(check(&default, &req).await.set_cookies(), both.as_slice());

        // heim's own refusals only with `always`.
        for status in [403, 500] {
            server.answer(status, &cookies);
            assert!(check(&default, &req).await.set_cookies().is_empty());
            assert_eq!(check(&always, &req).await.set_cookies(), both.as_slice());
        }
        let plain = auth(&url);
        server.answer(401, &cookies);
        assert!(check(&plain, &req).await.set_cookies().is_empty());
    }

    // === the sign-in redirect ===

    #[tokio::test]
    async fn signin_location_is_the_e2e_example() {
        let server = AuthServer::start().await;
        server.answer(401, &[]);
        let url = server.url("/basic-auth/user/password");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            signin: Some("http://$host/auth/start"),
            ..Default::default()
        })
        .unwrap();
        let v = check(&ext, &get("/?a=b&c=d", "auth")).await;
        assert_eq!(
            v,
            AuthVerdict::SignIn {
                location: HeaderValue::from_static(
                    "http://auth/auth/start?rd=http://auth%2F%3Fa%3Db%26c%3Dd"
                ),
                set_cookies: vec![],
            }
        );
        let custom = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            signin: Some("http://$host/auth/start"),
            signin_redirect_param: Some("orig"),
            ..Default::default()
        })
        .unwrap();
        let AuthVerdict::SignIn { location, .. } = check(&custom, &get("/?a=b&c=d", "auth")).await
        else {
            panic!("no sign-in");
        };
        assert_eq!(
            location,
            "http://auth/auth/start?orig=http://auth%2F%3Fa%3Db%26c%3Dd"
        );
    }

    #[tokio::test]
    async fn signin_already_holding_rd_is_kept_as_written() {
        let server = AuthServer::start().await;
        server.answer(401, &[]);
        let url = server.url("/oauth2/auth");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            signin: Some("https://$host/oauth2/start?rd=$escaped_request_uri"),
            ..Default::default()
        })
        .unwrap();
        let AuthVerdict::SignIn { location, .. } = check(&ext, &get("/a~b/c?x=1", "app")).await
        else {
            panic!("no sign-in");
        };
        assert_eq!(location, "https://app/oauth2/start?rd=%2Fa~b%2Fc%3Fx%3D1");
    }

    #[test]
    fn signin_redirect_param_is_appended_as_build_auth_sign_url() {
        const O: &str = "$scheme://$http_host$escaped_request_uri";
        for (signin, param, want) in [
            (
                "http://$host/auth/start",
                "rd",
                format!("http://$host/auth/start?rd={O}"),
            ),
            (
                "http://h/s?foo=bar",
                "rd",
                format!("http://h/s?foo=bar&rd={O}"),
            ),
            (
                "http://h/s?rd=$escaped_request_uri",
                "rd",
                "http://h/s?rd=$escaped_request_uri".to_owned(),
            ),
            (
                "http://h/s?foo=1&rd=x",
                "rd",
                "http://h/s?foo=1&rd=x".to_owned(),
            ),
            // An empty value is no value to Go's `q.Get`.
            ("http://h/s?rd=", "rd", format!("http://h/s?rd=&rd={O}")),
            (
                "http://h/s?orig=x",
                "rd",
                format!("http://h/s?orig=x&rd={O}"),
            ),
            ("http://h/s?orig=x", "orig", "http://h/s?orig=x".to_owned()),
            // No pair Go would read: as if there were no query.
            ("http://h/s?", "rd", format!("http://h/s??rd={O}")),
            ("/auth/start", "rd", format!("/auth/start?rd={O}")),
        ] {
            assert_eq!(
                signin_with_redirect(signin, param),
                want,
                "{signin} / {param}"
            );
        }
    }

    #[tokio::test]
    async fn a_signin_path_is_made_absolute() {
        let server = AuthServer::start().await;
        server.answer(401, &[]);
        let url = server.url("/check");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            signin: Some("/login"),
            ..Default::default()
        })
        .unwrap();
        let AuthVerdict::SignIn { location, .. } = check(&ext, &get("/x", "app:8080")).await else {
            panic!("no sign-in");
        };
        assert_eq!(location, "http://app:8080/login?rd=http://app:8080%2Fx");
    }

    // === the verdict cache ===

    fn cached_auth(url: &str, key: &str, durations: Option<&str>) -> ExternalAuth {
        ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url,
            signin: Some("http://$host/auth/start"),
            cache_key: Some(key),
            cache_duration: durations,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn cached_verdict_survives_the_auth_service() {
        let server = AuthServer::start().await;
        server.answer(200, &[]);
        let ext = cached_auth(
            &server.url("/basic-auth/user/password"),
            "fixed",
            Some("200 201 401 30m"),
        );
        let req = get("/foo", "auth");
        assert!(matches!(
            check_as(&ext, "auth/foo", &req).await,
            AuthVerdict::Allow { .. }
        ));
        assert_eq!(server.requests().len(), 1);
        // The e2e deletes the auth service: the cached verdict still holds
        // for its own location, not for another one or another server.
        server.edit(|s| s.close = true);
        assert!(matches!(
            check_as(&ext, "auth/foo", &req).await,
            AuthVerdict::Allow { .. }
        ));
        assert_eq!(server.requests().len(), 1);
        assert_eq!(
            check_as(&ext, "auth/bar", &req).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            check_as(&ext, "different/foo", &req).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn cache_key_is_expanded_per_request() {
        let server = AuthServer::start().await;
        server.answer(200, &[("foo", "v1")]);
        let url = server.url("/check");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            cache_key: Some("$request_uri"),
            response_headers: Some("Foo"),
            ..Default::default()
        })
        .unwrap();
        check(&ext, &get("/a", "app")).await;
        server.answer(200, &[("foo", "v2")]);
        // Same key: not asked again, and the cached headers come back.
        let AuthVerdict::Allow { set_headers, .. } = check(&ext, &get("/a", "app")).await else {
            panic!("not allowed");
        };
        assert_eq!(set_headers[0].1, Some(HeaderValue::from_static("v1")));
        assert_eq!(server.requests().len(), 1);
        // Another key: asked.
        let AuthVerdict::Allow { set_headers, .. } = check(&ext, &get("/b", "app")).await else {
            panic!("not allowed");
        };
        assert_eq!(set_headers[0].1, Some(HeaderValue::from_static("v2")));
        assert_eq!(server.requests().len(), 2);
        // Clones share the cache; equal specs compare equal.
        let clone = ext.clone();
        check(&clone, &get("/b", "app")).await;
        assert_eq!(server.requests().len(), 2);
        assert_eq!(clone, ext);
    }

    #[tokio::test]
    async fn cached_entries_expire_by_status() {
        let server = AuthServer::start().await;
        let ext = cached_auth(&server.url("/check"), "fixed", Some("200 1m, 401 10s"));
        let req = get("/", "auth");
        server.answer(401, &[]);
        assert_eq!(check(&ext, &req).await.status(), StatusCode::FOUND);
        server.answer(200, &[]);
        // A cached 401 still sends the client to sign in.
        assert_eq!(check(&ext, &req).await.status(), StatusCode::FOUND);
        assert_eq!(server.requests().len(), 1);
        ext.advance_clock(Duration::from_secs(11));
        assert_eq!(check(&ext, &req).await.status(), StatusCode::OK);
        assert_eq!(server.requests().len(), 2);
        ext.advance_clock(Duration::from_secs(59));
        assert_eq!(check(&ext, &req).await.status(), StatusCode::OK);
        assert_eq!(server.requests().len(), 2);
        ext.advance_clock(Duration::from_secs(2));
        check(&ext, &req).await;
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn uncacheable_answers_are_asked_each_time() {
        let server = AuthServer::start().await;
        let url = server.url("/check");
        let ext = cached_auth(&url, "fixed", None);
        let req = get("/", "auth");
        let mut asked = 0;
        for headers in [
            &[("set-cookie", "a=1")][..],
            &[("cache-control", "no-store")],
            &[("cache-control", "private, max-age=60")],
            &[("cache-control", "max-age=0")],
            &[("x-accel-expires", "0")],
            &[("vary", "*")],
        ] {
            server.answer(200, headers);
            check(&ext, &req).await;
            check(&ext, &req).await;
            asked += 2;
            assert_eq!(server.requests().len(), asked, "{headers:?}");
        }
        // Not on the default list (200 202 401): not kept.
        server.answer(403, &[]);
        check(&ext, &req).await;
        check(&ext, &req).await;
        assert_eq!(server.requests().len(), asked + 2);
        // nginx caches GET and HEAD sub-requests only.
        let post = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            method: Some("POST"),
            cache_key: Some("fixed"),
            ..Default::default()
        })
        .unwrap();
        server.answer(200, &[]);
        check(&post, &req).await;
        check(&post, &req).await;
        assert_eq!(server.requests().len(), asked + 4);
    }

    #[tokio::test]
    async fn a_cached_401_keeps_www_authenticate() {
        let server = AuthServer::start().await;
        server.answer(401, &[("www-authenticate", "Basic realm=\"x\"")]);
        let url = server.url("/check");
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: &url,
            cache_key: Some("fixed"),
            ..Default::default()
        })
        .unwrap();
        let req = get("/", "app");
        let first = check(&ext, &req).await;
        assert_eq!(check(&ext, &req).await, first);
        assert_eq!(server.requests().len(), 1);
        assert!(
            matches!(first, AuthVerdict::Unauthorized { ref www_authenticate, .. } if www_authenticate.len() == 1)
        );
    }

    #[tokio::test]
    async fn cache_control_max_age_sets_the_time() {
        let server = AuthServer::start().await;
        let ext = cached_auth(&server.url("/check"), "fixed", Some("200 1h"));
        let req = get("/", "auth");
        server.answer(200, &[("cache-control", "public, max-age=5")]);
        check(&ext, &req).await;
        check(&ext, &req).await;
        assert_eq!(server.requests().len(), 1);
        ext.advance_clock(Duration::from_secs(6));
        check(&ext, &req).await;
        assert_eq!(server.requests().len(), 2);
    }

    #[test]
    fn cache_stays_bounded() {
        let live = Live::default();
        let headers = vec![(
            HeaderName::from_static("foo"),
            Some(HeaderValue::from_static("x")),
        )];
        for i in 0..(MAX_CACHE_ENTRIES + 10) {
            live.store(
                cache_key("r", &i.to_string()),
                200,
                &headers,
                &[],
                Duration::from_secs(60),
            );
        }
        let cache = live.0.cache.lock().unwrap();
        assert!(cache.entries.len() <= MAX_CACHE_ENTRIES);
        assert!(cache.bytes <= MAX_CACHE_BYTES);
        assert!(!cache.entries.is_empty());
    }

    // === connections ===

    #[tokio::test]
    async fn connections_are_kept_alive() {
        let server = AuthServer::start().await;
        let ext = auth(&server.url("/check"));
        for _ in 0..3 {
            assert!(matches!(
                check(&ext, &get("/", "app")).await,
                AuthVerdict::Allow { .. }
            ));
        }
        assert_eq!(server.requests().len(), 3);
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_server_closing_after_each_answer_is_not_an_error() {
        let server = AuthServer::start().await;
        server.edit(|s| s.keep_alive = false);
        let ext = auth(&server.url("/check"));
        for _ in 0..3 {
            assert!(matches!(
                check(&ext, &get("/", "app")).await,
                AuthVerdict::Allow { .. }
            ));
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn https_is_not_verified_but_sends_sni() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let server =
            AuthServer::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
        server.answer(202, &[]);
        let ext = auth(&format!("https://localhost:{}/check", server.addr.port()));
        assert!(matches!(
            check(&ext, &get("/", "app")).await,
            AuthVerdict::Allow { .. }
        ));
        assert_eq!(*server.sni.lock().unwrap(), [Some("localhost".to_owned())]);
        assert_eq!(values(&server.requests()[0].headers, "host"), ["localhost"]);
    }

    // === validation ===

    #[test]
    fn annotations_are_validated() {
        let ok = "http://auth.ns.svc.cluster.local/check";
        let base = NginxAuthAnnotations {
            url: ok,
            ..Default::default()
        };
        let bad_cm = [("Bad Name".to_owned(), "1".to_owned())];
        let var_cm = [("X-A".to_owned(), "$remote_addr".to_owned())];
        let cases: Vec<(NginxAuthAnnotations<'_>, &str, &str)> = vec![
            (
                NginxAuthAnnotations {
                    url: "https://invalid..auth.url",
                    ..base.clone()
                },
                "auth-url",
                "invalid url host",
            ),
            (
                NginxAuthAnnotations {
                    url: "",
                    ..base.clone()
                },
                "auth-url",
                "empty",
            ),
            (
                NginxAuthAnnotations {
                    url: "ftp://x/y",
                    ..base.clone()
                },
                "auth-url",
                "not an http",
            ),
            (
                NginxAuthAnnotations {
                    url: "/relative",
                    ..base.clone()
                },
                "auth-url",
                "could not parse",
            ),
            (
                NginxAuthAnnotations {
                    url: "http:///x",
                    ..base.clone()
                },
                "auth-url",
                "could not parse",
            ),
            (
                NginxAuthAnnotations {
                    url: "http://$hostname/x",
                    ..base.clone()
                },
                "auth-url",
                "$hostname",
            ),
            (
                NginxAuthAnnotations {
                    url: "http://x/\"a",
                    ..base.clone()
                },
                "auth-url",
                "refuses",
            ),
            (
                NginxAuthAnnotations {
                    url: "http://x/a;b",
                    ..base.clone()
                },
                "auth-url",
                "refuses",
            ),
            (
                NginxAuthAnnotations {
                    method: Some("get"),
                    ..base.clone()
                },
                "auth-method",
                "GET",
            ),
            (
                NginxAuthAnnotations {
                    method: Some("FOO"),
                    ..base.clone()
                },
                "auth-method",
                "FOO",
            ),
            (
                NginxAuthAnnotations {
                    signin: Some("http://$remote_addr/s"),
                    ..base.clone()
                },
                "auth-signin",
                "$remote_addr",
            ),
            (
                NginxAuthAnnotations {
                    signin: Some("javascript:alert(1)"),
                    ..base.clone()
                },
                "auth-signin",
                "refuses",
            ),
            (
                NginxAuthAnnotations {
                    signin: Some("mailto:x"),
                    ..base.clone()
                },
                "auth-signin",
                "could not parse",
            ),
            (
                NginxAuthAnnotations {
                    signin_redirect_param: Some("r&d"),
                    ..base.clone()
                },
                "auth-signin-redirect-param",
                "r&d",
            ),
            (
                NginxAuthAnnotations {
                    response_headers: Some("Foo, Bar Baz"),
                    ..base.clone()
                },
                "auth-response-headers",
                "Bar Baz",
            ),
            (
                NginxAuthAnnotations {
                    response_headers: Some("Foo:"),
                    ..base.clone()
                },
                "auth-response-headers",
                "Foo:",
            ),
            (
                NginxAuthAnnotations {
                    request_redirect: Some("$request_uri"),
                    ..base.clone()
                },
                "auth-request-redirect",
                "refuses",
            ),
            (
                NginxAuthAnnotations {
                    always_set_cookie: Some("yes"),
                    ..base.clone()
                },
                "auth-always-set-cookie",
                "yes",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("$http_authorization"),
                    ..base.clone()
                },
                "auth-cache-key",
                "$http_authorization",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("a b"),
                    ..base.clone()
                },
                "auth-cache-key",
                "refuses",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("k"),
                    cache_duration: Some("200 abc"),
                    ..base.clone()
                },
                "auth-cache-duration",
                "200 abc",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("k"),
                    cache_duration: Some("5m 200"),
                    ..base.clone()
                },
                "auth-cache-duration",
                "5m 200",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("k"),
                    cache_duration: Some("2000 5m"),
                    ..base.clone()
                },
                "auth-cache-duration",
                "2000",
            ),
            (
                NginxAuthAnnotations {
                    cache_key: Some("k"),
                    cache_duration: Some("200 5x"),
                    ..base.clone()
                },
                "auth-cache-duration",
                "5x",
            ),
            (
                NginxAuthAnnotations {
                    proxy_set_headers: &bad_cm,
                    ..base.clone()
                },
                "auth-proxy-set-headers",
                "Bad Name",
            ),
            (
                NginxAuthAnnotations {
                    proxy_set_headers: &var_cm,
                    ..base.clone()
                },
                "auth-proxy-set-headers",
                "variables",
            ),
        ];
        for (a, annotation, needle) in cases {
            let e = ExternalAuth::from_nginx(&a).expect_err(needle);
            assert_eq!(e.annotation, annotation, "{e}");
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        }
    }

    #[test]
    fn defaults_and_good_values() {
        let ext = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: "https://$host/oauth2/auth",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ext.method, Method::GET);
        assert!(!ext.method_set);
        assert_eq!(ext.signin_redirect_param, "rd");
        assert_eq!(ext.signin, None);
        assert!(!ext.always_set_cookie);
        assert_eq!(ext.cache, None);
        assert_eq!(ext.timeout, DEFAULT_TIMEOUT);

        let m = |s: u64| Duration::from_secs(60 * s);
        for (durations, want) in [
            (
                None,
                vec![(Some(200), m(5)), (Some(202), m(5)), (Some(401), m(5))],
            ),
            (
                Some(""),
                vec![(Some(200), m(5)), (Some(202), m(5)), (Some(401), m(5))],
            ),
            (
                Some("200 202 401 30m"),
                vec![(Some(200), m(30)), (Some(202), m(30)), (Some(401), m(30))],
            ),
            (
                Some("200  202 10m, 401 5m"),
                vec![(Some(200), m(10)), (Some(202), m(10)), (Some(401), m(5))],
            ),
            (
                Some("5m"),
                vec![(Some(200), m(5)), (Some(301), m(5)), (Some(302), m(5))],
            ),
            (
                Some("401 30s, any 1h"),
                vec![(Some(401), Duration::from_secs(30)), (None, m(60))],
            ),
            (
                Some("200 500ms"),
                vec![(Some(200), Duration::from_millis(500))],
            ),
            (Some("200 1d"), vec![(Some(200), m(24 * 60))]),
        ] {
            let spec = CacheSpec::parse("$host$escaped_request_uri", durations).unwrap();
            let got: Vec<_> = spec.valid.iter().map(|v| (v.status, v.duration)).collect();
            assert_eq!(got, want, "{durations:?}");
        }
        let spec = CacheSpec::parse("k", Some("401 30s, any 1h")).unwrap();
        assert_eq!(spec.duration_for(401), Some(Duration::from_secs(30)));
        assert_eq!(spec.duration_for(200), Some(m(60)));
        let spec = CacheSpec::parse("k", None).unwrap();
        assert_eq!(spec.duration_for(403), None);

        let a = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: "http://10.0.0.7:4180/oauth2/auth?x=$host",
            method: Some("HEAD"),
            signin: Some("https://$host/oauth2/start?rd=$escaped_request_uri"),
            signin_redirect_param: Some("orig"),
            response_headers: Some("X-Auth-Request-User, X-Auth-Request-Email"),
            request_redirect: Some("https://app.example/cb?x=1"),
            always_set_cookie: Some("True"),
            cache_key: Some("fixed"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.method, Method::HEAD);
        assert!(a.method_set);
        assert!(a.always_set_cookie);
        assert_eq!(a.response_headers.len(), 2);
        assert_eq!(a.signin_redirect_param, "orig");
        assert_eq!(a, a.clone());
        // Equal annotations give equal specs, whatever lives beside them.
        let b = ExternalAuth::from_nginx(&NginxAuthAnnotations {
            url: "http://10.0.0.7:4180/oauth2/auth?x=$host",
            method: Some("HEAD"),
            signin: Some("https://$host/oauth2/start?rd=$escaped_request_uri"),
            signin_redirect_param: Some("orig"),
            response_headers: Some("X-Auth-Request-User, X-Auth-Request-Email"),
            request_redirect: Some("https://app.example/cb?x=1"),
            always_set_cookie: Some("True"),
            cache_key: Some("fixed"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            ExternalAuth {
                always_set_cookie: false,
                ..b
            }
        );
    }
}
