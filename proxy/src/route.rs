//! Routing: which route serves a request, by Kubernetes Ingress v1 rules.
//!
//! A [`RouteTable`] is compiled once from plain [`RouteSpec`] values (from the
//! config file today, from Ingress objects in `heim-ingress`) and never
//! mutated: a config change compiles a new table and swaps it in whole, so a
//! request in flight keeps the table it started with.
//!
//! Matching follows the Ingress v1 rules:
//! * host: an exact name, or `*.suffix` matching exactly one more label; an
//!   exact host wins over a wildcard, and a rule without a host matches any
//!   host that no other rule names. Once a host picks its rules, there is no
//!   fall-through to a less specific host (as in nginx server blocks).
//! * path: `Exact` matches the path itself; `Prefix` matches by
//!   `/`-separated elements (`/foo` matches `/foo`, `/foo/`, `/foo/bar`, not
//!   `/foobar`), a trailing `/` in the prefix being ignored. Exact wins over
//!   Prefix, and the longest prefix wins.
//!
//! This module does not parse requests; [`normalize_path`] and
//! [`normalize_host`] are the two helpers the request path uses before a
//! lookup.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::upstream::{Health, UpstreamGroup, UpstreamSpec};

/// How a route's path is compared with a request's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request path equals the route path.
    Exact,
    /// The request path starts with the route path, element by element.
    Prefix,
    /// The route path is a case-insensitive regular expression anchored at
    /// the start (ingress-nginx's `location ~* "^path"`): exact routes are
    /// looked at first, then these, longest first (the first that matches
    /// wins), then prefixes.
    Regex,
}

/// The longest compiled form of one route's regular expression.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a route path of [`PathMatch::Regex`] (`anchored`) or a
/// rewrite's pattern (unanchored), case-insensitively, with a linear-time
/// engine and a size bound.
pub fn compile_regex(path: &str, anchored: bool) -> Result<regex::Regex, String> {
    let pattern = if anchored {
        format!("^(?:{path})")
    } else {
        path.to_string()
    };
    regex::RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => {
                format!("{path:?} is too large a regular expression")
            }
            e => format!("{path:?} is not a regular expression heim reads: {e}"),
        })
}

/// ingress-nginx's `rewrite-target`: the request path, when the route's
/// pattern matches it, is replaced whole by the target with `$1..$9` from
/// the pattern's groups (nginx's `rewrite ... break`). A target that is an
/// absolute `http(s)://` URL is a 302 to it instead.
#[derive(Clone, Debug)]
pub struct Rewrite {
    pub pattern: regex::Regex,
    pub target: String,
    /// ingress-nginx's `x-forwarded-prefix`: sent as `X-Forwarded-Prefix`
    /// when the rewrite applies.
    pub forwarded_prefix: Option<http::HeaderValue>,
}

impl PartialEq for Rewrite {
    fn eq(&self, other: &Rewrite) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
            && self.target == other.target
            && self.forwarded_prefix == other.forwarded_prefix
    }
}

impl Eq for Rewrite {}

/// What a rewrite makes of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// The new path and query for the upstream.
    Path(String),
    /// Answer 302 with this `Location`.
    Redirect(String),
}

impl Rewrite {
    /// `path` (normalised) and `query` rewritten, if the pattern matches.
    /// The original query follows the target's own (`&`), as in nginx.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<Rewritten> {
        let caps = self.pattern.captures(path)?;
        let mut out = String::with_capacity(self.target.len() + path.len());
        let mut chars = self.target.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                ('$', Some(n)) => {
                    chars.next();
                    // Captures come from the decoded path: escaped again,
                    // as nginx does before proxying, so that a `%252e` or a
                    // `%3F` stays data and never becomes `..` or a query.
                    if let Some(m) = caps.get(n as usize) {
                        escape_path_into(m.as_str(), &mut out);
                    }
                }
                _ => out.push(c),
            }
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(q);
        }
        // A redirect by what the target says, never by what a capture
        // (the client's path) brought.
        let t = self.target.as_bytes();
        let absolute = [&b"http://"[..], b"https://"]
            .iter()
            .any(|s| t.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)));
        Some(if absolute {
            Rewritten::Redirect(out)
        } else {
            if !out.starts_with('/') {
                out.insert(0, '/');
            }
            Rewritten::Path(out)
        })
    }
}

/// Appends `s` percent-encoded for a path: unreserved characters, the
/// sub-delimiters, `:`, `@` and `/` stay; everything else (`%`, `?`, `#`,
/// spaces, non-ASCII bytes) is escaped.
fn escape_path_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// What answers a route's requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Pooled HTTP upstreams, round-robin.
    Upstream(UpstreamSpec),
    /// heim answers itself with what a backend would have seen.
    Echo,
    /// A TCP target heim dials itself: `CONNECT` on the route's host is
    /// spliced to it (`heim-tunnel proxy`); nothing else is served.
    Tcp(std::net::SocketAddr),
    /// A service of an agent that dialed in (`heim-tunnel agent`):
    /// `CONNECT` on the route's host becomes a stream on one of that
    /// agent's connections; nothing else is served.
    Agent { agent: String, service: String },
    /// heim answers 404 itself, after the route's redirects, address
    /// blocks and sign-in: ingress-nginx's implicit `location /`, which
    /// carries the annotations of its host's oldest Ingress.
    NotFound,
    /// heim answers oauth2-proxy's `/oauth2/*` paths itself (a host whose
    /// oauth2-proxy heim's sign-in replaced): [`crate::auth::oauth2_paths`].
    OAuth2Paths,
}

impl Backend {
    /// Served by `CONNECT` only.
    pub fn is_tunnel(&self) -> bool {
        matches!(self, Backend::Tcp(_) | Backend::Agent { .. })
    }
}

/// Who may use a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Anyone, without signing in.
    Public,
    /// Signed-in users the rules admit.
    Allow(Arc<crate::auth::policy::AccessRules>),
    /// No user: a webhook sender that signs its body.
    Webhook(Arc<crate::auth::webhook::WebhookSpec>),
    /// Nobody: the default when a route names no policy.
    Deny,
}

/// What an extra identity header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityField {
    Email,
    User,
    /// Comma-separated.
    Groups,
}

/// A route as its source declares it: plain values, validated, compared
/// with `==` (what is live is in [`Route`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Stable name for logs and metrics (`host/path` when the source gives none).
    pub name: String,
    /// `None` matches any host.
    pub host: Option<String>,
    pub path: String,
    pub path_type: PathMatch,
    pub backend: Backend,
    pub policy: Policy,
    /// Plain-HTTP requests for this route are redirected to https (308).
    pub https_redirect: bool,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Extra headers that carry the signed-in user's identity (besides
    /// `X-Heim-*`); whatever a client sends under these names is removed.
    pub identity_headers: Vec<(http::HeaderName, IdentityField)>,
    /// Clients outside these blocks get 403 before anything else is
    /// checked; empty admits every address.
    pub source_ranges: Vec<crate::trust::IpNet>,
    /// ingress-nginx's `rewrite-target`, applied before forwarding.
    pub rewrite: Option<Rewrite>,
    /// Request headers removed before forwarding (those an auth service
    /// was to set, for routes heim's sign-in serves instead).
    pub strip_headers: Vec<http::HeaderName>,
    /// ingress-nginx's `permanent-redirect`, `temporal-redirect` and
    /// `app-root`: answered before sign-in and policy, as nginx's `return`.
    pub redirect: Option<Redirect>,
    /// ingress-nginx's `upstream-vhost`: the `Host` sent upstream instead
    /// of the client's.
    pub upstream_host: Option<http::HeaderValue>,
    /// ingress-nginx's `denylist-source-range`: clients in these blocks get
    /// 403, before and over `source_ranges`.
    pub denied_ranges: Vec<crate::trust::IpNet>,
    /// ingress-nginx's canary Ingress for this host and path: a second
    /// backend some requests go to.
    pub canary: Option<Arc<crate::canary::Canary>>,
    /// ingress-nginx's `enable-cors`: preflights from allowed origins are
    /// answered, and every answer gets the CORS headers.
    pub cors: Option<Arc<crate::forward::cors::Cors>>,
    /// ingress-nginx's `auth-type: basic`.
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// ingress-nginx's `auth-url` to an auth service heim's sign-in does
    /// not stand in for: asked before every request.
    pub external_auth: Option<Arc<crate::auth::external::ExternalAuth>>,
    /// ingress-nginx's `limit-rps`, `limit-rpm` and `limit-connections`.
    pub rate_limit: Option<crate::limit::RateLimit>,
    /// Request headers set upstream over the client's (`None`: removed),
    /// after heim's own (a snippet's `proxy_set_header`).
    pub request_headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Edits of every answer of the route (a snippet's
    /// `more_set_headers`, `more_clear_headers`, `add_header`).
    pub response_headers: Vec<crate::forward::edits::ResponseEdit>,
    /// ingress-nginx's `default-backend` and `custom-http-errors`.
    pub error_backend: Option<Arc<ErrorBackend>>,
    /// ingress-nginx's `affinity: cookie`: sticky sessions by cookie.
    pub affinity: Option<Arc<crate::affinity::Affinity>>,
    /// ingress-nginx's `ssl-passthrough` (set on every route of the
    /// Ingress; the host's `/` route decides): TLS for the host is spliced
    /// unopened to its upstream, only when that route checks nothing (see
    /// [`RouteTable::passthrough`]).
    pub tls_passthrough: bool,
}

/// ingress-nginx's `default-backend` (it serves the route's requests while
/// the route's own Service has no endpoint) and `custom-http-errors` (the
/// upstream answers with these statuses are replaced by its answer to a
/// `GET /` carrying `X-Code`, `X-Format`, `X-Original-URI`,
/// `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port` and
/// `X-Request-ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBackend {
    pub backend: UpstreamSpec,
    pub codes: Vec<u16>,
    pub namespace: String,
    pub ingress: String,
    /// The route's own Service and port, as ingress-nginx names them.
    pub service: String,
    pub port: String,
}

/// A route's HTTP basic authentication (ingress-nginx's `auth-type: basic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// `None`: the Secret is missing or unreadable, and requests get 503
    /// (as in ingress-nginx).
    pub users: Option<crate::auth::htpasswd::Htpasswd>,
    /// `auth-realm`.
    pub realm: String,
}

impl RouteSpec {
    /// A route with its match, backend and policy, and nothing else: https
    /// only, no body limit, no rewrite, no ingress-nginx extras. Sources
    /// set the rest with struct update syntax.
    pub fn new(
        name: String,
        host: Option<String>,
        path: String,
        path_type: PathMatch,
        backend: Backend,
        policy: Policy,
    ) -> Self {
        RouteSpec {
            name,
            host,
            path,
            path_type,
            backend,
            policy,
            https_redirect: true,
            max_body_bytes: None,
            identity_headers: Vec::new(),
            source_ranges: Vec::new(),
            rewrite: None,
            strip_headers: Vec::new(),
            redirect: None,
            upstream_host: None,
            denied_ranges: Vec::new(),
            canary: None,
            cors: None,
            basic_auth: None,
            external_auth: None,
            rate_limit: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            error_backend: None,
            affinity: None,
            tls_passthrough: false,
        }
    }
}

/// A redirect a route answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// 300 to 308.
    pub code: u16,
    /// An absolute http(s) URL or a path; may hold the variables of
    /// [`REDIRECT_VARIABLES`].
    pub to: String,
    /// Only a request for `/` itself is redirected (`app-root`).
    pub root_only: bool,
}

/// The nginx variables a redirect may use, expanded per request.
pub const REDIRECT_VARIABLES: &[&str] = &[
    "escaped_request_uri",
    "request_uri",
    "http_host",
    "is_args",
    "scheme",
    "host",
    "args",
    "uri",
];

/// Whether every `$name` (or `${name}`) in `template` is one of
/// [`REDIRECT_VARIABLES`]; a name runs over every letter, digit and `_`,
/// as nginx reads it (`$hostname` is not `$host`).
pub fn redirect_variables_known(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let rest_braced = rest.strip_prefix('{');
        let name_of = |r: &str| -> usize {
            r.bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count()
        };
        let (name, skip) = match rest_braced {
            Some(r) => {
                let n = name_of(r);
                if !r[n..].starts_with('}') {
                    return Err(format!("{template:?}: an unclosed ${{"));
                }
                (&r[..n], n + 2)
            }
            None => {
                let n = name_of(rest);
                (&rest[..n], n)
            }
        };
        if !REDIRECT_VARIABLES.contains(&name) {
            return Err(format!(
                "{template:?}: ${name} is not one of ${}",
                REDIRECT_VARIABLES.join(", $")
            ));
        }
        rest = &rest[skip.min(rest.len())..];
    }
    Ok(())
}

/// A compiled route: the spec plus what is live next to it.
#[derive(Debug)]
pub struct Route {
    pub spec: RouteSpec,
    /// The compiled `Backend::Upstream`: endpoint health and the
    /// round-robin position, kept across swaps for an unchanged spec.
    pub upstream: Option<Arc<UpstreamGroup>>,
    pub metrics: Arc<crate::metrics::RouteMetrics>,
    /// Every header any route of the table names in `identity_headers`:
    /// removed from every request (a public route may share a backend
    /// that trusts them).
    pub identity_names: Arc<[http::HeaderName]>,
    /// A [`PathMatch::Regex`] route's compiled path.
    pub regex: Option<regex::Regex>,
    /// The compiled canary backend of `spec.canary`.
    pub canary: Option<Arc<UpstreamGroup>>,
    /// The counters of `spec.rate_limit`, kept across swaps for an
    /// unchanged route.
    pub limiter: Option<Arc<crate::limit::Limiter>>,
    /// The compiled backend of `spec.error_backend`.
    pub error_group: Option<Arc<UpstreamGroup>>,
}

/// Two routes that claim the same host, path and path type.
#[derive(Debug, thiserror::Error)]
#[error("route {second:?} has the same host, path and path type as route {first:?}")]
pub struct DuplicateRoute {
    pub first: String,
    pub second: String,
    /// Index of the second route in the input.
    pub index: usize,
}

/// The routes of one host, ready for path lookup.
#[derive(Debug, Default)]
struct HostRoutes {
    exact: HashMap<String, Arc<Route>>,
    /// Regular-expression routes, longest path first (ties: reverse
    /// lexicographic, as ingress-nginx sorts its locations), each with the
    /// lowercase literal every path it matches starts with.
    regexes: Vec<(String, Arc<Route>)>,
    /// Normalised prefixes (no trailing `/`, except the root `""`), longest first.
    prefixes: Vec<(String, Arc<Route>)>,
}

impl HostRoutes {
    fn insert(&mut self, route: Arc<Route>) -> Result<(), Arc<Route>> {
        match route.spec.path_type {
            PathMatch::Exact => {
                if let Some(old) = self.exact.get(&route.spec.path) {
                    return Err(old.clone());
                }
                self.exact.insert(route.spec.path.clone(), route);
            }
            PathMatch::Prefix => {
                let key = route.spec.path.trim_end_matches('/').to_string();
                if let Some((_, old)) = self.prefixes.iter().find(|(p, _)| *p == key) {
                    return Err(old.clone());
                }
                self.prefixes.push((key, route));
                // Longest first; ties cannot happen (duplicates are refused).
                self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            }
            PathMatch::Regex => {
                if let Some((_, old)) = self
                    .regexes
                    .iter()
                    .find(|(_, r)| r.spec.path == route.spec.path)
                {
                    return Err(old.clone());
                }
                self.regexes.push((literal_prefix(&route.spec.path), route));
                self.regexes.sort_by(|(_, a), (_, b)| {
                    (b.spec.path.len(), &b.spec.path).cmp(&(a.spec.path.len(), &a.spec.path))
                });
            }
        }
        Ok(())
    }

    fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        // The literal check first: a host of 200 rules runs one or two
        // regular expressions per request, not 200.
        let ascii = path.is_ascii();
        if let Some((_, r)) = self.regexes.iter().find(|(literal, r)| {
            (!ascii || starts_with_ignore_case(path, literal))
                && r.regex.as_ref().is_some_and(|re| re.is_match(path))
        }) {
            return Some(r);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, r)| r)
    }
}

/// The lowercase ASCII literal that every ASCII path a route pattern
/// matches begins with (patterns are anchored at the start and
/// case-insensitive): the leading plain characters, less one before a
/// `*`, `?` or `{` (which may repeat it zero times); nothing when the
/// pattern has flags (`(?x)` changes what the rest means) or an
/// alternative at its top level (outside groups and classes). ASCII
/// folding is exact for ASCII paths only (`k` also matches U+212A, `s`
/// U+017F): non-ASCII paths skip the check (see `HostRoutes::lookup`).
fn literal_prefix(pattern: &str) -> String {
    if pattern.contains("(?") {
        return String::new();
    }
    let (mut depth, mut escaped, mut class) = (0usize, false, false);
    for c in pattern.chars() {
        match (escaped, class, c) {
            (true, _, _) => escaped = false,
            (false, _, '\\') => escaped = true,
            (false, true, ']') => class = false,
            (false, true, _) => {}
            (false, false, '[') => class = true,
            (false, false, '(') => depth += 1,
            (false, false, ')') => depth = depth.saturating_sub(1),
            (false, false, '|') if depth == 0 => return String::new(),
            _ => {}
        }
    }
    let mut literal = String::new();
    for c in pattern.chars() {
        match c {
            '*' | '?' | '{' => {
                literal.pop();
                break;
            }
            c if c.is_ascii_alphanumeric() || "/-_~%:@!&',;=".contains(c) => {
                literal.push(c.to_ascii_lowercase())
            }
            _ => break,
        }
    }
    literal
}

/// `path` starts with `lower` (lowercase ASCII), ignoring ASCII case.
fn starts_with_ignore_case(path: &str, lower: &str) -> bool {
    path.len() >= lower.len()
        && path.as_bytes()[..lower.len()]
            .iter()
            .zip(lower.as_bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

/// `prefix` is normalised: no trailing `/` (the root prefix is `""`).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The compiled, immutable routing table.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, HostRoutes>,
    /// Keyed by the suffix after `*.`, e.g. `example.com` for `*.example.com`.
    wildcard_hosts: HashMap<String, HostRoutes>,
    any_host: Option<HostRoutes>,
    /// Routes in the table.
    len: usize,
    /// Some route is a TLS passthrough: `listen` reads ClientHellos first.
    passthrough: bool,
}

impl RouteTable {
    /// Compiles routes; `metrics_for` hands each route its metrics cell.
    pub fn build(
        specs: Vec<RouteSpec>,
        metrics_for: impl FnMut(&str) -> Arc<crate::metrics::RouteMetrics>,
    ) -> Result<Self, Vec<DuplicateRoute>> {
        let (table, dups) = Self::build_all(specs, metrics_for, None);
        if dups.is_empty() {
            Ok(table)
        } else {
            Err(dups)
        }
    }

    /// Like [`RouteTable::build`], but a route that repeats an earlier
    /// one's host, path and path type is left out (and returned) instead
    /// of failing the whole table: for routes of several sources, where
    /// the first claim wins. What is live in `previous` is kept: an
    /// upstream spec seen there keeps its compiled group, and an endpoint
    /// seen there its health, so that one changed route resets nothing of
    /// the others.
    pub fn build_all(
        specs: Vec<RouteSpec>,
        mut metrics_for: impl FnMut(&str) -> Arc<crate::metrics::RouteMetrics>,
        previous: Option<&RouteTable>,
    ) -> (Self, Vec<DuplicateRoute>) {
        let mut groups: HashMap<UpstreamSpec, Arc<UpstreamGroup>> = HashMap::new();
        let mut health: HashMap<u64, Arc<Health>> = HashMap::new();
        for route in previous.into_iter().flat_map(|t| t.routes()) {
            if let (Backend::Upstream(spec), Some(group)) = (&route.spec.backend, &route.upstream) {
                health.extend(group.health());
                groups.insert(spec.clone(), group.clone());
            }
            if let (Some(c), Some(group)) = (&route.spec.canary, &route.canary) {
                health.extend(group.health());
                groups.insert(c.backend.clone(), group.clone());
            }
            if let (Some(e), Some(group)) = (&route.spec.error_backend, &route.error_group) {
                health.extend(group.health());
                groups.insert(e.backend.clone(), group.clone());
            }
        }
        let limiters: HashMap<&str, &Arc<crate::limit::Limiter>> = previous
            .into_iter()
            .flat_map(|t| t.routes())
            .filter_map(|r| Some((r.spec.name.as_str(), r.limiter.as_ref()?)))
            .collect();
        let mut table = RouteTable::default();
        let mut dups = Vec::new();
        let mut names: Vec<http::HeaderName> = specs
            .iter()
            .flat_map(|s| s.identity_headers.iter().map(|(n, _)| n.clone()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let identity_names: Arc<[http::HeaderName]> = names.into();
        for (index, spec) in specs.into_iter().enumerate() {
            let metrics = metrics_for(&spec.name);
            let mut group = |u: &UpstreamSpec| {
                groups
                    .entry(u.clone())
                    .or_insert_with(|| Arc::new(UpstreamGroup::compile(u, &mut health)))
                    .clone()
            };
            let upstream = match &spec.backend {
                Backend::Upstream(u) => Some(group(u)),
                Backend::Echo
                | Backend::NotFound
                | Backend::OAuth2Paths
                | Backend::Tcp(_)
                | Backend::Agent { .. } => None,
            };
            let canary = spec.canary.as_ref().map(|c| group(&c.backend));
            let error_group = spec.error_backend.as_ref().map(|e| group(&e.backend));
            let limiter = spec
                .rate_limit
                .as_ref()
                .filter(|l| !l.limits_nothing())
                .map(|l| match limiters.get(spec.name.as_str()) {
                    Some(old) if old.spec() == l => Arc::clone(old),
                    _ => Arc::new(crate::limit::Limiter::new(l)),
                });
            // Sources check their regular expressions before they get here;
            // one that does not compile never matches.
            let regex = match spec.path_type {
                PathMatch::Regex => compile_regex(&spec.path, true)
                    .map_err(|e| tracing::warn!(route = %spec.name, "{e}"))
                    .ok(),
                _ => None,
            };
            let route = Arc::new(Route {
                spec,
                upstream,
                metrics,
                identity_names: identity_names.clone(),
                regex,
                canary,
                limiter,
                error_group,
            });
            let slot = match route.spec.host.as_deref() {
                None => table.any_host.get_or_insert_with(HostRoutes::default),
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => table.wildcard_hosts.entry(suffix.to_string()).or_default(),
                    None => table.exact_hosts.entry(h.to_string()).or_default(),
                },
            };
            let passthrough = route.spec.tls_passthrough;
            match slot.insert(route.clone()) {
                Ok(()) => {
                    table.len += 1;
                    table.passthrough |= passthrough;
                }
                Err(first) => dups.push(DuplicateRoute {
                    first: first.spec.name.clone(),
                    second: route.spec.name.clone(),
                    index,
                }),
            }
        }
        (table, dups)
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table has no route at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes> {
        self.exact_hosts
            .get(host)
            .or_else(|| self.wildcard_hosts.get(wildcard_suffix(host)?))
            .or(self.any_host.as_ref())
    }

    /// True when some route is a TLS passthrough.
    pub fn has_passthrough(&self) -> bool {
        self.passthrough
    }

    /// The TLS passthrough route of `host` (a ClientHello's server name):
    /// its `/` route, when that is a public passthrough to upstreams.
    pub fn passthrough(&self, host: &str) -> Option<&Arc<Route>> {
        self.lookup(host, "/").filter(|r| {
            let s = &r.spec;
            // Nothing heim would have to check on the way: a connection it
            // never opens cannot be signed in, asked for a password,
            // limited or filtered by address.
            s.tls_passthrough
                && s.policy == Policy::Public
                && s.basic_auth.is_none()
                && s.external_auth.is_none()
                && s.source_ranges.is_empty()
                && s.denied_ranges.is_empty()
                && s.rate_limit.is_none()
                && r.upstream.is_some()
        })
    }

    /// The route for a normalised host (lowercase, no port) and path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.host_routes(host)?.lookup(path)
    }

    /// True when a rule names this host, exactly or by wildcard (a rule
    /// without a host names none).
    pub fn names_host(&self, host: &str) -> bool {
        self.exact_hosts.contains_key(host)
            || wildcard_suffix(host).is_some_and(|s| self.wildcard_hosts.contains_key(s))
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.exact_hosts
            .values()
            .chain(self.wildcard_hosts.values())
            .chain(self.any_host.iter())
            .flat_map(|h| {
                h.exact
                    .values()
                    .chain(h.regexes.iter().map(|(_, r)| r))
                    .chain(h.prefixes.iter().map(|(_, r)| r))
            })
    }
}

/// The suffix a `*.suffix` wildcard must have to match `host`: everything
/// after its first label (a wildcard stands for exactly one label). Shared
/// by route and certificate lookup so that both agree on what matches.
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    match host.split_once('.') {
        Some((first, suffix)) if !first.is_empty() && !suffix.is_empty() => Some(suffix),
        _ => None,
    }
}

/// Lowercases a `Host` value and strips its port. `None` if it is not a
/// plausible host name or address (the request gets a 400).
pub fn normalize_host(raw: &str) -> Option<Cow<'_, str>> {
    host_and_port(raw).map(|(h, _)| h)
}

/// A `Host` value's normalised host and its port, if it names one.
pub fn host_and_port(raw: &str) -> Option<(Cow<'_, str>, Option<u16>)> {
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: keep the brackets off, the port off.
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            a => Some(a.strip_prefix(':').filter(|p| valid_port(p))?),
        };
        (&rest[..end], port)
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if valid_port(port) => (h, Some(port)),
            Some(_) => return None,
            None => (raw, None),
        }
    };
    let port = port.map(|p| p.parse::<u16>().ok()).unwrap_or(None);
    if host.is_empty() || host.len() > 253 || host.contains("..") || host.starts_with('.') {
        return None;
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !ok {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Some((host, port))
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
}

/// Normalises a request path the way the route and the backend should both
/// see it: `.` and `..` segments resolved (also when written `%2e`), runs of
/// `/` merged. Returns `None` for a path that does not start with `/` or
/// climbs above the root.
///
/// Matching the raw path while the backend resolves `..` itself would let
/// `/public/../admin` reach `/admin` through the `/public` route, so heim
/// matches and forwards the same normalised path.
pub fn normalize_path(path: &str) -> Option<Cow<'_, str>> {
    normalize(path, true)
}

/// `normalize_path`; `%2e` counts as a dot only with `decode_dots` (the
/// routing pass, on an already decoded path, must not decode twice).
fn normalize(path: &str, decode_dots_too: bool) -> Option<Cow<'_, str>> {
    if !path.starts_with('/') {
        return None;
    }
    let b = path.as_bytes();
    let suspicious = b
        .windows(2)
        .any(|w| w == b"//" || w == b"/." || (decode_dots_too && w[0] == b'%'));
    if !suspicious {
        return Some(Cow::Borrowed(path));
    }
    let decoded = if decode_dots_too {
        decode_dots(path)
    } else {
        Cow::Borrowed(path)
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                out.pop()?;
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut norm = String::with_capacity(path.len());
    for s in &out {
        norm.push('/');
        norm.push_str(s);
    }
    if trailing_slash || norm.is_empty() {
        norm.push('/');
    }
    if norm == path {
        Some(Cow::Borrowed(path))
    } else {
        Some(Cow::Owned(norm))
    }
}

/// The path a route is chosen by: the normalised path with every
/// percent-escape decoded, `\` read as `/`, and `;` parameters cut from
/// each segment, then normalised again.
///
/// heim forwards the path as it came (dot segments resolved), but backends
/// decode escapes (`/%61dmin` is `/admin`) and Java servers drop `;x` path
/// parameters (`/admin;x` is `/admin`), and WHATWG URL parsers (Node), IIS
/// and some Java servers read `\` as `/` (`/public\..\admin` is
/// `/admin`): choosing the route by what the backend will see makes sure
/// such a request meets the `/admin` route's policy, never a more lenient
/// one. `None` (a 400) for a decoded NUL, bytes that are not UTF-8, or a
/// path that climbs above `/`.
pub fn routing_path(normalized: &str) -> Option<Cow<'_, str>> {
    if !normalized.contains(['%', ';', '\\']) {
        return Some(Cow::Borrowed(normalized));
    }
    let decoded = percent_decode(normalized)?.replace('\\', "/");
    let mut stripped = String::with_capacity(decoded.len());
    for (i, segment) in decoded.split('/').enumerate() {
        if i > 0 {
            stripped.push('/');
        }
        stripped.push_str(segment.split(';').next().unwrap_or(""));
    }
    // Decoded once, as a backend does: a `%2e` left now was `%252e` on the
    // wire, a literal to the backend, not a dot (decoding it again would
    // let `/admin/%252e%252e/x` route as `/x`).
    normalize(&stripped, false).map(|p| Cow::Owned(p.into_owned()))
}

/// Decodes every `%XX` escape; a `%` not followed by two hex digits stays.
/// `None` for a decoded NUL or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let out = percent_decode_bytes(s);
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Decodes every `%XX` escape into bytes; a `%` not followed by two hex
/// digits stays as it is.
pub fn percent_decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Decodes `%2e`/`%2E` (an encoded `.`), the one escape that changes what a
/// dot segment is; every other escape is left for the backend.
fn decode_dots(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        if matches!(esc, Some("%2e") | Some("%2E")) {
            out.push('.');
            rest = &rest[i + 3..];
        } else {
            out.push('%');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(host: Option<&str>, path: &str, t: PathMatch) -> RouteSpec {
        RouteSpec::new(
            format!("{}{}:{:?}", host.unwrap_or("*"), path, t),
            host.map(str::to_string),
            path.to_string(),
            t,
            Backend::Echo,
            Policy::Public,
        )
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable {
        RouteTable::build(specs, |_| Default::default()).expect("no duplicates")
    }

    #[test]
    fn regex_routes_match_case_insensitively_from_the_start_longest_first() {
        let h = Some("shop.test");
        let t = table(vec![
            spec(h, "/foo/bar/bar", PathMatch::Regex),
            spec(h, "/foo/bar/[a-z]{3}", PathMatch::Regex),
            spec(h, "/api(/|$)(.*)", PathMatch::Regex),
            spec(h, "/", PathMatch::Regex),
            spec(h, "/exact", PathMatch::Exact),
        ]);
        let at = |p: &str| t.lookup("shop.test", p).map(|r| r.spec.path.as_str());
        // ingress-nginx's documented warning case: the longer regex wins.
        assert_eq!(at("/foo/bar/bar"), Some("/foo/bar/[a-z]{3}"));
        assert_eq!(at("/API/v1"), Some("/api(/|$)(.*)"), "case-insensitive");
        assert_eq!(at("/apix"), Some("/"), "(/|$) after /api");
        assert_eq!(at("/x/api"), Some("/"), "anchored at the start");
        assert_eq!(at("/exact"), Some("/exact"), "exact routes first");
    }

    #[test]
    fn rewrites_replace_the_whole_path_with_the_captures() {
        let rw = |path: &str, target: &str| Rewrite {
            pattern: compile_regex(path, false).unwrap(),
            target: target.into(),
            forwarded_prefix: None,
        };
        let r = rw("/api(/|$)(.*)", "/$2");
        assert_eq!(
            r.apply("/api/v1/users", None),
            Some(Rewritten::Path("/v1/users".into()))
        );
        assert_eq!(
            r.apply("/api", Some("a=b")),
            Some(Rewritten::Path("/?a=b".into()))
        );
        assert_eq!(r.apply("/other", None), None, "no match, no rewrite");
        // The suffix after the match is dropped unless captured.
        assert_eq!(
            rw("/app", "/").apply("/app/x", None),
            Some(Rewritten::Path("/".into()))
        );
        // A target with its own query: the original follows with `&`.
        assert_eq!(
            rw("/s/(.*)", "/search?q=$1").apply("/s/rust", Some("page=2")),
            Some(Rewritten::Path("/search?q=rust&page=2".into()))
        );
        // An absolute target is a redirect; `$1a` is group 1, then `a`.
        assert_eq!(
            rw("/old/(.*)", "https://new.example.com/$1a").apply("/old/x", None),
            Some(Rewritten::Redirect("https://new.example.com/xa".into()))
        );
        assert!(
            compile_regex(&"(a{1000}){1000}".repeat(4), true).is_err(),
            "size bound"
        );
        assert!(compile_regex("(?=x)", true).is_err(), "no look-around");
    }

    fn upstream(ports: &[u16]) -> Backend {
        use crate::upstream::*;
        let d = std::time::Duration::from_secs(1);
        Backend::Upstream(UpstreamSpec {
            endpoints: ports
                .iter()
                .map(|p| UpstreamAddr::Socket(([198, 51, 100, 1], *p).into()))
                .collect(),
            protocol: UpstreamProtocol::Http1,
            limits: UpstreamLimits {
                connect_timeout: d,
                response_timeout: d,
                idle_timeout: d,
                max_connections: 8,
                queue_size: 8,
            },
            tls: None,
        })
    }

    #[test]
    fn a_rebuild_keeps_what_is_live_by_identity() {
        let mut a = spec(Some("a.test"), "/", PathMatch::Prefix);
        a.backend = upstream(&[1, 2]);
        let mut b = spec(Some("b.test"), "/", PathMatch::Prefix);
        b.backend = upstream(&[3]);
        let first = table(vec![a.clone(), b.clone()]);
        let group_a = first
            .lookup("a.test", "/")
            .unwrap()
            .upstream
            .clone()
            .unwrap();
        group_a.report_failure(0);
        // b changes (a new endpoint), a does not.
        b.backend = upstream(&[3, 1]);
        let (second, dups) =
            RouteTable::build_all(vec![a, b], |_| Default::default(), Some(&first));
        assert!(dups.is_empty());
        let kept = second
            .lookup("a.test", "/")
            .unwrap()
            .upstream
            .clone()
            .unwrap();
        assert!(Arc::ptr_eq(&group_a, &kept), "unchanged spec, same group");
        let group_b = second
            .lookup("b.test", "/")
            .unwrap()
            .upstream
            .clone()
            .unwrap();
        assert_eq!(group_b.endpoints.len(), 2);
        // Port 1 stays ejected in a's group, and b's new endpoint on the
        // same address shares that health.
        assert!((0..4).all(|_| kept.pick(&[]) == Some(1)));
        assert!((0..4).all(|_| group_b.pick(&[]) == Some(0)));
        // A table built without a previous one forgets.
        let mut c = spec(Some("c.test"), "/", PathMatch::Prefix);
        c.backend = upstream(&[1, 9]);
        let fresh = table(vec![c]);
        let group_c = fresh
            .lookup("c.test", "/")
            .unwrap()
            .upstream
            .clone()
            .unwrap();
        assert!((0..4).any(|_| group_c.pick(&[]) == Some(0)));
    }

    #[test]
    fn ingress_v1_path_semantics() {
        use PathMatch::*;
        let h = Some("app.example.com");
        let t = table(vec![
            spec(h, "/", Prefix),
            spec(h, "/foo", Prefix),
            spec(h, "/foo/bar/", Prefix),
            spec(h, "/foo", Exact),
            spec(h, "/exact", Exact),
            spec(h, "/aaa/bbb", Prefix),
        ]);
        // (request path, expected route name)
        let cases = [
            ("/", "app.example.com/:Prefix"),
            ("/foo", "app.example.com/foo:Exact"),
            ("/foo/", "app.example.com/foo:Prefix"),
            ("/foo/baz", "app.example.com/foo:Prefix"),
            ("/foobar", "app.example.com/:Prefix"),
            ("/foo/bar", "app.example.com/foo/bar/:Prefix"),
            ("/foo/bar/", "app.example.com/foo/bar/:Prefix"),
            ("/foo/bar/x", "app.example.com/foo/bar/:Prefix"),
            ("/foo/barx", "app.example.com/foo:Prefix"),
            ("/exact", "app.example.com/exact:Exact"),
            ("/exact/", "app.example.com/:Prefix"),
            ("/aaa/bbb", "app.example.com/aaa/bbb:Prefix"),
            ("/aaa/bbbxyz", "app.example.com/:Prefix"),
            ("/aaa/bbb/ccc", "app.example.com/aaa/bbb:Prefix"),
            ("/aaa", "app.example.com/:Prefix"),
        ];
        for (path, want) in cases {
            let got = t
                .lookup("app.example.com", path)
                .map(|r| r.spec.name.as_str());
            assert_eq!(got, Some(want), "path {path}");
        }
    }

    #[test]
    fn no_root_route_means_404() {
        let t = table(vec![spec(Some("a.test"), "/api", PathMatch::Prefix)]);
        assert!(t.lookup("a.test", "/").is_none());
        assert!(t.lookup("a.test", "/apix").is_none());
        assert!(t.lookup("a.test", "/api/v1").is_some());
        assert!(t.lookup("b.test", "/api").is_none());
    }

    #[test]
    fn host_semantics() {
        use PathMatch::Prefix;
        let t = table(vec![
            spec(Some("foo.bar.com"), "/", Prefix),
            spec(Some("*.bar.com"), "/", Prefix),
            spec(None, "/catchall", Prefix),
        ]);
        let cases = [
            ("foo.bar.com", "/", Some("foo.bar.com/:Prefix")),
            ("baz.bar.com", "/", Some("*.bar.com/:Prefix")),
            // A wildcard covers exactly one label.
            ("bar.com", "/catchall", Some("*/catchall:Prefix")),
            ("a.baz.bar.com", "/catchall", Some("*/catchall:Prefix")),
            ("a.baz.bar.com", "/", None),
            // A host that picked its rules does not fall through to catch-all.
            ("foo.bar.com", "/catchall", Some("foo.bar.com/:Prefix")),
            ("other.org", "/", None),
        ];
        for (host, path, want) in cases {
            let got = t.lookup(host, path).map(|r| r.spec.name.as_str());
            assert_eq!(got, want, "{host}{path}");
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let err = RouteTable::build(
            vec![
                spec(Some("a.test"), "/x", PathMatch::Prefix),
                spec(Some("a.test"), "/x/", PathMatch::Prefix),
                spec(Some("a.test"), "/x", PathMatch::Exact),
            ],
            |_| Default::default(),
        )
        .expect_err("duplicate prefix");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].index, 1);
    }

    #[test]
    fn wildcard_suffix_is_one_label() {
        assert_eq!(wildcard_suffix("a.example.com"), Some("example.com"));
        assert_eq!(wildcard_suffix("example.com"), Some("com"));
        assert_eq!(wildcard_suffix(".example.com"), None);
        assert_eq!(wildcard_suffix("localhost"), None);
        assert_eq!(wildcard_suffix("a."), None);
    }

    #[test]
    fn host_normalisation() {
        let cases = [
            ("App.Example.COM", Some("app.example.com")),
            ("app.example.com:8443", Some("app.example.com")),
            ("app.example.com.", Some("app.example.com")),
            ("[::1]:443", Some("::1")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("", None),
            ("a b", None),
            ("host:port", None),
            ("app.test:99999", None),
            ("app.test:", None),
            ("evil.com/x", None),
            ("[::1", None),
            ("a..b", None),
            (".a", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn routing_decodes_encoded_slashes() {
        let cases = [
            ("/a/b", Some("/a/b")),
            ("/admin%2Fusers", Some("/admin/users")),
            ("/admin%2fusers", Some("/admin/users")),
            ("/public%2F..%2Fadmin", Some("/admin")),
            ("/public%2F%2e%2e%2Fadmin", Some("/admin")),
            ("/%2F..%2F..", None),
            ("/%61dmin", Some("/admin")),
            ("/%41dmin", Some("/Admin")),
            ("/admin;jsessionid=1/x", Some("/admin/x")),
            ("/public/..;/admin", Some("/admin")),
            ("/a%00b", None),
            ("/a%ffb", None),
            ("/100%", Some("/100%")),
            ("/a%2", Some("/a%2")),
            // Backslashes are slashes to Node, IIS and some Java servers.
            ("/public\\..\\admin", Some("/admin")),
            ("/public%5C..%5Cadmin", Some("/admin")),
            ("/public%5c%2e%2e%5cadmin", Some("/admin")),
            ("/a\\b", Some("/a/b")),
            ("/a\\..\\..\\x", None),
            // Decoded once, like a backend: double-encoded dots stay
            // literal, they never climb (found by fuzzing).
            (
                "/api/admin/%252e%252e/users",
                Some("/api/admin/%2e%2e/users"),
            ),
            (
                "/api/admin/%2%65%2%65/users",
                Some("/api/admin/%2e%2e/users"),
            ),
            ("/%3ee%2%652e/", Some("/>e%2e2e/")),
        ];
        for (raw, want) in cases {
            assert_eq!(routing_path(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn path_normalisation() {
        let cases = [
            ("/", Some("/")),
            ("/a/b", Some("/a/b")),
            ("/a/b/", Some("/a/b/")),
            ("/a//b", Some("/a/b")),
            ("/public/../admin", Some("/admin")),
            ("/public/%2e%2e/admin", Some("/admin")),
            ("/public/%2E%2E/admin", Some("/admin")),
            ("/a/./b", Some("/a/b")),
            ("/a/.", Some("/a/")),
            ("/a/..", Some("/")),
            ("/..", None),
            ("/a/../..", None),
            ("/%41", Some("/%41")),
            ("/a%2Fb", Some("/a%2Fb")),
            ("/.well-known/x", Some("/.well-known/x")),
            ("relative", None),
            ("*", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), want, "{raw:?}");
        }
    }

    /// The literal a regex route's paths must start with: exact for the
    /// shapes users write, empty where a pattern could match otherwise.
    #[test]
    fn regex_literals_are_what_every_match_starts_with() {
        for (pattern, literal) in [
            ("/svc12(/|$)(.*)", "/svc12"),
            ("/API/v1/.*", "/api/v1/"),
            ("/a[(]|/b", ""),
            ("/a(?x)#(\n|/b", ""),
            ("/keys.*", "/keys"),
            ("/ab*c", "/a"),
            ("/ab?", "/a"),
            ("/a{2}", "/"),
            ("/ab+", "/ab"),
            ("/one|/two", ""),
            ("(/one|/two)/x", ""),
            ("/x(a|b)", "/x"),
            ("/\\d+", "/"),
            ("/caf\u{e9}", "/caf"),
            ("/", "/"),
            ("", ""),
        ] {
            assert_eq!(literal_prefix(pattern), literal, "{pattern}");
            // Whatever the pattern matches starts with the literal.
            let re = compile_regex(pattern, true).unwrap();
            for path in [
                "/svc12/x",
                "/SVC12",
                "/api/V1/x",
                "/ac",
                "/abbbc",
                "/aa",
                "/ab",
                "/one",
                "/two/x",
                "/xa",
                "/12",
                "/",
            ] {
                if re.is_match(path) {
                    assert!(
                        starts_with_ignore_case(path, &literal_prefix(pattern)),
                        "{pattern} {path}"
                    );
                }
            }
        }
        assert!(starts_with_ignore_case("/SVC12/x", "/svc12"));
        // A Kelvin sign folds to `k`: such a path is never judged by ASCII.
        let re = compile_regex("/keys.*", true).unwrap();
        assert!(re.is_match("/\u{212a}eys") && !"/\u{212a}eys".is_ascii());
        assert!(!starts_with_ignore_case("/svc1", "/svc12"));
    }
}
