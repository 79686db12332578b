//! The agent hub: `heim-tunnel agent`s dial in at `/.heim/agent/connect`
//! (the protocol is in `heim_tunnel_wire`), are checked against their
//! `[[agent]]` token, and their connections wait here for user streams.
//!
//! After the upgrade heim is the HTTP/2 *client* on the connection the
//! agent dialed: each user's `CONNECT` becomes one h2 `CONNECT SERVICE:0`
//! stream on one of the named agent's connections (the one with the fewest
//! open streams). h2 streams belong to their connection, so two agents can
//! never see each other's streams. A reload that removes an agent or
//! changes its token closes its connections at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::body::ProxyBody;
use crate::config::{AgentToken, ConfigError};
use crate::error::ProxyError;
use crate::rt::LocalExec;
use crate::state::Shared;
use heim_tunnel_wire as wire;

/// How long an agent may take to answer a new stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// h2 PINGs on idle agent connections, and how long a PONG may take.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Services one agent may announce.
const SERVICES_MAX: usize = 64;
/// The shortest agent token heim reads from a `token_file`.
const TOKEN_MIN: usize = 16;
/// Links one agent name may hold at once (its processes × proxies ×
/// `connections`).
const LINKS_MAX: usize = 64;

/// Each `[[agent]]`'s name and the SHA-256 of its token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keys(Vec<(String, [u8; 32])>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Reads the `token_file`s of `config`'s agents; errors name the agent.
pub fn keys(config: &crate::config::Config, errors: &mut Vec<ConfigError>) -> Keys {
    let mut keys = Vec::new();
    for (i, a) in config.agents.iter().enumerate() {
        let hash = match &a.token {
            AgentToken::Sha256(h) => *h,
            AgentToken::File(path) => match std::fs::read(path) {
                Ok(t) if t.trim_ascii().len() >= TOKEN_MIN => sha256(t.trim_ascii()),
                Ok(_) => {
                    errors.push(agent_error(
                        config,
                        i,
                        format!("{} holds fewer than {TOKEN_MIN} characters", path.display()),
                    ));
                    continue;
                }
                Err(e) => {
                    errors.push(agent_error(config, i, format!("{}: {e}", path.display())));
                    continue;
                }
            },
        };
        keys.push((a.name.clone(), hash));
    }
    Keys(keys)
}

fn agent_error(config: &crate::config::Config, i: usize, message: String) -> ConfigError {
    ConfigError {
        file: config.path.clone(),
        line: config.agents[i].line,
        key: format!("agent[{i}].token_file"),
        message,
    }
}

/// One agent connection.
struct Conn {
    id: u64,
    name: String,
    addr: SocketAddr,
    key: [u8; 32],
    services: Vec<String>,
    send: http2::SendRequest<Empty<Bytes>>,
    streams: AtomicUsize,
    /// Ends the connection, its streams with it (a reload withdrew the agent).
    kill: Notify,
}

/// The agent's side of a link, with a switch that fails every read and
/// write once thrown: the whole HTTP/2 connection ends, and every stream on
/// it, however busy.
struct Killable<T> {
    io: T,
    switch: Arc<KillSwitch>,
}

#[derive(Default)]
struct KillSwitch {
    killed: std::sync::atomic::AtomicBool,
    /// The tasks waiting to read or write, woken when the switch is thrown.
    wakers: Mutex<[Option<std::task::Waker>; 2]>,
}

impl KillSwitch {
    fn kill(&self) {
        self.killed.store(true, Relaxed);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// `Err` once thrown; else keeps `cx`'s waker in slot `i` (0 read, 1 write).
    fn check(&self, i: usize, cx: &Context<'_>) -> std::io::Result<()> {
        if self.killed.load(Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "agent withdrawn",
            ));
        }
        let mut w = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if !w[i].as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            w[i] = Some(cx.waker().clone());
        }
        drop(w);
        // Thrown between the check and the waker's registration.
        if self.killed.load(Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "agent withdrawn",
            ));
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Killable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.switch.check(0, cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Killable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.switch.check(1, cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.switch.check(1, cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The agents' keys and their live connections, by name.
#[derive(Default)]
pub struct Registry {
    keys: Mutex<Keys>,
    conns: Mutex<HashMap<String, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// One stream counted on its connection, from the moment it is asked for
/// until it ends (or the asking is given up).
struct Counted(Arc<Conn>);

impl Counted {
    fn new(conn: Arc<Conn>) -> Counted {
        conn.streams.fetch_add(1, Relaxed);
        Counted(conn)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Relaxed);
    }
}

/// A stream to an agent, counted on its connection while it lives.
pub struct AgentStream {
    io: TokioIo<hyper::upgrade::Upgraded>,
    _counted: Counted,
}

impl AsyncRead for AgentStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Registry {
    pub fn new(keys: Keys) -> Registry {
        Registry {
            keys: Mutex::new(keys),
            ..Registry::default()
        }
    }

    /// Takes a reload's keys; connections of agents that are gone or whose
    /// token changed are closed.
    pub fn configure(&self, keys: Keys) {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for list in conns.values() {
            for c in list {
                if !keys.0.iter().any(|(n, k)| *n == c.name && *k == c.key) {
                    tracing::warn!(agent = %c.name, address = %c.addr, "agent withdrawn by a reload: closing its connection");
                    c.kill.notify_one();
                }
            }
        }
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    /// The key of agent `name` if `token` is its token (compared in
    /// constant time; an unknown name costs the same).
    fn check(&self, name: &str, token: &[u8]) -> Option<[u8; 32]> {
        let hash = sha256(token);
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let (known, key) = match keys.0.iter().find(|(n, _)| n == name) {
            Some((_, k)) => (true, *k),
            None => (false, [0xff; 32]),
        };
        (crate::auth::constant_time_eq(&hash, &key) && known).then_some(key)
    }

    /// How many connections agent `name` has now.
    pub fn connected(&self, name: &str) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.get(name).map_or(0, Vec::len)
    }

    /// Registers `conn` if its key is still the agent's (a reload may have
    /// withdrawn it since the token was checked; `configure` takes the same
    /// locks in the same order, so one of the two sees the other).
    fn add(&self, conn: Arc<Conn>) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys
            .0
            .iter()
            .any(|(n, k)| *n == conn.name && *k == conn.key)
        {
            return false;
        }
        drop(keys);
        conns.entry(conn.name.clone()).or_default().push(conn);
        true
    }

    fn remove(&self, conn: &Conn) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = conns.get_mut(&conn.name) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                conns.remove(&conn.name);
            }
        }
    }

    /// Opens a stream to `service` of agent `agent` for `user`, on the
    /// live connection with the fewest streams (the next one when that
    /// fails). The error says why, for the user's 502.
    pub async fn open(
        &self,
        agent: &str,
        service: &str,
        user: Option<&str>,
    ) -> Result<AgentStream, ProxyError> {
        let mut candidates = {
            let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.get(agent).cloned().unwrap_or_default()
        };
        if candidates.is_empty() {
            return Err(ProxyError::Agent(format!("agent {agent} is not connected")));
        }
        candidates.sort_by_key(|c| c.streams.load(Relaxed));
        let mut why = format!("agent {agent} is not connected");
        for c in candidates {
            if !c.services.is_empty() && !c.services.iter().any(|s| s == service) {
                why = format!("agent {agent} does not expose service {service}");
                continue;
            }
            let counted = Counted::new(c.clone());
            match tokio::time::timeout(STREAM_TIMEOUT, ask(&c, service, user)).await {
                Ok(Ok(io)) => {
                    return Ok(AgentStream {
                        io: TokioIo::new(io),
                        _counted: counted,
                    })
                }
                Ok(Err(e)) => why = e.unwrap_or_else(|| format!("agent {agent} is not connected")),
                Err(_) => why = format!("agent {agent} did not answer within {STREAM_TIMEOUT:?}"),
            }
        }
        Err(ProxyError::Agent(why))
    }
}

/// One `CONNECT SERVICE:0` on `c`: the stream, or the agent's reason
/// (`None` when the connection itself failed).
async fn ask(
    c: &Conn,
    service: &str,
    user: Option<&str>,
) -> Result<hyper::upgrade::Upgraded, Option<String>> {
    let mut send = c.send.clone();
    send.ready().await.map_err(|_| None)?;
    let mut req = Request::connect(wire::stream_authority(service));
    if let Some(v) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
        req = req.header(wire::USER, v);
    }
    let req = req.body(Empty::new()).map_err(|_| None)?;
    let resp = send.send_request(req).await.map_err(|e| {
        tracing::debug!(agent = %c.name, error = %e, "agent stream failed");
        None
    })?;
    if resp.status() != StatusCode::OK {
        let reason = resp
            .headers()
            .get(wire::REASON)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("refused the stream");
        return Err(Some(format!("agent {}: {reason}", c.name)));
    }
    hyper::upgrade::on(resp).await.map_err(|_| None)
}

/// `GET /.heim/agent/connect` with `Upgrade: heim-agent/1`: checks the
/// agent's token, answers 101, and keeps the connection as an h2 client
/// in the registry until it ends.
pub fn accept(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let h = req.headers();
    let upgrade_ok = h
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(wire::PROTOCOL));
    if req.method() != Method::GET || req.version() != http::Version::HTTP_11 || !upgrade_ok {
        return Err(ProxyError::BadRequest(
            "agents connect with an HTTP/1.1 GET and Upgrade: heim-agent/1",
        ));
    }
    let name = h
        .get(wire::AGENT_NAME)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let token = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    let registry = &shared.agents;
    let key = match wire::valid_name(&name) {
        true => registry.check(&name, token),
        false => None,
    };
    let Some(key) = key else {
        shared.metrics.agent_refused.fetch_add(1, Relaxed);
        tracing::warn!(agent = %name.escape_debug(), address = %peer, "agent refused: unknown name or wrong token");
        return Err(ProxyError::Unauthorized);
    };
    if shared.draining.load(Relaxed) {
        return Err(ProxyError::NoUpstream);
    }
    if registry.connected(&name) >= LINKS_MAX {
        tracing::warn!(agent = %name, address = %peer, "agent refused: {LINKS_MAX} links are open already");
        return Err(ProxyError::UpstreamBusy);
    }
    let services: Vec<String> = h
        .get(wire::AGENT_SERVICES)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| wire::valid_name(s))
        .take(SERVICES_MAX)
        .map(str::to_owned)
        .collect();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::task::spawn_local(async move {
        let io = match on_upgrade.await {
            Ok(io) => io,
            Err(e) => return tracing::debug!(agent = %name, error = %e, "agent upgrade failed"),
        };
        let switch = Arc::new(KillSwitch::default());
        let io = TokioIo::new(Killable {
            io: TokioIo::new(io),
            switch: switch.clone(),
        });
        let handshake = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .initial_stream_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::CONNECTION_WINDOW)
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(io)
            .await;
        let (send, connection) = match handshake {
            Ok(h) => h,
            Err(e) => {
                return tracing::warn!(agent = %name, address = %peer, error = %e, "agent HTTP/2 handshake failed")
            }
        };
        let registry = &shared.agents;
        let conn = Arc::new(Conn {
            id: registry.next_id.fetch_add(1, Relaxed),
            name,
            addr: peer,
            key,
            services,
            send,
            streams: AtomicUsize::new(0),
            kill: Notify::new(),
        });
        if !registry.add(conn.clone()) {
            switch.kill();
            return tracing::warn!(agent = %conn.name, address = %peer, "agent withdrawn by a reload while connecting: closed");
        }
        let m = &shared.metrics;
        m.agents_connected.fetch_add(1, Relaxed);
        m.agent_connects.fetch_add(1, Relaxed);
        tracing::info!(agent = %conn.name, address = %peer, services = ?conn.services, "agent connected");
        let since = Instant::now();
        tokio::pin!(connection);
        let why = tokio::select! {
            r = connection.as_mut() => match r {
                Ok(()) => "closed".to_owned(),
                Err(e) => e.to_string(),
            },
            _ = conn.kill.notified() => {
                // Every stream ends with the link; the dispatcher then ends.
                switch.kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                "withdrawn by a reload".to_owned()
            }
        };
        registry.remove(&conn);
        m.agents_connected.fetch_sub(1, Relaxed);
        tracing::info!(
            agent = %conn.name,
            address = %peer,
            connected_secs = since.elapsed().as_secs(),
            reason = %why,
            "agent disconnected"
        );
    });
    let mut resp = Response::new(ProxyBody::local(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        HeaderValue::from_static(wire::PROTOCOL),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_authority_is_a_connect_uri() {
        let uri: http::Uri = wire::stream_authority("ssh").parse().expect("parses");
        assert_eq!(uri.authority().map(|a| a.as_str()), Some("ssh:0"));
        assert!(uri.scheme().is_none() && uri.path_and_query().is_none());
    }

    #[test]
    fn tokens_are_checked_per_name() {
        let keys = Keys(vec![
            ("desk".into(), sha256(b"desk-token")),
            ("lab".into(), sha256(b"lab-token")),
        ]);
        let r = Registry::new(keys);
        assert!(r.check("desk", b"desk-token").is_some());
        assert!(
            r.check("desk", b"lab-token").is_none(),
            "another agent's token"
        );
        assert!(r.check("desk", b"").is_none());
        assert!(r.check("nobody", b"desk-token").is_none());
    }
}
