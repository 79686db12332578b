//! Per-worker upstream connection pools.
//!
//! Each worker thread runs its own single-threaded runtime and keeps its
//! own pools in thread-locals: checking a connection out or in is a
//! `RefCell` borrow, never a lock or an atomic. HTTP/1 connections are kept
//! idle in a LIFO (the warmest first) and dropped once older than the
//! route's idle timeout; an HTTP/2 (h2c, or h2 over TLS) connection is
//! shared by every request of the worker to that endpoint. A TLS connection
//! is pooled like a plain one: the pools hold only senders, whatever stream
//! their connection task drives, and TLS and plain connections to one
//! address are kept apart by their endpoint ids (`upstream::Endpoint`).
//!
//! HTTP/1 connections are also counted, busy or idle, per endpoint and
//! worker ([`admit`]): past `upstream_max_connections`, a request waits in
//! line (up to `upstream_queue_size` of them) for a connection to come back
//! to the pool or to close. So a burst of client requests (or of HTTP/2
//! streams, or a rapid-reset flood) cannot make heim open one upstream
//! connection per request.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use tokio::sync::Notify;

use std::sync::Arc;

use crate::body::{BodySent, UpstreamBody};
use crate::upstream::UpstreamLimits;

/// Idle HTTP/1 connections kept per endpoint and worker.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

struct Idle {
    conn: Http1Conn,
    since: Instant,
}

/// A counted HTTP/1 connection: the sender and its place in the count,
/// which goes with it (into the pool and out), so that a connection the
/// pool discards frees its place at once.
#[derive(Debug)]
pub struct Http1Conn {
    pub sender: http1::SendRequest<UpstreamBody>,
    pub slot: Slot,
}

/// One endpoint's HTTP/1 connections in this worker.
#[derive(Default)]
struct Slots {
    open: usize,
    waiting: usize,
    /// Woken when a connection comes back to the pool or closes.
    freed: Rc<Notify>,
}

thread_local! {
    static HTTP1: RefCell<HashMap<u64, VecDeque<Idle>>> = RefCell::new(HashMap::new());
    static HTTP2: RefCell<HashMap<u64, http2::SendRequest<UpstreamBody>>> = RefCell::new(HashMap::new());
    static SLOTS: RefCell<HashMap<u64, Slots>> = RefCell::new(HashMap::new());
}

/// A counted HTTP/1 connection to an endpoint, held by the connection's
/// task; dropping it frees the place and wakes a waiting request.
#[derive(Debug)]
pub struct Slot {
    endpoint: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // `try_with`: a connection idle in the pool when the worker thread
        // ends is dropped while the thread-locals are torn down, perhaps
        // after `SLOTS`, which then has no count left to keep.
        let _ = SLOTS.try_with(|slots| {
            if let Some(s) = slots.borrow_mut().get_mut(&self.endpoint) {
                s.open = s.open.saturating_sub(1);
                s.freed.notify_one();
            }
        });
    }
}

/// A request waiting for a connection; leaves the line when dropped.
#[derive(Debug)]
pub struct Waiting {
    endpoint: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // `try_with`, as for `Slot`.
        let _ = SLOTS.try_with(|slots| {
            if let Some(s) = slots.borrow_mut().get_mut(&self.endpoint) {
                s.waiting = s.waiting.saturating_sub(1);
            }
        });
    }
}

/// May a request open a new HTTP/1 connection to `endpoint`?
pub enum Admission {
    /// Yes: the connection's place.
    Open(Slot),
    /// Not now: wait for the notification (then look in the pool again).
    Wait(Rc<Notify>, Waiting),
    /// No: the line is full.
    Full,
}

/// Asks for a place for a new connection to `endpoint` (after the pool had
/// no idle one). Idle connections that expired or closed are dropped first,
/// so they hold no place.
pub fn admit(endpoint: u64, limits: &UpstreamLimits) -> Admission {
    let swept = HTTP1.with_borrow_mut(|pools| {
        let idle = pools.get_mut(&endpoint)?;
        let (live, dead): (VecDeque<Idle>, VecDeque<Idle>) = idle
            .drain(..)
            .partition(|i| i.since.elapsed() < limits.idle_timeout && !i.conn.sender.is_closed());
        *idle = live;
        Some(dead)
    });
    drop(swept);
    SLOTS.with_borrow_mut(|slots| {
        let s = slots.entry(endpoint).or_default();
        if s.open < limits.max_connections {
            s.open += 1;
            Admission::Open(Slot { endpoint })
        } else if s.waiting < limits.queue_size {
            s.waiting += 1;
            Admission::Wait(s.freed.clone(), Waiting { endpoint })
        } else {
            Admission::Full
        }
    })
}

/// Wakes one request waiting for a connection to `endpoint`.
fn wake_one(endpoint: u64) {
    SLOTS.with_borrow(|slots| {
        if let Some(s) = slots.get(&endpoint) {
            if s.waiting > 0 {
                s.freed.notify_one();
            }
        }
    });
}

/// An HTTP/1 connection checked out of the pool, to give back when its
/// response body has been read to the end.
#[derive(Debug)]
pub struct PooledSender {
    pub endpoint: u64,
    pub idle_timeout: Duration,
    pub conn: Http1Conn,
    /// The request body, when there was one: a connection still sending it
    /// (the upstream answered early) is not reusable, and is closed.
    pub request: Option<Arc<BodySent>>,
}

impl PooledSender {
    /// Returns the connection to this worker's pool.
    pub fn release(self) {
        if self.conn.sender.is_closed() || self.request.is_some_and(|r| !r.is_done()) {
            return;
        }
        let dropped = HTTP1.with_borrow_mut(|pools| {
            let idle = pools.entry(self.endpoint).or_default();
            // The front holds the oldest: drop what has idled too long.
            let mut dropped = Vec::new();
            while idle.front().is_some_and(|i| {
                i.since.elapsed() >= self.idle_timeout || i.conn.sender.is_closed()
            }) {
                dropped.extend(idle.pop_front());
            }
            if idle.len() < MAX_IDLE_PER_ENDPOINT {
                idle.push_back(Idle {
                    conn: self.conn,
                    since: Instant::now(),
                });
            }
            dropped
        });
        drop(dropped);
        wake_one(self.endpoint);
    }
}

/// The most recently used idle HTTP/1 connection to `endpoint`, if any.
pub fn take_http1(endpoint: u64, idle_timeout: Duration) -> Option<Http1Conn> {
    HTTP1.with_borrow_mut(|pools| {
        let idle = pools.get_mut(&endpoint)?;
        while let Some(i) = idle.pop_back() {
            if i.since.elapsed() < idle_timeout && !i.conn.sender.is_closed() {
                return Some(i.conn);
            }
        }
        None
    })
}

/// This worker's open HTTP/2 connection to `endpoint`, if any.
pub fn http2(endpoint: u64) -> Option<http2::SendRequest<UpstreamBody>> {
    HTTP2.with_borrow_mut(|conns| match conns.get(&endpoint) {
        Some(s) if !s.is_closed() => Some(s.clone()),
        Some(_) => {
            conns.remove(&endpoint);
            None
        }
        None => None,
    })
}

/// Keeps an HTTP/2 connection for the worker's next requests to `endpoint`.
pub fn put_http2(endpoint: u64, sender: http2::SendRequest<UpstreamBody>) {
    HTTP2.with_borrow_mut(|conns| conns.insert(endpoint, sender));
}
