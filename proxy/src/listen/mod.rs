//! Listening: sockets, worker threads, accepting, the TLS handshake, and
//! serving HTTP/1.1 or HTTP/2 on each connection until it ends or drains.
//!
//! heim runs one thread per worker, each with a current-thread runtime and
//! its own `SO_REUSEPORT` socket per listener, so the kernel spreads
//! connections over workers and nothing on a connection's path is shared
//! but read-mostly snapshots (see `state`). Limits enforced here: the
//! connection count, the handshake timeout, the request-head timeout
//! (slowloris; it also bounds keep-alive idleness), the header size, and
//! the end of connections their requests asked for (`keepalive_requests`,
//! too many HTTP/2 resets: see `goaway`). A PROXY protocol header from a
//! trusted balancer is read first (`proxy_protocol`). An idle HTTP/1
//! connection parks without hyper's buffers (see `park`).

pub mod goaway;
pub mod passthrough;
pub mod proxy_protocol;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerSettings;
use crate::metrics::ClientErrorKind;
use crate::park::{self, Parkable};
use crate::rt::LocalExec;
use crate::service::{self, Closing, ConnCtx, TlsInfo};
use crate::state::{OpenConnection, Shared};
use goaway::{GoawayIo, GoawayTrigger};

/// One worker's sockets.
pub struct WorkerSockets {
    pub https: std::net::TcpListener,
    pub http: Option<std::net::TcpListener>,
}

/// Binds `count` sockets to one address with `SO_REUSEPORT`. Port 0 picks a
/// free port once; the rest bind that same port.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(4096)?;
        let l: std::net::TcpListener = sock.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Starts a worker thread serving `sockets` until the drain signal.
pub fn spawn_worker(
    index: usize,
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    sockets: WorkerSockets,
    drain: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("heim-worker-{index}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, worker = index, "cannot start worker runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let https = match TcpListener::from_std(sockets.https) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!(error = %e, "cannot register https listener"),
                };
                tokio::task::spawn_local(accept_loop(
                    https,
                    Some(TlsAcceptor::from(tls)),
                    shared.clone(),
                    drain.clone(),
                ));
                if let Some(http) = sockets.http {
                    match TcpListener::from_std(http) {
                        Ok(l) => {
                            tokio::task::spawn_local(accept_loop(
                                l,
                                None,
                                shared.clone(),
                                drain.clone(),
                            ));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot register http listener"),
                    }
                }
                shared.workers_ready.fetch_add(1, SeqCst);
                // Connections finish on their own during a drain; the process
                // exits from the control thread once they are gone.
                std::future::pending::<()>().await;
            });
        })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.wait_for(|d| *d) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, remote)) => {
                let max = shared.settings.load().max_connections as u64;
                if shared.metrics.connections_open.load(Relaxed) >= max {
                    shared.metrics.connections_refused.fetch_add(1, Relaxed);
                    drop(tcp);
                    continue;
                }
                // Counted before the task starts, so a burst cannot overshoot.
                let open = OpenConnection::new(&shared);
                tokio::task::spawn_local(serve_connection(
                    open,
                    tcp,
                    remote,
                    tls.clone(),
                    shared.clone(),
                    drain.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // rather than spin on a failing accept.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection(
    _open: OpenConnection,
    mut tcp: TcpStream,
    mut remote: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(remote);
    let settings = shared.settings.load_full();
    if settings.proxy_protocol {
        let peer = remote;
        let told = proxy_protocol::accept(
            &mut tcp,
            peer,
            &settings.trusted_proxies,
            settings.handshake_timeout,
        );
        match told.await {
            Ok(client) => remote = client,
            Err(e) => {
                shared.metrics.client_error(ClientErrorKind::ProxyProtocol);
                tracing::debug!(%peer, error = %e, "connection refused");
                return;
            }
        }
    }
    let Some(acceptor) = tls else {
        let ctx = Rc::new(ConnCtx::new(shared.clone(), remote, local, None));
        return serve_http1(tcp, ctx, &settings, drain, true).await;
    };
    // ingress-nginx's ssl-passthrough: a ClientHello for a passthrough host
    // goes to its pod unopened (only read when some route asks for it).
    let routes = shared.routes.load_full();
    if routes.has_passthrough() {
        let name = passthrough::peek_server_name(&tcp, settings.handshake_timeout).await;
        if let Some(route) = name.as_deref().and_then(|n| routes.passthrough(n)) {
            let route = route.clone();
            drop(routes);
            return passthrough::splice(tcp, &route, remote).await;
        }
    }
    drop(routes);
    // Boxed, like everything large and short-lived here: this task lives as
    // long as the connection, idle or not, and is as large as its largest state.
    let handshake = Box::pin(tokio::time::timeout(
        settings.handshake_timeout,
        acceptor.accept(tcp),
    ));
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            match crate::tls::is_no_certificate(&e) {
                true => &shared.metrics.tls_no_certificate,
                false => &shared.metrics.tls_handshakes_failed,
            }
            .fetch_add(1, Relaxed);
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshakes_failed.fetch_add(1, Relaxed);
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    shared.metrics.tls_handshakes_ok.fetch_add(1, Relaxed);
    let session = stream.get_ref().1;
    if session.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        // TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 §3).
        let mut stream = stream;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        return;
    }
    let alpn = match session.alpn_protocol() {
        Some(b"h2") => Some("h2"),
        Some(b"http/1.1") => Some("http/1.1"),
        _ => None,
    };
    let info = TlsInfo {
        sni: session.server_name().map(str::to_owned),
        alpn,
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        },
    };
    let ctx = Rc::new(ConnCtx::new(shared.clone(), remote, local, Some(info)));
    if alpn == Some("h2") {
        Box::pin(serve_http2(stream, ctx, &settings, drain)).await
    } else {
        // rustls gains nothing from vectored writes: let hyper flatten head
        // and body into one buffer, so they go out in one TLS record.
        // On the heap once: each layer below takes the stream by value, and
        // every move would otherwise keep another 1.2 KB slot in this task.
        serve_http1(Box::new(stream), ctx, &settings, drain, false).await
    }
}

/// HTTP/1.1 on `stream` until the connection ends or drains. While it is
/// idle it holds no hyper connection (see `park`).
async fn serve_http1<S>(
    mut stream: S,
    ctx: Rc<ConnCtx>,
    settings: &ServerSettings,
    mut drain: watch::Receiver<bool>,
    vectored: bool,
) where
    S: Parkable + Send + 'static,
{
    let idle = park::Idle::new();
    let seen = idle.clone();
    // Boxed: the request future is large, and hyper moves it around;
    // moving a pointer measured cheaper than the allocation it costs.
    let svc = service_fn(move |req: Request<Incoming>| {
        let active = seen.begin(!req.body().is_end_stream());
        let res = Box::pin(service::handle(req, ctx.clone()));
        async move {
            let res = res.await?;
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                active.upgrading();
            }
            Ok::<_, Infallible>(res.map(|body| park::Tracked { body, active }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_head_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(200)
        .writev(vectored);
    let mut svc = Some(svc);
    let mut replay = Bytes::new();
    loop {
        if replay.is_empty() && !stream.has_buffered_input() {
            // Parked, or not started: only the stream, until the client
            // sends something. Idle as long as hyper would allow.
            let deadline = idle.since() + settings.request_head_timeout;
            tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, stream.readable()) => {
                    if !matches!(r, Ok(Ok(()))) {
                        return;
                    }
                }
                _ = drain.wait_for(|d| *d) => return,
            }
        }
        let Some(service) = svc.take() else { return };
        let io = park::Io::new(stream, std::mem::take(&mut replay), &idle);
        let mut conn = Box::new(builder.serve_connection(io, service).with_upgrades());
        // `biased`: poll the connection first and skip select's per-poll
        // random number; the drain signal is checked on every wake-up anyway.
        let parked = tokio::select! {
            biased;
            p = park::until_idle(&mut *conn, &idle) => Some(p),
            _ = drain.wait_for(|d| *d) => None,
        };
        let Some(parked) = parked else {
            Pin::new(&mut *conn).graceful_shutdown();
            let _ = conn.await;
            return;
        };
        let Some(parts) = (if parked { conn.into_parts() } else { None }) else {
            return;
        };
        stream = parts.io.into_inner();
        // Even empty, hyper's leftover points into its 8 KiB read buffer
        // (request heads are split off it): keep only real bytes.
        if !parts.read_buf.is_empty() {
            replay = Bytes::copy_from_slice(&parts.read_buf);
        }
        svc = Some(parts.service);
    }
}

async fn serve_http2<I>(
    io: I,
    ctx: Rc<ConnCtx>,
    settings: &ServerSettings,
    mut drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let activity = ctx.clone();
    let goaway = GoawayTrigger::default();
    let io = TokioIo::new(GoawayIo::new(io, goaway.clone()));
    let svc = service_fn(move |req| Box::pin(service::handle(req, ctx.clone())));
    let mut builder = http2::Builder::new(LocalExec);
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(60));
    // Extended CONNECT (RFC 8441) for the names whose `/` is a tunnel
    // route: `CONNECT` with a `:protocol` opens a tunnel stream. Elsewhere
    // browsers would take the setting as leave to run WebSockets over
    // HTTP/2, which heim relays as HTTP/1.1 upgrades only.
    let tunnel_host = activity
        .tls
        .as_ref()
        .and_then(|t| t.sni.as_deref())
        .and_then(|sni| activity.shared.routes.load().lookup(sni, "/").cloned())
        .is_some_and(|r| r.spec.backend.is_tunnel());
    if tunnel_host {
        builder.enable_connect_protocol();
    }
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    // HTTP/2 has no request-head timer: a connection that starts no request
    // for a whole `request_head_timeout` and has none in flight is closed
    // (GOAWAY), so idle clients cannot hold `max_connections` forever.
    let mut idle_check = tokio::time::interval(settings.request_head_timeout);
    idle_check.tick().await;
    let mut seen = activity.requests_started.get();
    // Whatever ends the connection, its unanswered streams were not reset
    // by the client: they must not count against its reset budget.
    let _ended = Ended(&activity);
    let calm = |why: &str| {
        activity
            .shared
            .metrics
            .h2_calm_goaways
            .fetch_add(1, Relaxed);
        tracing::info!(
            remote = %activity.remote,
            resets = activity.requests_cancelled.get(),
            why,
            "HTTP/2 client reset too many streams: GOAWAY ENHANCE_YOUR_CALM"
        );
        goaway.trip();
    };
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            _ = drain.wait_for(|d| *d) => break,
            _ = activity.close_signal.notified() => match activity.closing.get() {
                Closing::Calm => {
                    calm("open");
                    // The GOAWAY goes out between two of hyper's frames; the
                    // connection then ends at once. Bounded, should the
                    // client stop reading.
                    let _ = tokio::time::timeout(settings.handshake_timeout, conn.as_mut()).await;
                    return;
                }
                Closing::Graceful => break,
                Closing::No => {}
            },
            _ = idle_check.tick() => {
                let now = activity.requests_started.get();
                if now == seen && activity.requests_in_flight.get() == 0 {
                    break;
                }
                seen = now;
            }
        }
    }
    // A graceful shutdown still accepts streams until the client answers
    // its PING: the reset budget keeps watching, and the whole of it is
    // bounded by `drain_timeout`, so a client that never answers cannot
    // keep the connection (and flood it) forever.
    conn.as_mut().graceful_shutdown();
    let deadline = tokio::time::sleep(settings.drain_timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = conn.as_mut() => return,
            _ = activity.close_signal.notified() => {
                if activity.closing.get() == Closing::Calm {
                    calm("closing");
                    let _ = tokio::time::timeout(settings.handshake_timeout, conn.as_mut()).await;
                    return;
                }
            }
            _ = deadline.as_mut() => return,
        }
    }
}

/// Marks a connection as ended (see `ConnCtx::ended`) when dropped.
struct Ended<'a>(&'a ConnCtx);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.ended.set(true);
    }
}
