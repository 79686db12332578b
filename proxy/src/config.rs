//! The config file: TOML read into raw `serde` structs, then validated and
//! compiled into the values the hot path uses.
//!
//! Every error names the file, the line and the key, and validation goes on
//! past the first error so that `heim-proxy check` lists them all (like
//! `nginx -t`). This module reads the config file only; certificate files
//! are read by `tls`, routes compiled by `route`.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::acme::{AcmeSpec, ChallengeKind, DnsConfig, DnsProviderSpec};
use crate::auth::policy::AccessRules;
use crate::auth::webhook::WebhookSpec;
use crate::auth::{AuthSpec, ProviderKind, ProviderSpec};
use crate::route::{Backend, IdentityField, PathMatch, Policy, RouteSpec};
use crate::trust::{IpNet, TrustedProxies};
use crate::upstream::{UpstreamAddr, UpstreamLimits, UpstreamProtocol, UpstreamSpec};

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    /// Dotted key, e.g. `route[2].upstream`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}

/// Every problem found in one config file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 64 hex digits, as `sha256sum` prints them.
fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *o = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

// === raw config ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Spanned<RawServer>,
    #[serde(default)]
    certificate: Vec<Spanned<RawCertificate>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    auth: Option<Spanned<RawAuth>>,
    acme: Option<Spanned<RawAcme>>,
    ingress: Option<Spanned<RawIngress>>,
    ingress_nginx: Option<Spanned<RawIngressNginx>>,
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngressNginx {
    default_policy: Option<Spanned<String>>,
    interpret_snippets: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    token_sha256: Option<Spanned<String>>,
    token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    default_policy: Option<Spanned<String>>,
    allow_external_name: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: Spanned<String>,
    contact: Option<Spanned<Vec<String>>>,
    storage_dir: Option<String>,
    challenge: Option<Spanned<String>>,
    ca_file: Option<String>,
    domains: Option<Spanned<Vec<String>>>,
    dns: Option<Spanned<RawAcmeDns>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcmeDns {
    provider: Spanned<String>,
    server: Option<Spanned<String>>,
    tsig_key_name: Option<String>,
    tsig_algorithm: Option<Spanned<String>>,
    tsig_secret_file: Option<String>,
    api_token_file: Option<String>,
    zone_id: Option<String>,
    api_url: Option<Spanned<String>>,
    check_servers: Option<Spanned<Vec<String>>>,
    propagation_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    auth_host: Spanned<String>,
    cookie_secret_file: Spanned<String>,
    #[serde(default)]
    previous_cookie_secret_files: Vec<String>,
    session_ttl: Option<Spanned<String>>,
    signing_key_file: Spanned<String>,
    #[serde(default)]
    provider: Vec<Spanned<RawProvider>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Spanned<String>,
    kind: Spanned<String>,
    client_id: Option<String>,
    client_secret_file: Option<String>,
    issuer: Option<Spanned<String>>,
    scopes: Option<Vec<String>>,
    groups_claim: Option<String>,
    hd: Option<String>,
    api_url: Option<Spanned<String>>,
    web_url: Option<Spanned<String>>,
    users_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    https_listen: Spanned<String>,
    http_listen: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    https_port: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    handshake_timeout: Option<Spanned<String>>,
    request_head_timeout: Option<Spanned<String>>,
    max_header_bytes: Option<Spanned<ByteSize>>,
    drain_timeout: Option<Spanned<String>>,
    access_log: Option<bool>,
    connect_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    upstream_idle_timeout: Option<Spanned<String>>,
    upstream_max_connections: Option<Spanned<i64>>,
    upstream_queue_size: Option<Spanned<i64>>,
    max_body_bytes: Option<Spanned<ByteSize>>,
    keepalive_requests: Option<Spanned<i64>>,
    websocket_idle_timeout: Option<Spanned<String>>,
    proxy_protocol: Option<bool>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    default_certificate: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
    hosts: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    path_type: Option<Spanned<String>>,
    upstream: Option<Spanned<Vec<String>>>,
    upstream_protocol: Option<Spanned<String>>,
    echo: Option<Spanned<bool>>,
    tcp: Option<Spanned<String>>,
    agent: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    public: Option<bool>,
    https_redirect: Option<bool>,
    max_body_bytes: Option<Spanned<ByteSize>>,
    connect_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    allow_emails: Option<Spanned<Vec<String>>>,
    allow_domains: Option<Spanned<Vec<String>>>,
    allow_groups: Option<Spanned<Vec<String>>>,
    allow_github_orgs: Option<Spanned<Vec<String>>>,
    allow_github_teams: Option<Spanned<Vec<String>>>,
    allow_any_authenticated: Option<Spanned<bool>>,
    identity_headers: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    allow_source_ranges: Option<Spanned<Vec<String>>>,
    webhook: Option<Spanned<RawWebhook>>,
    acme: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    provider: Spanned<String>,
    secret_file: String,
}

/// A size written as a number of bytes or as `"64k"`, `"10m"`, `"1g"`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum ByteSize {
    Bytes(i64),
    Text(String),
}

// === compiled config ===

/// Settings of the listeners and defaults of the routes.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    pub https_listen: SocketAddr,
    pub http_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub workers: usize,
    /// Port written into http -> https redirects.
    pub https_port: u16,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Also bounds how long an idle HTTP/1 keep-alive connection stays open.
    pub request_head_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
    pub access_log: bool,
    /// Requests one client connection may make before heim closes it
    /// (HTTP/1: `Connection: close`; HTTP/2: GOAWAY), like nginx's
    /// `keepalive_requests`.
    pub keepalive_requests: u64,
    /// Spliced WebSockets with no byte either way for this long are closed.
    pub websocket_idle_timeout: Option<Duration>,
    /// The https and http listeners read a PROXY protocol header (v1 or v2)
    /// from peers in `trusted_proxies`.
    pub proxy_protocol: bool,
    /// Peers believed about the client: their PROXY protocol header, their
    /// `X-Forwarded-For` and `X-Forwarded-Proto`.
    pub trusted_proxies: TrustedProxies,
}

impl ServerSettings {
    /// Settings that only a restart can change (sockets and threads).
    pub fn restart_needed(&self, other: &ServerSettings) -> bool {
        self.https_listen != other.https_listen
            || self.http_listen != other.http_listen
            || self.admin_listen != other.admin_listen
            || self.workers != other.workers
    }
}

/// A certificate entry: where its files are and which names it serves.
#[derive(Clone, Debug)]
pub struct CertificateSpec {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Names from the config; empty means "take them from the certificate".
    pub hosts: Vec<String>,
    /// Where the entry is, for errors found while reading the files.
    pub line: usize,
    pub index: usize,
}

/// A validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerSettings,
    pub certificates: Vec<CertificateSpec>,
    pub routes: Vec<RouteSpec>,
    /// Line of each route, for errors found when the table is compiled.
    pub route_lines: Vec<usize>,
    /// `[auth]`, when sign-in is configured.
    pub auth: Option<AuthSpec>,
    /// `[acme]`, when heim gets certificates itself.
    pub acme: Option<AcmeSpec>,
    /// `server.default_certificate` and its line: the name whose
    /// certificate serves handshakes without SNI or for unknown names.
    pub default_certificate: Option<(String, usize)>,
    /// What a route gets for what it leaves unset (other sources' routes too).
    pub route_defaults: RouteDefaults,
    /// `[ingress]` and `[ingress_nginx]`: read by `heim-ingress` only.
    pub ingress: IngressSettings,
    /// `[[agent]]`: the agents that may dial in (`heim-tunnel agent`).
    pub agents: Vec<AgentSpec>,
}

/// `[[agent]]`: an agent that may dial in, and how its token is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    pub name: String,
    pub token: AgentToken,
    /// The line of the `[[agent]]` table, for errors found when it is read.
    pub line: usize,
}

/// An agent's token, as heim knows it: never the token in the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentToken {
    /// `token_sha256`: the SHA-256 of the token, hex.
    Sha256([u8; 32]),
    /// `token_file`: a file holding the token itself (read on each load).
    File(PathBuf),
}

/// `[ingress]`: how `heim-ingress` treats the cluster's Ingresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressSettings {
    /// The policy of an Ingress that names none (`heim.dev/public`, an
    /// `heim.dev/allow-*` annotation).
    pub default_policy: DefaultPolicy,
    /// `[ingress_nginx] default_policy`: the same for Ingresses written for
    /// ingress-nginx (its class, or its annotations), which were public
    /// there unless they said otherwise.
    pub nginx_default_policy: DefaultPolicy,
    /// `[ingress_nginx] interpret_snippets`: snippets made only of
    /// `more_set_headers`, `more_clear_headers`, `add_header`,
    /// `proxy_set_header` and `return 30x` are applied as data (off: every
    /// snippet is refused).
    pub nginx_interpret_snippets: bool,
    /// Ingresses may route to `ExternalName` Services: any DNS name their
    /// authors choose, heim's own admin port or a cloud metadata address
    /// among them. Off unless the operator trusts every Ingress author.
    pub allow_external_name: bool,
}

/// `ingress.default_policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Nobody (the shipped default).
    #[default]
    Deny,
    /// Anyone, without signing in.
    Public,
    /// Anyone who signs in.
    AnyAuthenticated,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: "(file)".into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Validates config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        Self::parse_as(path, text, true)
    }

    /// Like [`Config::parse`], for a process whose certificates may all
    /// come from another source (`heim-ingress`: the cluster's Secrets), so
    /// that neither `[[certificate]]` nor `[acme]` is required.
    pub fn parse_as(
        path: &Path,
        text: &str,
        certificates_required: bool,
    ) -> Result<Config, ConfigErrors> {
        let mut cx = Cx {
            file: path.to_path_buf(),
            text,
            errors: Vec::new(),
            agent_names: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = match e.message().trim() {
                    "" => "invalid TOML".to_string(),
                    m => m.to_string(),
                };
                let key = cx.key_at(&span);
                cx.err(&span, key, message);
                return Err(ConfigErrors(cx.errors));
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let server = cx.server(&raw.server);
        let defaults = RouteDefaults::from_raw(&mut cx, raw.server.get_ref());
        let certificates = raw
            .certificate
            .iter()
            .enumerate()
            .map(|(i, c)| cx.certificate(i, c, &base))
            .collect::<Vec<_>>();
        if certificates_required && certificates.is_empty() && raw.acme.is_none() {
            cx.err(
                &raw.server.span(),
                "certificate".into(),
                "at least one [[certificate]], or an [acme] section, is needed to serve https"
                    .into(),
            );
        }
        let auth = raw.auth.as_ref().and_then(|a| cx.auth(a, &base));
        let agents = cx.agents(&raw, &base);
        let mut routes = Vec::new();
        let mut route_lines = Vec::new();
        for (i, r) in raw.route.iter().enumerate() {
            if let Some(spec) = cx.route(i, r, &defaults, raw.auth.is_some(), &base) {
                routes.push(spec);
                route_lines.push(cx.line(&r.span()));
            }
        }
        let acme = cx.acme(&raw, &base);
        let ingress = cx.ingress(&raw);
        let default_certificate = raw
            .server
            .get_ref()
            .default_certificate
            .as_ref()
            .and_then(|d| match valid_host(d.get_ref()) {
                Some(h) => Some((h, cx.line(&d.span()))),
                None => {
                    cx.err(
                        &d.span(),
                        "server.default_certificate".into(),
                        format!("{:?} is not a host name", d.get_ref()),
                    );
                    None
                }
            });
        if cx.errors.is_empty() {
            if let Some(server) = server {
                return Ok(Config {
                    path: path.to_path_buf(),
                    server,
                    certificates,
                    routes,
                    route_lines,
                    auth,
                    acme,
                    default_certificate,
                    route_defaults: defaults,
                    ingress,
                    agents,
                });
            }
        }
        Err(ConfigErrors(cx.errors))
    }

    /// A config error anchored at route `index` (for problems found later,
    /// such as duplicates when the table is compiled).
    pub fn route_error(&self, index: usize, message: String) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: self.route_lines.get(index).copied().unwrap_or(0),
            key: format!("route[{index}]"),
            message,
        }
    }
}

/// The `[server]` keys that are defaults of every route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteDefaults {
    pub upstream: UpstreamLimits,
    /// `server.max_body_bytes`; 0 means no limit.
    pub max_body_bytes: u64,
}

impl RouteDefaults {
    fn from_raw(cx: &mut Cx, s: &RawServer) -> Self {
        let upstream = UpstreamLimits {
            connect_timeout: cx.duration_or(
                "server.connect_timeout",
                &s.connect_timeout,
                Duration::from_secs(5),
            ),
            response_timeout: cx.duration_or(
                "server.response_timeout",
                &s.response_timeout,
                Duration::from_secs(60),
            ),
            idle_timeout: cx.duration_or(
                "server.upstream_idle_timeout",
                &s.upstream_idle_timeout,
                Duration::from_secs(60),
            ),
            max_connections: cx.int_in(
                "server.upstream_max_connections",
                &s.upstream_max_connections,
                1..1_000_001,
                256,
            ) as usize,
            queue_size: cx.int_in(
                "server.upstream_queue_size",
                &s.upstream_queue_size,
                0..10_000_001,
                4096,
            ) as usize,
        };
        Self {
            upstream,
            max_body_bytes: cx.size_or("server.max_body_bytes", &s.max_body_bytes, 1 << 20),
        }
    }
}

/// Validation context: the source text (for line numbers) and the errors so far.
struct Cx<'a> {
    file: PathBuf,
    text: &'a str,
    errors: Vec<ConfigError>,
    /// `[[agent]]` names, for the routes that name one.
    agent_names: Vec<String>,
}

impl Cx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// The key written on the line of `span` (`key = value`), or the line itself.
    /// The key written on the line of `span` (`key = value`), or the line
    /// itself; `(toml)` when the line names nothing (blank, or `= value`).
    fn key_at(&self, span: &Range<usize>) -> String {
        let line = self.line(span);
        let text = self.text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let key = match text.split_once('=') {
            Some((k, _)) => k.trim(),
            None => text.trim(),
        };
        if key.is_empty() {
            "(toml)".to_string()
        } else {
            key.to_string()
        }
    }

    fn err(&mut self, span: &Range<usize>, key: String, message: String) {
        let line = self.line(span);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            key,
            message,
        });
    }

    fn addr(&mut self, key: &str, v: &Spanned<String>) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    &v.span(),
                    key.into(),
                    format!("{:?} is not an IP:port address", v.get_ref()),
                );
                None
            }
        }
    }

    fn duration_or(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let Some(v) = v else { return default };
        match parse_duration(v.get_ref()) {
            Some(d) if !d.is_zero() && d <= MAX_DURATION => d,
            _ => {
                self.err(
                    &v.span(),
                    key.into(),
                    format!(
                        "{:?} is not a duration above zero and at most a year (e.g. \"500ms\", \"10s\", \"2m\")",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn size_or(&mut self, key: &str, v: &Option<Spanned<ByteSize>>, default: u64) -> u64 {
        let Some(v) = v else { return default };
        let parsed = match v.get_ref() {
            ByteSize::Bytes(n) => u64::try_from(*n).ok(),
            ByteSize::Text(t) => parse_size(t),
        };
        match parsed {
            Some(n) => n,
            None => {
                self.err(
                    &v.span(),
                    key.into(),
                    "not a size: a number of bytes or e.g. \"64k\", \"10m\", \"1g\"".into(),
                );
                default
            }
        }
    }

    fn int_in(
        &mut self,
        key: &str,
        v: &Option<Spanned<i64>>,
        range: Range<i64>,
        default: i64,
    ) -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if range.contains(&n) {
            n
        } else {
            self.err(
                &v.span(),
                key.into(),
                format!("{n} is out of range {}..{}", range.start, range.end - 1),
            );
            default
        }
    }

    fn server(&mut self, raw: &Spanned<RawServer>) -> Option<ServerSettings> {
        let s = raw.get_ref();
        let https_listen = self.addr("server.https_listen", &s.https_listen);
        let http_listen = s
            .http_listen
            .as_ref()
            .map(|v| self.addr("server.http_listen", v));
        let admin_listen = s
            .admin_listen
            .as_ref()
            .map(|v| self.addr("server.admin_listen", v));
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i64;
        let workers = self.int_in("server.workers", &s.workers, 1..1025, cores) as usize;
        let max_connections = self.int_in(
            "server.max_connections",
            &s.max_connections,
            1..10_000_001,
            50_000,
        ) as usize;
        let handshake_timeout = self.duration_or(
            "server.handshake_timeout",
            &s.handshake_timeout,
            Duration::from_secs(10),
        );
        let request_head_timeout = self.duration_or(
            "server.request_head_timeout",
            &s.request_head_timeout,
            Duration::from_secs(30),
        );
        let drain_timeout = self.duration_or(
            "server.drain_timeout",
            &s.drain_timeout,
            Duration::from_secs(30),
        );
        let max_header_bytes =
            self.size_or("server.max_header_bytes", &s.max_header_bytes, 64 * 1024);
        if !(8192..=1 << 20).contains(&max_header_bytes) {
            if let Some(v) = &s.max_header_bytes {
                self.err(
                    &v.span(),
                    "server.max_header_bytes".into(),
                    "must be between 8k and 1m".into(),
                );
            }
        }
        let keepalive_requests = self.int_in(
            "server.keepalive_requests",
            &s.keepalive_requests,
            1..1_000_000_001,
            1000,
        ) as u64;
        let websocket_idle_timeout = s.websocket_idle_timeout.as_ref().map(|v| {
            self.duration_or(
                "server.websocket_idle_timeout",
                &Some(v.clone()),
                Duration::ZERO,
            )
        });
        let mut trusted = Vec::new();
        if let Some(list) = &s.trusted_proxies {
            for net in list.get_ref() {
                match net.parse::<IpNet>() {
                    Ok(n) => trusted.push(n),
                    Err(why) => self.err(
                        &list.span(),
                        "server.trusted_proxies".into(),
                        format!("{net:?}: {why}"),
                    ),
                }
            }
        }
        let proxy_protocol = s.proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted.is_empty() {
            self.err(
                &raw.span(),
                "server.proxy_protocol".into(),
                "needs server.trusted_proxies: the balancers' addresses, e.g. [\"10.0.0.0/8\"]"
                    .into(),
            );
        }
        let https_listen = https_listen?;
        let default_port = i64::from(https_listen.port());
        // 0 (listening on port 0, e.g. in tests): the port the listener gets.
        let https_port =
            self.int_in("server.https_port", &s.https_port, 1..65536, default_port) as u16;
        Some(ServerSettings {
            https_listen,
            http_listen: http_listen.flatten(),
            admin_listen: admin_listen.flatten(),
            workers,
            https_port,
            max_connections,
            handshake_timeout,
            request_head_timeout,
            max_header_bytes: max_header_bytes as usize,
            drain_timeout,
            access_log: s.access_log.unwrap_or(true),
            keepalive_requests,
            websocket_idle_timeout,
            proxy_protocol,
            trusted_proxies: TrustedProxies::new(trusted),
        })
    }

    fn certificate(
        &mut self,
        i: usize,
        raw: &Spanned<RawCertificate>,
        base: &Path,
    ) -> CertificateSpec {
        let c = raw.get_ref();
        let mut hosts = Vec::new();
        if let Some(h) = &c.hosts {
            for name in h.get_ref() {
                match valid_host(name) {
                    Some(n) => hosts.push(n),
                    None => self.err(
                        &h.span(),
                        format!("certificate[{i}].hosts"),
                        format!("{name:?} is not a host name or *.wildcard"),
                    ),
                }
            }
        }
        CertificateSpec {
            cert_file: base.join(c.cert_file.get_ref()),
            key_file: base.join(c.key_file.get_ref()),
            hosts,
            line: self.line(&raw.span()),
            index: i,
        }
    }

    /// `[acme]` and the routes with `acme = true`.
    fn acme(&mut self, raw: &RawConfig, base: &Path) -> Option<AcmeSpec> {
        let wanted: Vec<(usize, &Spanned<RawRoute>)> = raw
            .route
            .iter()
            .enumerate()
            .filter(|(_, r)| r.get_ref().acme.as_ref().is_some_and(|a| *a.get_ref()))
            .collect();
        let Some(spanned) = &raw.acme else {
            for (i, r) in wanted {
                let span = r.get_ref().acme.as_ref().map_or(r.span(), |a| a.span());
                self.err(
                    &span,
                    format!("route[{i}].acme"),
                    "needs an [acme] section (directory, contact, challenge)".into(),
                );
            }
            return None;
        };
        let a = spanned.get_ref();
        let before = self.errors.len();
        let directory = a.directory.get_ref().trim().to_string();
        let dir_ok = directory
            .parse::<http::Uri>()
            .ok()
            .is_some_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
        if !dir_ok {
            self.err(
                &a.directory.span(),
                "acme.directory".into(),
                format!(
                    "{directory:?} is not an https:// URL of an ACME directory (Let's Encrypt: \"https://acme-v02.api.letsencrypt.org/directory\")"
                ),
            );
        }
        let contact = a
            .contact
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default();
        for c in &contact {
            let ok = c
                .strip_prefix("mailto:")
                .is_some_and(|addr| addr.contains('@') && !addr.contains([' ', ',']));
            if !ok {
                self.err(
                    &a.contact.as_ref().map_or(spanned.span(), |c| c.span()),
                    "acme.contact".into(),
                    format!("{c:?} is not a \"mailto:name@example.com\" address"),
                );
            }
        }
        let challenge = match &a.challenge {
            None => ChallengeKind::Http01,
            Some(c) => ChallengeKind::parse(c.get_ref()).unwrap_or_else(|| {
                self.err(
                    &c.span(),
                    "acme.challenge".into(),
                    format!(
                        "{:?} is not one of \"http-01\", \"tls-alpn-01\", \"dns-01\"",
                        c.get_ref()
                    ),
                );
                ChallengeKind::Http01
            }),
        };
        let challenge_span = a.challenge.as_ref().map_or(spanned.span(), |c| c.span());
        if challenge == ChallengeKind::Http01 && raw.server.get_ref().http_listen.is_none() {
            self.err(
                &challenge_span,
                "acme.challenge".into(),
                "http-01 is answered on the http listener: set server.http_listen (port 80 from outside), or use \"tls-alpn-01\"".into(),
            );
        }
        let mut domains: Vec<String> = Vec::new();
        let mut add = |cx: &mut Self, name: &str, span: &Range<usize>, key: String| {
            let Some(h) = valid_host(name) else {
                cx.err(
                    span,
                    key,
                    format!("{name:?} is not a host name or *.wildcard"),
                );
                return;
            };
            if h.starts_with("*.") && challenge != ChallengeKind::Dns01 {
                cx.err(
                    span,
                    key,
                    format!(
                        "{h:?} is a wildcard: ACME issues wildcards only by DNS-01 (acme.challenge = \"dns-01\"), not {}",
                        challenge.as_str()
                    ),
                );
                return;
            }
            if !domains.contains(&h) {
                domains.push(h);
            }
        };
        if let Some(list) = &a.domains {
            for d in list.get_ref() {
                add(self, d, &list.span(), "acme.domains".into());
            }
        }
        for (i, r) in wanted {
            let route = r.get_ref();
            let span = route.acme.as_ref().map_or(r.span(), |a| a.span());
            match &route.host {
                Some(h) => add(self, h.get_ref(), &span, format!("route[{i}].acme")),
                None => self.err(
                    &span,
                    format!("route[{i}].acme"),
                    "a route without `host` has no name to get a certificate for".into(),
                ),
            }
        }
        if domains.is_empty() {
            self.err(
                &spanned.span(),
                "acme.domains".into(),
                "names no domain, and no route has `acme = true`".into(),
            );
        }
        let dns = match (&a.dns, challenge) {
            (Some(d), _) => self.acme_dns(d, base),
            (None, ChallengeKind::Dns01) => {
                self.err(
                    &challenge_span,
                    "acme.dns".into(),
                    "dns-01 needs an [acme.dns] section (provider = \"rfc2136\" or \"cloudflare\")"
                        .into(),
                );
                None
            }
            (None, _) => None,
        };
        if self.errors.len() > before {
            return None;
        }
        Some(AcmeSpec {
            directory,
            contact,
            storage_dir: base.join(a.storage_dir.as_deref().unwrap_or("/var/lib/heim/acme")),
            challenge,
            ca_file: a.ca_file.as_ref().map(|f| base.join(f)),
            domains,
            dns,
            line: self.line(&spanned.span()),
        })
    }

    fn agents(&mut self, raw: &RawConfig, base: &Path) -> Vec<AgentSpec> {
        let mut agents = Vec::new();
        for (i, a) in raw.agent.iter().enumerate() {
            let ar = a.get_ref();
            let name = ar.name.get_ref();
            if !heim_tunnel_wire::valid_name(name) {
                self.err(
                    &ar.name.span(),
                    format!("agent[{i}].name"),
                    format!("{name:?} is not {}", heim_tunnel_wire::NAME_RULE),
                );
                continue;
            }
            if self.agent_names.contains(name) {
                self.err(
                    &ar.name.span(),
                    format!("agent[{i}].name"),
                    format!("agent {name:?} is declared twice (one agent name, one token; run several agents with the same token)"),
                );
                continue;
            }
            self.agent_names.push(name.clone());
            let token = match (&ar.token_sha256, &ar.token_file) {
                (Some(h), None) => match decode_sha256(h.get_ref()) {
                    Some(d) => AgentToken::Sha256(d),
                    None => {
                        self.err(
                            &h.span(),
                            format!("agent[{i}].token_sha256"),
                            "is not 64 hex digits (sha256sum of the token file)".into(),
                        );
                        continue;
                    }
                },
                (None, Some(f)) => AgentToken::File(base.join(f)),
                _ => {
                    self.err(
                        &a.span(),
                        format!("agent[{i}]"),
                        "needs one of `token_sha256` or `token_file`".into(),
                    );
                    continue;
                }
            };
            agents.push(AgentSpec {
                name: name.clone(),
                token,
                line: self.line(&a.span()),
            });
        }
        agents
    }

    /// `agent` and `service` of route `i`.
    fn agent_backend(
        &mut self,
        i: usize,
        agent: &Spanned<String>,
        service: &Option<Spanned<String>>,
    ) -> Option<Backend> {
        if !self.agent_names.contains(agent.get_ref()) {
            self.err(
                &agent.span(),
                format!("route[{i}].agent"),
                format!(
                    "no [[agent]] is named {:?} (declare it with its token)",
                    agent.get_ref()
                ),
            );
            return None;
        }
        let Some(service) = service else {
            self.err(
                &agent.span(),
                format!("route[{i}].service"),
                "an agent route names the agent's service, e.g. `service = \"ssh\"`".into(),
            );
            return None;
        };
        if !heim_tunnel_wire::valid_name(service.get_ref()) {
            self.err(
                &service.span(),
                format!("route[{i}].service"),
                format!(
                    "{:?} is not {}",
                    service.get_ref(),
                    heim_tunnel_wire::NAME_RULE
                ),
            );
            return None;
        }
        Some(Backend::Agent {
            agent: agent.get_ref().clone(),
            service: service.get_ref().clone(),
        })
    }

    fn ingress(&mut self, raw: &RawConfig) -> IngressSettings {
        let allow_external_name = raw
            .ingress
            .as_ref()
            .and_then(|i| i.get_ref().allow_external_name)
            .unwrap_or(false);
        let default_policy = raw
            .ingress
            .as_ref()
            .and_then(|i| i.get_ref().default_policy.as_ref())
            .map_or(DefaultPolicy::Deny, |p| {
                self.default_policy(p, "ingress.default_policy", raw.auth.is_some())
            });
        let nginx_default_policy = raw
            .ingress_nginx
            .as_ref()
            .and_then(|i| i.get_ref().default_policy.as_ref())
            .map_or(DefaultPolicy::Deny, |p| {
                self.default_policy(p, "ingress_nginx.default_policy", raw.auth.is_some())
            });
        let nginx_interpret_snippets = raw
            .ingress_nginx
            .as_ref()
            .and_then(|i| i.get_ref().interpret_snippets)
            .unwrap_or(false);
        IngressSettings {
            default_policy,
            nginx_default_policy,
            nginx_interpret_snippets,
            allow_external_name,
        }
    }

    /// `deny`, `public` or (with sign-in) `any-authenticated`.
    fn default_policy(&mut self, p: &Spanned<String>, key: &str, have_auth: bool) -> DefaultPolicy {
        match p.get_ref().as_str() {
            "deny" => DefaultPolicy::Deny,
            "public" => DefaultPolicy::Public,
            "any-authenticated" if have_auth => DefaultPolicy::AnyAuthenticated,
            "any-authenticated" => {
                self.err(
                    &p.span(),
                    key.into(),
                    "\"any-authenticated\" needs sign-in: add an [auth] table with a provider"
                        .into(),
                );
                DefaultPolicy::Deny
            }
            other => {
                self.err(
                    &p.span(),
                    key.into(),
                    format!("{other:?} is not one of \"deny\", \"public\", \"any-authenticated\""),
                );
                DefaultPolicy::Deny
            }
        }
    }

    fn acme_dns(&mut self, raw: &Spanned<RawAcmeDns>, base: &Path) -> Option<DnsConfig> {
        let d = raw.get_ref();
        let span = raw.span();
        let need = |cx: &mut Self, v: &Option<String>, key: &str| -> Option<String> {
            if v.is_none() {
                cx.err(
                    &span,
                    format!("acme.dns.{key}"),
                    format!("provider {:?} needs {key}", d.provider.get_ref()),
                );
            }
            v.clone()
        };
        let provider = match d.provider.get_ref().as_str() {
            "rfc2136" => {
                let server = match &d.server {
                    Some(s) => self.addr("acme.dns.server", s),
                    None => {
                        self.err(
                            &span,
                            "acme.dns.server".into(),
                            "provider \"rfc2136\" needs server (\"ip:port\" of the primary)".into(),
                        );
                        None
                    }
                };
                let key_name = need(self, &d.tsig_key_name, "tsig_key_name");
                let secret = need(self, &d.tsig_secret_file, "tsig_secret_file");
                let algorithm = match &d.tsig_algorithm {
                    None => "hmac-sha256".to_string(),
                    Some(a) if matches!(a.get_ref().as_str(), "hmac-sha256" | "hmac-sha512") => {
                        a.get_ref().clone()
                    }
                    Some(a) => {
                        self.err(
                            &a.span(),
                            "acme.dns.tsig_algorithm".into(),
                            format!(
                                "{:?} is not one of \"hmac-sha256\", \"hmac-sha512\"",
                                a.get_ref()
                            ),
                        );
                        return None;
                    }
                };
                DnsProviderSpec::Rfc2136 {
                    server: server?,
                    tsig_key_name: key_name?,
                    tsig_algorithm: algorithm,
                    tsig_secret_file: base.join(secret?),
                }
            }
            "cloudflare" => {
                let token = need(self, &d.api_token_file, "api_token_file");
                let api_url = match &d.api_url {
                    None => "https://api.cloudflare.com/client/v4".to_string(),
                    Some(u) => {
                        let url = u.get_ref().trim_end_matches('/').to_string();
                        let ok = url.parse::<http::Uri>().ok().is_some_and(|p| {
                            p.scheme_str() == Some("https")
                                || (p.scheme_str() == Some("http")
                                    && p.host().is_some_and(|h| {
                                        h == "localhost"
                                            || h.trim_matches(['[', ']'])
                                                .parse::<std::net::IpAddr>()
                                                .is_ok_and(|ip| ip.is_loopback())
                                    }))
                        });
                        if !ok {
                            self.err(
                                &u.span(),
                                "acme.dns.api_url".into(),
                                format!(
                                    "{url:?} is not an https:// URL (http:// only on loopback)"
                                ),
                            );
                        }
                        url
                    }
                };
                DnsProviderSpec::Cloudflare {
                    api_token_file: base.join(token?),
                    zone_id: d.zone_id.clone(),
                    api_url,
                }
            }
            other => {
                self.err(
                    &d.provider.span(),
                    "acme.dns.provider".into(),
                    format!("{other:?} is not one of \"rfc2136\", \"cloudflare\""),
                );
                return None;
            }
        };
        let mut check_servers = Vec::new();
        if let Some(list) = &d.check_servers {
            for a in list.get_ref() {
                match a.parse() {
                    Ok(addr) => check_servers.push(addr),
                    Err(_) => self.err(
                        &list.span(),
                        "acme.dns.check_servers".into(),
                        format!("{a:?} is not an \"ip:port\" address"),
                    ),
                }
            }
        }
        let propagation_timeout = self.duration_or(
            "acme.dns.propagation_timeout",
            &d.propagation_timeout,
            Duration::from_secs(120),
        );
        Some(DnsConfig {
            provider,
            check_servers,
            propagation_timeout,
        })
    }

    fn auth(&mut self, raw: &Spanned<RawAuth>, base: &Path) -> Option<AuthSpec> {
        let a = raw.get_ref();
        let before = self.errors.len();
        let auth_host = match valid_host(a.auth_host.get_ref()) {
            Some(h) if !h.starts_with("*.") => h,
            _ => {
                self.err(
                    &a.auth_host.span(),
                    "auth.auth_host".into(),
                    format!("{:?} is not a host name", a.auth_host.get_ref()),
                );
                String::new()
            }
        };
        let session_ttl = self.duration_or(
            "auth.session_ttl",
            &a.session_ttl,
            Duration::from_secs(12 * 3600),
        );
        let mut providers: Vec<ProviderSpec> = Vec::new();
        for (i, p) in a.provider.iter().enumerate() {
            let r = p.get_ref();
            let k = |name: &str| format!("auth.provider[{i}].{name}");
            let line = self.line(&p.span());
            let kind = match r.kind.get_ref().as_str() {
                "google" => ProviderKind::Google,
                "oidc" => ProviderKind::Oidc,
                "github" => ProviderKind::Github,
                "local" => ProviderKind::Local,
                other => {
                    self.err(
                        &r.kind.span(),
                        k("kind"),
                        format!(
                            "{other:?} is not one of \"google\", \"oidc\", \"github\", \"local\""
                        ),
                    );
                    continue;
                }
            };
            let name = r.name.get_ref().clone();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                self.err(
                    &r.name.span(),
                    k("name"),
                    "use letters, digits, - and _".into(),
                );
            } else if providers.iter().any(|q| q.name == name) {
                self.err(
                    &r.name.span(),
                    k("name"),
                    format!("a second provider named {name:?}"),
                );
            }
            let needs = |cx: &mut Self, present: bool, field: &str| {
                if !present {
                    cx.err(
                        &p.span(),
                        k(field),
                        format!("a {} provider needs {field}", r.kind.get_ref()),
                    );
                }
            };
            match kind {
                ProviderKind::Local => needs(self, r.users_file.is_some(), "users_file"),
                _ => {
                    needs(self, r.client_id.is_some(), "client_id");
                    needs(self, r.client_secret_file.is_some(), "client_secret_file");
                }
            }
            let issuer = match (kind, &r.issuer) {
                (ProviderKind::Google, None) => Some("https://accounts.google.com".to_string()),
                (ProviderKind::Oidc, None) => {
                    needs(self, false, "issuer");
                    None
                }
                (_, Some(iss)) => {
                    if !issuer_allowed(iss.get_ref()) {
                        self.err(
                            &iss.span(),
                            k("issuer"),
                            "must be an https:// URL (http:// only on a loopback address)".into(),
                        );
                    }
                    Some(iss.get_ref().trim_end_matches('/').to_string())
                }
                _ => None,
            };
            for (field, url) in [("api_url", &r.api_url), ("web_url", &r.web_url)] {
                if let Some(u) = url {
                    if !issuer_allowed(u.get_ref()) {
                        self.err(
                            &u.span(),
                            k(field),
                            "must be an https:// URL (http:// only on a loopback address)".into(),
                        );
                    }
                }
            }
            providers.push(ProviderSpec {
                name,
                kind,
                client_id: r.client_id.clone(),
                client_secret_file: r.client_secret_file.as_ref().map(|f| base.join(f)),
                issuer,
                scopes: r
                    .scopes
                    .clone()
                    .unwrap_or_else(|| ["openid", "email", "profile"].map(String::from).to_vec()),
                groups_claim: r.groups_claim.clone().unwrap_or_else(|| "groups".into()),
                hd: r.hd.clone(),
                api_url: r
                    .api_url
                    .as_ref()
                    .map(|u| u.get_ref().trim_end_matches('/').to_string()),
                web_url: r
                    .web_url
                    .as_ref()
                    .map(|u| u.get_ref().trim_end_matches('/').to_string()),
                users_file: r.users_file.as_ref().map(|f| base.join(f)),
                line,
            });
        }
        if a.provider.is_empty() {
            self.err(
                &raw.span(),
                "auth.provider".into(),
                "at least one [[auth.provider]] is needed".into(),
            );
        }
        if self.errors.len() > before {
            return None;
        }
        Some(AuthSpec {
            auth_host,
            cookie_secret_file: base.join(a.cookie_secret_file.get_ref()),
            previous_cookie_secret_files: a
                .previous_cookie_secret_files
                .iter()
                .map(|f| base.join(f))
                .collect(),
            session_ttl,
            signing_key_file: base.join(a.signing_key_file.get_ref()),
            providers,
            line: self.line(&raw.span()),
        })
    }

    /// The route's allow rules (`None`: it has none).
    fn access_rules(&mut self, i: usize, r: &RawRoute) -> Option<AccessRules> {
        let k = |name: &str| format!("route[{i}].{name}");
        let lower = |v: &Option<Spanned<Vec<String>>>| -> Vec<String> {
            v.as_ref()
                .map(|l| l.get_ref().iter().map(|s| s.to_ascii_lowercase()).collect())
                .unwrap_or_default()
        };
        let rules = AccessRules {
            any_authenticated: r
                .allow_any_authenticated
                .as_ref()
                .is_some_and(|b| *b.get_ref()),
            emails: lower(&r.allow_emails),
            domains: lower(&r.allow_domains),
            groups: r
                .allow_groups
                .as_ref()
                .map(|g| g.get_ref().clone())
                .unwrap_or_default(),
            github_orgs: lower(&r.allow_github_orgs),
            github_teams: lower(&r.allow_github_teams),
        };
        if let Some(emails) = &r.allow_emails {
            for e in emails.get_ref() {
                if crate::auth::policy::valid_email(e).is_none() {
                    self.err(
                        &emails.span(),
                        k("allow_emails"),
                        format!("{e:?} is not an email address"),
                    );
                }
            }
        }
        if let Some(teams) = &r.allow_github_teams {
            for t in teams.get_ref() {
                if !t
                    .split_once('/')
                    .is_some_and(|(o, t)| !o.is_empty() && !t.is_empty() && !t.contains('/'))
                {
                    self.err(
                        &teams.span(),
                        k("allow_github_teams"),
                        format!("{t:?} is not \"org/team\""),
                    );
                }
            }
        }
        (!rules.is_empty()).then_some(rules)
    }

    /// `identity_headers = { "X-WEBAUTH-USER" = "email" }`.
    fn identity_headers(
        &mut self,
        i: usize,
        r: &RawRoute,
    ) -> Vec<(http::HeaderName, IdentityField)> {
        let Some(map) = &r.identity_headers else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, field) in map.get_ref() {
            match identity_header(name, field) {
                Ok(h) => out.push(h),
                Err(why) => self.err(&map.span(), format!("route[{i}].identity_headers"), why),
            }
        }
        out
    }

    fn route(
        &mut self,
        i: usize,
        raw: &Spanned<RawRoute>,
        d: &RouteDefaults,
        have_auth: bool,
        base: &Path,
    ) -> Option<RouteSpec> {
        let r = raw.get_ref();
        let before = self.errors.len();
        let k = |name: &str| format!("route[{i}].{name}");
        let host = match &r.host {
            None => None,
            Some(h) => match valid_host(h.get_ref()) {
                Some(h) => Some(h),
                None => {
                    self.err(&h.span(), k("host"), format!("{:?} is not a host name or a one-label wildcard like \"*.example.com\"", h.get_ref()));
                    None
                }
            },
        };
        let path = match &r.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', ' ']) => {
                p.get_ref().clone()
            }
            Some(p) => {
                self.err(
                    &p.span(),
                    k("path"),
                    format!(
                        "{:?} must start with '/' and hold no '?', '#' or space",
                        p.get_ref()
                    ),
                );
                String::new()
            }
        };
        let path_type = match r.path_type.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None => PathMatch::Prefix,
            Some((_, "Prefix" | "ImplementationSpecific")) => PathMatch::Prefix,
            Some((_, "Exact")) => PathMatch::Exact,
            Some((p, other)) => {
                self.err(
                    &p.span(),
                    k("path_type"),
                    format!("{other:?} is not one of \"Prefix\", \"Exact\""),
                );
                PathMatch::Prefix
            }
        };
        let protocol = match r
            .upstream_protocol
            .as_ref()
            .map(|p| (p, p.get_ref().as_str()))
        {
            None | Some((_, "http1")) => UpstreamProtocol::Http1,
            Some((_, "h2c")) => UpstreamProtocol::H2c,
            Some((p, other)) => {
                self.err(
                    &p.span(),
                    k("upstream_protocol"),
                    format!("{other:?} is not one of \"http1\", \"h2c\""),
                );
                UpstreamProtocol::Http1
            }
        };
        let echo = r.echo.as_ref().is_some_and(|e| *e.get_ref());
        if let (Some(s), None) = (&r.service, &r.agent) {
            self.err(
                &s.span(),
                k("service"),
                "a service belongs to an agent: add `agent = \"NAME\"`".into(),
            );
        }
        let backend = match (&r.upstream, echo, &r.tcp, &r.agent) {
            (None, false, None, Some(a)) => self.agent_backend(i, a, &r.service),
            (None, false, Some(t), None) => match t.get_ref().parse::<SocketAddr>() {
                Ok(addr) => Some(Backend::Tcp(addr)),
                Err(_) => {
                    self.err(
                        &t.span(),
                        k("tcp"),
                        format!(
                            "{:?} is not an IP address and port, e.g. \"10.0.0.5:22\"",
                            t.get_ref()
                        ),
                    );
                    None
                }
            },
            (None, true, None, None) => Some(Backend::Echo),
            (None, false, None, None) => {
                self.err(
                    &raw.span(),
                    format!("route[{i}]"),
                    "needs `upstream = [\"http://host:port\"]`, `echo = true`, `tcp = \"host:port\"` or `agent`".into(),
                );
                None
            }
            (Some(u), false, None, None) => {
                let mut endpoints = Vec::new();
                if u.get_ref().is_empty() {
                    self.err(&u.span(), k("upstream"), "lists no upstream".into());
                }
                for url in u.get_ref() {
                    match parse_upstream(url) {
                        Ok(addr) => endpoints.push(addr),
                        Err(why) => self.err(&u.span(), k("upstream"), format!("{url:?}: {why}")),
                    }
                }
                let limits = UpstreamLimits {
                    connect_timeout: self.duration_or(
                        &k("connect_timeout"),
                        &r.connect_timeout,
                        d.upstream.connect_timeout,
                    ),
                    response_timeout: self.duration_or(
                        &k("response_timeout"),
                        &r.response_timeout,
                        d.upstream.response_timeout,
                    ),
                    ..d.upstream
                };
                Some(Backend::Upstream(UpstreamSpec {
                    endpoints,
                    protocol,
                    limits,
                    tls: None,
                }))
            }
            _ => {
                self.err(
                    &raw.span(),
                    format!("route[{i}]"),
                    "a route has one of `upstream`, `echo = true`, `tcp` or `agent`".into(),
                );
                None
            }
        };
        let max_body_bytes =
            self.size_or(&k("max_body_bytes"), &r.max_body_bytes, d.max_body_bytes);
        let rules = self.access_rules(i, r);
        let identity_headers = self.identity_headers(i, r);
        if rules.is_some() && r.public == Some(true) {
            self.err(
                &raw.span(),
                format!("route[{i}].public"),
                "a route is either public or has allow rules, not both".into(),
            );
        }
        let webhook = r.webhook.as_ref().map(|w| {
            let wr = w.get_ref();
            if wr.provider.get_ref() != "github" {
                self.err(
                    &wr.provider.span(),
                    format!("route[{i}].webhook.provider"),
                    format!("{:?} is not one of \"github\"", wr.provider.get_ref()),
                );
            }
            if rules.is_some() || r.public == Some(true) {
                self.err(
                    &w.span(),
                    format!("route[{i}].webhook"),
                    "a webhook route needs no user: drop public and the allow rules".into(),
                );
            }
            WebhookSpec {
                secret_file: base.join(&wr.secret_file),
                secret: Arc::from(Vec::new()),
            }
        });
        if rules.is_some() && !have_auth {
            self.err(
                &raw.span(),
                format!("route[{i}]"),
                "allow rules need sign-in: add an [auth] table with a provider".into(),
            );
        }
        let mut source_ranges = Vec::new();
        if let Some(list) = &r.allow_source_ranges {
            for net in list.get_ref() {
                match net.parse::<IpNet>() {
                    Ok(n) => source_ranges.push(n),
                    Err(why) => self.err(
                        &list.span(),
                        k("allow_source_ranges"),
                        format!("{net:?}: {why}"),
                    ),
                }
            }
        }
        if self.errors.len() > before {
            return None;
        }
        let policy = match (r.public == Some(true), rules, webhook) {
            (_, _, Some(w)) => Policy::Webhook(Arc::new(w)),
            (true, _, None) => Policy::Public,
            (false, Some(rules), None) => Policy::Allow(Arc::new(rules)),
            (false, None, None) => Policy::Deny,
        };
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or("*"), path));
        Some(RouteSpec {
            https_redirect: r.https_redirect.unwrap_or(true),
            max_body_bytes: Some(max_body_bytes).filter(|n| *n > 0),
            identity_headers,
            source_ranges,
            ..RouteSpec::new(name, host, path, path_type, backend?, policy)
        })
    }
}

/// An extra identity header: a header name (no hop-by-hop, no `_`, none of
/// [`NOT_IDENTITY`]) and `email`, `user` or `groups`.
pub fn identity_header(
    name: &str,
    field: &str,
) -> Result<(http::HeaderName, IdentityField), String> {
    let header = match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(h)
            if !crate::forward::headers::is_hop_by_hop(&h)
                && !name.contains('_')
                && !NOT_IDENTITY.contains(&h.as_str())
                && !NOT_IDENTITY_PREFIXES
                    .iter()
                    .any(|p| h.as_str().starts_with(p)) =>
        {
            h
        }
        _ => return Err(format!("{name:?} cannot be an identity header")),
    };
    let field = match field {
        "email" => IdentityField::Email,
        "user" => IdentityField::User,
        "groups" => IdentityField::Groups,
        other => {
            return Err(format!(
                "{other:?} is not one of \"email\", \"user\", \"groups\""
            ))
        }
    };
    Ok((header, field))
}

/// Headers that cannot carry an identity: heim would strip them from every
/// request.
const NOT_IDENTITY: &[&str] = &[
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "content-encoding",
    "set-cookie",
    "accept",
    "user-agent",
    "host",
    "origin",
    "referer",
    "range",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "x-csrf-token",
    // The forwarding headers heim sets itself (X-Forwarded-User, -Email and
    // -Groups, oauth2-proxy's identity headers, remain allowed).
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
];

/// Prefixes no identity header may start with: heim's own, WebSocket's and
/// webhook signatures (stripping them from every request would break the
/// routes that need them).
const NOT_IDENTITY_PREFIXES: &[&str] = &[
    "x-heim-",
    "sec-",
    "x-hub-signature",
    "x-github-",
    "if-",
    "accept-",
    "content-",
];

/// An issuer or API URL: https, or http on a loopback address (tests, a
/// provider beside heim).
fn issuer_allowed(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(h)) => {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Lowercases and checks a host name, or a one-label wildcard (`*.example.com`).
pub fn valid_host(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let rest = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    ok.then_some(lower)
}

/// Parses `http://host:port` (no path) into an upstream address.
pub fn parse_upstream(url: &str) -> Result<UpstreamAddr, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err(
            "the scheme must be http:// (set upstream_protocol = \"h2c\" for HTTP/2)".into(),
        );
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err("an upstream is host:port only, with no path".into());
    }
    let auth = uri.authority().ok_or("no host")?;
    let port = auth.port_u16().unwrap_or(80);
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    Ok(match host.parse::<std::net::IpAddr>() {
        Ok(ip) => UpstreamAddr::Socket(SocketAddr::new(ip, port)),
        Err(_) => UpstreamAddr::Name {
            host: host.to_string(),
            port,
        },
    })
}

/// `"500ms"`, `"10s"`, `"2m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// The longest duration any key takes: past it, deadlines would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400 * 365);

/// `"512"`, `"64k"`, `"10m"`, `"1g"` (powers of 1024, like nginx).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_may_not_shadow_what_routes_need() {
        for ok in [
            "X-WEBAUTH-USER",
            "X-Forwarded-User",
            "X-Forwarded-Email",
            "Remote-User",
            "X-Auth-Request-Email",
        ] {
            assert!(identity_header(ok, "email").is_ok(), "{ok}");
        }
        for refused in [
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "Sec-WebSocket-Key",
            "X-Hub-Signature-256",
            "X-Heim-User",
            "Host",
            "Origin",
            "Content-Length",
            "If-None-Match",
            "Connection",
            "X_User",
        ] {
            assert!(identity_header(refused, "email").is_err(), "{refused}");
        }
        assert!(identity_header("X-User", "phone").is_err());
    }

    const GOOD: &str = r#"
[server]
https_listen = "127.0.0.1:8443"
http_listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9901"
workers = 1

[[certificate]]
cert_file = "certs/local.pem"
key_file = "certs/local-key.pem"

[[route]]
host = "App.Example.com"
upstream = ["http://127.0.0.1:3000", "http://backend.local:8080"]
public = true

[[route]]
host = "*.example.com"
path = "/api"
path_type = "Exact"
echo = true
"#;

    #[test]
    fn agents_and_their_routes() {
        let hash = "ab".repeat(32);
        let text = format!(
            "{GOOD}\n[[agent]]\nname = \"desk\"\ntoken_sha256 = \"{hash}\"\n\n[[agent]]\nname = \"lab\"\ntoken_file = \"lab.token\"\n\n[[route]]\nhost = \"desk.ssh.example.com\"\nagent = \"desk\"\nservice = \"ssh\"\npublic = true\n"
        );
        let c = Config::parse(Path::new("/etc/heim/heim.toml"), &text).expect("valid");
        assert_eq!(c.agents[0].token, AgentToken::Sha256([0xab; 32]));
        assert_eq!(
            c.agents[1].token,
            AgentToken::File("/etc/heim/lab.token".into())
        );
        assert_eq!(
            c.routes[2].backend,
            Backend::Agent {
                agent: "desk".into(),
                service: "ssh".into()
            }
        );
        let bad = [
            (text.replace(&hash, "abc"), "agent[0].token_sha256"),
            (text.replace("\"lab\"", "\"desk\""), "agent[1].name"),
            (
                text.replace("name = \"lab\"", "name = \"Lab!\""),
                "agent[1].name",
            ),
            (text.replace("token_file = \"lab.token\"\n", ""), "agent[1]"),
            (text.replace("service = \"ssh\"\n", ""), "route[2].service"),
            (
                text.replace("service = \"ssh\"", "service = \"s.s\""),
                "route[2].service",
            ),
            (text.replace("agent = \"desk\"\n", ""), "route[2].service"),
        ];
        for (t, key) in bad {
            let errs = Config::parse(Path::new("heim.toml"), &t).expect_err(key).0;
            assert!(errs.iter().any(|e| e.key == key), "{key}: {errs:?}");
        }
    }

    #[test]
    fn good_config_compiles() {
        let c = Config::parse(Path::new("/etc/heim/heim.toml"), GOOD).expect("valid");
        assert_eq!(c.server.workers, 1);
        assert_eq!(c.server.https_port, 8443);
        assert_eq!(
            c.certificates[0].cert_file,
            Path::new("/etc/heim/certs/local.pem")
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].host.as_deref(), Some("app.example.com"));
        assert_eq!(c.routes[0].policy, Policy::Public);
        assert_eq!(c.routes[1].policy, Policy::Deny, "no policy means deny");
        assert_eq!(c.routes[1].path_type, PathMatch::Exact);
        assert_eq!(c.route_lines, vec![12, 17]);
        assert_eq!(c.server.keepalive_requests, 1000, "nginx's default");
        assert_eq!(c.server.websocket_idle_timeout, None, "off by default");
        assert!(!c.server.proxy_protocol);
        assert!(c.server.trusted_proxies.is_empty());
        let Backend::Upstream(g) = &c.routes[0].backend else {
            panic!("upstream")
        };
        assert_eq!(g.limits.max_connections, 256);
        assert_eq!(g.limits.queue_size, 4096);
        assert_eq!(
            g.endpoints[1],
            UpstreamAddr::Name {
                host: "backend.local".into(),
                port: 8080
            }
        );
    }

    /// Each bad input names its line and key.
    /// GOOD with `[acme]` (and no [[certificate]]) holding `acme`.
    fn with_acme(acme: &str) -> Result<Config, ConfigErrors> {
        let text = GOOD.replace(
            "[[certificate]]\ncert_file = \"certs/local.pem\"\nkey_file = \"certs/local-key.pem\"\n",
            &format!("[acme]\n{acme}\n"),
        );
        Config::parse(Path::new("/etc/heim/heim.toml"), &text)
    }

    fn acme_errors(acme: &str) -> Vec<(String, String)> {
        match with_acme(acme) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.key, e.message)).collect(),
        }
    }

    #[test]
    fn acme_section_is_checked() {
        let base =
            "directory = \"https://acme.test/dir\"\ncontact = [\"mailto:ops@example.com\"]\n";
        // Valid: no [[certificate]] is needed when ACME names the hosts.
        let c = with_acme(&format!("{base}domains = [\"App.example.com\"]")).expect("valid");
        let a = c.acme.expect("acme");
        assert_eq!(a.domains, ["app.example.com"]);
        assert_eq!(a.challenge, crate::acme::ChallengeKind::Http01);
        assert_eq!(a.storage_dir, Path::new("/var/lib/heim/acme"));
        let cases: &[(&str, &str, &str)] = &[
            ("directory = \"http://acme.test/dir\"\ndomains = [\"a.example.com\"]", "acme.directory", "https://"),
            (&format!("{base}contact = [\"ops@example.com\"]"), "contact", "duplicate"),
            ("directory = \"https://acme.test/dir\"\ncontact = [\"ops@example.com\"]\ndomains = [\"a.example.com\"]", "acme.contact", "mailto:"),
            (&format!("{base}domains = [\"*.ssh.example.com\"]"), "acme.domains", "DNS-01"),
            (&format!("{base}challenge = \"tls-alpn-01\"\ndomains = [\"*.ssh.example.com\"]"), "acme.domains", "DNS-01"),
            (&format!("{base}challenge = \"dns-02\"\ndomains = [\"a.example.com\"]"), "acme.challenge", "dns-01"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]"), "acme.dns", "[acme.dns]"),
            (base, "acme.domains", "no domain"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"heim.\""), "acme.dns.tsig_secret_file", "needs"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"rfc2136\"\ntsig_key_name = \"heim.\"\ntsig_secret_file = \"t\""), "acme.dns.server", "needs"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"heim.\"\ntsig_secret_file = \"t\"\ntsig_algorithm = \"hmac-md5\""), "acme.dns.tsig_algorithm", "hmac-sha256"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"cloudflare\""), "acme.dns.api_token_file", "needs"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"cloudflare\"\napi_token_file = \"t\"\napi_url = \"http://api.example.com\""), "acme.dns.api_url", "loopback"),
            (&format!("{base}challenge = \"dns-01\"\ndomains = [\"*.ssh.example.com\"]\n[acme.dns]\nprovider = \"route53\""), "acme.dns.provider", "cloudflare"),
        ];
        for (acme, key, needle) in cases {
            let errs = acme_errors(acme);
            assert!(
                errs.iter().any(|(k, m)| k == key && m.contains(needle)),
                "{acme}\n-> {errs:?}"
            );
        }
        // A route with `acme = true` adds its host; without [acme] it is an error.
        let text = GOOD.replace("public = true\n", "public = true\nacme = true\n");
        let errs = Config::parse(Path::new("/etc/heim/heim.toml"), &text)
            .expect_err("no [acme]")
            .0;
        assert!(errs.iter().any(|e| e.key == "route[0].acme"), "{errs:?}");
        let text = with_acme_routes(&format!("{base}domains = [\"b.example.com\"]"));
        let a = text.acme.expect("acme");
        assert_eq!(a.domains, ["b.example.com", "app.example.com"]);
    }

    fn with_acme_routes(acme: &str) -> Config {
        let text = GOOD
            .replace(
                "[[certificate]]\ncert_file = \"certs/local.pem\"\nkey_file = \"certs/local-key.pem\"\n",
                &format!("[acme]\n{acme}\n"),
            )
            .replace("public = true\n", "public = true\nacme = true\n");
        Config::parse(Path::new("/etc/heim/heim.toml"), &text).expect("valid")
    }

    #[test]
    fn http01_needs_the_http_listener() {
        let text = GOOD
            .replace("http_listen = \"127.0.0.1:8080\"\n", "")
            .replace(
                "[[certificate]]\ncert_file = \"certs/local.pem\"\nkey_file = \"certs/local-key.pem\"\n",
                "[acme]\ndirectory = \"https://acme.test/dir\"\ndomains = [\"a.example.com\"]\n",
            );
        let errs = Config::parse(Path::new("/etc/heim/heim.toml"), &text)
            .expect_err("refused")
            .0;
        assert!(
            errs.iter()
                .any(|e| e.key == "acme.challenge" && e.message.contains("http_listen")),
            "{errs:?}"
        );
        let ok = text.replace("[acme]\n", "[acme]\nchallenge = \"tls-alpn-01\"\n");
        assert!(Config::parse(Path::new("/etc/heim/heim.toml"), &ok).is_ok());
    }

    #[test]
    fn a_config_without_certificates_or_acme_is_refused() {
        let text = GOOD.replace(
            "[[certificate]]\ncert_file = \"certs/local.pem\"\nkey_file = \"certs/local-key.pem\"\n",
            "",
        );
        let errs = Config::parse(Path::new("/etc/heim/heim.toml"), &text)
            .expect_err("refused")
            .0;
        assert!(
            errs.iter()
                .any(|e| e.key == "certificate" && e.message.contains("[acme]")),
            "{errs:?}"
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "https_listen = \"127.0.0.1:8443\"",
                "https_listen = \"nope\"",
                3,
                "server.https_listen",
            ),
            ("workers = 1", "workers = 0", 6, "server.workers"),
            ("workers = 1", "workers = 1\nbogus = 2", 7, "bogus"),
            (
                "workers = 1",
                "workers = 1\nhandshake_timeout = \"0s\"",
                7,
                "server.handshake_timeout",
            ),
            (
                "workers = 1",
                "workers = 1\nmax_header_bytes = \"4g\"",
                7,
                "server.max_header_bytes",
            ),
            ("workers = 1", "workers = \"two\"", 6, "workers"),
            (
                "host = \"App.Example.com\"",
                "host = \"a b\"",
                13,
                "route[0].host",
            ),
            (
                "host = \"*.example.com\"",
                "host = \"*.*.example.com\"",
                18,
                "route[1].host",
            ),
            (
                "path_type = \"Exact\"",
                "path_type = \"Regex\"",
                20,
                "route[1].path_type",
            ),
            ("path = \"/api\"", "path = \"api\"", 19, "route[1].path"),
            (
                "\"http://127.0.0.1:3000\",",
                "\"https://127.0.0.1:3000\",",
                14,
                "route[0].upstream",
            ),
            (
                "echo = true",
                "echo = true\nupstream = [\"http://127.0.0.1:1\"]",
                17,
                "route[1]",
            ),
            (
                "echo = true",
                "tcp = \"127.0.0.1:22\"\nservice = \"ssh\"",
                22,
                "route[1].service",
            ),
            (
                "echo = true",
                "agent = \"nobody\"\nservice = \"ssh\"",
                21,
                "route[1].agent",
            ),
            ("echo = true", "", 17, "route[1]"),
            (
                "workers = 1",
                "workers = 1\ntrusted_proxies = [\"10.0.0.0/33\"]",
                7,
                "server.trusted_proxies",
            ),
            (
                "workers = 1",
                "workers = 1\nproxy_protocol = true",
                2,
                "server.proxy_protocol",
            ),
            (
                "workers = 1",
                "workers = 1\nkeepalive_requests = 0",
                7,
                "server.keepalive_requests",
            ),
            (
                "workers = 1",
                "workers = 1\nupstream_max_connections = 0",
                7,
                "server.upstream_max_connections",
            ),
            (
                "workers = 1",
                "workers = 1\nwebsocket_idle_timeout = \"0s\"",
                7,
                "server.websocket_idle_timeout",
            ),
            (
                "public = true",
                "public = true\nmax_body_bytes = \"ten\"",
                16,
                "route[0].max_body_bytes",
            ),
        ];
        for (from, to, line, key) in cases {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let errs = Config::parse(Path::new("heim.toml"), &text)
                .expect_err(to)
                .0;
            assert!(
                errs.iter().any(|e| e.line == *line && e.key == *key),
                "{to:?}: want line {line} key {key}, got {errs:?}"
            );
            assert!(errs.iter().all(|e| e.file == Path::new("heim.toml")));
        }
    }

    /// Inputs the fuzzer found: every error still names a key and says
    /// something.
    #[test]
    fn odd_toml_errors_name_a_key() {
        for text in [
            "\n[[route]]\necho = true\n",
            "[server]\n= \"127.0.0.1:8443\"\n",
            "[server]\nhttps_listen = \"127.0.0.1:8443\"\nbogus = 1\n[[route]]\nhost = ",
        ] {
            let errs = Config::parse(Path::new("heim.toml"), text)
                .expect_err(text)
                .0;
            for e in errs {
                assert!(
                    !e.key.is_empty() && !e.message.is_empty(),
                    "{text:?}: {e:?}"
                );
                assert!(e.line >= 1, "{text:?}: {e:?}");
            }
        }
    }

    #[test]
    fn all_errors_are_reported() {
        let text = GOOD
            .replace("workers = 1", "workers = 0")
            .replace("path = \"/api\"", "path = \"api\"");
        let errs = Config::parse(Path::new("heim.toml"), &text)
            .expect_err("two errors")
            .0;
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
    }
}
