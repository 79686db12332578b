//! Splicing an upgraded connection (WebSocket) to its upstream, byte for
//! byte, until either side closes or, with `websocket_idle_timeout`, no
//! byte has crossed either way for that long.
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

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Copies both ways until one side ends, or the pair idles for `idle`.
pub async fn splice(client: Upgraded, upstream: Upgraded, idle: Option<Duration>) {
    let last = Rc::new(Cell::new(Instant::now()));
    let mut client = Activity {
        io: TokioIo::new(client),
        last: last.clone(),
    };
    let mut upstream = Activity {
        io: TokioIo::new(upstream),
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let Some(idle) = idle else {
        let _ = copy.await;
        return;
    };
    tokio::pin!(copy);
    loop {
        tokio::select! {
            _ = copy.as_mut() => return,
            _ = tokio::time::sleep_until(last.get() + idle) => {
                if last.get().elapsed() >= idle {
                    tracing::debug!(idle_s = idle.as_secs_f64(), "idle upgraded connection closed");
                    return;
                }
            }
        }
    }
}

/// An I/O that notes when bytes last came through it.
struct Activity<I> {
    io: I,
    last: Rc<Cell<Instant>>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
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
