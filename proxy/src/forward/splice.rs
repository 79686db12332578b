//! Splicing an upgraded connection (WebSocket) to its upstream, byte for
//! byte, until either side closes; or, with `websocket_idle_timeout`, no
//! byte has crossed either way for that long; or the signed-in user behind
//! it may no longer use the route (checked every second: an expired or
//! revoked session, or a reload that changed the policy, closes it within
//! two seconds).
//!
//! The pair counts as an open connection (its caller holds the
//! `OpenConnection`), so a drain waits for it up to `drain_timeout`; the
//! process then exits and the kernel closes both sockets.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::auth::{Reauth, REAUTH_EVERY};

/// How a spliced pair ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// One side closed (or failed).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// The user may no longer use the route: why.
    Unauthorized(&'static str),
}

/// Per-direction copy buffer of a WebSocket: tokio's default, small, as
/// there may be many.
pub const WEBSOCKET_BUFFER: usize = 8 << 10;

/// A spliced pair's end, and the bytes it carried client -> upstream and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    pub ended: Ended,
    pub up: u64,
    pub down: u64,
}

/// Copies both ways (`buffer` bytes per read each way) until one side
/// ends, the pair idles for `idle`, or the user behind it may no longer use
/// the route (`reauth`, checked every second).
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Option<Duration>,
    reauth: Reauth,
    buffer: usize,
) -> Spliced
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let last = Rc::new(Cell::new(Instant::now()));
    let (up, down) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let mut client = Activity {
        io: client,
        last: last.clone(),
        read: up.clone(),
    };
    let mut upstream = Activity {
        io: upstream,
        last: last.clone(),
        read: down.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, buffer, buffer);
    tokio::pin!(copy);
    // Counted as read, so a side that ends with an error counts too.
    let done = |ended| Spliced {
        ended,
        up: up.get(),
        down: down.get(),
    };
    // A timer that never fires stands in for an idle timeout that is off.
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    // The first check a full second from now: awaiting an interval's
    // immediate first tick would hold the first bytes for a timer tick.
    let mut recheck = tokio::time::interval(REAUTH_EVERY);
    recheck.reset();
    loop {
        let idle_at = last.get() + idle.unwrap_or(far);
        tokio::select! {
            _ = copy.as_mut() => return done(Ended::Closed),
            _ = tokio::time::sleep_until(idle_at) => {
                if let Some(idle) = idle.filter(|i| last.get().elapsed() >= *i) {
                    tracing::debug!(idle_s = idle.as_secs_f64(), "idle upgraded connection closed");
                    return done(Ended::Idle);
                }
            }
            _ = recheck.tick() => {
                if let Some(why) = reauth.refused() {
                    let user = reauth.session.as_ref().map(|s| s.user.as_str());
                    tracing::info!(user, host = %reauth.host, reason = why, "upgraded connection no longer authorized: closed");
                    return done(Ended::Unauthorized(why));
                }
            }
        }
    }
}

/// An I/O that notes when bytes last came through it.
struct Activity<I> {
    io: I,
    last: Rc<Cell<Instant>>,
    /// Bytes read from `io`.
    read: Rc<Cell<u64>>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.set(Instant::now());
            self.read.set(self.read.get() + n as u64);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Activity<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
