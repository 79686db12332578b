//! The state every worker shares: the live route table, certificates and
//! settings (each a snapshot behind an `ArcSwap`, replaced whole on reload),
//! the metrics, and the drain signal.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::auth::{Auth, AuthState};

use crate::config::{Config, ConfigError, ServerSettings};
use crate::metrics::Metrics;
use crate::route::{Policy, RouteTable};
use crate::tls::{CertEntry, CertLayers, CertStore};

/// Shared by the workers and the control thread.
#[derive(Debug)]
pub struct Shared {
    pub routes: ArcSwap<RouteTable>,
    /// Every source's certificates, and the live store.
    pub certs: Arc<CertLayers>,
    pub settings: ArcSwap<ServerSettings>,
    /// Sign-in, when `[auth]` is configured.
    pub auth: ArcSwapOption<Auth>,
    /// ACME challenge answers (HTTP-01 tokens).
    pub acme_challenges: Arc<crate::acme::Challenges>,
    /// Revocations and the like: kept across reloads.
    pub auth_state: AuthState,
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
    /// The file layer: the config's `[[certificate]]` entries.
    pub certs: Vec<CertEntry>,
    /// `server.default_certificate`.
    pub default_certificate: Option<String>,
    pub auth: Option<Auth>,
    /// `[acme]` with its files read: what the ACME client is to get.
    pub acme: Option<crate::acme::Loaded>,
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
                certs,
                default_certificate: config.default_certificate.as_ref().map(|d| d.0.clone()),
                auth,
                acme,
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
        Arc::new(Shared {
            routes: ArcSwap::from_pointee(compiled.routes),
            certs,
            settings: ArcSwap::from_pointee(compiled.settings),
            auth: ArcSwapOption::from(compiled.auth.map(Arc::new)),
            acme_challenges: Arc::default(),
            auth_state: AuthState::default(),
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
    pub fn swap(&self, compiled: Compiled) {
        self.certs
            .replace_files(compiled.certs, compiled.default_certificate);
        self.auth.store(compiled.auth.map(Arc::new));
        self.routes.store(Arc::new(compiled.routes));
        self.settings.store(Arc::new(compiled.settings));
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
