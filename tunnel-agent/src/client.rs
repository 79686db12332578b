//! The proxy connection: TLS to heim, `CONNECT`, and the byte relay.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Bad arguments or config.
pub const EXIT_USAGE: u8 = 2;
/// No valid token, and signing in did not give one.
pub const EXIT_NOT_SIGNED_IN: u8 = 3;
/// Signed in, but the route's policy does not admit the user.
pub const EXIT_DENIED: u8 = 4;
/// heim could not reach the target (502/504).
pub const EXIT_TARGET_OFFLINE: u8 = 5;
/// The proxy itself could not be reached (TCP or TLS).
pub const EXIT_PROXY_UNREACHABLE: u8 = 6;
/// heim cut an open stream (its message says why).
pub const EXIT_CUT: u8 = 7;
/// heim has no tunnel route for the target (404, 405).
pub const EXIT_NO_ROUTE: u8 = 8;

/// Why a command failed: its exit code and message.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// HOST[:PORT], port 22 by default.
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, Failure> {
        let bad = || Failure::new(EXIT_USAGE, format!("{s:?} is not HOST or HOST:PORT"));
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse::<u16>().map_err(|_| bad())?),
            _ => (s, 22),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return Err(bad());
        }
        Ok(Target {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Where heim is, and how its certificate is checked.
#[derive(Clone)]
pub struct Proxy {
    /// `https://host[:port]`, the key tokens are kept under.
    pub origin: String,
    pub host: String,
    pub port: u16,
    tls: Arc<rustls::ClientConfig>,
}

impl Proxy {
    /// From `--proxy` / `HEIM_PROXY`, else the target host on 443.
    pub fn from_args(args: &crate::ProxyArgs, target: Option<&str>) -> Result<Proxy, Failure> {
        let url = args
            .proxy
            .clone()
            .or_else(|| std::env::var("HEIM_PROXY").ok().filter(|v| !v.is_empty()))
            .or_else(|| target.map(|t| format!("https://{t}")))
            .ok_or_else(|| Failure::new(EXIT_USAGE, "which proxy? give --proxy URL"))?;
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            Failure::new(
                EXIT_USAGE,
                format!("{url:?}: the proxy URL must be https://"),
            )
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("{url:?}: give the proxy as https://host[:port]"),
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h.trim_matches(['[', ']']).to_string(), p),
                Err(_) => (authority.to_string(), 443),
            },
            _ => (authority.to_string(), 443),
        };
        let tls = tls_config(args.ca_file.as_deref())?;
        Ok(Proxy {
            origin: format!("https://{}", authority.to_ascii_lowercase()),
            host: host.to_ascii_lowercase(),
            port,
            tls,
        })
    }

    /// A TLS connection to heim speaking HTTP/1.1.
    pub async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        self.tls(tcp).await
    }

    /// Like [`Proxy::connect`], to one of the proxy's addresses.
    pub async fn connect_to(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| self.unreachable(e))?;
        self.tls(tcp).await
    }

    fn unreachable(&self, e: std::io::Error) -> Failure {
        Failure::new(
            EXIT_PROXY_UNREACHABLE,
            format!("cannot reach the proxy {}: {e}", self.origin),
        )
    }

    async fn tls(
        &self,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| Failure::new(EXIT_USAGE, format!("{:?} is not a host name", self.host)))?;
        TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// The `Host` of requests to heim itself.
    pub fn host_header(&self) -> &str {
        self.origin.trim_start_matches("https://")
    }

    /// One request on a connection of its own: status and body.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Failure> {
        let mut send = self.handshake(false).await?;
        let resp = send.send_request(req).await.map_err(|e| self.broken(e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(e))?
            .to_bytes();
        Ok((status, body))
    }

    /// An HTTP/1.1 connection to heim, driven in the background (kept for
    /// the stream after a `CONNECT` when `upgrades`).
    async fn handshake<B>(
        &self,
        upgrades: bool,
    ) -> Result<hyper::client::conn::http1::SendRequest<B>, Failure>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tls = self.connect().await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.broken(e))?;
        if upgrades {
            tokio::spawn(conn.with_upgrades());
        } else {
            tokio::spawn(conn);
        }
        Ok(send)
    }

    fn broken(&self, e: hyper::Error) -> Failure {
        Failure::new(
            EXIT_PROXY_UNREACHABLE,
            format!("the proxy {} broke the connection: {e}", self.origin),
        )
    }

    /// `CONNECT target` with `token`: the open stream and its tunnel id.
    async fn open(
        &self,
        target: &Target,
        token: Option<&str>,
    ) -> Result<(hyper::upgrade::Upgraded, Option<String>), Failure> {
        let mut send = self.handshake(true).await?;
        let authority = target.authority();
        let mut req =
            Request::connect(authority.as_str()).header(http::header::HOST, authority.as_str());
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .header(
                http::header::USER_AGENT,
                concat!("heim-tunnel/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
        let resp = send.send_request(req).await.map_err(|e| self.broken(e))?;
        let status = resp.status();
        if status == StatusCode::OK {
            let id = resp
                .headers()
                .get("heim-tunnel-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let up = hyper::upgrade::on(resp).await.map_err(|e| self.broken(e))?;
            return Ok((up, id));
        }
        let what = format!("{} (heim answered {status})", target.authority());
        // heim's 502 for a tunnel says why in its one-line body.
        let said = match resp.into_body().collect().await {
            Ok(b) if status == StatusCode::BAD_GATEWAY => {
                let text = String::from_utf8_lossy(&b.to_bytes()).trim().to_owned();
                text.split_once(": ").map(|(_, why)| {
                    why.chars()
                        .filter(|c| !c.is_control())
                        .take(200)
                        .collect::<String>()
                })
            }
            _ => None,
        };
        Err(match status {
            StatusCode::UNAUTHORIZED => Failure::new(
                EXIT_NOT_SIGNED_IN,
                format!(
                    "not signed in to {}: run `heim-tunnel login --proxy {}`",
                    self.origin, self.origin
                ),
            ),
            StatusCode::FORBIDDEN => Failure::new(
                EXIT_DENIED,
                format!("denied: the route's policy does not admit you to {what}"),
            ),
            StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::SERVICE_UNAVAILABLE => Failure::new(
                EXIT_TARGET_OFFLINE,
                match said {
                    Some(why) => format!("target offline: {why} ({what})"),
                    None => format!("target offline: heim cannot reach {what}"),
                },
            ),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Failure::new(
                EXIT_NO_ROUTE,
                format!("no tunnel: heim has no tunnel route for {what}"),
            ),
            _ => Failure::new(EXIT_PROXY_UNREACHABLE, format!("refused: {what}")),
        })
    }

    /// `CONNECT` with the kept token (none for a public route); signs in
    /// when heim asks for a user and the token is missing or refused.
    async fn open_signed_in(
        &self,
        target: &Target,
    ) -> Result<(hyper::upgrade::Upgraded, Option<String>), Failure> {
        let token = crate::token::bearer(self).await;
        match self.open(target, token.as_deref()).await {
            Err(f) if f.code == EXIT_NOT_SIGNED_IN && std::env::var_os("HEIM_TOKEN").is_none() => {
                eprintln!("heim-tunnel: not signed in to {}: signing in", self.origin);
                let token = crate::token::login(self, false).await?;
                self.open(target, Some(&token)).await
            }
            other => other,
        }
    }

    /// Why heim cut stream `id`, if it did.
    async fn cut_reason(&self, id: &str) -> Option<String> {
        let req = Request::get(format!("/.heim/tunnel/ended?id={id}"))
            .header(http::header::HOST, self.host.as_str())
            .body(Full::new(Bytes::new()))
            .ok()?;
        let (status, body) =
            tokio::time::timeout(std::time::Duration::from_secs(3), self.request(req))
                .await
                .ok()?
                .ok()?;
        (status == StatusCode::OK).then(|| String::from_utf8_lossy(&body).into_owned())
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(f)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", f.display())))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| Failure::new(EXIT_USAGE, format!("{}: {e}", f.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Relays `local` and an open stream both ways, with half-close: the end
/// of `local`'s input ends the stream's sending side only. Done when the
/// stream's far side ends; then asks heim whether it cut it.
async fn relay<R, W>(
    p: &Proxy,
    mut input: R,
    mut output: W,
    stream: hyper::upgrade::Upgraded,
    id: Option<String>,
) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut from_heim, mut to_heim) = tokio::io::split(TokioIo::new(stream));
    let up = async {
        let _ = tokio::io::copy(&mut input, &mut to_heim).await;
        let _ = to_heim.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let r = tokio::io::copy(&mut from_heim, &mut output).await;
        let _ = output.flush().await;
        r
    };
    let down = tokio::select! {
        r = down => r,
        _ = up => unreachable!("the sending side waits"),
    };
    if let Some(why) = match &id {
        Some(id) => p.cut_reason(id).await,
        None => None,
    } {
        return Err(Failure::new(EXIT_CUT, format!("cut by heim: {why}")));
    }
    match down {
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::new(EXIT_CUT, format!("the stream broke: {e}"))),
    }
}

/// `heim-tunnel proxy`: stdin/stdout through heim to `target`.
pub async fn proxy_stdio(p: &Proxy, target: &Target) -> Result<(), Failure> {
    let (stream, id) = p.open_signed_in(target).await?;
    relay(p, tokio::io::stdin(), tokio::io::stdout(), stream, id).await
}

/// `heim-tunnel forward`: each local connection through heim to `target`.
pub async fn forward(p: &Proxy, target: &Target, listen: SocketAddr) -> Result<(), Failure> {
    // Sign in (and check the route) once, before listening.
    drop(p.open_signed_in(target).await?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot listen on {listen}: {e}")))?;
    eprintln!(
        "heim-tunnel: forwarding {listen} to {} through {}",
        target.authority(),
        p.origin
    );
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("heim-tunnel: accept failed: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let p = p.clone();
        let target = Target {
            host: target.host.clone(),
            port: target.port,
        };
        tokio::spawn(async move {
            let result = match p.open_signed_in(&target).await {
                Ok((stream, id)) => {
                    let (r, w) = tcp.into_split();
                    relay(&p, r, w, stream, id).await
                }
                Err(f) => Err(f),
            };
            if let Err(f) = result {
                eprintln!("heim-tunnel: {peer}: {}", f.message);
            }
        });
    }
}

/// The `~/.ssh/config` block for every host under `domain`.
pub fn ssh_config(domain: &str, proxy: Option<&str>, ca_file: Option<&Path>) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_owned))
        .filter(|p| !p.contains(' '))
        .unwrap_or_else(|| "heim-tunnel".to_owned());
    let proxy = proxy.map(|p| format!(" --proxy {p}")).unwrap_or_default();
    let ca = ca_file
        .and_then(|f| std::path::absolute(f).ok())
        .and_then(|f| f.to_str().map(|f| format!(" --ca-file {f}")))
        .unwrap_or_default();
    let domain = domain.trim_start_matches("*.").trim_start_matches('.');
    format!("Host *.{domain}\n    ProxyCommand {exe} proxy{proxy}{ca} %h:%p\n")
}
