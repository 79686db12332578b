//! heim-proxy: the data plane of heim.
//!
//! Modules follow a request's way: `listen` (sockets, workers, TLS
//! handshake, HTTP/1 and HTTP/2 serving) -> `service` (the request's phases
//! in order) -> `route` (the Ingress v1 route table) -> `forward` (headers,
//! pools, upstreams). Around them: `config` (the file), `tls` (certificates),
//! `state` (the live snapshots), `reload`, `admin`, `metrics`.

pub mod acme;
pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod echo;
pub mod error;
pub mod forward;
pub mod http_client;
pub mod listen;
pub mod metrics;
pub mod park;
pub mod reload;
pub mod route;
pub mod rt;
pub mod service;
pub mod state;
pub mod tls;
pub mod trust;
pub mod upstream;

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::{Duration, Instant};

use anyhow::Context;

use config::{Config, ConfigErrors};
use listen::WorkerSockets;
use metrics::Metrics;
use state::{Compiled, Shared};

/// Loads and fully checks a config file, certificates included.
pub fn check(path: &Path) -> Result<Compiled, ConfigErrors> {
    let config = Config::load(path)?;
    Compiled::new(&config, &Metrics::default(), false).map_err(ConfigErrors)
}

/// Runs the proxy until SIGTERM or SIGINT, then drains and returns.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let metrics = Metrics::default();
    let mut compiled = Compiled::new(&config, &metrics, true).map_err(ConfigErrors)?;
    let acme = compiled.acme.take();
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
    let admin = match settings.admin_listen {
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
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;

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

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let Some(admin) = admin {
            let admin = tokio::net::TcpListener::from_std(admin)?;
            tokio::spawn(admin::serve(admin, shared.clone(), workers));
        }
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut reloader = reload::Reloader::new(shared.clone(), &config, acme);
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
        let drain_timeout = shared.settings.load().drain_timeout;
        tracing::info!(
            open = shared.metrics.connections_open.load(Relaxed),
            timeout_s = drain_timeout.as_secs(),
            "draining"
        );
        shared.draining.store(true, SeqCst);
        let _ = drain_tx.send(true);
        let deadline = Instant::now() + drain_timeout;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        while shared.metrics.connections_open.load(Relaxed) > 0 && Instant::now() < deadline {
            poll.tick().await;
        }
        let left = shared.metrics.connections_open.load(Relaxed);
        tracing::info!(left, "drained; exiting");
        anyhow::Ok(())
    })
}
