//! The `nginx.ingress.kubernetes.io/*` annotations: Ingresses written for
//! ingress-nginx, read into the same [`IngressOptions`] as heim's own,
//! never into text. Every annotation gets a [`Verdict`]; they become the
//! Ingress's Events (`Normal Adopted`, `Warning AnnotationIgnored`,
//! `Warning SnippetRefused`, `Warning UnsupportedAnnotation`,
//! `Warning InvalidAnnotation`).
//!
//! What this build honours, as ingress-nginx does (the full table, and
//! each deliberate difference, is in docs/migrate-from-ingress-nginx.md):
//!
//! | annotation | heim |
//! | --- | --- |
//! | `proxy-body-size` | the body limit; binary units, `0` = none; 413 above it |
//! | `proxy-connect-timeout`, `proxy-read-timeout` | seconds: the upstream connect timeout, the wait for the response head and between body reads |
//! | `ssl-redirect`, `force-ssl-redirect` | `"false"` serves plain HTTP too; otherwise plain HTTP gets a 308 to https |
//! | `allowlist-source-range`, `whitelist-source-range` | CIDRs; others get 403 (the `allowlist-` name wins) |
//! | `denylist-source-range` | CIDRs that get 403, over the allowlist |
//! | `backend-protocol` | `HTTP`, `GRPC` (HTTP/2 cleartext to the pod) |
//! | `use-regex`, `rewrite-target`, `x-forwarded-prefix` | host-wide regex mode, capture groups, an absolute target is a 302 |
//! | `permanent-redirect(-code)`, `temporal-redirect(-code)`, `app-root`, `from-to-www-redirect` | answered before sign-in |
//! | `upstream-vhost`, `server-alias` | the `Host` upstream; more names for the host |
//! | `auth-url` + `auth-signin` at oauth2-proxy (`…/oauth2/auth`) or Authelia (`…/api/verify`, `…/api/authz/…`) | heim's own sign-in: anyone who signs in (or the `heim.dev/allow-*` rules); `auth-response-headers` names the identity headers |
//! | another `auth-url` (+ `auth-signin`, `auth-response-headers`, `auth-method`, `auth-cache-*`, …) | nginx's `auth_request` sub-request, made as ingress-nginx makes it ([`heim_proxy::auth::external`]) |
//! | `auth-type: basic`, `auth-secret(-type)`, `auth-realm` | htpasswd from the Secret ([`heim_proxy::auth::htpasswd`]) |
//! | `enable-cors`, `cors-*` | [`heim_proxy::forward::cors`] |
//! | `canary`, `canary-by-*`, `canary-weight(-total)` | the mainline route's second backend ([`heim_proxy::canary`]) |
//! | `limit-rps`, `limit-rpm`, `limit-connections`, `limit-burst-multiplier`, `limit-allowlist` | 503 over the limit ([`heim_proxy::limit`]) |
//! | `affinity: cookie`, `session-cookie-*` | sticky sessions ([`heim_proxy::affinity`]) |
//! | `backend-protocol: HTTPS`/`GRPCS`, `proxy-ssl-*` | TLS to the pod, unverified unless asked ([`heim_proxy::upstream::UpstreamTls`]) |
//! | `default-backend`, `custom-http-errors`, `disable-proxy-intercept-errors` | [`heim_proxy::route::ErrorBackend`] |
//! | `service-upstream` | the Service's cluster IP |
//! | `ssl-passthrough` (with `--enable-ssl-passthrough`) | the host's TLS spliced unopened to the pod |
//!
//! Annotations that are security boundaries and are not built
//! (`auth-type: digest`, `auth-tls-*`, `satisfy`, `auth-proxy-set-headers`
//! and `auth-snippet` with an `auth-url`) make the Ingress answer 403: it
//! is never served with less protection than written. Snippets are never
//! injected: the Ingress is served without them (or, with `[ingress_nginx]
//! interpret_snippets`, a `configuration-snippet` of the allow-list of
//! [`super::snippet`] is applied as data). Names that had no effect even
//! in ingress-nginx (ConfigMap keys written as annotations, removed names)
//! are reported as ignored. With `--nginx-configmap`, ingress-nginx's
//! ConfigMap gives the defaults ([`configmap_defaults`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use heim_proxy::auth::policy::AccessRules;
use heim_proxy::route::{IdentityField, Policy};
use heim_proxy::trust::IpNet;
use heim_proxy::upstream::UpstreamProtocol;
use k8s_openapi::api::networking::v1::Ingress;

use super::IngressOptions;

/// The annotations' prefix.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What heim does with one annotation (`heim-ingress migrate`'s verdicts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Honoured as ingress-nginx honours it.
    Exact,
    /// Honoured, with this difference.
    Differs(String),
    /// Honoured, but who may pass is decided differently: check it.
    Review(String),
    /// No effect, as in ingress-nginx (why).
    Ignored(String),
    /// Never applied (a snippet, ModSecurity): why, and heim's replacement.
    Refused(String),
    /// Understood, not built yet (what happens instead).
    Unsupported(String),
    /// The value does not parse (what was skipped).
    Invalid(String),
}

/// Names that are ConfigMap keys or were removed: no effect in
/// ingress-nginx either.
const IGNORED: &[(&str, &str)] = &[
    (
        "secure-backends",
        "removed in ingress-nginx 0.18: use backend-protocol",
    ),
    ("session-cookie-hash", "removed in ingress-nginx 0.24"),
    ("add-base-url", "removed in ingress-nginx 0.23"),
    (
        "large-client-header-buffers",
        "a ConfigMap key, not an annotation",
    ),
    (
        "client-header-buffer-size",
        "a ConfigMap key, not an annotation",
    ),
    ("proxy-set-headers", "a ConfigMap key, not an annotation"),
    ("ssl-verify", "not an ingress-nginx annotation"),
    (
        "ingress-class",
        "not an annotation: kubernetes.io/ingress.class or spec.ingressClassName",
    ),
    ("add-hosts", "a ConfigMap key, not an annotation"),
    (
        "use-forwarded-headers",
        "a ConfigMap key, not an annotation",
    ),
    (
        "websocket-services",
        "an F5 NGINX (nginx.org) name: WebSockets are always relayed",
    ),
    (
        "enable-websockets",
        "an F5 NGINX (nginx.org) name: WebSockets are always relayed",
    ),
    (
        "proxy-buffering",
        "heim streams responses; nginx buffered them only with \"on\"",
    ),
    ("proxy-buffers-number", "heim does not buffer responses"),
    ("proxy-busy-buffers-size", "heim does not buffer responses"),
    (
        "proxy-max-temp-file-size",
        "heim does not spool responses to disk",
    ),
    (
        "client-body-buffer-size",
        "heim does not spool request bodies to disk",
    ),
    (
        "proxy-request-buffering",
        "heim streams request bodies (nginx's \"off\")",
    ),
    (
        "enable-access-log",
        "heim's access log is [server] access_log",
    ),
    ("enable-rewrite-log", "nginx's rewrite debugging"),
    (
        "proxy-http-version",
        "heim speaks HTTP/1.1 (or h2c) to upstreams",
    ),
];

/// Annotations whose absence would leave a route less protected than
/// written: not built yet, so the Ingress answers 403.
const FAIL_CLOSED: &[&str] = &[
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-match-cn",
    "auth-tls-verify-depth",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-error-page",
    "satisfy",
];

/// Snippet annotations: raw nginx text, never injected.
fn is_snippet(name: &str) -> bool {
    name.ends_with("-snippet")
}

/// Known annotations not honoured in this build, with what happens instead.
fn unsupported(name: &str) -> Option<&'static str> {
    Some(match name {
        "upstream-hash-by" | "upstream-hash-by-subset" | "upstream-hash-by-subset-size"
        | "load-balance" => "hash balancing is not in this build: requests are spread round-robin (affinity: cookie is built)",
        "limit-rate" | "limit-rate-after" => {
            "bandwidth limits are not in this build: responses are sent at full speed"
        }
        "custom-headers"
        | "connection-proxy-header" | "proxy-cookie-domain" | "proxy-cookie-path"
        | "proxy-redirect-from" | "proxy-redirect-to" => {
            "header and name rewriting is not in this build: requests and responses pass as they are"
        }
        "proxy-next-upstream" | "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => {
            "heim retries only requests that never reached an endpoint, on the next one, up to 3"
        }
        "proxy-ssl-ciphers" | "proxy-ssl-protocols" | "proxy-ssl-verify-depth" => {
            "heim's TLS to backends has fixed suites (TLS 1.2 and 1.3 AEAD, rustls) and no depth limit"
        }
        "session-cookie-partitioned" => "the Partitioned attribute is not in this build: the affinity cookie is not partitioned",
        "mirror-target" | "mirror-host" | "mirror-request-body" => {
            "request mirroring is not in this build"
        }
        "enable-opentelemetry" | "opentelemetry-trust-incoming-span"
        | "opentelemetry-operation-name" => "tracing export is not in this build",
        "fastcgi-index" | "fastcgi-params-configmap" => "FastCGI backends are not in this build",
        _ => return None,
    })
}

/// Annotations heim honours in its own way, and how.
fn differs(name: &str) -> Option<&'static str> {
    Some(match name {
        "auth-keepalive" | "auth-keepalive-share-vars" | "auth-keepalive-requests"
        | "auth-keepalive-timeout" => "heim keeps its connections to auth services alive itself",
        "proxy-buffer-size" => {
            "heim has no per-route header buffer: response headers pass up to [server] max_header_bytes"
        }
        "proxy-send-timeout" => {
            "heim has no separate upstream write timeout: a request body is bounded by the client's own pace"
        }
        "ssl-ciphers" | "ssl-prefer-server-ciphers" => {
            "heim's TLS suites are fixed (TLS 1.3 and 1.2 AEAD suites, rustls)"
        }
        "preserve-trailing-slash" => "heim's https redirect always keeps the request URI as it is",
        "relative-redirects" | "use-port-in-redirects" => {
            "heim's redirects are absolute, with the https port only when it is not 443"
        }
        "http2-push-preload" => "HTTP/2 push is gone from browsers: no effect",
        _ => return None,
    })
}

/// The sub-request annotations that go with `auth-url`.
const AUTH_COMPANIONS: &[&str] = &[
    "auth-signin",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-method",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-proxy-set-headers",
    "auth-always-set-cookie",
    "auth-signin-redirect-param",
];

/// An auth service heim's sign-in stands in for: oauth2-proxy
/// (`…/oauth2/auth`) or Authelia (`…/api/verify`, `…/api/authz/…`), on the
/// Ingress's own host (`$host` or a rule host) or a cluster Service name;
/// oauth2-proxy's `allowed_groups`, `allowed_emails` and
/// `allowed_email_domains` become heim's rules. Anything else (another
/// host, another query) is not recognised: it is asked per request, as
/// nginx's `auth_request` asks it.
fn sign_in_service(auth_url: &str, rule_hosts: &[String]) -> Option<(&'static str, AccessRules)> {
    let rest = auth_url
        .strip_prefix("https://")
        .or_else(|| auth_url.strip_prefix("http://"))?;
    let (authority, path_query) = rest.split_at(rest.find('/')?);
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_ascii_lowercase();
    let own = host == "$host"
        || rule_hosts.contains(&host)
        || host.ends_with(".svc")
        || host.ends_with(".svc.cluster.local")
        || (!host.is_empty() && !host.contains('.') && !host.contains('$'));
    if !own {
        return None;
    }
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let service = if path.ends_with("/oauth2/auth") {
        "oauth2-proxy"
    } else if path.ends_with("/api/verify") || path.contains("/api/authz/") {
        "Authelia"
    } else {
        return None;
    };
    let mut rules = AccessRules::default();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let list = || {
            v.split([',', ' '])
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        match (service, k) {
            ("oauth2-proxy", "allowed_groups") => rules.groups.extend(list()),
            ("oauth2-proxy", "allowed_emails") => rules
                .emails
                .extend(list().into_iter().map(|e| e.to_ascii_lowercase())),
            ("oauth2-proxy", "allowed_email_domains") => rules
                .domains
                .extend(list().into_iter().map(|d| d.to_ascii_lowercase())),
            (_, "rd") => {}
            _ => return None,
        }
    }
    if rules.groups.is_empty() && rules.emails.is_empty() && rules.domains.is_empty() {
        rules.any_authenticated = true;
    }
    Some((service, rules))
}

/// The ConfigMap keys of ingress-nginx an Ingress inherits where its
/// annotations say nothing: `proxy-body-size`, `ssl-redirect`, HSTS
/// (`hsts`, `hsts-max-age`, `hsts-include-subdomains`, `hsts-preload`),
/// and `global-auth-*` (unless `enable-global-auth: "false"` or its own
/// `auth-url`; a global auth heim cannot ask as written closes the
/// Ingress).
fn configmap_defaults(
    ingress: &Ingress,
    cm: &BTreeMap<String, String>,
    all: &BTreeMap<&str, &str>,
    o: &mut IngressOptions,
    fail_closed: &mut bool,
) {
    let get = |k: &str| cm.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if o.max_body_bytes.is_none() {
        o.max_body_bytes = get("proxy-body-size").and_then(heim_proxy::config::parse_size);
    }
    if o.https_redirect.is_none() {
        o.https_redirect = get("ssl-redirect").and_then(parse_bool);
    }
    if get("hsts").and_then(parse_bool) != Some(false) {
        let max_age = get("hsts-max-age")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(31_536_000);
        let mut value = format!("max-age={max_age}");
        if get("hsts-include-subdomains").and_then(parse_bool) != Some(false) {
            value.push_str("; includeSubDomains");
        }
        if get("hsts-preload").and_then(parse_bool) == Some(true) {
            value.push_str("; preload");
        }
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            o.response_headers
                .push(heim_proxy::forward::edits::ResponseEdit::Set {
                    name: http::header::STRICT_TRANSPORT_SECURITY,
                    value,
                    always: true,
                    replace: true,
                });
        }
    }
    let global = get("global-auth-url");
    let opted_out = all.get("enable-global-auth").and_then(|v| parse_bool(v)) == Some(false);
    if let (Some(url), false, false) = (global, opted_out, all.contains_key("auth-url")) {
        let a = heim_proxy::auth::external::NginxAuthAnnotations {
            url,
            method: get("global-auth-method"),
            signin: get("global-auth-signin"),
            signin_redirect_param: get("global-auth-signin-redirect-param"),
            response_headers: get("global-auth-response-headers"),
            request_redirect: get("global-auth-request-redirect"),
            cache_key: get("global-auth-cache-key"),
            cache_duration: get("global-auth-cache-duration"),
            always_set_cookie: get("global-auth-always-set-cookie"),
            proxy_set_headers: &[],
        };
        match heim_proxy::auth::external::ExternalAuth::from_nginx(&a) {
            Ok(ext)
                if get("global-auth-snippet").is_none()
                    && get("global-auth-proxy-set-headers").is_none()
                    && !client_chooses_host(url, ingress) =>
            {
                o.external_auth = Some(Arc::new(ext));
            }
            _ => *fail_closed = true,
        }
    }
}

/// Whether a variable (`$host`) names an auth service's host while a rule
/// of `ingress` has no host or a wildcard one: the client's `Host` would
/// then choose the service that admits it.
fn client_chooses_host(url: &str, ingress: &Ingress) -> bool {
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let mut rules = ingress.spec.iter().flat_map(|s| s.rules.iter().flatten());
    let default_backend = ingress
        .spec
        .as_ref()
        .is_some_and(|s| s.default_backend.is_some());
    authority.contains('$')
        && (default_backend
            || rules.clone().next().is_none()
            || rules.any(|r| r.host.as_deref().is_none_or(|h| h.starts_with("*."))))
}

/// The `proxy-ssl-*` annotations, for an HTTPS or GRPCS backend: the
/// `proxy-ssl-secret` (`ca.crt` to verify with when `proxy-ssl-verify:
/// on`, `tls.crt`/`tls.key` for mutual TLS), `proxy-ssl-name` (the name
/// checked), `proxy-ssl-server-name: on` (sent as SNI). Verification asked
/// for and impossible closes the Ingress: it never talks to a pod with
/// less checking than written.
fn proxy_ssl(
    ingress: &Ingress,
    all: &BTreeMap<&str, &str>,
    snap: &crate::model::Snapshot,
    o: &mut IngressOptions,
    fail_closed: &mut bool,
) -> Verdict {
    let Some(tls) = o.upstream_tls.clone() else {
        return Verdict::Ignored(
            "no effect without backend-protocol HTTPS or GRPCS (as in ingress-nginx)".into(),
        );
    };
    let on = |k: &str| all.get(k).map(|v| v.trim()) == Some("on");
    let verify = on("proxy-ssl-verify");
    let mut tls = heim_proxy::upstream::UpstreamTls {
        server_name: all
            .get("proxy-ssl-name")
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        sni: on("proxy-ssl-server-name"),
        ..tls
    };
    let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
    let secret = all
        .get("proxy-ssl-secret")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    let data = match secret {
        None => None,
        Some(name) => {
            let (sns, sname) = name.split_once('/').unwrap_or((ns, name));
            if sns != ns {
                *fail_closed = true;
                return Verdict::Invalid(format!(
                    "{name:?} is in another namespace, which ingress-nginx refuses too: the Ingress answers 403"
                ));
            }
            let key = crate::model::ObjKey::new(ns, sname);
            match snap.secrets.get(&key) {
                Some(s) => Some(s.data.clone().unwrap_or_default()),
                None if verify => {
                    *fail_closed = true;
                    return Verdict::Invalid(format!(
                        "Secret {key} does not exist, and proxy-ssl-verify is on: the Ingress answers 403"
                    ));
                }
                None => None,
            }
        }
    };
    let get = |k: &str| data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    if verify && tls.server_name.is_none() {
        *fail_closed = true;
        return Verdict::Invalid(
            "proxy-ssl-verify is on without proxy-ssl-name: ingress-nginx then checks an internal upstream name no certificate carries (every request fails); give the name to check: the Ingress answers 403".into(),
        );
    }
    if verify && data.is_none() {
        *fail_closed = true;
        return Verdict::Invalid("proxy-ssl-verify is on without a proxy-ssl-secret holding ca.crt: the Ingress answers 403".into());
    }
    match tls
        .clone()
        .with_pem(get("ca.crt"), get("tls.crt"), get("tls.key"), verify)
    {
        Ok(t) => {
            tls = t;
            o.upstream_tls = Some(tls);
            Verdict::Exact
        }
        Err(why) => {
            *fail_closed = true;
            Verdict::Invalid(format!("{why}: the Ingress answers 403"))
        }
    }
}

/// Why an Ingress's basic auth has no users.
enum BasicFailure {
    /// Nothing to check against, as written: the Ingress answers 403.
    Closed,
    /// The Secret does not exist: 503 (ingress-nginx's e2e tests).
    Missing,
    /// The Secret holds no readable htpasswd: everyone gets 401.
    Unreadable,
}

/// The users of an Ingress's `auth-secret` (`name` or `namespace/name`;
/// another namespace is refused, as ingress-nginx's default
/// `allow-cross-namespace-resources: false`), as its `auth-secret-type`
/// says (`auth-file`: an htpasswd file in key `auth`; `auth-map`: a key
/// per user).
fn basic_auth_users(
    ingress: &Ingress,
    all: &BTreeMap<&str, &str>,
    snap: &crate::model::Snapshot,
) -> Result<heim_proxy::auth::htpasswd::Htpasswd, (BasicFailure, String)> {
    use heim_proxy::auth::htpasswd::Htpasswd;
    let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
    let Some(name) = all
        .get("auth-secret")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    else {
        return Err((
            BasicFailure::Closed,
            "auth-secret is missing: the Ingress answers 403".into(),
        ));
    };
    let name = match name.split_once('/') {
        Some((other, n)) if other == ns => n,
        Some(_) => {
            return Err((
                BasicFailure::Closed,
                format!("{name:?} is in another namespace, which ingress-nginx refuses too: the Ingress answers 403"),
            ))
        }
        None => name,
    };
    let key = crate::model::ObjKey::new(ns, name);
    let Some(secret) = snap.secrets.get(&key) else {
        return Err((
            BasicFailure::Missing,
            format!("Secret {key} does not exist: requests get 503 (as in ingress-nginx)"),
        ));
    };
    let data = secret.data.clone().unwrap_or_default();
    let text = |b: &k8s_openapi::ByteString| String::from_utf8(b.0.clone()).ok();
    let parsed = match all
        .get("auth-secret-type")
        .map(|t| t.trim())
        .unwrap_or("auth-file")
    {
        "auth-file" => match data.get("auth").and_then(text) {
            Some(file) => Htpasswd::parse_file(&file),
            None => Err("no key `auth` holding an htpasswd file".into()),
        },
        "auth-map" => {
            let entries: Option<Vec<(String, String)>> = data
                .iter()
                .map(|(user, hash)| Some((user.clone(), text(hash)?)))
                .collect();
            match entries {
                Some(e) => Htpasswd::from_map(e.iter().map(|(u, h)| (u.as_str(), h.as_str()))),
                None => Err("a value that is not text".into()),
            }
        }
        other => {
            return Err((
                BasicFailure::Closed,
                format!(
                "auth-secret-type {other:?} is not auth-file or auth-map: the Ingress answers 403"
            ),
            ))
        }
    };
    parsed.map_err(|e| {
        (
            BasicFailure::Unreadable,
            format!("Secret {key}: {e}: every request gets 401 (as in ingress-nginx)"),
        )
    })
}

/// A boolean annotation: whether it is on, and its verdict (`on` when
/// true, ignored when false, invalid, with what happens instead, when it
/// is no boolean).
fn switch(value: &str, on: Verdict, otherwise: &str) -> (bool, Verdict) {
    match parse_bool(value) {
        Some(true) => (true, on),
        Some(false) => (false, Verdict::Ignored("off".into())),
        None => (
            false,
            Verdict::Invalid(format!("{value:?} is not a boolean: {otherwise}")),
        ),
    }
}

/// A comma-separated list of CIDR blocks or addresses (at least one), or
/// the first item that is not one.
fn ip_list(value: &str) -> Result<Vec<IpNet>, &str> {
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        nets.push(item.parse::<IpNet>().map_err(|_| item)?);
    }
    if nets.is_empty() {
        return Err(value);
    }
    Ok(nets)
}

/// `strconv.ParseBool`, as ingress-nginx reads booleans.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The identity a recognised auth service's response header carried.
fn identity_of(header: &str) -> Option<IdentityField> {
    match header.to_ascii_lowercase().as_str() {
        "x-auth-request-user"
        | "x-auth-request-preferred-username"
        | "remote-user"
        | "x-forwarded-user" => Some(IdentityField::User),
        "x-auth-request-email" | "remote-email" | "x-forwarded-email" => Some(IdentityField::Email),
        "x-auth-request-groups" | "remote-groups" | "x-forwarded-groups" => {
            Some(IdentityField::Groups)
        }
        _ => None,
    }
}

/// Whether `ingress` puts its hosts in ingress-nginx's regex mode:
/// `use-regex: "true"`, or a `rewrite-target`.
pub fn regex_mode(ingress: &Ingress) -> bool {
    let Some(a) = ingress.metadata.annotations.as_ref() else {
        return false;
    };
    // As ingress-nginx's needsRewrite: a valid target that differs from a
    // path of the Ingress.
    let rewrites = a
        .get(&format!("{PREFIX}rewrite-target"))
        .map(|t| t.trim())
        .filter(|t| valid_rewrite_target(t))
        .is_some_and(|t| {
            ingress
                .spec
                .iter()
                .flat_map(|s| s.rules.iter().flatten())
                .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
                .any(|p| p.path.as_deref().unwrap_or("/") != t)
        });
    a.get(&format!("{PREFIX}use-regex"))
        .is_some_and(|v| parse_bool(v) == Some(true))
        || rewrites
}

/// A canary Ingress (`canary: "true"`): its paths become the canary
/// backend of the mainline routes with the same host and path.
pub fn is_canary(ingress: &Ingress) -> bool {
    ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{PREFIX}canary")))
        .is_some_and(|v| parse_bool(v) == Some(true))
}

/// A canary Ingress's rule (its backend is filled in per path). Its other
/// annotations have no effect in ingress-nginx: the mainline's apply.
fn canary(
    all: &BTreeMap<&str, &str>,
    say: &mut impl FnMut(&str, Verdict),
) -> heim_proxy::canary::CanaryRule {
    let mut c = heim_proxy::canary::CanaryRule::default();
    let weight = |v: &str| v.trim().parse::<u32>().ok().filter(|n| *n <= 1_000_000);
    for (&name, &value) in all {
        let verdict = match name {
            "canary" => Verdict::Exact,
            "canary-by-header" => match http::HeaderName::from_bytes(value.trim().as_bytes()) {
                Ok(h) => {
                    c.by_header = Some(h);
                    Verdict::Exact
                }
                Err(_) => Verdict::Invalid(format!("{value:?} is not a header name: no header decides")),
            },
            "canary-by-header-value" => {
                c.header_value = Some(value.to_string()).filter(|v| !v.is_empty());
                Verdict::Exact
            }
            "canary-by-header-pattern" => match heim_proxy::canary::compile_pattern(value) {
                Ok(r) => {
                    c.header_pattern = Some(r);
                    Verdict::Differs(
                        "matched by a linear-time engine (no backreferences or look-around)".into(),
                    )
                }
                Err(e) => Verdict::Invalid(format!("{e}: the pattern decides nothing")),
            },
            "canary-by-cookie" => {
                c.by_cookie = Some(value.trim().to_string()).filter(|v| !v.is_empty());
                Verdict::Exact
            }
            "canary-weight" => match weight(value) {
                Some(n) => {
                    c.weight = n;
                    Verdict::Exact
                }
                None => Verdict::Invalid(format!("{value:?} is not a weight: 0 (no request by weight)")),
            },
            "canary-weight-total" => match weight(value) {
                Some(n) => {
                    c.weight_total = n;
                    Verdict::Exact
                }
                None => Verdict::Invalid(format!("{value:?} is not a weight: out of 100")),
            },
            _ => Verdict::Ignored(
                "on a canary Ingress, as in ingress-nginx: the mainline Ingress's annotations apply".into(),
            ),
        };
        say(name, verdict);
    }
    c
}

/// Whether `ingress` guards its whole host in ingress-nginx in a way heim
/// does not build yet (client certificates, `auth-tls-*`; a
/// `server-snippet` that allows, denies or authenticates): every
/// ingress-nginx route of its hosts then answers 403.
pub fn guards_host(ingress: &Ingress) -> bool {
    let Some(a) = ingress.metadata.annotations.as_ref() else {
        return false;
    };
    a.iter().any(|(k, v)| match k.strip_prefix(PREFIX) {
        Some(name) if name.starts_with("auth-tls-") => true,
        Some("server-snippet") => guards_access(v),
        _ => false,
    })
}

/// Whether a snippet holds a directive that decides who may pass.
fn guards_access(snippet: &str) -> bool {
    snippet
        .split([';', '\n', '{', '}'])
        .map(|stmt| {
            let mut w = stmt.split_whitespace();
            (w.next().unwrap_or(""), w.next().unwrap_or(""))
        })
        .any(|(d, arg)| {
            matches!(
                d,
                "allow"
                    | "deny"
                    | "auth_basic"
                    | "auth_basic_user_file"
                    | "auth_request"
                    | "satisfy"
            ) || d.starts_with("access_by_lua")
                || (d == "return" && arg.starts_with(['4', '5']))
        })
}

/// A `rewrite-target` heim takes: a path of `[-._~a-zA-Z0-9/:$]` (with
/// `$1..$9`), as ingress-nginx validates it, or an absolute http(s) URL
/// (a 302) without spaces or controls.
fn valid_rewrite_target(t: &str) -> bool {
    // `$` only as `$1..$9`: no other variable is expanded here.
    let b = t.as_bytes();
    let dollars_ok = b
        .iter()
        .enumerate()
        .all(|(i, c)| *c != b'$' || b.get(i + 1).is_some_and(u8::is_ascii_digit));
    let absolute = t.starts_with("http://") || t.starts_with("https://");
    if absolute {
        return t.len() > 8 && dollars_ok && b.iter().all(|c| c.is_ascii_graphic());
    }
    dollars_ok
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~/:$".contains(c))
}

/// Reads `ingress`'s nginx annotations into `o` (where heim's own did not
/// say), and returns each annotation's verdict.
pub fn read(
    ingress: &Ingress,
    have_auth: bool,
    snap: &crate::model::Snapshot,
    o: &mut IngressOptions,
) -> Vec<(String, Verdict)> {
    let empty = BTreeMap::new();
    let all: BTreeMap<&str, &str> = ingress
        .metadata
        .annotations
        .as_ref()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str())))
        .collect();
    let rule_hosts: Vec<String> = ingress
        .spec
        .iter()
        .flat_map(|s| s.rules.iter().flatten())
        .filter_map(|r| r.host.as_ref().map(|h| h.to_ascii_lowercase()))
        .collect();
    let mut out: Vec<(String, Verdict)> = Vec::new();
    let mut say = |name: &str, v: Verdict| out.push((format!("{PREFIX}{name}"), v));
    if is_canary(ingress) {
        o.canary = Some(canary(&all, &mut say));
        return out;
    }
    let mut fail_closed = false;
    let (mut ssl_redirect, mut force_redirect) = (None, None);
    // ingress-nginx's ConfigMap, when given: snippets had no effect there
    // unless it allowed them (`allow-snippet-annotations: "true"` and
    // `annotations-risk-level: Critical`; both off by default since 1.12).
    let cm = snap.nginx_configmap.as_ref();
    let cm_get = |k: &str| cm.and_then(|c| c.get(k)).map(|v| v.trim());
    // Only the one case where ingress-nginx served the Ingress and dropped
    // the snippet: risk level Critical, snippets not allowed. Below
    // Critical it refused the whole Ingress, and an older ingress-nginx
    // allowed snippets by default: those stay refused here (a snippet
    // that guarded access closes the Ingress).
    let snippets_had_no_effect = cm_get("annotations-risk-level") == Some("Critical")
        && cm_get("allow-snippet-annotations").and_then(parse_bool) == Some(false);
    let mut cors_names: Vec<&str> = Vec::new();
    let mut affinity_names: Vec<&str> = Vec::new();
    let mut ssl_names: Vec<&str> = Vec::new();
    let mut disable_intercept = false;
    let mut cors_fallbacks: Vec<(&str, String)> = Vec::new();
    let secs = |v: &str| -> Option<Duration> {
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=86_400).contains(n))
            .map(Duration::from_secs)
    };
    for (&name, &value) in &all {
        if is_snippet(name) && snippets_had_no_effect {
            say(
                name,
                Verdict::Ignored(
                    "ingress-nginx's ConfigMap does not allow snippets (allow-snippet-annotations, annotations-risk-level): it had no effect there either".into(),
                ),
            );
            continue;
        }
        if is_snippet(name) {
            let directives = directives(value);
            let replacement = replacement(&directives);
            // An auth-snippet shapes the auth sub-request: without it, the
            // auth service may admit more than written.
            let guards =
                guards_access(value) || (name == "auth-snippet" && all.contains_key("auth-url"));
            fail_closed |= guards;
            say(
                name,
                Verdict::Refused(format!(
                    "snippets are never applied (directives: {}); {}{replacement}",
                    if directives.is_empty() {
                        "none".to_string()
                    } else {
                        directives.join(", ")
                    },
                    if guards {
                        "it guards access (allow, deny, auth_*, access_by_lua, return 4xx): the Ingress answers 403"
                    } else {
                        "the Ingress is served without it"
                    }
                )),
            );
            continue;
        }
        if let Some((_, why)) = IGNORED.iter().find(|(n, _)| *n == name) {
            say(name, Verdict::Ignored((*why).into()));
            continue;
        }
        if FAIL_CLOSED.contains(&name) {
            fail_closed = true;
            say(
                name,
                Verdict::Unsupported(
                    "not in this build, and leaving it out would serve the route with less protection: the Ingress answers 403"
                        .into(),
                ),
            );
            continue;
        }
        if AUTH_COMPANIONS.contains(&name) {
            let service = all
                .get("auth-url")
                .and_then(|u| sign_in_service(u, &rule_hosts))
                .filter(|_| have_auth);
            say(
                name,
                match (all.contains_key("auth-url"), service, name) {
                    (false, _, _) => Verdict::Ignored("no effect without auth-url (as in ingress-nginx)".into()),
                    (true, None, "auth-proxy-set-headers") => {
                        // The auth service may decide by those headers.
                        fail_closed = true;
                        Verdict::Unsupported(
                            "heim does not read the ConfigMap it names, and the auth service may decide by those headers: the Ingress answers 403".into(),
                        )
                    }
                    (true, None, _) => Verdict::Exact,
                    (true, Some(_), "auth-signin") => Verdict::Differs(
                        "a browser without a session goes to heim's sign-in, then back to the URL it asked for (rd)".into(),
                    ),
                    (true, Some(_), "auth-response-headers") => {
                        let (filled, not): (Vec<&str>, Vec<&str>) = value
                            .split(',')
                            .map(str::trim)
                            .filter(|h| !h.is_empty())
                            .partition(|h| identity_of(h).is_some());
                        Verdict::Differs(format!(
                            "filled from the heim session: {}{}",
                            if filled.is_empty() { "none".to_string() } else { filled.join(", ") },
                            if not.is_empty() {
                                format!("; not sent: {} (heim's signed JWT is X-Heim-JWT)", not.join(", "))
                            } else {
                                String::new()
                            }
                        ))
                    }
                    (true, Some(_), _) => Verdict::Ignored("heim's sign-in has no sub-request to tune".into()),
                },
            );
            continue;
        }
        if let Some(why) = differs(name) {
            say(name, Verdict::Differs(why.into()));
            continue;
        }
        match name {
            "enable-modsecurity" | "enable-owasp-core-rules" if parse_bool(value) == Some(false) => {
                say(name, Verdict::Ignored("off".into()));
            }
            "enable-modsecurity" | "enable-owasp-core-rules" | "modsecurity-transaction-id" => {
                say(name, Verdict::Refused("heim has no ModSecurity".into()));
            }
            "enable-global-auth" => say(
                name,
                match (parse_bool(value), cm_get("global-auth-url").is_some_and(|u| !u.is_empty())) {
                    (Some(_), true) => Verdict::Exact,
                    (Some(_), false) => Verdict::Ignored(
                        "no global-auth-url in ingress-nginx's ConfigMap (--nginx-configmap)".into(),
                    ),
                    (None, _) => Verdict::Invalid(format!("{value:?} is not a boolean: global auth applies")),
                },
            ),
            "proxy-body-size" => match heim_proxy::config::parse_size(value) {
                Some(n) if o.max_body_bytes.is_none() => {
                    o.max_body_bytes = Some(n);
                    say(name, Verdict::Exact);
                }
                Some(_) => say(
                    name,
                    Verdict::Ignored("heim.dev/proxy-body-size wins".into()),
                ),
                None => say(
                    name,
                    Verdict::Invalid(format!(
                        "{value:?} is not a size like 8m, 512k, 1g or 0: the default limit stays"
                    )),
                ),
            },
            "proxy-connect-timeout" => match secs(value) {
                Some(d) => {
                    o.connect_timeout = Some(d);
                    say(name, Verdict::Exact);
                }
                None => say(
                    name,
                    Verdict::Invalid(format!("{value:?} is not whole seconds: the default stays")),
                ),
            },
            "proxy-read-timeout" => match secs(value) {
                Some(d) if o.response_timeout.is_none() => {
                    o.response_timeout = Some(d);
                    say(
                        name,
                        Verdict::Differs(
                            "bounds the wait for the response head and between body reads; WebSockets are not cut by it (server.websocket_idle_timeout is)"
                                .into(),
                        ),
                    );
                }
                Some(_) => say(
                    name,
                    Verdict::Ignored("heim.dev/proxy-read-timeout wins".into()),
                ),
                None => say(
                    name,
                    Verdict::Invalid(format!("{value:?} is not whole seconds: the default stays")),
                ),
            },
            "ssl-redirect" | "force-ssl-redirect" => match parse_bool(value) {
                Some(on) => {
                    if name == "force-ssl-redirect" {
                        force_redirect = Some(on);
                    } else {
                        ssl_redirect = Some(on);
                    }
                    say(
                        name,
                        if on {
                            Verdict::Differs(
                                "308 to https for every host heim serves (heim always has a certificate), the request URI kept as it is"
                                    .into(),
                            )
                        } else {
                            Verdict::Exact
                        },
                    );
                }
                None => say(
                    name,
                    Verdict::Invalid(format!(
                        "{value:?} is not a boolean: the default (redirect) stays"
                    )),
                ),
            },
            "allowlist-source-range" | "whitelist-source-range" => {
                // `allowlist-` wins; `whitelist-` is read only without it.
                if name == "whitelist-source-range" && all.contains_key("allowlist-source-range") {
                    say(
                        name,
                        Verdict::Ignored("allowlist-source-range is set and wins".into()),
                    );
                    continue;
                }
                let nets = match ip_list(value) {
                    Ok(nets) => nets,
                    Err(bad) => {
                        fail_closed = true;
                        say(
                            name,
                            Verdict::Invalid(format!(
                                "{bad:?} is not a list of CIDR blocks: the Ingress answers 403 until it is fixed"
                            )),
                        );
                        continue;
                    }
                };
                if o.source_ranges.is_empty() {
                    o.source_ranges = nets;
                    say(
                        name,
                        Verdict::Differs(
                            "the client is the TCP peer, or what a [server] trusted_proxies peer says: a client-sent X-Forwarded-For is never believed (ingress-nginx with use-forwarded-headers did)"
                                .into(),
                        ),
                    );
                } else {
                    say(
                        name,
                        Verdict::Ignored("heim.dev/allow-source-range wins".into()),
                    );
                }
            }
            "proxy-ssl-secret" | "proxy-ssl-verify" | "proxy-ssl-name" | "proxy-ssl-server-name" => {
                // Read once backend-protocol is known (after the loop).
                ssl_names.push(name);
            }
            "default-backend" => {
                o.default_backend = Some(value.trim().to_string()).filter(|v| !v.is_empty());
                say(name, Verdict::Exact);
            }
            "disable-proxy-intercept-errors" => {
                let (off, v) = switch(value, Verdict::Exact, "errors are intercepted");
                disable_intercept = off;
                say(name, v);
            }
            "custom-http-errors" => {
                let codes: Result<Vec<u16>, _> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| c.parse::<u16>().ok().filter(|n| (400..=599).contains(n)).ok_or(c))
                    .collect();
                match codes {
                    Ok(codes) => {
                        o.custom_http_errors = codes;
                        say(
                            name,
                            if all.contains_key("default-backend") {
                                Verdict::Exact
                            } else {
                                Verdict::Unsupported(
                                    "without default-backend: heim has no controller-wide default backend, so the backend's own answer goes out".into(),
                                )
                            },
                        );
                    }
                    Err(bad) => say(
                        name,
                        Verdict::Invalid(format!("{bad:?} is not an HTTP error status: no error pages")),
                    ),
                }
            }
            "ssl-passthrough" => {
                let (on, v) = switch(
                    value,
                    Verdict::Differs(
                        "with --enable-ssl-passthrough (as in ingress-nginx): the host's TLS goes to the pod unopened when its route checks nothing (public, no password, auth service, address list or limit); HTTP on port 80 is still proxied".into(),
                    ),
                    "heim terminates TLS",
                );
                o.tls_passthrough = on;
                say(name, v);
            }
            "service-upstream" => {
                let (on, v) = switch(value, Verdict::Exact, "the endpoints");
                o.service_upstream = on;
                say(name, v);
            }
            "server-alias" => {
                let mut bad = None;
                for a in value.split(',').map(|a| a.trim().to_ascii_lowercase()) {
                    if a.is_empty() {
                        continue;
                    }
                    let name_ok = a.len() <= 253
                        && a.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if name_ok {
                        o.server_aliases.push(a);
                    } else {
                        bad.get_or_insert(a);
                    }
                }
                say(
                    name,
                    match bad {
                        None => Verdict::Differs(
                            "every path of the host answers under the alias too; TLS for it needs a certificate that covers it (heim has no fake default certificate)".into(),
                        ),
                        Some(b) => Verdict::Invalid(format!("{b:?} is not a host name: the other aliases are served")),
                    },
                );
            }
            "from-to-www-redirect" => {
                let (on, v) = switch(
                    value,
                    Verdict::Differs(
                        "the other name answers 308 to $scheme://host$request_uri, without ingress-nginx's explicit :port and trailing-slash trim".into(),
                    ),
                    "no redirect",
                );
                o.from_to_www = on;
                say(name, v);
            }
            "denylist-source-range" => match ip_list(value) {
                Ok(nets) => {
                    o.denied_ranges = nets;
                    say(
                        name,
                        Verdict::Differs(
                            "the client is the TCP peer, or what a [server] trusted_proxies peer says: a client cannot leave the list by sending X-Forwarded-For"
                                .into(),
                        ),
                    );
                }
                Err(bad) => {
                    fail_closed = true;
                    say(
                        name,
                        Verdict::Invalid(format!(
                            "{bad:?} is not a list of CIDR blocks: the Ingress answers 403 until it is fixed"
                        )),
                    );
                }
            },
            "auth-type" => match value.trim() {
                "basic" => {
                    let realm = all
                        .get("auth-realm")
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| heim_proxy::auth::htpasswd::DEFAULT_REALM.into());
                    match basic_auth_users(ingress, &all, snap) {
                        Ok(users) => {
                            o.basic_auth = Some(Arc::new(heim_proxy::route::BasicAuth {
                                users: Some(users),
                                realm,
                            }));
                            say(name, Verdict::Exact);
                        }
                        Err((failure, why)) => {
                            // As in ingress-nginx: a missing Secret gets 503,
                            // an unreadable one refuses everyone (401).
                            let users = match failure {
                                BasicFailure::Closed => None,
                                BasicFailure::Missing => Some(None),
                                BasicFailure::Unreadable => {
                                    Some(heim_proxy::auth::htpasswd::Htpasswd::parse_file("").ok())
                                }
                            };
                            match users {
                                None => fail_closed = true,
                                Some(users) => {
                                    o.basic_auth =
                                        Some(Arc::new(heim_proxy::route::BasicAuth { users, realm }))
                                }
                            }
                            say(name, Verdict::Invalid(why));
                        }
                    }
                }
                other => {
                    fail_closed = true;
                    say(
                        name,
                        Verdict::Unsupported(format!(
                            "{other:?} authentication is not in this build (basic is): the Ingress answers 403"
                        )),
                    );
                }
            },
            "auth-secret" | "auth-secret-type" | "auth-realm" => say(
                name,
                match all.get("auth-type").map(|t| t.trim()) {
                    Some("basic") => Verdict::Exact,
                    Some(_) => Verdict::Ignored("goes with auth-type basic".into()),
                    None => Verdict::Ignored("no effect without auth-type (as in ingress-nginx)".into()),
                },
            ),
            "enable-cors" => match parse_bool(value) {
                Some(true) => {
                    let get = |k: &str| all.get(k).copied();
                    let (cors, fallbacks) =
                        heim_proxy::forward::cors::Cors::from_nginx(&heim_proxy::forward::cors::CorsAnnotations {
                            allow_origin: get("cors-allow-origin"),
                            allow_methods: get("cors-allow-methods"),
                            allow_headers: get("cors-allow-headers"),
                            allow_credentials: get("cors-allow-credentials"),
                            expose_headers: get("cors-expose-headers"),
                            max_age: get("cors-max-age"),
                        });
                    o.cors = Some(Arc::new(cors));
                    say(name, Verdict::Exact);
                    cors_fallbacks = fallbacks;
                }
                Some(false) => say(name, Verdict::Ignored("off".into())),
                None => say(
                    name,
                    Verdict::Invalid(format!("{value:?} is not a boolean: no CORS (as ingress-nginx)")),
                ),
            },
            "cors-allow-origin" | "cors-allow-methods" | "cors-allow-headers"
            | "cors-allow-credentials" | "cors-expose-headers" | "cors-max-age" => {
                // Verdicts once enable-cors is read (it sorts first).
                cors_names.push(name);
            }
            "limit-rps" | "limit-rpm" | "limit-connections" | "limit-burst-multiplier" => {
                match value.trim().parse::<u32>() {
                    Ok(n) => {
                        let l = o.rate_limit.get_or_insert_with(Default::default);
                        match name {
                            "limit-rps" => l.per_second = Some(n),
                            "limit-rpm" => l.per_minute = Some(n),
                            "limit-connections" => l.connections = Some(n),
                            _ => l.burst_multiplier = n,
                        }
                        say(name, Verdict::Exact);
                    }
                    Err(_) => say(
                        name,
                        Verdict::Invalid(format!("{value:?} is not a number: no limit (as ingress-nginx)")),
                    ),
                }
            }
            "limit-allowlist" | "limit-whitelist" => {
                if name == "limit-whitelist" && all.contains_key("limit-allowlist") {
                    say(name, Verdict::Ignored("limit-allowlist is set and wins".into()));
                    continue;
                }
                match ip_list(value) {
                    Ok(nets) => {
                        o.rate_limit.get_or_insert_with(Default::default).allowlist = nets;
                        say(name, Verdict::Exact);
                    }
                    Err(bad) => say(
                        name,
                        Verdict::Invalid(format!("{bad:?} is not a CIDR block: nobody is exempt")),
                    ),
                }
            }
            "permanent-redirect" | "temporal-redirect" | "app-root" => {
                let to = value.trim();
                let absolute = to.starts_with("http://") || to.starts_with("https://");
                let shape_ok = !to.is_empty()
                    && to.bytes().all(|b| b.is_ascii_graphic())
                    && (absolute || to.starts_with('/'))
                    && !(name == "app-root" && absolute);
                let vars = heim_proxy::route::redirect_variables_known(to);
                match (shape_ok, vars) {
                    (true, Ok(())) => {
                        let (code, fallback, max) = match name {
                            "permanent-redirect" => ("permanent-redirect-code", 301, 308),
                            "temporal-redirect" => ("temporal-redirect-code", 302, 307),
                            _ => ("", 302, 302),
                        };
                        let code = all
                            .get(code)
                            .and_then(|c| c.trim().parse::<u16>().ok())
                            .filter(|c| (300..=max).contains(c))
                            .unwrap_or(fallback);
                        let r = heim_proxy::route::Redirect {
                            code,
                            to: to.to_string(),
                            root_only: name == "app-root",
                        };
                        // Annotations come in name order: temporal- (last)
                        // wins over permanent-, and both over app-root.
                        o.redirect = Some(r);
                        say(
                            name,
                            Verdict::Differs(format!(
                                "{code} to {to}, before sign-in, as nginx's return; a $request_uri or other variable is expanded (ingress-nginx >= 1.12 itself drops such Ingresses)"
                            )),
                        );
                    }
                    (false, _) => say(
                        name,
                        Verdict::Invalid(format!(
                            "{value:?} is not {}: no redirect",
                            if name == "app-root" { "a path" } else { "an http(s) URL or a path" }
                        )),
                    ),
                    (true, Err(why)) => say(name, Verdict::Invalid(format!("{why}: no redirect"))),
                }
            }
            "upstream-vhost" => {
                let v = value.trim();
                let ok = !v.contains('$') && v.parse::<http::uri::Authority>().is_ok_and(|a| a.as_str() == v && !v.contains('@'));
                match http::HeaderValue::from_str(v) {
                    Ok(h) if ok => {
                        o.upstream_host = Some(h);
                        say(name, Verdict::Exact);
                    }
                    _ => say(
                        name,
                        Verdict::Invalid(format!(
                            "{value:?} is not a host name (nginx variables are not read here): the client's Host goes upstream"
                        )),
                    ),
                }
            }
            "x-forwarded-prefix" => {
                let v = value.trim();
                let ok = v.starts_with('/') && v.bytes().all(|b| b.is_ascii_graphic());
                match http::HeaderValue::from_str(v) {
                    Ok(h) if ok => {
                        o.forwarded_prefix = Some(h);
                        say(
                            name,
                            if all.contains_key("rewrite-target") {
                                Verdict::Exact
                            } else {
                                Verdict::Ignored("sent only with a rewrite-target (as in ingress-nginx)".into())
                            },
                        );
                    }
                    _ => say(name, Verdict::Invalid(format!("{value:?} is not a path: no header"))),
                }
            }
            "permanent-redirect-code" | "temporal-redirect-code" => {
                let base = name.trim_end_matches("-code");
                say(
                    name,
                    if all.contains_key(base) {
                        Verdict::Exact
                    } else {
                        Verdict::Ignored(format!("no effect without {base}"))
                    },
                );
            }
            "use-regex" => match parse_bool(value) {
                Some(_) => say(
                    name,
                    Verdict::Differs(
                        "host-wide, as in ingress-nginx: every path of this host's ingress-nginx Ingresses is a case-insensitive regular expression anchored at the start, longest first; heim's engine is linear-time (no look-around or back-references)"
                            .into(),
                    ),
                ),
                None => say(name, Verdict::Invalid(format!("{value:?} is not a boolean"))),
            },
            "rewrite-target" => {
                let t = value.trim();
                if valid_rewrite_target(t) {
                    o.rewrite_target = Some(t.to_string());
                    say(name, Verdict::Exact);
                } else {
                    say(
                        name,
                        Verdict::Invalid(format!(
                            "{value:?} is not a path of [-._~a-zA-Z0-9/:$] or an http(s) URL: requests go unrewritten"
                        )),
                    );
                }
            }
            "backend-protocol" => match value.trim().to_ascii_uppercase().as_str() {
                "HTTP" => say(name, Verdict::Exact),
                "GRPC" if o.protocol.is_none() => {
                    o.protocol = Some(UpstreamProtocol::H2c);
                    say(name, Verdict::Exact);
                }
                "GRPC" => say(
                    name,
                    Verdict::Ignored("heim.dev/backend-protocol wins".into()),
                ),
                "HTTPS" | "GRPCS" if o.protocol.is_none() => {
                    if value.trim().eq_ignore_ascii_case("GRPCS") {
                        o.protocol = Some(UpstreamProtocol::H2c);
                    }
                    o.upstream_tls = Some(heim_proxy::upstream::UpstreamTls::unverified());
                    say(
                        name,
                        Verdict::Differs(
                            "TLS to the pod without verification or SNI, as nginx's defaults (proxy-ssl-* to verify); GRPCS offers ALPN h2".into(),
                        ),
                    );
                }
                "HTTPS" | "GRPCS" => say(
                    name,
                    Verdict::Ignored("heim.dev/backend-protocol wins".into()),
                ),
                "AUTO_HTTP" | "FCGI" => say(
                    name,
                    Verdict::Unsupported(format!(
                        "{value} to the pod is not in this build: heim speaks plain HTTP/1.1 to it"
                    )),
                ),
                _ => say(
                    name,
                    Verdict::Invalid(format!(
                        "{value:?} is not HTTP, HTTPS, GRPC, GRPCS, AUTO_HTTP or FCGI: HTTP"
                    )),
                ),
            },
            "auth-url" => {
                // Without heim's sign-in ([auth]), even oauth2-proxy is
                // asked as ingress-nginx asked it (it answers if it still runs).
                let Some((service, rules)) =
                    sign_in_service(value, &rule_hosts).filter(|_| have_auth)
                else {
                    // Another auth service: asked per request, as nginx's
                    // auth_request does.
                    let get = |k: &str| all.get(k).copied();
                    let a = heim_proxy::auth::external::NginxAuthAnnotations {
                        url: value,
                        method: get("auth-method"),
                        signin: get("auth-signin"),
                        signin_redirect_param: get("auth-signin-redirect-param"),
                        response_headers: get("auth-response-headers"),
                        request_redirect: get("auth-request-redirect"),
                        cache_key: get("auth-cache-key"),
                        cache_duration: get("auth-cache-duration"),
                        always_set_cookie: get("auth-always-set-cookie"),
                        proxy_set_headers: &[],
                    };
                    // `$host` in the auth service's address is the
                    // client's choice unless every rule names one host.
                    if client_chooses_host(value, ingress) {
                        fail_closed = true;
                        say(
                            name,
                            Verdict::Invalid(
                                "a variable names the auth service's host, and a rule without a host (or a wildcard) would let the client choose it: the Ingress answers 403".into(),
                            ),
                        );
                        continue;
                    }
                    match heim_proxy::auth::external::ExternalAuth::from_nginx(&a) {
                        Ok(ext) => {
                            o.external_auth = Some(Arc::new(ext));
                            say(name, Verdict::Exact);
                        }
                        Err(e) => {
                            fail_closed = true;
                            say(
                                name,
                                Verdict::Invalid(format!(
                                    "{e}: the Ingress answers 403 until it is fixed (ingress-nginx: 503)"
                                )),
                            );
                        }
                    }
                    continue;
                };
                // Every name the auth service was to set is heim's: a
                // client's copy never reaches the backend, filled or not.
                if let Some(headers) = all.get("auth-response-headers") {
                    for h in headers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        if let Ok(n) = http::HeaderName::from_bytes(h.as_bytes()) {
                            if !o.strip_headers.contains(&n) {
                                o.strip_headers.push(n);
                            }
                        }
                        let Some(field) = identity_of(h) else {
                            continue;
                        };
                        if let Ok(pair) = heim_proxy::config::identity_header(h, field_name(field))
                        {
                            if !o.identity_headers.iter().any(|(n, _)| *n == pair.0) {
                                o.identity_headers.push(pair);
                            }
                        }
                    }
                }
                o.replaces_oauth2_proxy = service == "oauth2-proxy";
                if o.policy.is_some() {
                    say(
                        name,
                        Verdict::Differs(format!(
                            "{service} is replaced by heim's sign-in, with the heim.dev/allow-* rules; auth-response-headers are filled from the heim session"
                        )),
                    );
                } else {
                    let who = if rules.any_authenticated {
                        "anyone who signs in with heim's providers".to_string()
                    } else {
                        format!(
                            "users of groups [{}], emails [{}] or domains [{}] (from the auth-url's query)",
                            rules.groups.join(", "),
                            rules.emails.join(", "),
                            rules.domains.join(", ")
                        )
                    };
                    o.policy = Some(Policy::Allow(Arc::new(rules)));
                    say(
                        name,
                        Verdict::Review(format!(
                            "{service} is replaced by heim's sign-in: {who}; {service}'s own limits (its email domains, organisations, groups, second factor) are not known to heim: state them with heim.dev/allow-* annotations"
                        )),
                    );
                }
            }
            "affinity" | "affinity-mode" | "affinity-canary-behavior" | "session-cookie-name"
            | "session-cookie-max-age" | "session-cookie-expires" | "session-cookie-path"
            | "session-cookie-domain" | "session-cookie-samesite" | "session-cookie-secure"
            | "session-cookie-conditional-samesite-none" | "session-cookie-change-on-failure" => {
                // Read together once the loop is done (they qualify each other).
                affinity_names.push(name);
            }
            _ => match unsupported(name) {
                Some(why) => say(name, Verdict::Unsupported(why.into())),
                None => say(
                    name,
                    Verdict::Ignored("not an ingress-nginx annotation (a typo?)".into()),
                ),
            },
        }
    }
    if !ssl_names.is_empty() {
        let verdict = proxy_ssl(ingress, &all, snap, o, &mut fail_closed);
        for name in ssl_names {
            say(name, verdict.clone());
        }
    }
    if !affinity_names.is_empty() {
        o.affinity = affinity(&all, &affinity_names, regex_mode(ingress), &mut say);
    }
    for name in cors_names {
        let verdict = match (&o.cors, cors_fallbacks.iter().find(|(n, _)| *n == name)) {
            (None, _) => {
                Verdict::Ignored("no effect without enable-cors (as in ingress-nginx)".into())
            }
            (Some(_), Some((_, why))) => Verdict::Invalid(why.clone()),
            (Some(_), None) => Verdict::Exact,
        };
        say(name, verdict);
    }
    // heim.dev/ssl-redirect wins; force-ssl-redirect wins over ssl-redirect.
    if o.https_redirect.is_none() {
        o.https_redirect = match (force_redirect, ssl_redirect) {
            (Some(true), _) => Some(true),
            (_, s) => s,
        };
    }
    if disable_intercept {
        o.custom_http_errors.clear();
    }
    // The ConfigMap fills in what the annotations left unsaid.
    if let Some(cm) = cm {
        configmap_defaults(ingress, cm, &all, o, &mut fail_closed);
    }
    // Basic auth or an auth service decides who passes; heim's own rules,
    // if the Ingress states them, apply on top.
    if (o.basic_auth.is_some() || o.external_auth.is_some()) && o.policy.is_none() {
        o.policy = Some(Policy::Public);
    }
    if fail_closed {
        o.policy = Some(Policy::Deny);
    }
    out
}

/// `affinity: cookie` and its `session-cookie-*`/`affinity-*` names
/// (`names`, those present), as ingress-nginx's `sessionaffinity` parser
/// reads them; each gets its verdict.
fn affinity(
    all: &BTreeMap<&str, &str>,
    names: &[&str],
    regex: bool,
    say: &mut impl FnMut(&str, Verdict),
) -> Option<heim_proxy::affinity::Affinity> {
    use heim_proxy::affinity::{self as aff, Affinity, AffinityMode, SameSite};
    let on = all.get("affinity").map(|v| v.trim()) == Some("cookie");
    let mut a = Affinity::new("");
    let seconds = |v: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| n.unsigned_abs() <= 10 * 365 * 86_400)
    };
    for &name in names {
        let value = all.get(name).copied().unwrap_or("");
        let v = value.trim();
        let bad = |what: &str| Verdict::Invalid(format!("{value:?} is not {what}"));
        let verdict = match name {
            "affinity" if on => Verdict::Differs(format!(
                "the cookie's value is heim's own (16 hex digits, a keyed hash of the endpoint), not <hash>|<backend>; both affinity-modes keep a client on its endpoint while it is up; with several heim replicas each pins clients anew{}",
                if regex && !all.contains_key("session-cookie-path") {
                    " (use-regex without session-cookie-path: the cookie's path is each pattern's literal prefix, where ingress-nginx warns and uses the pattern)"
                } else {
                    ""
                }
            )),
            "affinity" => bad("cookie (the only affinity type): requests are spread round-robin"),
            _ if !on => Verdict::Ignored("no effect without affinity: cookie (as in ingress-nginx)".into()),
            "session-cookie-name" if aff::valid_cookie_name(v) => {
                a.cookie_name = v.to_string();
                Verdict::Exact
            }
            "session-cookie-name" => bad("a cookie name: INGRESSCOOKIE is used"),
            "session-cookie-path" if aff::valid_path(v) => {
                a.path = v.to_string();
                Verdict::Exact
            }
            "session-cookie-path" => bad("a URL path: the Ingress path is used"),
            "session-cookie-domain" if aff::valid_domain(v) => {
                a.domain = Some(v.to_string());
                Verdict::Exact
            }
            "session-cookie-domain" => bad("a domain: the cookie has no Domain"),
            "session-cookie-samesite" => match SameSite::parse(v) {
                Some(s) => {
                    a.same_site = Some(s);
                    Verdict::Exact
                }
                None => bad("None, Lax or Strict: the cookie has no SameSite"),
            },
            "session-cookie-expires" | "session-cookie-max-age" => match seconds(v) {
                Some(n) => {
                    if name == "session-cookie-expires" {
                        a.expires = Some(n);
                    } else {
                        a.max_age = Some(n);
                    }
                    Verdict::Exact
                }
                None => bad("whole seconds (up to ten years): it is left out"),
            },
            "session-cookie-secure"
            | "session-cookie-conditional-samesite-none"
            | "session-cookie-change-on-failure" => match parse_bool(v) {
                Some(b) => match name {
                    "session-cookie-secure" => {
                        a.secure = b;
                        Verdict::Exact
                    }
                    "session-cookie-conditional-samesite-none" => {
                        a.conditional_same_site_none = b;
                        Verdict::Exact
                    }
                    _ => {
                        a.change_on_failure = b;
                        Verdict::Differs(
                            "heim never resends a request an endpoint received: when the cookie's endpoint fails to connect or is ejected, another serves the request, and the cookie follows it only with true".into(),
                        )
                    }
                },
                None => bad("a boolean: false"),
            },
            "affinity-mode" => match v {
                "balanced" | "persistent" => {
                    a.mode = if v == "balanced" {
                        AffinityMode::Balanced
                    } else {
                        AffinityMode::Persistent
                    };
                    Verdict::Differs(
                        "both keep a client on its endpoint while it is up (persistent): on scale-up, only new clients reach the new endpoints".into(),
                    )
                }
                _ => bad("balanced or persistent: balanced"),
            },
            // "affinity-canary-behavior", read from the canary Ingress.
            _ => Verdict::Ignored(
                "ingress-nginx reads it from the canary Ingress; heim's canaries behave as sticky (a client pinned to either backend stays there)".into(),
            ),
        };
        say(name, verdict);
    }
    on.then_some(a)
}

fn field_name(f: IdentityField) -> &'static str {
    match f {
        IdentityField::Email => "email",
        IdentityField::User => "user",
        IdentityField::Groups => "groups",
    }
}

/// The directive names of a snippet: the first word of each statement,
/// statements ending at `;`, a line end, or a block's `{` / `}` (a `{` that
/// follows whitespace: `${var}` is no block).
fn directives(snippet: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut prev = ' ';
    for c in snippet.chars() {
        let ends = c == ';' || c == '\n' || c == '}' || (c == '{' && prev.is_whitespace());
        if ends {
            statements.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
        prev = c;
    }
    statements.push(current);
    let mut names: Vec<String> = statements
        .iter()
        .filter_map(|stmt| stmt.split_whitespace().next())
        .filter(|w| !w.starts_with('#'))
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(40)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names.truncate(20);
    names
}

/// heim's replacement for what a snippet did, where there is one.
fn replacement(directives: &[String]) -> String {
    let mut r = Vec::new();
    for d in directives {
        let hint = match d.as_str() {
            "more_set_headers" | "add_header" | "more_clear_headers" => {
                "response headers: not in this build"
            }
            "proxy_set_header" => "request headers: upstream-vhost for Host; identity headers by heim.dev/identity-headers",
            "return" | "rewrite" => "redirects: not in this build",
            "allow" | "deny" => "heim.dev/allow-source-range",
            "auth_basic" | "auth_request" => "heim.dev/allow-* with heim's sign-in",
            _ => continue,
        };
        if !r.contains(&hint) {
            r.push(hint);
        }
    }
    if r.is_empty() {
        String::new()
    } else {
        format!("; instead: {}", r.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> crate::model::Snapshot {
        crate::model::Snapshot::default()
    }

    fn ingress(annotations: &[(&str, &str)]) -> Ingress {
        let mut i = Ingress::default();
        i.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                .collect(),
        );
        i
    }

    /// An Ingress with one rule for one exact host.
    fn hosted(annotations: &[(&str, &str)]) -> Ingress {
        let mut i = ingress(annotations);
        i.spec = Some(
            serde_json::from_value(serde_json::json!({ "rules": [{ "host": "app.example.com" }] }))
                .unwrap(),
        );
        i
    }

    fn verdict<'a>(v: &'a [(String, Verdict)], name: &str) -> &'a Verdict {
        &v.iter()
            .find(|(n, _)| n == &format!("{PREFIX}{name}"))
            .unwrap_or_else(|| panic!("no verdict for {name}: {v:?}"))
            .1
    }

    fn sticky(annotations: &[(&str, &str)]) -> (IngressOptions, Vec<(String, Verdict)>) {
        let mut o = IngressOptions::default();
        let v = read(&ingress(annotations), false, &snap(), &mut o);
        (o, v)
    }

    #[test]
    fn should_set_sticky_cookie_serverid() {
        let (o, v) = sticky(&[("affinity", "cookie"), ("session-cookie-name", "SERVERID")]);
        let a = o.affinity.expect("affinity: cookie is built");
        assert_eq!(a.cookie_name, "SERVERID");
        assert_eq!(a.path, "", "each route's path, filled in per route");
        assert!(matches!(verdict(&v, "affinity"), Verdict::Differs(_)));
        assert_eq!(*verdict(&v, "session-cookie-name"), Verdict::Exact);
        let (o, _) = sticky(&[("affinity", "cookie")]);
        assert_eq!(o.affinity.unwrap().cookie_name, "INGRESSCOOKIE");
    }

    #[test]
    fn should_set_cookie_with_expires_domain_secure_samesite() {
        let (o, v) = sticky(&[
            ("affinity", "cookie"),
            ("session-cookie-expires", "172800"),
            ("session-cookie-max-age", "259200"),
            ("session-cookie-domain", "foo.bar"),
            ("session-cookie-secure", "true"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-conditional-samesite-none", "true"),
            ("session-cookie-change-on-failure", "true"),
            ("session-cookie-path", "/foo/bar"),
            ("affinity-mode", "persistent"),
        ]);
        let a = o.affinity.unwrap();
        assert_eq!((a.expires, a.max_age), (Some(172_800), Some(259_200)));
        assert_eq!(a.domain.as_deref(), Some("foo.bar"));
        assert!(a.secure && a.conditional_same_site_none && a.change_on_failure);
        assert_eq!(a.same_site, Some(heim_proxy::affinity::SameSite::None));
        assert_eq!(a.path, "/foo/bar");
        assert_eq!(a.mode, heim_proxy::affinity::AffinityMode::Persistent);
        for name in [
            "session-cookie-expires",
            "session-cookie-domain",
            "session-cookie-path",
        ] {
            assert_eq!(*verdict(&v, name), Verdict::Exact, "{name}");
        }
        assert!(
            v.iter().all(|(_, v)| !matches!(v, Verdict::Unsupported(_))),
            "{v:?}"
        );
    }

    #[test]
    fn should_not_set_cookie_without_domain_annotation() {
        let (o, _) = sticky(&[("affinity", "cookie")]);
        let a = o.affinity.unwrap();
        assert_eq!(a.domain, None);
        assert!(!a.secure && a.same_site.is_none() && a.expires.is_none() && a.max_age.is_none());
    }

    #[test]
    fn sticky_values_that_do_not_parse_are_left_out() {
        let (o, v) = sticky(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "bad name"),
            ("session-cookie-domain", "foo.bar; Secure"),
            ("session-cookie-path", "/a; Domain=evil"),
            ("session-cookie-samesite", "sometimes"),
            ("session-cookie-max-age", "1h"),
            ("affinity-mode", "random"),
        ]);
        let a = o.affinity.unwrap();
        assert_eq!(a.cookie_name, "INGRESSCOOKIE");
        assert_eq!(
            (a.domain, a.path.as_str(), a.same_site, a.max_age),
            (None, "", None, None)
        );
        for name in [
            "session-cookie-name",
            "session-cookie-domain",
            "session-cookie-path",
            "session-cookie-samesite",
            "session-cookie-max-age",
            "affinity-mode",
        ] {
            assert!(matches!(verdict(&v, name), Verdict::Invalid(_)), "{name}");
        }
    }

    #[test]
    fn session_cookie_names_without_affinity_cookie_do_nothing() {
        let (o, v) = sticky(&[("session-cookie-name", "SERVERID")]);
        assert_eq!(o.affinity, None);
        assert!(matches!(
            verdict(&v, "session-cookie-name"),
            Verdict::Ignored(_)
        ));
        let (o, v) = sticky(&[("affinity", "ip"), ("session-cookie-name", "SERVERID")]);
        assert_eq!(o.affinity, None);
        assert!(matches!(verdict(&v, "affinity"), Verdict::Invalid(_)));
    }

    #[test]
    fn should_warn_user_when_use_regex_is_true_and_session_cookie_path_is_not_set() {
        let (o, v) = sticky(&[("affinity", "cookie"), ("use-regex", "true")]);
        assert!(o.affinity.is_some());
        match verdict(&v, "affinity") {
            Verdict::Differs(why) => assert!(why.contains("session-cookie-path"), "{why}"),
            other => panic!("{other:?}"),
        }
        let (_, v) = sticky(&[
            ("affinity", "cookie"),
            ("use-regex", "true"),
            ("session-cookie-path", "/foo/bar"),
        ]);
        match verdict(&v, "affinity") {
            Verdict::Differs(why) => assert!(!why.contains("use-regex"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes_timeouts_redirects_and_ranges() {
        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[
                ("proxy-body-size", "8m"),
                ("proxy-connect-timeout", "7"),
                ("proxy-read-timeout", "120"),
                ("ssl-redirect", "false"),
                ("whitelist-source-range", "10.0.0.0/8, 192.0.2.7"),
                ("backend-protocol", "grpc"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(o.max_body_bytes, Some(8 << 20));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(o.response_timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.https_redirect, Some(false));
        assert_eq!(o.source_ranges.len(), 2);
        assert_eq!(o.protocol, Some(UpstreamProtocol::H2c));
        assert_eq!(o.policy, None, "the default policy applies");
        assert_eq!(*verdict(&v, "proxy-body-size"), Verdict::Exact);
        // "0" is no limit; force-ssl-redirect wins over ssl-redirect=false.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[
                ("proxy-body-size", "0"),
                ("ssl-redirect", "false"),
                ("force-ssl-redirect", "true"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(o.max_body_bytes, Some(0));
        assert_eq!(o.https_redirect, Some(true));
    }

    #[test]
    fn invalid_values_skip_what_they_affect_but_never_open_a_route() {
        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[("proxy-body-size", "15r"), ("proxy-read-timeout", "20k")]),
            false,
            &snap(),
            &mut o,
        );
        assert!(matches!(
            verdict(&v, "proxy-body-size"),
            Verdict::Invalid(_)
        ));
        assert_eq!(o.max_body_bytes, None);
        assert_eq!(o.response_timeout, None);
        assert_eq!(o.policy, None);
        // A broken allowlist fails closed.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("whitelist-source-range", "10.0.0.0/33")]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(o.policy, Some(Policy::Deny));
        // allowlist- wins over whitelist-.
        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[
                ("whitelist-source-range", "10.0.0.0/8"),
                ("allowlist-source-range", "192.0.2.0/24"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(
            o.source_ranges,
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert!(matches!(
            verdict(&v, "whitelist-source-range"),
            Verdict::Ignored(_)
        ));
    }

    #[test]
    fn oauth2_proxy_becomes_heims_sign_in() {
        let anns = [
            ("auth-url", "https://$host/oauth2/auth"),
            (
                "auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
            (
                "auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email, Authorization",
            ),
        ];
        let mut o = IngressOptions::default();
        let v = read(&ingress(&anns), true, &snap(), &mut o);
        match &o.policy {
            Some(Policy::Allow(rules)) => assert!(rules.any_authenticated),
            other => panic!("{other:?}"),
        }
        let names: Vec<&str> = o.identity_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-auth-request-user", "x-auth-request-email"]);
        assert!(matches!(verdict(&v, "auth-url"), Verdict::Review(_)));
        let stripped: Vec<&str> = o.strip_headers.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            stripped,
            [
                "x-auth-request-user",
                "x-auth-request-email",
                "authorization"
            ],
            "every name the auth service was to set, filled or not"
        );
        // oauth2-proxy's own query rules become heim's.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[(
                "auth-url",
                "http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth?allowed_groups=admins,ops",
            )]),
            true,
            &snap(),
            &mut o,
        );
        match &o.policy {
            Some(Policy::Allow(rules)) => {
                assert!(!rules.any_authenticated);
                assert_eq!(rules.groups, ["admins", "ops"]);
            }
            other => panic!("{other:?}"),
        }
        // Without heim's sign-in, oauth2-proxy is asked as ingress-nginx
        // asked it; here the Ingress has no host, so `$host` would be the
        // client's choice: closed.
        let mut o = IngressOptions::default();
        read(&ingress(&anns), false, &snap(), &mut o);
        assert_eq!(o.policy, Some(Policy::Deny));
        let mut o = IngressOptions::default();
        read(&hosted(&anns), false, &snap(), &mut o);
        assert_eq!(o.policy, Some(Policy::Public));
        assert!(o.external_auth.is_some());
        // An auth service heim does not stand in for (another host's
        // /oauth2/auth, a query heim cannot read): asked per request, as
        // nginx's auth_request; it decides who passes.
        for url in [
            "http://auth.example.svc/check",
            "https://auth.attacker.example/oauth2/auth",
            "https://$host/oauth2/auth?allowed_roles=x",
            "http://198.51.100.7:8080/verify",
        ] {
            let mut o = IngressOptions::default();
            read(&hosted(&[("auth-url", url)]), true, &snap(), &mut o);
            assert_eq!(o.policy, Some(Policy::Public), "{url}");
            assert_eq!(o.external_auth.as_ref().map(|e| e.url.as_str()), Some(url));
        }
        // What cannot be checked as written is closed.
        for anns in [
            &[("auth-url", "https://invalid..auth.url")][..],
            &[("auth-tls-verify-depth", "2")][..],
            &[("auth-type", "digest"), ("auth-secret", "htpasswd")][..],
            &[("auth-type", "basic"), ("auth-secret", "other-ns/htpasswd")][..],
            &[("auth-type", "basic")][..],
            &[("denylist-source-range", "10.0.0.0/8, bogus")][..],
        ] {
            let mut o = IngressOptions::default();
            read(&ingress(anns), true, &snap(), &mut o);
            assert_eq!(o.policy, Some(Policy::Deny), "{anns:?}");
        }
        // Basic auth whose Secret is missing: 503 (as ingress-nginx), not closed.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("auth-type", "basic"), ("auth-secret", "htpasswd")]),
            true,
            &snap(),
            &mut o,
        );
        assert_eq!(o.policy, Some(Policy::Public));
        assert!(o.basic_auth.as_ref().is_some_and(|b| b.users.is_none()));
        // A denylist is built: its blocks, and nothing closed.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("denylist-source-range", "10.0.0.0/8, 192.0.2.7")]),
            true,
            &snap(),
            &mut o,
        );
        assert_eq!(o.policy, None);
        assert_eq!(
            o.denied_ranges,
            ["10.0.0.0/8".parse().unwrap(), "192.0.2.7".parse().unwrap()]
        );
    }

    #[test]
    fn redirects_and_their_codes() {
        let mut o = IngressOptions::default();
        read(
            &ingress(&[
                ("permanent-redirect", "https://new.example.com$request_uri"),
                ("permanent-redirect-code", "308"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        let r = o.redirect.expect("a redirect");
        assert_eq!(
            (r.code, r.to.as_str(), r.root_only),
            (308, "https://new.example.com$request_uri", false)
        );
        // temporal- wins; a code out of range falls back.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[
                ("permanent-redirect", "https://a.example.com/"),
                ("temporal-redirect", "/maintenance"),
                ("temporal-redirect-code", "308"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        let r = o.redirect.expect("a redirect");
        assert_eq!((r.code, r.to.as_str()), (302, "/maintenance"));
        // app-root: a path only, `/` only.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("app-root", "/login$is_args$args")]),
            false,
            &snap(),
            &mut o,
        );
        let r = o.redirect.expect("app-root");
        assert!(r.root_only && r.code == 302);
        for bad in [
            ("app-root", "https://elsewhere.example.com/"),
            ("permanent-redirect", "https://x.example.com/$remote_addr"),
            ("permanent-redirect", "javascript:alert(1)"),
        ] {
            let mut o = IngressOptions::default();
            let v = read(&ingress(&[bad]), false, &snap(), &mut o);
            assert!(o.redirect.is_none(), "{bad:?}");
            assert!(matches!(verdict(&v, bad.0), Verdict::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn snippets_are_refused_by_name_and_the_rest_serves() {
        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[
                ("configuration-snippet", "more_set_headers \"X-Frame-Options: DENY\";\nproxy_set_header X-Start \"t=${msec}\";\n# a comment\nlocation /x { return 403; }"),
                ("proxy-body-size", "1m"),
                ("secure-backends", "true"),
                ("rewrite-target", "/$1"),
                ("no-such-annotation", "x"),
            ]),
            false,
            &snap(),
            &mut o,
        );
        match verdict(&v, "configuration-snippet") {
            Verdict::Refused(m) => {
                assert!(
                    m.contains("location, more_set_headers, proxy_set_header, return)"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            o.max_body_bytes,
            Some(1 << 20),
            "the rest of the Ingress is read"
        );
        assert!(matches!(
            verdict(&v, "secure-backends"),
            Verdict::Ignored(_)
        ));
        assert_eq!(*verdict(&v, "rewrite-target"), Verdict::Exact);
        assert_eq!(o.rewrite_target.as_deref(), Some("/$1"));
        assert!(matches!(
            verdict(&v, "no-such-annotation"),
            Verdict::Ignored(_)
        ));
        assert_eq!(
            o.policy,
            Some(Policy::Deny),
            "return 403 decides who may pass"
        );
        // A snippet that only sets headers: refused, and the Ingress serves.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[(
                "configuration-snippet",
                "more_set_headers \"X-Frame-Options: DENY\";",
            )]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(o.policy, None);
        // One that allows and denies: closed.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("configuration-snippet", "allow 10.0.0.0/8;\ndeny all;")]),
            false,
            &snap(),
            &mut o,
        );
        assert_eq!(o.policy, Some(Policy::Deny));
    }

    /// Basic auth from an htpasswd Secret (both Secret types), CORS and
    /// rate limits become typed values; their companions get verdicts.
    #[test]
    fn basic_auth_cors_and_limits() {
        use k8s_openapi::api::core::v1::Secret;
        let mut snap = snap();
        let secret = |name: &str, data: serde_json::Value| -> Arc<Secret> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": { "name": name, "namespace": "default" },
                    "type": "Opaque",
                    "stringData": {},
                    "data": data,
                }))
                .unwrap(),
            )
        };
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let hash = "$apr1$heimsalt$gTGGNXAD5dFP8pGZRq4Bx0";
        snap.secrets.insert(
            crate::model::ObjKey::new("default", "file"),
            secret(
                "file",
                serde_json::json!({ "auth": b64(&format!("# users\nfoo:{hash}\n")) }),
            ),
        );
        snap.secrets.insert(
            crate::model::ObjKey::new("default", "map"),
            secret("map", serde_json::json!({ "bar": b64(hash) })),
        );
        snap.secrets.insert(
            crate::model::ObjKey::new("default", "broken"),
            secret("broken", serde_json::json!({ "auth": b64("foo:") })),
        );
        let with_ns = |mut i: Ingress| {
            i.metadata.namespace = Some("default".into());
            i
        };
        let mut o = IngressOptions::default();
        let v = read(
            &with_ns(ingress(&[
                ("auth-type", "basic"),
                ("auth-secret", "default/file"),
                ("auth-realm", "Staff only"),
            ])),
            true,
            &snap,
            &mut o,
        );
        let b = o.basic_auth.as_ref().expect("basic auth");
        assert_eq!(b.realm, "Staff only");
        let users = b.users.as_ref().expect("users");
        assert!(users.verify("foo", b"s3cret") && !users.verify("foo", b"S3cret"));
        assert_eq!(o.policy, Some(Policy::Public), "the password decides");
        assert_eq!(*verdict(&v, "auth-realm"), Verdict::Exact);
        let mut o = IngressOptions::default();
        read(
            &with_ns(ingress(&[
                ("auth-type", "basic"),
                ("auth-secret", "map"),
                ("auth-secret-type", "auth-map"),
            ])),
            true,
            &snap,
            &mut o,
        );
        let users = o
            .basic_auth
            .as_ref()
            .and_then(|b| b.users.as_ref())
            .expect("users");
        assert!(users.verify("bar", b"s3cret") && !users.verify("foo", b"s3cret"));
        // An unreadable htpasswd refuses everyone (401), as ingress-nginx.
        let mut o = IngressOptions::default();
        let v = read(
            &with_ns(ingress(&[
                ("auth-type", "basic"),
                ("auth-secret", "broken"),
            ])),
            true,
            &snap,
            &mut o,
        );
        let users = o
            .basic_auth
            .as_ref()
            .and_then(|b| b.users.as_ref())
            .expect("users");
        assert!(users.is_empty());
        assert!(matches!(verdict(&v, "auth-type"), Verdict::Invalid(_)));

        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://*.example.com"),
                ("cors-max-age", "ten"),
                ("limit-rps", "5"),
                ("limit-connections", "2"),
                ("limit-allowlist", "10.0.0.0/8"),
            ]),
            true,
            &snap,
            &mut o,
        );
        assert!(o.cors.is_some());
        assert_eq!(*verdict(&v, "cors-allow-origin"), Verdict::Exact);
        assert!(matches!(verdict(&v, "cors-max-age"), Verdict::Invalid(_)));
        let l = o.rate_limit.expect("limits");
        assert_eq!(
            (l.per_second, l.per_minute, l.connections),
            (Some(5), None, Some(2))
        );
        assert_eq!(
            l.burst_multiplier,
            heim_proxy::limit::DEFAULT_BURST_MULTIPLIER
        );
        assert_eq!(l.allowlist, ["10.0.0.0/8".parse().unwrap()]);
        // Without enable-cors, cors-* do nothing (as in ingress-nginx).
        let mut o = IngressOptions::default();
        let v = read(&ingress(&[("cors-allow-origin", "*")]), true, &snap, &mut o);
        assert!(o.cors.is_none());
        assert!(matches!(
            verdict(&v, "cors-allow-origin"),
            Verdict::Ignored(_)
        ));
    }

    /// `--nginx-configmap`: its keys are the defaults the annotations
    /// override; snippets it did not allow had no effect there either;
    /// its global auth guards every Ingress that does not opt out.
    #[test]
    fn the_nginx_configmap_gives_the_defaults() {
        let mut snap = snap();
        snap.nginx_configmap = Some(
            [
                ("proxy-body-size", "8m"),
                ("ssl-redirect", "false"),
                ("hsts-max-age", "60"),
                ("hsts-include-subdomains", "false"),
                ("global-auth-url", "http://auth.example.svc/verify"),
                ("annotations-risk-level", "Critical"),
                ("allow-snippet-annotations", "false"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let mut o = IngressOptions::default();
        let v = read(
            &ingress(&[("configuration-snippet", "deny all;")]),
            true,
            &snap,
            &mut o,
        );
        assert_eq!(o.max_body_bytes, Some(8 << 20));
        assert_eq!(o.https_redirect, Some(false));
        assert!(matches!(
            &o.response_headers[..],
            [heim_proxy::forward::edits::ResponseEdit::Set { value, .. }] if value == "max-age=60"
        ));
        assert_eq!(
            o.external_auth.as_ref().map(|e| e.url.as_str()),
            Some("http://auth.example.svc/verify")
        );
        // The snippet had no effect in ingress-nginx: not closed here.
        assert!(matches!(
            verdict(&v, "configuration-snippet"),
            Verdict::Ignored(_)
        ));
        assert_eq!(o.policy, Some(Policy::Public), "the auth service decides");
        // The annotations win; enable-global-auth "false" opts out.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("proxy-body-size", "1k"), ("enable-global-auth", "false")]),
            true,
            &snap,
            &mut o,
        );
        assert_eq!(o.max_body_bytes, Some(1024));
        assert!(o.external_auth.is_none());
        // The annotations' redirect wins over the ConfigMap's.
        let mut o = IngressOptions::default();
        read(
            &ingress(&[("force-ssl-redirect", "true")]),
            true,
            &snap,
            &mut o,
        );
        assert_eq!(o.https_redirect, Some(true));
        // Below risk level Critical ingress-nginx refused the whole
        // Ingress; an older one ran snippets: a guarding one closes it.
        for key in ["annotations-risk-level", "allow-snippet-annotations"] {
            let mut snap = snap.clone();
            snap.nginx_configmap.as_mut().unwrap().remove(key);
            let mut o = IngressOptions::default();
            let v = read(
                &ingress(&[("configuration-snippet", "deny all;")]),
                true,
                &snap,
                &mut o,
            );
            assert!(
                matches!(verdict(&v, "configuration-snippet"), Verdict::Refused(_)),
                "{key}"
            );
            assert_eq!(o.policy, Some(Policy::Deny), "{key}");
        }
    }
}
