//! Body types of the request path, as plain enums and wrappers rather than
//! boxed trait objects: one allocation fewer per request.
//!
//! * [`ProxyBody`] is what heim answers with: a local body (errors, echo,
//!   redirects) or an upstream's body.
//! * [`UpstreamBody`] is what heim sends upstream: the client's body, cut off
//!   at the route's size limit or when the client stalls, and telling
//!   ([`BodySent`]) when it has been sent whole.
//! * A pooled HTTP/1 upstream connection goes back to its worker's pool when
//!   the response body it carries has been read to the end (and the request
//!   body sent whole); a response body that stalls past the route's
//!   `response_timeout` is cut off.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::forward::pool::PooledSender;

/// Errors of the client's request body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the route's `max_body_bytes`.
    #[error("request body larger than the route allows")]
    TooLarge,
    /// The client sent nothing for longer than `request_head_timeout`.
    #[error("client stopped sending its request body")]
    ClientStalled,
    /// Reading the client's body failed: broken chunked framing, or the
    /// client went away. Never the upstream's fault.
    #[error("client request body: {0}")]
    Client(#[from] hyper::Error),
}

/// An upstream's response body stalled for longer than the route's
/// `response_timeout` (like nginx's `proxy_read_timeout`).
#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled")]
pub struct BodyStalled;

/// Cuts off a body that waits longer than `timeout` for its next piece. The
/// timer is armed only when the body has to wait, so a body that arrives
/// whole costs none.
#[derive(Debug)]
struct StallGuard {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
}

impl StallGuard {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            progressed: false,
        }
    }

    fn progress(&mut self) {
        self.progressed = true;
    }

    /// Call when the body is pending: true once it has waited too long.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        // A configured timeout far beyond any real one must not overflow.
        let now = Instant::now();
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        match &mut self.sleep {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(s) if self.progressed => s.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }
}

/// Tells when a request body has been sent upstream whole: the response
/// timeout starts then (a slow upload is not the upstream's fault), and only
/// then may the connection go back to the pool.
#[derive(Debug, Default)]
pub struct BodySent {
    done: AtomicBool,
    notify: Notify,
}

impl BodySent {
    fn finish(&self) {
        if !self.done.swap(true, SeqCst) {
            self.notify.notify_one();
        }
    }

    /// True once the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.done.load(SeqCst)
    }

    /// Waits until the body has been read to its end.
    pub async fn wait(&self) {
        if !self.is_done() {
            self.notify.notified().await;
        }
    }
}

/// The client's request body on its way upstream.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Option<Incoming>,
    /// A body heim has already read whole (a verified webhook).
    buffered: Option<Bytes>,
    remaining: u64,
    stall: StallGuard,
    sent: Option<Arc<BodySent>>,
}

impl UpstreamBody {
    /// Wraps a client body. `limit` of `None` means no limit; `read_timeout`
    /// bounds the wait for each piece. The [`BodySent`] is `None` for an
    /// empty body (nothing to wait for).
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        read_timeout: Duration,
    ) -> (Self, Option<Arc<BodySent>>) {
        let sent = (!inner.is_end_stream()).then(Arc::<BodySent>::default);
        let body = Self {
            inner: Some(inner),
            buffered: None,
            remaining: limit.unwrap_or(u64::MAX),
            stall: StallGuard::new(read_timeout),
            sent: sent.clone(),
        };
        (body, sent)
    }

    /// A body read whole already; nothing to wait for.
    pub fn buffered(bytes: Bytes) -> (Self, Option<Arc<BodySent>>) {
        let body = Self {
            inner: None,
            buffered: (!bytes.is_empty()).then_some(bytes),
            remaining: u64::MAX,
            stall: StallGuard::new(Duration::from_secs(1)),
            sent: None,
        };
        (body, None)
    }

    fn end(&mut self) {
        if let Some(s) = &self.sent {
            s.finish();
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
        let this = &mut *self;
        if let Some(b) = this.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall.progress();
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        this.inner = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    this.remaining -= n;
                }
                if inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending if this.stall.stalled(cx) => {
                this.inner = None;
                Poll::Ready(Some(Err(BodyError::ClientStalled)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.buffered, &self.inner) {
            (Some(b), _) => SizeHint::with_exact(b.len() as u64),
            (None, Some(i)) => i.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

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
    stall: StallGuard,
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
        let mut u = UpstreamResponse {
            body,
            pooled,
            stall: StallGuard::new(read_timeout),
        };
        if u.body.is_end_stream() {
            u.release();
        }
        ProxyBody::Upstream(u)
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
                u.stall.progress();
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
            Poll::Pending if u.stall.stalled(cx) => {
                u.pooled = None;
                Poll::Ready(Some(Err(BodyStalled.into())))
            }
            Poll::Pending => Poll::Pending,
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
