//! The markdown report: one table of medians, spreads and heim/nginx ratios.
//!
//! BENCH.md: a figure counts only as a ratio to a peer measured in the same run on the same
//! machine (the 2-core VMs move absolute req/s by 2× between days, ratios much less), so every
//! row shows both peers' median and min–max over the alternated rounds and the ratio of the
//! medians. The proxy's CPU share is shown too: below ~95 % of a core the run was client-bound
//! and only CPU-µs/req compares the proxies fairly; the notes say so.

use std::fmt::Write as _;

use crate::idle::IdleMode;
use crate::load::Scenario;

/// One measured round of one proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub rps: f64,
    pub requests: u64,
    pub errors: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Proxy CPU (all its processes) per completed request, µs.
    pub cpu_us_per_req: f64,
    /// Proxy CPU over the run's wall time, % of one core.
    pub cpu_pct: f64,
    /// Peak RSS so far (VmHWM), KiB.
    pub rss_kib: u64,
    /// How busy core 0 (the load generator and the backend) was over the run, % (from
    /// `/proc/stat`; `None` if unreadable).
    pub core0_pct: Option<f64>,
}

/// One idle measurement of one proxy (a fresh process): N connections left in `mode`.
#[derive(Clone, Debug, PartialEq)]
pub struct IdleSample {
    pub mode: IdleMode,
    pub conns: u32,
    /// VmRSS before the connections were opened, KiB.
    pub before_kib: u64,
    /// VmRSS with all of them open and idle, once stable, KiB.
    pub idle_kib: u64,
    /// Seconds from the last connection opened to that reading.
    pub settle_secs: f64,
    /// Whether RSS was stable then (or the wait hit its bound).
    pub stable: bool,
}

impl IdleSample {
    /// (idle − before) ÷ N, KiB per connection.
    pub fn kib_per_conn(&self) -> f64 {
        self.idle_kib.saturating_sub(self.before_kib) as f64 / f64::from(self.conns.max(1))
    }
}

/// Both proxies' idle measurements, every round and mode.
#[derive(Clone, Debug, Default)]
pub struct IdleResult {
    pub conns: u32,
    pub nginx: Vec<IdleSample>,
    pub heim: Vec<IdleSample>,
}

/// Both proxies' rounds of one scenario.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub nginx: Vec<Sample>,
    pub heim: Vec<Sample>,
    /// What the client (h2load or heim-bench) saw of each side's TLS (protocol, cipher, key exchange, ALPN).
    pub nginx_tls: Option<String>,
    pub heim_tls: Option<String>,
    /// The `idle` scenario's figures (its `nginx`/`heim` samples stay empty).
    pub idle: Option<IdleResult>,
}

/// The run's header lines.
#[derive(Clone, Debug)]
pub struct Header {
    pub date: String,
    pub command: String,
    pub nproc: usize,
    pub kernel: String,
    pub nginx_version: String,
    pub heim_version: String,
    pub profile: String,
    /// Whether the handshake scenarios ran as h2load bursts (else heim-bench's closed loop).
    pub handshake_burst: bool,
}

/// (median, min, max); `None` for no values.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// How a metric is printed.
#[derive(Clone, Copy)]
enum Unit {
    Rate,
    Micros,
    CpuPerReq,
    Percent,
    Kib,
    KibPerConn,
    Count,
}

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate | Unit::Count => thousands(v.round() as u64),
        Unit::Micros if v < 1000.0 => format!("{v:.0} µs"),
        Unit::Micros if v < 1e6 => format!("{:.2} ms", v / 1e3),
        Unit::Micros => format!("{:.2} s", v / 1e6),
        Unit::CpuPerReq => format!("{v:.2}"),
        Unit::Percent => format!("{v:.0} %"),
        Unit::Kib => format!("{:.1} MiB", v / 1024.0),
        Unit::KibPerConn => format!("{v:.1} KiB"),
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cell(values: &[f64], unit: Unit) -> String {
    match summary(values) {
        None => "—".to_string(),
        Some((med, lo, hi)) if values.len() == 1 || lo == hi => fmt_value(med, unit),
        Some((med, lo, hi)) => format!(
            "{} ({}–{})",
            fmt_value(med, unit),
            fmt_value(lo, unit),
            fmt_value(hi, unit)
        ),
    }
}

fn ratio(nginx: &[f64], heim: &[f64]) -> String {
    match (summary(nginx), summary(heim)) {
        (Some((n, ..)), Some((h, ..))) if n > 0.0 => format!("{:.2}×", h / n),
        _ => "—".to_string(),
    }
}

/// The whole markdown block: header, table, notes.
pub fn render(h: &Header, results: &[ScenarioResult], workers: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## heim-bench, {}\n", h.date);
    let _ = writeln!(s, "- command: `{}`", h.command);
    let _ = writeln!(
        s,
        "- machine: {} cores (nproc), Linux {}",
        h.nproc, h.kernel
    );
    let _ = writeln!(s, "- peers: {}; {}", h.nginx_version, h.heim_version);
    let _ = writeln!(s, "- profile: {}\n", h.profile);
    s.push_str(
        "| scenario | metric | nginx median (min–max) | heim median (min–max) | heim/nginx |\n",
    );
    s.push_str("| --- | --- | --- | --- | --- |\n");

    let mut notes: Vec<String> = Vec::new();
    let mut h2load_latency = false;
    for r in results {
        if let Some(idle) = &r.idle {
            idle_rows(&mut s, &mut notes, idle);
            continue;
        }
        type Get = fn(&Sample) -> Option<f64>;
        let mut rows: Vec<(String, Unit, Get)> =
            vec![(r.scenario.rate_label().to_string(), Unit::Rate, |x| {
                Some(x.rps)
            })];
        // wrk and heim-bench's handshake client give percentiles; h2load mean and max only.
        let percentiles = r
            .nginx
            .iter()
            .chain(&r.heim)
            .all(|x| x.p50_us.is_some() && x.p99_us.is_some());
        if percentiles {
            rows.push(("p50 latency".into(), Unit::Micros, |x| x.p50_us));
            rows.push(("p99 latency".into(), Unit::Micros, |x| x.p99_us));
        } else {
            h2load_latency = true;
            rows.push(("mean latency†".into(), Unit::Micros, |x| x.mean_us));
            rows.push(("max latency†".into(), Unit::Micros, |x| x.max_us));
        }
        rows.push(("CPU-µs/req".into(), Unit::CpuPerReq, |x| {
            Some(x.cpu_us_per_req)
        }));
        rows.push(("proxy CPU".into(), Unit::Percent, |x| Some(x.cpu_pct)));
        rows.push((
            "core 0 busy (client + backend)".into(),
            Unit::Percent,
            |x| x.core0_pct,
        ));
        rows.push(("peak RSS".into(), Unit::Kib, |x| Some(x.rss_kib as f64)));
        rows.push(("errors".into(), Unit::Count, |x| Some(x.errors as f64)));
        for (metric, unit, get) in rows {
            let n: Vec<f64> = r.nginx.iter().filter_map(get).collect();
            let m: Vec<f64> = r.heim.iter().filter_map(get).collect();
            let _ = writeln!(
                s,
                "| {} | {metric} | {} | {} | {} |",
                r.scenario,
                cell(&n, unit),
                cell(&m, unit),
                ratio(&n, &m)
            );
        }

        if workers == 1 {
            for (name, samples) in [("nginx", &r.nginx), ("heim", &r.heim)] {
                let pct: Vec<f64> = samples.iter().map(|x| x.cpu_pct).collect();
                let core0: Vec<f64> = samples.iter().filter_map(|x| x.core0_pct).collect();
                if let Some((med, ..)) = summary(&pct) {
                    if med < 95.0 {
                        let why = match summary(&core0) {
                            Some((c, ..)) => format!(
                                " while core 0 (load generator, backend and anything else running) was {c:.0} % busy"
                            ),
                            None => String::new(),
                        };
                        notes.push(format!(
                            "{}: {name} used {med:.0} % of its core (< 95 %){why}: client-bound, compare CPU-µs/req.",
                            r.scenario
                        ));
                    }
                }
            }
        }
        let errs: u64 = r.nginx.iter().chain(&r.heim).map(|x| x.errors).sum();
        if errs > 0 {
            notes.push(format!(
                "{}: {errs} errors (non-2xx or failed requests) over all rounds.",
                r.scenario
            ));
        }
        if r.nginx_tls.is_some() || r.heim_tls.is_some() {
            notes.push(format!(
                "{} TLS as the client saw it: nginx {}; heim {}.",
                r.scenario,
                r.nginx_tls.as_deref().unwrap_or("?"),
                r.heim_tls.as_deref().unwrap_or("?")
            ));
        }
    }
    s.push('\n');
    if h2load_latency {
        s.push_str("† h2load prints no percentiles: mean and max of its \"time for request\".  \n");
    }
    if h.handshake_burst && results.iter().any(|r| r.scenario.handshake()) {
        s.push_str(
            "Handshake rounds open all N connections at once (h2load -n N -c N -m1): their latency is \
             mostly queueing behind that burst.  \n",
        );
    }
    if !h.handshake_burst && results.iter().any(|r| r.scenario.handshake()) {
        s.push_str(
            "Handshake rounds: every completed connection is one full TLS 1.3 handshake and one \
             request (handshakes/s = completed ÷ the round's wall time; latency = connect to the \
             server's close); CPU-µs/req is then CPU-µs per handshake.  \n",
        );
    }
    if results.iter().any(|r| r.idle.is_none()) {
        s.push_str(
            "Higher is better for req/s and handshakes/s; lower for latency, CPU-µs/req and RSS. \
             CPU-µs/req = Δ(utime+stime) of every proxy process ÷ completed requests. \
             Peak RSS = VmHWM after the round (nginx: its workers, summed; heim: the process).\n",
        );
    }
    if results.iter().any(|r| r.idle.is_some()) {
        s.push_str(
            "Idle: KiB/conn = (VmRSS with N idle TLS 1.3 keep-alive connections − VmRSS before) ÷ N, \
             read once RSS is stable and ≥ 3 s after the last connection opened; one client process \
             on core 0; fresh proxies for every round and variant (nginx: its workers, summed). \
             Lower is better; BENCH.md's target is ≤ 16 KiB.\n",
        );
    }
    for n in notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

/// The idle scenario's rows: KiB per connection and both RSS readings, per variant.
fn idle_rows(s: &mut String, notes: &mut Vec<String>, idle: &IdleResult) {
    type Get = fn(&IdleSample) -> f64;
    let n = thousands(u64::from(idle.conns));
    for mode in IdleMode::ALL {
        let pick = |v: &[IdleSample]| -> Vec<IdleSample> {
            v.iter().filter(|x| x.mode == mode).cloned().collect()
        };
        let (ng, hm) = (pick(&idle.nginx), pick(&idle.heim));
        if ng.is_empty() && hm.is_empty() {
            continue;
        }
        let rows: [(String, Unit, Get); 3] = [
            (
                format!("KiB/conn, {n} idle, {}", mode.label()),
                Unit::KibPerConn,
                IdleSample::kib_per_conn,
            ),
            (format!("RSS before ({})", mode.label()), Unit::Kib, |x| {
                x.before_kib as f64
            }),
            (
                format!("RSS with {n} idle ({})", mode.label()),
                Unit::Kib,
                |x| x.idle_kib as f64,
            ),
        ];
        for (metric, unit, get) in rows {
            let a: Vec<f64> = ng.iter().map(get).collect();
            let b: Vec<f64> = hm.iter().map(get).collect();
            let _ = writeln!(
                s,
                "| idle | {metric} | {} | {} | {} |",
                cell(&a, unit),
                cell(&b, unit),
                ratio(&a, &b)
            );
        }
        for (name, v) in [("nginx", &ng), ("heim", &hm)] {
            let slow: Vec<String> = v
                .iter()
                .filter(|x| !x.stable)
                .map(|x| format!("{:.0} s", x.settle_secs))
                .collect();
            if !slow.is_empty() {
                notes.push(format!(
                    "idle ({}): {name}'s RSS was still moving when read in {} of {} round(s) \
                     (read after {}).",
                    mode.label(),
                    slow.len(),
                    v.len(),
                    slow.join(", ")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[3.0]), Some((3.0, 3.0, 3.0)));
        assert_eq!(summary(&[5.0, 1.0, 3.0]), Some((3.0, 1.0, 5.0)));
        assert_eq!(summary(&[4.0, 1.0, 3.0, 2.0]), Some((2.5, 1.0, 4.0)));
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(112_207), "112,207");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_value(270.0, Unit::Micros), "270 µs");
        assert_eq!(fmt_value(1850.0, Unit::Micros), "1.85 ms");
        assert_eq!(fmt_value(1_990_000.0, Unit::Micros), "1.99 s");
        assert_eq!(fmt_value(5120.0, Unit::Kib), "5.0 MiB");
        assert_eq!(cell(&[1.0, 2.0, 3.0], Unit::Rate), "2 (1–3)");
        assert_eq!(cell(&[7.0], Unit::Rate), "7");
        assert_eq!(ratio(&[100.0], &[120.0]), "1.20×");
        assert_eq!(ratio(&[0.0], &[120.0]), "—");
    }

    #[test]
    fn table() {
        let sample = |rps: f64, pct: f64| Sample {
            rps,
            requests: 1000,
            p50_us: Some(300.0),
            p99_us: Some(900.0),
            mean_us: Some(400.0),
            max_us: Some(4000.0),
            cpu_us_per_req: 8.0,
            cpu_pct: pct,
            rss_kib: 4096,
            ..Sample::default()
        };
        let h = Header {
            date: "2026-01-01 00:00 UTC".into(),
            command: "heim-bench".into(),
            nproc: 2,
            kernel: "6.1".into(),
            nginx_version: "nginx/1.22.1".into(),
            heim_version: "heim-proxy 0.1.0".into(),
            profile: "1 worker".into(),
            handshake_burst: true,
        };
        let r = ScenarioResult {
            scenario: Scenario::H1,
            nginx: vec![sample(100.0, 99.0), sample(110.0, 99.0)],
            heim: vec![sample(120.0, 80.0), sample(130.0, 80.0)],
            nginx_tls: None,
            heim_tls: None,
            idle: None,
        };
        let out = render(&h, &[r], 1);
        assert!(
            out.contains("| h1 | req/s | 105 (100–110) | 125 (120–130) | 1.19× |"),
            "{out}"
        );
        assert!(
            out.contains("| h1 | p99 latency | 900 µs | 900 µs | 1.00× |"),
            "{out}"
        );
        assert!(out.contains("h1: heim used 80 % of its core"), "{out}");
        assert!(!out.contains("h1: nginx used"), "{out}");
        assert!(!out.contains('†'), "{out}");
    }

    #[test]
    fn idle_table() {
        let sample = |mode, before_kib, idle_kib, stable| IdleSample {
            mode,
            conns: 2000,
            before_kib,
            idle_kib,
            settle_secs: 1.2,
            stable,
        };
        let h = Header {
            date: "2026-01-01 00:00 UTC".into(),
            command: "heim-bench --scenarios idle".into(),
            nproc: 2,
            kernel: "6.1".into(),
            nginx_version: "nginx/1.22.1".into(),
            heim_version: "heim-proxy 0.1.0".into(),
            profile: "1 worker".into(),
            handshake_burst: true,
        };
        let r = ScenarioResult {
            scenario: Scenario::Idle,
            nginx: Vec::new(),
            heim: Vec::new(),
            nginx_tls: None,
            heim_tls: None,
            idle: Some(IdleResult {
                conns: 2000,
                nginx: vec![
                    sample(IdleMode::Request, 4096, 4096 + 20_000, true),
                    sample(IdleMode::Handshake, 4096, 4096 + 18_000, true),
                ],
                heim: vec![
                    sample(IdleMode::Request, 8192, 8192 + 42_000, true),
                    sample(IdleMode::Handshake, 8192, 8192 + 30_000, false),
                ],
            }),
        };
        let out = render(&h, &[r], 1);
        assert!(
            out.contains(
                "| idle | KiB/conn, 2,000 idle, after 1 request | 10.0 KiB | 21.0 KiB | 2.10× |"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| idle | KiB/conn, 2,000 idle, handshake only | 9.0 KiB | 15.0 KiB | 1.67× |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| idle | RSS before (after 1 request) | 4.0 MiB | 8.0 MiB | 2.00× |"),
            "{out}"
        );
        assert!(out.contains("heim's RSS was still moving"), "{out}");
        assert!(!out.contains("nginx's RSS was still moving"), "{out}");
        assert!(!out.contains("| idle | KiB/conn |"), "{out}");
        assert!(!out.contains("Higher is better"), "{out}");
        assert!(out.contains("≤ 16 KiB"), "{out}");
    }
}
