//! heim-proxy: the data plane of heim.
//!
//! Modules follow a request's way: `listen` (sockets, workers, TLS
//! handshake, HTTP/1 and HTTP/2 serving) -> `service` (the request's phases
//! in order) -> `route` (the Ingress v1 route table) -> `forward` (headers,
//! pools, upstreams). Around them: `config` (the file), `tls` (certificates),
//! `state` (the live snapshots), `reload`, `admin`, `metrics`.

pub mod acme;
pub mod admin;
pub mod affinity;
pub mod auth;
pub mod body;
pub mod canary;
pub mod config;
pub mod echo;
pub mod error;
pub mod forward;
pub mod http_client;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod park;
pub mod reload;
pub mod route;
pub mod rt;
pub mod service;
pub mod source;
pub mod state;
pub mod tls;
pub mod trust;
pub mod tunnel;
pub mod upstream;

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use anyhow::Context;

use config::{Config, ConfigErrors};
use listen::WorkerSockets;
use metrics::Metrics;
use state::{Compiled, Shared};

/// JSON log lines on stdout, filtered by `RUST_LOG` (default "info"): for
/// heim-proxy and heim-ingress alike.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

/// Loads and fully checks a config file, certificates included.
pub fn check(path: &Path) -> Result<Compiled, ConfigErrors> {
    let config = Config::load(path)?;
    Compiled::new(&config, &Metrics::default(), false).map_err(ConfigErrors)
}

/// A data plane serving: its listeners bound, its workers accepting. A
/// library caller (`heim-ingress`) gets one from [`start`], pushes its own
/// source's routes and certificates through `shared` (`push_routes`,
/// `push_certificates`, after `expect_source` so that `/readyz` waits for
/// them), and ends it with [`Running::drain`].
pub struct Running {
    pub shared: std::sync::Arc<Shared>,
    pub https: std::net::SocketAddr,
    pub http: Option<std::net::SocketAddr>,
    pub admin: Option<std::net::SocketAddr>,
    admin_listener: Option<std::net::TcpListener>,
    drain_tx: tokio::sync::watch::Sender<bool>,
}

/// Binds the listeners of `compiled` and starts its workers. Its `[acme]`
/// is the caller's to run (see `reload::Reloader`).
pub fn start(compiled: Compiled, metrics: Metrics) -> anyhow::Result<Running> {
    let settings = compiled.settings.clone();
    compiled.warn_denied();
    let shared = Shared::new(compiled, metrics);
    let tls = tls::server_config(shared.certs.clone())?;

    let workers = settings.workers;
    let https = listen::bind_reuseport(settings.https_listen, workers).with_context(|| {
        format!(
            "cannot listen on {} (server.https_listen)",
            settings.https_listen
        )
    })?;
    let mut http: Vec<Option<std::net::TcpListener>> = match settings.http_listen {
        Some(a) => listen::bind_reuseport(a, workers)
            .with_context(|| format!("cannot listen on {a} (server.http_listen)"))?
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..workers).map(|_| None).collect(),
    };
    let admin_listener = match settings.admin_listen {
        Some(a) => {
            let l = std::net::TcpListener::bind(a)
                .with_context(|| format!("cannot listen on {a} (server.admin_listen)"))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let https_addr = https[0].local_addr()?;
    shared.bound_https_port.store(https_addr.port(), Relaxed);
    let http_addr = http[0].as_ref().map(|l| l.local_addr()).transpose()?;
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    for (i, https) in https.into_iter().enumerate() {
        let sockets = WorkerSockets {
            https,
            http: http[i].take(),
        };
        listen::spawn_worker(i, shared.clone(), tls.clone(), sockets, drain_rx.clone())?;
    }
    tracing::info!(
        https = %https_addr,
        http = http_addr.map(|a| a.to_string()),
        admin = admin_addr.map(|a| a.to_string()),
        workers,
        routes = shared.routes.load().len(),
        "listening"
    );
    Ok(Running {
        shared,
        https: https_addr,
        http: http_addr,
        admin: admin_addr,
        admin_listener,
        drain_tx,
    })
}

impl Running {
    /// Serves the admin endpoints on the current Tokio runtime (once).
    pub fn serve_admin(&mut self) -> anyhow::Result<()> {
        if let Some(l) = self.admin_listener.take() {
            let admin = tokio::net::TcpListener::from_std(l)?;
            let workers = self.shared.settings.load().workers;
            tokio::spawn(admin::serve(admin, self.shared.clone(), workers));
        }
        Ok(())
    }

    /// Stops accepting, lets open connections finish (up to
    /// `server.drain_timeout`) and returns.
    pub async fn drain(self) {
        let shared = self.shared;
        let drain_timeout = shared.settings.load().drain_timeout;
        tracing::info!(
            open = shared.metrics.connections_open.load(Relaxed),
            timeout_s = drain_timeout.as_secs(),
            "draining"
        );
        shared.draining.store(true, SeqCst);
        let _ = self.drain_tx.send(true);
        let deadline = Instant::now() + drain_timeout;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while shared.metrics.connections_open.load(Relaxed) > 0 && Instant::now() < deadline {
            poll.tick().await;
        }
        let left = shared.metrics.connections_open.load(Relaxed);
        tracing::info!(left, "drained; exiting");
    }
}

/// Runs the proxy on a config file until SIGTERM or SIGINT, reloading it
/// on SIGHUP or change, then drains and returns.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let metrics = Metrics::default();
    let mut compiled = Compiled::new(&config, &metrics, true).map_err(ConfigErrors)?;
    let acme = compiled.acme.take();
    let mut running = start(compiled, metrics)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        running.serve_admin()?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut reloader = reload::Reloader::new(running.shared.clone(), &config, acme);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = hup.recv() => { reloader.reload("SIGHUP"); }
                _ = tick.tick() => {
                    if reloader.changed() {
                        reloader.reload("file changed");
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        running.drain().await;
        anyhow::Ok(())
    })
}
