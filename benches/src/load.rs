//! Load generation: runs `wrk` and `h2load` against one proxy and parses what they print.
//!
//! The scenarios are the ones `/work/shared/BENCH.md` fixes, driven by the same tools every
//! peer is measured with, so a figure means the same thing for nginx and heim:
//!
//! * `h1`: HTTP/1.1 keep-alive through the proxy, plain text — `wrk -t1 -c64 --latency`.
//! * `tls`: the same over TLS 1.3 — `wrk` on an `https://` URL (wrk sends no SNI to an IP,
//!   so both proxies answer with their default certificate).
//! * `h2`: HTTP/2, 16 connections × 100 streams — `h2load -c16 -m100 -D secs`.
//! * `handshake`: full TLS handshakes, one request per connection. By default heim-bench is the
//!   client (see `handshake`): C connections in flight for D seconds, each a fresh connection,
//!   a full handshake and one request. With `--handshake-client h2load`, BENCH.md's burst:
//!   `h2load --h1 -n N -c N -m1` opens N clients that each send exactly one request on a fresh
//!   connection; h2load keeps no session cache, so every connection is a full handshake.
//!   `handshake-rsa` repeats it with an RSA-2048 certificate (BENCH.md's RSA variant),
//!   `handshake-acme` with heim serving the same ECDSA certificate from its ACME store.
//!
//! The generator always runs on core 0 (`taskset -c 0`), next to the backend, leaving core 1 to
//! the proxy under test. Every run is bounded: the tool gets a wall-clock deadline and is killed
//! past it. Output goes to files, not pipes, so a chatty tool can never block on a full pipe.

use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

/// One measured scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// HTTP/1.1 keep-alive, plain text, wrk -c64.
    H1,
    /// HTTP/1.1 keep-alive over TLS 1.3, wrk -c64.
    Tls,
    /// HTTP/2 over TLS, h2load -c16 -m100.
    H2,
    /// Full TLS handshakes, one request per connection (ECDSA P-256).
    Handshake,
    /// Full TLS handshakes with an RSA-2048 certificate.
    HandshakeRsa,
    /// Full TLS handshakes, heim serving the ECDSA certificate from its ACME store (loaded
    /// from `storage_dir` at start, never due for renewal) instead of a `[[certificate]]` file.
    HandshakeAcme,
    /// RSS per idle TLS keep-alive connection; heim-bench is the client (see `idle`).
    Idle,
    /// The `tls` load on a signed-in route: heim checks a session cookie on every request and
    /// adds identity headers and an ES256 JWT; nginx asks an auth endpoint with `auth_request`
    /// (the oauth2-proxy setup). Compare heim's figure with its `tls` one of the same run, too.
    Auth,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::H1 => "h1",
            Scenario::Tls => "tls",
            Scenario::H2 => "h2",
            Scenario::Handshake => "handshake",
            Scenario::HandshakeRsa => "handshake-rsa",
            Scenario::HandshakeAcme => "handshake-acme",
            Scenario::Idle => "idle",
            Scenario::Auth => "auth",
        }
    }

    /// The program the scenario needs: its load generator, or for `idle` (heim-bench is the
    /// client) `prlimit`, which raises the open-file limit.
    pub fn tool(self) -> &'static str {
        match self {
            Scenario::H1 | Scenario::Tls | Scenario::Auth => "wrk",
            Scenario::Idle => "prlimit",
            _ => "h2load",
        }
    }

    /// Whether the proxies in this scenario's batch serve the RSA-2048 certificate.
    pub fn rsa(self) -> bool {
        self == Scenario::HandshakeRsa
    }

    /// Whether this is one of the full-handshake scenarios.
    pub fn handshake(self) -> bool {
        matches!(
            self,
            Scenario::Handshake | Scenario::HandshakeRsa | Scenario::HandshakeAcme
        )
    }

    /// What the throughput row is called.
    pub fn rate_label(self) -> &'static str {
        match self {
            Scenario::Handshake | Scenario::HandshakeRsa | Scenario::HandshakeAcme => {
                "handshakes/s"
            }
            Scenario::Idle => "KiB/conn",
            _ => "req/s",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a proxy listens.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub plain_port: u16,
    pub tls_port: u16,
    /// A `Cookie` header every request carries (`auth`: heim's session).
    pub cookie: Option<&'static str>,
}

/// Who opens the connections of the handshake scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HandshakeClient {
    /// heim-bench itself (see `handshake`): closed loop, C connections in flight for D seconds.
    HeimBench,
    /// BENCH.md's burst: `h2load --h1 -n N -c N -m1`.
    H2load,
}

/// How much one run drives: the timed scenarios use `secs`; the handshake ones `secs` and
/// `inflight` (heim-bench's client) or `conns` (h2load's burst).
#[derive(Clone, Copy, Debug)]
pub struct Amount {
    pub secs: u32,
    /// Connections (= requests) of one h2load handshake burst.
    pub conns: u32,
    /// Connections in flight at a time with heim-bench's handshake client.
    pub inflight: u32,
    pub client: HandshakeClient,
}

/// What one load-generator run reports. Latencies are in microseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadResult {
    /// Completed requests (wrk: "N requests in"; h2load: "succeeded").
    pub requests: u64,
    /// The tool's own rate figure (wrk "Requests/sec", h2load "finished in …, X req/s").
    pub rps: f64,
    /// Non-2xx responses plus socket errors / failed requests.
    pub errors: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mean_us: Option<f64>,
    pub max_us: Option<f64>,
    /// h2load's "TLS Protocol / Cipher / Server Temp Key / Application protocol", joined.
    pub tls: Option<String>,
}

/// The argv (after `taskset -c 0`) for one run; empty for `idle`, which runs no tool.
pub fn argv(scenario: Scenario, target: Target, amount: Amount) -> Vec<String> {
    let https = format!("https://127.0.0.1:{}/", target.tls_port);
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match scenario {
        Scenario::H1 | Scenario::Tls | Scenario::Auth => {
            let url = if scenario == Scenario::H1 {
                format!("http://127.0.0.1:{}/", target.plain_port)
            } else {
                https
            };
            let mut v = s(&["wrk", "-t1", "-c64", "--latency"]);
            if let Some(c) = target.cookie {
                v.push("-H".into());
                v.push(format!("Cookie: {c}"));
            }
            v.push(format!("-d{}s", amount.secs));
            v.push(url);
            v
        }
        Scenario::H2 => {
            let mut v = s(&["h2load", "-c16", "-m100", "-D"]);
            v.push(amount.secs.to_string());
            v.push(https);
            v
        }
        Scenario::Handshake | Scenario::HandshakeRsa | Scenario::HandshakeAcme => {
            let mut v = s(&["h2load", "--h1", "-m1"]);
            v.push(format!("-n{}", amount.conns));
            v.push(format!("-c{}", amount.conns));
            v.push(https);
            v
        }
        Scenario::Idle => Vec::new(),
    }
}

/// Runs the generator for `scenario` on core 0 and parses its output. `scratch` is a directory
/// for the output files; `label` names them; `cert` is the certificate the proxies serve.
pub fn run(
    scenario: Scenario,
    target: Target,
    amount: Amount,
    cert: &Path,
    scratch: &Path,
    label: &str,
) -> Result<LoadResult> {
    if scenario == Scenario::Idle {
        bail!("the idle scenario runs no load generator (see idle::measure)");
    }
    if scenario.handshake() && amount.client == HandshakeClient::HeimBench {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, target.tls_port));
        return crate::handshake::run(addr, cert, amount.inflight, amount.secs);
    }
    let args = argv(scenario, target, amount);
    let out_path = scratch.join(format!("{label}.out"));
    let err_path = scratch.join(format!("{label}.err"));
    let stdout =
        File::create(&out_path).with_context(|| format!("create {}", out_path.display()))?;
    let stderr =
        File::create(&err_path).with_context(|| format!("create {}", err_path.display()))?;
    // setpriv --pdeathsig KILL: the generator dies with heim-bench.
    let mut child = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "taskset", "-c", "0"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn taskset -c 0 {}", args.join(" ")))?;

    // Bounded wait: the tool's own duration plus generous slack.
    let limit = match scenario {
        Scenario::Handshake | Scenario::HandshakeRsa | Scenario::HandshakeAcme => {
            Duration::from_secs(60 + u64::from(amount.conns) / 20)
        }
        _ => Duration::from_secs(u64::from(amount.secs) + 30),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for load generator")? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{}` still running after {limit:?}; killed it",
                args.join(" ")
            );
        }
        sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "`{}` failed ({status}):\n{}\n{}",
            args.join(" "),
            tail(&out, 15),
            tail(&err, 15)
        );
    }
    let parsed = match scenario.tool() {
        "wrk" => parse_wrk(&out),
        _ => parse_h2load(&out),
    };
    parsed.with_context(|| {
        format!(
            "parse the output of `{}`:\n{}\n{}",
            args.join(" "),
            tail(&out, 25),
            tail(&err, 10)
        )
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Parses a duration as wrk and h2load print it ("270.00us", "1.85ms", "1.97s") into µs.
pub fn parse_duration_us(s: &str) -> Result<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        bail!("{s:?} has no time unit (us/ms/s/m/h)");
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a duration"))?;
    Ok(v * scale)
}

fn parse_u64(s: &str) -> Result<u64> {
    s.trim()
        .parse()
        .with_context(|| format!("{s:?} is not a count"))
}

fn parse_f64(s: &str) -> Result<f64> {
    s.trim()
        .parse()
        .with_context(|| format!("{s:?} is not a number"))
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut requests = None;
    let mut rps = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("50%") {
            r.p50_us = Some(parse_duration_us(v)?);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_us = Some(parse_duration_us(v)?);
        } else if let Some(v) = t.strip_prefix("Latency ") {
            // "Latency   348.05us  186.05us   4.64ms   89.86%": avg, stdev, max, +/- stdev
            let f: Vec<&str> = v.split_whitespace().collect();
            if f.len() >= 3 {
                r.mean_us = Some(parse_duration_us(f[0])?);
                r.max_us = Some(parse_duration_us(f[2])?);
            }
        } else if let Some((n, _)) = t.split_once(" requests in ") {
            requests = Some(parse_u64(n)?);
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = Some(parse_f64(v)?);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += parse_u64(v)?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "Socket errors: connect 0, read 12, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    r.errors += parse_u64(n)?;
                }
            }
        }
    }
    r.requests = requests.context("no \"N requests in\" line")?;
    r.rps = rps.context("no \"Requests/sec:\" line")?;
    if r.p50_us.is_none() || r.p99_us.is_none() {
        bail!("no latency distribution (was --latency passed?)");
    }
    Ok(r)
}

/// Parses h2load output. h2load prints min/max/mean/sd of "time for request" but no
/// percentiles, so `p50_us`/`p99_us` stay `None`.
pub fn parse_h2load(text: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut rps = None;
    let mut requests = None;
    let mut tls: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("finished in ") {
            // "finished in 2.00s, 102775.50 req/s, 7.74MB/s"
            let f = v
                .split(',')
                .nth(1)
                .context("no req/s after \"finished in\"")?;
            let f = f
                .trim()
                .strip_suffix(" req/s")
                .context("no \"req/s\" after \"finished in\"")?;
            rps = Some(parse_f64(f)?);
        } else if let Some(v) = t.strip_prefix("requests:") {
            // "requests: 17562 total, 17584 started, 17562 done, 16000 succeeded, 1562 failed, …"
            for part in v.split(',') {
                let mut w = part.split_whitespace();
                let (Some(n), Some(what)) = (w.next(), w.next()) else {
                    continue;
                };
                match what {
                    "succeeded" => requests = Some(parse_u64(n)?),
                    "failed" => r.errors += parse_u64(n)?,
                    _ => {}
                }
            }
        } else if let Some(v) = t.strip_prefix("status codes:") {
            // "status codes: 16000 2xx, 0 3xx, 0 4xx, 0 5xx"
            for part in v.split(',') {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(class)) = (w.next(), w.next()) {
                    if class != "2xx" {
                        r.errors += parse_u64(n)?;
                    }
                }
            }
        } else if let Some(v) = t.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            let f: Vec<&str> = v.split_whitespace().collect();
            if f.len() < 3 {
                bail!("short \"time for request\" line: {t:?}");
            }
            r.max_us = Some(parse_duration_us(f[1])?);
            r.mean_us = Some(parse_duration_us(f[2])?);
        } else {
            for key in [
                "TLS Protocol:",
                "Cipher:",
                "Server Temp Key:",
                "Application protocol:",
            ] {
                if let Some(v) = t.strip_prefix(key) {
                    tls.push(v.trim().to_string());
                }
            }
        }
    }
    r.rps = rps.context("no \"finished in\" line")?;
    r.requests = requests.context("no \"requests:\" line")?;
    if r.mean_us.is_none() {
        bail!("no \"time for request\" line");
    }
    if !tls.is_empty() {
        r.tls = Some(tls.join(", "));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from wrk 4.1.0 / h2load 1.52.0 (Debian) against a local nginx 1.22.1.
    const WRK_H1: &str = include_str!("fixtures/wrk_h1.txt");
    const WRK_TLS: &str = include_str!("fixtures/wrk_tls.txt");
    const WRK_404: &str = include_str!("fixtures/wrk_404.txt");
    const H2LOAD_H2: &str = include_str!("fixtures/h2load_h2.txt");
    const H2LOAD_H2_FAILURES: &str = include_str!("fixtures/h2load_h2_failures.txt");
    const H2LOAD_HS: &str = include_str!("fixtures/h2load_hs.txt");

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn durations() {
        assert!(close(parse_duration_us("270.00us").unwrap(), 270.0));
        assert!(close(parse_duration_us("0.87ms").unwrap(), 870.0));
        assert!(close(parse_duration_us("  1.97s").unwrap(), 1_970_000.0));
        assert!(close(parse_duration_us("1.50m").unwrap(), 90e6));
        assert!(parse_duration_us("12").is_err());
        assert!(parse_duration_us("abcms").is_err());
    }

    #[test]
    fn wrk_plain() {
        let r = parse_wrk(WRK_H1).unwrap();
        assert_eq!(r.requests, 235_799);
        assert!(close(r.rps, 112_206.96));
        assert_eq!(r.errors, 0);
        assert!(close(r.p50_us.unwrap(), 270.0));
        assert!(close(r.p99_us.unwrap(), 749.0));
        assert!(close(r.mean_us.unwrap(), 348.05));
        assert!(close(r.max_us.unwrap(), 4640.0));
        assert_eq!(r.tls, None);
    }

    #[test]
    fn wrk_tls_mixed_units() {
        let r = parse_wrk(WRK_TLS).unwrap();
        assert_eq!(r.requests, 140_403);
        assert!(close(r.rps, 70_101.40));
        assert!(close(r.p50_us.unwrap(), 835.0));
        assert!(close(r.p99_us.unwrap(), 1850.0));
        assert!(close(r.mean_us.unwrap(), 920.0));
        assert!(close(r.max_us.unwrap(), 31_660.0));
    }

    #[test]
    fn wrk_counts_non_2xx_and_socket_errors() {
        let r = parse_wrk(WRK_404).unwrap();
        assert_eq!(r.requests, 112_024);
        assert_eq!(r.errors, 112_024);
        assert!(close(r.p99_us.unwrap(), 1230.0));

        let with_socket_errors = WRK_H1.replace(
            "Requests/sec:",
            "  Socket errors: connect 1, read 12, write 0, timeout 3\nRequests/sec:",
        );
        assert_eq!(parse_wrk(&with_socket_errors).unwrap().errors, 16);
    }

    #[test]
    fn wrk_rejects_incomplete_output() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
        let no_latency: String = WRK_H1
            .lines()
            .filter(|l| !l.contains('%'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_wrk(&no_latency).is_err());
    }

    #[test]
    fn h2load_h2() {
        let r = parse_h2load(H2LOAD_H2).unwrap();
        assert_eq!(r.requests, 205_551);
        assert!(close(r.rps, 102_775.50));
        assert_eq!(r.errors, 0);
        assert_eq!(r.p50_us, None);
        assert_eq!(r.p99_us, None);
        assert!(close(r.mean_us.unwrap(), 15_160.0));
        assert!(close(r.max_us.unwrap(), 30_570.0));
        assert_eq!(
            r.tls.as_deref(),
            Some("TLSv1.3, TLS_AES_128_GCM_SHA256, X25519 253 bits, h2")
        );
    }

    #[test]
    fn h2load_counts_failures() {
        let r = parse_h2load(H2LOAD_H2_FAILURES).unwrap();
        assert_eq!(r.requests, 16_000);
        assert_eq!(r.errors, 1562);
        assert!(close(r.rps, 8000.0));
        assert!(close(r.mean_us.unwrap(), 13_830.0));
        assert!(close(r.max_us.unwrap(), 24_470.0));

        let non_2xx = H2LOAD_H2.replace(
            "205551 2xx, 0 3xx, 0 4xx, 0 5xx",
            "205000 2xx, 0 3xx, 500 4xx, 51 5xx",
        );
        assert_eq!(parse_h2load(&non_2xx).unwrap().errors, 551);
    }

    #[test]
    fn h2load_handshakes() {
        let r = parse_h2load(H2LOAD_HS).unwrap();
        assert_eq!(r.requests, 4000);
        assert!(close(r.rps, 1392.56));
        assert_eq!(r.errors, 0);
        assert!(close(r.mean_us.unwrap(), 1_040_000.0));
        assert!(close(r.max_us.unwrap(), 1_990_000.0));
        assert_eq!(
            r.tls.as_deref(),
            Some("TLSv1.3, TLS_AES_128_GCM_SHA256, X25519 253 bits, http/1.1")
        );
    }

    #[test]
    fn h2load_rejects_incomplete_output() {
        assert!(parse_h2load("starting benchmark...\n").is_err());
        let cut: String = H2LOAD_H2.lines().take(20).collect::<Vec<_>>().join("\n");
        assert!(parse_h2load(&cut).is_err());
    }

    #[test]
    fn argv_shapes() {
        let t = Target {
            plain_port: 8080,
            tls_port: 8443,
            cookie: None,
        };
        let a = |secs, conns| Amount {
            secs,
            conns,
            inflight: 64,
            client: HandshakeClient::H2load,
        };
        assert_eq!(
            argv(Scenario::H1, t, a(10, 9)).join(" "),
            "wrk -t1 -c64 --latency -d10s http://127.0.0.1:8080/"
        );
        assert_eq!(
            argv(Scenario::Tls, t, a(3, 9)).join(" "),
            "wrk -t1 -c64 --latency -d3s https://127.0.0.1:8443/"
        );
        assert_eq!(
            argv(Scenario::H2, t, a(10, 9)).join(" "),
            "h2load -c16 -m100 -D 10 https://127.0.0.1:8443/"
        );
        assert_eq!(
            argv(Scenario::Handshake, t, a(9, 4000)).join(" "),
            "h2load --h1 -m1 -n4000 -c4000 https://127.0.0.1:8443/"
        );
    }
}
