//! `heim-bench-ingress`: heim-ingress against nginx doing the same job the way ingress-nginx
//! does it (one generated config, `nginx -s reload` per change), in one run, on one machine.
//!
//! 1. A test control plane (etcd + kube-apiserver 1.20.2 from `tests/setup-kube`, as the e2e
//!    tests run it) gets N Ingresses (default 10,000) over N/2 hosts, two paths each, all to
//!    one Service whose Endpoints are a backend nginx (`return 200`) in a TEST-NET-2 network
//!    namespace: the API server refuses loopback endpoints.
//! 2. heim-ingress starts against it, pinned to core 1: the time until every Ingress routes
//!    (`/readyz`, then the last host answering) and its RSS.
//! 3. One change live: an Ingress's path renamed, then GET on the new path until it answers
//!    200; C samples.
//! 4. Churn: wrk (core 0) on a stable host over plain HTTP while 20 Ingress changes per second
//!    are applied for S seconds; every non-2xx answer and socket error counts as failed.
//! 5. The same with nginx (one worker, core 1): the equivalent config of N/2 server blocks,
//!    `nginx -s reload` for the change and for each churn step; RSS summed over its processes
//!    (old workers draining after a reload included), peak while churning.
//!
//! All traffic stays on 127.0.0.1 and the namespace's 198.51.100.0/24 address; every wait is
//! bounded; children are killed on exit.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use heim_e2e::kube::{ControlPlane, Netns};
use serde_json::{json, Value};

/// Benchmark heim-ingress against nginx with reloads (see the module docs). Needs
/// `cargo build --release -p heim-ingress`, `tests/setup-kube`, nginx and wrk; runs as root
/// (network namespaces).
#[derive(Parser, Debug)]
#[command(name = "heim-bench-ingress")]
struct Cli {
    /// The heim-ingress binary [default: target/release/heim-ingress].
    #[arg(long, value_name = "PATH")]
    heim_ingress: Option<PathBuf>,
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Ingress objects (two per host).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(20..=50_000))]
    ingresses: u32,
    /// One-change-live samples per proxy.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    changes: u32,
    /// Seconds of churn under load per proxy.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=120))]
    churn_seconds: u32,
    /// Ingress changes per second during churn.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    churn_rate: u32,
    /// Also append the markdown to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(&cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heim-bench-ingress: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A child killed (with its process group's nginx workers) on drop.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        // SIGTERM first: an nginx master stops its workers (SIGKILL would
        // orphan them, still holding memory and their sockets).
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one proxy did.
#[derive(Default, Debug)]
struct Outcome {
    ready_s: f64,
    rss_kib: u64,
    change_ms: Vec<f64>,
    churn_requests: u64,
    churn_failed: u64,
    churn_changes: u64,
    churn_peak_rss_kib: u64,
    churn_rps: f64,
    /// The proxy's CPU over the churn (all its processes), ms.
    churn_cpu_ms: f64,
    /// heim only: mean translate time over the run, ms.
    translate_ms: Option<f64>,
}

fn host(i: u32) -> String {
    format!("h{i}.bench.test")
}

/// Ingress `i`: host `i / 2`, path `/www` (even) or `/api` (odd), or `path` when given. No
/// host has a `/` route, so a renamed path does not answer 200 until the change is live
/// (heim: 308 to https, as for any unrouted path of a host it serves; nginx: 404).
fn ingress(i: u32, path: Option<&str>) -> Value {
    let p = path.map(str::to_string).unwrap_or_else(|| {
        if i.is_multiple_of(2) {
            "/www".into()
        } else {
            "/api".into()
        }
    });
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": format!("ing-{i}"), "namespace": "bench",
                      "annotations": { "heim.dev/public": "true", "heim.dev/ssl-redirect": "false" } },
        "spec": { "ingressClassName": "heim", "rules": [{ "host": host(i / 2), "http": { "paths": [
            { "path": p, "pathType": "Prefix", "backend": { "service": { "name": "web", "port": { "number": 80 } } } } ] } }] } })
}

async fn run(cli: &Cli) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?
        .to_path_buf();
    let heim_bin = cli
        .heim_ingress
        .clone()
        .unwrap_or_else(|| root.join("target/release/heim-ingress"));
    ensure!(
        heim_bin.exists(),
        "{} is missing: cargo build --release -p heim-ingress",
        heim_bin.display()
    );
    ensure!(
        cli.nginx.exists(),
        "{} is missing (apt-get install nginx-light)",
        cli.nginx.display()
    );
    for tool in ["wrk", "taskset"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()?
                .success(),
            "{tool} is missing (apt-get install wrk util-linux)"
        );
    }
    let dir = std::env::temp_dir().join(format!("heim-bench-ingress-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    eprintln!("heim-bench-ingress: starting the control plane");
    let cp = ControlPlane::start().await?;
    let ns = Netns::new()?;
    let backend = SocketAddr::new(ns.addr, 8080);
    let _backend = backend_nginx(cli, &ns, &dir, backend)?;

    api(
        &cp,
        "/api/v1/namespaces",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "bench" } }),
    )
    .await?;
    api(
        &cp,
        "/api/v1/namespaces",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "heim" } }),
    )
    .await?;
    api(&cp, "/apis/networking.k8s.io/v1/ingressclasses", json!({ "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": { "name": "heim" }, "spec": { "controller": "heim.dev/ingress-controller" } })).await?;
    api(&cp, "/api/v1/namespaces/bench/services", json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" }, "spec": { "ports": [{ "port": 80, "targetPort": 8080 }] } })).await?;
    api(&cp, "/api/v1/namespaces/bench/endpoints", json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "web" }, "subsets": [{ "addresses": [{ "ip": ns.addr.to_string() }], "ports": [{ "port": 8080, "protocol": "TCP" }] }] })).await?;
    let t = Instant::now();
    create_ingresses(&cp, cli.ingresses).await?;
    let created = t.elapsed().as_secs_f64();
    eprintln!(
        "heim-bench-ingress: {} Ingresses created in {created:.1} s",
        cli.ingresses
    );

    let heim = bench_heim(cli, &cp, &heim_bin, &dir)
        .await
        .context("heim-ingress")?;
    let nginx = bench_nginx(cli, &cp, &dir, backend)
        .await
        .context("nginx")?;
    let md = report(cli, created, &heim, &nginx);
    println!("{md}");
    if let Some(out) = &cli.out {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?
            .write_all(md.as_bytes())?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn api(cp: &ControlPlane, path: &str, body: Value) -> Result<()> {
    let (status, answer) = cp.create(path, &body).await?;
    ensure!(
        status == 201 || status == 409,
        "POST {path}: {status} {answer}"
    );
    Ok(())
}

/// Creates ing-0 .. ing-(n-1), 16 requests in flight.
async fn create_ingresses(cp: &ControlPlane, n: u32) -> Result<()> {
    let api = cp.api();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (api, next) = (api.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed) as u32;
                if i >= n {
                    return anyhow::Ok(());
                }
                let (s, body) = api
                    .create(
                        "/apis/networking.k8s.io/v1/namespaces/bench/ingresses",
                        &ingress(i, None),
                    )
                    .await?;
                ensure!(s == 201 || s == 409, "create ing-{i}: {s} {body}");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Renames Ingress `i`'s path.
async fn change(cp: &ControlPlane, i: u32, path: &str) -> Result<()> {
    let (s, body) = cp
        .apply(
            &format!("/apis/networking.k8s.io/v1/namespaces/bench/ingresses/ing-{i}"),
            &ingress(i, Some(path)),
        )
        .await?;
    ensure!(s == 200 || s == 201, "apply ing-{i}: {s} {body}");
    Ok(())
}

/// The backend: nginx `return 200` inside the namespace.
fn backend_nginx(cli: &Cli, ns: &Netns, dir: &Path, addr: SocketAddr) -> Result<Kill> {
    let prefix = dir.join("backend");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, format!(
        "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{ access_log off; server {{ listen {addr} reuseport backlog=4096; keepalive_requests 100000; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
        p = prefix.display()))?;
    let child = ns
        .command("taskset")
        .args(["-c", "0"])
        .arg(&cli.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the backend nginx in the namespace")?;
    let k = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "the backend nginx did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(k)
}

/// GET http://127.0.0.1:port{path} with `Host: host`: the status (0 when it failed).
fn get(port: u16, host: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Polls GET until it gives `want`, for at most `limit`; the time it took.
fn until(port: u16, host: &str, path: &str, want: u16, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if get(port, host, path) == want {
            return Ok(t.elapsed());
        }
        if t.elapsed() > limit {
            bail!("GET {host}{path} never answered {want} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// VmRSS of `pid` and its children (nginx's workers), KiB.
fn rss_tree(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `pid` and its children (nginx's workers, old ones draining included).
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(kids) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            kids.split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok()),
        );
    }
    pids
}

/// utime + stime of `pid`'s tree, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            // The fields after the command (which may hold spaces): utime and
            // stime are the 14th and 15th of the line.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// wrk on core 0 against a stable host for `secs`: (requests, failed, req/s).
fn wrk(port: u16, secs: u32) -> Result<Child> {
    Command::new("taskset")
        .args([
            "-c",
            "0",
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{secs}s"),
            "-H",
            &format!("Host: {}", host(0)),
        ])
        .arg(format!("http://127.0.0.1:{port}/www"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start wrk")
}

fn wrk_result(child: Child) -> Result<(u64, u64, f64)> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let num = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.trim_start_matches([' ', ':'])
            .split([' ', ','])
            .next()?
            .parse()
            .ok()
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context(format!("wrk printed no total: {text}"))?;
    let mut failed = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
        .and_then(|l| num(l, "responses"))
        .unwrap_or(0);
    if let Some(l) = text.lines().find(|l| l.contains("Socket errors")) {
        for k in ["connect", "read", "write", "timeout"] {
            failed += num(l, k).unwrap_or(0);
        }
    }
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    Ok((requests, failed, rps))
}

/// Runs churn for `secs` with `step(k)` per change, at `rate` per second, while wrk loads
/// `port`; samples the RSS and CPU of `pid` (the proxy) meanwhile.
async fn churn<F, Fut>(cli: &Cli, port: u16, pid: u32, mut step: F, out: &mut Outcome) -> Result<()>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cpu_before = cpu_ticks(pid);
    let load = wrk(port, cli.churn_seconds)?;
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                peak.fetch_max(rss_tree(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let every = Duration::from_secs(1) / cli.churn_rate;
    let end = Instant::now() + Duration::from_secs(u64::from(cli.churn_seconds));
    let mut tick = tokio::time::interval(every);
    let mut k = 0;
    while Instant::now() < end {
        tick.tick().await;
        step(k).await?;
        k += 1;
    }
    let (requests, failed, rps) = tokio::task::spawn_blocking(move || wrk_result(load)).await??;
    stop.store(true, Relaxed);
    let _ = sampler.join();
    out.churn_requests = requests;
    out.churn_failed = failed;
    out.churn_rps = rps;
    out.churn_changes = k;
    out.churn_peak_rss_kib = peak.load(Relaxed);
    out.churn_cpu_ms = cpu_ticks(pid).saturating_sub(cpu_before) as f64 * 10.0;
    Ok(())
}

/// Hosts whose Ingresses churn: the upper half, away from the stable host 0.
fn churned(cli: &Cli, k: u64) -> u32 {
    let hosts = cli.ingresses / 2;
    // An odd Ingress (the `/api` path) of a host in the upper half.
    2 * (hosts / 2 + (k as u32 % (hosts / 2))) + 1
}

async fn bench_heim(cli: &Cli, cp: &ControlPlane, bin: &Path, dir: &Path) -> Result<Outcome> {
    let ports = free_ports(3)?;
    let text = format!("[server]\nhttps_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nworkers = 1\naccess_log = false\n", ports[0], ports[1], ports[2]);
    api(cp, "/api/v1/namespaces/heim/configmaps", json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "heim.toml": text } })).await?;
    let kubeconfig = cp.kubeconfig()?;
    let log = std::fs::File::create(dir.join("heim-ingress.log"))?;
    let t = Instant::now();
    let child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bin)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--config-map=heim/settings", "--pod-namespace=heim"])
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start heim-ingress")?;
    let heim = Kill(child);
    let pid = heim.0.id();
    let (http, admin) = (ports[1], ports[2]);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok((200, _)) =
            heim_e2e::admin_get(SocketAddr::from(([127, 0, 0, 1], admin)), "/readyz")
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "heim-ingress never became ready; see {}",
            dir.join("heim-ingress.log").display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = cli.ingresses - 1;
    until(http, &host(last / 2), "/api", 200, Duration::from_secs(60))?;
    let mut out = Outcome {
        ready_s: t.elapsed().as_secs_f64(),
        rss_kib: rss_tree(pid),
        ..Outcome::default()
    };
    eprintln!(
        "heim-bench-ingress: heim-ingress routes all in {:.2} s, RSS {} MiB",
        out.ready_s,
        out.rss_kib / 1024
    );
    for k in 0..cli.changes {
        let i = 2 * k + 1;
        let path = format!("/v{k}");
        ensure!(
            get(http, &host(i / 2), &path) != 200,
            "{}{path} answered before the change",
            host(i / 2)
        );
        let t = Instant::now();
        change(cp, i, &path).await?;
        until(http, &host(i / 2), &path, 200, Duration::from_secs(30))?;
        out.change_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let api = cp.api();
    churn(
        cli,
        http,
        pid,
        |k| {
            let api = api.clone();
            let i = churned(cli, k);
            async move {
                let path = format!("/churn{k}");
                let (s, body) = api
                    .apply(
                        &format!("/apis/networking.k8s.io/v1/namespaces/bench/ingresses/ing-{i}"),
                        &ingress(i, Some(&path)),
                    )
                    .await?;
                ensure!(s == 200, "apply: {s} {body}");
                Ok(())
            }
        },
        &mut out,
    )
    .await?;
    if let Ok((_, m)) = heim_e2e::admin_get(SocketAddr::from(([127, 0, 0, 1], admin)), "/metrics") {
        let value = |name: &str| -> Option<f64> {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        };
        if let (Some(sum), Some(count)) = (
            value("heim_kube_translate_seconds_sum"),
            value("heim_kube_translate_seconds_count"),
        ) {
            out.translate_ms = Some(sum / count.max(1.0) * 1000.0);
        }
    }
    Ok(out)
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(ls
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// nginx's config for the same Ingresses, as ingress-nginx writes it (a server block per host,
/// a location per path, an upstream with keep-alive), with `renamed` paths applied.
fn nginx_conf(
    cli: &Cli,
    prefix: &Path,
    port: u16,
    backend: SocketAddr,
    renamed: &std::collections::HashMap<u32, String>,
) -> String {
    let mut c = String::with_capacity(cli.ingresses as usize * 200);
    let _ = write!(c, "worker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 4096; }}\n\
        http {{\naccess_log off;\nserver_names_hash_max_size 65536;\nserver_names_hash_bucket_size 128;\n\
        upstream web {{ server {backend}; keepalive 32; }}\n", p = prefix.display());
    for h in 0..cli.ingresses / 2 {
        let api = renamed.get(&(2 * h + 1)).map_or("/api", String::as_str);
        let _ = writeln!(c, "server {{ listen 127.0.0.1:{port}; server_name {}; \
            location /www {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} \
            location {api} {{ proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}", host(h));
    }
    c.push_str("}\n");
    c
}

fn reload(cli: &Cli, prefix: &Path, conf: &Path) -> Result<()> {
    let s = Command::new(&cli.nginx)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf)
        .args(["-s", "reload"])
        .stderr(Stdio::null())
        .status()?;
    ensure!(s.success(), "nginx -s reload failed");
    Ok(())
}

async fn bench_nginx(
    cli: &Cli,
    _cp: &ControlPlane,
    dir: &Path,
    backend: SocketAddr,
) -> Result<Outcome> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    let port = free_ports(1)?[0];
    let mut renamed = std::collections::HashMap::new();
    std::fs::write(&conf, nginx_conf(cli, &prefix, port, backend, &renamed))?;
    let t = Instant::now();
    let child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&cli.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    let nginx = Kill(child);
    let pid = nginx.0.id();
    let last = cli.ingresses - 1;
    until(port, &host(last / 2), "/api", 200, Duration::from_secs(120))?;
    let mut out = Outcome {
        ready_s: t.elapsed().as_secs_f64(),
        rss_kib: rss_tree(pid),
        ..Outcome::default()
    };
    eprintln!(
        "heim-bench-ingress: nginx routes all in {:.2} s, RSS {} MiB",
        out.ready_s,
        out.rss_kib / 1024
    );
    for k in 0..cli.changes {
        let i = 2 * k + 1;
        let path = format!("/v{k}");
        ensure!(
            get(port, &host(i / 2), &path) != 200,
            "{}{path} answered before the change",
            host(i / 2)
        );
        let t = Instant::now();
        renamed.insert(i, path.clone());
        std::fs::write(&conf, nginx_conf(cli, &prefix, port, backend, &renamed))?;
        reload(cli, &prefix, &conf)?;
        until(port, &host(i / 2), &path, 200, Duration::from_secs(30))?;
        out.change_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (cli2, prefix2, conf2) = (cli, prefix.clone(), conf.clone());
    churn(
        cli,
        port,
        pid,
        |k| {
            let i = churned(cli2, k);
            renamed.insert(i, format!("/churn{k}"));
            let text = nginx_conf(cli2, &prefix2, port, backend, &renamed);
            let r = std::fs::write(&conf2, text)
                .map_err(anyhow::Error::from)
                .and_then(|_| reload(cli2, &prefix2, &conf2));
            async move { r }
        },
        &mut out,
    )
    .await?;
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn report(cli: &Cli, created: f64, h: &Outcome, n: &Outcome) -> String {
    let mut md = String::new();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\n### ingress: {} Ingresses, {} hosts (heim-bench-ingress)\n",
        cli.ingresses,
        cli.ingresses / 2
    );
    let _ = writeln!(md, "CPU: `{}` ({} cores); kube-apiserver 1.20.2 + etcd on the same machine; {} Ingresses created in {created:.1} s. \
        heim-ingress and nginx pinned to core 1 (one worker), wrk -t1 -c32 and the backend nginx (in a TEST-NET-2 namespace) on core 0. \
        Churn: {} changes/s for {} s, each an Ingress's path renamed (heim: a server-side apply; nginx: config rewritten + `nginx -s reload`), \
        wrk on a stable host over plain HTTP; failed = non-2xx + socket errors.\n",
        cpu_model(), std::thread::available_parallelism().map_or(0, |n| n.get()), cli.ingresses, cli.churn_rate, cli.churn_seconds);
    let _ = writeln!(
        md,
        "| | heim-ingress | nginx + reload |\n| --- | --- | --- |"
    );
    let _ = writeln!(
        md,
        "| time until every Ingress routes | {:.2} s | {:.2} s |",
        h.ready_s, n.ready_s
    );
    let _ = writeln!(
        md,
        "| RSS after | {} MiB | {} MiB |",
        h.rss_kib / 1024,
        n.rss_kib / 1024
    );
    let _ = writeln!(
        md,
        "| one change live, median (max) of {} | {:.0} ms ({:.0}) | {:.0} ms ({:.0}) |",
        cli.changes,
        median(&h.change_ms),
        max(&h.change_ms),
        median(&n.change_ms),
        max(&n.change_ms)
    );
    let _ = writeln!(
        md,
        "| churn: changes applied | {} | {} |",
        h.churn_changes, n.churn_changes
    );
    let _ = writeln!(
        md,
        "| churn: requests to the stable host (req/s) | {} ({:.0}) | {} ({:.0}) |",
        h.churn_requests, h.churn_rps, n.churn_requests, n.churn_rps
    );
    let _ = writeln!(
        md,
        "| churn: failed requests | {} | {} |",
        h.churn_failed, n.churn_failed
    );
    let _ = writeln!(
        md,
        "| churn: peak RSS | {} MiB | {} MiB |",
        h.churn_peak_rss_kib / 1024,
        n.churn_peak_rss_kib / 1024
    );
    let per = |o: &Outcome| o.churn_cpu_ms * 1000.0 / o.churn_requests.max(1) as f64;
    let _ = writeln!(
        md,
        "| churn: proxy CPU, total (µs per request) | {:.0} ms ({:.1}) | {:.0} ms ({:.1}) |",
        h.churn_cpu_ms,
        per(h),
        n.churn_cpu_ms,
        per(n)
    );
    if let Some(t) = h.translate_ms {
        let _ = writeln!(
            md,
            "\nheim-ingress's mean translate of the {} Ingresses (`heim_kube_translate_seconds`): {t:.1} ms.",
            cli.ingresses
        );
    }
    md
}
