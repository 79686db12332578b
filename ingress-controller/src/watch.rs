//! Reflectors: a local cache of each kind the controller reads, kept by a
//! watch that resumes by itself (with backoff) when the API server goes
//! away; every change wakes the translate loop.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::metrics::KubeMetrics;

/// Retries a failed watch after 250 ms, doubling to 5 s: the API server
/// is usually back within seconds (a restart, a leader change of etcd),
/// and a watch that waits 30 s (kube-rs' default cap) keeps routes stale.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retry {
    next: Option<Duration>,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next.unwrap_or(FIRST_RETRY);
        self.next = Some((d * 2).min(MAX_RETRY));
        Some(d)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = None;
    }
}

/// Starts a reflector of `api` on the current runtime; returns its store.
/// `kind` labels logs and `heim_kube_*` metrics.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    changed: Arc<Notify>,
    metrics: Arc<KubeMetrics>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).backoff(Retry::default()));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                    if failing {
                        tracing::info!(kind, "watch resumed");
                        failing = false;
                    }
                    changed.notify_one();
                }
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(kind, error = %e, "watch failed; serving the last snapshot while it retries");
                    }
                    metrics.watch_restart(kind);
                    failing = true;
                }
            }
        }
    });
    reader
}
