//! The `idle` scenario: memory per idle TLS keep-alive connection.
//!
//! BENCH.md's target is ≤ 16 KiB of RSS per idle TLS keep-alive connection. No stock tool holds
//! thousands of connections open and idle, so heim-bench is the client here: one thread, pinned
//! to core 0 like every load generator, with a current-thread tokio runtime and rustls
//! (TLS 1.3 only, X25519, ALPN http/1.1, no resumption: every connection is a full handshake, as
//! with h2load). Against one proxy it
//!
//! 1. opens a few connections and closes them (one-time TLS and pool set-up is then in the base),
//!    and reads the proxy's `VmRSS` (nginx: its workers, summed);
//! 2. opens N connections, at most 64 in progress at a time (so both proxies keep a similar,
//!    small upstream pool), and on each either sends one small `GET /` and reads the whole
//!    response ([`IdleMode::Request`]: a keep-alive connection between requests, the common idle
//!    state) or does nothing after the handshake ([`IdleMode::Handshake`]);
//! 3. leaves them all open and idle for at least 3 s, polls `VmRSS` every 200 ms until it is
//!    stable (bounded), and reports (idle RSS − base RSS) ÷ N;
//! 4. fails if the proxy closed any of them before the measurement ended, then closes them all.
//!
//! Every wait is bounded; all traffic is on 127.0.0.1.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::peers;
use crate::report::IdleSample;

/// The state each idle connection is left in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleMode {
    /// TLS handshake, one `GET /`, the whole response read: keep-alive between requests.
    Request,
    /// TLS handshake only, no request yet.
    Handshake,
}

impl IdleMode {
    pub const ALL: [IdleMode; 2] = [IdleMode::Request, IdleMode::Handshake];

    pub fn name(self) -> &'static str {
        match self {
            IdleMode::Request => "request",
            IdleMode::Handshake => "handshake",
        }
    }

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            IdleMode::Request => "after 1 request",
            IdleMode::Handshake => "handshake only",
        }
    }
}

impl fmt::Display for IdleMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Connections opened and closed before the base RSS is read.
const PRIME: u32 = 32;
/// Connections in progress (connect, handshake, request) at a time.
const OPENING: usize = 64;
/// RSS is read no sooner than this after the last connection opened: real idle connections are
/// idle for seconds, and a proxy may release per-connection memory after a moment of idleness.
const MIN_IDLE: Duration = Duration::from_secs(3);
/// RSS polling: interval, the readings that must agree, how close, and for how long at most.
const POLL: Duration = Duration::from_millis(200);
const STABLE_READINGS: usize = 5;
const STABLE_KIB: u64 = 64;
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// The request sent on each connection in [`IdleMode::Request`].
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: heim-bench\r\n\r\n";

/// Measures one proxy listening for TLS on `addr` (certificate `cert`, whose RSS is the sum over
/// `rss_pids`): `conns` idle connections left in `mode`.
pub fn measure(
    addr: SocketAddr,
    cert: &Path,
    rss_pids: &[u32],
    conns: u32,
    mode: IdleMode,
) -> Result<IdleSample> {
    let connector = TlsConnector::from(client_config(cert)?);
    let pids = rss_pids.to_vec();
    on_client_core("idle", move || async move {
        run(addr, connector, &pids, conns, mode).await
    })
}

/// Runs `client` on a thread of its own, pinned to core 0 (the load
/// generator's), on a current-thread runtime, and waits for its result.
pub fn on_client_core<T, F, Fut>(name: &str, client: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    std::thread::Builder::new()
        .name(format!("heim-bench-{name}"))
        .spawn(move || -> Result<T> {
            pin_this_thread("0")?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("build the client runtime")?;
            rt.block_on(client())
        })
        .with_context(|| format!("start the {name} client thread"))?
        .join()
        .map_err(|_| anyhow!("the {name} client thread panicked"))?
}

async fn run(
    addr: SocketAddr,
    connector: TlsConnector,
    pids: &[u32],
    conns: u32,
    mode: IdleMode,
) -> Result<IdleSample> {
    let prime = Held::open(addr, &connector, PRIME, mode)
        .await
        .context("priming connections")?;
    prime.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kib = peers::rss_kib(pids)?;

    let held = Held::open(addr, &connector, conns, mode).await?;
    let ready = Instant::now();
    let mut readings: Vec<u64> = Vec::new();
    let stable = loop {
        readings.push(peers::rss_kib(pids)?);
        if let Some(last) = readings
            .len()
            .checked_sub(STABLE_READINGS)
            .map(|i| &readings[i..])
        {
            let lo = last.iter().min().copied().unwrap_or(0);
            let hi = last.iter().max().copied().unwrap_or(0);
            if hi - lo <= STABLE_KIB && ready.elapsed() >= MIN_IDLE {
                break true;
            }
        }
        if ready.elapsed() >= SETTLE_LIMIT {
            break false;
        }
        tokio::time::sleep(POLL).await;
    };
    let settle_secs = ready.elapsed().as_secs_f64();
    let idle_kib = *readings.last().context("no RSS reading")?;
    let closed = held.closed_early.load(Relaxed);
    held.close().await;
    ensure!(
        closed == 0,
        "the proxy closed {closed} of {conns} idle connections before the measurement ended"
    );
    Ok(IdleSample {
        mode,
        conns,
        before_kib,
        idle_kib,
        settle_secs,
        stable,
    })
}

/// Open connections, each held by a task until [`Held::close`].
struct Held {
    tasks: JoinSet<()>,
    close: watch::Sender<bool>,
    /// Connections the server ended while they were meant to be idle.
    closed_early: Arc<AtomicU32>,
}

impl Held {
    /// Opens `n` connections left in `mode`; fails if any fails (bounded: 60 s + n/50 s).
    async fn open(
        addr: SocketAddr,
        connector: &TlsConnector,
        n: u32,
        mode: IdleMode,
    ) -> Result<Held> {
        let (close, close_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(OPENING));
        let ready = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU32::new(0));
        let first_error: Arc<Mutex<Option<String>>> = Arc::default();
        let closed_early = Arc::new(AtomicU32::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let connector = connector.clone();
            let permits = permits.clone();
            let mut close_rx = close_rx.clone();
            let (ready, failed) = (ready.clone(), failed.clone());
            let (first_error, closed_early) = (first_error.clone(), closed_early.clone());
            tasks.spawn(async move {
                let opened = {
                    let Ok(_permit) = permits.acquire().await else {
                        return;
                    };
                    tokio::time::timeout(Duration::from_secs(10), connect(addr, connector, mode))
                        .await
                        .unwrap_or_else(|_| Err(anyhow!("connect, handshake and request: 10 s")))
                };
                let mut tls = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        failed.fetch_add(1, Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert_with(|| format!("{e:#}"));
                        return;
                    }
                };
                ready.fetch_add(1, Relaxed);
                // Idle: a read that ends (EOF, data, error) means the server gave up on it.
                let mut byte = [0u8; 1];
                tokio::select! {
                    _ = close_rx.wait_for(|c| *c) => {}
                    _ = tls.read(&mut byte) => {
                        closed_early.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        let held = Held {
            tasks,
            close,
            closed_early,
        };
        let limit = Duration::from_secs(60 + u64::from(n) / 50);
        let start = Instant::now();
        loop {
            let (r, f) = (ready.load(Relaxed), failed.load(Relaxed));
            if f > 0 {
                let e = first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default();
                held.close().await;
                bail!("{f} of {n} connections to {addr} failed (and {r} were opened); first: {e}");
            }
            if r == n {
                return Ok(held);
            }
            if start.elapsed() > limit {
                held.close().await;
                bail!("only {r} of {n} connections to {addr} opened in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every connection (bounded: 10 s, then the tasks are aborted).
    async fn close(mut self) {
        let _ = self.close.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// One connection: TCP, the TLS handshake and, in [`IdleMode::Request`], one request and its
/// whole response.
async fn connect(
    addr: SocketAddr,
    connector: TlsConnector,
    mode: IdleMode,
) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let name = ServerName::try_from("bench.test").context("server name")?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    if mode == IdleMode::Request {
        tls.write_all(REQUEST).await.context("send the request")?;
        tls.flush().await.context("send the request")?;
        read_response(&mut tls).await?;
    }
    Ok(tls)
}

/// Reads one keep-alive response (200, `Content-Length` or chunked) to its end.
async fn read_response(tls: &mut TlsStream<TcpStream>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).await.context("read the response")?;
        ensure!(n > 0, "the connection closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        ensure!(buf.len() <= 1 << 16, "a response over 64 KiB");
        if response_complete(&buf)? {
            return Ok(());
        }
    }
}

/// Whether `buf` holds a whole keep-alive 200 response; an error if it cannot be one.
pub fn response_complete(buf: &[u8]) -> Result<bool> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.starts_with("http/1.1 200"),
        "answered {status:?}, not HTTP/1.1 200"
    );
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
    };
    ensure!(
        header("connection").as_deref() != Some("close"),
        "the response closes the connection (Connection: close)"
    );
    let body = &buf[end + 4..];
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .with_context(|| format!("Content-Length {len:?}"))?;
        return Ok(body.len() >= len);
    }
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return Ok(body.ends_with(b"0\r\n\r\n"));
    }
    bail!("a response without Content-Length or chunked encoding cannot be kept alive")
}

/// The client's TLS: TLS 1.3, X25519, ALPN http/1.1, the bench certificate as the only root,
/// no session resumption.
fn client_config(cert: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(cert).with_context(|| format!("read {}", cert.display()))?
    {
        roots
            .add(c.with_context(|| format!("parse {}", cert.display()))?)
            .context("trust the bench certificate")?;
    }
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 client config")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Pins the calling thread (only it) to `cpus` with `taskset -p`, by its thread id from
/// `/proc/thread-self` (std has no sched_setaffinity, and unsafe is forbidden).
pub fn pin_this_thread(cpus: &str) -> Result<()> {
    let link = std::fs::read_link("/proc/thread-self").context("read /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|t| t.to_str())
        .context("no thread id in /proc/thread-self")?
        .to_string();
    let status = Command::new("taskset")
        .args(["-p", "-c", cpus, &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run taskset")?;
    ensure!(
        status.success(),
        "taskset -p -c {cpus} {tid} failed ({status})"
    );
    Ok(())
}

/// Raises this process's `RLIMIT_NOFILE` to at least `need`, with `prlimit` (util-linux; std has
/// no setrlimit). The proxies and the backend started afterwards inherit it.
pub fn raise_nofile(need: u64) -> Result<()> {
    let read = || -> Result<(u64, u64)> {
        let text =
            std::fs::read_to_string("/proc/self/limits").context("read /proc/self/limits")?;
        nofile_limits(&text).context("no \"Max open files\" in /proc/self/limits")
    };
    let (soft, hard) = read()?;
    if soft >= need {
        return Ok(());
    }
    let pid = std::process::id().to_string();
    let arg = format!("--nofile={need}:{}", hard.max(need));
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &arg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run prlimit")?;
    let (soft, hard) = read()?;
    ensure!(
        status.success() && soft >= need,
        "the idle scenario needs {need} open files, and `prlimit --pid {pid} {arg}` left the limit \
         at {soft} (hard {hard}): raise it with `ulimit -n {need}`, or pass fewer --idle-connections"
    );
    Ok(())
}

/// (soft, hard) from `/proc/PID/limits`' "Max open files" line ("unlimited" = `u64::MAX`).
pub fn nofile_limits(text: &str) -> Option<(u64, u64)> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut f = rest.split_whitespace().map(|v| match v {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    });
    Some((f.next()??, f.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\n\r\nhello world\n";
        assert!(response_complete(ok).unwrap());
        assert!(!response_complete(&ok[..ok.len() - 1]).unwrap());
        assert!(!response_complete(&ok[..20]).unwrap());
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nc\r\nhello world\n\r\n0\r\n\r\n";
        assert!(response_complete(chunked).unwrap());
        assert!(!response_complete(&chunked[..chunked.len() - 2]).unwrap());
        assert!(response_complete(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_err());
        assert!(response_complete(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").is_err());
        assert!(response_complete(b"HTTP/1.1 200 OK\r\n\r\nhello").is_err());
    }

    #[test]
    fn limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max cpu time              unlimited            unlimited            seconds\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(nofile_limits(text), Some((1024, 524_288)));
        let unl = text.replace("1024                 524288", "unlimited unlimited");
        assert_eq!(nofile_limits(&unl), Some((u64::MAX, u64::MAX)));
        assert_eq!(nofile_limits("nothing"), None);
    }
}
