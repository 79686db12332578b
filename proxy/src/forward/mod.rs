//! Forwarding: send a prepared request to one of a route's upstream
//! endpoints and hand back its response.
//!
//! Endpoints are chosen round-robin (`upstream`), or a sticky session's
//! endpoint first while it is not ejected ([`forward_to`]). A request that never left
//! heim is tried again elsewhere: after a failed connect (the endpoint is
//! reported, and ejected), or when a pooled keep-alive connection turns out
//! to be closed (hyper gives the unsent request back). A request that was
//! sent is never replayed. Upgrades (WebSocket) get a fresh, unpooled
//! connection and are spliced byte for byte after the 101.
//!
//! A group with TLS (`upstream_tls`) runs the handshake on each new
//! connection, bounded by the connect timeout once more after the TCP
//! connect (nginx's `proxy_connect_timeout` bounds its SSL handshake too);
//! a failed handshake counts as a failed connect.
//! The connections are then pooled like plain ones, WebSocket upgrades
//! included (they run over the TLS stream).
//!
//! The response timeout starts once the request body has been sent whole:
//! a slow upload is the client's business (bounded by its own read timeout),
//! not a sign of a failing upstream.

pub mod cors;
pub mod edits;
pub mod headers;
pub mod pool;
pub mod splice;
pub mod upstream_tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri};
use hyper::client::conn::{http1, http2};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::{BodyError, BodySent, ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::rt::LocalExec;
use crate::state::{OpenConnection, Shared};
use crate::upstream::{Endpoint, UpstreamAddr, UpstreamGroup, UpstreamProtocol, UpstreamTlsClient};
use pool::PooledSender;

/// Endpoints tried per request, at most.
const MAX_ENDPOINTS_TRIED: usize = 3;

/// A request on its way upstream, and what tells when its body is sent.
pub struct Outgoing {
    pub request: Request<UpstreamBody>,
    pub sent: Option<Arc<BodySent>>,
}

/// One failed attempt: the error, and the request if it was never sent.
struct Attempt {
    error: ProxyError,
    unsent: Option<Request<UpstreamBody>>,
    /// The endpoint itself failed (connect): report it and try another.
    endpoint_failed: bool,
}

impl Attempt {
    fn fatal(error: ProxyError) -> Self {
        Self {
            error,
            unsent: None,
            endpoint_failed: false,
        }
    }

    fn unsent(error: ProxyError, req: Request<UpstreamBody>, endpoint_failed: bool) -> Self {
        Self {
            error,
            unsent: Some(req),
            endpoint_failed,
        }
    }
}

/// Sends a request upstream; returns the response and the endpoint that gave it.
pub async fn forward(
    out: Outgoing,
    group: &UpstreamGroup,
    metrics: &Metrics,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    forward_to(out, group, None, metrics).await
}

/// [`forward`], trying endpoint `preferred` first (a sticky session's):
/// after it fails, or when it is ejected, the others round-robin.
pub async fn forward_to(
    out: Outgoing,
    group: &UpstreamGroup,
    preferred: Option<usize>,
    metrics: &Metrics,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    let Outgoing { mut request, sent } = out;
    if group.tls.is_some() && group.protocol == UpstreamProtocol::H2c {
        https_scheme(&mut request);
    }
    let mut tried = [usize::MAX; MAX_ENDPOINTS_TRIED];
    let mut n_tried = 0;
    let mut last = ProxyError::NoUpstream;
    while n_tried < MAX_ENDPOINTS_TRIED {
        let Some(i) = group.pick_preferred(preferred, &tried[..n_tried]) else {
            break;
        };
        let ep = &group.endpoints[i];
        let attempt = match group.protocol {
            UpstreamProtocol::Http1 => send_http1(ep, group, request, sent.as_ref(), metrics).await,
            UpstreamProtocol::H2c => send_http2(ep, group, request, sent.as_ref(), metrics).await,
        };
        match attempt {
            Ok(resp) => {
                group.report_success(i);
                return Ok((resp, i));
            }
            Err(a) => {
                if a.endpoint_failed {
                    group.report_failure(i);
                }
                tried[n_tried] = i;
                n_tried += 1;
                match a.unsent {
                    Some(r) => request = r,
                    None => return Err(a.error),
                }
                last = a.error;
            }
        }
    }
    Err(last)
}

async fn send_http1(
    ep: &Endpoint,
    group: &UpstreamGroup,
    mut req: Request<UpstreamBody>,
    sent: Option<&Arc<BodySent>>,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    // In line for at most `connect_timeout`, like a connect.
    let give_up = tokio::time::Instant::now() + group.limits.connect_timeout;
    let slot = loop {
        while let Some(mut conn) = pool::take_http1(ep.id, group.limits.idle_timeout) {
            // Normally ready at once; a connection that does not become
            // ready soon is not waited for.
            if !conn.sender.is_ready()
                && !matches!(
                    tokio::time::timeout(group.limits.connect_timeout, conn.sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            match exchange_http1(conn, req, ep, group, sent, metrics).await {
                Err(Attempt {
                    unsent: Some(r), ..
                }) => req = r, // went stale in the pool
                done => return done,
            }
        }
        match pool::admit(ep.id, &group.limits) {
            pool::Admission::Open(slot) => break slot,
            pool::Admission::Wait(freed, _waiting) => {
                if tokio::time::timeout_at(give_up, freed.notified())
                    .await
                    .is_err()
                {
                    metrics.upstream_error(UpstreamErrorKind::Busy);
                    return Err(Attempt::unsent(ProxyError::UpstreamBusy, req, false));
                }
            }
            pool::Admission::Full => {
                metrics.upstream_error(UpstreamErrorKind::Busy);
                return Err(Attempt::unsent(ProxyError::UpstreamBusy, req, false));
            }
        }
    };
    let sender = match open_http1(ep, group, metrics, false).await {
        Ok(s) => s,
        Err(error) => return Err(Attempt::unsent(error, req, true)),
    };
    let conn = pool::Http1Conn { sender, slot };
    match exchange_http1(conn, req, ep, group, sent, metrics).await {
        // A fresh connection that would not even take the request: the
        // endpoint is at fault.
        Err(mut a) if a.unsent.is_some() => {
            a.endpoint_failed = true;
            a.error = ProxyError::UpstreamConnect;
            Err(a)
        }
        other => other,
    }
}

async fn exchange_http1(
    mut conn: pool::Http1Conn,
    req: Request<UpstreamBody>,
    ep: &Endpoint,
    group: &UpstreamGroup,
    sent: Option<&Arc<BodySent>>,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    match response_within(
        group.limits.response_timeout,
        sent,
        conn.sender.try_send_request(req),
    )
    .await
    {
        None => {
            metrics.upstream_error(UpstreamErrorKind::ResponseTimeout);
            Err(Attempt::fatal(ProxyError::UpstreamTimeout))
        }
        Some(Ok(resp)) => {
            let pooled = PooledSender {
                endpoint: ep.id,
                idle_timeout: group.limits.idle_timeout,
                conn,
                request: sent.cloned(),
            };
            Ok(resp.map(|b| ProxyBody::upstream(b, Some(pooled), group.limits.response_timeout)))
        }
        Some(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Attempt::unsent(ProxyError::UpstreamProtocol, req, false)),
            None => Err(Attempt::fatal(classify(e.error(), metrics))),
        },
    }
}

async fn send_http2(
    ep: &Endpoint,
    group: &UpstreamGroup,
    req: Request<UpstreamBody>,
    sent: Option<&Arc<BodySent>>,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    // A pooled connection that went away (GOAWAY, idle close) is replaced
    // by a fresh one; only a fresh one failing is the endpoint's fault.
    let mut pooled = pool::http2(ep.id);
    if let Some(s) = &mut pooled {
        if s.ready().await.is_err() {
            pooled = None;
        }
    }
    let mut sender = match pooled {
        Some(s) => s,
        None => match open_http2(ep, group, metrics).await {
            Ok(s) => s,
            Err(error) => return Err(Attempt::unsent(error, req, true)),
        },
    };
    match response_within(
        group.limits.response_timeout,
        sent,
        sender.try_send_request(req),
    )
    .await
    {
        None => {
            metrics.upstream_error(UpstreamErrorKind::ResponseTimeout);
            Err(Attempt::fatal(ProxyError::UpstreamTimeout))
        }
        Some(Ok(resp)) => {
            Ok(resp.map(|b| ProxyBody::upstream(b, None, group.limits.response_timeout)))
        }
        Some(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Attempt::unsent(ProxyError::UpstreamConnect, req, true)),
            None => Err(Attempt::fatal(classify(e.error(), metrics))),
        },
    }
}

/// Awaits `response`, giving up `timeout` after the request body has been
/// sent whole (at once when there is none). `None` on timeout.
async fn response_within<F: Future>(
    timeout: Duration,
    sent: Option<&Arc<BodySent>>,
    response: F,
) -> Option<F::Output> {
    match sent {
        None => tokio::time::timeout(timeout, response).await.ok(),
        Some(sent) => {
            let deadline = async {
                sent.wait().await;
                tokio::time::sleep(timeout).await;
            };
            tokio::select! {
                biased;
                r = response => Some(r),
                _ = deadline => None,
            }
        }
    }
}

/// An HTTP/2 request to a TLS upstream says so in `:scheme` (the request
/// was made for h2c, `http`).
fn https_scheme(req: &mut Request<UpstreamBody>) {
    if req.uri().scheme() != Some(&Scheme::HTTP) {
        return;
    }
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTPS);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// Opens an HTTP/1.1 connection to `ep` (over TLS when the group speaks
/// it); `upgrades` keeps it open for an upgrade (WebSocket) after the
/// response.
async fn open_http1(
    ep: &Endpoint,
    group: &UpstreamGroup,
    metrics: &Metrics,
    upgrades: bool,
) -> Result<http1::SendRequest<UpstreamBody>, ProxyError> {
    let tcp = connect(ep, group.limits.connect_timeout, metrics).await?;
    match &group.tls {
        None => handshake_http1(TokioIo::new(tcp), metrics, upgrades).await,
        Some(tls) => {
            let tls = tls_handshake(tls, tcp, ep, group, UpstreamProtocol::Http1, metrics).await?;
            handshake_http1(TokioIo::new(tls), metrics, upgrades).await
        }
    }
}

async fn handshake_http1<I>(
    io: I,
    metrics: &Metrics,
    upgrades: bool,
) -> Result<http1::SendRequest<UpstreamBody>, ProxyError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(|_| {
        metrics.upstream_error(UpstreamErrorKind::Connect);
        ProxyError::UpstreamConnect
    })?;
    tokio::task::spawn_local(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Opens an HTTP/2 connection to `ep` (h2c, or h2 over TLS when the group
/// speaks it) and keeps it for the worker's next requests.
async fn open_http2(
    ep: &Endpoint,
    group: &UpstreamGroup,
    metrics: &Metrics,
) -> Result<http2::SendRequest<UpstreamBody>, ProxyError> {
    let tcp = connect(ep, group.limits.connect_timeout, metrics).await?;
    let sender = match &group.tls {
        None => handshake_http2(TokioIo::new(tcp), metrics).await?,
        Some(tls) => {
            let tls = tls_handshake(tls, tcp, ep, group, UpstreamProtocol::H2c, metrics).await?;
            handshake_http2(TokioIo::new(tls), metrics).await?
        }
    };
    pool::put_http2(ep.id, sender.clone());
    Ok(sender)
}

async fn handshake_http2<I>(
    io: I,
    metrics: &Metrics,
) -> Result<http2::SendRequest<UpstreamBody>, ProxyError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    let handshake = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .handshake(io);
    let (sender, conn) = handshake.await.map_err(|_| {
        metrics.upstream_error(UpstreamErrorKind::Connect);
        ProxyError::UpstreamConnect
    })?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(sender)
}

/// Runs the TLS handshake on a fresh connection, within the connect timeout.
async fn tls_handshake(
    tls: &UpstreamTlsClient,
    tcp: TcpStream,
    ep: &Endpoint,
    group: &UpstreamGroup,
    protocol: UpstreamProtocol,
    metrics: &Metrics,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProxyError> {
    let handshake = tls.connect(tcp, &ep.addr, protocol);
    match tokio::time::timeout(group.limits.connect_timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            tracing::warn!(upstream = %ep.display, error = %e, "upstream TLS handshake failed");
            metrics.upstream_error(UpstreamErrorKind::Connect);
            Err(ProxyError::UpstreamConnect)
        }
        Err(_) => {
            tracing::warn!(upstream = %ep.display, "upstream TLS handshake timed out");
            metrics.upstream_error(UpstreamErrorKind::ConnectTimeout);
            Err(ProxyError::UpstreamConnectTimeout)
        }
    }
}

/// Relays a WebSocket upgrade on a fresh connection; once the upstream
/// answers 101, the two connections are spliced. The spliced pair counts as
/// an open connection until it closes. `preferred`: a sticky session's
/// endpoint, unless ejected.
pub async fn forward_upgrade(
    req: Request<UpstreamBody>,
    client_upgrade: OnUpgrade,
    group: &UpstreamGroup,
    preferred: Option<usize>,
    shared: &Arc<Shared>,
    reauth: crate::auth::Reauth,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    let metrics = &shared.metrics;
    let i = group
        .pick_preferred(preferred, &[])
        .ok_or(ProxyError::NoUpstream)?;
    let ep = &group.endpoints[i];
    let mut sender = open_http1(ep, group, metrics, true)
        .await
        .inspect_err(|_| group.report_failure(i))?;
    let mut resp = tokio::time::timeout(group.limits.response_timeout, sender.send_request(req))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
        .map_err(|e| classify(&e, metrics))?;
    group.report_success(i);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let open = OpenConnection::new(shared);
        let idle = shared.settings.load().websocket_idle_timeout;
        tokio::task::spawn_local(async move {
            let _open = open;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    splice::splice(client, upstream, idle, reauth, splice::WEBSOCKET_BUFFER).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    Ok((
        resp.map(|b| ProxyBody::upstream(b, None, group.limits.response_timeout)),
        i,
    ))
}

async fn connect(
    ep: &Endpoint,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<TcpStream, ProxyError> {
    let attempt = async {
        match &ep.addr {
            UpstreamAddr::Socket(a) => TcpStream::connect(a).await,
            UpstreamAddr::Name { host, port } => TcpStream::connect((host.as_str(), *port)).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            metrics
                .upstream_connects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(tcp)
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = %ep.display, error = %e, "upstream connect failed");
            metrics.upstream_error(UpstreamErrorKind::Connect);
            Err(ProxyError::UpstreamConnect)
        }
        Err(_) => {
            tracing::warn!(upstream = %ep.display, "upstream connect timed out");
            metrics.upstream_error(UpstreamErrorKind::ConnectTimeout);
            Err(ProxyError::UpstreamConnectTimeout)
        }
    }
}

/// True when reading the client's body failed because the client closed
/// its connection (or its stream), not because it broke the framing.
fn client_went_away(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            );
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_reset() || h2.is_go_away() || h2.is_io();
        }
        source = s.source();
    }
    false
}

/// Maps an error of a sent request: the client's body over the limit (413),
/// stalled (408) or broken (bad chunked framing: 400) is the client's
/// doing; anything else the upstream's (502). The upstream connection is
/// dropped either way, never pooled.
fn classify(e: &hyper::Error, metrics: &Metrics) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        match s.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge) => return ProxyError::BodyTooLarge,
            Some(BodyError::ClientStalled) => return ProxyError::ClientTimeout,
            Some(BodyError::Client(e)) if client_went_away(e) => return ProxyError::ClientAborted,
            Some(BodyError::Client(_)) => return ProxyError::MalformedBody,
            None => {}
        }
        source = s.source();
    }
    metrics.upstream_error(UpstreamErrorKind::Protocol);
    ProxyError::UpstreamProtocol
}
