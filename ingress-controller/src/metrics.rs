//! `heim_kube_*`: what the controller tells Prometheus, rendered after the
//! data plane's own families on the admin port's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the translate-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Debug, Default)]
pub struct KubeMetrics {
    objects: Mutex<BTreeMap<&'static str, u64>>,
    watch_restarts: Mutex<BTreeMap<&'static str, u64>>,
    /// Problems of the last translation, by reason.
    problems: Mutex<BTreeMap<&'static str, u64>>,
    translate: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    pub snapshots: AtomicU64,
    pub leader: AtomicBool,
    pub status_writes: AtomicU64,
    pub events: AtomicU64,
}

impl KubeMetrics {
    pub fn set_objects(&self, kind: &'static str, n: usize) {
        let mut m = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(kind, n as u64);
    }

    pub fn watch_restart(&self, kind: &'static str) {
        let mut m = self
            .watch_restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(kind).or_default() += 1;
    }

    pub fn set_problems(&self, by_reason: BTreeMap<&'static str, u64>) {
        *self.problems.lock().unwrap_or_else(|e| e.into_inner()) = by_reason;
    }

    pub fn translated(&self, took: Duration) {
        let s = took.as_secs_f64();
        let mut t = self.translate.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                t.0[i] += 1;
            }
        }
        t.1 += 1;
        t.2 += s;
    }

    /// The Prometheus text of every `heim_kube_*` family.
    pub fn render(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let labeled =
            |out: &mut String, name: &str, label: &str, m: &Mutex<BTreeMap<&'static str, u64>>| {
                for (k, v) in m.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
                }
            };
        family(
            out,
            "heim_kube_objects",
            "gauge",
            "Objects in the controller's caches, by kind.",
        );
        labeled(out, "heim_kube_objects", "kind", &self.objects);
        family(
            out,
            "heim_kube_watch_restarts_total",
            "counter",
            "Watches that failed and were restarted, by kind (the API server went away, or a watch expired).",
        );
        labeled(
            out,
            "heim_kube_watch_restarts_total",
            "kind",
            &self.watch_restarts,
        );
        family(
            out,
            "heim_kube_problems",
            "gauge",
            "Problems of the last translation (each an Event on its Ingress), by reason.",
        );
        labeled(out, "heim_kube_problems", "reason", &self.problems);
        family(
            out,
            "heim_kube_translate_seconds",
            "histogram",
            "Time to translate the cluster's objects into routes and certificates.",
        );
        {
            let t = self.translate.lock().unwrap_or_else(|e| e.into_inner());
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "heim_kube_translate_seconds_bucket{{le=\"{b}\"}} {}",
                    t.0[i]
                );
            }
            let _ = writeln!(
                out,
                "heim_kube_translate_seconds_bucket{{le=\"+Inf\"}} {}",
                t.1
            );
            let _ = writeln!(out, "heim_kube_translate_seconds_sum {}", t.2);
            let _ = writeln!(out, "heim_kube_translate_seconds_count {}", t.1);
        }
        family(
            out,
            "heim_kube_snapshots_total",
            "counter",
            "Translations swapped into the data plane.",
        );
        let _ = writeln!(
            out,
            "heim_kube_snapshots_total {}",
            self.snapshots.load(Relaxed)
        );
        family(
            out,
            "heim_kube_leader",
            "gauge",
            "1 while this replica holds the leader Lease.",
        );
        let _ = writeln!(
            out,
            "heim_kube_leader {}",
            u8::from(self.leader.load(Relaxed))
        );
        family(
            out,
            "heim_kube_status_writes_total",
            "counter",
            "Ingress status updates written.",
        );
        let _ = writeln!(
            out,
            "heim_kube_status_writes_total {}",
            self.status_writes.load(Relaxed)
        );
        family(
            out,
            "heim_kube_events_total",
            "counter",
            "Kubernetes Events published.",
        );
        let _ = writeln!(out, "heim_kube_events_total {}", self.events.load(Relaxed));
    }
}
