//! Idle HTTP/1 connections without hyper's buffers.
//!
//! hyper's HTTP/1 connection holds an 8 KiB read buffer (reserved before
//! every read, so also while it waits for the next request) and an 8 KiB
//! write buffer for as long as it lives, and neither can be made smaller.
//! A connection that has been idle for [`PARK_AFTER`] is therefore taken
//! apart (`into_parts`: the stream, the bytes hyper read ahead, the service)
//! and waits for its socket holding only the stream; the next request gets a
//! new hyper connection. Busy connections never park, so requests pay
//! nothing for it.
//!
//! hyper is taken apart only when it is provably between messages: the last
//! request had no body (so hyper is not reading or draining one) and did not
//! switch protocols, every response body has ended, everything written has
//! been flushed, hyper's last read found nothing, and no request started
//! for a whole [`PARK_AFTER`].

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long an HTTP/1 connection stays idle before it parks: short enough
/// that a burst of clients going quiet does not leave hyper's buffers behind
/// in the allocator, long enough that a busy keep-alive client never parks
/// (parking and rebuilding costs about 18 % more CPU on that request).
pub const PARK_AFTER: Duration = Duration::from_millis(100);

/// A stream a connection can wait on without reading from it.
pub trait Parkable: AsyncRead + AsyncWrite + Unpin {
    /// Input already decoded above the socket (TLS plaintext, a
    /// close_notify): waiting for the socket would then wait for nothing.
    fn has_buffered_input(&self) -> bool;
    /// Resolves when the socket has something to read, or is closed.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
}

impl Parkable for TcpStream {
    fn has_buffered_input(&self) -> bool {
        false
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self)
    }
}

impl Parkable for tokio_rustls::server::TlsStream<TcpStream> {
    fn has_buffered_input(&self) -> bool {
        !self.get_ref().1.wants_read()
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        self.get_ref().0.readable()
    }
}

impl<T: Parkable + ?Sized> Parkable for Box<T> {
    fn has_buffered_input(&self) -> bool {
        (**self).has_buffered_input()
    }
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        (**self).readable()
    }
}

/// What a connection's service and IO saw, to tell when hyper is idle.
#[derive(Debug)]
pub struct Idle {
    /// Responses whose body has not ended (or been dropped) yet.
    active: Cell<u32>,
    /// Requests started since this hyper connection was built.
    served: Cell<u64>,
    /// The last request had a body, or its response switched protocols.
    busy: Cell<bool>,
    /// When the connection last became idle (handshake done, response sent):
    /// the request-head timeout counts from here, parked or not.
    since: Cell<Instant>,
    /// What the IO saw (hyper wants upgradable IO `Send`).
    io: Arc<IoSeen>,
}

#[derive(Debug, Default)]
struct IoSeen {
    /// hyper's last read returned Pending.
    read_blocked: AtomicBool,
    /// Everything written has been flushed.
    flushed: AtomicBool,
}

impl Idle {
    pub fn new() -> Rc<Idle> {
        Rc::new(Idle {
            active: Cell::new(0),
            served: Cell::new(0),
            busy: Cell::new(false),
            since: Cell::new(Instant::now()),
            io: Arc::default(),
        })
    }

    /// When the connection became idle.
    pub fn since(&self) -> Instant {
        self.since.get()
    }

    /// A request starts; the guard goes into its response body.
    pub fn begin(self: &Rc<Self>, has_body: bool) -> Active {
        self.active.set(self.active.get() + 1);
        self.served.set(self.served.get() + 1);
        self.busy.set(has_body);
        Active(self.clone())
    }

    /// hyper is between messages with nothing to write.
    fn between_messages(&self) -> bool {
        self.active.get() == 0
            && self.served.get() > 0
            && !self.busy.get()
            && self.io.read_blocked.load(Relaxed)
            && self.io.flushed.load(Relaxed)
    }
}

/// A response that has not ended.
#[derive(Debug)]
pub struct Active(Rc<Idle>);

impl Active {
    /// A 101 response: the connection becomes something else.
    pub fn upgrading(&self) {
        self.0.busy.set(true);
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0.since.set(Instant::now());
    }
}

/// A response body that tells [`Idle`] when it is gone.
#[derive(Debug)]
pub struct Tracked<B> {
    pub body: B,
    pub active: Active,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// hyper's IO: the stream, first replaying what an earlier hyper connection
/// read ahead; it notes reads that block and flushes that complete.
pub struct Io<S> {
    inner: TokioIo<S>,
    replay: Bytes,
    seen: Arc<IoSeen>,
}

impl<S> Io<S> {
    pub fn new(stream: S, replay: Bytes, idle: &Idle) -> Self {
        idle.served.set(0);
        idle.io.read_blocked.store(false, Relaxed);
        idle.io.flushed.store(true, Relaxed);
        Self {
            inner: TokioIo::new(stream),
            replay,
            seen: idle.io.clone(),
        }
    }

    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S: AsyncRead + Unpin> Read for Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            this.seen.read_blocked.store(false, Relaxed);
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.seen.read_blocked.store(r.is_pending(), Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> Write for Io<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.seen.flushed.store(false, Relaxed);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.seen.flushed.store(false, Relaxed);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.seen.flushed.store(true, Relaxed);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Drives `conn` until it ends (false) or has been between messages, with
/// no request started, for [`PARK_AFTER`] (true). The timer is re-armed
/// only when the connection becomes idle: once per request, never a wake-up
/// for a busy connection.
pub async fn until_idle<F: Future + Unpin>(conn: &mut F, idle: &Idle) -> bool {
    let timer = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(timer);
    let mut armed_for = None;
    poll_fn(|cx| {
        if Pin::new(&mut *conn).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        if !idle.between_messages() {
            return Poll::Pending;
        }
        let served = idle.served.get();
        if armed_for != Some(served) {
            timer.as_mut().reset(Instant::now() + PARK_AFTER);
            armed_for = Some(served);
        }
        timer.as_mut().poll(cx).map(|()| true)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt as _, Full};
    use hyper::body::{Body as _, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    /// Reads until `n` responses (each ends in "ok") have arrived.
    async fn responses(client: &mut DuplexStream, n: usize) -> String {
        let mut got = Vec::new();
        while String::from_utf8_lossy(&got).matches("\r\n\r\nok").count() < n {
            let mut buf = [0u8; 1024];
            let k = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("a response")
                .expect("read");
            assert!(k > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn parks_only_between_messages_and_replays_what_hyper_read_ahead() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let idle = Idle::new();
        let seen = idle.clone();
        // Reads the request body to its end before answering, as forwarding does.
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let active = seen.begin(!req.body().is_end_stream());
            async move {
                let _ = req.into_body().collect().await;
                let body = Full::new(Bytes::from_static(b"ok"));
                Ok::<_, Infallible>(hyper::Response::new(Tracked { body, active }))
            }
        });
        let serve = |stream, replay, svc| {
            Box::new(http1::Builder::new().serve_connection(Io::new(stream, replay, &idle), svc))
        };

        // A request, then nothing: parks once idle for PARK_AFTER.
        let mut conn = serve(server, Bytes::new(), svc);
        client.write_all(GET).await.unwrap();
        assert!(until_idle(&mut *conn, &idle).await);
        assert!(responses(&mut client, 1).await.starts_with("HTTP/1.1 200"));
        let parts = conn.into_parts();
        assert!(parts.read_buf.is_empty());

        // A request whose body is still coming never parks, nor does the
        // connection once it is answered: the last request had a body.
        let mut conn = serve(parts.io.into_inner(), Bytes::new(), parts.service);
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
            .await
            .unwrap();
        let waited = tokio::time::timeout(PARK_AFTER * 3, until_idle(&mut *conn, &idle)).await;
        assert!(waited.is_err(), "parked mid-body");
        client.write_all(b"cd").await.unwrap();
        let waited = tokio::time::timeout(PARK_AFTER * 3, until_idle(&mut *conn, &idle)).await;
        assert!(waited.is_err(), "parked after a request with a body");
        assert!(responses(&mut client, 1).await.contains("ok"));

        // The next bodyless request, and half of a third: the half comes
        // back from `into_parts` and is replayed to the next connection.
        client.write_all(GET).await.unwrap();
        client.write_all(&GET[..10]).await.unwrap();
        assert!(until_idle(&mut *conn, &idle).await);
        assert!(responses(&mut client, 1).await.contains("ok"));
        let parts = conn.into_parts();
        assert_eq!(&parts.read_buf[..], &GET[..10]);
        let replay = Bytes::copy_from_slice(&parts.read_buf);
        let mut conn = serve(parts.io.into_inner(), replay, parts.service);
        client.write_all(&GET[10..]).await.unwrap();
        assert!(until_idle(&mut *conn, &idle).await);
        assert!(responses(&mut client, 1).await.contains("ok"));
    }
}
