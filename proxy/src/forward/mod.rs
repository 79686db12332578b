//! Forwarding: send a prepared request to one of a route's upstream
//! endpoints and hand back its response.
//!
//! Endpoints are chosen round-robin (`upstream`). A request that never left
//! heim is tried again elsewhere: after a failed connect (the endpoint is
//! reported, and ejected), or when a pooled keep-alive connection turns out
//! to be closed (hyper gives the unsent request back). A request that was
//! sent is never replayed. Upgrades (WebSocket and friends) get a fresh,
//! unpooled connection and are spliced byte for byte after the 101.

pub mod headers;
pub mod pool;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::client::conn::{http1, http2};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::{BodyTooLarge, ProxyBody, UpstreamBody};
use crate::error::ProxyError;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::rt::LocalExec;
use crate::upstream::{Endpoint, UpstreamAddr, UpstreamGroup, UpstreamProtocol};
use pool::PooledSender;

/// Endpoints tried per request, at most.
const MAX_ENDPOINTS_TRIED: usize = 3;

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
}

/// Sends `req` upstream; returns the response and the endpoint that gave it.
pub async fn forward(
    req: Request<UpstreamBody>,
    group: &UpstreamGroup,
    metrics: &Metrics,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    let mut tried = [usize::MAX; MAX_ENDPOINTS_TRIED];
    let mut n_tried = 0;
    let mut req = req;
    let mut last = ProxyError::NoUpstream;
    while n_tried < MAX_ENDPOINTS_TRIED {
        let Some(i) = group.pick(&tried[..n_tried]) else {
            break;
        };
        let ep = &group.endpoints[i];
        let attempt = match group.protocol {
            UpstreamProtocol::Http1 => send_http1(ep, group, req, metrics).await,
            UpstreamProtocol::H2c => send_http2(ep, group, req, metrics).await,
        };
        match attempt {
            Ok(resp) => {
                group.report_success(i);
                return Ok((resp, i));
            }
            Err(a) => {
                // Like nginx's max_fails: connect errors and timeouts count
                // against the endpoint (a timed-out request is not retried).
                if a.endpoint_failed || a.error == ProxyError::UpstreamTimeout {
                    group.report_failure(i);
                }
                tried[n_tried] = i;
                n_tried += 1;
                last = a.error;
                match a.unsent {
                    Some(r) => req = r,
                    None => return Err(a.error),
                }
            }
        }
    }
    Err(last)
}

async fn send_http1(
    ep: &Endpoint,
    group: &UpstreamGroup,
    mut req: Request<UpstreamBody>,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    while let Some(mut sender) = pool::take_http1(ep.id, group.idle_timeout) {
        if sender.ready().await.is_err() {
            continue;
        }
        match exchange_http1(sender, req, ep, group, metrics).await {
            Err(Attempt {
                unsent: Some(r), ..
            }) => req = r, // went stale in the pool
            done => return done,
        }
    }
    let tcp = match connect(ep, group.connect_timeout, metrics).await {
        Ok(tcp) => tcp,
        Err(error) => {
            return Err(Attempt {
                error,
                unsent: Some(req),
                endpoint_failed: true,
            })
        }
    };
    let (sender, conn) = match http1::Builder::new().handshake(TokioIo::new(tcp)).await {
        Ok(pair) => pair,
        Err(_) => {
            metrics.upstream_error(UpstreamErrorKind::Connect);
            return Err(Attempt {
                error: ProxyError::UpstreamConnect,
                unsent: Some(req),
                endpoint_failed: true,
            });
        }
    };
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    match exchange_http1(sender, req, ep, group, metrics).await {
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
    mut sender: http1::SendRequest<UpstreamBody>,
    req: Request<UpstreamBody>,
    ep: &Endpoint,
    group: &UpstreamGroup,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    match tokio::time::timeout(group.response_timeout, sender.try_send_request(req)).await {
        Err(_) => {
            metrics.upstream_error(UpstreamErrorKind::ResponseTimeout);
            Err(Attempt::fatal(ProxyError::UpstreamTimeout))
        }
        Ok(Ok(resp)) => {
            let pooled = PooledSender {
                endpoint: ep.id,
                idle_timeout: group.idle_timeout,
                sender,
            };
            Ok(resp.map(|b| ProxyBody::upstream(b, Some(pooled), group.response_timeout)))
        }
        Ok(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Attempt {
                error: ProxyError::UpstreamProtocol,
                unsent: Some(req),
                endpoint_failed: false,
            }),
            None => Err(Attempt::fatal(classify(e.error(), metrics))),
        },
    }
}

async fn send_http2(
    ep: &Endpoint,
    group: &UpstreamGroup,
    req: Request<UpstreamBody>,
    metrics: &Metrics,
) -> Result<Response<ProxyBody>, Attempt> {
    let mut sender = match pool::http2(ep.id) {
        Some(s) => s,
        None => {
            let tcp = match connect(ep, group.connect_timeout, metrics).await {
                Ok(tcp) => tcp,
                Err(error) => {
                    return Err(Attempt {
                        error,
                        unsent: Some(req),
                        endpoint_failed: true,
                    })
                }
            };
            let handshake = http2::Builder::new(LocalExec)
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(TokioIo::new(tcp));
            let (sender, conn) = match handshake.await {
                Ok(pair) => pair,
                Err(_) => {
                    metrics.upstream_error(UpstreamErrorKind::Connect);
                    return Err(Attempt {
                        error: ProxyError::UpstreamConnect,
                        unsent: Some(req),
                        endpoint_failed: true,
                    });
                }
            };
            tokio::task::spawn_local(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended");
                }
            });
            pool::put_http2(ep.id, sender.clone());
            sender
        }
    };
    if sender.ready().await.is_err() {
        metrics.upstream_error(UpstreamErrorKind::Connect);
        return Err(Attempt {
            error: ProxyError::UpstreamConnect,
            unsent: Some(req),
            endpoint_failed: true,
        });
    }
    match tokio::time::timeout(group.response_timeout, sender.try_send_request(req)).await {
        Err(_) => {
            metrics.upstream_error(UpstreamErrorKind::ResponseTimeout);
            Err(Attempt::fatal(ProxyError::UpstreamTimeout))
        }
        Ok(Ok(resp)) => Ok(resp.map(|b| ProxyBody::upstream(b, None, group.response_timeout))),
        Ok(Err(mut e)) => match e.take_message() {
            Some(req) => Err(Attempt {
                error: ProxyError::UpstreamConnect,
                unsent: Some(req),
                endpoint_failed: true,
            }),
            None => Err(Attempt::fatal(classify(e.error(), metrics))),
        },
    }
}

/// Relays an upgrade request (`Connection: upgrade`) on a fresh connection;
/// once the upstream answers 101, the two connections are spliced.
pub async fn forward_upgrade(
    req: Request<UpstreamBody>,
    client_upgrade: OnUpgrade,
    group: &UpstreamGroup,
    metrics: &Metrics,
) -> Result<(Response<ProxyBody>, usize), ProxyError> {
    let i = group.pick(&[]).ok_or(ProxyError::NoUpstream)?;
    let ep = &group.endpoints[i];
    let tcp = connect(ep, group.connect_timeout, metrics)
        .await
        .inspect_err(|_| group.report_failure(i))?;
    let (mut sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|_| ProxyError::UpstreamConnect)?;
    tokio::task::spawn_local(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = tokio::time::timeout(group.response_timeout, sender.send_request(req))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
        .map_err(|e| classify(&e, metrics))?;
    group.report_success(i);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::task::spawn_local(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
    }
    Ok((
        resp.map(|b| ProxyBody::upstream(b, None, group.response_timeout)),
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

/// Maps an error of a sent request: the client's body over the limit is the
/// client's fault (413); anything else the upstream's (502).
fn classify(e: &hyper::Error, metrics: &Metrics) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<BodyTooLarge>().is_some() {
            return ProxyError::BodyTooLarge;
        }
        if let Some(crate::body::BodyError::TooLarge(_)) =
            s.downcast_ref::<crate::body::BodyError>()
        {
            return ProxyError::BodyTooLarge;
        }
        source = s.source();
    }
    metrics.upstream_error(UpstreamErrorKind::Protocol);
    ProxyError::UpstreamProtocol
}
