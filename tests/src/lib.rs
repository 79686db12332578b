//! heim-e2e: the harness for end-to-end tests that drive the real
//! `heim-proxy` binary over real TLS against real upstream servers.
//!
//! * [`Pki`] makes a CA and leaf certificates (rcgen); clients verify
//!   heim's certificate against that CA like any browser would.
//! * [`Heim`] writes a config, starts the binary on port 0, reads the bound
//!   addresses from its `listening` log line and waits on `/readyz`.
//! * [`upstream`] holds real servers: HTTP/1.1, h2c and WebSocket echo.
//! * [`Client`] speaks HTTP/1.1 or HTTP/2 over rustls with a chosen SNI.
//!
//! The binary is found in the workspace's `target/{debug,release}` (or
//! `HEIM_PROXY_BIN`); `tests/run` builds it first.

pub mod cloudflare;
pub mod github;
pub mod kube;
pub mod named;
pub mod pebble;
pub mod ssh;
pub mod upstream;
pub mod web;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Body = Full<Bytes>;

/// A test CA and the certificates it signs.
pub struct Pki {
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    pub ca_der: CertificateDer<'static>,
    /// The same CA certificate as PEM, for configs that take a file.
    pub ca_pem: String,
    pub dir: PathBuf,
}

impl Pki {
    /// A fresh CA; files go to `dir`.
    pub fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "heim test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = params.clone().self_signed(&ca_key).expect("ca cert");
        Pki {
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            ca_params: params,
            ca_key,
            dir: dir.to_path_buf(),
        }
    }

    /// Writes `<stem>.pem` and `<stem>-key.pem` for `names`, signed by the CA;
    /// returns the certificate's DER.
    pub fn leaf(&self, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let ca = self
            .ca_params
            .clone()
            .self_signed(&self.ca_key)
            .expect("ca");
        let cert = params
            .signed_by(&key, &ca, &self.ca_key)
            .expect("sign leaf");
        std::fs::write(self.dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
        std::fs::write(
            self.dir.join(format!("{stem}-key.pem")),
            key.serialize_pem(),
        )
        .expect("write key");
        cert.der().clone()
    }
}

/// Serves HTTP/1.1 on a fresh 127.0.0.1 port, each request answered by
/// `answer`, until the task is aborted: the body of the API doubles
/// (`github`, `cloudflare`).
pub async fn serve_http1<F, Fut>(answer: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A running `heim-proxy`, killed on drop.
pub struct Heim {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// The `heim-proxy` binary under test.
pub fn heim_binary() -> PathBuf {
    binary("heim-proxy", "HEIM_PROXY_BIN")
}

/// The `heim-ingress` binary under test.
pub fn ingress_binary() -> PathBuf {
    binary("heim-ingress", "HEIM_INGRESS_BIN")
}

/// The `heim-tunnel` binary under test.
pub fn tunnel_binary() -> PathBuf {
    binary("heim-tunnel", "HEIM_TUNNEL_BIN")
}

fn binary(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    for profile in ["debug", "release"] {
        let p = root.join("target").join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not built: run `cargo build -p {name}` (tests/run does) or set {env}");
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("heim-e2e-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

impl Heim {
    /// Starts heim with `config` (TOML written to `dir/heim.toml`) and waits
    /// until `/readyz` answers 200. Listen addresses in the config should use
    /// port 0; the real ones are read from the log.
    pub fn start(dir: &Path, config: &str) -> anyhow::Result<Heim> {
        let path = dir.join("heim.toml");
        std::fs::write(&path, config)?;
        let heim = Self::spawn(Command::new(heim_binary()).arg("--config").arg(&path), dir)?;
        heim.wait_ready()?;
        Ok(heim)
    }

    /// Starts `heim-ingress` with `args`; returns once it listens (not
    /// once it is ready: see [`Heim::wait_ready`]).
    pub fn start_ingress(dir: &Path, args: &[&str]) -> anyhow::Result<Heim> {
        Self::spawn(Command::new(ingress_binary()).args(args), dir)
    }

    /// Runs `cmd` (heim-proxy or heim-ingress), gathers its logs, and reads
    /// its addresses from the `listening` line.
    fn spawn(cmd: &mut Command, dir: &Path) -> anyhow::Result<Heim> {
        let path = dir.join("heim.toml");
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn heim")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().expect("logs").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("\"listening\"") => break line,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    bail!(
                        "heim did not log `listening`; logs:\n{}",
                        logs.lock().expect("logs").join("\n")
                    );
                }
            }
        };
        let v: serde_json::Value = serde_json::from_str(&listening)?;
        let addr = |k: &str| {
            v.get(k)
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse::<SocketAddr>().ok())
        };
        let heim = Heim {
            https: addr("https").context("https address")?,
            http: addr("http"),
            admin: addr("admin").context("admin_listen is needed in test configs")?,
            child,
            dir: dir.to_path_buf(),
            config: path,
            logs,
        };
        Ok(heim)
    }

    /// Polls `/readyz` until it answers 200 (bounded).
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..400 {
            if let Ok((200, _)) = admin_get(self.admin, "/readyz") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("heim never became ready")
    }

    /// Everything heim logged so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// Waits (bounded) until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || {
            self.logs
                .lock()
                .expect("logs")
                .iter()
                .any(|l| l.contains(needle))
        })
    }

    /// Waits (bounded) until `/metrics` contains `needle`.
    pub fn wait_metric(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || {
            admin_get(self.admin, "/metrics").is_ok_and(|(_, m)| m.contains(needle))
        })
    }

    /// Sends a signal to heim.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig}");
    }

    /// Admin GET: (status, body).
    pub fn admin(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).expect("admin request")
    }
}

impl Drop for Heim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks `done` every 20 ms until it holds or `timeout` passes.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks `done` every 20 ms until it holds or `timeout` passes, without
/// blocking the async runtime.
pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8 works on Linux): a second "host" for trust tests.
pub async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// The value of a counter line in Prometheus text (`name{labels} value`).
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A tiny blocking HTTP/1.0 GET for the admin port.
pub fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An HTTP client over rustls that trusts the test CA.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    h2_connector: TlsConnector,
}

/// What came back: status, headers, body, and the server certificate.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    /// The body as JSON (echo routes and the test upstream answer JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Client {
    /// A client that verifies heim's certificate against the test CA.
    pub fn new(ca: &CertificateDer<'static>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("add CA");
        Client::with(|b| {
            b.with_root_certificates(roots.clone())
                .with_no_client_auth()
        })
    }

    /// A bare rustls config that trusts `ca` and offers exactly `alpn`: for
    /// tests that look at the handshake itself.
    pub fn config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("add CA");
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A client that accepts any server certificate: for tests that look at
    /// *which* certificate heim presents, not whether it is valid for the name.
    pub fn any_certificate() -> Client {
        Client::with(|b| {
            let provider = b.crypto_provider().clone();
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        })
    }

    /// One HTTP/1.1 and one h2 connector from the same verification setup.
    fn with(
        finish: impl Fn(
            rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>,
        ) -> rustls::ClientConfig,
    ) -> Client {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mk = |alpn: &[u8]| {
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("versions");
            let mut cfg = finish(builder);
            cfg.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(cfg))
        };
        Client {
            connector: mk(b"http/1.1"),
            h2_connector: mk(b"h2"),
        }
    }

    /// Writes `raw` on a new TLS connection and reads until heim closes it
    /// (or `limit` passes): for malformed and slow requests.
    pub async fn raw(
        &self,
        addr: SocketAddr,
        sni: &str,
        raw: &[u8],
        limit: Duration,
    ) -> anyhow::Result<(String, bool)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tls, _) = self.tls(addr, sni, false).await?;
        tls.write_all(raw).await?;
        tls.flush().await?;
        let mut out = Vec::new();
        let closed = tokio::time::timeout(limit, tls.read_to_end(&mut out))
            .await
            .is_ok();
        Ok((String::from_utf8_lossy(&out).into_owned(), closed))
    }

    /// A TLS connection to `addr` with SNI `sni`; returns the stream and the
    /// leaf certificate heim presented.
    pub async fn tls(
        &self,
        addr: SocketAddr,
        sni: &str,
        h2: bool,
    ) -> anyhow::Result<(
        tokio_rustls::client::TlsStream<TcpStream>,
        CertificateDer<'static>,
    )> {
        self.tls_on(TcpStream::connect(addr).await?, sni, h2).await
    }

    /// TLS on a TCP connection the test opened itself (from a chosen source
    /// address, or after a PROXY protocol header).
    pub async fn tls_on(
        &self,
        tcp: TcpStream,
        sni: &str,
        h2: bool,
    ) -> anyhow::Result<(
        tokio_rustls::client::TlsStream<TcpStream>,
        CertificateDer<'static>,
    )> {
        let name = ServerName::try_from(sni.to_string())?;
        let connector = if h2 {
            &self.h2_connector
        } else {
            &self.connector
        };
        let tls = connector.connect(name, tcp).await?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .context("no certificate")?;
        Ok((tls, cert))
    }

    /// One HTTP/1.1 request over TLS on `tcp`.
    pub async fn request_on(
        &self,
        tcp: TcpStream,
        req: http::Request<Body>,
    ) -> anyhow::Result<Reply> {
        let (tls, _) = self.tls_on(tcp, &sni_of(&req), false).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        collect(resp).await
    }

    /// One request on a new HTTP/1.1 connection.
    pub async fn request(
        &self,
        addr: SocketAddr,
        req: http::Request<Body>,
    ) -> anyhow::Result<Reply> {
        let mut conn = self.connect_h1(addr, &sni_of(&req)).await?;
        conn.send(req).await
    }

    /// One request on a new HTTP/2 connection.
    pub async fn request_h2(
        &self,
        addr: SocketAddr,
        req: http::Request<Body>,
    ) -> anyhow::Result<Reply> {
        let sni = sni_of(&req);
        let (tls, _) = self.tls(addr, &sni, true).await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(TokioIo::new(tls))
                .await?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await?;
        collect(resp).await
    }

    /// A raw HTTP/2 connection (the `h2` crate's client, which leaves
    /// headers, resets and GOAWAY reasons to the test); the second value
    /// ends with the connection and says how (a GOAWAY's reason, say).
    pub async fn h2(
        &self,
        addr: SocketAddr,
        sni: &str,
    ) -> anyhow::Result<(
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    )> {
        let (tls, _) = self.tls(addr, sni, true).await?;
        let (sender, conn) = h2::client::handshake(tls).await?;
        Ok((sender, tokio::spawn(conn)))
    }

    /// A GET on a new HTTP/1.1 connection to `https://host/path`.
    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> anyhow::Result<Reply> {
        self.request(addr, get(host, path)).await
    }

    /// A keep-alive HTTP/1.1 connection.
    pub async fn connect_h1(&self, addr: SocketAddr, sni: &str) -> anyhow::Result<H1Conn> {
        let (tls, _) = self.tls(addr, sni, false).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(H1Conn { sender })
    }
}

/// The status of a raw HTTP/1 response (0 if there is none).
pub fn raw_status(out: &str) -> u16 {
    out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A keep-alive HTTP/1.1 client connection.
pub struct H1Conn {
    pub sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl H1Conn {
    pub async fn send(&mut self, req: http::Request<Body>) -> anyhow::Result<Reply> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        collect(resp).await
    }
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        version: parts.version,
    })
}

fn sni_of(req: &http::Request<Body>) -> String {
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    host.split(':').next().unwrap_or("localhost").to_string()
}

/// `GET path` with `Host: host`.
pub fn get(host: &str, path: &str) -> http::Request<Body> {
    http::Request::get(path)
        .header("host", host)
        .body(Body::default())
        .expect("request")
}

/// The subject alternative DNS names of a certificate (to tell which one heim served).
pub fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("X.509");
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .expect("subjectAltName");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// === fixtures shared by the test files ===

/// A scratch dir with a CA and three certificates: `default.test` (first,
/// so the default), `app.test`, `*.wild.test`.
pub struct Env {
    pub dir: std::path::PathBuf,
    pub pki: Pki,
    pub client: Client,
}

pub fn env(name: &str) -> Env {
    let dir = scratch(name);
    let pki = Pki::new(&dir);
    pki.leaf("default", &["default.test"]);
    pki.leaf("app", &["app.test"]);
    pki.leaf("wild", &["*.wild.test"]);
    let client = Client::new(&pki.ca_der);
    Env { dir, pki, client }
}

pub fn config(server_extra: &str, routes: &str) -> String {
    let workers = if server_extra.contains("workers") {
        ""
    } else {
        "workers = 2"
    };
    format!(
        r#"
[server]
https_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{workers}
{server_extra}

[[certificate]]
cert_file = "default.pem"
key_file = "default-key.pem"

[[certificate]]
cert_file = "app.pem"
key_file = "app-key.pem"

[[certificate]]
cert_file = "wild.pem"
key_file = "wild-key.pem"

{routes}
"#
    )
}

pub fn route(host: &str, path: &str, backend: &str) -> String {
    format!("[[route]]\nhost = \"{host}\"\npath = \"{path}\"\n{backend}\npublic = true\n\n")
}

pub fn up(u: &upstream::Upstream) -> String {
    format!("upstream = [\"{}\"]", u.url())
}

pub fn header<'a>(j: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    j["headers"][name][0].as_str()
}
