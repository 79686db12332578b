//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does it: the holder renews every [`RETRY`]; another
//! replica takes the Lease over once it has gone unrenewed for its
//! duration. Every replica serves traffic; only the leader writes Ingress
//! status and publishes Events. A replica that stops releases the Lease,
//! so that another takes over at its next try rather than after the
//! duration.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::metrics::KubeMetrics;

/// How long a Lease holds without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and the others try.
pub const RETRY: Duration = Duration::from_secs(2);
/// A leader that has not renewed for this long steps down (client-go's
/// renew deadline), well before the Lease could pass to another replica.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(8);

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    metrics: Arc<KubeMetrics>,
    leader: watch::Sender<bool>,
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: String,
        identity: String,
        metrics: Arc<KubeMetrics>,
    ) -> (Self, watch::Receiver<bool>) {
        let (leader, rx) = watch::channel(false);
        (
            Self {
                api,
                name,
                identity,
                metrics,
                leader,
            },
            rx,
        )
    }

    /// Tries to take or renew the Lease every [`RETRY`], forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(RETRY);
        let mut renewed: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            // Stamped before the request: the Lease says no later.
            let tried = std::time::Instant::now();
            // Bounded: a stalled request must not keep a leader leading.
            let held = match tokio::time::timeout(RETRY, self.try_once()).await {
                Ok(Ok(held)) => Some(held),
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.name, error = %e, "leader election: cannot reach the Lease");
                    None
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: the Lease did not answer in time");
                    None
                }
            };
            let leader = match held {
                Some(true) => {
                    renewed = Some(tried);
                    true
                }
                Some(false) => false,
                // Unsure: a leader keeps leading until its renew deadline
                // (a blip of the API server does not flap leadership).
                None => renewed.is_some_and(|t| t.elapsed() < RENEW_DEADLINE),
            };
            if !leader {
                renewed = None;
            }
            self.set(leader);
        }
    }

    fn set(&self, leader: bool) {
        // Only a change wakes the receivers.
        let mut was = leader;
        self.leader.send_if_modified(|v| {
            was = std::mem::replace(v, leader);
            was != leader
        });
        self.metrics.leader.store(leader, Relaxed);
        if was != leader {
            tracing::info!(
                lease = %self.name,
                identity = %self.identity,
                leader,
                "{}",
                if leader { "became the leader" } else { "no longer the leader" }
            );
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// True when this replica holds the Lease afterwards.
    async fn try_once(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder == self.identity {
            lease.spec = Some(self.spec(transitions, spec.acquire_time.clone()));
        } else {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            // The holder's clock against ours, as client-go compares them;
            // a duration that overflows counts as never expiring.
            let expired = match &spec.renew_time {
                None => true,
                Some(t) => {
                    t.0.checked_add(SignedDuration::from_secs(duration.clamp(0, 86_400)))
                        .is_ok_and(|end| end < Timestamp::now())
                }
            };
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            lease.spec = Some(self.spec(transitions + 1, None));
        }
        // `resourceVersion` makes this a compare-and-swap: of two replicas
        // taking over at once, one gets 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this replica holds it (on shutdown).
    pub async fn release(api: &Api<Lease>, name: &str, identity: &str) {
        let Ok(Some(mut lease)) = api.get_opt(name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %name, "released the leader Lease"),
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "could not release the leader Lease")
            }
        }
    }
}
