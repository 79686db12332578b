//! Sign-in: who a request is from, and whether the route lets them in.
//!
//! * `seal` — the AEAD-sealed tokens (session cookie, pre-auth state,
//!   hand-off, CLI tokens); no server-side store.
//! * `policy` — the session's content and the routes' allow rules.
//! * `jwt` — the ES256 identity token for backends, and its JWKS.
//! * `local` — local users (bcrypt, argon2id) and the slow-down.
//! * `redirect` — which return URLs are safe.
//! * `endpoints` — heim's own `/.heim/*` pages.
//!
//! The hot path costs one cookie open (cached per connection) and one
//! policy check; everything else happens at sign-in.

pub mod endpoints;
pub mod external;
pub mod github;
pub mod htpasswd;
pub mod jwt;
pub mod local;
pub mod oauth2_paths;
pub mod oidc;
pub mod policy;
pub mod redirect;
pub mod seal;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

use jwt::SigningKey;
use policy::Session;
use seal::{Purpose, Sealer};

/// The session cookie: `__Host-` makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so it is host-only.
pub const SESSION_COOKIE: &str = "__Host-heim-session";
/// Pre-auth cookies are `__Host-heim-pre-<state>`, one per sign-in attempt.
pub const PRE_AUTH_PREFIX: &str = "__Host-heim-pre-";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which kind of identity provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    Google,
    Oidc,
    Github,
    Local,
}

/// An `[[auth.provider]]` as the config file says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub hd: Option<String>,
    pub api_url: Option<String>,
    pub web_url: Option<String>,
    pub users_file: Option<PathBuf>,
    /// Where the entry is, for errors found while reading its files.
    pub line: usize,
}

/// The `[auth]` table as the config file says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSpec {
    pub auth_host: String,
    pub cookie_secret_file: PathBuf,
    pub previous_cookie_secret_files: Vec<PathBuf>,
    pub session_ttl: Duration,
    pub signing_key_file: PathBuf,
    pub providers: Vec<ProviderSpec>,
    pub line: usize,
}

/// A provider ready to sign users in.
#[derive(Debug)]
pub enum ProviderImpl {
    Local(Arc<local::Users>),
    Oidc(oidc::Oidc),
    Github(github::Github),
}

/// Who signed in, as a provider tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub orgs: Vec<String>,
    pub teams: Vec<String>,
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub imp: ProviderImpl,
}

/// Everything sign-in needs, compiled from `[auth]` (rebuilt on reload).
#[derive(Debug)]
pub struct Auth {
    pub auth_host: String,
    pub sealer: Sealer,
    pub session_ttl: Duration,
    pub signing: SigningKey,
    pub providers: Vec<Provider>,
}

/// A problem reading `[auth]`'s files: the key and the message.
pub type LoadError = (String, String);

impl Auth {
    /// Reads the secrets, the signing key (created when `create_keys` and
    /// missing) and the providers' files.
    pub fn load(spec: &AuthSpec, create_keys: bool) -> Result<Auth, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut secrets = Vec::new();
        for (key, path) in std::iter::once(("auth.cookie_secret_file", &spec.cookie_secret_file))
            .chain(
                spec.previous_cookie_secret_files
                    .iter()
                    .map(|p| ("auth.previous_cookie_secret_files", p)),
            )
        {
            match std::fs::read(path) {
                Ok(s) => secrets.push(trim_secret(s)),
                Err(e) => errors.push((key.to_string(), format!("{}: {e}", path.display()))),
            }
        }
        let sealer = if errors.is_empty() {
            Sealer::new(&secrets)
                .map_err(|e| errors.push(("auth.cookie_secret_file".into(), e)))
                .ok()
        } else {
            None
        };
        let signing = SigningKey::load(&spec.signing_key_file, create_keys)
            .map_err(|e| {
                errors.push((
                    "auth.signing_key_file".into(),
                    format!("{}: {e}", spec.signing_key_file.display()),
                ))
            })
            .ok();
        let mut providers = Vec::new();
        for (i, p) in spec.providers.iter().enumerate() {
            let key = |k: &str| format!("auth.provider[{i}].{k}");
            let imp = match p.kind {
                ProviderKind::Local => {
                    let Some(path) = &p.users_file else {
                        errors.push((
                            key("users_file"),
                            "a local provider needs users_file".into(),
                        ));
                        continue;
                    };
                    match local::Users::load(path) {
                        Ok(u) => ProviderImpl::Local(Arc::new(u)),
                        Err(e) => {
                            errors.push((key("users_file"), format!("{}: {e}", path.display())));
                            continue;
                        }
                    }
                }
                ProviderKind::Google | ProviderKind::Oidc | ProviderKind::Github => {
                    let secret = match &p.client_secret_file {
                        Some(f) => match std::fs::read(f) {
                            Ok(s) => String::from_utf8_lossy(&trim_secret(s)).into_owned(),
                            Err(e) => {
                                errors.push((
                                    key("client_secret_file"),
                                    format!("{}: {e}", f.display()),
                                ));
                                continue;
                            }
                        },
                        None => String::new(),
                    };
                    let client_id = p.client_id.clone().unwrap_or_default();
                    if p.kind == ProviderKind::Github {
                        ProviderImpl::Github(github::Github::new(
                            client_id,
                            secret,
                            p.web_url.clone(),
                            p.api_url.clone(),
                        ))
                    } else {
                        ProviderImpl::Oidc(oidc::Oidc::new(
                            p.issuer.clone().unwrap_or_default(),
                            client_id,
                            secret,
                            p.scopes.clone(),
                            p.groups_claim.clone(),
                            p.hd.clone(),
                        ))
                    }
                }
            };
            providers.push(Provider {
                name: p.name.clone(),
                kind: p.kind,
                imp,
            });
        }
        match (sealer, signing) {
            (Some(sealer), Some(signing)) if errors.is_empty() => Ok(Auth {
                auth_host: spec.auth_host.clone(),
                sealer,
                session_ttl: spec.session_ttl,
                signing,
                providers,
            }),
            _ => Err(errors),
        }
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Reads the session of a request to `host`: the session cookie (made
    /// for this very host), or a CLI bearer token. Anything that does not
    /// open, has expired, was revoked, is another host's, or comes from a
    /// provider no longer configured counts as no session.
    pub fn session(&self, headers: &HeaderMap, state: &AuthState, host: &str) -> Option<Session> {
        let session = match cookie(headers, SESSION_COOKIE) {
            Some(c) => self
                .sealer
                .open::<Session>(Purpose::Session, c)
                .filter(|s| s.host == host),
            None => bearer(headers).and_then(|t| self.sealer.open(Purpose::CliToken, t)),
        }?;
        self.live(session, state)
    }

    /// The session of a CLI bearer token only (no cookie counts).
    pub fn cli_session(&self, headers: &HeaderMap, state: &AuthState) -> Option<Session> {
        let session = bearer(headers).and_then(|t| self.sealer.open(Purpose::CliToken, t))?;
        self.live(session, state)
    }

    fn live(&self, session: Session, state: &AuthState) -> Option<Session> {
        (session.expires > unix_now()
            && !state.is_revoked(&session.id)
            && self.provider(&session.provider).is_some())
        .then_some(session)
    }

    /// Removes heim's own credentials from a request on its way to a
    /// backend: its cookies (`__Host-heim-*`) and a bearer token that is a
    /// heim CLI token. A backend (or anyone on the upstream link) must
    /// never hold something it could replay against heim.
    pub fn strip_credentials(&self, headers: &mut HeaderMap) {
        strip_heim_cookies(headers);
        if bearer(headers)
            .is_some_and(|t| self.sealer.open::<Session>(Purpose::CliToken, t).is_some())
        {
            headers.remove(AUTHORIZATION);
        }
    }
}

/// Compares secrets in constant time.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// What a long-lived connection (a spliced WebSocket, a tunnel stream) was
/// authorized by, to check again while it lasts: the session must not
/// expire or be revoked, and the route it reached must still admit the
/// user (or, without a session, still be public), by the route table
/// current at each check (a reload can change it).
pub struct Reauth {
    pub shared: Arc<crate::state::Shared>,
    pub session: Option<Session>,
    pub host: String,
    /// The path the route was chosen by.
    pub path: String,
}

/// How often a long-lived connection is checked again.
pub const REAUTH_EVERY: Duration = Duration::from_secs(1);

impl Reauth {
    /// Why the connection may not go on, if it may not.
    pub fn refused(&self) -> Option<&'static str> {
        if let Some(s) = &self.session {
            if s.expires <= unix_now() {
                return Some("the session expired: sign in again");
            }
            if self.shared.auth_state.is_revoked(&s.id) {
                return Some("signed out");
            }
        }
        let table = self.shared.routes.load();
        let allowed = match table.lookup(&self.host, &self.path).map(|r| &r.spec.policy) {
            Some(crate::route::Policy::Allow(rules)) => {
                self.session.as_ref().is_some_and(|s| rules.allows(s))
            }
            Some(crate::route::Policy::Public) => true,
            _ => false,
        };
        (!allowed).then_some("the route's policy no longer admits you")
    }
}

/// Secrets written by `echo` end in a newline; it is not part of them.
pub fn trim_secret(mut s: Vec<u8>) -> Vec<u8> {
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s.pop();
    }
    s
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Every cookie heim sets starts so.
const HEIM_COOKIE_PREFIX: &str = "__Host-heim-";

/// Removes heim's cookies from `Cookie` headers, keeping the others.
pub fn strip_heim_cookies(headers: &mut HeaderMap) {
    let values: Vec<http::HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if !values
        .iter()
        .any(|v| v.to_str().map_or(true, |s| s.contains(HEIM_COOKIE_PREFIX)))
    {
        return;
    }
    headers.remove(COOKIE);
    for v in values {
        let Ok(text) = v.to_str() else { continue };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.starts_with(HEIM_COOKIE_PREFIX))
            .collect();
        if let Ok(v) = http::HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.append(COOKIE, v);
            }
        }
    }
}

/// Drops `Set-Cookie` lines for heim's own cookie names from an upstream's
/// response: a backend cannot plant or clear a heim session.
pub fn strip_heim_set_cookies(headers: &mut HeaderMap) {
    let set = http::header::SET_COOKIE;
    if !headers
        .get_all(&set)
        .iter()
        .any(|v| v.as_bytes().starts_with(HEIM_COOKIE_PREFIX.as_bytes()))
    {
        return;
    }
    let kept: Vec<http::HeaderValue> = headers
        .get_all(&set)
        .iter()
        .filter(|v| !v.as_bytes().starts_with(HEIM_COOKIE_PREFIX.as_bytes()))
        .cloned()
        .collect();
    headers.remove(&set);
    for v in kept {
        headers.append(&set, v);
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Sign-in state shared by every worker and kept across reloads: revoked
/// sessions, hand-offs already used, failed local sign-ins.
#[derive(Debug)]
pub struct AuthState {
    /// Password checks running at once (bcrypt, argon2 are slow on purpose).
    pub verifying: tokio::sync::Semaphore,
    /// Session id -> when it would have expired. Read on every request,
    /// written at logout: a snapshot, swapped whole.
    revoked: ArcSwap<HashMap<String, u64>>,
    /// One-time tokens (hand-offs, CLI codes) already used -> their expiry.
    used: std::sync::Mutex<HashMap<String, u64>>,
    pub throttle: local::Throttle,
}

/// Password checks heim runs at once.
const VERIFYING_AT_ONCE: usize = 4;

impl Default for AuthState {
    fn default() -> Self {
        Self {
            verifying: tokio::sync::Semaphore::new(VERIFYING_AT_ONCE),
            revoked: ArcSwap::default(),
            used: std::sync::Mutex::default(),
            throttle: local::Throttle::default(),
        }
    }
}

impl AuthState {
    pub fn is_revoked(&self, id: &str) -> bool {
        let r = self.revoked.load();
        !r.is_empty() && r.contains_key(id)
    }

    /// Revokes a session until it would have expired anyway.
    pub fn revoke(&self, id: &str, expires: u64) {
        let now = unix_now();
        self.revoked.rcu(|old| {
            let mut new: HashMap<String, u64> = old
                .iter()
                .filter(|(_, e)| **e > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            new.insert(id.to_string(), expires);
            Arc::new(new)
        });
    }

    /// Marks a one-time token used; false if it already was.
    pub fn use_once(&self, id: &str, expires: u64) -> bool {
        let now = unix_now();
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.len() > 100_000 {
            used.retain(|_, e| *e > now);
        }
        used.insert(id.to_string(), expires).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_and_bearer_tokens() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-heim-session=abc"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "__Host-heim"), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        assert_eq!(bearer(&h), Some("t0ken"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic dTpw"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn heims_cookies_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-heim-session=abc; b=2"),
        );
        h.append(COOKIE, HeaderValue::from_static("__Host-heim-pre-x=y"));
        strip_heim_cookies(&mut h);
        let left: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(left, ["a=1; b=2"]);
        let mut r = HeaderMap::new();
        r.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("__Host-heim-session=evil; Path=/"),
        );
        r.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("grafana=1"),
        );
        strip_heim_set_cookies(&mut r);
        let left: Vec<_> = r.get_all(http::header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["grafana=1"]);
    }

    #[test]
    fn revocation_and_one_time_use() {
        let s = AuthState::default();
        assert!(!s.is_revoked("a"));
        s.revoke("a", unix_now() + 60);
        assert!(s.is_revoked("a"));
        assert!(!s.is_revoked("b"));
        assert!(s.use_once("t", unix_now() + 60));
        assert!(!s.use_once("t", unix_now() + 60), "a replay");
    }
}
