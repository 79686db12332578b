//! Tunnels: `CONNECT host:port` on a route whose backend is a TCP target
//! (`tcp = "10.0.0.5:22"`) or an agent's service (`agent = "desk"`,
//! `service = "ssh"`, see [`agents`]), after the route's policy admitted
//! the caller (`heim-tunnel proxy`'s bearer token), spliced byte for byte.
//!
//! The 200 that opens a stream carries `Heim-Tunnel-Id`; when heim cuts a
//! stream (the session expired or was revoked, or a reload changed the
//! policy), it keeps the reason for a while, and `heim-tunnel` asks
//! `GET /.heim/tunnel/ended?id=ID` to tell its user why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth::Reauth;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forward::splice::{splice, Ended, Spliced};
use crate::state::{OpenConnection, Shared};

pub mod agents;

/// The response header naming a tunnel stream.
pub const TUNNEL_ID: &str = "heim-tunnel-id";
/// Where `heim-tunnel` asks why its stream was cut.
pub const ENDED_PATH: &str = "/.heim/tunnel/ended";
/// How long dialing a TCP target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reason of a cut is kept, and how many at most.
const CUT_KEPT: Duration = Duration::from_secs(300);
const CUTS_MAX: usize = 10_000;

/// Why streams were cut, by tunnel id, for a while.
#[derive(Debug, Default)]
pub struct Cuts(Mutex<HashMap<String, (&'static str, Instant)>>);

impl Cuts {
    fn record(&self, id: String, why: &'static str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < CUT_KEPT);
        if m.len() < CUTS_MAX {
            m.insert(id, (why, Instant::now()));
        }
    }

    /// The reason stream `id` was cut, if heim cut it lately.
    pub fn reason(&self, id: &str) -> Option<&'static str> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id)
            .filter(|(_, at)| at.elapsed() < CUT_KEPT)
            .map(|(w, _)| *w)
    }
}

/// `GET /.heim/tunnel/ended?id=ID`: why heim cut that stream (200, text),
/// or 404 when it did not (the other side closed it). Ids are random
/// 128-bit values only their stream's client saw.
pub fn ended<B>(req: &Request<B>, shared: &Shared) -> Response<ProxyBody> {
    let id = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("id=")))
        .unwrap_or("");
    match shared.tunnel_cuts.reason(id) {
        Some(why) => text(StatusCode::OK, why),
        None => text(StatusCode::NOT_FOUND, "not cut by heim"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::local(bytes::Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Opens the route's tunnel target (dials `tcp`, or asks the agent for a
/// stream) and, once the client's side of the `CONNECT` is upgraded,
/// splices the two until either ends or (`reauth`) the user may no
/// longer use the route. The pair counts as an open connection.
pub async fn connect(
    req: Request<Incoming>,
    backend: &crate::route::Backend,
    shared: &Arc<Shared>,
    reauth: Reauth,
) -> Result<Response<ProxyBody>, ProxyError> {
    let started = Instant::now();
    match backend {
        crate::route::Backend::Tcp(addr) => {
            let tcp = dial(*addr).await?;
            shared.metrics.tunnel_connect.record(started.elapsed());
            Ok(splice_after_upgrade(
                req,
                tcp,
                addr.to_string(),
                shared,
                reauth,
            ))
        }
        crate::route::Backend::Agent { agent, service } => {
            let user = reauth.session.as_ref().map(|s| s.user.as_str());
            let stream = shared.agents.open(agent, service, user).await?;
            shared.metrics.tunnel_connect.record(started.elapsed());
            Ok(splice_after_upgrade(
                req,
                stream,
                format!("{agent}/{service}"),
                shared,
                reauth,
            ))
        }
        _ => Err(ProxyError::MethodNotAllowed),
    }
}

async fn dial(addr: SocketAddr) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => {
            tracing::warn!(target = %addr, error = %e, "tunnel target connect failed");
            Err(ProxyError::UpstreamConnect)
        }
        Err(_) => {
            tracing::warn!(target = %addr, "tunnel target connect timed out");
            Err(ProxyError::UpstreamConnectTimeout)
        }
    }
}

fn splice_after_upgrade<T>(
    mut req: Request<Incoming>,
    target: T,
    label: String,
    shared: &Arc<Shared>,
    reauth: Reauth,
) -> Response<ProxyBody>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = crate::auth::seal::random_token(16);
    let open = OpenConnection::new(shared);
    let idle = shared.settings.load().websocket_idle_timeout;
    let shared = shared.clone();
    let stream_id = id.clone();
    tokio::task::spawn_local(async move {
        let _open = open;
        let client = match on_upgrade.await {
            Ok(c) => c,
            Err(e) => return tracing::debug!(error = %e, "tunnel upgrade failed"),
        };
        let m = &shared.metrics;
        m.tunnel_streams_open.fetch_add(1, Relaxed);
        m.tunnel_streams_total.fetch_add(1, Relaxed);
        let user = reauth.session.as_ref().map(|s| s.user.clone());
        // Borrowed, so that both sides stay open until the reason of a cut
        // is kept: heim-tunnel asks for it as soon as its side closes.
        let (mut client, mut target) = (TokioIo::new(client), target);
        let Spliced { ended, up, down } = splice(
            &mut client,
            &mut target,
            idle,
            reauth,
            heim_tunnel_wire::COPY_BUFFER,
        )
        .await;
        m.tunnel_streams_open.fetch_sub(1, Relaxed);
        m.tunnel_bytes_to_target.fetch_add(up, Relaxed);
        m.tunnel_bytes_to_client.fetch_add(down, Relaxed);
        tracing::debug!(target = %label, user, up, down, ended = ?ended, "tunnel stream ended");
        match ended {
            Ended::Closed => {}
            Ended::Idle => shared.tunnel_cuts.record(stream_id, "idle timeout"),
            Ended::Unauthorized(why) => shared.tunnel_cuts.record(stream_id, why),
        }
        drop((client, target));
    });
    let mut resp = Response::new(ProxyBody::local(bytes::Bytes::new()));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(TUNNEL_ID, v);
    }
    resp
}
