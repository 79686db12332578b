//! `heim-tunnel agent --config agent.toml`: the connector on a machine heim
//! cannot reach. It dials out to heim (`/.heim/agent/connect`, see
//! `heim_tunnel_wire`), and on each connection it dialed it is the HTTP/2
//! server: every stream heim opens names one of the services of the
//! config, and the agent dials that local address and copies both ways.
//! Nothing else is reachable through it, whatever heim asks.
//!
//! `connections` links go to every address the proxy's name resolves to;
//! each reconnects with jittered exponential backoff. SIGTERM (or ^C)
//! drains: heim gets a GOAWAY (no new streams), open streams run to their
//! end, then the agent exits; a second signal exits at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use toml::Spanned;

use crate::client::{Failure, Proxy, EXIT_PROXY_UNREACHABLE, EXIT_USAGE};
use heim_tunnel_wire as wire;

/// h2 PINGs on an idle link, and how long a PONG may take.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long dialing a local service may take (less than heim's wait for
/// the stream, so that the reason reaches the user).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a link may take from TCP connect to the upgrade.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The shortest token the agent accepts.
const TOKEN_MIN: usize = 16;
/// Reconnect backoff: first wait, cap, and how long a link must have
/// lived for the next failure to start from the first wait again.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// User connections one link may carry at once.
const MAX_STREAMS: u32 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    proxy: Option<Spanned<String>>,
    proxies: Option<Spanned<Vec<String>>>,
    name: Spanned<String>,
    token_file: Spanned<String>,
    ca_file: Option<Spanned<String>>,
    connections: Option<Spanned<i64>>,
    services: Spanned<BTreeMap<String, Spanned<String>>>,
}

/// A checked agent config.
pub struct Config {
    proxies: Vec<Proxy>,
    name: String,
    token: String,
    connections: usize,
    services: BTreeMap<String, String>,
}

/// `file:line: key: message`, as the proxy's config errors read.
fn config_error(path: &Path, text: &str, at: usize, key: &str, message: &str) -> Failure {
    let line = text[..at.min(text.len())].matches('\n').count() + 1;
    Failure::new(
        EXIT_USAGE,
        format!("{}:{line}: {key}: {message}", path.display()),
    )
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Failure> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Config, Failure> {
        let err = |at: usize, key: &str, message: &str| config_error(path, text, at, key, message);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            err(at, "(toml)", e.message().trim())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let name = raw.name.get_ref();
        if !wire::valid_name(name) {
            return Err(err(
                raw.name.span().start,
                "name",
                &format!("is not {} (the proxy's [[agent]] name)", wire::NAME_RULE),
            ));
        }
        let ca_file = raw.ca_file.as_ref().map(|c| base.join(c.get_ref()));
        let urls: Vec<(usize, String)> = match (&raw.proxy, &raw.proxies) {
            (Some(p), None) => vec![(p.span().start, p.get_ref().clone())],
            (None, Some(ps)) if !ps.get_ref().is_empty() => ps
                .get_ref()
                .iter()
                .map(|p| (ps.span().start, p.clone()))
                .collect(),
            (Some(p), Some(_)) => {
                return Err(err(
                    p.span().start,
                    "proxy",
                    "give `proxy` or `proxies`, not both",
                ))
            }
            _ => {
                return Err(err(
                    0,
                    "proxy",
                    "needs `proxy = \"https://HOST\"` (or `proxies = [...]`)",
                ))
            }
        };
        let mut proxies = Vec::new();
        for (at, url) in urls {
            let args = crate::ProxyArgs {
                proxy: Some(url),
                ca_file: ca_file.clone(),
            };
            proxies.push(Proxy::from_args(&args, None).map_err(|f| err(at, "proxy", &f.message))?);
        }
        let connections = match &raw.connections {
            None => 2,
            Some(c) if (1..=16).contains(c.get_ref()) => *c.get_ref() as usize,
            Some(c) => return Err(err(c.span().start, "connections", "must be 1 to 16")),
        };
        let mut services = BTreeMap::new();
        for (service, addr) in raw.services.get_ref() {
            let key = format!("services.{service}");
            if !wire::valid_name(service) {
                return Err(err(
                    addr.span().start,
                    &key,
                    &format!("a service name is {}", wire::NAME_RULE),
                ));
            }
            let a = addr.get_ref();
            let ok = match a.rsplit_once(':') {
                Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0),
                None => false,
            };
            if !ok {
                return Err(err(
                    addr.span().start,
                    &key,
                    &format!("{a:?} is not HOST:PORT, e.g. \"127.0.0.1:22\""),
                ));
            }
            services.insert(service.clone(), a.clone());
        }
        if services.is_empty() {
            return Err(err(
                raw.services.span().start,
                "services",
                "lists no service (e.g. ssh = \"127.0.0.1:22\")",
            ));
        }
        let token_path = base.join(raw.token_file.get_ref());
        let token = read_token(&token_path)
            .map_err(|m| err(raw.token_file.span().start, "token_file", &m))?;
        Ok(Config {
            proxies,
            name: name.clone(),
            token,
            connections,
            services,
        })
    }
}

fn read_token(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if token.len() < TOKEN_MIN {
        return Err(format!(
            "{}: the token is shorter than {TOKEN_MIN} characters (make one with: head -c 32 /dev/urandom | base64 | tr -d '=+/\\n')",
            path.display()
        ));
    }
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the token is one line of printable ASCII",
            path.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "heim-tunnel agent: warning: {} is readable by other users (chmod 600 it)",
                    path.display()
                );
            }
        }
    }
    Ok(token.to_owned())
}

/// What every link shares.
struct Agent {
    config: Config,
    /// Streams open now, over every link.
    streams: AtomicUsize,
}

/// Runs the agent until SIGTERM / ^C has drained it.
pub async fn run(path: &Path) -> Result<(), Failure> {
    let config = Config::load(path)?;
    let agent = Arc::new(Agent {
        config,
        streams: AtomicUsize::new(0),
    });
    let (drain_tx, drain) = watch::channel(false);
    // One task per proxy: a name that does not resolve holds up no other.
    let mut links = tokio::task::JoinSet::new();
    for i in 0..agent.config.proxies.len() {
        links.spawn(serve_proxy(agent.clone(), i, drain.clone()));
    }
    eprintln!(
        "heim-tunnel agent: {} serving {} through {}",
        agent.config.name,
        agent
            .config
            .services
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        agent
            .config
            .proxies
            .iter()
            .map(|p| p.origin.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot handle SIGTERM: {e}")))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while links.join_next().await.is_some() {} } => return Ok(()),
    }
    eprintln!(
        "heim-tunnel agent: draining: no new streams; {} open stream(s) finish first (signal again to quit now)",
        agent.streams.load(Relaxed)
    );
    let _ = drain_tx.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while links.join_next().await.is_some() {} } => {}
    }
    eprintln!("heim-tunnel agent: stopped");
    Ok(())
}

/// Every link to proxy `i`: `connections` to each of its addresses.
async fn serve_proxy(agent: Arc<Agent>, i: usize, mut drain: watch::Receiver<bool>) {
    let addrs = resolve(&agent.config.proxies[i], &mut drain).await;
    let mut links = tokio::task::JoinSet::new();
    for addr in addrs {
        for _ in 0..agent.config.connections {
            links.spawn(link(agent.clone(), i, addr, drain.clone()));
        }
    }
    while links.join_next().await.is_some() {}
}

/// Every address of `proxy`'s host, retried with backoff until it
/// resolves (or the agent drains).
async fn resolve(proxy: &Proxy, drain: &mut watch::Receiver<bool>) -> Vec<SocketAddr> {
    let mut backoff = Backoff::default();
    loop {
        match tokio::net::lookup_host((proxy.host.as_str(), proxy.port)).await {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort();
                addrs.dedup();
                if !addrs.is_empty() {
                    return addrs;
                }
            }
            Err(e) => eprintln!("heim-tunnel agent: cannot resolve {}: {e}", proxy.host),
        }
        if *drain.borrow() {
            return Vec::new();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = drain.changed() => return Vec::new(),
        }
    }
}

/// Jittered exponential backoff: each wait is between half and all of a
/// ceiling that doubles up to [`BACKOFF_MAX`].
#[derive(Default)]
struct Backoff {
    ceiling: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let ceiling = match self.ceiling {
            None => BACKOFF_FIRST,
            Some(c) => (c * 2).min(BACKOFF_MAX),
        };
        self.ceiling = Some(ceiling);
        let mut r = [0u8; 2];
        let _ = aws_lc_rs::rand::fill(&mut r);
        let frac = f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
        ceiling.mul_f64(0.5 + frac / 2.0)
    }

    fn reset(&mut self) {
        self.ceiling = None;
    }
}

/// One link to one address of proxy `i`, reconnecting until drained.
async fn link(agent: Arc<Agent>, i: usize, addr: SocketAddr, mut drain: watch::Receiver<bool>) {
    let proxy = &agent.config.proxies[i];
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        match session(&agent, proxy, addr, drain.clone()).await {
            Ok(()) => eprintln!(
                "heim-tunnel agent: link to {} ({addr}) closed",
                proxy.origin
            ),
            Err(f) => eprintln!("heim-tunnel agent: {}", f.message),
        }
        if *drain.borrow() {
            return;
        }
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff.reset();
        }
        let wait = backoff.next();
        eprintln!(
            "heim-tunnel agent: reconnecting to {} ({addr}) in {:.1}s",
            proxy.origin,
            wait.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = drain.changed() => return,
        }
    }
}

/// Dials heim, upgrades, and serves heim's streams until the link ends
/// (or, drained, until its open streams have).
async fn session(
    agent: &Arc<Agent>,
    proxy: &Proxy,
    addr: SocketAddr,
    mut drain: watch::Receiver<bool>,
) -> Result<(), Failure> {
    let io = tokio::select! {
        r = tokio::time::timeout(SETUP_TIMEOUT, dial(agent, proxy, addr)) => match r {
            Ok(io) => io?,
            Err(_) => {
                return Err(Failure::new(
                    EXIT_PROXY_UNREACHABLE,
                    format!("link to {} ({addr}) not up within {SETUP_TIMEOUT:?}", proxy.origin),
                ))
            }
        },
        _ = drain.changed() => return Ok(()),
    };
    eprintln!(
        "heim-tunnel agent: connected to {} ({addr}) as {}",
        proxy.origin, agent.config.name
    );
    let broken = broken(proxy, addr);
    let agent2 = agent.clone();
    let service = hyper::service::service_fn(move |req| stream(agent2.clone(), req));
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(wire::STREAM_WINDOW)
        .initial_connection_window_size(wire::CONNECTION_WINDOW)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS)
        .serve_connection(io, service);
    tokio::pin!(conn);
    if !*drain.borrow() {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(broken),
            _ = drain.changed() => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(broken)
}

/// A link's failure, as its log line says it.
fn broken(proxy: &Proxy, addr: SocketAddr) -> impl Fn(hyper::Error) -> Failure + Copy + '_ {
    move |e| {
        Failure::new(
            EXIT_PROXY_UNREACHABLE,
            format!("link to {} ({addr}) broke: {e}", proxy.origin),
        )
    }
}

/// TLS to `addr`, `GET /.heim/agent/connect`, the upgrade: the link's
/// connection, ready to serve heim's streams.
async fn dial(
    agent: &Agent,
    proxy: &Proxy,
    addr: SocketAddr,
) -> Result<hyper::upgrade::Upgraded, Failure> {
    let c = &agent.config;
    let broken = broken(proxy, addr);
    let tls = proxy.connect_to(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(broken)?;
    tokio::spawn(conn.with_upgrades());
    let services = c.services.keys().cloned().collect::<Vec<_>>().join(",");
    let req = Request::get(wire::CONNECT_PATH)
        .header(http::header::HOST, proxy.host_header())
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, wire::PROTOCOL)
        .header(http::header::AUTHORIZATION, format!("Bearer {}", c.token))
        .header(wire::AGENT_NAME, c.name.as_str())
        .header(wire::AGENT_SERVICES, services)
        .header(
            http::header::USER_AGENT,
            concat!("heim-tunnel/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
    let resp = send.send_request(req).await.map_err(broken)?;
    match resp.status() {
        StatusCode::SWITCHING_PROTOCOLS => hyper::upgrade::on(resp).await.map_err(broken),
        StatusCode::UNAUTHORIZED => Err(Failure::new(
            EXIT_USAGE,
            format!(
                "{} refused agent {:?}: its token is not the one the proxy's [[agent]] of that name expects",
                proxy.origin, c.name
            ),
        )),
        s => Err(Failure::new(
            EXIT_PROXY_UNREACHABLE,
            format!(
                "{} answered {s} to the agent's connect (is it heim, with this agent in its config?)",
                proxy.origin
            ),
        )),
    }
}

fn refuse(status: StatusCode, reason: String) -> Response<Empty<Bytes>> {
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&reason) {
        resp.headers_mut().insert(wire::REASON, v);
    }
    resp
}

/// One stream from heim: `CONNECT SERVICE:0`, dialed only to the address
/// this agent's own config gives that service.
async fn stream(
    agent: Arc<Agent>,
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    if req.method() != Method::CONNECT {
        return Ok(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "agents take CONNECT only".into(),
        ));
    }
    let service = req
        .uri()
        .authority()
        .and_then(|a| wire::service_of(a.as_str()));
    let Some((service, target)) = service.and_then(|s| agent.config.services.get_key_value(s))
    else {
        let asked = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            format!(
                "does not expose service {}",
                asked.strip_suffix(":0").unwrap_or(asked).escape_debug()
            ),
        ));
    };
    let user = req
        .headers()
        .get(wire::USER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target.as_str())).await {
        Ok(Ok(tcp)) => tcp,
        // The address stays in the agent's log: heim's 502 may go to anyone
        // a public route admits.
        Ok(Err(e)) => {
            eprintln!("heim-tunnel agent: {service} ({target}) for {user}: {e}");
            return Ok(refuse(
                StatusCode::BAD_GATEWAY,
                format!("service {service} refused the connection"),
            ));
        }
        Err(_) => {
            eprintln!("heim-tunnel agent: {service} ({target}) for {user}: no answer within {DIAL_TIMEOUT:?}");
            return Ok(refuse(
                StatusCode::GATEWAY_TIMEOUT,
                format!("service {service} did not answer"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let on_upgrade = hyper::upgrade::on(&mut req);
    agent.streams.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let mut up = TokioIo::new(up);
            let mut tcp = tcp;
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut up,
                &mut tcp,
                wire::COPY_BUFFER,
                wire::COPY_BUFFER,
            )
            .await;
        }
        agent.streams.fetch_sub(1, Relaxed);
    });
    Ok(Response::new(Empty::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let dir = std::env::temp_dir().join(format!("heim-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "secret-token-0123456789\n").unwrap();
        Config::parse(&dir.join("agent.toml"), text).map_err(|f| f.message)
    }

    const GOOD: &str = "proxy = \"https://tunnel.example.com\"\nname = \"desk\"\ntoken_file = \"token\"\n[services]\nssh = \"127.0.0.1:22\"\n";

    #[test]
    fn reads_a_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.name, "desk");
        assert_eq!(c.token, "secret-token-0123456789");
        assert_eq!(c.connections, 2);
        assert_eq!(c.services["ssh"], "127.0.0.1:22");
        assert_eq!(c.proxies[0].origin, "https://tunnel.example.com");
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (GOOD.replace("desk", "Desk!"), ":2: name:"),
            (
                GOOD.replace("127.0.0.1:22", "127.0.0.1"),
                ":5: services.ssh:",
            ),
            (GOOD.replace("ssh =", "\"s s\" ="), ":5: services.s s:"),
            (GOOD.replace("token\"", "missing\""), ":3: token_file:"),
            (GOOD.replace("https://", "http://"), ":1: proxy:"),
            (format!("{GOOD}connections = 0\n"), "(toml)"),
            (
                GOOD.replace("[services]\n", "connections = 99\n[services]\n"),
                ":4: connections:",
            ),
            (format!("{GOOD}extra = 1\n"), "(toml)"),
        ];
        for (text, want) in cases {
            let e = parse(&text).err().expect(&text);
            assert!(e.contains(want), "{want:?} in {e:?}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        let waits: Vec<Duration> = (0..12).map(|_| b.next()).collect();
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX));
        assert!(waits.last().unwrap() >= &(BACKOFF_MAX / 2));
        b.reset();
        assert!(b.next() <= BACKOFF_FIRST);
    }
}
