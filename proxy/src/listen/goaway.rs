//! Ending an HTTP/2 client connection with GOAWAY `ENHANCE_YOUR_CALM`.
//!
//! hyper's server can only shut a connection down gracefully (GOAWAY
//! `NO_ERROR`, then it waits for the streams in flight); h2's
//! `abrupt_shutdown(reason)` is not reachable through it. A client that
//! resets stream after stream once heim has accepted them (rapid reset,
//! each stream having cost an upstream request) deserves neither the wait
//! nor a "no error". So the connection's byte stream passes through
//! [`GoawayIo`], which keeps track of where HTTP/2 frames begin in both
//! directions (nine-byte headers; payloads are skipped, never parsed) and,
//! once [`GoawayIo::trip`] is called, writes its own GOAWAY frame at the
//! next frame boundary of hyper's output, flushes it, and from then on ends
//! the stream both ways, so hyper drops the connection.
//!
//! The cost on the hot path is a few comparisons per read and write: only
//! frame headers are looked at.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface every HTTP/2 client sends first.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_GOAWAY: u8 = 0x7;
/// RFC 9113 §7.
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Where a byte stream is in its sequence of frames.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes to skip before the next frame header (a payload, or the preface).
    skip: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
}

impl Frames {
    /// Walks over `bytes`; `on_header` sees each complete frame header.
    fn advance(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(&[u8; FRAME_HEADER_LEN])) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                on_header(&h);
            }
        }
    }

    /// True between two frames.
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.header_len == 0
    }
}

/// Asks a [`GoawayIo`] to end its connection; kept by the serve loop.
#[derive(Clone, Debug, Default)]
pub struct GoawayTrigger(Rc<Cell<bool>>);

impl GoawayTrigger {
    /// Sends GOAWAY `ENHANCE_YOUR_CALM` at the next frame boundary and ends
    /// the connection. The caller must go on polling the connection.
    pub fn trip(&self) {
        self.0.set(true);
    }
}

/// An HTTP/2 server connection's byte stream that can be cut with a GOAWAY
/// of heim's own.
#[derive(Debug)]
pub struct GoawayIo<I> {
    io: I,
    trigger: GoawayTrigger,
    inbound: Frames,
    outbound: Frames,
    /// The highest stream the client opened: the GOAWAY's last stream id.
    last_stream: u32,
    /// The GOAWAY frame once built, and how much of it is written.
    goaway: Option<([u8; FRAME_HEADER_LEN + 8], usize)>,
    /// Set once the GOAWAY is out: every read is EOF, every write fails.
    done: bool,
}

impl<I> GoawayIo<I> {
    pub fn new(io: I, trigger: GoawayTrigger) -> Self {
        Self {
            io,
            trigger,
            inbound: Frames {
                skip: PREFACE_LEN,
                ..Frames::default()
            },
            outbound: Frames::default(),
            last_stream: 0,
            goaway: None,
            done: false,
        }
    }
}

impl<I: AsyncWrite + Unpin> GoawayIo<I> {
    /// Once tripped and between two of hyper's frames: writes and flushes
    /// the GOAWAY. `Ready(true)` once it is out (or could not be written).
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.done {
            return Poll::Ready(true);
        }
        if !self.trigger.0.get() || !self.outbound.at_boundary() {
            return Poll::Ready(false);
        }
        let last = self.last_stream;
        let (frame, written) = self.goaway.get_or_insert_with(|| {
            let mut f = [0u8; FRAME_HEADER_LEN + 8];
            f[2] = 8; // payload length
            f[3] = TYPE_GOAWAY;
            f[9..13].copy_from_slice(&(last & 0x7fff_ffff).to_be_bytes());
            f[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
            (f, 0)
        });
        while *written < frame.len() {
            match Pin::new(&mut self.io).poll_write(cx, &frame[*written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.done = true;
                    return Poll::Ready(true);
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        // A clean close after it (TLS close_notify, then FIN), so the
        // client reads the GOAWAY rather than a truncated stream.
        match Pin::new(&mut self.io).poll_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.done = true;
                Poll::Ready(true)
            }
        }
    }

    fn ended() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed with GOAWAY ENHANCE_YOUR_CALM",
        )
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for GoawayIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.trigger.0.get() {
            // Between frames: GOAWAY now, then EOF. In a frame: hyper is
            // still writing it, and will be woken to finish; stop reading.
            return match this.poll_goaway(cx) {
                Poll::Ready(true) => Poll::Ready(Ok(())),
                Poll::Ready(false) | Poll::Pending => Poll::Pending,
            };
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let last = &mut this.last_stream;
            this.inbound.advance(&buf.filled()[before..], |h| {
                if h[3] == TYPE_HEADERS {
                    let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    *last = (*last).max(id);
                }
            });
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for GoawayIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_goaway(cx) {
            Poll::Ready(false) => {}
            Poll::Ready(true) => return Poll::Ready(Err(Self::ended())),
            Poll::Pending => return Poll::Pending,
        }
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.outbound.advance(&buf[..n], |_| {});
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_goaway(cx) {
            Poll::Ready(false) => {}
            Poll::Ready(true) => return Poll::Ready(Err(Self::ended())),
            Poll::Pending => return Poll::Pending,
        }
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            for b in bufs {
                let k = n.min(b.len());
                this.outbound.advance(&b[..k], |_| {});
                n -= k;
                if n == 0 {
                    break;
                }
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_goaway(cx) {
            Poll::Ready(true) => Poll::Ready(Err(Self::ended())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(false) => Pin::new(&mut this.io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_goaway(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn goaway_goes_out_between_frames_with_the_last_stream() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let trigger = GoawayTrigger::default();
        let mut io = GoawayIo::new(server, trigger.clone());
        let (mut client_read, mut client_write) = tokio::io::split(client);

        let mut inbound = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        inbound.extend(frame(0x4, 0, &[])); // SETTINGS
        inbound.extend(frame(TYPE_HEADERS, 1, &[0; 5]));
        inbound.extend(frame(0x0, 1, &[7; 300])); // DATA, its payload not a header
        inbound.extend(frame(TYPE_HEADERS, 7, &[0; 3]));
        client_write.write_all(&inbound).await.unwrap();
        let mut got = vec![0u8; inbound.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(io.last_stream, 7);

        // Half a frame out: the GOAWAY waits for the rest of it.
        let out = frame(0x0, 1, &[1; 100]);
        io.write_all(&out[..50]).await.unwrap();
        trigger.trip();
        assert!(!io.outbound.at_boundary());
        io.write_all(&out[50..]).await.unwrap();
        // Between frames now: the next write sends the GOAWAY, and fails.
        io.write_all(&frame(0x0, 1, b"late")).await.unwrap_err();
        let mut buf = [0u8; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "EOF after the GOAWAY");
        drop(io);
        let mut wire = Vec::new();
        client_read.read_to_end(&mut wire).await.unwrap();
        assert_eq!(&wire[..out.len()], &out[..]);
        let goaway = &wire[out.len()..];
        assert_eq!(goaway, frame(TYPE_GOAWAY, 0, &[0, 0, 0, 7, 0, 0, 0, 0xb]));
    }
}
