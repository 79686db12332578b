//! Runtime glue: hyper's executor for a worker's single-threaded runtime.
//!
//! Every worker runs a current-thread tokio runtime inside a `LocalSet`, so
//! connection tasks (and hyper's HTTP/2 stream tasks) are spawned locally
//! and may hold `!Send` state such as the worker's connection pools.

use std::future::Future;

/// Spawns hyper's background tasks on the current worker's `LocalSet`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
