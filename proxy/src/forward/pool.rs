//! Per-worker upstream connection pools.
//!
//! Each worker thread runs its own single-threaded runtime and keeps its
//! own pools in thread-locals: checking a connection out or in is a
//! `RefCell` borrow, never a lock or an atomic. HTTP/1 connections are kept
//! idle in a LIFO (the warmest first) and dropped once older than the
//! route's idle timeout; an HTTP/2 (h2c) connection is shared by every
//! request of the worker to that endpoint.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};

use std::sync::Arc;

use crate::body::{BodySent, UpstreamBody};

/// Idle HTTP/1 connections kept per endpoint and worker.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

thread_local! {
    static HTTP1: RefCell<HashMap<u64, VecDeque<Idle>>> = RefCell::new(HashMap::new());
    static HTTP2: RefCell<HashMap<u64, http2::SendRequest<UpstreamBody>>> = RefCell::new(HashMap::new());
}

/// An HTTP/1 connection checked out of the pool, to give back when its
/// response body has been read to the end.
#[derive(Debug)]
pub struct PooledSender {
    pub endpoint: u64,
    pub idle_timeout: Duration,
    pub sender: http1::SendRequest<UpstreamBody>,
    /// The request body, when there was one: a connection still sending it
    /// (the upstream answered early) is not reusable, and is closed.
    pub request: Option<Arc<BodySent>>,
}

impl PooledSender {
    /// Returns the connection to this worker's pool.
    pub fn release(self) {
        if self.sender.is_closed() || self.request.is_some_and(|r| !r.is_done()) {
            return;
        }
        HTTP1.with_borrow_mut(|pools| {
            let idle = pools.entry(self.endpoint).or_default();
            // The front holds the oldest: drop what has idled too long.
            while idle
                .front()
                .is_some_and(|i| i.since.elapsed() >= self.idle_timeout || i.sender.is_closed())
            {
                idle.pop_front();
            }
            if idle.len() < MAX_IDLE_PER_ENDPOINT {
                idle.push_back(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// The most recently used idle HTTP/1 connection to `endpoint`, if any.
pub fn take_http1(
    endpoint: u64,
    idle_timeout: Duration,
) -> Option<http1::SendRequest<UpstreamBody>> {
    HTTP1.with_borrow_mut(|pools| {
        let idle = pools.get_mut(&endpoint)?;
        while let Some(i) = idle.pop_back() {
            if i.since.elapsed() < idle_timeout && !i.sender.is_closed() {
                return Some(i.sender);
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
