//! Prometheus metrics: plain atomics, written in the text exposition format.
//!
//! Each route owns a [`RouteMetrics`] cell that the compiled route points to,
//! so recording a request is a few relaxed atomic adds and no lookup. Cells
//! are kept by route name across reloads, so counters never jump back.
//! This module only counts and renders; it does not serve `/metrics` (see
//! `admin`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram over [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
        self.count.fetch_add(1, Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of `name`, with
    /// `labels` (`key="value",` each, or empty) before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let labels = match labels.trim_end_matches(',') {
            "" => String::new(),
            l => format!("{{{l}}}"),
        };
        let _ = writeln!(
            out,
            "{name}_sum{labels} {sum}\n{name}_count{labels} {count}"
        );
    }
}

/// Requests seen by one route: by status code, and a latency histogram.
#[derive(Debug)]
pub struct RouteMetrics {
    /// Index `status - 100`, for 100..=599.
    by_status: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Default for RouteMetrics {
    fn default() -> Self {
        Self {
            by_status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            latency: Histogram::default(),
        }
    }
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.by_status.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Relaxed);
        }
        self.latency.record(elapsed);
    }
}

/// Kinds of upstream failure, for `heim_upstream_errors_total`.
#[derive(Clone, Copy, Debug)]
pub enum UpstreamErrorKind {
    Connect = 0,
    ConnectTimeout = 1,
    ResponseTimeout = 2,
    Protocol = 3,
    /// Every connection busy (`upstream_max_connections`) and the line
    /// full, or waited in for `connect_timeout`.
    Busy = 4,
}

const UPSTREAM_ERROR_KINDS: [&str; 5] = [
    "connect",
    "connect_timeout",
    "response_timeout",
    "protocol",
    "busy",
];

/// Kinds of client misbehaviour, for `heim_client_errors_total`.
#[derive(Clone, Copy, Debug)]
pub enum ClientErrorKind {
    /// A malformed request head (400) or method (405).
    BadRequest = 0,
    /// A request body that broke its framing (bad chunked encoding).
    MalformedBody = 1,
    BodyTooLarge = 2,
    /// The client stopped sending its body.
    BodyTimeout = 3,
    /// An HTTP/2 stream the client reset after heim had accepted it.
    StreamReset = 4,
    /// A PROXY protocol header that was malformed, missing, or from an
    /// untrusted address: the connection was closed.
    ProxyProtocol = 5,
    /// The client went away in the middle of its request body.
    BodyAborted = 6,
}

const CLIENT_ERROR_KINDS: [&str; 7] = [
    "bad_request",
    "malformed_body",
    "body_too_large",
    "body_timeout",
    "stream_reset",
    "proxy_protocol",
    "body_aborted",
];

/// Every metric heim exports.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    /// Requests that matched no route (404) or were malformed (400).
    pub unrouted: Arc<RouteMetrics>,
    pub upstream_errors: [AtomicU64; 5],
    pub client_errors: [AtomicU64; 7],
    /// HTTP/2 connections closed with GOAWAY `ENHANCE_YOUR_CALM`.
    pub h2_calm_goaways: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub tls_handshakes_ok: AtomicU64,
    pub tls_handshakes_failed: AtomicU64,
    /// Handshakes for a name no certificate covers.
    pub tls_no_certificate: AtomicU64,
    /// ACME orders started, by challenge.
    acme_orders: Mutex<BTreeMap<&'static str, u64>>,
    /// ACME failures, by challenge and reason.
    acme_failures: Mutex<BTreeMap<(&'static str, String), u64>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub upstream_connects: AtomicU64,
    /// Tunnel streams (`CONNECT`) spliced now, and ever.
    pub tunnel_streams_open: AtomicU64,
    pub tunnel_streams_total: AtomicU64,
    /// Tunnel bytes from the client to the target, and back.
    pub tunnel_bytes_to_target: AtomicU64,
    pub tunnel_bytes_to_client: AtomicU64,
    /// Agent connections open now, accepted ever, and refused (bad token).
    pub agents_connected: AtomicU64,
    pub agent_connects: AtomicU64,
    pub agent_refused: AtomicU64,
    /// From a tunnel's `CONNECT` to its target's answer (TCP dial, or the
    /// agent's 200).
    pub tunnel_connect: Histogram,
    /// Families another part of the process renders (heim-ingress'
    /// `heim_kube_*`), appended to the output.
    extra: Mutex<Vec<ExtraMetrics>>,
}

/// Appends metric families in the Prometheus text format.
#[derive(Clone)]
pub struct ExtraMetrics(pub Arc<dyn Fn(&mut String) + Send + Sync>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

impl Metrics {
    /// The cell for a route name, created on first use and kept across reloads.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.entry(name.to_string()).or_default().clone()
    }

    /// Drops the cells of routes no longer served (an Ingress deleted),
    /// so that churn does not grow memory and series without bound.
    pub fn retain_routes(&self, live: &std::collections::HashSet<&str>) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.retain(|name, _| live.contains(name.as_str()));
    }

    /// Adds families that `/metrics` renders after heim's own.
    pub fn add_extra(&self, extra: ExtraMetrics) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(extra);
    }

    /// Counts one upstream failure.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts one ACME order started.
    pub fn acme_order(&self, challenge: &'static str) {
        let mut m = self.acme_orders.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(challenge).or_default() += 1;
    }

    /// Counts one failed ACME order (or lock, or storage) by reason.
    pub fn acme_failure(&self, challenge: &'static str, reason: &str) {
        let mut m = self.acme_failures.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((challenge, reason.to_string())).or_default() += 1;
    }

    /// Counts one client error.
    pub fn client_error(&self, kind: ClientErrorKind) {
        self.client_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = routes
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(std::iter::once(("", &self.unrouted)));

        out.push_str("# HELP heim_requests_total Requests answered, by route and status code.\n");
        out.push_str("# TYPE heim_requests_total counter\n");
        let mut hist = String::new();
        hist.push_str(
            "# HELP heim_request_duration_seconds Time from request head to response head.\n",
        );
        hist.push_str("# TYPE heim_request_duration_seconds histogram\n");
        for (name, m) in all {
            let route = escape(name);
            for (i, c) in m.by_status.iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "heim_requests_total{{route=\"{route}\",code=\"{}\"}} {v}",
                        i + 100
                    );
                }
            }
            m.latency.render(
                &mut hist,
                "heim_request_duration_seconds",
                &format!("route=\"{route}\","),
            );
        }
        out.push_str(&hist);

        let errors: Vec<_> = UPSTREAM_ERROR_KINDS
            .iter()
            .copied()
            .zip(&self.upstream_errors)
            .collect();
        labeled(
            &mut out,
            "heim_upstream_errors_total",
            "Failed upstream attempts, by kind.",
            "kind",
            &errors,
        );
        let client: Vec<_> = CLIENT_ERROR_KINDS
            .iter()
            .copied()
            .zip(&self.client_errors)
            .collect();
        labeled(
            &mut out,
            "heim_client_errors_total",
            "Requests and connections refused for the client's fault, by kind.",
            "kind",
            &client,
        );
        let simple: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "heim_connections_open",
                "gauge",
                "Client connections open now.",
                &self.connections_open,
            ),
            (
                "heim_connections_total",
                "counter",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "heim_connections_refused_total",
                "counter",
                "Client connections closed at once because max_connections was reached.",
                &self.connections_refused,
            ),
            (
                "heim_h2_enhance_your_calm_total",
                "counter",
                "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM (too many streams reset after acceptance).",
                &self.h2_calm_goaways,
            ),
            (
                "heim_upstream_connections_total",
                "counter",
                "Upstream connections opened.",
                &self.upstream_connects,
            ),
            (
                "heim_tunnel_streams_open",
                "gauge",
                "Tunnel streams (CONNECT) spliced now.",
                &self.tunnel_streams_open,
            ),
            (
                "heim_tunnel_streams_total",
                "counter",
                "Tunnel streams (CONNECT) spliced.",
                &self.tunnel_streams_total,
            ),
            (
                "heim_tunnel_agents_connected",
                "gauge",
                "Agent connections (heim-tunnel agent) open now.",
                &self.agents_connected,
            ),
            (
                "heim_tunnel_agent_connections_total",
                "counter",
                "Agent connections accepted.",
                &self.agent_connects,
            ),
            (
                "heim_tunnel_agent_refused_total",
                "counter",
                "Agent connections refused (unknown name or wrong token).",
                &self.agent_refused,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        labeled(
            &mut out,
            "heim_tunnel_bytes_total",
            "Bytes carried by tunnel streams, by direction.",
            "direction",
            &[
                ("to_target", &self.tunnel_bytes_to_target),
                ("to_client", &self.tunnel_bytes_to_client),
            ],
        );
        out.push_str("# HELP heim_tunnel_connect_seconds From a tunnel's CONNECT to its target's answer (TCP dial, or the agent's 200).\n# TYPE heim_tunnel_connect_seconds histogram\n");
        self.tunnel_connect
            .render(&mut out, "heim_tunnel_connect_seconds", "");
        labeled(
            &mut out,
            "heim_tls_handshakes_total",
            "TLS handshakes, by result (no_certificate: no certificate covers the name asked for).",
            "result",
            &[
                ("ok", &self.tls_handshakes_ok),
                ("failed", &self.tls_handshakes_failed),
                ("no_certificate", &self.tls_no_certificate),
            ],
        );
        out.push_str("# HELP heim_acme_orders_total ACME orders started, by challenge.\n# TYPE heim_acme_orders_total counter\n");
        for (challenge, n) in self
            .acme_orders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "heim_acme_orders_total{{challenge=\"{challenge}\"}} {n}"
            );
        }
        out.push_str("# HELP heim_acme_failures_total ACME orders that failed, by challenge and reason (the ACME problem type, or network, dns, storage, timeout).\n# TYPE heim_acme_failures_total counter\n");
        for ((challenge, reason), n) in self
            .acme_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "heim_acme_failures_total{{challenge=\"{challenge}\",reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        labeled(
            &mut out,
            "heim_config_reloads_total",
            "Configuration reloads, by result.",
            "result",
            &[("ok", &self.reloads_ok), ("failed", &self.reloads_failed)],
        );
        let extra = self.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for e in extra {
            (e.0)(&mut out);
        }
        out
    }
}

/// Writes one counter split by one label.
fn labeled(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, c) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", c.load(Relaxed));
    }
}

pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        let r = m.route("app/");
        r.record(200, Duration::from_millis(3));
        r.record(200, Duration::from_millis(30));
        r.record(502, Duration::from_secs(20));
        assert!(Arc::ptr_eq(&r, &m.route("app/")), "cells survive lookups");
        let text = m.render();
        assert!(
            text.contains("heim_requests_total{route=\"app/\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("heim_requests_total{route=\"app/\",code=\"502\"} 1"));
        assert!(
            text.contains("heim_request_duration_seconds_bucket{route=\"app/\",le=\"0.005\"} 1")
        );
        assert!(text.contains("heim_request_duration_seconds_bucket{route=\"app/\",le=\"0.05\"} 2"));
        assert!(text.contains("heim_request_duration_seconds_bucket{route=\"app/\",le=\"+Inf\"} 3"));
        assert!(text.contains("heim_request_duration_seconds_count{route=\"app/\"} 3"));
    }
}
