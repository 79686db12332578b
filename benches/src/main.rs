//! `heim-bench`: heim-proxy against nginx, side by side, in one run, on one machine.
//!
//! It follows `/work/shared/BENCH.md`, the project's measuring protocol. The machines are 2-core
//! shared VMs whose absolute throughput moves by 2× from day to day, so a figure counts only as
//! a ratio to nginx measured in the same run. Therefore, per scenario (h1, tls, h2, handshake…):
//!
//! 1. one shared backend (a separate nginx, `return 200`) runs on core 0 for the whole run;
//! 2. nginx and heim are started as proxies in front of it, pinned to core 1 with one worker
//!    each (or unpinned with `--workers 2`, the scaling profile), and stay up for the batch;
//! 3. each is warmed up (a short run, discarded), then measured in R alternating rounds
//!    (nginx, heim, nginx, heim, …) of D seconds with wrk, h2load or (full handshakes)
//!    heim-bench's own client on core 0;
//! 4. each round records req/s, latency, the proxy's CPU-µs per request (Δ utime+stime from
//!    `/proc`; the fairest figure when the load generator shares the box) and its peak RSS;
//! 5. the medians, spreads and heim/nginx ratios are printed as a markdown table.
//!
//! The `idle` scenario measures memory instead: per round and variant it starts both proxies
//! afresh, and heim-bench itself holds N idle TLS keep-alive connections to each (see `idle`).
//!
//! It builds nothing: it runs `target/release/heim-proxy` (or `--heim PATH`). All traffic stays
//! on 127.0.0.1, every wait is bounded, and every child is stopped on exit or error.

mod handshake;
mod idle;
mod load;
mod peers;
mod report;

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;

use idle::IdleMode;
use load::{Amount, HandshakeClient, LoadResult, Scenario, Target};
use peers::{CertFiles, HeimCerts, Proc};
use report::{Header, IdleResult, Sample, ScenarioResult};

/// Benchmark heim-proxy against nginx (BENCH.md protocol) and print a markdown table of
/// heim/nginx ratios. Needs `cargo build --release -p heim-proxy` first, and
/// `apt-get install nginx-light wrk nghttp2-client`.
#[derive(Parser, Debug)]
#[command(name = "heim-bench")]
struct Cli {
    /// The heim-proxy binary [default: target/release/heim-proxy].
    #[arg(long, value_name = "PATH")]
    heim: Option<PathBuf>,

    /// The nginx binary, used both as the backend and as the peer.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,

    /// Measured rounds per scenario (each runs nginx, then heim).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,

    /// Seconds per measured run (h1, tls, h2).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=300))]
    duration: u32,

    /// Seconds of the discarded warm-up run per proxy per scenario.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=60))]
    warmup: u32,

    /// Workers per proxy: 1 = the headline profile (proxy pinned to core 1); more = the
    /// unpinned scaling profile.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "h1,tls,h2,handshake,idle"
    )]
    scenarios: Vec<Scenario>,

    /// Who opens the handshake scenarios' connections: heim-bench's closed-loop client
    /// (--handshake-inflight connections in flight for --duration seconds), or BENCH.md's
    /// h2load burst (--handshakes connections opened at once).
    #[arg(long, value_enum, default_value = "heim-bench")]
    handshake_client: HandshakeClient,

    /// Connections in flight at a time with `--handshake-client heim-bench`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1000))]
    handshake_inflight: u32,

    /// Connections (each one full handshake and one request) per h2load handshake round.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(100..=15000))]
    handshakes: u32,

    /// Idle TLS keep-alive connections held open per proxy in the idle scenario.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..=15000))]
    idle_connections: u32,

    /// Also append the markdown to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heim-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch directory removed on drop (after the processes using it: declare it first).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        remove_stale_dirs();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("heim-bench-{}-{nanos}", std::process::id()));
        fs::create_dir(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(TempDir(p))
    }
}

/// Removes `heim-bench-PID-*` scratch directories whose process is gone (a run killed by a
/// signal cannot clean up after itself).
fn remove_stale_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(rd) = fs::read_dir(&tmp) else { return };
    for e in rd.flatten().take(100_000) {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("heim-bench-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("heim-bench: could not remove {}: {e}", self.0.display());
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for s in &cli.scenarios {
        if !scenarios.contains(s) {
            scenarios.push(*s);
        }
    }
    ensure!(!scenarios.is_empty(), "no scenario selected");
    check_tools(cli, &scenarios)?;
    let heim_bin = heim_binary(cli)?;
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    ensure!(
        nproc >= 2,
        "BENCH.md pins the proxy to core 1 and the load generator to core 0: this needs ≥ 2 cores, found {nproc}"
    );

    let nginx_v = command_text(Command::new(&cli.nginx).arg("-v")).context("run nginx -v")?;
    let version = peers::nginx_version(&nginx_v)
        .with_context(|| format!("no version in `nginx -v`: {nginx_v:?}"))?;
    let heim_v = command_text(Command::new(&heim_bin).arg("--version"))
        .context("run heim-proxy --version")?;
    ensure!(
        heim_v.starts_with("heim-proxy"),
        "`{} --version` printed {heim_v:?}, not \"heim-proxy X.Y.Z\": a stub or broken build? \
         Rebuild it with `cargo build --release -p heim-proxy`",
        heim_bin.display()
    );
    let stale = newer_source(&heim_bin);
    if let Some(src) = &stale {
        eprintln!(
            "heim-bench: warning: {} is older than {}; rebuild with `cargo build --release -p heim-proxy`",
            heim_bin.display(),
            src.display()
        );
    }
    let heim_built = command_text(
        Command::new("date")
            .arg("-u")
            .arg("-r")
            .arg(&heim_bin)
            .arg("+%Y-%m-%d %H:%M UTC"),
    )
    .unwrap_or_default();
    let tck = clock_ticks();

    let header = Header {
        date: command_text(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC"))
            .unwrap_or_default(),
        command: command_line(),
        nproc,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        nginx_version: format!(
            "nginx/{}.{}.{} ({})",
            version.0,
            version.1,
            version.2,
            cli.nginx.display()
        ),
        heim_version: format!(
            "{} ({}, built {}{})",
            heim_v.trim(),
            heim_bin.display(),
            heim_built.trim(),
            if stale.is_some() {
                ", OLDER than proxy/ sources"
            } else {
                ""
            }
        ),
        profile: profile(cli),
        handshake_burst: cli.handshake_client == HandshakeClient::H2load,
    };

    if scenarios.contains(&Scenario::Idle) {
        // The client holds N sockets, heim N + its own; raised before any child starts, so
        // they inherit it (nginx sets its own with worker_rlimit_nofile).
        idle::raise_nofile(u64::from(cli.idle_connections) + 1024)?;
    }

    // Declared first so it is dropped last, after every process that uses it.
    let tmp = TempDir::new()?;
    let dir = tmp.0.as_path();
    let ecdsa = peers::write_cert(dir, "ecdsa", false)?;
    let rsa = if scenarios.iter().any(|s| s.rsa()) {
        Some(peers::write_cert(dir, "rsa", true)?)
    } else {
        None
    };

    let backend_port = peers::free_ports(1)?[0];
    let backend_prefix = dir.join("backend");
    fs::create_dir(&backend_prefix).context("create the backend prefix")?;
    let conf = backend_prefix.join("nginx.conf");
    fs::write(&conf, peers::backend_conf(&backend_prefix, backend_port))
        .context("write the backend config")?;
    let mut backend = Proc::spawn(
        "backend nginx",
        Some("0"),
        &nginx_argv(cli, &backend_prefix, &conf),
        &[],
        dir.join("backend.log"),
    )?;
    backend.wait_ready(SocketAddr::from((Ipv4Addr::LOCALHOST, backend_port)), "/")?;
    eprintln!(
        "heim-bench: backend nginx on 127.0.0.1:{backend_port} (core 0); scratch {}",
        dir.display()
    );

    let mut results = Vec::new();
    for &scenario in &scenarios {
        let cert = match (scenario.rsa(), &rsa) {
            (true, Some(r)) => r,
            _ => &ecdsa,
        };
        let env = BatchEnv {
            cli,
            heim_bin: &heim_bin,
            dir,
            cert,
            backend_port,
            nginx_version: version,
        };
        let r = if scenario == Scenario::Idle {
            idle_batch(&env, &mut backend)
        } else {
            batch(&env, scenario, tck, &mut backend)
        }
        .with_context(|| format!("scenario {scenario}"))?;
        results.push(r);
    }

    let md = report::render(&header, &results, cli.workers);
    println!("{md}");
    if let Some(out) = &cli.out {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .with_context(|| format!("open {}", out.display()))?;
        writeln!(f, "{md}").with_context(|| format!("append to {}", out.display()))?;
        eprintln!("heim-bench: appended to {}", out.display());
    }
    Ok(())
}

/// One proxy under test.
struct Peer {
    name: &'static str,
    proc: Proc,
    target: Target,
    /// nginx: RSS is its workers' (the master holds no connections).
    is_nginx: bool,
}

impl Peer {
    /// The processes whose memory counts: nginx's workers (the master holds no connections),
    /// heim's one process.
    fn rss_pids<'a>(&self, pids: &'a [u32]) -> &'a [u32] {
        if self.is_nginx && pids.len() > 1 {
            &pids[1..]
        } else {
            pids
        }
    }

    /// One load run against this proxy, with its CPU and memory.
    fn measure(
        &mut self,
        scenario: Scenario,
        amount: Amount,
        env: &BatchEnv<'_>,
        label: &str,
        tck: u64,
    ) -> Result<(Sample, LoadResult)> {
        self.proc.check_alive()?;
        let pids = self.proc.pids();
        let before = peers::cpu_ticks(&pids)?;
        let core0_before = peers::read_core_ticks(0);
        let start = Instant::now();
        let r = load::run(
            scenario,
            self.target,
            amount,
            &env.cert.cert,
            env.dir,
            label,
        )
        .with_context(|| format!("load against {}", self.name))?;
        let wall = start.elapsed().as_secs_f64();
        let core0 = match (core0_before, peers::read_core_ticks(0)) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(b1.saturating_sub(b0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => None,
        };
        self.proc.check_alive()?;
        let after = peers::cpu_ticks(&pids)
            .with_context(|| format!("a {} process exited during the run", self.name))?;
        let rss_kib = peers::peak_rss_kib(self.rss_pids(&pids))?;
        ensure!(r.requests > 0, "{} completed no request", self.name);
        let cpu_s = after.saturating_sub(before) as f64 / tck as f64;
        let sample = Sample {
            rps: r.rps,
            requests: r.requests,
            errors: r.errors,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            mean_us: r.mean_us,
            max_us: r.max_us,
            cpu_us_per_req: cpu_s * 1e6 / r.requests as f64,
            cpu_pct: if wall > 0.0 {
                cpu_s / wall * 100.0
            } else {
                0.0
            },
            rss_kib,
            core0_pct: core0,
        };
        Ok((sample, r))
    }
}

/// What every batch starts its proxies with.
struct BatchEnv<'a> {
    cli: &'a Cli,
    heim_bin: &'a Path,
    dir: &'a Path,
    cert: &'a CertFiles,
    backend_port: u16,
    nginx_version: (u32, u32, u32),
}

/// Starts nginx and heim as proxies in front of the backend (files and logs named after
/// `label`), pinned to core 1 with one worker each (or unpinned), and checks that both proxy.
fn start_proxies(env: &BatchEnv<'_>, label: &str) -> Result<(Peer, Peer)> {
    let cli = env.cli;
    let pin = (cli.workers == 1).then_some("1");
    let ports = peers::free_ports(5)?;
    let local = |port: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let prefix = env.dir.join(format!("nginx-{label}"));
    fs::create_dir(&prefix).with_context(|| format!("create {}", prefix.display()))?;
    let conf = prefix.join("nginx.conf");
    let http2_directive = env.nginx_version >= (1, 25, 1);
    let auth = label == Scenario::Auth.name();
    let acme = label == Scenario::HandshakeAcme.name();
    let auth_files = if auth {
        Some(peers::write_auth(env.dir)?)
    } else {
        None
    };
    let cookie = auth_files.as_ref().map(|a| a.cookie);
    let text = peers::nginx_proxy_conf(
        &prefix,
        cli.workers,
        ports[0],
        ports[1],
        env.backend_port,
        env.cert,
        http2_directive,
        auth,
    );
    fs::write(&conf, text).context("write the nginx proxy config")?;
    let nginx_proc = Proc::spawn(
        "nginx (proxy)",
        pin,
        &nginx_argv(cli, &prefix, &conf),
        &[],
        env.dir.join(format!("nginx-{label}.log")),
    )?;
    let mut nginx = Peer {
        name: "nginx",
        proc: nginx_proc,
        target: Target {
            plain_port: ports[0],
            tls_port: ports[1],
            cookie,
        },
        is_nginx: true,
    };
    nginx.proc.wait_ready(local(ports[0]), "/")?;

    let heim_conf = env.dir.join(format!("heim-{label}.toml"));
    let acme_store = env.dir.join(format!("acme-{label}"));
    let certs = if acme {
        peers::write_acme_store(&acme_store, env.cert)?;
        HeimCerts::Acme(&acme_store)
    } else {
        HeimCerts::File(env.cert)
    };
    let text = peers::heim_conf(
        cli.workers,
        ports[2],
        ports[3],
        ports[4],
        env.backend_port,
        certs,
        auth_files.as_ref(),
    );
    fs::write(&heim_conf, text).context("write the heim config")?;
    let argv = [
        env.heim_bin.display().to_string(),
        "--config".to_string(),
        heim_conf.display().to_string(),
    ];
    let heim_proc = Proc::spawn(
        "heim-proxy",
        pin,
        &argv,
        // `handshake-acme`: the ACME layer's info lines show that it loaded the stored certificate
        // and ordered none.
        &[(
            "RUST_LOG",
            if acme {
                "warn,heim_proxy::acme=info"
            } else {
                "warn"
            },
        )],
        env.dir.join(format!("heim-{label}.log")),
    )?;
    let mut heim = Peer {
        name: "heim",
        proc: heim_proc,
        target: Target {
            plain_port: ports[3],
            tls_port: ports[2],
            cookie,
        },
        is_nginx: false,
    };
    heim.proc.wait_ready(local(ports[4]), "/readyz")?;
    if acme {
        check_acme(&mut heim.proc, local(ports[4]))?;
    }

    // Both must really proxy to the backend before anything is measured.
    for p in [&nginx, &heim] {
        let addr = local(p.target.plain_port);
        let (status, body) =
            peers::http_get(addr, "/").with_context(|| format!("GET / through {}", p.name))?;
        // `auth`: without the session cookie heim must refuse (the load generator sends it).
        if auth && !p.is_nginx {
            ensure!(
                status == 401,
                "GET http://{addr}/ without a session through heim answered {status}, not 401"
            );
            continue;
        }
        ensure!(
            status == 200 && body == peers::BODY,
            "GET http://{addr}/ through {} answered {status} {body:?}, not 200 {:?}; its output:\n{}",
            p.name,
            peers::BODY,
            p.proc.log_tail()
        );
    }
    Ok((nginx, heim))
}

/// `handshake-acme`: heim loaded the stored certificate into its ACME layer, serves nothing from a
/// file, and ordered nothing (bounded: 5 s for the log line).
fn check_acme(heim: &mut Proc, admin: SocketAddr) -> Result<()> {
    const LOADED: &str = "ACME: certificate loaded from storage";
    let mut loaded = false;
    for _ in 0..200 {
        heim.check_alive()?;
        if heim.log().contains(LOADED) {
            loaded = true;
            break;
        }
        sleep(Duration::from_millis(25));
    }
    ensure!(
        loaded,
        "heim did not log {LOADED:?} within 5 s; its output:\n{}",
        heim.log_tail()
    );
    let log = heim.log();
    ensure!(
        !log.contains("ACME: ordering"),
        "heim is ordering a certificate instead of serving the stored one; its output:\n{}",
        heim.log_tail()
    );
    let (status, metrics) = peers::http_get(admin, "/metrics").context("GET /metrics from heim")?;
    ensure!(
        status == 200,
        "GET http://{admin}/metrics answered {status}"
    );
    let counts: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("heim_certificates{"))
        .collect();
    ensure!(
        counts.contains(&"heim_certificates{source=\"acme\"} 1")
            && counts
                .iter()
                .all(|l| l.ends_with(" 0") || l.contains("acme")),
        "heim should serve exactly one certificate, from ACME; its metrics say:\n{}",
        counts.join("\n")
    );
    eprintln!("[handshake-acme] heim: {LOADED}; served from the ACME layer");
    Ok(())
}

/// Starts both proxies for `scenario`, warms them up, runs the alternated rounds, stops them.
fn batch(
    env: &BatchEnv<'_>,
    scenario: Scenario,
    tck: u64,
    backend: &mut Proc,
) -> Result<ScenarioResult> {
    let cli = env.cli;
    let (mut nginx, mut heim) = start_proxies(env, scenario.name())?;

    let settle = || sleep(Duration::from_millis(500));
    let warm = Amount {
        secs: cli.warmup,
        conns: (cli.handshakes / 4).max(100),
        inflight: cli.handshake_inflight,
        client: cli.handshake_client,
    };
    for p in [&mut nginx, &mut heim] {
        let label = format!("{scenario}-warmup-{}", p.name);
        let (s, _) = p.measure(scenario, warm, env, &label, tck)?;
        eprintln!(
            "[{scenario}] warm-up {:5}: {:>9.0} {}",
            p.name,
            s.rps,
            scenario.rate_label()
        );
        if s.errors * 100 > s.requests {
            bail!(
                "warm-up against {}: {} errors in {} requests; its output:\n{}",
                p.name,
                s.errors,
                s.requests,
                p.proc.log_tail()
            );
        }
        settle();
    }

    let amount = Amount {
        secs: cli.duration,
        conns: cli.handshakes,
        inflight: cli.handshake_inflight,
        client: cli.handshake_client,
    };
    let mut res = ScenarioResult {
        scenario,
        nginx: Vec::new(),
        heim: Vec::new(),
        nginx_tls: None,
        heim_tls: None,
        idle: None,
    };
    for round in 1..=cli.rounds {
        for p in [&mut nginx, &mut heim] {
            let label = format!("{scenario}-{round}-{}", p.name);
            let (s, r) = p.measure(scenario, amount, env, &label, tck)?;
            eprintln!(
                "[{scenario}] round {round}/{} {:5}: {:>9.0} {}, {:.2} CPU-µs/req, {:.0} % CPU, core 0 {:.0} % busy, {} errors",
                cli.rounds,
                p.name,
                s.rps,
                scenario.rate_label(),
                s.cpu_us_per_req,
                s.cpu_pct,
                s.core0_pct.unwrap_or(f64::NAN),
                s.errors
            );
            if p.is_nginx {
                res.nginx.push(s);
                res.nginx_tls = r.tls;
            } else {
                res.heim.push(s);
                res.heim_tls = r.tls;
            }
            settle();
        }
        backend.check_alive()?;
    }
    // `nginx` and `heim` drop here: both proxies are stopped before the next batch.
    Ok(res)
}

/// The idle scenario: per round, for each variant (idle after one request, idle after the
/// handshake), fresh proxies, then N idle connections held to nginx, then to heim. Fresh
/// processes, because memory an allocator kept from an earlier round would hide the cost.
fn idle_batch(env: &BatchEnv<'_>, backend: &mut Proc) -> Result<ScenarioResult> {
    let cli = env.cli;
    let n = cli.idle_connections;
    let mut res = IdleResult {
        conns: n,
        ..IdleResult::default()
    };
    for round in 1..=cli.rounds {
        for mode in IdleMode::ALL {
            let (mut nginx, mut heim) = start_proxies(env, &format!("idle-{round}-{mode}"))?;
            for p in [&mut nginx, &mut heim] {
                p.proc.check_alive()?;
                let pids = p.proc.pids();
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p.target.tls_port));
                let s = idle::measure(addr, &env.cert.cert, p.rss_pids(&pids), n, mode)
                    .with_context(|| format!("{n} idle connections ({mode}) to {}", p.name))?;
                p.proc.check_alive()?;
                eprintln!(
                    "[idle] round {round}/{} {:9} {:5}: {:.1} KiB/conn (RSS {} -> {} KiB, read after {:.1} s{})",
                    cli.rounds,
                    mode.name(),
                    p.name,
                    s.kib_per_conn(),
                    s.before_kib,
                    s.idle_kib,
                    s.settle_secs,
                    if s.stable { "" } else { ", not stable" }
                );
                if p.is_nginx {
                    res.nginx.push(s);
                } else {
                    res.heim.push(s);
                }
            }
            // Both proxies stop here, before the next variant starts its own.
        }
        backend.check_alive()?;
    }
    Ok(ScenarioResult {
        scenario: Scenario::Idle,
        nginx: Vec::new(),
        heim: Vec::new(),
        nginx_tls: None,
        heim_tls: None,
        idle: Some(res),
    })
}

/// `nginx -p PREFIX -c CONF -e ERRLOG -g 'daemon off;'` (foreground, everything in PREFIX).
fn nginx_argv(cli: &Cli, prefix: &Path, conf: &Path) -> Vec<String> {
    vec![
        cli.nginx.display().to_string(),
        "-p".into(),
        prefix.display().to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-e".into(),
        prefix.join("error.log").display().to_string(),
        "-g".into(),
        "daemon off;".into(),
    ]
}

/// Fails with the apt-get line if a tool is missing.
fn check_tools(cli: &Cli, scenarios: &[Scenario]) -> Result<()> {
    let hint = "install the peers and load generators with `apt-get install nginx-light wrk nghttp2-client`";
    ensure!(
        cli.nginx.is_file(),
        "{} not found: {hint} (or pass --nginx PATH)",
        cli.nginx.display()
    );
    let mut tools = vec!["taskset", "setpriv", "kill", "date", "getconf"];
    for s in scenarios {
        if s.handshake() && cli.handshake_client == HandshakeClient::HeimBench {
            continue;
        }
        if !tools.contains(&s.tool()) {
            tools.push(s.tool());
        }
    }
    for t in tools {
        ensure!(
            in_path(t),
            "`{t}` not found in PATH: {hint} (taskset and setpriv come with util-linux, kill with procps)"
        );
    }
    Ok(())
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `--heim`, else target/release/heim-proxy (honouring CARGO_TARGET_DIR, then the workspace's).
fn heim_binary(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.heim {
        ensure!(p.is_file(), "--heim {}: no such file", p.display());
        return Ok(p.clone());
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release/heim-proxy"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/heim-proxy"));
    candidates.push(PathBuf::from("target/release/heim-proxy"));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    bail!(
        "heim-proxy not found (looked at {}): build it with `cargo build --release -p heim-proxy`, or pass --heim PATH",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// A file under the workspace's `proxy/` (src and Cargo.toml) modified after `bin`, if any —
/// a stale binary would benchmark old code. Bounded walk: at most 10 000 entries.
fn newer_source(bin: &Path) -> Option<PathBuf> {
    let built = fs::metadata(bin).ok()?.modified().ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy");
    let root = root.canonicalize().unwrap_or(root);
    let mut stack = vec![root.join("src"), root.join("Cargo.toml")];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        let Ok(meta) = fs::metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| Some(e.ok()?.path())));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return Some(p);
        }
    }
    None
}

/// A command's stdout, or its stderr when stdout is empty (`nginx -v` prints on stderr).
fn command_text(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Ok(String::from_utf8_lossy(&text).trim().to_string())
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux if that fails).
fn clock_ticks() -> u64 {
    command_text(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// This invocation, for the report ("heim-bench --rounds 1 …").
fn command_line() -> String {
    let mut parts = vec!["heim-bench".to_string()];
    for a in std::env::args_os().skip(1) {
        let a = a.to_string_lossy().into_owned();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            parts.push(format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            parts.push(a);
        }
    }
    parts.join(" ")
}

fn profile(cli: &Cli) -> String {
    let mut parts = vec![if cli.workers == 1 {
        "1 worker each, proxy pinned to core 1 (taskset -c 1)".to_string()
    } else {
        format!("{} workers each, proxy unpinned", cli.workers)
    }];
    if cli.scenarios.iter().any(|s| *s != Scenario::Idle) {
        let handshakes = match cli.handshake_client {
            HandshakeClient::H2load => format!(
                "{n} connections (h2load --h1 -n{n} -c{n} -m1)",
                n = cli.handshakes
            ),
            HandshakeClient::HeimBench => format!(
                "heim-bench's client, {c} connections in flight, each a fresh TCP connection, a \
                 full TLS 1.3 handshake (X25519, no resumption, no SNI) and one GET with \
                 Connection: close; the leaf certificate pinned, the handshake signature not \
                 checked by the client",
                c = cli.handshake_inflight
            ),
        };
        parts.push(format!(
            "wrk/h2load and the backend nginx on core 0; per scenario a {w} s warm-up per proxy \
             (discarded), then {r} round(s) × {d} s alternating nginx, heim; handshake rounds: \
             {handshakes}",
            w = cli.warmup,
            r = cli.rounds,
            d = cli.duration,
        ));
    }
    if cli.scenarios.contains(&Scenario::Idle) {
        parts.push(format!(
            "idle: {n} TLS 1.3 connections per proxy from heim-bench on core 0 (the backend nginx \
             too), idle after one request or after the handshake only, {r} round(s) with fresh \
             proxies per round and variant",
            n = cli.idle_connections,
            r = cli.rounds,
        ));
    }
    let rsa = if cli.scenarios.iter().any(|s| s.rsa()) {
        " (RSA-2048 for handshake-rsa)"
    } else {
        ""
    };
    let acme = if cli.scenarios.contains(&Scenario::HandshakeAcme) {
        " (handshake-acme: heim serves the same certificate and key from its ACME store, no \
         [[certificate]]; nginx from the file)"
    } else {
        ""
    };
    parts.push(format!("ECDSA P-256 cert{rsa}{acme}"));
    parts.join("; ")
}
