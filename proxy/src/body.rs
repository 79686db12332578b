//! Body types of the request path, as plain enums and wrappers rather than
//! boxed trait objects: one allocation fewer per request.
//!
//! * [`ProxyBody`] is what heim answers with: a local body (errors, echo,
//!   redirects) or an upstream's body.
//! * [`UpstreamBody`] is what heim sends upstream: the client's body, cut off
//!   at the route's size limit.
//! * A pooled HTTP/1 upstream connection goes back to its worker's pool when
//!   the response body it carries has been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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

/// What heim answers a client with.
#[derive(Debug)]
pub enum ProxyBody {
    /// A body heim made itself (`None` once sent).
    Local(Option<Bytes>),
    /// An upstream body on a connection that is not pooled (h2c, upgrades).
    Upstream(Incoming),
    /// An upstream body whose HTTP/1 connection returns to the pool at its end.
    Pooled(Incoming, Option<PooledSender>),
}

impl ProxyBody {
    /// A local body.
    pub fn local(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Local((!b.is_empty()).then_some(b))
    }

    /// An upstream body whose connection is given back once it is read.
    pub fn pooled(body: Incoming, sender: PooledSender) -> Self {
        if body.is_end_stream() {
            sender.release();
            ProxyBody::Pooled(body, None)
        } else {
            ProxyBody::Pooled(body, Some(sender))
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Pooled(b, sender) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                let done = match &r {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => b.is_end_stream(),
                    // An error: the connection is not reusable; dropping closes it.
                    Poll::Ready(Some(Err(_))) => {
                        sender.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if done {
                    if let Some(s) = sender.take() {
                        s.release();
                    }
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_none(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Pooled(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(b) | ProxyBody::Pooled(b, _) => b.size_hint(),
        }
    }
}
