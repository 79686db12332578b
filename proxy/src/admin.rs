//! The admin listener: `/healthz` (the process is alive), `/readyz` (every
//! worker accepts, every source has delivered its first snapshot, and no
//! drain has begun) and `/metrics` (Prometheus).
//! It has a port of its own so that it is never exposed with the proxy.

use std::convert::Infallible;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::Shared;

/// Serves the admin endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, workers: usize) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors and the like: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&req, &shared, workers)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, shared: &Shared, workers: usize) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" => {
            if shared.draining.load(SeqCst) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining\n".into(),
                    "text/plain",
                )
            } else if let Some(source) = shared.sources_pending().first() {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("waiting for the first {} snapshot\n", source.label()),
                    "text/plain",
                )
            } else if shared.workers_ready.load(SeqCst) < workers {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting\n".into(),
                    "text/plain",
                )
            } else {
                (StatusCode::OK, "ready\n".into(), "text/plain")
            }
        }
        "/metrics" => {
            let mut text = shared.metrics.render();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            shared.certs.load().render_expiry(now, &mut text);
            (StatusCode::OK, text, "text/plain; version=0.0.4")
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}
