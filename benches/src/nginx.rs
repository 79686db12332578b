//! `heim-bench-nginx`: heim-ingress serving ingress-nginx's own Ingresses against nginx with
//! the config ingress-nginx generates for them, side by side, in one run, on one machine
//! (`/work/shared/BENCH.md`; issue 15, "Benchmark").
//!
//! Two scenarios, each the way users drive it:
//!
//! * `rewrite`: one host in ingress-nginx's regex mode with N rewrite rules (default 200), paths
//!   `/svcK(/|$)(.*)` → `/$2` spread over a few Ingresses (`use-regex`, `rewrite-target`,
//!   `ImplementationSpecific`). heim-ingress reads them from the API server and translates them
//!   in the nginx dialect; nginx gets what ingress-nginx renders: one `server` with N
//!   `location ~* "^<path>"` blocks sorted longest first, each `rewrite "(?i)<path>" /$2 break;`.
//!   Plain HTTP/1.1 keep-alive; wrk's script spreads the requests over all N rules at random.
//! * `auth-url`: an Ingress with oauth2-proxy's pair (`auth-url: https://$host/oauth2/auth`,
//!   `auth-signin: https://$host/oauth2/start?rd=$escaped_request_uri`,
//!   `auth-response-headers`), which heim serves with its own sign-in: every request carries a
//!   heim session cookie (sealed by heim's code with the run's secret, as a browser holds it
//!   after signing in). nginx does what ingress-nginx renders: `auth_request` to an internal
//!   location proxying to the auth server, here the backend nginx answering 202 with
//!   `X-Auth-Request-User`/`-Email` (a stand-in far cheaper than oauth2-proxy), then
//!   `X-Auth-Request-*` set upstream from its answer. TLS 1.3 keep-alive.
//!
//! The run: a test control plane (`heim_e2e::kube`: etcd + kube-apiserver from
//! `tests/setup-kube`) holds the objects; one backend nginx (`return 200` with the URI it got, so
//! the rewrites can be checked) runs in a TEST-NET-2 network namespace on core 0, since the API
//! server refuses loopback endpoints; heim-ingress (`workers = 1`) and nginx (`worker_processes
//! 1`) run on core 1 and stay up for the whole run. Both are checked first: every rule answers
//! with its rewritten URI, the auth route with the user, and heim without a session with 401.
//! Then per scenario a warm-up per proxy and R alternating rounds (nginx, heim, …) of wrk on
//! core 0; the table (req/s, latency, CPU-µs/req, RSS) is `report`'s, and the targets (≥ 1.2×
//! nginx's throughput on the rewrite host, ≥ 2× on the auth route) are judged on req/s and on
//! CPU-µs/req. Every wait is bounded; every child is stopped on exit or error.

#[allow(dead_code)] // shared with heim-bench: `load` reaches it; nothing here calls it
mod handshake;
#[allow(dead_code)] // shared with heim-bench: `report` names its modes
mod idle;
#[allow(dead_code)] // shared with heim-bench: this binary uses its wrk parser
mod load;
mod measure;
#[allow(dead_code)] // shared with heim-bench: this binary uses its process guard and /proc readers
mod peers;
#[allow(dead_code)] // shared with heim-bench: this binary uses its table
mod report;

use std::fmt::{self, Write as _};
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use heim_e2e::kube::{ControlPlane, Netns};
use serde_json::{json, Value};

use load::{LoadResult, Scenario};
use peers::{AuthFiles, CertFiles, HeimCerts, Proc};
use report::{Header, Sample, ScenarioResult};

/// The regex-mode host.
const REWRITE_HOST: &str = "rewrite.bench.test";
/// The host of the `auth-url` Ingress.
const SSO_HOST: &str = "sso.bench.test";
/// The Ingresses' namespace.
const NS: &str = "bench";
/// The user the session and the auth stand-in name.
const USER: &str = "alice@example.com";
/// The backend's port in the namespace.
const BACKEND_PORT: u16 = 8080;
const ANNOTATION: &str = "nginx.ingress.kubernetes.io/";

/// Benchmark heim-ingress on ingress-nginx's Ingresses (200 regex rewrite rules on one host; an
/// oauth2-proxy `auth-url` route) against nginx configured as ingress-nginx renders them. Needs
/// `cargo build --release -p heim-ingress -p heim-bench`, `tests/setup-kube`, nginx, wrk and
/// curl; runs as root (a network namespace).
#[derive(Parser, Debug)]
#[command(name = "heim-bench-nginx")]
struct Cli {
    /// The heim-ingress binary [default: target/release/heim-ingress].
    #[arg(long, value_name = "PATH")]
    heim_ingress: Option<PathBuf>,

    /// The nginx binary, used both as the backend and as the peer.
    #[arg(long, value_name = "PATH", default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,

    /// Rewrite rules on the regex-mode host.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    rules: u32,

    /// Ingresses the rules are spread over (rule K in Ingress K mod this).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    ingresses: u32,

    /// Measured rounds per scenario (each runs nginx, then heim).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,

    /// Seconds per measured run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=300))]
    duration: u32,

    /// Seconds of the discarded warm-up run per proxy per scenario.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=60))]
    warmup: u32,

    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rewrite,auth-url"
    )]
    scenarios: Vec<Case>,

    /// Also append the markdown to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// One scenario of this benchmark (issue 15's two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Case {
    /// The regex-mode host: N rewrite rules, plain HTTP/1.1 keep-alive, wrk -c64.
    Rewrite,
    /// The oauth2-proxy `auth-url` route (heim's sign-in vs `auth_request`), TLS 1.3, wrk -c64.
    AuthUrl,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Rewrite => "rewrite",
            Case::AuthUrl => "auth-url",
        }
    }

    /// The row label `report` knows the scenario's load by (renamed in [`relabel`]).
    fn report_as(self) -> Scenario {
        match self {
            Case::Rewrite => Scenario::H1,
            Case::AuthUrl => Scenario::Auth,
        }
    }

    /// The issue's throughput target, as a multiple of nginx's.
    fn target(self) -> f64 {
        match self {
            Case::Rewrite => 1.2,
            Case::AuthUrl => 2.0,
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heim-bench-nginx: error: start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heim-bench-nginx: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch directory, removed on drop (declared before the processes that use it).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One proxy under test and where it listens.
struct Peer {
    name: &'static str,
    proc: Proc,
    plain_port: u16,
    tls_port: u16,
    is_nginx: bool,
}

async fn run(cli: &Cli) -> Result<()> {
    let mut scenarios: Vec<Case> = Vec::new();
    for s in &cli.scenarios {
        if !scenarios.contains(s) {
            scenarios.push(*s);
        }
    }
    ensure!(!scenarios.is_empty(), "no scenario selected");
    let heim_bin = cli.heim_ingress.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/heim-ingress")
    });
    ensure!(
        heim_bin.is_file(),
        "{} is missing: cargo build --release -p heim-ingress (or pass --heim-ingress PATH)",
        heim_bin.display()
    );
    ensure!(
        cli.nginx.is_file(),
        "{} is missing: apt-get install nginx-light (or pass --nginx PATH)",
        cli.nginx.display()
    );
    for tool in [
        "wrk", "curl", "taskset", "setpriv", "timeout", "ip", "getconf",
    ] {
        ensure!(
            in_path(tool),
            "`{tool}` not found in PATH (apt-get install wrk curl util-linux iproute2)"
        );
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        nproc >= 2,
        "BENCH.md pins the proxy to core 1 and the load generator to core 0: this needs ≥ 2 cores, found {nproc}"
    );
    let nginx_v = stdout_of(Command::new(&cli.nginx).arg("-v"));
    let nginx_version = peers::nginx_version(&nginx_v)
        .with_context(|| format!("no version in `nginx -v`: {nginx_v:?}"))?;
    let heim_v = stdout_of(Command::new(&heim_bin).arg("--version"));
    ensure!(
        heim_v.starts_with("heim-ingress"),
        "`{} --version` printed {heim_v:?}: rebuild with cargo build --release -p heim-ingress",
        heim_bin.display()
    );
    let tck = measure::clock_ticks();

    // Dropped last, after every process using it.
    let scratch =
        Scratch(std::env::temp_dir().join(format!("heim-bench-nginx-{}", std::process::id())));
    let dir = scratch.0.as_path();
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cert = peers::write_cert(dir, "ecdsa", false)?;
    let auth = peers::write_auth(dir)?;
    let cookie = session_cookie(&auth, SSO_HOST)?;

    eprintln!("heim-bench-nginx: starting the control plane");
    let cp = ControlPlane::start().await?;
    let ns = Netns::new()?;
    let backend_addr = SocketAddr::new(ns.addr, BACKEND_PORT);
    let mut backend = start_backend(cli, &ns, dir, backend_addr)?;
    create_objects(cli, &cp, &ns).await?;
    let kubeconfig = cp.kubeconfig()?;

    let ports = peers::free_ports(5)?;
    let nginx_prefix = dir.join("nginx");
    fs::create_dir_all(&nginx_prefix)?;
    let conf = nginx_prefix.join("nginx.conf");
    fs::write(
        &conf,
        nginx_conf(
            &nginx_prefix,
            ports[0],
            ports[1],
            backend_addr,
            &cert,
            cli.rules,
        ),
    )
    .context("write the nginx config")?;
    let nginx = Proc::spawn(
        "nginx (proxy)",
        Some("1"),
        &nginx_argv(cli, &nginx_prefix, &conf),
        &[],
        dir.join("nginx.log"),
    )?;
    let mut nginx = Peer {
        name: "nginx",
        proc: nginx,
        plain_port: ports[0],
        tls_port: ports[1],
        is_nginx: true,
    };
    let heim_settings = heim_toml(ports[2], ports[3], ports[4], &cert, &auth);
    api(
        &cp,
        "/api/v1/namespaces/heim/configmaps",
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings" }, "data": { "heim.toml": heim_settings } }),
    )
    .await?;
    let argv: Vec<String> = [
        heim_bin.display().to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        "--config-map=heim/settings".into(),
        "--pod-namespace=heim".into(),
        // ingress-nginx's Ingresses, served unedited: its controller class and class name.
        "--controller-class=k8s.io/ingress-nginx".into(),
        "--ingress-class=nginx".into(),
        "--update-status=false".into(),
    ]
    .into();
    let heim = Proc::spawn(
        "heim-ingress",
        Some("1"),
        &argv,
        &[("RUST_LOG", "warn")],
        dir.join("heim-ingress.log"),
    )?;
    let mut heim = Peer {
        name: "heim",
        proc: heim,
        plain_port: ports[3],
        tls_port: ports[2],
        is_nginx: false,
    };
    for p in [&mut nginx, &mut heim] {
        check(cli, p, &cookie).with_context(|| format!("check {} before measuring", p.name))?;
    }
    eprintln!(
        "heim-bench-nginx: both proxies answer every rule rewritten and the auth route signed in"
    );

    let scripts = Scripts {
        rewrite: dir.join("rewrite.lua"),
        auth: dir.join("auth.lua"),
    };
    fs::write(&scripts.rewrite, rewrite_script(cli.rules))?;
    fs::write(&scripts.auth, auth_script(&cookie))?;
    let mut results = Vec::new();
    for &s in &scenarios {
        let r = batch(cli, s, &scripts, tck, [&mut nginx, &mut heim], dir)
            .with_context(|| format!("scenario {s}"))?;
        backend.check_alive()?;
        results.push((s, r));
    }

    let header = Header {
        date: stdout_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        command: std::iter::once("heim-bench-nginx".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        nproc,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        nginx_version: format!(
            "nginx/{}.{}.{} ({})",
            nginx_version.0,
            nginx_version.1,
            nginx_version.2,
            cli.nginx.display()
        ),
        heim_version: format!(
            "{} ({}, built {})",
            heim_v,
            heim_bin.display(),
            stdout_of(
                Command::new("date")
                    .arg("-u")
                    .arg("-r")
                    .arg(&heim_bin)
                    .arg("+%Y-%m-%d %H:%M UTC")
            )
        ),
        profile: profile(cli),
        handshake_burst: false,
    };
    let md = render(&header, &cpu_model(), cli, &results);
    println!("{md}");
    if let Some(out) = &cli.out {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .and_then(|mut f| writeln!(f, "{md}"))
            .with_context(|| format!("append to {}", out.display()))?;
        eprintln!("heim-bench-nginx: appended to {}", out.display());
    }
    // Dropped in reverse order of declaration: the proxies and the backend stop before the
    // namespace, the control plane and the scratch directory go.
    Ok(())
}

/// The wrk scripts of the two scenarios.
struct Scripts {
    rewrite: PathBuf,
    auth: PathBuf,
}

/// Warm-up, then the alternated rounds of one scenario.
fn batch(
    cli: &Cli,
    scenario: Case,
    scripts: &Scripts,
    tck: u64,
    peers: [&mut Peer; 2],
    dir: &Path,
) -> Result<ScenarioResult> {
    let mut res = ScenarioResult {
        scenario: scenario.report_as(),
        nginx: Vec::new(),
        heim: Vec::new(),
        nginx_tls: None,
        heim_tls: None,
        idle: None,
    };
    let [nginx, heim] = peers;
    let settle = || std::thread::sleep(Duration::from_millis(500));
    for round in 0..=cli.rounds {
        for p in [&mut *nginx, &mut *heim] {
            let (url, script) = match scenario {
                Case::Rewrite => (
                    format!("http://127.0.0.1:{}/", p.plain_port),
                    &scripts.rewrite,
                ),
                Case::AuthUrl => (format!("https://127.0.0.1:{}/", p.tls_port), &scripts.auth),
            };
            // Round 0 is the warm-up, discarded.
            let secs = if round == 0 { cli.warmup } else { cli.duration };
            let label = format!("{scenario}-{round}-{}", p.name);
            let (s, _) = measure::run(&mut p.proc, p.is_nginx, tck, || {
                wrk(&url, script, secs, dir, &label)
            })?;
            if s.errors * 100 > s.requests {
                bail!(
                    "{label}: {} errors in {} requests; {}'s output:\n{}",
                    s.errors,
                    s.requests,
                    p.name,
                    p.proc.log_tail()
                );
            }
            eprintln!(
                "[{scenario}] {} {:5}: {:>9.0} req/s, {:.2} CPU-µs/req, {:.0} % CPU, core 0 {:.0} % busy, {} errors",
                if round == 0 { "warm-up".to_string() } else { format!("round {round}/{}", cli.rounds) },
                p.name,
                s.rps,
                s.cpu_us_per_req,
                s.cpu_pct,
                s.core0_pct.unwrap_or(f64::NAN),
                s.errors
            );
            if round > 0 {
                if p.is_nginx {
                    res.nginx.push(s);
                } else {
                    res.heim.push(s);
                }
            }
            settle();
        }
    }
    Ok(res)
}

/// `wrk -t1 -c64 --latency -s script` on core 0 for `secs`, killed if it overruns by 30 s
/// (`timeout`); dies with heim-bench-nginx (`setpriv --pdeathsig`).
fn wrk(url: &str, script: &Path, secs: u32, dir: &Path, label: &str) -> Result<LoadResult> {
    let out = Command::new("setpriv")
        .args([
            "--pdeathsig",
            "KILL",
            "taskset",
            "-c",
            "0",
            "timeout",
            "-s",
            "KILL",
        ])
        .arg((secs + 30).to_string())
        .args(["wrk", "-t1", "-c64", "--latency"])
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Kept for a look after the run (the scratch directory goes at the end).
    let _ = fs::write(dir.join(format!("{label}.out")), text.as_bytes());
    ensure!(
        out.status.success(),
        "wrk {url} failed ({}):\n{}\n{}",
        out.status,
        load::tail(&text, 15),
        load::tail(&String::from_utf8_lossy(&out.stderr), 15)
    );
    load::parse_wrk(&text)
        .with_context(|| format!("parse wrk's output:\n{}", load::tail(&text, 25)))
}

/// The wrk script of `rewrite`: every request to a rule chosen at random (LuaJIT's generator,
/// the same sequence for both proxies), with a path after the prefix and a query.
fn rewrite_script(rules: u32) -> String {
    let paths: Vec<String> = (0..rules)
        .map(|k| format!("  \"/svc{k}/api/v1/items/{k}?page=2\","))
        .collect();
    format!(
        "-- heim-bench-nginx: requests spread over the regex host's {rules} rewrite rules\n\
         wrk.headers[\"Host\"] = \"{REWRITE_HOST}\"\n\
         local paths = {{\n{}\n}}\n\
         local reqs = {{}}\n\
         function init(args)\n\
         \x20 for i, p in ipairs(paths) do reqs[i] = wrk.format(\"GET\", p) end\n\
         end\n\
         function request()\n\
         \x20 return reqs[math.random(#reqs)]\n\
         end\n",
        paths.join("\n")
    )
}

/// The wrk script of `auth-url`: `GET /` on the auth route with the session cookie.
fn auth_script(cookie: &str) -> String {
    format!(
        "-- heim-bench-nginx: the auth-url route, signed in\n\
         wrk.headers[\"Host\"] = \"{SSO_HOST}\"\n\
         wrk.headers[\"Cookie\"] = \"{cookie}\"\n\
         wrk.path = \"/\"\n"
    )
}

/// Rule `k`'s Ingress path: a prefix and two groups, `$2` the rest of the path.
fn rule_path(k: u32) -> String {
    format!("/svc{k}(/|$)(.*)")
}

/// The rules in ingress-nginx's regex-mode order: longest path first, ties reverse-lexicographic.
fn sorted_rules(rules: u32) -> Vec<String> {
    let mut paths: Vec<String> = (0..rules).map(rule_path).collect();
    paths.sort_by(|a, b| (b.len(), b).cmp(&(a.len(), a)));
    paths
}

/// A session cookie for `host`: `write_auth`'s (for 127.0.0.1, heim-bench's `auth` scenario)
/// opened and sealed again for this host, with the same secret: a session opens on its own host
/// only.
fn session_cookie(auth: &AuthFiles, host: &str) -> Result<String> {
    use heim_proxy::auth::policy::Session;
    use heim_proxy::auth::seal::{Purpose, Sealer};
    let secret = fs::read(&auth.secret).context("read the cookie secret")?;
    let sealer = Sealer::new(&[secret]).map_err(anyhow::Error::msg)?;
    let (name, value) = auth
        .cookie
        .split_once('=')
        .context("a cookie is name=value")?;
    let mut session: Session = sealer
        .open(Purpose::Session, value)
        .context("write_auth's cookie does not open")?;
    session.host = host.to_string();
    Ok(format!(
        "{name}={}",
        sealer.seal(Purpose::Session, &session)
    ))
}

/// heim's settings as its ConfigMap holds them: heim-bench's own proxy config (one worker,
/// logging off, the bench certificate as the default one, since wrk sends no SNI to an IP;
/// sign-in with local users) without its catch-all `[[route]]` (the routes are the Ingresses'),
/// and ingress-nginx's Ingresses public unless they say otherwise, as they were.
fn heim_toml(https: u16, http: u16, admin: u16, cert: &CertFiles, auth: &AuthFiles) -> String {
    let proxy = peers::heim_conf(1, https, http, admin, 0, HeimCerts::File(cert), Some(auth));
    let settings = proxy.split("[[route]]").next().unwrap_or_default();
    format!("{settings}[ingress_nginx]\ndefault_policy = \"public\"\n")
}

/// A Service backend `web` port 80.
fn web() -> Value {
    json!({ "service": { "name": "web", "port": { "number": 80 } } })
}

/// An Ingress of class `nginx` for `host`.
fn ingress(name: &str, host: &str, annotations: Value, paths: Vec<Value>) -> Value {
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": { "name": name, "namespace": NS, "annotations": annotations },
        "spec": { "ingressClassName": "nginx", "rules": [{ "host": host, "http": { "paths": paths } }] } })
}

/// The regex host's Ingresses: rule K in `rewrite-(K mod n)`, each with `use-regex` and
/// `rewrite-target: /$2` (and `ssl-redirect: "false"`: the host is served over plain HTTP, as
/// ingress-nginx serves a host without TLS; heim redirects every host to https by default).
fn rewrite_ingresses(rules: u32, n: u32) -> Vec<Value> {
    let a = |k: &str| format!("{ANNOTATION}{k}");
    (0..n)
        .map(|i| {
            let paths = (0..rules)
                .filter(|k| k % n == i)
                .map(|k| json!({ "path": rule_path(k), "pathType": "ImplementationSpecific", "backend": web() }))
                .collect();
            let annotations = json!({ a("use-regex"): "true", a("rewrite-target"): "/$2", a("ssl-redirect"): "false" });
            ingress(&format!("rewrite-{i}"), REWRITE_HOST, annotations, paths)
        })
        .collect()
}

/// The auth route: oauth2-proxy's pair as ingress-nginx's example writes it.
fn sso_ingress() -> Value {
    let a = |k: &str| format!("{ANNOTATION}{k}");
    let annotations = json!({
        a("auth-url"): "https://$host/oauth2/auth",
        a("auth-signin"): "https://$host/oauth2/start?rd=$escaped_request_uri",
        a("auth-response-headers"): "X-Auth-Request-User, X-Auth-Request-Email",
    });
    let paths = vec![json!({ "path": "/", "pathType": "Prefix", "backend": web() })];
    ingress("sso", SSO_HOST, annotations, paths)
}

/// POSTs `body` to `path`; 409 (it exists already) is fine.
async fn api(cp: &ControlPlane, path: &str, body: Value) -> Result<()> {
    match cp.create(path, &body).await? {
        (201 | 409, _) => Ok(()),
        (status, answer) => bail!("POST {path}: {status} {answer}"),
    }
}

/// Namespaces, ingress-nginx's IngressClass, the Service with its endpoint in the namespace, and
/// the Ingresses.
async fn create_objects(cli: &Cli, cp: &ControlPlane, ns: &Netns) -> Result<()> {
    for name in [NS, "heim"] {
        api(
            cp,
            "/api/v1/namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } }),
        )
        .await?;
    }
    api(
        cp,
        "/apis/networking.k8s.io/v1/ingressclasses",
        json!({ "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": { "name": "nginx" }, "spec": { "controller": "k8s.io/ingress-nginx" } }),
    )
    .await?;
    api(cp, &format!("/api/v1/namespaces/{NS}/services"), json!({ "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web" }, "spec": { "ports": [{ "port": 80, "targetPort": BACKEND_PORT }] } })).await?;
    api(cp, &format!("/api/v1/namespaces/{NS}/endpoints"), json!({ "apiVersion": "v1", "kind": "Endpoints",
        "metadata": { "name": "web" },
        "subsets": [{ "addresses": [{ "ip": ns.addr.to_string() }], "ports": [{ "port": BACKEND_PORT, "protocol": "TCP" }] }] })).await?;
    let ingresses = format!("/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses");
    for ing in rewrite_ingresses(cli.rules, cli.ingresses)
        .into_iter()
        .chain([sso_ingress()])
    {
        api(cp, &ingresses, ing).await?;
    }
    Ok(())
}

/// The backend: one nginx worker in the namespace on core 0, answering 200 with the URI it got
/// and the user header (`$uri|$http_x_auth_request_user`), and, as the auth server of nginx's
/// `auth_request`, 202 with the user on `/oauth2/auth`.
fn start_backend(cli: &Cli, ns: &Netns, dir: &Path, addr: SocketAddr) -> Result<Proc> {
    let prefix = dir.join("backend");
    fs::create_dir_all(&prefix)?;
    let conf = prefix.join("nginx.conf");
    let text = nginx_head(&prefix)
        + &format!(
            "  server {{\n\
             \x20   listen {addr} backlog=4096;\n\
             \x20   location / {{ return 200 \"$uri|$http_x_auth_request_user\\n\"; }}\n\
             \x20   location = /oauth2/auth {{\n\
             \x20     add_header X-Auth-Request-User {USER} always;\n\
             \x20     add_header X-Auth-Request-Email {USER} always;\n\
             \x20     return 202;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n"
        );
    fs::write(&conf, text).context("write the backend config")?;
    let mut argv = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        ns.name.clone(),
    ];
    argv.extend(nginx_argv(cli, &prefix, &conf));
    let mut backend = Proc::spawn(
        "backend nginx",
        Some("0"),
        &argv,
        &[],
        dir.join("backend.log"),
    )?;
    backend.wait_ready(addr, "/")?;
    Ok(backend)
}

/// `nginx -p PREFIX -c CONF -e PREFIX/error.log -g 'daemon off;'`: in the foreground, every
/// file in PREFIX.
fn nginx_argv(cli: &Cli, prefix: &Path, conf: &Path) -> Vec<String> {
    let (p, c) = (prefix.display().to_string(), conf.display().to_string());
    let e = format!("{p}/error.log");
    let args = ["-p", &p, "-c", &c, "-e", &e, "-g", "daemon off;"];
    std::iter::once(cli.nginx.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect()
}

/// The top of both nginx configs, up to inside `http {`: one worker, temp paths in the prefix,
/// no access log, long-lived client connections (as heim's `request_head_timeout`).
fn nginx_head(prefix: &Path) -> String {
    let p = prefix.display();
    let mut s = format!(
        "worker_processes 1;\nworker_rlimit_nofile 20000;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n"
    );
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(s, "  {t}_temp_path {p}/{t};");
    }
    s + "  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n"
}

/// What ingress-nginx puts in every proxied location (the headers it sets, the keep-alive
/// upstream of BENCH.md).
const PROXY: &str = "      proxy_http_version 1.1;\n\
     \x20     proxy_set_header Connection \"\";\n\
     \x20     proxy_set_header Host $host;\n\
     \x20     proxy_set_header X-Request-ID $request_id;\n\
     \x20     proxy_set_header X-Real-IP $remote_addr;\n\
     \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
     \x20     proxy_set_header X-Forwarded-Host $host;\n\
     \x20     proxy_set_header X-Forwarded-Port $server_port;\n\
     \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
     \x20     proxy_set_header X-Scheme $scheme;\n\
     \x20     proxy_pass http://backend;\n";

/// nginx as the peer: the regex host's `server` as ingress-nginx renders it (every rule a
/// `location ~* "^<path>"`, longest first, with `rewrite "(?i)<path>" /$2 break;`, and the
/// regex-mode root location for what no rule matches), and the auth route's `server` with
/// `auth_request` to the auth server (ingress-nginx's `/_external-auth-…` location).
fn nginx_conf(
    prefix: &Path,
    plain: u16,
    tls: u16,
    backend: SocketAddr,
    cert: &CertFiles,
    rules: u32,
) -> String {
    let mut s = nginx_head(prefix);
    let _ = write!(
        s,
        "  ssl_certificate {};\n\
         \x20 ssl_certificate_key {};\n\
         \x20 ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20 ssl_ecdh_curve X25519;\n\
         \x20 ssl_session_tickets on;\n\
         \x20 ssl_session_cache shared:SSL:10m;\n\
         \x20 upstream backend {{\n\
         \x20   server {backend};\n\
         \x20   keepalive 64;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20 }}\n",
        cert.cert.display(),
        cert.key.display()
    );
    // A listen socket's options go on its first `listen` only.
    let listen = |opts: &str| {
        format!("    listen 127.0.0.1:{plain}{opts};\n    listen 127.0.0.1:{tls} ssl{opts};\n")
    };
    let _ = write!(
        s,
        "  server {{\n{}    server_name {REWRITE_HOST};\n",
        listen(" backlog=4096")
    );
    for path in sorted_rules(rules) {
        let _ = write!(
            s,
            "    location ~* \"^{path}\" {{\n\
             \x20     rewrite \"(?i){path}\" /$2 break;\n\
             {PROXY}\
             \x20   }}\n"
        );
    }
    // No Ingress has `/`: ingress-nginx's default backend answers it (404).
    s.push_str("    location ~* \"^/\" { return 404; }\n  }\n");
    let _ = write!(
        s,
        "  server {{\n{}    server_name {SSO_HOST};\n\
         \x20   location = /_external-auth-Lw-Prefix {{\n\
         \x20     internal;\n\
         \x20     proxy_pass_request_body off;\n\
         \x20     proxy_set_header Content-Length \"\";\n\
         \x20     proxy_set_header X-Forwarded-Proto \"\";\n\
         \x20     proxy_set_header X-Request-ID $request_id;\n\
         \x20     proxy_set_header Host {SSO_HOST};\n\
         \x20     proxy_set_header X-Original-URL $scheme://$http_host$request_uri;\n\
         \x20     proxy_set_header X-Original-Method $request_method;\n\
         \x20     proxy_set_header X-Sent-From \"nginx-ingress-controller\";\n\
         \x20     proxy_set_header X-Real-IP $remote_addr;\n\
         \x20     proxy_set_header X-Forwarded-For $remote_addr;\n\
         \x20     proxy_set_header X-Auth-Request-Redirect $request_uri;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20     proxy_pass http://backend/oauth2/auth;\n\
         \x20   }}\n\
         \x20   location @sign-in {{\n\
         \x20     # ingress-nginx's $escaped_request_uri is OpenResty's; never reached here.\n\
         \x20     return 302 https://$host/oauth2/start?rd=$request_uri;\n\
         \x20   }}\n\
         \x20   location / {{\n\
         \x20     auth_request /_external-auth-Lw-Prefix;\n\
         \x20     auth_request_set $auth_cookie $upstream_http_set_cookie;\n\
         \x20     auth_request_set $authHeader0 $upstream_http_x_auth_request_user;\n\
         \x20     auth_request_set $authHeader1 $upstream_http_x_auth_request_email;\n\
         \x20     error_page 401 = @sign-in;\n\
         \x20     proxy_set_header X-Auth-Request-User $authHeader0;\n\
         \x20     proxy_set_header X-Auth-Request-Email $authHeader1;\n\
         {PROXY}\
         \x20   }}\n\
         \x20 }}\n\
         }}\n",
        listen("")
    );
    s
}

/// Checks `p` (bounded: heim-ingress may still be syncing): every rule answers 200 with its
/// rewritten URI (one in upper case: regex mode is case-insensitive), the auth route 200 with the
/// user, and for heim, without the session, 401.
fn check(cli: &Cli, p: &mut Peer, cookie: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = format!("/svc{}/x", cli.rules - 1);
    loop {
        p.proc.check_alive()?;
        if curl(false, p.plain_port, REWRITE_HOST, &last, None)? == (200, "/x|\n".into()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{REWRITE_HOST}{last} never answered; {}'s output:\n{}",
            p.name,
            p.proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in 0..cli.rules {
        for (path, want) in [
            (
                format!("/svc{k}/api/v1/items/{k}?page=2"),
                format!("/api/v1/items/{k}|\n"),
            ),
            (format!("/SVC{k}"), "/|\n".to_string()),
        ] {
            let got = curl(false, p.plain_port, REWRITE_HOST, &path, None)?;
            ensure!(
                got == (200, want.clone()),
                "{REWRITE_HOST}{path} through {}: {got:?}, not (200, {want:?})",
                p.name
            );
        }
    }
    let want = (200, format!("/|{USER}\n"));
    let got = curl(true, p.tls_port, SSO_HOST, "/", Some(cookie))?;
    ensure!(
        got == want,
        "https://{SSO_HOST}/ signed in through {}: {got:?}, not {want:?}",
        p.name
    );
    if !p.is_nginx {
        let got = curl(true, p.tls_port, SSO_HOST, "/", None)?;
        ensure!(
            got.0 == 401,
            "https://{SSO_HOST}/ without a session through heim: {got:?}, not 401"
        );
    }
    Ok(())
}

/// One request with curl to 127.0.0.1 (no SNI, like wrk; the certificate not checked):
/// (status, body). Status 0 when nothing answered.
fn curl(
    tls: bool,
    port: u16,
    host: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<(u16, String)> {
    let scheme = if tls { "https" } else { "http" };
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "5", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"));
    if let Some(c) = cookie {
        cmd.arg("-H").arg(format!("Cookie: {c}"));
    }
    let out = cmd
        .arg(format!("{scheme}://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A command's stdout, else its stderr (`nginx -v` prints there), trimmed; empty if it failed.
fn stdout_of(cmd: &mut Command) -> String {
    let Ok(out) = cmd.output() else {
        return String::new();
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text).trim().to_string()
}

/// `lscpu`'s model name (BENCH.md: beside every table).
fn cpu_model() -> String {
    stdout_of(&mut Command::new("lscpu"))
        .lines()
        .find_map(|l| Some(l.strip_prefix("Model name:")?.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn profile(cli: &Cli) -> String {
    format!(
        "heim-ingress (`workers = 1`, the Ingresses from kube-apiserver 1.20.2 + etcd on the same \
         machine, idle while measuring) and nginx (`worker_processes 1`) on core 1 (taskset -c 1); \
         wrk -t1 -c64 and the backend nginx (in a TEST-NET-2 namespace) on core 0; per scenario a \
         {w} s warm-up per proxy (discarded), then {r} round(s) × {d} s alternating nginx, heim. \
         rewrite: plain HTTP/1.1 keep-alive, Host {REWRITE_HOST}, {n} rules over {i} Ingresses, each \
         request to a rule picked at random (`/svcK/api/v1/items/K?page=2` → `/api/v1/items/K`). \
         auth-url: TLS 1.3 keep-alive (ECDSA P-256, X25519), Host {SSO_HOST}, `GET /` with a heim \
         session cookie; nginx's auth server is the backend nginx answering 202",
        w = cli.warmup,
        r = cli.rounds,
        d = cli.duration,
        n = cli.rules,
        i = cli.ingresses,
    )
}

/// `report`'s table for both scenarios, with this benchmark's names and a line per target.
fn render(header: &Header, cpu: &str, cli: &Cli, results: &[(Case, ScenarioResult)]) -> String {
    let table: Vec<ScenarioResult> = results.iter().map(|(_, r)| r.clone()).collect();
    let md = relabel(&report::render(header, &table, 1)).replacen(
        "- profile:",
        &format!("- CPU: `{cpu}` (lscpu model name)\n- profile:"),
        1,
    );
    let mut s = md;
    s.push_str("\nAgainst issue 15's targets (medians of the rounds above):\n");
    for (scenario, r) in results {
        let _ = writeln!(s, "{}", verdict(*scenario, cli.rules, r));
    }
    s
}

/// `report` names rows by heim-bench's scenarios: the rewrite host's load is its `h1`, the auth
/// route's its `auth`.
fn relabel(md: &str) -> String {
    md.replacen(
        "## heim-bench,",
        "## heim-bench-nginx (ingress-nginx drop-in),",
        1,
    )
    .replace("| h1 |", "| rewrite |")
    .replace("- h1:", "- rewrite:")
    .replace("| auth |", "| auth-url |")
    .replace("- auth:", "- auth-url:")
}

/// One target line: the req/s ratio and, since a client-bound run hides throughput, the
/// requests per CPU-second ratio (nginx's CPU-µs/req ÷ heim's).
fn verdict(scenario: Case, rules: u32, r: &ScenarioResult) -> String {
    let median = |v: &[Sample], f: fn(&Sample) -> f64| {
        report::summary(&v.iter().map(f).collect::<Vec<_>>()).map_or(0.0, |m| m.0)
    };
    let (n_rps, h_rps) = (median(&r.nginx, |x| x.rps), median(&r.heim, |x| x.rps));
    let (n_cpu, h_cpu) = (
        median(&r.nginx, |x| x.cpu_us_per_req),
        median(&r.heim, |x| x.cpu_us_per_req),
    );
    let (n_pct, h_pct) = (
        median(&r.nginx, |x| x.cpu_pct),
        median(&r.heim, |x| x.cpu_pct),
    );
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let (by_rps, by_cpu) = (ratio(h_rps, n_rps), ratio(n_cpu, h_cpu));
    let target = scenario.target();
    let met = |x: f64| if x >= target { "met" } else { "missed" };
    let what = match scenario {
        Case::Rewrite => format!("the rewrite host ({rules} regex rules)"),
        Case::AuthUrl => "the auth-url route (heim's sign-in vs `auth_request`)".to_string(),
    };
    format!(
        "* {what}, ≥ {target}× nginx's throughput: by req/s **{}**, {by_rps:.2}× ({h_rps:.0} vs \
         {n_rps:.0} req/s; proxy CPU heim {h_pct:.0} %, nginx {n_pct:.0} %); by CPU **{}**, heim \
         serves {by_cpu:.2}× the requests per CPU-second ({h_cpu:.2} vs {n_cpu:.2} CPU-µs/req){}",
        met(by_rps),
        met(by_cpu),
        if h_pct.max(n_pct) < 95.0 {
            ": the proxies stayed below 95 % of their core (client-bound), so the CPU figure is the verdict"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_sorted_as_ingress_nginx_sorts_them() {
        let r = sorted_rules(12);
        assert_eq!(r.len(), 12);
        assert_eq!(r[0], "/svc11(/|$)(.*)");
        assert_eq!(r[1], "/svc10(/|$)(.*)");
        assert_eq!(r[2], "/svc9(/|$)(.*)");
        assert_eq!(r[11], "/svc0(/|$)(.*)");
    }

    #[test]
    fn every_rule_is_in_exactly_one_ingress() {
        let ings = rewrite_ingresses(200, 4);
        assert_eq!(ings.len(), 4);
        let mut paths: Vec<String> = ings
            .iter()
            .flat_map(|i| {
                i["spec"]["rules"][0]["http"]["paths"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|p| {
                assert_eq!(p["pathType"], "ImplementationSpecific");
                p["path"].as_str().unwrap().to_string()
            })
            .collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 200);
        for i in &ings {
            assert_eq!(i["spec"]["ingressClassName"], "nginx");
            assert_eq!(i["spec"]["rules"][0]["host"], REWRITE_HOST);
            let a = &i["metadata"]["annotations"];
            assert_eq!(a[format!("{ANNOTATION}use-regex")], "true");
            assert_eq!(a[format!("{ANNOTATION}rewrite-target")], "/$2");
        }
        let sso = sso_ingress();
        assert_eq!(
            sso["metadata"]["annotations"][format!("{ANNOTATION}auth-url")],
            "https://$host/oauth2/auth"
        );
    }

    #[test]
    fn nginx_has_a_regex_location_and_rewrite_per_rule() {
        let cert = CertFiles {
            cert: "/t/c.pem".into(),
            key: "/t/k.pem".into(),
        };
        let backend = SocketAddr::from(([198, 51, 100, 2], 8080));
        let c = nginx_conf(Path::new("/p"), 1, 2, backend, &cert, 200);
        assert_eq!(c.matches("location ~* \"^/svc").count(), 200);
        assert_eq!(c.matches(" /$2 break;").count(), 200);
        assert!(c.contains(
            "    location ~* \"^/svc199(/|$)(.*)\" {\n      rewrite \"(?i)/svc199(/|$)(.*)\" /$2 break;\n"
        ));
        // Longest first: /svc100 before /svc10 before /svc1.
        let at = |p: &str| c.find(&format!("\"^{p}(/|$)")).unwrap();
        assert!(at("/svc100") < at("/svc10") && at("/svc10") < at("/svc1"));
        assert_eq!(
            c.matches("auth_request /_external-auth-Lw-Prefix;").count(),
            1
        );
        assert!(c.contains("proxy_pass http://backend/oauth2/auth;"));
        assert!(c.contains("server 198.51.100.2:8080;"));
        // nginx refuses a listen socket's options twice.
        assert_eq!(c.matches("backlog=4096").count(), 2);
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn wrk_scripts() {
        let s = rewrite_script(200);
        assert_eq!(s.matches("\"/svc").count(), 200);
        assert!(s.contains("\"/svc199/api/v1/items/199?page=2\","));
        assert!(s.contains(&format!("wrk.headers[\"Host\"] = \"{REWRITE_HOST}\"")));
        let a = auth_script("heim_session=abc");
        assert!(a.contains("wrk.headers[\"Cookie\"] = \"heim_session=abc\""));
    }

    /// heim's ConfigMap settings are a config heim accepts, with sign-in and the nginx dialect's
    /// default policy; the cookie opens for the auth route's host only.
    #[test]
    fn heim_settings_and_cookie() {
        let dir =
            std::env::temp_dir().join(format!("heim-bench-nginx-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cert = CertFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        let auth = peers::write_auth(&dir).unwrap();
        let t = heim_toml(1, 2, 3, &cert, &auth);
        let config = heim_proxy::config::Config::parse(&dir.join("heim.toml"), &t)
            .unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert!(config.auth.is_some(), "{t}");
        assert!(
            config.routes.is_empty(),
            "the routes are the Ingresses': {t}"
        );
        assert!(
            t.contains("workers = 1\n") && t.contains("access_log = false\n"),
            "{t}"
        );
        assert!(
            t.ends_with("[ingress_nginx]\ndefault_policy = \"public\"\n"),
            "{t}"
        );
        let cookie = session_cookie(&auth, SSO_HOST).unwrap();
        let sealer =
            heim_proxy::auth::seal::Sealer::new(&[fs::read(&auth.secret).unwrap()]).unwrap();
        let (name, value) = cookie.split_once('=').unwrap();
        assert_eq!(name, heim_proxy::auth::SESSION_COOKIE);
        let s: heim_proxy::auth::policy::Session = sealer
            .open(heim_proxy::auth::seal::Purpose::Session, value)
            .expect("the cookie opens");
        assert_eq!(s.host, SSO_HOST);
        assert_eq!(s.user, USER);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The report's rows carry this benchmark's names, and the verdict judges by both figures.
    #[test]
    fn table_names_and_verdicts() {
        let sample = |rps: f64, cpu: f64| Sample {
            rps,
            requests: 1000,
            p50_us: Some(300.0),
            p99_us: Some(900.0),
            cpu_us_per_req: cpu,
            cpu_pct: 60.0,
            rss_kib: 4096,
            ..Sample::default()
        };
        let result = |s, nginx: Sample, heim: Sample| ScenarioResult {
            scenario: s,
            nginx: vec![nginx],
            heim: vec![heim],
            nginx_tls: None,
            heim_tls: None,
            idle: None,
        };
        let h = Header {
            date: "2026-01-01 00:00 UTC".into(),
            command: "heim-bench-nginx".into(),
            nproc: 2,
            kernel: "6.1".into(),
            nginx_version: "nginx/1.22.1".into(),
            heim_version: "heim-ingress 0.1.0".into(),
            profile: "p".into(),
            handshake_burst: false,
        };
        let results = [
            (
                Case::Rewrite,
                result(Scenario::H1, sample(100.0, 30.0), sample(110.0, 20.0)),
            ),
            (
                Case::AuthUrl,
                result(Scenario::Auth, sample(100.0, 40.0), sample(150.0, 30.0)),
            ),
        ];
        let cli = Cli::parse_from(["heim-bench-nginx"]);
        let md = render(&h, "AMD EPYC", &cli, &results);
        assert!(
            md.starts_with("## heim-bench-nginx (ingress-nginx drop-in), 2026"),
            "{md}"
        );
        assert!(
            md.contains("| rewrite | req/s | 100 | 110 | 1.10× |"),
            "{md}"
        );
        assert!(
            md.contains("| auth-url | CPU-µs/req | 40.00 | 30.00 | 0.75× |"),
            "{md}"
        );
        assert!(md.contains("- rewrite: nginx used 60 %"), "{md}");
        assert!(!md.contains("| h1 |") && !md.contains("| auth |"), "{md}");
        assert!(
            md.contains("- CPU: `AMD EPYC` (lscpu model name)\n- profile: p"),
            "{md}"
        );
        assert!(
            md.contains("rewrite host (200 regex rules), ≥ 1.2× nginx's throughput: by req/s **missed**, 1.10×"),
            "{md}"
        );
        assert!(
            md.contains("by CPU **met**, heim serves 1.50× the requests"),
            "{md}"
        );
        assert!(
            md.contains("auth-url route (heim's sign-in vs `auth_request`), ≥ 2× nginx's throughput: by req/s **missed**, 1.50×"),
            "{md}"
        );
        assert!(md.contains("client-bound"), "{md}");
    }
}
