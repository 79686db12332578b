//! The state every worker shares: the live route table, certificates and
//! settings (each a snapshot behind an `ArcSwap`, replaced whole on reload),
//! the metrics, and the drain signal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::auth::{Auth, AuthState};

use crate::config::{Config, ConfigError, ServerSettings};
use crate::metrics::Metrics;
use crate::route::{DuplicateRoute, RouteSpec};
use crate::route::{Policy, RouteTable};
use crate::source::Source;
use crate::tls::{CertEntry, CertLayers, CertStore};

/// Shared by the workers and the control thread.
#[derive(Debug)]
pub struct Shared {
    /// The live table, built from every source's routes (`push_routes`).
    pub routes: ArcSwap<RouteTable>,
    /// Each source's latest routes.
    route_layers: Mutex<BTreeMap<Source, Vec<RouteSpec>>>,
    /// Sources `/readyz` waits for, and those that have delivered.
    sources: Mutex<(BTreeSet<Source>, BTreeSet<Source>)>,
    /// Every source's certificates, and the live store.
    pub certs: Arc<CertLayers>,
    pub settings: ArcSwap<ServerSettings>,
    /// Sign-in, when `[auth]` is configured.
    pub auth: ArcSwapOption<Auth>,
    /// ACME challenge answers (HTTP-01 tokens).
    pub acme_challenges: Arc<crate::acme::Challenges>,
    /// Revocations and the like: kept across reloads.
    pub auth_state: AuthState,
    /// Why tunnel streams were cut lately, for `heim-tunnel` to tell.
    pub tunnel_cuts: crate::tunnel::Cuts,
    /// The agents' keys and their live connections.
    pub agents: crate::tunnel::agents::Registry,
    pub metrics: Metrics,
    /// Set once SIGTERM starts the drain; `/readyz` turns 503.
    pub draining: AtomicBool,
    /// Workers that have started accepting.
    pub workers_ready: AtomicUsize,
    /// The port the https listener got, for `https_listen` on port 0.
    pub bound_https_port: AtomicU16,
}

/// Everything a config file compiles to, ready to swap in.
#[derive(Debug)]
pub struct Compiled {
    pub settings: ServerSettings,
    pub routes: RouteTable,
    /// The routes as specs: the file's layer of the live table.
    pub route_specs: Vec<RouteSpec>,
    /// The file layer: the config's `[[certificate]]` entries.
    pub certs: Vec<CertEntry>,
    /// `server.default_certificate`.
    pub default_certificate: Option<String>,
    pub auth: Option<Auth>,
    /// `[acme]` with its files read: what the ACME client is to get.
    pub acme: Option<crate::acme::Loaded>,
    /// `[[agent]]` with token files read: each agent's token hash.
    pub agents: crate::tunnel::agents::Keys,
}

impl Compiled {
    /// Reads certificates and sign-in's files and compiles routes; errors
    /// name file, line and key. `create_keys` creates a missing JWT
    /// signing key (a serving heim does; `check` does not).
    pub fn new(
        config: &Config,
        metrics: &Metrics,
        create_keys: bool,
    ) -> Result<Compiled, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let auth = match &config.auth {
            None => None,
            Some(spec) => match Auth::load(spec, create_keys) {
                Ok(a) => Some(a),
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|(key, message)| ConfigError {
                        file: config.path.clone(),
                        line: spec.line,
                        key,
                        message,
                    }));
                    None
                }
            },
        };
        let certs = CertStore::file_layer(config)
            .map_err(|e| errors.extend(e))
            .ok();
        if let (Some((name, line)), Some(certs)) = (&config.default_certificate, &certs) {
            let acme = config.acme.as_ref().map_or(&[][..], |a| &a.domains[..]);
            if !crate::tls::names_cover(certs, acme, name) {
                errors.push(ConfigError {
                    file: config.path.clone(),
                    line: *line,
                    key: "server.default_certificate".into(),
                    message: format!(
                        "{name:?} is covered by no [[certificate]] and no acme domain"
                    ),
                });
            }
        }
        let acme = config.acme.as_ref().and_then(|spec| {
            // Sign-in's own host needs a certificate too: ACME gets it
            // unless a file serves it.
            let mut spec = spec.clone();
            if let (Some(auth), Some(files)) = (&config.auth, &certs) {
                let host = &auth.auth_host;
                if !crate::tls::names_cover(files, &spec.domains, host) {
                    spec.domains.push(host.clone());
                }
            }
            crate::acme::load(&spec, &config.path)
                .map_err(|e| errors.extend(e))
                .ok()
        });
        // Webhook secrets are read here, with the other files.
        let mut specs = config.routes.clone();
        for (i, spec) in specs.iter_mut().enumerate() {
            if let Policy::Webhook(w) = &mut spec.policy {
                match std::fs::read(&w.secret_file) {
                    Ok(secret) if !secret.is_empty() => {
                        Arc::make_mut(w).secret = crate::auth::trim_secret(secret).into();
                    }
                    Ok(_) => {
                        errors.push(config.route_error(i, "webhook.secret_file is empty".into()))
                    }
                    Err(e) => errors.push(config.route_error(
                        i,
                        format!("webhook.secret_file {}: {e}", w.secret_file.display()),
                    )),
                }
            }
        }
        let agents = crate::tunnel::agents::keys(config, &mut errors);
        let route_specs = specs.clone();
        let routes = RouteTable::build(specs, |name| metrics.route(name))
            .map_err(|dups| {
                errors.extend(
                    dups.into_iter()
                        .map(|d| config.route_error(d.index, d.to_string())),
                );
            })
            .ok();
        match (certs, routes) {
            (Some(certs), Some(routes)) if errors.is_empty() => Ok(Compiled {
                settings: config.server.clone(),
                routes,
                route_specs,
                certs,
                default_certificate: config.default_certificate.as_ref().map(|d| d.0.clone()),
                auth,
                acme,
                agents,
            }),
            _ => Err(errors),
        }
    }
}

impl Compiled {
    /// The routes that deny everyone (no `public`, allow rule or webhook).
    pub fn denied_routes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .routes
            .routes()
            .filter(|r| r.spec.policy == Policy::Deny)
            .map(|r| r.spec.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// Logs the routes that deny everyone, so that an operator sees why
    /// they answer 403.
    pub fn warn_denied(&self) {
        for name in self.denied_routes() {
            tracing::warn!(
                route = %name,
                "route has no policy (public = true, an allow_* rule, or a webhook): every request gets 403"
            );
        }
    }
}

impl Shared {
    /// Shared state serving `compiled`.
    pub fn new(compiled: Compiled, metrics: Metrics) -> Arc<Shared> {
        let certs = Arc::new(CertLayers::default());
        certs.replace_files(compiled.certs, compiled.default_certificate);
        let file = BTreeSet::from([Source::File]);
        Arc::new(Shared {
            routes: ArcSwap::from_pointee(compiled.routes),
            route_layers: Mutex::new(BTreeMap::from([(Source::File, compiled.route_specs)])),
            sources: Mutex::new((file.clone(), file)),
            certs,
            settings: ArcSwap::from_pointee(compiled.settings),
            auth: ArcSwapOption::from(compiled.auth.map(Arc::new)),
            acme_challenges: Arc::default(),
            auth_state: AuthState::default(),
            tunnel_cuts: crate::tunnel::Cuts::default(),
            agents: crate::tunnel::agents::Registry::new(compiled.agents),
            metrics,
            draining: AtomicBool::new(false),
            workers_ready: AtomicUsize::new(0),
            bound_https_port: AtomicU16::new(0),
        })
    }

    /// The https port in URLs heim makes (redirects, sign-in): `https_port`,
    /// or the port the listener got when it was asked for port 0.
    pub fn https_port(&self) -> u16 {
        match self.settings.load().https_port {
            0 => self.bound_https_port.load(Relaxed),
            p => p,
        }
    }

    /// Swaps in a new compiled config; requests in flight keep the old one.
    /// Other sources' routes and certificates stay.
    pub fn swap(&self, compiled: Compiled) {
        self.certs
            .replace_files(compiled.certs, compiled.default_certificate);
        self.auth.store(compiled.auth.map(Arc::new));
        self.settings.store(Arc::new(compiled.settings));
        self.agents.configure(compiled.agents);
        // The file's routes were checked for duplicates among themselves.
        self.push_routes(Source::File, compiled.route_specs);
    }

    /// Replaces one source's routes and swaps in the table rebuilt from
    /// every source's (in `Source` order). A route that repeats the host,
    /// path and path type of one before it is left out and returned, for
    /// the source to report; everything else serves.
    pub fn push_routes(&self, source: Source, specs: Vec<RouteSpec>) -> Vec<DuplicateRoute> {
        let mut layers = self.route_layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.insert(source, specs);
        let mut all = Vec::new();
        let mut starts = Vec::new();
        for (s, specs) in layers.iter() {
            starts.push((all.len(), *s));
            all.extend(specs.iter().cloned());
        }
        let previous = self.routes.load();
        let (table, dups) =
            RouteTable::build_all(all, |name| self.metrics.route(name), Some(&previous));
        drop(previous);
        let live: std::collections::HashSet<&str> =
            table.routes().map(|r| r.spec.name.as_str()).collect();
        self.metrics.retain_routes(&live);
        drop(live);
        self.routes.store(Arc::new(table));
        drop(layers);
        self.delivered(source);
        // Indexes back into the pushing source's own list.
        let start = starts
            .iter()
            .find(|(_, s)| *s == source)
            .map_or(0, |(i, _)| *i);
        let end = starts
            .iter()
            .find(|(_, s)| *s > source)
            .map_or(usize::MAX, |(i, _)| *i);
        dups.into_iter()
            .filter(|d| (start..end).contains(&d.index))
            .map(|d| DuplicateRoute {
                index: d.index - start,
                ..d
            })
            .collect()
    }

    /// One source's routes now.
    pub fn route_layer(&self, source: Source) -> Vec<RouteSpec> {
        let layers = self.route_layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.get(&source).cloned().unwrap_or_default()
    }

    /// Replaces one source's certificates (not the file's: see `swap`).
    pub fn push_certificates(&self, source: Source, entries: Vec<CertEntry>) {
        self.certs.replace(source, entries);
        self.delivered(source);
    }

    /// Makes `/readyz` wait for `source`'s first routes or certificates.
    pub fn expect_source(&self, source: Source) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.0.insert(source);
    }

    fn delivered(&self, source: Source) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.1.insert(source);
    }

    /// The expected sources that have not delivered yet.
    pub fn sources_pending(&self) -> Vec<Source> {
        let s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.0.difference(&s.1).copied().collect()
    }
}

/// Counts a client connection open for as long as it lives (a spliced
/// WebSocket pair included), for `max_connections` and the gauge.
#[derive(Debug)]
pub struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    pub fn new(shared: &Arc<Shared>) -> Self {
        shared.metrics.connections_open.fetch_add(1, Relaxed);
        shared.metrics.connections_total.fetch_add(1, Relaxed);
        Self(shared.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// For unit tests: a config of `server_extra` and `routes` with a
/// throwaway certificate for `app.test`, compiled.
#[cfg(test)]
pub(crate) fn test_compiled(server_extra: &str, routes: &str) -> (Compiled, Metrics) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "heim-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
    let text = format!(
        "[server]\nhttps_listen = \"127.0.0.1:0\"\n{server_extra}\n\
         [[certificate]]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n{routes}"
    );
    let config = crate::config::Config::parse(&dir.join("heim.toml"), &text).expect("config");
    let metrics = Metrics::default();
    let compiled = Compiled::new(&config, &metrics, false).expect("compiled");
    let _ = std::fs::remove_dir_all(&dir);
    (compiled, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(routes: &str) -> (Compiled, Metrics) {
        test_compiled("", routes)
    }

    fn names(shared: &Shared, host: &str, path: &str) -> Option<String> {
        shared
            .routes
            .load()
            .lookup(host, path)
            .map(|r| r.spec.name.clone())
    }

    #[test]
    fn sources_push_routes_without_overwriting_each_other() {
        let file =
            "[[route]]\nname = \"file-app\"\nhost = \"app.test\"\necho = true\npublic = true\n";
        let (c, metrics) = compiled(file);
        let shared = Shared::new(c, metrics);
        shared.expect_source(Source::Kubernetes);
        assert_eq!(shared.sources_pending(), [Source::Kubernetes]);
        // The cluster's routes: one new, one that repeats the file's.
        let (kube, _) = compiled(
            "[[route]]\nname = \"kube-grafana\"\nhost = \"grafana.test\"\necho = true\npublic = true\n\
             [[route]]\nname = \"kube-app\"\nhost = \"app.test\"\necho = true\npublic = true\n",
        );
        let dups = shared.push_routes(Source::Kubernetes, kube.route_specs);
        assert_eq!(dups.len(), 1);
        assert_eq!((dups[0].index, dups[0].second.as_str()), (1, "kube-app"));
        assert!(shared.sources_pending().is_empty());
        assert_eq!(names(&shared, "app.test", "/").as_deref(), Some("file-app"));
        assert_eq!(
            names(&shared, "grafana.test", "/").as_deref(),
            Some("kube-grafana")
        );
        // A config reload replaces the file's routes and keeps the cluster's.
        let (reloaded, _) = compiled(
            "[[route]]\nname = \"file-other\"\nhost = \"other.test\"\necho = true\npublic = true\n",
        );
        shared.swap(reloaded);
        assert_eq!(
            names(&shared, "other.test", "/").as_deref(),
            Some("file-other")
        );
        assert_eq!(
            names(&shared, "grafana.test", "/").as_deref(),
            Some("kube-grafana")
        );
        // The file no longer claims app.test: the cluster's route, kept in
        // its layer all along, serves it now.
        assert_eq!(names(&shared, "app.test", "/").as_deref(), Some("kube-app"));
    }
}
