//! A real Kubernetes control plane for the ingress controller's tests, run
//! the way controller-runtime's envtest runs one: etcd and kube-apiserver
//! 1.20.2 on free loopback ports, each test with its own, killed on drop.
//!
//! * [`ControlPlane`] starts `/usr/bin/etcd` (Debian's etcd-server) and the
//!   kube-apiserver that `tests/setup-kube` built into the cache, with a
//!   serving certificate from a test CA, an admin bearer token in
//!   `system:masters`, RBAC, and service-account keys (so TokenRequest works).
//!   Its helpers speak plain JSON over HTTPS with that token; [`ControlPlane::kubeconfig`]
//!   writes a kubeconfig for kube-rs clients and the controller under test.
//! * [`Netns`] is a network namespace with a veth to the host and an address
//!   from TEST-NET-2 (198.51.100.0/24): the API server refuses Endpoints on
//!   loopback, so test backends listen in one of these and are registered
//!   under its address.
//!
//! There is no controller-manager, scheduler or kubelet: tests create the
//! objects those would (Endpoints, ServiceAccounts) themselves.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{scratch, Body, Pki};

/// How long the API server may take to answer `/readyz` (it bootstraps RBAC
/// roles and priority levels first; seconds, more on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The kube-apiserver binary `tests/setup-kube` builds (or `HEIM_KUBE_APISERVER`).
pub fn apiserver_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("HEIM_KUBE_APISERVER") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = match std::env::var_os("HEIM_CACHE") {
                Some(c) => PathBuf::from(c),
                None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                    .join(".cache/heim"),
            };
            cache.join("kube/bin/kube-apiserver")
        }
    };
    if !path.exists() {
        bail!(
            "{} is missing: run tests/setup-kube (tests/run does)",
            path.display()
        );
    }
    Ok(path)
}

/// The kubectl binary `tests/setup-kube` builds beside the API server.
pub fn kubectl_binary() -> anyhow::Result<PathBuf> {
    let path = apiserver_binary()?.with_file_name("kubectl");
    if !path.exists() {
        bail!(
            "{} is missing: run tests/setup-kube (tests/run does)",
            path.display()
        );
    }
    Ok(path)
}

/// The etcd binary (Debian's etcd-server, or `HEIM_ETCD`).
pub fn etcd_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("HEIM_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if !path.exists() {
        bail!(
            "{} is missing: run tests/setup-kube (tests/run does), which installs etcd-server",
            path.display()
        );
    }
    Ok(path)
}

/// etcd and kube-apiserver on loopback, both killed on drop.
pub struct ControlPlane {
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The API server's address.
    pub addr: SocketAddr,
    /// A bearer token for user `admin` in group `system:masters`.
    pub token: String,
    /// The CA that signed the API server's certificate, PEM.
    pub ca_pem: String,
    /// The same CA, DER.
    pub ca_der: CertificateDer<'static>,
    /// The scratch directory: etcd data, keys, logs, kubeconfigs.
    pub dir: PathBuf,
    /// The service-account issuer (`iss` of the tokens it signs).
    pub issuer: String,
    /// etcd's client URL (`http://127.0.0.1:PORT`).
    pub etcd_url: String,
    etcd: Child,
    apiserver: Option<Child>,
    apiserver_args: Vec<String>,
    tls: TlsConnector,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver in a fresh scratch directory and waits
    /// until `/readyz` answers 200 with the admin token.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        let apiserver_bin = apiserver_binary()?;
        let etcd_bin = etcd_binary()?;
        let dir = scratch("kube");

        // == etcd
        let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(etcd_bin)
            .arg("--name=heim-e2e")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=heim-e2e={peer_url}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log_file(&dir, "etcd.log")?)
            .stderr(log_file(&dir, "etcd.log")?)
            .spawn()
            .context("spawn etcd")?;

        // == keys and certificates
        let pki = Pki::new(&dir);
        let ca_der = pki.ca_der.clone();
        let ca_pem = pem("CERTIFICATE", &ca_der);
        pki.leaf(
            "apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ],
        );
        let sa_key = rcgen::KeyPair::generate().context("service-account key")?;
        std::fs::write(dir.join("sa-key.pem"), sa_key.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
        let token = random_token()?;
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin,\"system:masters\"\n"),
        )?;

        // == kube-apiserver
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, secure_port));
        let issuer = "https://kubernetes.default.svc.cluster.local".to_string();
        let path = |f: &str| dir.join(f).display().to_string();
        let apiserver_args = vec![
            apiserver_bin.display().to_string(),
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={secure_port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", path("certs")),
            format!("--tls-cert-file={}", path("apiserver.pem")),
            format!("--tls-private-key-file={}", path("apiserver-key.pem")),
            format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa-key.pem")),
            format!("--service-account-issuer={issuer}"),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            "--allow-privileged=false".into(),
            "--profiling=false".into(),
        ];
        let mut cp = ControlPlane {
            url: format!("https://{addr}"),
            addr,
            token,
            ca_pem,
            tls: connector(&ca_der)?,
            ca_der,
            dir,
            issuer,
            etcd_url,
            etcd,
            apiserver: None,
            apiserver_args,
        };
        cp.start_apiserver().await?;
        Ok(cp)
    }

    /// (Re)starts kube-apiserver with the same flags, port and etcd, and
    /// waits until it is ready: the second half of "the API server goes away
    /// and comes back".
    pub async fn start_apiserver(&mut self) -> anyhow::Result<()> {
        if self.apiserver.is_some() {
            bail!("kube-apiserver is already running");
        }
        let (bin, args) = self
            .apiserver_args
            .split_first()
            .context("apiserver command line")?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir, "apiserver.log")?)
            .stderr(log_file(&self.dir, "apiserver.log")?)
            .spawn()
            .context("spawn kube-apiserver")?;
        self.apiserver = Some(child);
        self.wait_ready().await
    }

    /// Kills kube-apiserver (etcd and its data stay); see [`Self::start_apiserver`].
    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `/readyz` with the admin token until it answers 200 (bounded),
    /// failing early with the logs when etcd or the API server exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.etcd.try_wait()? {
                bail!("etcd exited ({status}):\n{}", self.log_tails());
            }
            if let Some(status) = self
                .apiserver
                .as_mut()
                .and_then(|c| c.try_wait().transpose())
            {
                bail!("kube-apiserver exited ({}):\n{}", status?, self.log_tails());
            }
            let last = match self.get("/readyz").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("{status} {body}"),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?} (last: {last}):\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of both logs, for error messages.
    pub fn log_tails(&self) -> String {
        ["etcd.log", "apiserver.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- {} (last 30 lines)\n{tail}", self.dir.join(f).display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client with the admin token.
    pub fn api(&self) -> Api {
        self.api_as(&self.token)
    }

    /// A client with another bearer token (a ServiceAccount's, say).
    pub fn api_as(&self, token: &str) -> Api {
        Api {
            addr: self.addr,
            token: token.to_string(),
            tls: self.tls.clone(),
        }
    }

    /// `GET path` as admin: status and body (JSON, or a JSON string when the
    /// body is not JSON, as `/readyz`'s `ok`).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.api().get(path).await
    }

    /// `POST path` (a collection) as admin.
    pub async fn create(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        self.api().create(path, object).await
    }

    /// Server-side apply of `object` at `path` (the object's own path) as admin.
    pub async fn apply(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        self.api().apply(path, object).await
    }

    /// `PUT path` (the object's own path, or its `/status`) as admin.
    pub async fn replace(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        self.api().replace(path, object).await
    }

    /// `DELETE path` as admin.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.api().delete(path).await
    }

    /// A bearer token for ServiceAccount `namespace/name` (TokenRequest; the
    /// ServiceAccount must exist, and nothing here creates it).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .create(
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
                &json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": { "expirationSeconds": 3600 },
                }),
            )
            .await?;
        if status != 201 {
            bail!("TokenRequest for {namespace}/{name}: {status} {body}");
        }
        body["status"]["token"]
            .as_str()
            .map(str::to_string)
            .context("TokenRequest answer without status.token")
    }

    /// Writes `kubeconfig` (server, CA data, admin token) into the scratch
    /// directory and returns its path.
    pub fn kubeconfig(&self) -> anyhow::Result<PathBuf> {
        self.kubeconfig_for("admin", &self.token)
    }

    /// Writes `kubeconfig-USER` for a bearer token and returns its path.
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(if user == "admin" {
            "kubeconfig".to_string()
        } else {
            format!("kubeconfig-{user}")
        });
        // JSON is YAML: kube-rs (and kubectl) read this as it is.
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "heim-e2e",
                "cluster": {
                    "server": self.url,
                    "certificate-authority-data":
                        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem),
                },
            }],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{
                "name": "heim-e2e",
                "context": { "cluster": "heim-e2e", "user": user },
            }],
            "current-context": "heim-e2e",
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(path)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        // etcd preallocates its WAL (over 100 MB); the logs stay for post-mortems.
        let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
    }
}

/// JSON over HTTPS to the API server with one bearer token; a new
/// connection per request (simple, and it survives API server restarts).
#[derive(Clone)]
pub struct Api {
    addr: SocketAddr,
    token: String,
    tls: TlsConnector,
}

impl Api {
    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(http::Method::GET, path, None).await
    }

    /// `POST path` (a collection).
    pub async fn create(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        self.request(http::Method::POST, path, Some(("application/json", object)))
            .await
    }

    /// Server-side apply (field manager `heim-e2e`, forced) at the object's path.
    pub async fn apply(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}fieldManager=heim-e2e&force=true");
        // JSON is YAML, which is what the apply content type names.
        self.request(
            http::Method::PATCH,
            &path,
            Some(("application/apply-patch+yaml", object)),
        )
        .await
    }

    /// `PUT path`.
    pub async fn replace(&self, path: &str, object: &Value) -> anyhow::Result<(u16, Value)> {
        self.request(http::Method::PUT, path, Some(("application/json", object)))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.request(http::Method::DELETE, path, None).await
    }

    /// One request; the body comes back as JSON, or as a JSON string when it
    /// is not JSON.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> anyhow::Result<(u16, Value)> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        let tls = self
            .tls
            .connect(ServerName::IpAddress(self.addr.ip().into()), tcp)
            .await
            .context("TLS handshake with kube-apiserver")?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::ACCEPT, "application/json");
        let payload = match body {
            Some((content_type, value)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(serde_json::to_vec(value)?)
            }
            None => Bytes::new(),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(30),
            sender.send_request(req.body(Body::new(payload))?),
        )
        .await
        .with_context(|| format!("{method} {path}: no answer in 30 s"))??;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    }
}

/// A rustls connector that trusts only the control plane's CA.
fn connector(ca: &CertificateDer<'static>) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A loopback port free right now (the process told to use it binds it
/// moments later; a collision shows up as a bind error in its log).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `dir/name`, opened for appending (restarts add to the same log).
fn log_file(dir: &Path, name: &str) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .with_context(|| format!("open {}", dir.join(name).display()))
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// === impl Netns ===

/// Where the namespace slots' lock and owner files live.
const NETNS_STATE: &str = "/run/heim-e2e-netns";

/// A network namespace `heim-N` joined to the host by a veth pair:
/// `198.51.100.N/24` on `eth0` inside, and on the host `198.51.100.1/32` on
/// link `heim-N` with a route to `198.51.100.N/32` over it. Host routes per
/// namespace (rather than one `198.51.100.1/24` per link) let several
/// namespaces live at once. Only TEST-NET-2 addresses are used and nothing
/// else is routed: there is no default route inside. Deleted on drop.
pub struct Netns {
    /// `heim-N`: the namespace's name, and the host end's link name.
    pub name: String,
    /// `198.51.100.N`, the namespace's address.
    pub addr: IpAddr,
    /// `198.51.100.1`, the host's address as the namespace sees it.
    pub host_addr: IpAddr,
}

impl Netns {
    /// Creates the next free namespace (N from 2 to 254). Slots held by a
    /// process that no longer runs are reclaimed.
    pub fn new() -> anyhow::Result<Netns> {
        std::fs::create_dir_all(NETNS_STATE)
            .with_context(|| format!("create {NETNS_STATE} (the tests run as root)"))?;
        let lock = File::create(Path::new(NETNS_STATE).join("lock"))?;
        // Serializes slot choice between test processes.
        lock.lock()?;
        for n in 2..=254u8 {
            let name = format!("heim-{n}");
            let owner = Path::new(NETNS_STATE).join(&name);
            if Path::new("/run/netns").join(&name).exists() {
                let alive = std::fs::read_to_string(&owner)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive {
                    continue;
                }
                remove(&name);
            }
            std::fs::write(&owner, std::process::id().to_string())?;
            let netns = Netns {
                addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, n)),
                host_addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
                name,
            };
            // On failure, drop removes what was made.
            netns.create()?;
            return Ok(netns);
        }
        bail!("all 253 heim-N network namespaces are in use")
    }

    fn create(&self) -> anyhow::Result<()> {
        let (name, addr, host) = (&self.name, self.addr, self.host_addr);
        ip(&["netns", "add", name])?;
        ip(&[
            "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])?;
        ip(&["addr", "add", &format!("{host}/32"), "dev", name])?;
        ip(&["link", "set", name, "up"])?;
        ip(&[
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            name,
            "src",
            &host.to_string(),
        ])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", name, "link", "set", "eth0", "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// `ip netns exec NAME program`: a command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A TCP listener bound inside the namespace (on its address, `port` or
    /// 0 for any): a socket stays in the namespace it was made in, so the
    /// test serves it from its own runtime like any other listener.
    pub fn listen(&self, port: u16) -> anyhow::Result<std::net::TcpListener> {
        let path = Path::new("/run/netns").join(&self.name);
        let addr = SocketAddr::new(self.addr, port);
        // setns(2) moves only the calling thread: a short-lived one.
        std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let ns = File::open(&path).with_context(|| format!("open {}", path.display()))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("setns into the test namespace")?;
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("bind {addr} in the namespace"))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the setns thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
        let _ = std::fs::remove_file(Path::new(NETNS_STATE).join(&self.name));
    }
}

/// Deletes namespace `name` and its host link (deleting the link first is
/// synchronous and takes the peer, its address and route with it).
fn remove(name: &str) {
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    quiet(&["link", "del", name]);
    quiet(&["netns", "del", name]);
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
