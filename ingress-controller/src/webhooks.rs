//! A leftover admission webhook: ingress-nginx's
//! `ValidatingWebhookConfiguration` outlives a careless uninstall, and
//! while its Service has no endpoints the API server refuses every Ingress
//! write (`failurePolicy: Fail`). heim looks for webhooks that judge
//! Ingresses and point at a Service without ready endpoints, at start and
//! every minute, and says so: a `warn` log line on every replica, and (the
//! leader, outside shadow mode) a `Warning AdmissionWebhookUnreachable`
//! Event on the configuration, once while it lasts.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Endpoints;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use tokio::sync::watch;

/// How often the webhooks are looked at.
const EVERY: Duration = Duration::from_secs(60);

/// A webhook that judges Ingresses through a Service with no endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dead {
    pub configuration: String,
    pub webhook: String,
    pub service: String,
}

/// Whether a webhook's rules cover Ingress writes.
fn judges_ingresses(w: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhook) -> bool {
    w.rules.iter().flatten().any(|r| {
        let group = r
            .api_groups
            .iter()
            .flatten()
            .any(|g| g == "networking.k8s.io" || g == "extensions" || g == "*");
        let resource = r
            .resources
            .iter()
            .flatten()
            .any(|x| x == "ingresses" || x == "*");
        group && resource
    })
}

/// The webhooks that judge Ingresses through a Service without ready
/// endpoints, and their configurations.
pub async fn dead(client: &Client) -> anyhow::Result<Vec<(Dead, ValidatingWebhookConfiguration)>> {
    let configs = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .list(&Default::default())
        .await?;
    let mut out = Vec::new();
    for c in configs.items {
        for w in c.webhooks.iter().flatten() {
            let Some(svc) = &w.client_config.service else {
                continue;
            };
            if !judges_ingresses(w) {
                continue;
            }
            let ep = Api::<Endpoints>::namespaced(client.clone(), &svc.namespace)
                .get_opt(&svc.name)
                .await?;
            let ready = ep
                .iter()
                .flat_map(|e| e.subsets.iter().flatten())
                .any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()));
            if !ready {
                out.push((
                    Dead {
                        configuration: c.metadata.name.clone().unwrap_or_default(),
                        webhook: w.name.clone(),
                        service: format!("{}/{}", svc.namespace, svc.name),
                    },
                    c.clone(),
                ));
            }
        }
    }
    Ok(out)
}

/// Looks every minute; logs each dead webhook once while it lasts, and the
/// leader (when `events`) publishes an Event on its configuration.
pub async fn watch(
    client: Client,
    recorder: Recorder,
    leader: watch::Receiver<bool>,
    events: bool,
) {
    let mut told: HashSet<Dead> = HashSet::new();
    let mut published: HashSet<Dead> = HashSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let found = match dead(&client).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read ValidatingWebhookConfigurations");
                continue;
            }
        };
        let now: HashSet<Dead> = found.iter().map(|(d, _)| d.clone()).collect();
        for (d, config) in &found {
            let message = format!(
                "ValidatingWebhookConfiguration {} (webhook {}) judges Ingress writes through Service {}, which has no ready endpoints: the API server refuses every Ingress write until it is deleted (kubectl delete validatingwebhookconfiguration {})",
                d.configuration, d.webhook, d.service, d.configuration
            );
            if told.insert(d.clone()) {
                tracing::warn!(configuration = %d.configuration, webhook = %d.webhook, service = %d.service, "{message}");
            }
            if events && *leader.borrow() && !published.contains(d) {
                let e = Event {
                    type_: EventType::Warning,
                    reason: "AdmissionWebhookUnreachable".into(),
                    note: Some(message.chars().take(1000).collect()),
                    action: "Check".into(),
                    secondary: None,
                };
                match recorder.publish(&e, &config.object_ref(&())).await {
                    Ok(()) => {
                        published.insert(d.clone());
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot publish an Event"),
                }
            }
        }
        told.retain(|d| now.contains(d));
        published.retain(|d| now.contains(d));
    }
}
