//! `heim-bench-tunnel`: heim's reverse tunnels (issue 14) against the same transfer straight
//! over loopback TCP and against rathole, the peer reverse tunnel, in one run, on one machine.
//!
//! It follows `/work/shared/BENCH.md`: every figure is read as a ratio to a peer measured in the
//! same run. One local service in heim-bench stands behind every path (a sink that discards, a
//! source, an echo), and four parts measure:
//!
//! 1. **bulk**: one stream uploading to the sink and one downloading from the source — through
//!    heim (TLS client → heim-proxy → `heim-tunnel agent`, whose link to heim is TLS too → the
//!    service), straight to the service over loopback TCP, and through rathole (server + client
//!    on loopback, the client exposing the same service) over its TLS transport and, labelled,
//!    plain TCP. A warm-up transfer per path sizes the measured ones to about `--duration`
//!    seconds; then `--rounds` alternating rounds (direct, heim, rathole…). MB/s, and the
//!    CPU-µs per MiB of each tunnel's two processes (Δ utime+stime from `/proc/PID/stat`).
//! 2. **latency**: `--connects` new streams, one after another, alternating paths, each from
//!    the TCP connect to the first echoed bytes; for heim also its parts (TCP, TLS handshake,
//!    `CONNECT` sent → 200 received on the open TLS connection, the first echo).
//! 3. **streams**: `--streams` streams opened at once over one agent connection
//!    (`connections = 1`), each echoing a message and held open: the time until all echoed,
//!    how many did, and VmRSS/VmHWM of heim and the agent (and of rathole's two processes) with
//!    all of them open. Fresh processes, so that the bulk part's buffers do not count.
//! 4. **scp**: `--scp-mib` MiB with scp to a real sshd behind the agent
//!    (`ProxyCommand=heim-tunnel proxy …`), against scp straight to the same sshd.
//!
//! Pinning: heim-proxy (`workers = 1`) and the rathole server on core 1; heim-bench itself (the
//! client and the service), sshd, scp and its ProxyCommand on core 0; the agent and the rathole
//! client on `--agent-core` (0 by default). It builds nothing: it runs
//! `target/release/heim-proxy` and `heim-tunnel` (or `--heim`, `--tunnel`) and rathole from
//! `~/.cache/heim/cargo/bin` (or `--rathole`, or PATH). All traffic stays on 127.0.0.1, every
//! wait is bounded, and every child is stopped on exit or error ([`peers::Proc`]).

#[allow(dead_code)]
#[path = "peers.rs"]
mod peers;

/// `peers.rs` takes its `tail` from `crate::load`, heim-bench's load generator, which this
/// binary does not build.
mod load {
    /// The last `n` lines of `text`.
    pub fn tail(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use peers::{CertFiles, Proc};

/// Benchmark heim's reverse tunnels against direct loopback TCP and rathole (see the module
/// docs) and print a markdown table. Needs `cargo build --release -p heim-proxy -p heim-tunnel`,
/// `cargo install rathole --root ~/.cache/heim/cargo` (else its rows say it is missing), and
/// for `scp` OpenSSH (`apt-get install openssh-server openssh-client`).
#[derive(Parser, Debug)]
#[command(name = "heim-bench-tunnel")]
struct Cli {
    /// The heim-proxy binary [default: target/release/heim-proxy].
    #[arg(long, value_name = "PATH")]
    heim: Option<PathBuf>,

    /// The heim-tunnel binary (the agent, and scp's ProxyCommand) [default:
    /// target/release/heim-tunnel].
    #[arg(long, value_name = "PATH")]
    tunnel: Option<PathBuf>,

    /// The rathole binary [default: ~/.cache/heim/cargo/bin/rathole, else rathole in PATH].
    #[arg(long, value_name = "PATH")]
    rathole: Option<PathBuf>,

    /// Parts to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bulk,latency,streams,scp"
    )]
    parts: Vec<Part>,

    /// rathole transports to compare with, comma-separated: `tls` (the like-for-like peer:
    /// heim's agent link is TLS too) and `tcp` (unencrypted, for reference).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tls,tcp")]
    rathole_transports: Vec<Transport>,

    /// Measured bulk rounds (each: every path, upload and download).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,

    /// Seconds each measured bulk transfer should take (its size comes from a warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=120))]
    duration: u32,

    /// Sequential new streams per path in the latency part.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..=5000))]
    connects: u32,

    /// Streams opened at once in the streams part.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=5000))]
    streams: u32,

    /// MiB copied by each scp.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=8192))]
    scp_mib: u32,

    /// scp rounds (each: direct, then through heim).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    scp_rounds: u32,

    /// The core of `heim-tunnel agent` and the rathole client: 0 (beside heim-bench's client
    /// and service) or 1 (beside heim-proxy and the rathole server).
    #[arg(long, default_value = "0", value_parser = ["0", "1"])]
    agent_core: String,

    /// heim-proxy's RUST_LOG (its log is in the scratch directory; see --keep-scratch).
    #[arg(long, default_value = "warn", value_name = "FILTER")]
    heim_log: String,

    /// Keep the scratch directory (configs and every process's log) instead of removing it.
    #[arg(long)]
    keep_scratch: bool,

    /// Also append the markdown to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Bulk,
    Latency,
    Streams,
    Scp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tls,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Tcp => "tcp",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Transport::Tls => "rathole (TLS transport)",
            Transport::Tcp => "rathole (plain TCP, unencrypted)",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("heim-bench-tunnel: some parts failed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("heim-bench-tunnel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup: binaries, scratch directory, pinning.

/// A scratch directory removed on drop (after the processes using it: declare it first)
/// unless kept. Named `heim-bench-PID-tunnel-N`, so heim-bench's stale-directory sweep knows it
/// too.
struct TempDir(PathBuf, bool);

impl TempDir {
    fn new(keep: bool) -> Result<TempDir> {
        remove_stale_dirs();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("heim-bench-{}-tunnel-{nanos}", std::process::id()));
        fs::create_dir(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(TempDir(p, keep))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            let _ = fs::remove_file(self.0.join("scp-blob"));
            eprintln!("heim-bench-tunnel: kept {}", self.0.display());
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!(
                "heim-bench-tunnel: could not remove {}: {e}",
                self.0.display()
            );
        }
    }
}

/// Removes `heim-bench-PID-*` scratch directories whose process is gone (a run killed by a
/// signal cannot clean up after itself; the scp part leaves a large file there).
fn remove_stale_dirs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
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

/// `flag`, else `target/release/NAME` (honouring CARGO_TARGET_DIR, then the workspace's).
fn release_binary(flag: Option<&Path>, name: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = flag {
        ensure!(p.is_file(), "{}: no such file", p.display());
        return Ok(p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name),
    );
    candidates.push(PathBuf::from("target/release").join(name));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    bail!(
        "{name} not found (looked at {}): build it with `cargo build --release -p {package}`",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// rathole: `--rathole`, else `~/.cache/heim/cargo/bin/rathole`, else PATH; `Err` says why not.
fn find_rathole(cli: &Cli) -> std::result::Result<PathBuf, String> {
    const INSTALL: &str = "cargo install rathole --root ~/.cache/heim/cargo";
    if let Some(p) = &cli.rathole {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("--rathole {}: no such file", p.display()))
        };
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/heim/cargo/bin/rathole"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("rathole")));
    }
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| format!("not installed (`{INSTALL}`)"))
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A command's stdout (or its stderr when stdout is empty), trimmed.
fn command_text(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
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

/// Pins this whole process (every thread so far; later ones inherit it) to `cpus`.
fn pin_process(cpus: &str) -> Result<()> {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run taskset")?;
    ensure!(
        status.success(),
        "taskset -a -p -c {cpus} {pid} failed ({status})"
    );
    Ok(())
}

/// Raises this process's open-file limit to `need` with `prlimit` (std has no setrlimit);
/// the children started afterwards inherit it.
fn raise_nofile(need: u64) -> Result<()> {
    let soft = || -> Option<u64> {
        let text = fs::read_to_string("/proc/self/limits").ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        let v = line.split_whitespace().nth(3)?;
        Some(if v == "unlimited" {
            u64::MAX
        } else {
            v.parse().ok()?
        })
    };
    if soft().is_some_and(|s| s >= need) {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={need}:{need}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    ensure!(
        soft().is_some_and(|s| s >= need),
        "{need} open files are needed (`ulimit -n {need}`), or pass fewer --streams"
    );
    Ok(())
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100 if that fails).
fn clock_ticks() -> u64 {
    command_text(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The 1-minute load average.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// lscpu's "Model name".
fn cpu_model() -> String {
    command_text(&mut Command::new("lscpu"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Model name:"))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown (lscpu failed)".into())
}

/// This invocation, for the report.
fn command_line() -> String {
    let mut parts = vec!["heim-bench-tunnel".to_string()];
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

/// A file under the workspace's `dirs` modified after `bin`, if any: a stale binary would
/// benchmark old code. Bounded walk: at most 10 000 entries.
fn newer_source(bin: &Path, dirs: &[&str]) -> Option<PathBuf> {
    let built = fs::metadata(bin).ok()?.modified().ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
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
            return Some(p.canonicalize().unwrap_or(p));
        }
    }
    None
}

/// The workspace's commit, and whether the tunnel's sources have uncommitted changes.
fn tree_state() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| command_text(Command::new("git").arg("-C").arg(&root).args(args));
    match git(&["rev-parse", "--short", "HEAD"]) {
        Ok(head) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "proxy",
                "tunnel-agent",
                "tunnel-wire",
            ])
            .is_ok_and(|s| !s.is_empty());
            if dirty {
                format!("tree at {head} with uncommitted changes in proxy/, tunnel-agent/ or tunnel-wire/")
            } else {
                format!("tree at {head}")
            }
        }
        Err(_) => "tree: not a git checkout".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The local service: sink, source, echo.

/// Bytes per read and write, everywhere in heim-bench.
const CHUNK: usize = 256 * 1024;
/// How long the service waits for a byte, or to write one, on a connection.
const SERVICE_IDLE: Duration = Duration::from_secs(300);

/// A connection's first 9 bytes: the mode (`U` sink: read N bytes, answer N as 8 bytes LE;
/// `D` source: write N bytes, then close; `E` echo until the end) and N (u64 LE).
fn header(mode: u8, n: u64) -> [u8; 9] {
    let mut h = [mode; 9];
    h[1..].copy_from_slice(&n.to_le_bytes());
    h
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no progress within the limit")
    })?
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut h = [0u8; 9];
    within(SERVICE_IDLE, s.read_exact(&mut h)).await?;
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&h[1..]);
    let n = u64::from_le_bytes(n8);
    let mut buf = vec![0x5a_u8; CHUNK];
    match h[0] {
        b'U' => {
            let mut got = 0u64;
            while got < n {
                let k = within(SERVICE_IDLE, s.read(&mut buf)).await?;
                if k == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += k as u64;
            }
            within(SERVICE_IDLE, s.write_all(&got.to_le_bytes())).await?;
        }
        b'D' => {
            let mut left = n;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                within(SERVICE_IDLE, s.write_all(&buf[..k])).await?;
                left -= k as u64;
            }
            within(SERVICE_IDLE, s.shutdown()).await?;
        }
        b'E' => {
            // Bounded: an echo connection carries at most this many reads.
            for _ in 0..10_000_000u64 {
                let k = within(SERVICE_IDLE, s.read(&mut buf)).await?;
                if k == 0 {
                    break;
                }
                within(SERVICE_IDLE, s.write_all(&buf[..k])).await?;
            }
        }
        _ => return Err(std::io::ErrorKind::InvalidData.into()),
    }
    Ok(())
}

/// Starts the service on a thread of its own (a current-thread runtime; the thread inherits
/// heim-bench's core 0) on 127.0.0.1 with a 4096 backlog; it lives as long as heim-bench.
fn start_service() -> Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
    std::thread::Builder::new()
        .name("heim-bench-service".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow!("service runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let bound = (|| -> std::io::Result<tokio::net::TcpListener> {
                    let sock = tokio::net::TcpSocket::new_v4()?;
                    sock.set_reuseaddr(true)?;
                    sock.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
                    sock.listen(4096)
                })();
                let listener = match bound.and_then(|l| Ok((l.local_addr()?, l))) {
                    Ok((addr, l)) => {
                        let _ = tx.send(Ok(addr));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(anyhow!("bind the service: {e}")));
                        return;
                    }
                };
                // Bounded: far more connections than any run opens.
                for _ in 0..10_000_000u64 {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            tokio::spawn(async move {
                                let _ = serve(s).await;
                            });
                        }
                        // EMFILE and the like: back off, do not spin.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        })
        .context("start the service thread")?;
    rx.recv_timeout(Duration::from_secs(10))
        .context("the service did not start")?
}

// ---------------------------------------------------------------------------------------------
// The client side: one stream through a path.

/// Where a stream goes.
#[derive(Clone)]
enum Target {
    /// Plain TCP to this address: the service itself, or rathole's visitor port.
    Tcp(SocketAddr),
    /// TLS to heim at `addr`, then `CONNECT {host}:1`.
    Heim {
        addr: SocketAddr,
        host: &'static str,
        tls: TlsConnector,
    },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How long the parts of opening one stream took.
#[derive(Clone, Copy, Debug, Default)]
struct Opened {
    tcp: Duration,
    tls: Duration,
    /// `CONNECT` written → the 200's head read.
    connect: Duration,
}

/// The client's TLS: TLS 1.3, X25519, ALPN http/1.1, no resumption (a full handshake per
/// stream, as a fresh `heim-tunnel proxy` makes), the bench certificate as the only root.
fn client_tls(cert: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(cert).with_context(|| format!("read {}", cert.display()))?
    {
        roots
            .add(c.with_context(|| format!("parse {}", cert.display()))?)
            .context("trust the bench certificate")?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 client config")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Reads a response head; fails unless it is a 200 with nothing after it.
async fn read_200<S: AsyncRead + Unpin>(s: &mut S) -> Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .context("read the CONNECT answer")?;
        ensure!(
            n > 0,
            "heim closed the connection before answering the CONNECT (read {:?})",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            ensure!(
                head.starts_with("HTTP/1.1 200"),
                "CONNECT answered {:?}",
                head.lines().next().unwrap_or("")
            );
            ensure!(
                buf.len() == end + 4,
                "bytes after the 200 before any were sent"
            );
            return Ok(());
        }
        ensure!(
            buf.len() < 16 * 1024,
            "no end of the answer's head in 16 KiB"
        );
    }
}

/// Opens a stream to the service through `t`.
async fn open(t: &Target) -> Result<(Box<dyn Stream>, Opened)> {
    let t0 = Instant::now();
    match t {
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))?;
            let _ = s.set_nodelay(true);
            Ok((
                Box::new(s),
                Opened {
                    tcp: t0.elapsed(),
                    ..Opened::default()
                },
            ))
        }
        Target::Heim { addr, host, tls } => {
            let s = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect heim at {addr}"))?;
            let _ = s.set_nodelay(true);
            let t1 = Instant::now();
            let mut s = tls
                .connect(ServerName::from(addr.ip()), s)
                .await
                .context("TLS handshake with heim")?;
            let t2 = Instant::now();
            let req = format!("CONNECT {host}:1 HTTP/1.1\r\nHost: {host}:1\r\n\r\n");
            s.write_all(req.as_bytes()).await.context("send CONNECT")?;
            s.flush().await.context("send CONNECT")?;
            let t3 = Instant::now();
            read_200(&mut s).await?;
            let t4 = Instant::now();
            Ok((
                Box::new(s),
                Opened {
                    tcp: t1 - t0,
                    tls: t2 - t1,
                    connect: t4 - t3,
                },
            ))
        }
    }
}

/// Uploads `bytes` to the sink; the time from the first byte written to the sink's count.
async fn upload(t: &Target, bytes: u64) -> Result<Duration> {
    let (mut s, _) = open(t).await?;
    let start = Instant::now();
    s.write_all(&header(b'U', bytes)).await?;
    let buf = vec![0xa5_u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).await.context("write to the sink")?;
        left -= k as u64;
    }
    s.flush().await?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)
        .await
        .context("read the sink's count")?;
    let took = start.elapsed();
    let got = u64::from_le_bytes(ack);
    ensure!(got == bytes, "the sink counted {got} of {bytes} bytes");
    Ok(took)
}

/// Downloads `bytes` from the source; the time from the request to the last byte.
async fn download(t: &Target, bytes: u64) -> Result<Duration> {
    let (mut s, _) = open(t).await?;
    let start = Instant::now();
    s.write_all(&header(b'D', bytes)).await?;
    s.flush().await?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < bytes {
        let k = s.read(&mut buf).await.context("read from the source")?;
        ensure!(k > 0, "the stream ended after {got} of {bytes} bytes");
        got += k as u64;
    }
    Ok(start.elapsed())
}

/// Echoes on a new stream: (from the connect to the first echoed bytes, the opening's
/// parts, the first echo on the open stream, a second echo on it).
async fn echo_once(t: &Target, msg: &[u8]) -> Result<(Duration, Opened, Duration, Duration)> {
    let t0 = Instant::now();
    let (mut s, opened) = open(t).await?;
    let t1 = Instant::now();
    echo_first(&mut s, msg).await?;
    let (total, first) = (t0.elapsed(), t1.elapsed());
    let t2 = Instant::now();
    s.write_all(msg).await?;
    s.flush().await?;
    read_back(&mut s, msg).await?;
    Ok((total, opened, first, t2.elapsed()))
}

/// Sends the echo header and `msg` (the first bytes of a stream), reads `msg` back.
async fn echo_first(s: &mut Box<dyn Stream>, msg: &[u8]) -> Result<()> {
    let mut out = header(b'E', 0).to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out).await?;
    s.flush().await?;
    read_back(s, msg).await
}

async fn read_back(s: &mut Box<dyn Stream>, msg: &[u8]) -> Result<()> {
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.context("read the echo")?;
    ensure!(back == msg, "the echo came back different");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The processes: heim + agent, rathole, sshd.

/// What every start needs.
struct Env<'a> {
    cli: &'a Cli,
    dir: &'a Path,
    cert: &'a CertFiles,
    heim_bin: &'a Path,
    tunnel_bin: &'a Path,
    service: SocketAddr,
    ssh: Option<SocketAddr>,
}

/// The agent's token and its SHA-256 (hex) for heim's `[[agent]] token_sha256`.
const AGENT_TOKEN: &str = "heim-bench-desk-5d1f0c7a9e3b4a6c8d2e1f0a9b8c7d6e";

/// heim-proxy and its agent (`connections = 1`).
struct Tunnel {
    heim: Proc,
    agent: Proc,
    https: SocketAddr,
    admin: SocketAddr,
    target: Target,
}

impl Tunnel {
    fn pids(&mut self) -> (Vec<u32>, Vec<u32>) {
        (self.heim.pids(), self.agent.pids())
    }

    fn url(&self) -> String {
        format!("https://{}", self.https)
    }

    fn check_alive(&mut self) -> Result<()> {
        self.heim.check_alive()?;
        self.agent.check_alive()
    }
}

fn sha256_hex(path: &Path) -> Result<String> {
    let out = command_text(Command::new("sha256sum").arg(path))?;
    let hex = out.split_whitespace().next().unwrap_or("").to_string();
    ensure!(hex.len() == 64, "sha256sum printed {out:?}");
    Ok(hex)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Starts heim-proxy (core 1, one worker) with the agent `desk` and routes `sink.test` and
/// `ssh.test` to its services, then the agent, and waits until a stream echoes through.
fn start_tunnel(env: &Env<'_>, label: &str, client: &TlsConnector) -> Result<Tunnel> {
    let ports = peers::free_ports(3)?;
    let local = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let token = env.dir.join(format!("agent-{label}.token"));
    fs::write(&token, AGENT_TOKEN).context("write the agent token")?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600))
            .context("chmod the agent token")?;
    }
    let hash = sha256_hex(&token)?;
    let ssh_route = if env.ssh.is_some() {
        "[[route]]\nhost = \"ssh.test\"\nagent = \"desk\"\nservice = \"ssh\"\npublic = true\n"
    } else {
        ""
    };
    let conf = format!(
        "[server]\n\
         https_listen = \"127.0.0.1:{https}\"\n\
         http_listen = \"127.0.0.1:{http}\"\n\
         admin_listen = \"127.0.0.1:{admin}\"\n\
         workers = 1\n\
         access_log = false\n\
         drain_timeout = \"1s\"\n\
         \n\
         # The default (first) certificate names 127.0.0.1: `--proxy https://127.0.0.1:PORT`\n\
         # sends no SNI.\n\
         [[certificate]]\n\
         cert_file = {cert:?}\n\
         key_file = {key:?}\n\
         \n\
         [[agent]]\n\
         name = \"desk\"\n\
         token_sha256 = \"{hash}\"\n\
         \n\
         [[route]]\n\
         host = \"sink.test\"\n\
         agent = \"desk\"\n\
         service = \"sink\"\n\
         public = true\n\
         \n\
         {ssh_route}",
        https = ports[0],
        http = ports[1],
        admin = ports[2],
        cert = env.cert.cert.display().to_string(),
        key = env.cert.key.display().to_string(),
    );
    let heim_conf = env.dir.join(format!("heim-{label}.toml"));
    fs::write(&heim_conf, conf).context("write the heim config")?;
    let argv = [
        env.heim_bin.display().to_string(),
        "--config".to_string(),
        heim_conf.display().to_string(),
    ];
    let mut heim = Proc::spawn(
        "heim-proxy",
        Some("1"),
        &argv,
        &[("RUST_LOG", env.cli.heim_log.as_str())],
        env.dir.join(format!("heim-{label}.log")),
    )?;
    let admin = local(ports[2]);
    heim.wait_ready(admin, "/readyz")?;

    let ssh_service = env
        .ssh
        .map(|a| format!("ssh = \"{a}\"\n"))
        .unwrap_or_default();
    let agent_conf = env.dir.join(format!("agent-{label}.toml"));
    fs::write(
        &agent_conf,
        format!(
            "proxy = \"https://127.0.0.1:{https}\"\n\
             name = \"desk\"\n\
             token_file = {token:?}\n\
             ca_file = {ca:?}\n\
             connections = 1\n\
             \n\
             [services]\n\
             sink = \"{service}\"\n\
             {ssh_service}",
            https = ports[0],
            token = token.display().to_string(),
            ca = env.cert.cert.display().to_string(),
            service = env.service,
        ),
    )
    .context("write the agent config")?;
    let argv = [
        env.tunnel_bin.display().to_string(),
        "agent".to_string(),
        "--config".to_string(),
        agent_conf.display().to_string(),
    ];
    let mut agent = Proc::spawn(
        "heim-tunnel agent",
        Some(&env.cli.agent_core),
        &argv,
        &[],
        env.dir.join(format!("agent-{label}.log")),
    )?;
    // Bounded: 400 × 25 ms for the agent's link.
    let mut connected = false;
    for _ in 0..400 {
        heim.check_alive()?;
        agent.check_alive()?;
        if let Ok((200, m)) = peers::http_get(admin, "/metrics") {
            if metric(&m, "heim_tunnel_agents_connected") == Some(1.0) {
                connected = true;
                break;
            }
        }
        sleep(Duration::from_millis(25));
    }
    ensure!(
        connected,
        "the agent did not connect to heim within 10 s; the agent's output:\n{}\nheim's:\n{}",
        agent.log_tail(),
        heim.log_tail()
    );
    let https = local(ports[0]);
    let target = Target::Heim {
        addr: https,
        host: "sink.test",
        tls: client.clone(),
    };
    let mut t = Tunnel {
        heim,
        agent,
        https,
        admin,
        target,
    };
    let target = t.target.clone();
    let probe = client_rt()?.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), echo_once(&target, b"probe")).await
    });
    match probe {
        Ok(Ok(_)) => Ok(t),
        Ok(Err(e)) => Err(e.context(format!(
            "a stream through heim did not echo; heim's output:\n{}\nthe agent's:\n{}",
            t.heim.log_tail(),
            t.agent.log_tail()
        ))),
        Err(_) => {
            t.check_alive()?;
            bail!("a stream through heim did not echo within 10 s")
        }
    }
}

/// rathole's server (core 1) and client (`--agent-core`), the client exposing the service.
struct Rathole {
    transport: Transport,
    server: Proc,
    client: Proc,
    target: Target,
}

impl Rathole {
    fn pids(&mut self) -> (Vec<u32>, Vec<u32>) {
        (self.server.pids(), self.client.pids())
    }
}

/// Writes rathole's TLS identity (PKCS#12 of the bench certificate) once.
fn rathole_identity(env: &Env<'_>) -> Result<PathBuf> {
    let pfx = env.dir.join("rathole-identity.pfx");
    if pfx.is_file() {
        return Ok(pfx);
    }
    let out = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:heim-bench", "-out"])
        .arg(&pfx)
        .arg("-inkey")
        .arg(&env.cert.key)
        .arg("-in")
        .arg(&env.cert.cert)
        .stdin(Stdio::null())
        .output()
        .context("run openssl pkcs12 (apt-get install openssl)")?;
    ensure!(
        out.status.success(),
        "openssl pkcs12 -export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(pfx)
}

fn start_rathole(env: &Env<'_>, bin: &Path, transport: Transport, label: &str) -> Result<Rathole> {
    let ports = peers::free_ports(2)?;
    let (control, visitor) = (ports[0], ports[1]);
    let (server_transport, client_transport) = match transport {
        Transport::Tcp => (String::new(), String::new()),
        Transport::Tls => {
            let pfx = rathole_identity(env)?;
            (
                format!(
                    "[server.transport]\ntype = \"tls\"\n[server.transport.tls]\n\
                     pkcs12 = {pfx:?}\npkcs12_password = \"heim-bench\"\n",
                    pfx = pfx.display().to_string()
                ),
                format!(
                    "[client.transport]\ntype = \"tls\"\n[client.transport.tls]\n\
                     trusted_root = {ca:?}\nhostname = \"{host}\"\n",
                    ca = env.cert.cert.display().to_string(),
                    host = peers::HOST
                ),
            )
        }
    };
    let server_conf = env.dir.join(format!("rathole-server-{label}.toml"));
    fs::write(
        &server_conf,
        format!(
            "[server]\nbind_addr = \"127.0.0.1:{control}\"\ndefault_token = \"heim-bench-rathole\"\n\
             {server_transport}\n[server.services.sink]\nbind_addr = \"127.0.0.1:{visitor}\"\n"
        ),
    )
    .context("write the rathole server config")?;
    let client_conf = env.dir.join(format!("rathole-client-{label}.toml"));
    fs::write(
        &client_conf,
        format!(
            "[client]\nremote_addr = \"127.0.0.1:{control}\"\ndefault_token = \"heim-bench-rathole\"\n\
             {client_transport}\n[client.services.sink]\nlocal_addr = \"{service}\"\n",
            service = env.service
        ),
    )
    .context("write the rathole client config")?;
    let bin = bin.display().to_string();
    let server = Proc::spawn(
        &format!("rathole server ({})", transport.name()),
        Some("1"),
        &[
            bin.clone(),
            "--server".into(),
            server_conf.display().to_string(),
        ],
        &[("RUST_LOG", "warn")],
        env.dir.join(format!("rathole-server-{label}.log")),
    )?;
    let client = Proc::spawn(
        &format!("rathole client ({})", transport.name()),
        Some(&env.cli.agent_core),
        &[bin, "--client".into(), client_conf.display().to_string()],
        &[("RUST_LOG", "warn")],
        env.dir.join(format!("rathole-client-{label}.log")),
    )?;
    let mut r = Rathole {
        transport,
        server,
        client,
        target: Target::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, visitor))),
    };
    // Bounded: 100 tries, each at most 1 s, 50 ms apart. The server binds the visitor port
    // once the client's control channel is up.
    let rt = client_rt()?;
    let mut last = String::new();
    for _ in 0..100 {
        r.server.check_alive()?;
        r.client.check_alive()?;
        let t = r.target.clone();
        match rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), echo_once(&t, b"probe")).await
        }) {
            Ok(Ok(_)) => return Ok(r),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "no echo within 1 s".into(),
        }
        sleep(Duration::from_millis(50));
    }
    bail!(
        "no echo through rathole ({}) within ~10 s ({last}); the server's output:\n{}\nthe client's:\n{}",
        transport.name(),
        r.server.log_tail(),
        r.client.log_tail()
    )
}

/// A real sshd on a loopback port for the current user, as tests/src/ssh.rs starts one.
struct Sshd {
    proc: Proc,
    addr: SocketAddr,
    key: PathBuf,
}

fn start_sshd(dir: &Path) -> Result<Sshd> {
    let gen = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .status()
            .context("run ssh-keygen")?
            .success();
        ensure!(ok, "ssh-keygen failed");
        Ok(path)
    };
    let host_key = gen("ssh_host_key")?;
    let key = gen("ssh_client_key")?;
    fs::copy(dir.join("ssh_client_key.pub"), dir.join("authorized_keys"))
        .context("write authorized_keys")?;
    // sshd's privilege separation directory.
    let _ = fs::create_dir_all("/run/sshd");
    let port = peers::free_ports(1)?[0];
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxStartups 200\n",
            host_key.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display(),
        ),
    )
    .context("write sshd_config")?;
    let argv = [
        "/usr/sbin/sshd".to_string(),
        "-D".into(),
        "-e".into(),
        "-f".into(),
        config.display().to_string(),
    ];
    let mut proc = Proc::spawn("sshd", Some("0"), &argv, &[], dir.join("sshd.log"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..400 {
        proc.check_alive()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(Sshd { proc, addr, key });
        }
        sleep(Duration::from_millis(25));
    }
    bail!(
        "sshd did not listen on {addr} within 10 s: {}",
        proc.log_tail()
    )
}

/// The client's runtime: current-thread, on heim-bench's core 0.
fn client_rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the client runtime")
}

// ---------------------------------------------------------------------------------------------
// Measuring.

/// CPU ticks of some processes and of the two cores, read before a run.
struct Meter {
    tck: u64,
    server: Vec<u32>,
    agent: Vec<u32>,
    server0: u64,
    agent0: u64,
    cores0: [Option<(u64, u64)>; 2],
}

/// What a [`Meter`] read over a run.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// CPU seconds of the tunnel's server side (heim-proxy, rathole server).
    server_s: f64,
    /// CPU seconds of its agent side (heim-tunnel agent, rathole client).
    agent_s: f64,
    /// Busy % of core 0 and core 1 over the run.
    core: [Option<f64>; 2],
}

impl Meter {
    fn start(tck: u64, server: &[u32], agent: &[u32]) -> Result<Meter> {
        Ok(Meter {
            tck,
            server0: peers::cpu_ticks(server)?,
            agent0: peers::cpu_ticks(agent)?,
            server: server.to_vec(),
            agent: agent.to_vec(),
            cores0: [peers::read_core_ticks(0), peers::read_core_ticks(1)],
        })
    }

    fn stop(&self) -> Result<Cpu> {
        let server = peers::cpu_ticks(&self.server).context("a tunnel process exited")?;
        let agent = peers::cpu_ticks(&self.agent).context("a tunnel process exited")?;
        let mut core = [None, None];
        for (i, c) in core.iter_mut().enumerate() {
            if let (Some((b0, t0)), Some((b1, t1))) = (self.cores0[i], peers::read_core_ticks(i)) {
                if t1 > t0 {
                    *c = Some(b1.saturating_sub(b0) as f64 * 100.0 / (t1 - t0) as f64);
                }
            }
        }
        Ok(Cpu {
            server_s: server.saturating_sub(self.server0) as f64 / self.tck as f64,
            agent_s: agent.saturating_sub(self.agent0) as f64 / self.tck as f64,
            core,
        })
    }
}

/// (median, min, max).
fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
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

fn median(values: &[f64]) -> Option<f64> {
    summary(values).map(|s| s.0)
}

/// The `p`-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

const MIB: f64 = 1024.0 * 1024.0;

/// One path of the bulk and latency parts.
struct Way {
    label: String,
    target: Target,
    /// Whose CPU counts: the server side and the agent side (empty for direct).
    server: Vec<u32>,
    agent: Vec<u32>,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Direct,
    Heim,
    Rathole(Transport),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Up => "upload (client → service)",
            Dir::Down => "download (service → client)",
        }
    }
}

/// One measured bulk transfer.
#[derive(Clone, Copy, Debug)]
struct BulkRun {
    mb_s: f64,
    mib: f64,
    cpu: Cpu,
}

/// Every measured bulk transfer of one path in one direction.
struct BulkSeries {
    kind: Kind,
    label: String,
    dir: Dir,
    bytes: u64,
    runs: Vec<BulkRun>,
}

impl BulkSeries {
    fn mb_s(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.mb_s).collect()
    }

    fn server_us_per_mib(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.cpu.server_s * 1e6 / r.mib)
            .collect()
    }

    fn agent_us_per_mib(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| r.cpu.agent_s * 1e6 / r.mib)
            .collect()
    }

    fn core(&self, i: usize) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.cpu.core[i]).collect()
    }
}

async fn transfer(t: &Target, dir: Dir, bytes: u64, limit: Duration) -> Result<Duration> {
    let f = async {
        match dir {
            Dir::Up => upload(t, bytes).await,
            Dir::Down => download(t, bytes).await,
        }
    };
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow!("{bytes} bytes did not move within {limit:?} (a stall?)"))?
}

fn bulk(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    paths: &[Way],
    tck: u64,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<BulkSeries>> {
    let warm_bytes: u64 = 256 << 20;
    let mut series = Vec::new();
    for dir in [Dir::Up, Dir::Down] {
        for p in paths {
            // Warm-up: discarded, and sizes the measured transfers to ~--duration seconds.
            let took = rt
                .block_on(transfer(
                    &p.target,
                    dir,
                    warm_bytes,
                    Duration::from_secs(120),
                ))
                .with_context(|| format!("warm-up {} through {}", dir.name(), p.label))?;
            let rate = warm_bytes as f64 / took.as_secs_f64().max(1e-6);
            let bytes = ((rate * f64::from(cli.duration)) as u64)
                .clamp(64 << 20, 64 << 30)
                .next_multiple_of(1 << 20);
            eprintln!(
                "[bulk] warm-up {:28} {:42}: {:8.1} MB/s → {} MiB per run",
                dir.name(),
                p.label,
                rate / 1e6,
                bytes >> 20
            );
            series.push(BulkSeries {
                kind: p.kind,
                label: p.label.clone(),
                dir,
                bytes,
                runs: Vec::new(),
            });
        }
    }
    let limit = Duration::from_secs(u64::from(cli.duration) * 10 + 60);
    for round in 1..=cli.rounds {
        for s in series.iter_mut() {
            let p = paths
                .iter()
                .find(|p| p.kind == s.kind)
                .context("a path without its series")?;
            let meter = Meter::start(tck, &p.server, &p.agent)?;
            let took = rt
                .block_on(transfer(&p.target, s.dir, s.bytes, limit))
                .with_context(|| format!("round {round}: {} through {}", s.dir.name(), p.label))?;
            let cpu = meter.stop()?;
            let run = BulkRun {
                mb_s: s.bytes as f64 / took.as_secs_f64().max(1e-6) / 1e6,
                mib: s.bytes as f64 / MIB,
                cpu,
            };
            eprintln!(
                "[bulk] round {round}/{} {:28} {:42}: {:8.1} MB/s, CPU-µs/MiB {:6.0} + {:6.0}, cores {:.0} % / {:.0} %",
                cli.rounds,
                s.dir.name(),
                p.label,
                run.mb_s,
                cpu.server_s * 1e6 / run.mib,
                cpu.agent_s * 1e6 / run.mib,
                cpu.core[0].unwrap_or(f64::NAN),
                cpu.core[1].unwrap_or(f64::NAN),
            );
            s.runs.push(run);
            sleep(Duration::from_millis(200));
        }
        alive()?;
    }
    Ok(series)
}

/// The latency part's samples (µs).
#[derive(Default)]
struct Latency {
    connects: u32,
    direct: Vec<f64>,
    heim_total: Vec<f64>,
    heim_tcp: Vec<f64>,
    heim_tls: Vec<f64>,
    heim_connect: Vec<f64>,
    heim_echo: Vec<f64>,
    /// A second echo on the open stream, heim and direct.
    heim_again: Vec<f64>,
    direct_again: Vec<f64>,
    rathole: Vec<(Transport, Vec<f64>)>,
    /// heim's own `heim_tunnel_connect_seconds` mean over the part (CONNECT → the agent's 200).
    heim_metric_us: Option<f64>,
}

fn latency(
    cli: &Cli,
    rt: &tokio::runtime::Runtime,
    paths: &[Way],
    admin: SocketAddr,
) -> Result<Latency> {
    let msg = b"heim-bench echo!";
    let limit = Duration::from_secs(10);
    let read_metric = || -> Option<(f64, f64)> {
        let (_, m) = peers::http_get(admin, "/metrics").ok()?;
        Some((
            metric(&m, "heim_tunnel_connect_seconds_sum")?,
            metric(&m, "heim_tunnel_connect_seconds_count")?,
        ))
    };
    let mut out = Latency {
        connects: cli.connects,
        ..Latency::default()
    };
    for p in paths {
        if let Kind::Rathole(t) = p.kind {
            out.rathole.push((t, Vec::new()));
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // 50 discarded per path first, then the measured ones; one of each path in turn.
    let warm = 50;
    let mut before = None;
    for i in 0..warm + cli.connects {
        if i == warm {
            before = read_metric();
        }
        for p in paths {
            let (total, opened, echoed, again) = rt
                .block_on(async {
                    tokio::time::timeout(limit, echo_once(&p.target, msg))
                        .await
                        .map_err(|_| anyhow!("no echo within {limit:?}"))?
                })
                .with_context(|| format!("connect {i} through {}", p.label))?;
            if i < warm {
                continue;
            }
            match p.kind {
                Kind::Direct => {
                    out.direct.push(us(total));
                    out.direct_again.push(us(again));
                }
                Kind::Heim => {
                    out.heim_total.push(us(total));
                    out.heim_tcp.push(us(opened.tcp));
                    out.heim_tls.push(us(opened.tls));
                    out.heim_connect.push(us(opened.connect));
                    out.heim_echo.push(us(echoed));
                    out.heim_again.push(us(again));
                }
                Kind::Rathole(t) => {
                    if let Some((_, v)) = out.rathole.iter_mut().find(|(x, _)| *x == t) {
                        v.push(us(total));
                    }
                }
            }
        }
        if i > 0 && i % 500 == 0 {
            eprintln!("[latency] {i} of {} connects per path", warm + cli.connects);
        }
    }
    if let (Some((s0, c0)), Some((s1, c1))) = (before, read_metric()) {
        if c1 > c0 {
            out.heim_metric_us = Some((s1 - s0) / (c1 - c0) * 1e6);
        }
    }
    let p50 = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
    eprintln!(
        "[latency] p50: direct {:.0} µs, heim {:.0} µs (TLS {:.0} µs, CONNECT→200 {:.0} µs){}",
        p50(&out.direct),
        p50(&out.heim_total),
        p50(&out.heim_tls),
        p50(&out.heim_connect),
        out.rathole
            .iter()
            .map(|(t, v)| format!(", rathole {} {:.0} µs", t.name(), p50(v)))
            .collect::<String>()
    );
    Ok(out)
}

/// One tunnel's figures with many streams open.
#[derive(Clone, Debug, Default)]
struct Streams {
    asked: u32,
    ok: u32,
    /// The first few distinct errors.
    errors: Vec<String>,
    failed: u32,
    all_open: Duration,
    /// p50 / max of the per-stream open + echo times.
    each_p50: f64,
    each_max: f64,
    server_rss: (u64, u64),
    server_hwm: u64,
    agent_rss: (u64, u64),
    agent_hwm: u64,
    /// Streams that echoed again after the memory was read.
    still_ok: u32,
    /// heim_tunnel_streams_open while all were open (heim only).
    heim_open_metric: Option<f64>,
}

fn streams(
    n: u32,
    target: &Target,
    server: &[u32],
    agent: &[u32],
    admin: Option<SocketAddr>,
) -> Result<Streams> {
    let rt = client_rt()?;
    sleep(Duration::from_millis(500));
    let before = (peers::rss_kib(server)?, peers::rss_kib(agent)?);
    let start = Instant::now();
    let limit = Duration::from_secs(60);
    let (held, mut r) = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let t = target.clone();
            set.spawn(async move {
                let t0 = Instant::now();
                let msg = format!("stream {i:>10} says hello, echo");
                let r = tokio::time::timeout(limit, async {
                    let (mut s, _) = open(&t).await?;
                    echo_first(&mut s, msg.as_bytes()).await?;
                    anyhow::Ok(s)
                })
                .await
                .map_err(|_| anyhow!("not open and echoed within {limit:?}"))
                .and_then(|r| r);
                r.map(|s| (s, msg, t0.elapsed()))
            });
        }
        let mut held = Vec::new();
        let mut r = Streams {
            asked: n,
            ..Streams::default()
        };
        let mut each = Vec::new();
        // Bounded: n tasks, each bounded by `limit`.
        while let Some(j) = set.join_next().await {
            match j {
                Ok(Ok((s, msg, took))) => {
                    r.ok += 1;
                    each.push(took.as_secs_f64() * 1e6);
                    held.push((s, msg));
                }
                Ok(Err(e)) => {
                    r.failed += 1;
                    let e = format!("{e:#}");
                    if r.errors.len() < 3 && !r.errors.contains(&e) {
                        r.errors.push(e);
                    }
                }
                Err(e) => {
                    r.failed += 1;
                    let e = format!("task: {e}");
                    if r.errors.len() < 3 && !r.errors.contains(&e) {
                        r.errors.push(e);
                    }
                }
            }
        }
        r.all_open = start.elapsed();
        r.each_p50 = percentile(&each, 50.0).unwrap_or(f64::NAN);
        r.each_max = percentile(&each, 100.0).unwrap_or(f64::NAN);
        (held, r)
    });
    // Everything open: let the processes settle, then read their memory.
    sleep(Duration::from_millis(1000));
    r.server_rss = (before.0, peers::rss_kib(server)?);
    r.agent_rss = (before.1, peers::rss_kib(agent)?);
    r.server_hwm = peers::peak_rss_kib(server)?;
    r.agent_hwm = peers::peak_rss_kib(agent)?;
    if let Some(a) = admin {
        if let Ok((200, m)) = peers::http_get(a, "/metrics") {
            r.heim_open_metric = metric(&m, "heim_tunnel_streams_open");
        }
    }
    // Are they still alive? One more echo on each, all at once; then close them all.
    let still = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (mut s, msg) in held {
            set.spawn(async move {
                let ok = tokio::time::timeout(Duration::from_secs(30), async {
                    s.write_all(msg.as_bytes()).await?;
                    s.flush().await?;
                    read_back(&mut s, msg.as_bytes()).await
                })
                .await;
                matches!(ok, Ok(Ok(())))
            });
        }
        let mut still = 0;
        while let Some(j) = set.join_next().await {
            if matches!(j, Ok(true)) {
                still += 1;
            }
        }
        still
    });
    r.still_ok = still;
    drop(rt);
    sleep(Duration::from_millis(500));
    Ok(r)
}

/// One scp: its wall time.
fn scp_once(
    env: &Env<'_>,
    sshd: &Sshd,
    file: &Path,
    via: Option<&str>,
    log: &Path,
) -> Result<Duration> {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let mut c = Command::new("scp");
    c.args(["-q", "-F", "none", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(&sshd.key);
    let dest = match via {
        Some(url) => {
            c.arg("-o").arg(format!(
                "ProxyCommand={} proxy --proxy {url} --ca-file {} %h:%p",
                env.tunnel_bin.display(),
                env.cert.cert.display()
            ));
            format!("{user}@ssh.test:/dev/null")
        }
        None => {
            c.args(["-P", &sshd.addr.port().to_string()]);
            format!("{user}@127.0.0.1:/dev/null")
        }
    };
    c.arg(file).arg(dest);
    let err = fs::File::create(log).context("create the scp log")?;
    c.env("XDG_CONFIG_HOME", env.dir.join("xdg"))
        .env_remove("HEIM_TOKEN")
        .env_remove("HEIM_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let start = Instant::now();
    let mut child = c.spawn().context("start scp")?;
    // Bounded: 600 s.
    let limit = Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().context("wait for scp")? {
            let took = start.elapsed();
            ensure!(
                status.success(),
                "scp failed ({status}): {}",
                load::tail(&fs::read_to_string(log).unwrap_or_default(), 10)
            );
            return Ok(took);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("scp did not finish within {limit:?}");
        }
        sleep(Duration::from_millis(10));
    }
}

/// Both sides' scp figures.
#[derive(Default)]
struct Scp {
    mib: u32,
    direct: Vec<BulkRun>,
    heim: Vec<BulkRun>,
    cipher: String,
}

fn scp(env: &Env<'_>, sshd: &mut Sshd, tunnel: &mut Tunnel, tck: u64) -> Result<Scp> {
    let cli = env.cli;
    let file = env.dir.join("scp-blob");
    eprintln!("[scp] writing {} MiB of random bytes", cli.scp_mib);
    let ok = Command::new("head")
        .args([
            "-c",
            &(u64::from(cli.scp_mib) << 20).to_string(),
            "/dev/urandom",
        ])
        .stdout(fs::File::create(&file).context("create the scp file")?)
        .status()
        .context("run head")?
        .success();
    ensure!(ok, "head -c … /dev/urandom failed");
    let cipher = command_text(Command::new("ssh").args(["-G", "-F", "none", "127.0.0.1"]))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("ciphers "))
                .and_then(|c| c.split(',').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "OpenSSH's default".into());
    let mut out = Scp {
        mib: cli.scp_mib,
        cipher,
        ..Scp::default()
    };
    let url = tunnel.url();
    let (heim_pids, agent_pids) = tunnel.pids();
    let run = (|| -> Result<()> {
        // One discarded copy each: the page cache, sshd's first fork.
        for via in [None, Some(url.as_str())] {
            scp_once(env, sshd, &file, via, &env.dir.join("scp-warm.log"))?;
        }
        for round in 1..=cli.scp_rounds {
            for via in [None, Some(url.as_str())] {
                let meter = Meter::start(tck, &heim_pids, &agent_pids)?;
                let log = env.dir.join(format!("scp-{round}.log"));
                let took = scp_once(env, sshd, &file, via, &log)?;
                let cpu = meter.stop()?;
                let mib = f64::from(cli.scp_mib);
                let r = BulkRun {
                    mb_s: mib * MIB / took.as_secs_f64().max(1e-6) / 1e6,
                    mib,
                    cpu,
                };
                eprintln!(
                    "[scp] round {round}/{} {:12}: {:7.1} MB/s ({:.2} s), heim + agent CPU-µs/MiB {:.0} + {:.0}",
                    cli.scp_rounds,
                    if via.is_some() { "through heim" } else { "direct" },
                    r.mb_s,
                    took.as_secs_f64(),
                    cpu.server_s * 1e6 / mib,
                    cpu.agent_s * 1e6 / mib,
                );
                if via.is_some() {
                    out.heim.push(r);
                } else {
                    out.direct.push(r);
                }
            }
            tunnel.check_alive()?;
            sshd.proc.check_alive()?;
        }
        Ok(())
    })();
    let _ = fs::remove_file(&file);
    run?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The run.

/// What each part gave, or why it did not.
#[derive(Default)]
struct Results {
    bulk: Option<std::result::Result<Vec<BulkSeries>, String>>,
    latency: Option<std::result::Result<Latency, String>>,
    streams: Vec<(String, std::result::Result<Streams, String>)>,
    scp: Option<std::result::Result<Scp, String>>,
    /// rathole transports that could not run, and why.
    rathole_missing: Vec<(Transport, String)>,
}

struct Header {
    date: String,
    /// `/proc/loadavg`'s 1-minute figure before the run (other work on the machine shows here).
    load_before: String,
    command: String,
    cpu: String,
    nproc: usize,
    kernel: String,
    heim: String,
    tunnel: String,
    rathole: String,
}

fn run(cli: &Cli) -> Result<bool> {
    let mut parts: Vec<Part> = Vec::new();
    for p in &cli.parts {
        if !parts.contains(p) {
            parts.push(*p);
        }
    }
    let mut transports: Vec<Transport> = Vec::new();
    for t in &cli.rathole_transports {
        if !transports.contains(t) {
            transports.push(*t);
        }
    }
    ensure!(!parts.is_empty(), "no part selected");
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    ensure!(
        nproc >= 2,
        "BENCH.md pins the proxy to core 1 and the client to core 0: this needs ≥ 2 cores, found {nproc}"
    );
    let mut tools = vec![
        "taskset",
        "setpriv",
        "kill",
        "sha256sum",
        "lscpu",
        "getconf",
    ];
    if parts.contains(&Part::Scp) {
        tools.extend(["ssh", "scp", "ssh-keygen", "head"]);
        ensure!(
            Path::new("/usr/sbin/sshd").is_file(),
            "/usr/sbin/sshd not found: apt-get install openssh-server"
        );
    }
    for t in tools {
        ensure!(
            in_path(t),
            "`{t}` not found in PATH (util-linux, coreutils, procps, openssh-client)"
        );
    }
    let heim_bin = release_binary(cli.heim.as_deref(), "heim-proxy", "heim-proxy")?;
    let tunnel_bin = release_binary(cli.tunnel.as_deref(), "heim-tunnel", "heim-tunnel")?;
    let heim_v = command_text(Command::new(&heim_bin).arg("--version"))?;
    ensure!(
        heim_v.starts_with("heim-proxy"),
        "`{} --version` printed {heim_v:?}: a stub or broken build?",
        heim_bin.display()
    );
    let tunnel_v = command_text(Command::new(&tunnel_bin).arg("--version"))?;
    ensure!(
        tunnel_v.starts_with("heim-tunnel"),
        "`{} --version` printed {tunnel_v:?}: a stub or broken build?",
        tunnel_bin.display()
    );
    let built = |p: &Path, dirs: &[&str]| {
        let at = command_text(
            Command::new("date")
                .arg("-u")
                .arg("-r")
                .arg(p)
                .arg("+%Y-%m-%d %H:%M UTC"),
        )
        .unwrap_or_default();
        match newer_source(p, dirs) {
            Some(src) => {
                eprintln!(
                    "heim-bench-tunnel: warning: {} is older than {}; rebuild with \
                     `cargo build --release -p heim-proxy -p heim-tunnel`",
                    p.display(),
                    src.display()
                );
                format!("{at}, OLDER than {}", src.display())
            }
            None => at,
        }
    };
    let rathole = find_rathole(cli).and_then(|p| {
        // `rathole --version` prints "rathole" and then "Build Version: 0.5.0" among others.
        command_text(Command::new(&p).arg("--version"))
            .map(|v| {
                let version = v
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Build Version:"))
                    .map(|n| format!("rathole {}", n.trim()))
                    .unwrap_or_else(|| v.lines().next().unwrap_or("").trim().to_string());
                (p, version)
            })
            .map_err(|e| format!("does not run: {e:#}"))
    });
    let mut results = Results::default();
    if let Err(why) = &rathole {
        eprintln!("heim-bench-tunnel: rathole {why}: its rows say so");
        for t in &transports {
            results.rathole_missing.push((*t, why.clone()));
        }
    }
    let header = Header {
        date: command_text(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC"))
            .unwrap_or_default(),
        command: command_line(),
        load_before: load_average(),
        cpu: cpu_model(),
        nproc,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        heim: format!(
            "{heim_v} (built {}; {})",
            built(&heim_bin, &["proxy/src", "tunnel-wire/src"]),
            tree_state()
        ),
        tunnel: format!(
            "{tunnel_v} (built {})",
            built(&tunnel_bin, &["tunnel-agent/src", "tunnel-wire/src"])
        ),
        rathole: match &rathole {
            Ok((p, v)) => format!("{v} ({})", p.display()),
            Err(why) => format!("rathole {why}"),
        },
    };

    // Everything below runs on core 0 unless started elsewhere.
    pin_process("0")?;
    raise_nofile(u64::from(cli.streams) * 4 + 1024)?;
    let tck = clock_ticks();
    // Declared first so it is dropped last, after every process that uses it.
    let tmp = TempDir::new(cli.keep_scratch)?;
    let dir = tmp.0.as_path();
    let cert = peers::write_cert(dir, "ecdsa", false)?;
    let client = client_tls(&cert.cert)?;
    let service = start_service()?;
    let mut sshd = if parts.contains(&Part::Scp) {
        Some(start_sshd(dir)?)
    } else {
        None
    };
    let env = Env {
        cli,
        dir,
        cert: &cert,
        heim_bin: &heim_bin,
        tunnel_bin: &tunnel_bin,
        service,
        ssh: sshd.as_ref().map(|s| s.addr),
    };
    eprintln!(
        "heim-bench-tunnel: service on {service} (core 0), scratch {}",
        dir.display()
    );

    let rt = client_rt()?;
    if parts.contains(&Part::Bulk) || parts.contains(&Part::Latency) || parts.contains(&Part::Scp) {
        let mut tunnel = start_tunnel(&env, "main", &client)?;
        let mut ratholes = Vec::new();
        if let Ok((bin, _)) = &rathole {
            for t in &transports {
                match start_rathole(&env, bin, *t, &format!("main-{}", t.name())) {
                    Ok(r) => ratholes.push(r),
                    Err(e) => {
                        eprintln!("heim-bench-tunnel: rathole ({}): {e:#}", t.name());
                        results
                            .rathole_missing
                            .push((*t, format!("could not run: {e:#}")));
                    }
                }
            }
        }
        let (heim_pids, agent_pids) = tunnel.pids();
        let mut paths = vec![
            Way {
                label: "direct loopback TCP".into(),
                target: Target::Tcp(service),
                server: Vec::new(),
                agent: Vec::new(),
                kind: Kind::Direct,
            },
            Way {
                label: "heim (TLS → heim-proxy → agent, TLS link)".into(),
                target: tunnel.target.clone(),
                server: heim_pids,
                agent: agent_pids,
                kind: Kind::Heim,
            },
        ];
        for r in ratholes.iter_mut() {
            let (s, a) = r.pids();
            paths.push(Way {
                label: r.transport.label().into(),
                target: r.target.clone(),
                server: s,
                agent: a,
                kind: Kind::Rathole(r.transport),
            });
        }
        let admin = tunnel.admin;
        let mut alive = || -> Result<()> {
            tunnel.check_alive()?;
            for r in ratholes.iter_mut() {
                r.server.check_alive()?;
                r.client.check_alive()?;
            }
            Ok(())
        };
        if parts.contains(&Part::Bulk) {
            let r = bulk(cli, &rt, &paths, tck, &mut alive);
            if let Err(e) = &r {
                eprintln!("[bulk] failed: {e:#}");
            }
            results.bulk = Some(r.map_err(|e| format!("{e:#}")));
            alive()?;
        }
        if parts.contains(&Part::Latency) {
            let r = latency(cli, &rt, &paths, admin);
            if let Err(e) = &r {
                eprintln!("[latency] failed: {e:#}");
            }
            results.latency = Some(r.map_err(|e| format!("{e:#}")));
            alive()?;
        }
        drop(ratholes);
        if let Some(sshd) = sshd.as_mut() {
            let r = scp(&env, sshd, &mut tunnel, tck);
            if let Err(e) = &r {
                eprintln!("[scp] failed: {e:#}\nheim: {}", tunnel.heim.log_tail());
            }
            results.scp = Some(r.map_err(|e| format!("{e:#}")));
        }
        // heim and its agent stop here, before the streams part starts fresh ones.
    }

    if parts.contains(&Part::Streams) {
        let n = cli.streams;
        let r = (|| -> Result<Streams> {
            let mut t = start_tunnel(&env, "streams", &client)?;
            let (s, a) = t.pids();
            let r = streams(n, &t.target, &s, &a, Some(t.admin))?;
            t.check_alive()?;
            Ok(r)
        })();
        report_streams("heim", &r);
        results.streams.push((
            "heim (1 agent connection)".into(),
            r.map_err(|e| format!("{e:#}")),
        ));
        if let Ok((bin, _)) = &rathole {
            for t in &transports {
                if *t != Transport::Tls {
                    continue;
                }
                let r = (|| -> Result<Streams> {
                    let mut rh = start_rathole(&env, bin, *t, "streams")?;
                    let (s, a) = rh.pids();
                    let r = streams(n, &rh.target, &s, &a, None)?;
                    rh.server.check_alive()?;
                    rh.client.check_alive()?;
                    Ok(r)
                })();
                report_streams(t.label(), &r);
                results
                    .streams
                    .push((t.label().into(), r.map_err(|e| format!("{e:#}"))));
            }
        }
    }
    drop(sshd);

    let md = render(cli, &header, &results);
    println!("{md}");
    if let Some(out) = &cli.out {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .with_context(|| format!("open {}", out.display()))?;
        writeln!(f, "{md}").with_context(|| format!("append to {}", out.display()))?;
        eprintln!("heim-bench-tunnel: appended to {}", out.display());
    }
    let failed = matches!(results.bulk, Some(Err(_)))
        || matches!(results.latency, Some(Err(_)))
        || matches!(results.scp, Some(Err(_)))
        || results.streams.iter().any(|(_, r)| r.is_err());
    Ok(!failed)
}

fn report_streams(name: &str, r: &Result<Streams>) {
    match r {
        Ok(s) => eprintln!(
            "[streams] {name}: {}/{} open and echoed in {:.2} s; server RSS {} → {} KiB, agent {} → {} KiB; {} still echo",
            s.ok,
            s.asked,
            s.all_open.as_secs_f64(),
            s.server_rss.0,
            s.server_rss.1,
            s.agent_rss.0,
            s.agent_rss.1,
            s.still_ok
        ),
        Err(e) => eprintln!("[streams] {name}: failed: {e:#}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn range(values: &[f64], digits: usize) -> String {
    match summary(values) {
        Some((m, lo, hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
        None => "—".into(),
    }
}

fn ms(us: f64) -> String {
    if us.is_nan() {
        "—".into()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn render(cli: &Cli, h: &Header, r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n### tunnels (heim-bench-tunnel) — {}\n", h.date);
    let _ = writeln!(
        md,
        "CPU: `{}` (lscpu model name), {} cores, kernel {}. {}; {}; {}.\n",
        h.cpu, h.nproc, h.kernel, h.heim, h.tunnel, h.rathole
    );
    let _ = writeln!(md, "Command: `{}`\n", h.command);
    let _ = writeln!(
        md,
        "Load average (1 min) before the run {}, after it {}.\n",
        h.load_before,
        load_average()
    );
    let agent_core = &cli.agent_core;
    let _ = writeln!(
        md,
        "Pinning: heim-proxy (`workers = 1`) and the rathole server on core 1 (`taskset -c 1`); \
         `heim-tunnel agent` (`connections = 1`) and the rathole client on core {agent_core}; \
         heim-bench (the client and the local sink/source/echo service), sshd, scp and its \
         ProxyCommand on core 0. heim's client leg: TLS 1.3, X25519, ECDSA P-256, a full \
         handshake per stream, `CONNECT sink.test:1` over HTTP/1.1; its agent leg: the agent's \
         TLS connection to heim carrying HTTP/2 `CONNECT` streams. rathole's visitor leg is plain \
         TCP (rathole encrypts only between its server and client); its TLS transport is \
         native-tls (OpenSSL), one data-channel connection per visitor connection.\n"
    );

    // Bulk.
    match &r.bulk {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(md, "**Bulk throughput: failed**: {e}\n");
        }
        Some(Ok(series)) => {
            let _ = writeln!(
                md,
                "#### Bulk throughput, one stream, {} alternating rounds of ~{} s per path and direction\n",
                cli.rounds, cli.duration
            );
            let _ = writeln!(
                md,
                "MB/s = 10⁶ bytes/s, end to end (upload: until the sink has counted every byte). \
                 CPU-µs/MiB: Δ(utime+stime) of the tunnel's server side (heim-proxy / rathole \
                 server) and agent side (heim-tunnel agent / rathole client) per MiB moved. Core \
                 busy: % of each core over the run (`/proc/stat`).\n"
            );
            let _ = writeln!(
                md,
                "| direction | path | MiB per run | MB/s median (min–max) | ÷ direct | heim ÷ this | CPU-µs/MiB server side | CPU-µs/MiB agent side | core 0 / core 1 busy |\n\
                 | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            );
            for dir in [Dir::Up, Dir::Down] {
                let of = |k: Kind| series.iter().find(|s| s.dir == dir && s.kind == k);
                let direct = of(Kind::Direct).and_then(|s| median(&s.mb_s()));
                let heim = of(Kind::Heim).and_then(|s| median(&s.mb_s()));
                for s in series.iter().filter(|s| s.dir == dir) {
                    let m = median(&s.mb_s());
                    let cpu = |v: Vec<f64>| {
                        if s.kind == Kind::Direct {
                            "—".to_string()
                        } else {
                            range(&v, 0)
                        }
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} % / {:.0} % |",
                        dir.name(),
                        s.label,
                        s.bytes >> 20,
                        range(&s.mb_s(), 1),
                        if s.kind == Kind::Direct {
                            "1×".into()
                        } else {
                            ratio(m, direct)
                        },
                        if s.kind == Kind::Heim {
                            "—".into()
                        } else {
                            ratio(heim, m)
                        },
                        cpu(s.server_us_per_mib()),
                        cpu(s.agent_us_per_mib()),
                        median(&s.core(0)).unwrap_or(f64::NAN),
                        median(&s.core(1)).unwrap_or(f64::NAN),
                    );
                }
                for (t, why) in &r.rathole_missing {
                    let _ = writeln!(
                        md,
                        "| {} | {} | — | {why} | — | — | — | — | — |",
                        dir.name(),
                        t.label()
                    );
                }
            }
            md.push('\n');
        }
    }

    // Latency.
    match &r.latency {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(md, "**Connect latency: failed**: {e}\n");
        }
        Some(Ok(l)) => {
            let _ = writeln!(
                md,
                "#### Connect latency of a new stream, {} sequential connects per path (alternating), each echoing 16 bytes\n",
                l.connects
            );
            let _ = writeln!(
                md,
                "| path: what is timed | p50 | p99 | added p50 over direct |\n| --- | --- | --- | --- |"
            );
            let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or(f64::NAN);
            let direct = p(&l.direct, 50.0);
            let row = |md: &mut String, what: &str, v: &[f64], added: bool| {
                let _ = writeln!(
                    md,
                    "| {what} | {} | {} | {} |",
                    ms(p(v, 50.0)),
                    ms(p(v, 99.0)),
                    if added {
                        ms(p(v, 50.0) - direct)
                    } else {
                        "".into()
                    }
                );
            };
            row(
                &mut md,
                "direct: TCP connect → first echoed byte",
                &l.direct,
                false,
            );
            row(
                &mut md,
                "heim: TCP connect → TLS handshake → CONNECT → 200 → first echoed byte",
                &l.heim_total,
                true,
            );
            row(
                &mut md,
                "… of which TCP connect to heim",
                &l.heim_tcp,
                false,
            );
            row(
                &mut md,
                "… of which the TLS 1.3 handshake",
                &l.heim_tls,
                false,
            );
            row(
                &mut md,
                "… of which CONNECT sent → 200 received (heim's part: route, h2 stream to the agent, the agent dials the service)",
                &l.heim_connect,
                false,
            );
            row(
                &mut md,
                "… of which the first echo on the open stream",
                &l.heim_echo,
                false,
            );
            row(
                &mut md,
                "heim: a second echo on the same open stream",
                &l.heim_again,
                false,
            );
            row(
                &mut md,
                "direct: a second echo on the same open connection",
                &l.direct_again,
                false,
            );
            for (t, v) in &l.rathole {
                row(
                    &mut md,
                    &format!("{}: TCP connect → first echoed byte", t.label()),
                    v,
                    true,
                );
            }
            if let Some(m) = l.heim_metric_us {
                let _ = writeln!(
                    md,
                    "\nheim's own `heim_tunnel_connect_seconds` (CONNECT → the agent's 200, inside heim) over the measured connects: mean {}.",
                    ms(m)
                );
            }
            md.push('\n');
        }
    }

    // Streams.
    if !r.streams.is_empty() {
        let _ = writeln!(
            md,
            "#### {} streams opened at once, each echoing a message (fresh processes)\n",
            cli.streams
        );
        let names: Vec<&str> = r.streams.iter().map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(
            md,
            "| | {} |\n| --- |{}",
            names.join(" | "),
            " --- |".repeat(names.len())
        );
        let row = |md: &mut String, what: &str, f: &dyn Fn(&Streams) -> String| {
            let cells: Vec<String> = r
                .streams
                .iter()
                .map(|(_, s)| match s {
                    Ok(s) => f(s),
                    Err(e) => format!("failed: {e}"),
                })
                .collect();
            let _ = writeln!(md, "| {what} | {} |", cells.join(" | "));
        };
        row(&mut md, "open and echoed / asked", &|s| {
            format!("{} / {}", s.ok, s.asked)
        });
        row(&mut md, "time until all echoed", &|s| {
            format!("{:.2} s", s.all_open.as_secs_f64())
        });
        row(&mut md, "per stream, open + echo: p50 / max", &|s| {
            format!("{} / {}", ms(s.each_p50), ms(s.each_max))
        });
        let per = |(a, b): (u64, u64), n: u32| {
            if n == 0 {
                return format!("{} → {} (no stream open)", mib(a), mib(b));
            }
            format!(
                "{} → {} ({:.1} KiB per open stream)",
                mib(a),
                mib(b),
                b.saturating_sub(a) as f64 / f64::from(n)
            )
        };
        row(
            &mut md,
            "server side (heim-proxy / rathole server) VmRSS: before → all open",
            &|s| per(s.server_rss, s.ok),
        );
        row(&mut md, "server side VmHWM", &|s| mib(s.server_hwm));
        row(
            &mut md,
            "agent side (heim-tunnel agent / rathole client) VmRSS: before → all open",
            &|s| per(s.agent_rss, s.ok),
        );
        row(&mut md, "agent side VmHWM", &|s| mib(s.agent_hwm));
        row(&mut md, "still echoing after the reading", &|s| {
            s.still_ok.to_string()
        });
        row(&mut md, "errors (first few distinct)", &|s| {
            if s.errors.is_empty() {
                "none".into()
            } else {
                format!("{}: {}", s.failed, s.errors.join("; "))
            }
        });
        if let Some((_, Ok(s))) = r.streams.first() {
            if let Some(m) = s.heim_open_metric {
                let _ = writeln!(
                    md,
                    "\nheim's `heim_tunnel_streams_open` with all open: {m:.0}."
                );
            }
        }
        md.push('\n');
    }

    // scp.
    match &r.scp {
        None => {}
        Some(Err(e)) => {
            let _ = writeln!(md, "**scp: failed**: {e}\n");
        }
        Some(Ok(s)) => {
            let _ = writeln!(
                md,
                "#### scp of {} MiB (random bytes, to /dev/null on the remote side), {} alternating rounds; OpenSSH cipher {}\n",
                s.mib, cli.scp_rounds, s.cipher
            );
            let _ = writeln!(
                md,
                "| path | MB/s median (min–max) | ÷ direct | CPU-µs/MiB heim-proxy | CPU-µs/MiB agent | core 0 / core 1 busy |\n\
                 | --- | --- | --- | --- | --- | --- |"
            );
            let rates = |v: &[BulkRun]| v.iter().map(|r| r.mb_s).collect::<Vec<_>>();
            let direct = median(&rates(&s.direct));
            for (name, v, tunnelled) in [
                ("scp straight to sshd on 127.0.0.1", &s.direct, false),
                (
                    "scp through heim (`ProxyCommand=heim-tunnel proxy`) → agent → sshd",
                    &s.heim,
                    true,
                ),
            ] {
                let cpu = |f: &dyn Fn(&Cpu) -> f64| {
                    if tunnelled {
                        range(
                            &v.iter()
                                .map(|r| f(&r.cpu) * 1e6 / r.mib)
                                .collect::<Vec<_>>(),
                            0,
                        )
                    } else {
                        "—".into()
                    }
                };
                let core = |i: usize| {
                    median(&v.iter().filter_map(|r| r.cpu.core[i]).collect::<Vec<_>>())
                        .unwrap_or(f64::NAN)
                };
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {:.0} % / {:.0} % |",
                    range(&rates(v), 1),
                    ratio(median(&rates(v)), direct),
                    cpu(&|c| c.server_s),
                    cpu(&|c| c.agent_s),
                    core(0),
                    core(1),
                );
            }
            md.push('\n');
        }
    }

    // Targets.
    let _ = writeln!(
        md,
        "Against the issue's targets (figures from the tables above):"
    );
    if let Some(Ok(series)) = &r.bulk {
        for dir in [Dir::Up, Dir::Down] {
            let of = |k: Kind| {
                series
                    .iter()
                    .find(|s| s.dir == dir && s.kind == k)
                    .and_then(|s| median(&s.mb_s()))
            };
            let (d, h) = (of(Kind::Direct), of(Kind::Heim));
            if let (Some(d), Some(h)) = (d, h) {
                let x = h / d;
                let _ = writeln!(
                    md,
                    "* throughput ≥ 0.8× direct loopback, {}: **{}**, {x:.2}× ({h:.0} vs {d:.0} MB/s)",
                    dir.name(),
                    if x >= 0.8 { "met" } else { "missed" }
                );
            }
            match of(Kind::Rathole(Transport::Tls)) {
                Some(p) if h.is_some() => {
                    let h = h.unwrap_or(0.0);
                    let x = h / p;
                    let _ = writeln!(
                        md,
                        "* throughput ≥ 1× rathole (TLS), {}: **{}**, {x:.2}× ({h:.0} vs {p:.0} MB/s)",
                        dir.name(),
                        if x >= 1.0 { "met" } else { "missed" }
                    );
                }
                _ => {
                    let _ = writeln!(
                        md,
                        "* throughput ≥ 1× rathole (TLS), {}: not measured (rathole did not run)",
                        dir.name()
                    );
                }
            }
        }
    }
    if let Some(Ok(l)) = &r.latency {
        let p50 = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
        let added = p50(&l.heim_total) - p50(&l.direct);
        let _ = writeln!(
            md,
            "* added p50 connect latency ≤ 1 ms: **{}**, {} added in all ({} of it the TLS handshake); heim's part, CONNECT → 200 on the open TLS connection: p50 {} (**{}**)",
            if added <= 1000.0 { "met" } else { "missed" },
            ms(added),
            ms(p50(&l.heim_tls)),
            ms(p50(&l.heim_connect)),
            if p50(&l.heim_connect) <= 1000.0 {
                "≤ 1 ms"
            } else {
                "> 1 ms"
            }
        );
    }
    md
}
