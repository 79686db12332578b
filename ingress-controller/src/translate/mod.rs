//! `translate(snapshot) -> (routes, certificates, problems)`: the one place
//! that knows how the cluster's objects become heim's route model.
//!
//! Ingress v1 semantics, as the Kubernetes API reference states them:
//! * which Ingresses are heim's: [`crate::class`];
//! * each rule's host (exact or `*.` wildcard, none = any host) and paths:
//!   `Exact`, `Prefix`, and `ImplementationSpecific` as `Prefix`;
//! * a backend is a Service by port number or name, routed to the ready
//!   endpoints of the Service (pod IPs), or to the name of an
//!   `ExternalName` Service; a `resource` backend is not supported;
//! * `spec.defaultBackend` serves what no path of the Ingress matches: its
//!   hosts' `/` when no path claims it, a rule without `http`, and, with no
//!   host, every host no rule names;
//! * `spec.tls[].secretName` names a `kubernetes.io/tls` Secret in the
//!   Ingress's namespace.
//!
//! Overlaps: Ingresses are taken oldest first (`creationTimestamp`, then
//! namespace and name), and the first claim of a host, path and path type
//! wins; a later one is left out with a `RouteConflict` problem. A broken
//! part keeps its claim, so that no younger Ingress takes it over: a backend
//! that cannot be resolved (a missing Service or port) answers 503, and an
//! Ingress whose annotations do not parse answers 403; each with a problem
//! naming the field or annotation. The rest serves as written.
//!
//! Annotations are dialects, each a module turning them into the same
//! [`IngressOptions`]: `heim.dev/*` ([`heim`]), and ingress-nginx's
//! `nginx.ingress.kubernetes.io/*` ([`nginx`]) for Ingresses written for
//! it; `heim.dev/*` wins where both say something.

pub mod heim;
pub mod nginx;
pub mod snippet;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use heim_proxy::auth::policy::AccessRules;
use heim_proxy::config::{DefaultPolicy, RouteDefaults};
use heim_proxy::route::{Backend, IdentityField, PathMatch, Policy, RouteSpec};
use heim_proxy::tls::CertEntry;
use heim_proxy::trust::IpNet;
use heim_proxy::upstream::{UpstreamAddr, UpstreamProtocol, UpstreamSpec};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};

use crate::class::{Claim, ClassFilter};
use crate::model::{ObjKey, Snapshot};

/// What translation needs besides the objects.
#[derive(Clone, Debug)]
pub struct Settings {
    pub classes: ClassFilter,
    /// `[server]`'s route defaults from heim's ConfigMap.
    pub defaults: RouteDefaults,
    /// `[ingress] default_policy`: for Ingresses that name no policy.
    pub default_policy: DefaultPolicy,
    /// `[ingress_nginx] default_policy`: the same for Ingresses written for
    /// ingress-nginx ([`crate::class::ClassFilter::is_nginx`]).
    pub nginx_default_policy: DefaultPolicy,
    /// `[ingress_nginx] interpret_snippets`.
    pub interpret_snippets: bool,
    /// `--enable-ssl-passthrough`: `ssl-passthrough` Ingresses are spliced.
    pub ssl_passthrough: bool,
    /// `[auth]` is configured (allow rules can admit someone).
    pub have_auth: bool,
    /// `[ingress] allow_external_name`.
    pub allow_external_name: bool,
}

/// Something about one Ingress that heim could not serve as written: an
/// Event on the Ingress (`Warning`) and a log line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Problem {
    pub ingress: ObjKey,
    /// The Event's reason, PascalCase.
    pub reason: &'static str,
    /// The field or annotation at fault.
    pub key: String,
    pub message: String,
}

/// The cluster's share of heim's routes and certificates.
#[derive(Debug, Default)]
pub struct Translation {
    /// Oldest Ingress first; no two share host, path and path type.
    pub routes: Vec<RouteSpec>,
    /// The Ingress each route comes from.
    pub owners: Vec<ObjKey>,
    /// From the TLS Secrets the served Ingresses name, each for the hosts
    /// of those Ingresses.
    pub certificates: Vec<CertEntry>,
    /// What the certificates are made of (Secret, resourceVersion, hosts):
    /// they are swapped in only when this changes.
    pub certificate_versions: Vec<CertSource>,
    pub problems: Vec<Problem>,
    /// The Ingresses heim serves (whose status it writes).
    pub served: Vec<ObjKey>,
}

/// What annotations say about an Ingress's routes (every dialect's output).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressOptions {
    /// `None`: the default policy applies.
    pub policy: Option<Policy>,
    pub identity_headers: Vec<(http::HeaderName, IdentityField)>,
    pub protocol: Option<UpstreamProtocol>,
    pub https_redirect: Option<bool>,
    /// `Some(0)`: no limit.
    pub max_body_bytes: Option<u64>,
    pub response_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub source_ranges: Vec<IpNet>,
    /// ingress-nginx's `rewrite-target` (checked: a path with `$1..$9`, or
    /// an absolute http(s) URL).
    pub rewrite_target: Option<String>,
    /// Request headers removed before forwarding (those an auth service
    /// was to set: a client's copy never reaches the backend).
    pub strip_headers: Vec<http::HeaderName>,
    /// `permanent-redirect`, `temporal-redirect` or `app-root`.
    pub redirect: Option<heim_proxy::route::Redirect>,
    /// `upstream-vhost`.
    pub upstream_host: Option<http::HeaderValue>,
    /// `denylist-source-range`.
    pub denied_ranges: Vec<IpNet>,
    /// A canary Ingress's rule (`canary: "true"`), its backend still empty.
    pub canary: Option<heim_proxy::canary::CanaryRule>,
    /// `enable-cors` and `cors-*`.
    pub cors: Option<Arc<heim_proxy::forward::cors::Cors>>,
    /// `auth-type: basic` with its Secret's users.
    pub basic_auth: Option<Arc<heim_proxy::route::BasicAuth>>,
    /// `auth-url` to an auth service heim asks per request.
    pub external_auth: Option<Arc<heim_proxy::auth::external::ExternalAuth>>,
    /// `limit-*`.
    pub rate_limit: Option<heim_proxy::limit::RateLimit>,
    /// `backend-protocol: HTTPS`/`GRPCS` and `proxy-ssl-*`.
    pub upstream_tls: Option<heim_proxy::upstream::UpstreamTls>,
    /// `default-backend` (a Service of the Ingress's namespace) and
    /// `custom-http-errors`.
    pub default_backend: Option<String>,
    pub custom_http_errors: Vec<u16>,
    /// `service-upstream`: to the Service's cluster IP, not its endpoints.
    pub service_upstream: bool,
    /// Its `auth-url` was oauth2-proxy, now heim's sign-in: heim answers
    /// oauth2-proxy's `/oauth2/*` paths on its hosts.
    pub replaces_oauth2_proxy: bool,
    /// `server-alias`: more names for the Ingress's hosts.
    pub server_aliases: Vec<String>,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// An interpreted snippet's `proxy_set_header`s.
    pub request_headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// An interpreted snippet's response header edits.
    pub response_headers: Vec<heim_proxy::forward::edits::ResponseEdit>,
    /// `x-forwarded-prefix` (sent when the rewrite applies).
    pub forwarded_prefix: Option<http::HeaderValue>,
    /// `affinity: cookie` and `session-cookie-*`; an empty `path` (no
    /// `session-cookie-path`) is each route's Ingress path.
    pub affinity: Option<heim_proxy::affinity::Affinity>,
    /// `ssl-passthrough` (served with `--enable-ssl-passthrough` only).
    pub tls_passthrough: bool,
    /// Annotations understood but not acted on in this build (annotation,
    /// why): an Event each, nothing else changes.
    pub unsupported: Vec<(String, String)>,
}

/// A certificate's Secret, its `resourceVersion`, and the hosts it serves.
pub type CertSource = (ObjKey, Option<String>, Vec<String>);

/// What makes two routes the same claim.
type RouteId = (Option<String>, String, PathMatch);

/// An Ingress path heim's table can match: requests are normalised
/// (`//`, `.`, `..` resolved, percent-escapes of unreserved characters
/// decoded) before the lookup, so a path that normalisation changes would
/// never match, and its traffic would go to a broader route.
fn routable(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(format!(
            "{path:?} must start with '/' and hold no '?', '#' or space"
        ));
    }
    let same = heim_proxy::route::normalize_path(path)
        .and_then(|n| heim_proxy::route::routing_path(&n).map(|r| r == path))
        .unwrap_or(false);
    if !same {
        return Err(format!(
            "{path:?} is not in normal form (no //, ., .., %-escapes or regular expressions): requests are matched normalised, so it would never match"
        ));
    }
    Ok(())
}

/// True when a certificate for `own` (its DNS names) covers `host` (a name
/// or a `*.` wildcard host).
fn covers(own: &[String], host: &str) -> bool {
    own.iter().any(|n| {
        n == host
            || n.strip_prefix("*.").is_some_and(|suffix| {
                heim_proxy::route::wildcard_suffix(host) == Some(suffix) && !host.starts_with("*.")
            })
    })
}

/// The Events of an Ingress's nginx annotations: one `Adopted` (Normal)
/// naming what is honoured, and a Warning for each of the rest.
fn report_nginx(
    verdicts: &[(String, nginx::Verdict)],
    problem: &mut impl FnMut(&'static str, String, String),
) {
    use nginx::Verdict;
    let mut exact = Vec::new();
    let mut differs = Vec::new();
    for (k, v) in verdicts {
        let short = k.strip_prefix(nginx::PREFIX).unwrap_or(k);
        match v {
            Verdict::Exact => exact.push(short.to_string()),
            Verdict::Differs(why) => differs.push(format!("{short} ({why})")),
            Verdict::Review(why) => problem("PolicyReview", k.clone(), why.clone()),
            Verdict::Ignored(why) => problem("AnnotationIgnored", k.clone(), why.clone()),
            Verdict::Refused(why) if short.ends_with("-snippet") => {
                problem("SnippetRefused", k.clone(), why.clone())
            }
            Verdict::Refused(why) => problem("AnnotationRefused", k.clone(), why.clone()),
            Verdict::Unsupported(why) => problem("UnsupportedAnnotation", k.clone(), why.clone()),
            Verdict::Invalid(why) => problem("InvalidAnnotation", k.clone(), why.clone()),
        }
    }
    let closed = verdicts.iter().any(|(_, v)| match v {
        Verdict::Unsupported(m) | Verdict::Invalid(m) | Verdict::Refused(m) => {
            m.contains("answers 403")
        }
        _ => false,
    });
    let mut message = String::from(if closed {
        "taken over from ingress-nginx, but it answers 403 (see its other Events)"
    } else {
        "served from its ingress-nginx form"
    });
    if !exact.is_empty() {
        message.push_str(&format!(
            "; honoured as ingress-nginx does: {}",
            exact.join(", ")
        ));
    }
    if !differs.is_empty() {
        message.push_str(&format!(
            "; honoured with a difference: {}",
            differs.join("; ")
        ));
    }
    problem(ADOPTED, "metadata.annotations".into(), message);
}

/// The one reason that is not a problem: an Ingress written for
/// ingress-nginx is served (a `Normal` Event).
pub const ADOPTED: &str = "Adopted";

/// Translates a snapshot with a fresh translator (tests, benchmarks).
pub fn translate_once(snap: &Snapshot, settings: &Settings) -> Translation {
    Translator::default().translate(snap, settings)
}

/// A parsed TLS Secret, kept while its `resourceVersion` stays.
type CachedCert = (Option<String>, Result<CertEntry, String>);

/// Translates snapshots; remembers parsed certificates between calls (the
/// output depends on the snapshot and settings alone).
#[derive(Default)]
pub struct Translator {
    certs: HashMap<ObjKey, CachedCert>,
}

impl Translator {
    /// The routes, certificates and problems of a snapshot.
    pub fn translate(&mut self, snap: &Snapshot, settings: &Settings) -> Translation {
        let mut ours: Vec<&Arc<Ingress>> = snap
            .ingresses
            .iter()
            .filter(|i| settings.classes.claim(i, &snap.classes) != Claim::No)
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .collect();
        // Oldest first, then namespace and name (borrowed: no allocation
        // per comparison at 10,000 Ingresses).
        fn order(i: &Ingress) -> (Option<k8s_openapi::jiff::Timestamp>, &str, &str) {
            let m = &i.metadata;
            (
                m.creation_timestamp.as_ref().map(|t| t.0),
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default(),
            )
        }
        ours.sort_by(|a, b| order(a).cmp(&order(b)));
        // ingress-nginx's regex mode is host-wide: one of its Ingresses with
        // `use-regex: "true"` or a `rewrite-target` makes every path of its
        // Ingresses on that host a case-insensitive regular expression.
        let regex_hosts: HashSet<Option<String>> = ours
            .iter()
            .filter(|i| nginx::regex_mode(i))
            .filter(|i| settings.classes.is_nginx(i, &snap.classes))
            .flat_map(|i| i.spec.iter().flat_map(|s| s.rules.iter().flatten()))
            .map(|r| r.host.as_ref().map(|h| h.to_ascii_lowercase()))
            .collect();
        // Hosts an ingress-nginx Ingress guards in a way heim does not build
        // yet (client certificates, an access-deciding server-snippet):
        // every ingress-nginx route of those hosts answers 403.
        let closed_hosts: HashSet<Option<String>> = ours
            .iter()
            .filter(|i| nginx::guards_host(i))
            .filter(|i| settings.classes.is_nginx(i, &snap.classes))
            .flat_map(|i| i.spec.iter().flat_map(|s| s.rules.iter().flatten()))
            .map(|r| r.host.as_ref().map(|h| h.to_ascii_lowercase()))
            .collect();
        let mut out = Translation::default();
        // (host, path, path type) -> the Ingress that claimed it first, and
        // whether that claim is a default backend.
        let mut claimed: HashMap<RouteId, (ObjKey, bool)> = HashMap::new();
        // host -> the oldest Ingress that names it.
        let mut host_owner: HashMap<String, ObjKey> = HashMap::new();
        let mut fallbacks: Vec<(RouteSpec, ObjKey)> = Vec::new();
        let mut implicit_roots: Vec<(RouteSpec, ObjKey)> = Vec::new();
        // Hosts some (non-canary) Ingress names in a rule, as ingress-nginx
        // makes its servers: the first to name one gives its implicit root.
        let mut rule_hosts: HashSet<String> = HashSet::new();
        // (alias, host, Ingress) of `server-alias`; (other name, host,
        // Ingress) of `from-to-www-redirect`.
        let mut aliases: Vec<(String, String, ObjKey)> = Vec::new();
        let mut www: Vec<(String, String, ObjKey)> = Vec::new();
        // Hosts whose oauth2-proxy heim's sign-in replaced, and the first
        // Ingress that says so.
        let mut oauth2_hosts: Vec<(String, ObjKey, Policy)> = Vec::new();
        // (host, path, path type) of a canary Ingress's path, its canary.
        let mut canaries: Vec<(RouteId, Arc<heim_proxy::canary::Canary>, ObjKey)> = Vec::new();
        // TLS Secret -> its certificate and the hosts it is to serve.
        let mut certs: Vec<(ObjKey, CertEntry, Vec<String>)> = Vec::new();
        // host -> the Secret that serves it.
        let mut cert_host: HashMap<String, ObjKey> = HashMap::new();
        for ingress in ours {
            let key = ObjKey::of(ingress.as_ref());
            out.served.push(key.clone());
            let before = out.problems.len();
            let mut problems: Vec<Problem> = Vec::new();
            let mut problem = |reason, k: String, message: String| {
                problems.push(Problem {
                    ingress: key.clone(),
                    reason,
                    key: k,
                    message,
                })
            };
            // An Ingress whose annotations do not parse keeps its claims
            // but answers 403 until it is fixed: it is never served with a
            // weaker policy than written, and no younger Ingress takes its
            // hosts meanwhile.
            let parsed_options = heim::read(ingress, snap, settings);
            let parsed = parsed_options.is_ok();
            let nginx = settings.classes.is_nginx(ingress, &snap.classes);
            let (options, policy) = match parsed_options {
                Ok(mut o) => {
                    if nginx {
                        let mut verdicts = nginx::read(ingress, settings.have_auth, snap, &mut o);
                        if settings.interpret_snippets {
                            snippet::apply(ingress, &mut o, &mut verdicts);
                        }
                        report_nginx(&verdicts, &mut problem);
                    }
                    // The nginx default policy goes by class, never by
                    // annotations alone (charts template nginx ones onto
                    // Ingresses of any class).
                    let default = match settings.classes.is_nginx_class(ingress, &snap.classes) {
                        true => settings.nginx_default_policy,
                        false => settings.default_policy,
                    };
                    let policy = o.policy.clone().unwrap_or(match default {
                        DefaultPolicy::Deny => Policy::Deny,
                        DefaultPolicy::Public => Policy::Public,
                        DefaultPolicy::AnyAuthenticated => Policy::Allow(Arc::new(AccessRules {
                            any_authenticated: true,
                            ..AccessRules::default()
                        })),
                    });
                    for (k, message) in &o.unsupported {
                        problem("UnsupportedAnnotation", k.clone(), message.clone());
                    }
                    (o, policy)
                }
                Err(mut errors) => {
                    errors.sort();
                    for (k, message) in errors {
                        problem(
                            "InvalidAnnotation",
                            k,
                            format!("{message}; the Ingress answers 403 until it is fixed"),
                        );
                    }
                    (IngressOptions::default(), Policy::Deny)
                }
            };
            let ctx = Ctx {
                parsed,
                snap,
                settings,
                options: &options,
                policy,
                ingress: &key,
                closed_hosts: if nginx { Some(&closed_hosts) } else { None },
            };
            // A canary claims nothing: its paths join the mainline's routes.
            let canary = nginx && nginx::is_canary(ingress);
            let no_spec = IngressSpec::default();
            let spec = ingress.spec.as_ref().unwrap_or(&no_spec);
            // A backend that cannot be resolved still holds its claim, and
            // answers 503 (no endpoints) as ingress-nginx does.
            let mut resolve =
                |b: &IngressBackend, field: &dyn Fn() -> String| match ctx.backend(b, field) {
                    Ok(u) => u,
                    Err(p) => {
                        problem(p.0, p.1, p.2);
                        ctx.no_endpoints()
                    }
                };
            let default_backend = spec
                .default_backend
                .as_ref()
                .map(|b| resolve(b, &|| "spec.defaultBackend".into()));
            let mut explicit = Vec::new();
            let mut hosts_with_root: HashSet<Option<String>> = HashSet::new();
            let mut hosts: Vec<Option<String>> = Vec::new();
            let mut invalid = Vec::new();
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                let host = rule.host.as_ref().map(|h| h.to_ascii_lowercase());
                if !hosts.contains(&host) {
                    hosts.push(host.clone());
                }
                let Some(http) = &rule.http else {
                    continue;
                };
                for (j, p) in http.paths.iter().enumerate() {
                    // Named only when something is wrong (no allocation per path).
                    let field = || format!("spec.rules[{i}].http.paths[{j}]");
                    let path_type = match p.path_type.as_str() {
                        "Exact" => PathMatch::Exact,
                        "Prefix" | "ImplementationSpecific" => PathMatch::Prefix,
                        other => {
                            invalid.push((
                                format!("{}.pathType", field()),
                                format!("{other:?} is not Exact, Prefix or ImplementationSpecific"),
                            ));
                            continue;
                        }
                    };
                    let path = p
                        .path
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "/".into());
                    if nginx && regex_hosts.contains(&host) {
                        match heim_proxy::route::compile_regex(&path, true) {
                            Ok(_) if path.starts_with('/') => {
                                let upstream =
                                    resolve(&p.backend, &|| format!("{}.backend", field()));
                                explicit.push(ctx.route(
                                    host.clone(),
                                    path,
                                    PathMatch::Regex,
                                    upstream,
                                ));
                            }
                            Ok(_) => invalid.push((
                                format!("{}.path", field()),
                                format!("{path:?} must start with '/'"),
                            )),
                            Err(why) => invalid.push((format!("{}.path", field()), why)),
                        }
                        continue;
                    }
                    if let Err(why) = routable(&path) {
                        invalid.push((format!("{}.path", field()), why));
                        continue;
                    }
                    // ImplementationSpecific paths are regular expressions
                    // under ingress-nginx's use-regex; heim reads them as
                    // prefixes, where such a path would never match.
                    if p.path_type == "ImplementationSpecific"
                        && path
                            .contains(['(', ')', '*', '[', ']', '$', '^', '+', '{', '}', '|', '\\'])
                    {
                        invalid.push((
                            format!("{}.path", field()),
                            format!("{path:?} looks like a regular expression: heim reads ImplementationSpecific as Prefix"),
                        ));
                        continue;
                    }
                    let upstream = resolve(&p.backend, &|| format!("{}.backend", field()));
                    if path_type == PathMatch::Prefix && path.trim_end_matches('/').is_empty() {
                        hosts_with_root.insert(host.clone());
                    }
                    explicit.push(ctx.route(host.clone(), path, path_type, upstream));
                }
            }
            for (k, message) in invalid {
                problem("InvalidPath", k, message);
            }
            // ingress-nginx's default-backend annotation: a Service of the
            // Ingress's namespace, on its first port.
            if let Some(name) = &options.default_backend {
                let first_port = snap
                    .services
                    .get(&ObjKey::new(&key.namespace, name))
                    .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
                let b = IngressBackend {
                    service: Some(k8s_openapi::api::networking::v1::IngressServiceBackend {
                        name: name.clone(),
                        port: first_port.map(|n| {
                            k8s_openapi::api::networking::v1::ServiceBackendPort {
                                number: Some(n),
                                name: None,
                            }
                        }),
                    }),
                    resource: None,
                };
                let field = || format!("metadata.annotations[{}default-backend]", nginx::PREFIX);
                match ctx.backend(&b, &field) {
                    Ok(mut backend) => {
                        // ingress-nginx's error locations proxy plain
                        // HTTP/1.1, whatever the Ingress's backend-protocol.
                        backend.protocol = UpstreamProtocol::Http1;
                        backend.tls = None;
                        let eb = Arc::new(heim_proxy::route::ErrorBackend {
                            backend,
                            codes: options.custom_http_errors.clone(),
                            namespace: key.namespace.clone(),
                            ingress: key.name.clone(),
                            service: String::new(),
                            port: String::new(),
                        });
                        for r in &mut explicit {
                            r.error_backend = Some(eb.clone());
                        }
                    }
                    Err(p) => problem(p.0, p.1, p.2),
                }
            }
            // A canary's paths are backends of the mainline's routes.
            let default_backend = if canary {
                for r in explicit.drain(..) {
                    let (Some(rule), Backend::Upstream(u)) = (&options.canary, &r.backend) else {
                        continue;
                    };
                    let c = heim_proxy::canary::Canary {
                        backend: u.clone(),
                        rule: rule.clone(),
                    };
                    let id = (r.host.clone(), normal_path(&r), r.path_type);
                    canaries.push((id, Arc::new(c), key.clone()));
                }
                None
            } else {
                default_backend
            };
            if let Some(upstream) = default_backend {
                // The default backend takes what no path claims: each
                // host's `/`, and every host when no rule names one.
                if hosts.is_empty() {
                    hosts.push(None);
                }
                for host in hosts.iter().filter(|h| !hosts_with_root.contains(*h)) {
                    let r = ctx.route(
                        host.clone(),
                        "/".into(),
                        PathMatch::Prefix,
                        upstream.clone(),
                    );
                    fallbacks.push((r, key.clone()));
                }
            }
            // The hosts this Ingress may bring certificates for: those whose
            // oldest Ingress (naming it in a rule or a TLS section) is in
            // this Ingress's namespace. A namespace is the trust boundary:
            // another namespace adding a path to a host gets no say in its
            // certificate.
            let tls_hosts = spec
                .tls
                .iter()
                .flatten()
                .flat_map(|t| t.hosts.iter().flatten())
                .map(|h| h.to_ascii_lowercase());
            // ingress-nginx's implicit `location /`: a host no Ingress gives
            // a `/` still has one (to its default backend, 404), and it
            // carries the annotations of the oldest Ingress naming the host.
            // So that Ingress's redirects, absolute rewrite target, sign-in
            // and address blocks also answer its host's unmatched paths
            // (for ingress-nginx's class; heim's own answers 404).
            if !canary && nginx && options.replaces_oauth2_proxy {
                oauth2_hosts.extend(
                    hosts
                        .iter()
                        .flatten()
                        .map(|h| (h.clone(), key.clone(), ctx.policy.clone())),
                );
            }
            if !canary && nginx {
                for h in hosts.iter().flatten().filter(|h| !h.starts_with("*.")) {
                    for a in &options.server_aliases {
                        aliases.push((a.clone(), h.clone(), key.clone()));
                    }
                    if options.from_to_www {
                        let other = match h.strip_prefix("www.") {
                            Some(bare) => bare.to_string(),
                            None => format!("www.{h}"),
                        };
                        www.push((other, h.clone(), key.clone()));
                    }
                }
            }
            if !canary {
                let nginx_class = settings.classes.is_nginx_class(ingress, &snap.classes);
                for h in hosts.iter().flatten() {
                    if rule_hosts.insert(h.clone()) && nginx_class {
                        implicit_roots.push((ctx.implicit_root(h), key.clone()));
                    }
                }
            }
            let mut won: HashMap<String, ObjKey> = HashMap::new();
            for h in hosts.iter().flatten().cloned().chain(tls_hosts) {
                let owner = host_owner.entry(h.clone()).or_insert_with(|| key.clone());
                won.insert(h, owner.clone());
            }
            for r in explicit {
                let id = (r.host.clone(), normal_path(&r), r.path_type);
                match claimed.get(&id) {
                    Some((first, _)) => {
                        let message = if *first == key {
                            format!(
                                "{:?} appears twice in this Ingress; the first serves",
                                r.path
                            )
                        } else {
                            format!(
                                "{} {:?} for host {} is served by the older Ingress {first}",
                                if r.path_type == PathMatch::Exact {
                                    "Exact"
                                } else {
                                    "Prefix"
                                },
                                r.path,
                                r.host.as_deref().unwrap_or("*"),
                            )
                        };
                        problem(
                            "RouteConflict",
                            format!("host {} path {}", r.host.as_deref().unwrap_or("*"), r.path),
                            message,
                        );
                    }
                    None => {
                        claimed.insert(id, (key.clone(), false));
                        out.routes.push(r);
                        out.owners.push(key.clone());
                    }
                }
            }
            for (k, tls) in spec.tls.iter().flatten().enumerate() {
                let Some(name) = &tls.secret_name else {
                    continue;
                };
                let sk = ObjKey::new(&key.namespace, name);
                let field = format!("spec.tls[{k}].secretName");
                let entry = match self.certificate(snap, &sk) {
                    Ok(entry) => entry,
                    Err((reason, message)) => {
                        problem(reason, field, message);
                        continue;
                    }
                };
                // Only for hosts this Ingress serves (and its TLS section
                // lists): a certificate in one namespace never answers for
                // another's host.
                let (listed, explicit_hosts): (Vec<String>, bool) = match &tls.hosts {
                    Some(h) if !h.is_empty() => {
                        (h.iter().map(|h| h.to_ascii_lowercase()).collect(), true)
                    }
                    _ => (hosts.iter().flatten().cloned().collect(), false),
                };
                let mut names = Vec::new();
                for h in listed {
                    let Some(owner) = won.get(&h) else {
                        continue;
                    };
                    if owner.namespace != key.namespace {
                        problem(
                            "TLSHostNotServed",
                            field.clone(),
                            format!("{h} belongs to the older Ingress {owner} in another namespace: this Secret does not serve it"),
                        );
                        continue;
                    }
                    if !covers(&entry.names, &h) {
                        // Without `hosts`, a certificate serves the rule
                        // hosts it covers (another TLS entry may cover the
                        // rest).
                        if explicit_hosts {
                            problem(
                                "CertificateMismatch",
                                field.clone(),
                                format!("the certificate in Secret {sk} does not cover {h}"),
                            );
                        }
                        continue;
                    }
                    // One Secret per host: the first (oldest Ingress) wins.
                    match cert_host.get(&h) {
                        Some(first) if *first != sk => problem(
                            "CertificateConflict",
                            field.clone(),
                            format!("{h} is served with Secret {first}, named by an older Ingress"),
                        ),
                        Some(_) => {}
                        None => {
                            cert_host.insert(h.clone(), sk.clone());
                            names.push(h);
                        }
                    }
                }
                match certs.iter_mut().find(|(k, _, _)| *k == sk) {
                    Some((_, _, n)) => n.extend(names),
                    None => certs.push((sk, entry, names)),
                }
            }
            problems.sort();
            out.problems.extend(problems);
            debug_assert!(out.problems.len() >= before);
        }
        // Default backends come after every explicit path, so that any
        // Ingress's own `/` wins over another's default backend; between
        // two default backends, the older one wins and the other is told.
        for (r, owner) in fallbacks {
            let id = (r.host.clone(), normal_path(&r), r.path_type);
            match claimed.get(&id) {
                Some((first, true)) if *first != owner => out.problems.push(Problem {
                    ingress: owner.clone(),
                    reason: "RouteConflict",
                    key: "spec.defaultBackend".into(),
                    message: format!(
                        "the default backend for host {} is the older Ingress {first}'s",
                        r.host.as_deref().unwrap_or("*")
                    ),
                }),
                Some(_) => {}
                None => {
                    claimed.insert(id, (owner.clone(), true));
                    out.routes.push(r);
                    out.owners.push(owner);
                }
            }
        }
        // Each canary joins the mainline route of its host, path and path
        // type (one canary per route, the oldest: as ingress-nginx, which
        // uses only the first alternative backend).
        for (id, c, owner) in canaries {
            let (host, path, _) = &id;
            let mainline = out
                .routes
                .iter_mut()
                .zip(&out.owners)
                .find(|(r, _)| (r.host.clone(), normal_path(r), r.path_type) == id);
            let message = match mainline {
                Some((r, first))
                    if r.canary.is_none()
                        && matches!(r.backend, Backend::Upstream(_))
                        && first.namespace == owner.namespace =>
                {
                    r.canary = Some(c);
                    continue;
                }
                Some((_, first)) if first.namespace != owner.namespace => format!(
                    "the mainline for host {} path {path} is {first}, in another namespace: a canary never takes another namespace's traffic",
                    host.as_deref().unwrap_or("*")
                ),
                Some((_, first)) => format!(
                    "the route for host {} path {path} has a canary already, or is not a Service's (mainline {first}): this canary gets no traffic",
                    host.as_deref().unwrap_or("*")
                ),
                None => format!(
                    "no mainline Ingress serves host {} path {path}: this canary gets no traffic (ingress-nginx answers 404 there too)",
                    host.as_deref().unwrap_or("*")
                ),
            };
            out.problems.push(Problem {
                ingress: owner,
                reason: "CanaryWithoutMainline",
                key: format!("host {} path {path}", host.as_deref().unwrap_or("*")),
                message,
            });
        }
        // Implicit roots last: any Ingress's own `/` (a path or a default
        // backend) is the host's root location instead.
        for (r, owner) in implicit_roots {
            let prefix = (r.host.clone(), String::new(), PathMatch::Prefix);
            let regex = (r.host.clone(), "/".to_string(), PathMatch::Regex);
            if !claimed.contains_key(&prefix) && !claimed.contains_key(&regex) {
                claimed.insert(prefix, (owner.clone(), true));
                out.routes.push(r);
                out.owners.push(owner);
            }
        }
        // oauth2-proxy's own paths on those hosts are heim's: its Ingress
        // for `/oauth2` (its Service may be gone) or a route of heim's own.
        // Only in the namespace that owns the host (its oldest Ingress's),
        // and only that namespace's routes: another namespace gets no say.
        // The route keeps the sign-in's rules, for `/oauth2/auth`.
        let mut seen: HashSet<String> = HashSet::new();
        for (host, owner, policy) in oauth2_hosts {
            let owns = host_owner
                .get(&host)
                .is_some_and(|o| o.namespace == owner.namespace);
            if !owns || !seen.insert(host.clone()) {
                continue;
            }
            let mut found = false;
            for (r, _) in out.routes.iter_mut().zip(&out.owners).filter(|(r, o)| {
                o.namespace == owner.namespace
                    && r.host.as_deref() == Some(host.as_str())
                    && r.path_type != PathMatch::Exact
                    && r.path.trim_end_matches('/') == "/oauth2"
            }) {
                r.backend = Backend::OAuth2Paths;
                r.policy = policy.clone();
                r.https_redirect = true;
                r.cors = None;
                found = true;
            }
            if !found {
                let mut r = own_route(
                    format!("{owner}:{host}/oauth2 (oauth2-proxy's paths)"),
                    host,
                    "/oauth2",
                    Backend::OAuth2Paths,
                    None,
                    settings,
                );
                r.policy = policy;
                out.routes.push(r);
                out.owners.push(owner);
            }
        }
        // ingress-nginx's server aliases and www redirects: names no rule
        // owns answer for a host (every path of it) or redirect to it.
        let mut taken: HashSet<String> = rule_hosts.clone();
        for (alias, host, owner) in aliases {
            if !taken.insert(alias.clone()) {
                continue;
            }
            let copies: Vec<RouteSpec> = out
                .routes
                .iter()
                .filter(|r| r.host.as_deref() == Some(host.as_str()))
                .map(|r| RouteSpec {
                    name: format!("{} (alias {alias})", r.name),
                    host: Some(alias.clone()),
                    ..r.clone()
                })
                .collect();
            for r in copies {
                out.routes.push(r);
                out.owners.push(owner.clone());
            }
        }
        for (from, to, owner) in www {
            if !taken.insert(from.clone()) {
                continue;
            }
            out.routes.push(own_route(
                format!("{owner}:{from} (www redirect)"),
                from,
                "/",
                Backend::NotFound,
                Some(heim_proxy::route::Redirect {
                    code: 308,
                    to: format!("$scheme://{to}$request_uri"),
                    root_only: false,
                }),
                settings,
            ));
            out.owners.push(owner);
        }
        for (sk, mut entry, mut names) in certs {
            names.sort();
            names.dedup();
            if names.is_empty() {
                continue;
            }
            let version = snap
                .secrets
                .get(&sk)
                .and_then(|s| s.metadata.resource_version.clone());
            out.certificate_versions.push((sk, version, names.clone()));
            entry.names = names;
            out.certificates.push(entry);
        }
        let live: HashSet<&ObjKey> = snap.secrets.keys().collect();
        self.certs.retain(|k, _| live.contains(k));
        out
    }

    fn certificate(
        &mut self,
        snap: &Snapshot,
        key: &ObjKey,
    ) -> Result<CertEntry, (&'static str, String)> {
        let Some(secret) = snap.secrets.get(key) else {
            self.certs.remove(key);
            return Err(("SecretNotFound", format!("Secret {key} does not exist")));
        };
        let version = secret.metadata.resource_version.clone();
        if let Some((v, parsed)) = self.certs.get(key) {
            if *v == version && version.is_some() {
                return parsed.clone().map_err(|m| ("InvalidCertificate", m));
            }
        }
        let parsed = parse_tls_secret(secret, key);
        self.certs.insert(key.clone(), (version, parsed.clone()));
        parsed.map_err(|m| ("InvalidCertificate", m))
    }
}

fn parse_tls_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    key: &ObjKey,
) -> Result<CertEntry, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(format!(
            "Secret {key} is of type {:?}, not kubernetes.io/tls",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let (Some(cert), Some(k)) = (get("tls.crt"), get("tls.key")) else {
        return Err(format!("Secret {key} lacks tls.crt or tls.key"));
    };
    CertEntry::from_pem(cert, k, &[]).map_err(|e| format!("Secret {key}: {e}"))
}

/// A public Prefix route heim answers itself, with nothing of an
/// Ingress's annotations: ingress-nginx's `from-to-www-redirect` server (a
/// redirect, on both schemes), oauth2-proxy's paths (https only).
fn own_route(
    name: String,
    host: String,
    path: &str,
    backend: Backend,
    redirect: Option<heim_proxy::route::Redirect>,
    settings: &Settings,
) -> RouteSpec {
    RouteSpec {
        https_redirect: redirect.is_none(),
        max_body_bytes: Some(settings.defaults.max_body_bytes).filter(|n| *n > 0),
        redirect,
        ..RouteSpec::new(
            name,
            Some(host),
            path.into(),
            PathMatch::Prefix,
            backend,
            Policy::Public,
        )
    }
}

/// A route's path as the table compares it.
fn normal_path(r: &RouteSpec) -> String {
    match r.path_type {
        PathMatch::Exact => r.path.clone(),
        PathMatch::Prefix => r.path.trim_end_matches('/').to_string(),
        PathMatch::Regex => r.path.clone(),
    }
}

/// A backend that could not be resolved: (reason, field, message).
type BackendProblem = (&'static str, String, String);

impl Ctx<'_> {
    /// An upstream with no endpoints: requests get 503.
    fn no_endpoints(&self) -> UpstreamSpec {
        UpstreamSpec {
            endpoints: Vec::new(),
            protocol: self.options.protocol.unwrap_or(UpstreamProtocol::Http1),
            limits: self.settings.defaults.upstream,
            tls: None,
        }
    }
}

/// One Ingress's translation context.
struct Ctx<'a> {
    /// The annotations parsed (else the Ingress is denied whole).
    parsed: bool,
    snap: &'a Snapshot,
    settings: &'a Settings,
    options: &'a IngressOptions,
    policy: Policy,
    ingress: &'a ObjKey,
    /// For an ingress-nginx Ingress: the hosts whose routes answer 403.
    closed_hosts: Option<&'a HashSet<Option<String>>>,
}

impl Ctx<'_> {
    fn route(
        &self,
        host: Option<String>,
        path: String,
        path_type: PathMatch,
        upstream: UpstreamSpec,
    ) -> RouteSpec {
        let o = self.options;
        let max_body = o
            .max_body_bytes
            .unwrap_or(self.settings.defaults.max_body_bytes);
        // cert-manager's HTTP-01 solver Ingress: the CA fetches its token
        // over plain HTTP without signing in (the solver serves nothing else).
        // Only a token path (one segment), and only where the annotations
        // parsed (a denied Ingress stays denied).
        let acme_solver = path
            .strip_prefix("/.well-known/acme-challenge/")
            .is_some_and(|token| !token.is_empty() && !token.contains('/'))
            && self.parsed;
        let closed = self.closed_hosts.is_some_and(|c| c.contains(&host));
        // A target equal to the path rewrites nothing (as in ingress-nginx).
        let rewrite = o
            .rewrite_target
            .as_ref()
            .filter(|t| **t != path)
            .and_then(|t| {
                Some(heim_proxy::route::Rewrite {
                    pattern: heim_proxy::route::compile_regex(&path, false).ok()?,
                    target: t.clone(),
                    forwarded_prefix: o.forwarded_prefix.clone(),
                })
            });
        // The cookie's path: `session-cookie-path`, else the path as
        // written (a pattern's literal prefix).
        let affinity = o.affinity.as_ref().map(|a| {
            let path = match (a.path.is_empty(), path_type) {
                (false, _) => a.path.clone(),
                (true, PathMatch::Regex) => heim_proxy::affinity::regex_cookie_path(&path),
                (true, _) => path.clone(),
            };
            Arc::new(heim_proxy::affinity::Affinity { path, ..a.clone() })
        });
        RouteSpec {
            name: format!(
                "{}:{}{}{}",
                self.ingress,
                host.as_deref().unwrap_or("*"),
                path,
                if path_type == PathMatch::Exact {
                    " exact"
                } else {
                    ""
                }
            ),
            host,
            path,
            path_type,
            backend: Backend::Upstream(upstream),
            policy: if acme_solver {
                Policy::Public
            } else if closed {
                Policy::Deny
            } else {
                self.policy.clone()
            },
            https_redirect: o.https_redirect.unwrap_or(true) && !acme_solver,
            max_body_bytes: Some(max_body).filter(|n| *n > 0),
            identity_headers: o.identity_headers.clone(),
            source_ranges: o.source_ranges.clone(),
            rewrite,
            strip_headers: o.strip_headers.clone(),
            redirect: o.redirect.clone(),
            upstream_host: o.upstream_host.clone(),
            denied_ranges: o.denied_ranges.clone(),
            canary: None,
            cors: o.cors.clone(),
            // ingress-nginx's `no-auth-locations`: ACME's HTTP-01 path is
            // never behind basic auth or an auth service.
            basic_auth: o.basic_auth.clone().filter(|_| !acme_solver),
            external_auth: o.external_auth.clone().filter(|_| !acme_solver),
            rate_limit: o.rate_limit.clone(),
            request_headers: o.request_headers.clone(),
            response_headers: o.response_headers.clone(),
            error_backend: None,
            affinity,
            tls_passthrough: o.tls_passthrough && self.settings.ssl_passthrough,
        }
    }

    /// ingress-nginx's implicit `location /` for `host`, with this
    /// Ingress's annotations: heim answers 404 after them. It is public
    /// unless the annotations name who may pass (it serves no backend),
    /// and denied when they do not parse or its host is closed.
    fn implicit_root(&self, host: &str) -> RouteSpec {
        let mut r = self.route(
            Some(host.to_string()),
            "/".into(),
            PathMatch::Prefix,
            self.no_endpoints(),
        );
        r.name = format!("{}:{host}/ (implicit root)", self.ingress);
        r.backend = Backend::NotFound;
        let closed = self.closed_hosts.is_some_and(|c| c.contains(&r.host));
        r.policy = match (self.parsed && !closed, &self.options.policy) {
            (false, _) => Policy::Deny,
            (true, named) => named.clone().unwrap_or(Policy::Public),
        };
        r
    }

    /// The Service behind a backend: its ready endpoints on the port named.
    /// `field` names the backend in a problem.
    fn backend(
        &self,
        b: &IngressBackend,
        field: &dyn Fn() -> String,
    ) -> Result<UpstreamSpec, BackendProblem> {
        let Some(svc) = &b.service else {
            return Err((
                "ResourceBackendUnsupported",
                format!("{}.resource", field()),
                "heim routes to Services only; a resource backend is not supported".into(),
            ));
        };
        let key = ObjKey::new(&self.ingress.namespace, &svc.name);
        let Some(service) = self.snap.services.get(&key) else {
            return Err((
                "ServiceNotFound",
                format!("{}.service.name", field()),
                format!("Service {key} does not exist"),
            ));
        };
        let no_spec = k8s_openapi::api::core::v1::ServiceSpec::default();
        let spec = service.spec.as_ref().unwrap_or(&no_spec);
        let wanted = svc.port.as_ref();
        let by_number = wanted.and_then(|p| p.number);
        let by_name = wanted.and_then(|p| p.name.as_deref());
        let port_field = || format!("{}.service.port", field());
        let mut limits = self.settings.defaults.upstream;
        if let Some(t) = self.options.response_timeout {
            limits.response_timeout = t;
        }
        if let Some(t) = self.options.connect_timeout {
            limits.connect_timeout = t;
        }
        let protocol = self.options.protocol.unwrap_or(UpstreamProtocol::Http1);
        if spec.type_.as_deref() == Some("ExternalName") {
            if !self.settings.allow_external_name {
                return Err((
                    "ExternalNameRefused",
                    format!("{}.service.name", field()),
                    format!("Service {key} is an ExternalName: heim routes to one only with [ingress] allow_external_name = true in its ConfigMap"),
                ));
            }
            let host = spec.external_name.clone().unwrap_or_default();
            let port = by_number
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    (
                        "ServicePortNotFound",
                        port_field(),
                        format!("ExternalName Service {key} needs a port number, not a name"),
                    )
                })?;
            return Ok(UpstreamSpec {
                endpoints: vec![UpstreamAddr::Name { host, port }],
                protocol,
                limits,
                tls: self.options.upstream_tls.clone(),
            });
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        let found = ports.iter().find(|p| match (by_number, by_name) {
            (Some(n), _) => p.port == n,
            (None, Some(name)) => p.name.as_deref() == Some(name),
            (None, None) => ports.len() == 1,
        });
        let Some(port) = found else {
            let wanted = match (by_number, by_name) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) => format!("{n:?}"),
                (None, None) => "(none named)".into(),
            };
            return Err((
                "ServicePortNotFound",
                port_field(),
                format!("Service {key} has no port {wanted}"),
            ));
        };
        // ingress-nginx's `service-upstream`: the Service's cluster IP and
        // port (kube-proxy picks the pod), not its endpoints.
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        if let (true, Some(ip), Ok(p)) = (
            self.options.service_upstream,
            cluster_ip,
            u16::try_from(port.port),
        ) {
            return Ok(UpstreamSpec {
                endpoints: vec![UpstreamAddr::Socket((ip, p).into())],
                protocol,
                limits,
                tls: self.options.upstream_tls.clone(),
            });
        }
        let port_name = port.name.clone().unwrap_or_default();
        let endpoints = self
            .snap
            .endpoints
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|r| r.port_name == port_name)
            .map(|r| UpstreamAddr::Socket((r.ip, r.port).into()))
            .collect();
        Ok(UpstreamSpec {
            endpoints,
            protocol,
            limits,
            tls: self.options.upstream_tls.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
