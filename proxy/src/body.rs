//! Body types of the request path, as plain enums and wrappers rather than
//! boxed trait objects: one allocation fewer per request.
//!
//! * [`ProxyBody`] is what heim answers with: a local body (errors, echo,
//!   redirects) or an upstream's body.
//! * [`UpstreamBody`] is what heim sends upstream: the client's body, cut off
//!   at the route's size limit.
//! * A pooled HTTP/1 upstream connection goes back to its worker's pool when
//!   the response body it carries has been read to the end; a body that
//!   stalls past the route's `response_timeout` is cut off.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::forward::pool::PooledSender;

/// A request body over the route's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the route allows")]
pub struct BodyTooLarge;

/// Errors of the bodies heim relays.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    TooLarge(#[from] BodyTooLarge),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    remaining: u64,
}

impl UpstreamBody {
    /// Wraps a client body; `limit` of `None` means no limit.
    pub fn new(inner: Incoming, limit: Option<u64>) -> Self {
        Self {
            inner: Some(inner),
            remaining: limit.unwrap_or(u64::MAX),
        }
    }

    /// A body with nothing in it.
    pub fn empty() -> Self {
        Self {
            inner: None,
            remaining: 0,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.inner = None;
                        return Poll::Ready(Some(Err(BodyTooLarge.into())));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// An upstream's response body stalled for longer than the route's
/// `response_timeout` (like nginx's `proxy_read_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled")]
pub struct BodyStalled;

/// What heim answers a client with.
#[derive(Debug)]
pub enum ProxyBody {
    /// A body heim made itself (`None` once sent).
    Local(Option<Bytes>),
    /// An upstream's body, relayed as it comes.
    Upstream(UpstreamResponse),
}

/// An upstream's response body on its way to the client: cut off when it
/// stalls, and its HTTP/1 connection given back to the pool at its end.
#[derive(Debug)]
pub struct UpstreamResponse {
    body: Incoming,
    pooled: Option<PooledSender>,
    read_timeout: Duration,
    /// Armed only when the body is waited for, so a response that arrives
    /// whole costs no timer.
    stall: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl ProxyBody {
    /// A local body.
    pub fn local(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Local((!b.is_empty()).then_some(b))
    }

    /// An upstream body; `pooled` is its connection, given back once the
    /// body is read to the end.
    pub fn upstream(body: Incoming, pooled: Option<PooledSender>, read_timeout: Duration) -> Self {
        let pooled = match pooled {
            Some(p) if body.is_end_stream() => {
                p.release();
                None
            }
            p => p,
        };
        ProxyBody::Upstream(UpstreamResponse {
            body,
            pooled,
            read_timeout,
            stall: None,
            progressed: false,
        })
    }
}

impl UpstreamResponse {
    fn release(&mut self) {
        if let Some(p) = self.pooled.take() {
            p.release();
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let u = match self.get_mut() {
            ProxyBody::Local(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => u,
        };
        match Pin::new(&mut u.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                u.progressed = true;
                if u.body.is_end_stream() {
                    u.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Not reusable: dropping the sender closes the connection.
                u.pooled = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                u.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + u.read_timeout;
                match &mut u.stall {
                    None => u.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(s) if u.progressed => s.as_mut().reset(deadline),
                    Some(_) => {}
                }
                u.progressed = false;
                if let Some(s) = &mut u.stall {
                    if s.as_mut().poll(cx).is_ready() {
                        u.pooled = None;
                        return Poll::Ready(Some(Err(BodyStalled.into())));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(u) => u.body.size_hint(),
        }
    }
}
