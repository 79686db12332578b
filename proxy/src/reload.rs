//! Live reload: on SIGHUP, or when the config file or a certificate file
//! changes on disk, build a whole new config and swap it in. A config that
//! fails to load or compile is logged error by error and the running one
//! keeps serving; listeners and connections are never touched.
//!
//! Files are polled (metadata once a second) rather than watched with
//! inotify: a Kubernetes Secret or ConfigMap volume swaps a `..data`
//! symlink, which inotify watches on the file itself miss.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError};
use crate::state::{Compiled, Shared};

/// What a file looked like at the last check.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reloads one config file into the shared state, and runs its `[acme]`.
pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    watched: Vec<PathBuf>,
    stamps: Vec<Stamp>,
    acme: crate::acme::Manager,
}

impl Reloader {
    /// Watches `config` (already loaded and serving) and its certificate
    /// files, and starts its `[acme]` (on the current Tokio runtime).
    pub fn new(shared: Arc<Shared>, config: &Config, acme: Option<crate::acme::Loaded>) -> Self {
        let mut r = Self {
            shared,
            path: config.path.clone(),
            watched: Vec::new(),
            stamps: Vec::new(),
            acme: crate::acme::Manager::default(),
        };
        r.watch(config);
        r.acme.apply(acme, &r.shared);
        r
    }

    fn watch(&mut self, config: &Config) {
        self.watched = std::iter::once(self.path.clone())
            .chain(
                config
                    .certificates
                    .iter()
                    .flat_map(|c| [c.cert_file.clone(), c.key_file.clone()]),
            )
            .collect();
        self.stamps = self.watched.iter().map(stamp).collect();
    }

    /// True when a watched file changed since the last check or reload.
    pub fn changed(&mut self) -> bool {
        let now: Vec<Stamp> = self.watched.iter().map(stamp).collect();
        if now != self.stamps {
            self.stamps = now;
            true
        } else {
            false
        }
    }

    /// Loads, compiles and swaps in the config; on any error keeps the old one.
    pub fn reload(&mut self, reason: &str) -> bool {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let result = Config::load(&self.path)
            .map_err(|e| e.0)
            .and_then(|config| Compiled::new(&config, metrics, true).map(|c| (config, c)));
        match result {
            Ok((config, compiled)) => {
                let routes = compiled.routes.len();
                apply(&shared, compiled, &mut self.acme);
                self.watch(&config);
                tracing::info!(
                    reason,
                    routes,
                    certificates = config.certificates.len(),
                    "config reloaded"
                );
                true
            }
            Err(errors) => {
                reject(&shared, &errors);
                tracing::error!(
                    reason,
                    errors = errors.len(),
                    "config rejected; the previous config keeps serving"
                );
                false
            }
        }
    }
}

/// Swaps a compiled config in (its routes as the file layer) and hands its
/// `[acme]` to `acme`; counted as a reload. For every source of settings:
/// the config file here, heim-ingress' ConfigMap.
pub fn apply(shared: &Arc<Shared>, mut compiled: Compiled, acme: &mut crate::acme::Manager) {
    if compiled.settings.restart_needed(&shared.settings.load()) {
        tracing::warn!("listen addresses or workers changed: they take effect on restart only");
    }
    compiled.warn_denied();
    let wanted = compiled.acme.take();
    shared.swap(compiled);
    acme.apply(wanted, shared);
    shared.metrics.reloads_ok.fetch_add(1, Relaxed);
}

/// Logs a rejected config error by error and counts it; the running one stays.
pub fn reject(shared: &Shared, errors: &[ConfigError]) {
    log_errors(errors);
    shared.metrics.reloads_failed.fetch_add(1, Relaxed);
}

/// One log line per config error, with file, line and key as fields.
pub fn log_errors(errors: &[ConfigError]) {
    for e in errors {
        tracing::error!(file = %e.file.display(), line = e.line, key = %e.key, "{}", e.message);
    }
}
