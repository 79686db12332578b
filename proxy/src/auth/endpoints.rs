//! heim's own pages under `/.heim/`, on any host heim serves, answered
//! before routing:
//!
//! * `login` (GET: the form or the provider; POST: the local form),
//! * `handoff` (the one-time, short-lived sealed token that carries a
//!   session from the auth host to a route's own host, which sets its own
//!   host-only cookie: hosts need no common parent domain),
//! * `logout` (GET: a confirmation page; POST with its CSRF token),
//! * `me` (who am I, which routes may I use; HTML or JSON),
//! * `jwks.json` (the key that verifies `X-Heim-Jwt`).
//!
//! Every redirect target is checked by `redirect::safe_return_url`.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::policy::Session;
use super::redirect::safe_return_url;
use super::seal::{random_token, Purpose};
use super::{cookie, unix_now, Auth, ProviderImpl, PRE_AUTH_PREFIX, SESSION_COOKIE};
use crate::body::ProxyBody;
use crate::error::{Denied, ProxyError};
use crate::route::Policy;
use crate::service::{ConnCtx, Parsed};

/// How long a sign-in attempt (its pre-auth cookie) may take.
const PRE_AUTH_TTL: u64 = 600;
/// How long a hand-off token is good for.
const HANDOFF_TTL: u64 = 60;
/// Largest form heim reads.
const MAX_FORM: usize = 16 * 1024;

/// One sign-in attempt, in its own pre-auth cookie (so several tabs can
/// sign in at once).
#[derive(Serialize, Deserialize)]
struct PreAuth {
    state: String,
    rd: String,
    provider: String,
    exp: u64,
    /// OIDC's nonce, and the PKCE verifier (OIDC, GitHub).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    nonce: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    verifier: String,
    /// The route host's browser binding (see `Handoff::binding`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    binding: String,
}

impl PreAuth {
    /// A fresh attempt to sign in with `provider`, returning to `rd`.
    fn new(provider: &str, rd: &str, binding: &str) -> Self {
        PreAuth {
            state: random_token(16),
            rd: rd.to_string(),
            provider: provider.to_string(),
            exp: unix_now() + PRE_AUTH_TTL,
            nonce: String::new(),
            verifier: String::new(),
            binding: binding.to_string(),
        }
    }

    fn cookie_name(state: &str) -> String {
        format!("{PRE_AUTH_PREFIX}{state}")
    }
}

/// A CLI sign-in's one-time code: the session, for the CLI that holds the
/// PKCE verifier of `challenge`.
#[derive(Serialize, Deserialize)]
struct CliCode {
    session: Session,
    challenge: String,
    exp: u64,
    jti: String,
}

/// What a CLI refresh token carries (it lasts as long as the session).
#[derive(Serialize, Deserialize)]
struct CliRefresh {
    session: Session,
}

/// How long a CLI's access token lasts; it is refreshed after.
const CLI_TOKEN_TTL: u64 = 3600;
/// How long the CLI has to exchange its code.
const CLI_CODE_TTL: u64 = 60;

/// A session on its way from the auth host to a route's host.
#[derive(Serialize, Deserialize)]
struct Handoff {
    session: Session,
    rd: String,
    aud: String,
    exp: u64,
    jti: String,
    /// The value of the route host's `__Host-heim-binding` cookie, set when
    /// it sent this browser to sign in: only that browser can redeem the
    /// hand-off (no login CSRF, no session fixation by a link).
    binding: String,
}

/// The route host's cookie that binds a sign-in to the browser it began in.
pub const BINDING_COOKIE: &str = "__Host-heim-binding";
/// How long a route host waits for the browser it sent to sign in.
pub const BINDING_TTL: u64 = 600;

/// Tokens heim made itself (base64url), as they come back in a URL.
fn valid_token(t: &str) -> bool {
    (16..=64).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Serves `/.heim/*`; `None` when the path is not one of heim's pages.
pub async fn serve(
    req: Request<Incoming>,
    parsed: &Parsed,
    conn: &ConnCtx,
    auth: &Auth,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    let path = parsed.new_path.as_deref().unwrap_or(req.uri().path());
    let page = path.strip_prefix("/.heim/")?;
    let cx = Cx { parsed, conn, auth };
    // Only on hosts heim routes (and the auth host): a name a wildcard
    // certificate merely covers may point anywhere. The CLI's endpoints
    // answer on any name that reaches heim (`heim-tunnel --proxy` may name
    // a host no route has): they only redirect to the auth host, or take a
    // bearer token, and set no cookie.
    let method = req.method().clone();
    let cli = matches!(
        (page, &method),
        ("cli/login", &Method::GET) | ("cli/token", &Method::POST) | ("cli/logout", &Method::POST)
    );
    if !cli && !cx.serves(&parsed.host) {
        return Some(Err(ProxyError::NoRoute));
    }
    Some(match (page, method) {
        ("jwks.json", Method::GET | Method::HEAD) => Ok(json(StatusCode::OK, &auth.signing.jwks())),
        ("login", Method::GET | Method::HEAD) => Ok(cx.login_page(&req).await),
        ("login", Method::POST) => cx.login_post(req).await,
        ("callback", Method::GET) => cx.callback(&req).await,
        ("cli/login", Method::GET) => Ok(cx.cli_login(&req)),
        ("cli/login", Method::POST) => cx.cli_login_confirmed(req).await,
        ("cli/token", Method::POST) => cx.cli_token(req).await,
        ("cli/logout", Method::POST) => Ok(cx.cli_logout(&req)),
        ("handoff", Method::GET) => Ok(cx.handoff(&req)),
        ("logout", Method::GET | Method::HEAD) => Ok(cx.logout_page(&req)),
        ("logout", Method::POST) => cx.logout_post(req).await,
        ("me", Method::GET | Method::HEAD) => Ok(cx.me(&req)),
        (
            "jwks.json" | "login" | "callback" | "handoff" | "logout" | "me" | "cli/login"
            | "cli/token" | "cli/logout",
            _,
        ) => Err(ProxyError::MethodNotAllowed),
        _ => Err(ProxyError::NoRoute),
    })
}

struct Cx<'a> {
    parsed: &'a Parsed,
    conn: &'a ConnCtx,
    auth: &'a Auth,
}

impl Cx<'_> {
    fn https_port(&self) -> u16 {
        self.conn.shared.https_port()
    }

    /// `https://HOST[:port]`.
    fn origin_of(&self, host: &str) -> String {
        origin(host, self.https_port())
    }

    fn auth_origin(&self) -> String {
        self.origin_of(&self.auth.auth_host)
    }

    fn on_auth_host(&self) -> bool {
        self.parsed.host == self.auth.auth_host
    }

    /// True when heim routes `host` (a route names it, exactly or by
    /// wildcard), or it is the auth host: the only hosts a browser is ever
    /// sent to, and the only ones `/.heim/*` answers on.
    fn serves(&self, host: &str) -> bool {
        host == self.auth.auth_host || self.conn.shared.routes.load().names_host(host)
    }

    fn session<B>(&self, req: &Request<B>) -> Option<Session> {
        self.auth.session(
            req.headers(),
            &self.conn.shared.auth_state,
            &self.parsed.host,
        )
    }

    /// `rd` if safe, else heim's own `me` page on the auth host.
    fn return_url(&self, rd: Option<&str>) -> String {
        rd.and_then(|rd| safe_return_url(rd, |h| self.serves(h)))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/.heim/me", self.auth_origin()))
    }

    // === login ===

    async fn login_page<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let mut resp = self.login_page_inner(req).await;
        prune_pre_auth(req.headers(), &mut resp);
        resp
    }

    async fn login_page_inner<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let query = req.uri().query().unwrap_or("");
        if !self.on_auth_host() {
            // Sign-in happens on the auth host; carry the query over.
            return redirect(&format!("{}/.heim/login?{query}", self.auth_origin()));
        }
        let rd = self.return_url(query_param(query, "rd").as_deref());
        let binding = query_param(query, "n")
            .filter(|n| valid_token(n))
            .unwrap_or_default();
        if let Some(session) = self.session(req) {
            return self.finish(session, &rd, &binding, None);
        }
        let chosen = query_param(query, "provider");
        let provider = match (chosen.as_deref(), self.auth.providers.as_slice()) {
            (Some(name), _) => self.auth.provider(name),
            (None, [only]) => Some(only),
            _ => None,
        };
        let Some(provider) = provider else {
            return self.chooser(&rd);
        };
        let callback = format!("{}/.heim/callback", self.auth_origin());
        let mut pre = PreAuth::new(&provider.name, &rd, &binding);
        let state = pre.state.clone();
        let url = match &provider.imp {
            ProviderImpl::Local(_) => {
                return self.local_form(&provider.name, &pre.rd, &binding, None, StatusCode::OK)
            }
            ProviderImpl::Oidc(oidc) => match oidc.start(&callback, &state).await {
                Ok(started) => {
                    pre.nonce = started.nonce;
                    pre.verifier = started.verifier;
                    started.url
                }
                Err(e) => return self.provider_down(&provider.name, &e),
            },
            ProviderImpl::Github(gh) => {
                pre.verifier = random_token(32);
                gh.start(&callback, &state, &pre.verifier)
            }
        };
        let mut resp = redirect(&url);
        self.set_attempt(&mut resp, &pre);
        resp
    }

    /// Sets an attempt's pre-auth cookie.
    fn set_attempt(&self, resp: &mut Response<ProxyBody>, pre: &PreAuth) {
        let sealed = self.auth.sealer.seal(Purpose::PreAuth, pre);
        set_cookie(
            resp,
            &PreAuth::cookie_name(&pre.state),
            &sealed,
            PRE_AUTH_TTL,
        );
    }

    /// The attempt `state` names, if this browser holds its pre-auth cookie
    /// and it has not expired.
    fn attempt(&self, headers: &http::HeaderMap, state: &str) -> Option<PreAuth> {
        if state.is_empty() {
            return None;
        }
        let c = cookie(headers, &PreAuth::cookie_name(state))?;
        self.auth
            .sealer
            .open::<PreAuth>(Purpose::PreAuth, c)
            .filter(|p| {
                super::constant_time_eq(p.state.as_bytes(), state.as_bytes()) && p.exp > unix_now()
            })
    }

    /// A provider that cannot be reached: say so, never a 502 from heim.
    fn provider_down(&self, provider: &str, why: &str) -> Response<ProxyBody> {
        tracing::warn!(provider, error = why, "sign-in provider unavailable");
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            &format!(
                "<p>The sign-in provider {} cannot be reached right now. Try again in a moment.</p>",
                escape(provider)
            ),
        )
    }

    // === callback ===

    async fn callback<B>(&self, req: &Request<B>) -> Result<Response<ProxyBody>, ProxyError> {
        if !self.on_auth_host() {
            return Err(ProxyError::NoRoute);
        }
        let query = req.uri().query().unwrap_or("");
        let state = query_param(query, "state").unwrap_or_default();
        let pre = self.attempt(req.headers(), &state);
        let Some(pre) = pre else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "<p>This sign-in attempt expired or began in another browser. <a href=\"/.heim/login\">Start again</a>.</p>",
            ));
        };
        // RFC 9207: a provider that names itself must be the one this
        // attempt went to (no mix-up between providers).
        if let (Some(iss), Some(ProviderImpl::Oidc(oidc))) = (
            query_param(query, "iss"),
            self.auth.provider(&pre.provider).map(|p| &p.imp),
        ) {
            if iss.trim_end_matches('/') != oidc.issuer() {
                return Ok(self.refused(&pre.provider, "the answer came from another issuer"));
            }
        }
        if let Some(err) = query_param(query, "error") {
            return Ok(self.refused(&pre.provider, &format!("the provider said: {err}")));
        }
        let Some(code) = query_param(query, "code") else {
            return Err(ProxyError::BadRequest("no code"));
        };
        let Some(provider) = self.auth.provider(&pre.provider) else {
            return Err(ProxyError::BadRequest("unknown provider"));
        };
        let redirect = format!("{}/.heim/callback", self.auth_origin());
        let identity = match &provider.imp {
            ProviderImpl::Oidc(oidc) => {
                oidc.finish(&redirect, &code, &pre.nonce, &pre.verifier)
                    .await
            }
            ProviderImpl::Github(gh) => gh.finish(&redirect, &code, &pre.verifier).await,
            ProviderImpl::Local(_) => return Err(ProxyError::BadRequest("not an OAuth provider")),
        };
        let identity = match identity {
            Ok(i) => i,
            Err(e) => return Ok(self.refused(&provider.name, &e)),
        };
        tracing::info!(provider = %provider.name, user = %identity.user, "signed in");
        let session = self.new_session(&provider.name, identity);
        Ok(self.finish(session, &pre.rd, &pre.binding, Some(&pre.state)))
    }

    /// Sign-in did not succeed at the provider.
    fn refused(&self, provider: &str, why: &str) -> Response<ProxyBody> {
        tracing::info!(provider, reason = why, "sign-in refused");
        page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!(
                "<p>Signing in with {} did not succeed: {}.</p><p><a href=\"/.heim/login\">Try again</a></p>",
                escape(provider),
                escape(why)
            ),
        )
    }

    /// A session for `identity`, carrying only the groups, orgs and teams
    /// some route's policy names (the cookie stays small).
    fn new_session(&self, provider: &str, id: super::Identity) -> Session {
        let table = self.conn.shared.routes.load();
        let named = |pick: fn(&super::policy::AccessRules) -> &Vec<String>, v: &str| {
            table.routes().any(|r| match &r.spec.policy {
                Policy::Allow(rules) => pick(rules).iter().any(|x| x == v),
                _ => false,
            })
        };
        Session {
            groups: id
                .groups
                .into_iter()
                .filter(|g| named(|r| &r.groups, g))
                .collect(),
            orgs: id
                .orgs
                .into_iter()
                .filter(|o| named(|r| &r.github_orgs, o))
                .collect(),
            teams: id
                .teams
                .into_iter()
                .filter(|t| named(|r| &r.github_teams, t))
                .collect(),
            user: id.user,
            email: id.email,
            provider: provider.to_string(),
            expires: unix_now() + self.auth.session_ttl.as_secs(),
            id: random_token(16),
            host: String::new(),
        }
    }

    /// The list of providers, when there are several.
    fn chooser(&self, rd: &str) -> Response<ProxyBody> {
        let mut items = String::new();
        for p in &self.auth.providers {
            let _ = write!(
                items,
                "<li><a href=\"/.heim/login?provider={}&amp;rd={}\">Sign in with {}</a></li>",
                url_encode(&p.name),
                url_encode(rd),
                escape(&p.name)
            );
        }
        page(StatusCode::OK, "Sign in", &format!("<ul>{items}</ul>"))
    }

    /// heim's sign-in form for a local provider, with a fresh attempt.
    fn local_form(
        &self,
        provider: &str,
        rd: &str,
        binding: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<ProxyBody> {
        let pre = PreAuth::new(provider, rd, binding);
        let state = &pre.state;
        let error = error
            .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
            .unwrap_or_default();
        let body = format!(
            "{error}<form method=\"post\" action=\"/.heim/login\">\
             <input type=\"hidden\" name=\"state\" value=\"{state}\">\
             <label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>"
        );
        let mut resp = page(status, "Sign in", &body);
        self.set_attempt(&mut resp, &pre);
        resp
    }

    async fn login_post(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        if !self.on_auth_host() {
            return Err(ProxyError::NoRoute);
        }
        let headers = req.headers().clone();
        let form = read_form(req).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let state = field("state").unwrap_or("");
        // The attempt must be this browser's own: its pre-auth cookie.
        let pre = self.attempt(&headers, state);
        let Some(pre) = pre else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "<p>This sign-in form expired or was opened in another browser. <a href=\"/.heim/login\">Start again</a>.</p>",
            ));
        };
        let Some(provider) = self.auth.provider(&pre.provider) else {
            return Err(ProxyError::BadRequest("unknown provider"));
        };
        let ProviderImpl::Local(users) = &provider.imp else {
            return Err(ProxyError::BadRequest("not a local provider"));
        };
        let users = users.clone();
        let user = field("user").unwrap_or("").to_string();
        let password = field("password").unwrap_or("").to_string();
        let client = self
            .parsed
            .forwarded
            .as_ref()
            .map_or(self.conn.remote.ip(), |f| f.client);
        let throttle = &self.conn.shared.auth_state.throttle;
        if let Err(wait) = throttle.begin(&user, client) {
            let msg = format!(
                "Too many failed attempts: try again in {} s.",
                wait.as_secs().max(1)
            );
            let mut resp = self.local_form(
                &pre.provider,
                &pre.rd,
                &pre.binding,
                Some(&msg),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return Ok(resp);
        }
        // bcrypt and argon2 are slow on purpose: off the event loop, and a
        // few at a time, so a flood of attempts cannot take every core.
        let ok = {
            let name = user.clone();
            let _permit = self.conn.shared.auth_state.verifying.acquire().await;
            tokio::task::spawn_blocking(move || users.verify(&name, &password))
                .await
                .unwrap_or(false)
        };
        if ok {
            throttle.succeeded(&user, client);
        }
        if !ok {
            tracing::info!(provider = %pre.provider, user = %user, %client, "local sign-in failed");
            let mut resp = self.local_form(
                &pre.provider,
                &pre.rd,
                &pre.binding,
                Some("Wrong user name or password."),
                StatusCode::UNAUTHORIZED,
            );
            prune_pre_auth(&headers, &mut resp);
            return Ok(resp);
        }
        tracing::info!(provider = %pre.provider, user = %user, "signed in");
        let email = super::policy::valid_email(&user).map(|_| user.clone());
        let identity = super::Identity {
            user,
            email,
            groups: Vec::new(),
            orgs: Vec::new(),
            teams: Vec::new(),
        };
        let session = self.new_session(&provider.name, identity);
        // A form may only lead to this origin (CSP `form-action 'self'`):
        // set the session here, then let the login page (a GET) send the
        // browser on.
        let mut next = format!("/.heim/login?rd={}", url_encode(&pre.rd));
        if !pre.binding.is_empty() {
            next.push_str("&n=");
            next.push_str(&pre.binding);
        }
        let mut resp = redirect_see_other(&next);
        self.set_session(&mut resp, &session);
        clear_cookie(&mut resp, &PreAuth::cookie_name(&pre.state));
        Ok(resp)
    }

    /// Sets the session cookie of this host.
    fn set_session(&self, resp: &mut Response<ProxyBody>, session: &Session) {
        let mut s = session.clone();
        s.host = self.parsed.host.clone();
        let ttl = s.expires.saturating_sub(unix_now());
        let sealed = self.auth.sealer.seal(Purpose::Session, &s);
        set_cookie(resp, SESSION_COOKIE, &sealed, ttl);
    }

    /// Signed in on the auth host: set its session cookie (when new, with
    /// the attempt's `state`) and send the browser on, through a hand-off
    /// when `rd` is another host (bound to `binding`, the route host's
    /// cookie for this browser).
    fn finish(
        &self,
        session: Session,
        rd: &str,
        binding: &str,
        state: Option<&str>,
    ) -> Response<ProxyBody> {
        let rd_host = url_host(rd).unwrap_or_default();
        let target = if rd_host == self.auth.auth_host {
            rd.to_string()
        } else {
            let handoff = Handoff {
                session: session.clone(),
                rd: rd.to_string(),
                aud: rd_host.clone(),
                exp: unix_now() + HANDOFF_TTL,
                jti: random_token(12),
                binding: binding.to_string(),
            };
            let t = self.auth.sealer.seal(Purpose::Handoff, &handoff);
            format!("{}/.heim/handoff?t={t}", self.origin_of(&rd_host))
        };
        let mut resp = if state.is_some() {
            redirect_see_other(&target)
        } else {
            redirect(&target)
        };
        if let Some(state) = state {
            self.set_session(&mut resp, &session);
            clear_cookie(&mut resp, &PreAuth::cookie_name(state));
        }
        resp
    }

    // === cli ===

    /// `heim-tunnel login`: sign in in the browser, then hand a one-time
    /// code to the CLI's loopback listener (and nowhere else).
    fn cli_login<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let query = req.uri().query().unwrap_or("");
        if !self.on_auth_host() {
            return redirect(&format!("{}/.heim/cli/login?{query}", self.auth_origin()));
        }
        let Some((port, challenge)) = cli_params(|k| query_param(query, k)) else {
            return bad_cli_link();
        };
        let Some(session) = self.session(req) else {
            let here = format!("{}/.heim/cli/login?{query}", self.auth_origin());
            return redirect(&login_url(&self.auth_origin(), &here));
        };
        // A page may send a signed-in browser here: the user says yes first.
        let csrf = self.auth.sealer.seal(Purpose::Csrf, &session.id);
        let body = format!(
            "<p>A program on this computer (<code>heim-tunnel</code>, listening on port {port}) asks to act as <strong>{}</strong>.</p>\
             <p>Allow it only if you just ran <code>heim-tunnel login</code>.</p>\
             <form method=\"post\" action=\"/.heim/cli/login\">\
             <input type=\"hidden\" name=\"port\" value=\"{port}\">\
             <input type=\"hidden\" name=\"challenge\" value=\"{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Allow</button></form>",
            escape(&session.user),
            escape(&challenge),
        );
        let mut resp = page(StatusCode::OK, "Sign in heim-tunnel", &body);
        // The form leads to the CLI's loopback listener, and there only.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://127.0.0.1:{port}; frame-ancestors 'none'"
        )) {
            resp.headers_mut().insert("content-security-policy", v);
        }
        resp
    }

    /// The user allowed the CLI: a one-time code to its loopback port.
    async fn cli_login_confirmed(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let session = self.session(&req);
        let form = read_form(req).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (Some(session), Some((port, challenge))) = (session, cli_params(field)) else {
            return Ok(bad_cli_link());
        };
        let csrf_ok = field("csrf")
            .and_then(|c| self.auth.sealer.open::<String>(Purpose::Csrf, &c))
            .is_some_and(|id| super::constant_time_eq(id.as_bytes(), session.id.as_bytes()));
        if !csrf_ok {
            return Ok(bad_cli_link());
        }
        let code = CliCode {
            session,
            challenge,
            exp: unix_now() + CLI_CODE_TTL,
            jti: random_token(12),
        };
        let code = self.auth.sealer.seal(Purpose::CliCode, &code);
        Ok(redirect_see_other(&format!(
            "http://127.0.0.1:{port}/callback?code={code}"
        )))
    }

    /// `heim-tunnel logout`: ends the session of the bearer token (a CLI
    /// token is its browser session's: both end, and every stream and
    /// WebSocket they opened is cut within a second). Bearer only: a
    /// cookie cannot sign anyone out here, so no page can do it for them.
    fn cli_logout<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let Some(session) = self
            .auth
            .cli_session(req.headers(), &self.conn.shared.auth_state)
        else {
            return json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "invalid_token" }),
            );
        };
        self.conn
            .shared
            .auth_state
            .revoke(&session.id, session.expires);
        tracing::info!(user = %session.user, "signed out (CLI)");
        json(
            StatusCode::OK,
            &serde_json::json!({ "signed_out": session.user }),
        )
    }

    /// Exchanges a CLI's code and verifier (or its refresh token) for a
    /// bearer token.
    async fn cli_token(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let form = read_form(req).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let bad = |why: &str| {
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "invalid_grant", "error_description": why }),
            )
        };
        let now = unix_now();
        let state = &self.conn.shared.auth_state;
        let session = match field("grant_type").unwrap_or("authorization_code") {
            "authorization_code" => {
                let Some(c) = field("code")
                    .and_then(|c| self.auth.sealer.open::<CliCode>(Purpose::CliCode, c))
                else {
                    return Ok(bad("unknown code"));
                };
                let verifier = field("code_verifier").unwrap_or("");
                let computed = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
                );
                if c.exp <= now
                    || !super::constant_time_eq(computed.as_bytes(), c.challenge.as_bytes())
                {
                    return Ok(bad("expired code or wrong verifier"));
                }
                if !state.use_once(&c.jti, c.exp) {
                    return Ok(bad("code already used"));
                }
                c.session
            }
            "refresh_token" => {
                let Some(r) = field("refresh_token")
                    .and_then(|t| self.auth.sealer.open::<CliRefresh>(Purpose::CliRefresh, t))
                else {
                    return Ok(bad("unknown refresh token"));
                };
                r.session
            }
            _ => return Ok(bad("unsupported grant_type")),
        };
        if session.expires <= now || state.is_revoked(&session.id) {
            return Ok(bad("the session has ended: sign in again"));
        }
        let mut access = session.clone();
        access.expires = session.expires.min(now + CLI_TOKEN_TTL);
        let doc = serde_json::json!({
            "access_token": self.auth.sealer.seal(Purpose::CliToken, &access),
            "token_type": "Bearer",
            "expires_in": access.expires - now,
            "refresh_token": self.auth.sealer.seal(Purpose::CliRefresh, &CliRefresh { session: session.clone() }),
            "refresh_expires_in": session.expires - now,
            "user": session.user,
        });
        Ok(json(StatusCode::OK, &doc))
    }

    // === handoff ===

    fn handoff<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let t = query_param(req.uri().query().unwrap_or(""), "t").unwrap_or_default();
        let now = unix_now();
        let binding = cookie(req.headers(), BINDING_COOKIE).unwrap_or("");
        let h: Option<Handoff> = self.auth.sealer.open(Purpose::Handoff, &t);
        let valid = h.filter(|h| {
            h.aud == self.parsed.host
                && h.exp > now
                && h.session.expires > now
                && !h.binding.is_empty()
                && super::constant_time_eq(h.binding.as_bytes(), binding.as_bytes())
                && !self.conn.shared.auth_state.is_revoked(&h.session.id)
        });
        let Some(h) = valid.filter(|h| self.conn.shared.auth_state.use_once(&h.jti, h.exp)) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-in link expired",
                &format!(
                    "<p>This sign-in link is used up, expired, or was opened in another browser. <a href=\"{}\">Go back</a> and sign in again.</p>",
                    escape(&self.return_url(None))
                ),
            );
        };
        let rd = self.return_url(Some(&h.rd));
        let mut resp = redirect(&rd);
        self.set_session(&mut resp, &h.session);
        clear_cookie(&mut resp, BINDING_COOKIE);
        resp
    }

    // === logout ===

    fn logout_page<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let rd = query_param(req.uri().query().unwrap_or(""), "rd");
        let Some(session) = self.session(req) else {
            return page(
                StatusCode::OK,
                "Signed out",
                "<p>You are not signed in.</p>",
            );
        };
        let csrf = self.auth.sealer.seal(Purpose::Csrf, &session.id);
        let rd = rd
            .map(|r| {
                format!(
                    "<input type=\"hidden\" name=\"rd\" value=\"{}\">",
                    escape(&r)
                )
            })
            .unwrap_or_default();
        page(
            StatusCode::OK,
            "Sign out",
            &format!(
                "<p>Signed in as <strong>{}</strong>.</p>\
                 <form method=\"post\" action=\"/.heim/logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{rd}\
                 <button type=\"submit\">Sign out</button></form>",
                escape(&session.user)
            ),
        )
    }

    async fn logout_post(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let session = self.session(&req);
        let form = read_form(req).await?;
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let Some(session) = session else {
            return Ok(page(
                StatusCode::OK,
                "Signed out",
                "<p>You are not signed in.</p>",
            ));
        };
        // Only heim's own confirmation page can sign a user out.
        let csrf_ok = field("csrf")
            .and_then(|c| self.auth.sealer.open::<String>(Purpose::Csrf, c))
            .is_some_and(|id| super::constant_time_eq(id.as_bytes(), session.id.as_bytes()));
        if !csrf_ok {
            return Ok(page(
                StatusCode::FORBIDDEN,
                "Sign out",
                "<p>Sign out from <a href=\"/.heim/logout\">heim's own page</a>.</p>",
            ));
        }
        self.conn
            .shared
            .auth_state
            .revoke(&session.id, session.expires);
        tracing::info!(user = %session.user, "signed out");
        let next = field("rd")
            .and_then(|rd| safe_return_url(rd, |h| self.serves(h)))
            .map(str::to_string);
        let same_host = |rd: &str| url_host(rd).is_some_and(|h| h == self.parsed.host);
        let mut resp = match next {
            // A form may only lead to this origin (CSP `form-action 'self'`).
            Some(rd) if same_host(&rd) => redirect_see_other(&rd),
            Some(rd) => page(
                StatusCode::OK,
                "Signed out",
                &format!(
                    "<p>You are signed out.</p><p><a href=\"{}\">Continue</a></p>",
                    escape(&rd)
                ),
            ),
            None => page(
                StatusCode::OK,
                "Signed out",
                &format!(
                    "<p>You are signed out.</p><p><a href=\"{}/.heim/login\">Sign in again</a></p>",
                    escape(&self.auth_origin())
                ),
            ),
        };
        clear_cookie(&mut resp, SESSION_COOKIE);
        Ok(resp)
    }

    // === me ===

    fn me<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let wants_json = req
            .headers()
            .get(ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let Some(s) = self.session(req) else {
            return if wants_json {
                json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({ "signed_in": false }),
                )
            } else {
                let here = format!("{}/.heim/me", self.origin_of(&self.parsed.host));
                let (location, cookie) = sign_in_redirect(&self.auth_origin(), &here);
                let mut resp = redirect(&location);
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    resp.headers_mut().append(SET_COOKIE, v);
                }
                resp
            };
        };
        let table = self.conn.shared.routes.load();
        let mut routes: Vec<serde_json::Value> = table
            .routes()
            .filter(|r| match &r.spec.policy {
                Policy::Public => true,
                Policy::Allow(rules) => rules.allows(&s),
                Policy::Deny | Policy::Webhook(_) => false,
            })
            .map(|r| {
                serde_json::json!({
                    "name": r.spec.name,
                    "host": r.spec.host,
                    "path": r.spec.path,
                    "public": r.spec.policy == Policy::Public,
                })
            })
            .collect();
        routes.sort_by_key(|r| r["name"].as_str().unwrap_or("").to_string());
        let doc = serde_json::json!({
            "signed_in": true,
            "user": s.user,
            "email": s.email,
            "groups": s.groups,
            "github_orgs": s.orgs,
            "github_teams": s.teams,
            "provider": s.provider,
            "expires": s.expires,
            "routes": routes,
        });
        if wants_json {
            return json(StatusCode::OK, &doc);
        }
        let mut list = String::new();
        for r in &routes {
            let _ = write!(
                list,
                "<li>{} <code>{}{}</code></li>",
                escape(r["name"].as_str().unwrap_or("")),
                escape(r["host"].as_str().unwrap_or("*")),
                escape(r["path"].as_str().unwrap_or(""))
            );
        }
        page(
            StatusCode::OK,
            "Signed in",
            &format!(
                "<p>Signed in as <strong>{}</strong>{} with {}.</p><p>Groups: {}</p>\
                 <h2>Routes you may use</h2><ul>{list}</ul>\
                 <p><a href=\"/.heim/logout\">Sign out</a></p>",
                escape(&s.user),
                s.email
                    .as_deref()
                    .map(|e| format!(" ({})", escape(e)))
                    .unwrap_or_default(),
                escape(&s.provider),
                escape(&s.groups.join(", ")),
            ),
        )
    }
}

/// A CLI sign-in's loopback port and PKCE challenge (S256, base64url).
fn cli_params(get: impl Fn(&str) -> Option<String>) -> Option<(u16, String)> {
    let port = get("port")?.parse::<u16>().ok().filter(|p| *p != 0)?;
    let challenge = get("challenge").filter(|c| {
        (43..=128).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })?;
    Some((port, challenge))
}

fn bad_cli_link() -> Response<ProxyBody> {
    page(
        StatusCode::BAD_REQUEST,
        "CLI sign-in",
        "<p>This sign-in link needs a loopback port and a PKCE challenge (S256, base64url), and your confirmation on heim's own page.</p>",
    )
}

/// The normalised host of an `https://` URL already checked by
/// `safe_return_url`.
fn url_host(url: &str) -> Option<String> {
    url.strip_prefix("https://")
        .and_then(|r| r.split(['/', '?', '#']).next())
        .and_then(crate::route::normalize_host)
        .map(|h| h.into_owned())
}

/// `https://host[:port]`.
pub fn origin(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The auth host's login page, returning to `rd`.
pub fn login_url(auth_origin: &str, rd: &str) -> String {
    format!("{auth_origin}/.heim/login?rd={}", url_encode(rd))
}

/// Where a browser without a session on a route's host is sent to sign
/// in, and the cookie that binds that sign-in to it: only this browser can
/// redeem the hand-off that brings the session back (no login CSRF, no
/// session fixation by a link).
pub fn sign_in_redirect(auth_origin: &str, here: &str) -> (String, String) {
    let binding = random_token(16);
    let location = format!("{}&n={binding}", login_url(auth_origin, here));
    let cookie = format!(
        "{BINDING_COOKIE}={binding}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={BINDING_TTL}"
    );
    (location, cookie)
}

/// The 403 page: who the user is, and how to switch account.
pub fn denied_page(d: &Denied) -> String {
    render(
        "Access denied",
        &format!(
            "<p>You are signed in as <strong>{}</strong>{}, and this page is not open to you.</p>\
             <p><a href=\"{}\">Sign in as someone else</a></p>",
            escape(&d.user),
            d.email
                .as_deref()
                .map(|e| format!(" ({})", escape(e)))
                .unwrap_or_default(),
            escape(&d.switch_url),
        ),
    )
}

/// Reads an `application/x-www-form-urlencoded` body (bounded).
async fn read_form(req: Request<Incoming>) -> Result<Vec<(String, String)>, ProxyError> {
    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM);
    let bytes: Bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .map_err(|_| ProxyError::ClientTimeout)?
        .map_err(|_| ProxyError::BadRequest("unreadable form"))?
        .to_bytes();
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ProxyError::BadRequest("form is not UTF-8"))?;
    Ok(text
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (form_decode(k), form_decode(v))
        })
        .collect())
}

/// A query parameter, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (form_decode(k) == name).then(|| form_decode(v))
    })
}

/// Decodes `+` and `%XX` (invalid escapes stay as they are).
fn form_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    String::from_utf8_lossy(&crate::route::percent_decode_bytes(&plus)).into_owned()
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// HTML-escapes text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t} · heim</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}\
         label{{display:block;margin:.5rem 0}}input{{display:block;width:100%}}.error{{color:#b00}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(render(title, body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(v.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect_with(status: StatusCode, to: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(""));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn redirect(to: &str) -> Response<ProxyBody> {
    redirect_with(StatusCode::FOUND, to)
}

/// After a POST: the browser follows with a GET.
fn redirect_see_other(to: &str) -> Response<ProxyBody> {
    redirect_with(StatusCode::SEE_OTHER, to)
}

fn set_cookie(resp: &mut Response<ProxyBody>, name: &str, value: &str, max_age: u64) {
    let c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}

fn clear_cookie(resp: &mut Response<ProxyBody>, name: &str) {
    set_cookie(resp, name, "", 0);
}

/// Pre-auth cookies a browser may pile up (a login page reloaded again and
/// again) before heim clears them: large cookie headers are the top
/// complaint against oauth2-proxy and Pomerium.
const MAX_PRE_AUTH: usize = 3;

/// Clears the request's pre-auth cookies once there are too many (the
/// response's own new one stays).
fn prune_pre_auth(headers: &http::HeaderMap, resp: &mut Response<ProxyBody>) {
    let names: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('=').map(|(k, _)| k.to_string()))
        .filter(|k| k.starts_with(PRE_AUTH_PREFIX))
        .collect();
    if names.len() >= MAX_PRE_AUTH {
        for name in names {
            clear_cookie(resp, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let rd = "https://app.test:8443/a b?x=1&y=/%2F";
        assert_eq!(form_decode(&url_encode(rd)), rd);
        assert_eq!(
            query_param("a=1&rd=https%3A%2F%2Fx%2F&b", "rd").as_deref(),
            Some("https://x/")
        );
        assert_eq!(query_param("a=1", "rd"), None);
        assert_eq!(form_decode("a+b%zz"), "a b%zz");
        assert_eq!(
            escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
