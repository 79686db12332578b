//! The controller's run: heim's settings from the ConfigMap, the data plane
//! started in-process, reflectors feeding one translate loop, and the
//! leader's duties (status, Events).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use heim_proxy::config::{Config, ConfigErrors};
use heim_proxy::metrics::{ExtraMetrics, Metrics};
use heim_proxy::source::Source;
use heim_proxy::state::{Compiled, Shared};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressLoadBalancerIngress};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use tokio::sync::{watch, Notify};

use crate::leader::Elector;
use crate::metrics::KubeMetrics;
use crate::model::{ObjKey, Snapshot};
use crate::options::Options;
use crate::translate::{Problem, Settings, Translation, Translator};
use crate::watch::reflect;

/// Changes that arrive together are translated together: after a change,
/// the loop waits this long for more before translating.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The config used when there is no `--config-map` (or it lacks `heim.toml`).
pub const DEFAULT_CONFIG: &str = "[server]\n\
https_listen = \"[::]:8443\"\n\
http_listen = \"[::]:8080\"\n\
admin_listen = \"[::]:10254\"\n";

/// The ConfigMap key holding heim's settings.
pub const CONFIG_KEY: &str = "heim.toml";

/// A kube client from `--kubeconfig`, else in-cluster (or the usual files).
pub async fn client(opts: &Options) -> anyhow::Result<Client> {
    client_for(opts.kubeconfig.as_deref()).await
}

/// A kube client from `kubeconfig`, else in-cluster (or the usual files).
pub async fn client_for(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster service account and no kubeconfig (--kubeconfig)")?,
    };
    Ok(Client::try_from(config)?)
}

/// The name heim's ConfigMap text is reported under.
fn config_path(key: Option<&ObjKey>) -> std::path::PathBuf {
    match key {
        Some(k) => format!("configmap/{}/{}/{CONFIG_KEY}", k.namespace, k.name).into(),
        None => "(built-in defaults)".into(),
    }
}

/// Parses heim's settings text as the ConfigMap gives it.
fn parse(key: Option<&ObjKey>, text: &str) -> Result<Config, ConfigErrors> {
    Config::parse_as(&config_path(key), text, false)
}

fn settings_of(config: &Config, opts: &Options) -> Settings {
    Settings {
        classes: opts.class_filter(),
        defaults: config.route_defaults,
        default_policy: config.ingress.default_policy,
        nginx_default_policy: config.ingress.nginx_default_policy,
        interpret_snippets: config.ingress.nginx_interpret_snippets,
        ssl_passthrough: opts.enable_ssl_passthrough,
        have_auth: config.auth.is_some(),
        allow_external_name: config.ingress.allow_external_name,
    }
}

/// Reads the ConfigMap's `heim.toml` (the defaults when there is no
/// `--config-map`, or it does not exist yet).
async fn config_text(client: &Client, key: Option<&ObjKey>) -> anyhow::Result<String> {
    let Some(key) = key else {
        return Ok(DEFAULT_CONFIG.into());
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
    let mut wait = Duration::from_millis(250);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.get_opt(&key.name).await {
            Ok(Some(cm)) => {
                return Ok(match cm.data.and_then(|mut d| d.remove(CONFIG_KEY)) {
                    Some(text) => text,
                    None => {
                        tracing::warn!(configmap = %key, "the ConfigMap has no key {CONFIG_KEY}: using the defaults");
                        DEFAULT_CONFIG.into()
                    }
                });
            }
            Ok(None) => {
                tracing::warn!(configmap = %key, "the ConfigMap does not exist: using the defaults until it does");
                return Ok(DEFAULT_CONFIG.into());
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(configmap = %key, error = %e, "cannot read the ConfigMap yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("reading ConfigMap {key}")),
        }
    }
}

/// The stores the translate loop reads.
struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    endpoints: Endpointish,
    tls_secrets: Store<Secret>,
    opaque_secrets: Store<Secret>,
    config_map: Option<Store<ConfigMap>>,
    nginx_configmap: Option<(ObjKey, Store<ConfigMap>)>,
}

/// EndpointSlices where the API server serves `discovery.k8s.io/v1`, else
/// core Endpoints (Kubernetes before 1.21).
enum Endpointish {
    Slices(Store<EndpointSlice>),
    Endpoints(Store<Endpoints>),
}

impl Stores {
    async fn wait_until_ready(&self) {
        let _ = self.ingresses.wait_until_ready().await;
        let _ = self.classes.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = match &self.endpoints {
            Endpointish::Slices(s) => s.wait_until_ready().await,
            Endpointish::Endpoints(s) => s.wait_until_ready().await,
        };
        let _ = self.tls_secrets.wait_until_ready().await;
        let _ = self.opaque_secrets.wait_until_ready().await;
        if let Some(c) = &self.config_map {
            let _ = c.wait_until_ready().await;
        }
        if let Some((_, c)) = &self.nginx_configmap {
            let _ = c.wait_until_ready().await;
        }
    }

    fn snapshot(&self, metrics: &KubeMetrics) -> Snapshot {
        let mut snap = Snapshot {
            ingresses: self.ingresses.state(),
            classes: self.classes.state(),
            ..Snapshot::default()
        };
        snap.set_services(self.services.state());
        match &self.endpoints {
            Endpointish::Slices(s) => {
                metrics.set_objects("EndpointSlice", s.len());
                snap.set_endpoint_slices(s.state());
            }
            Endpointish::Endpoints(s) => {
                metrics.set_objects("Endpoints", s.len());
                snap.set_endpoints(s.state());
            }
        }
        snap.set_secrets(
            self.tls_secrets
                .state()
                .into_iter()
                .chain(self.opaque_secrets.state()),
        );
        if let Some((key, store)) = &self.nginx_configmap {
            let found = store
                .state()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some(key.name.as_str()));
            // A ConfigMap named but gone: its defaults, all of them.
            snap.nginx_configmap = Some(found.and_then(|c| c.data.clone()).unwrap_or_default());
        }
        metrics.set_objects("Ingress", snap.ingresses.len());
        metrics.set_objects("IngressClass", snap.classes.len());
        metrics.set_objects("Service", snap.services.len());
        metrics.set_objects("Secret", snap.secrets.len());
        snap
    }
}

fn watch_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller and the data plane until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = client(&opts).await?;
    let cm_key = opts.config_map.clone();
    let text = config_text(&client, cm_key.as_ref()).await?;
    let config = parse(cm_key.as_ref(), &text)?;
    let metrics = Metrics::default();
    let kube_metrics = Arc::new(KubeMetrics::default());
    {
        let km = kube_metrics.clone();
        metrics.add_extra(ExtraMetrics(Arc::new(move |out| km.render(out))));
    }
    let mut compiled = Compiled::new(&config, &metrics, true).map_err(ConfigErrors)?;
    let acme = compiled.acme.take();
    let mut running = heim_proxy::start(compiled, metrics)?;
    let shared = running.shared.clone();
    shared.expect_source(Source::Kubernetes);
    running.serve_admin()?;
    let mut acme_manager = heim_proxy::acme::Manager::default();
    acme_manager.apply(acme, &shared);

    let changed = Arc::new(Notify::new());
    let ns = opts.watch_namespace.as_deref();
    let km = &kube_metrics;
    let wc = watcher::Config::default;
    let endpoints = if endpoint_slices_served(&client).await {
        Endpointish::Slices(reflect(
            watch_api(&client, ns),
            wc(),
            "EndpointSlice",
            changed.clone(),
            km.clone(),
        ))
    } else {
        tracing::info!("the API server does not serve discovery.k8s.io/v1 EndpointSlices: reading core Endpoints");
        Endpointish::Endpoints(reflect(
            watch_api(&client, ns),
            wc(),
            "Endpoints",
            changed.clone(),
            km.clone(),
        ))
    };
    let stores = Stores {
        ingresses: reflect(
            watch_api(&client, ns),
            wc(),
            "Ingress",
            changed.clone(),
            km.clone(),
        ),
        classes: reflect(
            Api::all(client.clone()),
            wc(),
            "IngressClass",
            changed.clone(),
            km.clone(),
        ),
        services: reflect(
            watch_api(&client, ns),
            wc(),
            "Service",
            changed.clone(),
            km.clone(),
        ),
        endpoints,
        tls_secrets: reflect(
            watch_api(&client, ns),
            wc().fields("type=kubernetes.io/tls"),
            "Secret",
            changed.clone(),
            km.clone(),
        ),
        opaque_secrets: reflect(
            watch_api(&client, ns),
            wc().fields("type=Opaque"),
            "Secret",
            changed.clone(),
            km.clone(),
        ),
        config_map: cm_key.as_ref().map(|k| {
            reflect(
                Api::namespaced(client.clone(), &k.namespace),
                wc().fields(&format!("metadata.name={}", k.name)),
                "ConfigMap",
                changed.clone(),
                km.clone(),
            )
        }),
        nginx_configmap: opts.nginx_configmap.as_ref().map(|k| {
            (
                k.clone(),
                reflect(
                    Api::namespaced(client.clone(), &k.namespace),
                    wc().fields(&format!("metadata.name={}", k.name)),
                    "ConfigMap",
                    changed.clone(),
                    km.clone(),
                ),
            )
        }),
    };

    let identity = opts.identity();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &opts.own_namespace());
    let (elector, leader) = Elector::new(
        lease_api.clone(),
        opts.election_id.clone(),
        identity.clone(),
        kube_metrics.clone(),
    );
    let election = tokio::spawn(elector.run());
    let (status_tx, status_rx) = watch::channel(StatusJob::default());
    if opts.update_status {
        tokio::spawn(write_status(
            client.clone(),
            status_rx,
            kube_metrics.clone(),
        ));
    }
    let reporter = Reporter {
        controller: "heim-ingress".into(),
        instance: Some(identity.clone()),
    };
    tokio::spawn(crate::webhooks::watch(
        client.clone(),
        Recorder::new(client.clone(), reporter.clone()),
        leader.clone(),
        opts.update_status,
    ));
    let mut lp = Loop {
        opts: opts.clone(),
        shared: shared.clone(),
        settings: settings_of(&config, &opts),
        config_text: text,
        config_missing: false,
        acme: acme_manager,
        translator: Translator::default(),
        recorder: Recorder::new(client.clone(), reporter),
        reported: HashSet::new(),
        served_certs: None,
        metrics: kube_metrics.clone(),
        leader: leader.clone(),
        status: status_tx,
        cm_key,
    };

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut leader_changes = leader;
    tokio::select! {
        _ = stores.wait_until_ready() => {}
        _ = term.recv() => return shutdown(running, election, &lease_api, &opts, &identity).await,
        _ = int.recv() => return shutdown(running, election, &lease_api, &opts, &identity).await,
    }
    tracing::info!("caches synced");
    loop {
        lp.round(&stores);
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            // The settings live in the ConfigMap and apply when it changes;
            // SIGHUP translates anew (and does not kill the process).
            _ = hup.recv() => tracing::info!("SIGHUP: translating anew; settings come from the ConfigMap"),
            // A new leader reports the problems and status anew.
            r = leader_changes.changed() => {
                if r.is_ok() && *leader_changes.borrow_and_update() {
                    lp.reported.clear();
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    shutdown(running, election, &lease_api, &opts, &identity).await
}

async fn shutdown(
    running: heim_proxy::Running,
    election: tokio::task::JoinHandle<()>,
    lease_api: &Api<Lease>,
    opts: &Options,
    identity: &str,
) -> anyhow::Result<()> {
    election.abort();
    Elector::release(lease_api, &opts.election_id, identity).await;
    running.drain().await;
    Ok(())
}

/// True when `discovery.k8s.io/v1` EndpointSlices can be listed.
async fn endpoint_slices_served(client: &Client) -> bool {
    let api: Api<EndpointSlice> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        // Anything else (RBAC, a blip) is not an answer; EndpointSlices
        // are the norm since Kubernetes 1.21.
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether EndpointSlices are served; assuming they are");
            true
        }
    }
}

/// The translate loop's state.
struct Loop {
    opts: Options,
    shared: Arc<Shared>,
    settings: Settings,
    /// The ConfigMap text now serving.
    config_text: String,
    /// The ConfigMap was found gone (logged once).
    config_missing: bool,
    acme: heim_proxy::acme::Manager,
    translator: Translator,
    recorder: Recorder,
    /// Problems already published as Events.
    reported: HashSet<Problem>,
    /// What the certificates now serving are made of.
    served_certs: Option<Vec<crate::translate::CertSource>>,
    metrics: Arc<KubeMetrics>,
    leader: watch::Receiver<bool>,
    status: watch::Sender<StatusJob>,
    cm_key: Option<ObjKey>,
}

impl Loop {
    fn round(&mut self, stores: &Stores) {
        if let Some(store) = &stores.config_map {
            self.config_map(store);
        }
        let started = Instant::now();
        let snap = stores.snapshot(&self.metrics);
        let t = self.translator.translate(&snap, &self.settings);
        let took = started.elapsed();
        self.metrics.translated(took);
        let mut problems = t.problems.clone();
        self.push(&snap, t, &mut problems);
        self.metrics
            .snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut by_reason = BTreeMap::new();
        for p in &problems {
            *by_reason.entry(p.reason).or_default() += 1;
        }
        self.metrics.set_problems(by_reason);
        tracing::debug!(took_ms = took.as_millis() as u64, "translated");
        self.report(&snap, problems);
    }

    /// Swaps the translation into the data plane.
    fn push(&mut self, snap: &Snapshot, t: Translation, problems: &mut Vec<Problem>) {
        let Translation {
            routes,
            owners,
            certificates,
            certificate_versions,
            served,
            ..
        } = t;
        let n = routes.len();
        // Routes the ConfigMap's [[route]]s already claim.
        for d in self.shared.push_routes(Source::Kubernetes, routes) {
            if let Some(owner) = owners.get(d.index) {
                problems.push(Problem {
                    ingress: owner.clone(),
                    reason: "RouteConflict",
                    key: format!("route {}", d.second),
                    message: format!("the ConfigMap's route {:?} serves it", d.first),
                });
            }
        }
        // Certificates are swapped only when what they are made of changed.
        if self.served_certs.as_ref() != Some(&certificate_versions) {
            let count = certificates.len();
            self.shared
                .push_certificates(Source::Kubernetes, certificates);
            self.served_certs = Some(certificate_versions);
            tracing::info!(certificates = count, "certificates from Secrets swapped in");
        }
        tracing::info!(routes = n, ingresses = served.len(), "routes swapped in");
        if self.opts.update_status && *self.leader.borrow() {
            let addresses = self.published(snap);
            let by_key: HashMap<ObjKey, &Arc<Ingress>> = snap
                .ingresses
                .iter()
                .map(|i| (ObjKey::of(i.as_ref()), i))
                .collect();
            let status_of = |i: &Ingress| {
                i.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.clone())
                    .unwrap_or_default()
            };
            if let Some(addresses) = addresses {
                let serving: HashSet<&ObjKey> = served.iter().collect();
                let mut ingresses: Vec<StatusWant> = served
                    .iter()
                    .filter_map(|k| {
                        let i = by_key.get(k)?;
                        Some((k.clone(), status_of(i), addresses.clone()))
                    })
                    .collect();
                // An Ingress heim no longer serves (its class changed) loses
                // the address heim wrote; another controller's is left alone.
                ingresses.extend(by_key.iter().filter_map(|(k, i)| {
                    let now = status_of(i);
                    (!serving.contains(k) && !now.is_empty() && now == addresses)
                        .then(|| (k.clone(), now, Vec::new()))
                }));
                self.status.send_replace(StatusJob { ingresses });
            }
        }
    }

    /// The addresses to publish: `--publish-status-address`, else the
    /// `--publish-service`'s load balancer; `None` when neither is set.
    fn published(&self, snap: &Snapshot) -> Option<Vec<IngressLoadBalancerIngress>> {
        if !self.opts.publish_status_address.is_empty() {
            return Some(
                self.opts
                    .publish_status_address
                    .iter()
                    .map(|a| address(a))
                    .collect(),
            );
        }
        let key = self.opts.publish_service.as_ref()?;
        let Some(svc) = snap.services.get(key) else {
            tracing::warn!(service = %key, "--publish-service is not among the watched Services (another --watch-namespace?): no status is written");
            return None;
        };
        let lb = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        let mut out: Vec<IngressLoadBalancerIngress> = lb
            .into_iter()
            .map(|i| IngressLoadBalancerIngress {
                ip: i.ip,
                hostname: i.hostname,
                ..Default::default()
            })
            .collect();
        if out.is_empty() {
            out = svc
                .spec
                .as_ref()
                .and_then(|s| s.external_ips.clone())
                .unwrap_or_default()
                .iter()
                .map(|a| address(a))
                .collect();
        }
        Some(out)
    }

    /// Logs new problems, and (the leader) publishes each as an Event.
    fn report(&mut self, snap: &Snapshot, problems: Vec<Problem>) {
        let now: HashSet<Problem> = problems.into_iter().collect();
        let fresh: Vec<Problem> = now.difference(&self.reported).cloned().collect();
        // Shadow mode (--update-status=false) writes nothing, Events included.
        let leader = *self.leader.borrow() && self.opts.update_status;
        // References only for the Ingresses that have something new.
        let wanted: HashSet<&ObjKey> = fresh.iter().map(|p| &p.ingress).collect();
        let refs: HashMap<ObjKey, ObjectReference> = if !leader || wanted.is_empty() {
            HashMap::new()
        } else {
            snap.ingresses
                .iter()
                .map(|i| (ObjKey::of(i.as_ref()), i))
                .filter(|(k, _)| wanted.contains(k))
                .map(|(k, i)| (k, i.object_ref(&())))
                .collect()
        };
        for p in &fresh {
            if p.reason == crate::translate::ADOPTED {
                tracing::info!(ingress = %p.ingress, reason = p.reason, "{}", p.message);
            } else {
                tracing::warn!(ingress = %p.ingress, reason = p.reason, key = %p.key, "{}", p.message);
            }
        }
        if leader {
            let recorder = self.recorder.clone();
            let metrics = self.metrics.clone();
            let events: Vec<(Event, ObjectReference)> = fresh
                .into_iter()
                .filter_map(|p| {
                    let r = refs.get(&p.ingress)?.clone();
                    Some((
                        Event {
                            type_: if p.reason == crate::translate::ADOPTED {
                                EventType::Normal
                            } else {
                                EventType::Warning
                            },
                            reason: p.reason.into(),
                            note: Some(truncate(&format!("{}: {}", p.key, p.message), 1000)),
                            action: "Translate".into(),
                            secondary: None,
                        },
                        r,
                    ))
                })
                .collect();
            if !events.is_empty() {
                tokio::spawn(async move {
                    for (e, r) in events {
                        match recorder.publish(&e, &r).await {
                            Ok(()) => {
                                metrics
                                    .events
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, reason = %e.reason, "cannot publish an Event")
                            }
                        }
                    }
                });
            }
        }
        // A follower logs; the leader publishes. What was reported is
        // reported once.
        self.reported = now;
    }

    /// Applies a changed ConfigMap: its settings, [[route]]s, sign-in and
    /// [acme]; a change that does not load keeps the running settings.
    fn config_map(&mut self, store: &Store<ConfigMap>) {
        let Some(key) = &self.cm_key else {
            return;
        };
        let Some(text) = store
            .state()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(key.name.as_str()))
            .and_then(|c| c.data.as_ref().and_then(|d| d.get(CONFIG_KEY).cloned()))
        else {
            // Deleted (or its key): the running settings stay; an operator
            // who wants the defaults writes them.
            if !self.config_missing {
                tracing::warn!(configmap = %key, "the ConfigMap or its key {CONFIG_KEY} is gone: the running settings stay");
                self.config_missing = true;
            }
            return;
        };
        self.config_missing = false;
        if text == self.config_text {
            return;
        }
        self.config_text = text.clone();
        let shared = self.shared.clone();
        let result = parse(Some(key), &text)
            .map_err(|e| e.0)
            .and_then(|config| Compiled::new(&config, &shared.metrics, true).map(|c| (config, c)));
        match result {
            Ok((config, compiled)) => {
                heim_proxy::reload::apply(&shared, compiled, &mut self.acme);
                self.settings = settings_of(&config, &self.opts);
                tracing::info!(configmap = %key, "settings reloaded from the ConfigMap");
            }
            Err(errors) => {
                heim_proxy::reload::reject(&shared, &errors);
                tracing::error!(configmap = %key, errors = errors.len(), "settings rejected; the previous settings keep serving");
                if *self.leader.borrow() && self.opts.update_status {
                    let note = errors
                        .iter()
                        .map(|e| format!("line {}: {}: {}", e.line, e.key, e.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let reference = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("ConfigMap".into()),
                        namespace: Some(key.namespace.clone()),
                        name: Some(key.name.clone()),
                        ..Default::default()
                    };
                    let recorder = self.recorder.clone();
                    let metrics = self.metrics.clone();
                    tokio::spawn(async move {
                        let e = Event {
                            type_: EventType::Warning,
                            reason: "InvalidConfig".into(),
                            note: Some(truncate(&note, 1000)),
                            action: "Reload".into(),
                            secondary: None,
                        };
                        match recorder.publish(&e, &reference).await {
                            Ok(()) => {
                                metrics
                                    .events
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(err) => tracing::warn!(error = %err, "cannot publish an Event"),
                        }
                    });
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An address for Ingress status: an IP, else a host name.
fn address(a: &str) -> IngressLoadBalancerIngress {
    if a.parse::<std::net::IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(a.to_string()),
            ..Default::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(a.to_string()),
            ..Default::default()
        }
    }
}

/// An Ingress, the addresses its status shows now, and those it is to show.
type StatusWant = (
    ObjKey,
    Vec<IngressLoadBalancerIngress>,
    Vec<IngressLoadBalancerIngress>,
);

/// What the status writer is to make true.
#[derive(Clone, Debug, Default)]
struct StatusJob {
    ingresses: Vec<StatusWant>,
}

/// Writes Ingress status, only where it differs from the addresses, the
/// latest job first (a job that arrives mid-way replaces the rest).
async fn write_status(
    client: Client,
    mut jobs: watch::Receiver<StatusJob>,
    metrics: Arc<KubeMetrics>,
) {
    // What this writer last wrote, so that a job made from a snapshot the
    // write has not reached yet does not write it again.
    let mut written: HashMap<ObjKey, Vec<IngressLoadBalancerIngress>> = HashMap::new();
    while jobs.changed().await.is_ok() {
        let job = jobs.borrow_and_update().clone();
        written.retain(|k, _| job.ingresses.iter().any(|(j, _, _)| j == k));
        for (key, now, want) in &job.ingresses {
            if now == want {
                // The cache has caught up with the write.
                written.remove(key);
                continue;
            }
            if written.get(key) == Some(want) {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
            let patch = if want.is_empty() {
                serde_json::json!({ "status": { "loadBalancer": { "ingress": null } } })
            } else {
                serde_json::json!({ "status": { "loadBalancer": { "ingress": want } } })
            };
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    metrics
                        .status_writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    written.insert(key.clone(), want.clone());
                    tracing::info!(ingress = %key, cleared = want.is_empty(), "status updated");
                }
                Err(e) => {
                    tracing::warn!(ingress = %key, error = %e, "cannot update the Ingress status")
                }
            }
            if jobs.has_changed().unwrap_or(false) {
                break;
            }
        }
    }
}
