//! A small HTTPS client for the identity providers (discovery, keys, token
//! and userinfo endpoints, GitHub's API), the ACME server and DNS APIs: one
//! request per connection, bounded in time and size, TLS verified against
//! the Mozilla roots (`webpki-roots`, so a slim container needs no CA
//! bundle) plus, where configured, an operator's own CA (`acme.ca_file`).
//! `http://` is only ever used for loopback addresses.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// Time allowed for a whole exchange with a provider.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response heim reads from a provider.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a provider request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
}

/// The client; `openidconnect` calls it through `AsyncHttpClient`.
/// `Default` trusts the Mozilla roots.
#[derive(Clone, Debug, Default)]
pub struct HttpClient {
    /// `None`: the Mozilla roots only.
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    // The default protocol versions are always available.
    Arc::new(config.unwrap_or_else(|_| unreachable!("TLS 1.2 and 1.3 are built in")))
}

fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn default_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| client_config(mozilla_roots()))
        .clone()
}

impl HttpClient {
    /// A client that also trusts the CA certificates of a PEM file.
    pub fn with_extra_roots(
        certs: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<HttpClient, String> {
        let mut roots = mozilla_roots();
        for c in certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        Ok(HttpClient {
            tls: Some(client_config(roots)),
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn fetch(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, FetchError> {
        let tls = self.tls.clone().unwrap_or_else(default_tls);
        tokio::time::timeout(TIMEOUT, fetch(req, tls))
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

async fn fetch(
    req: http::Request<Vec<u8>>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<http::Response<Vec<u8>>, FetchError> {
    let uri = req.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Url(uri.to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::Url(uri.to_string())),
    };
    // Plain HTTP only to this machine (a provider beside heim, tests):
    // discovery must not lead heim to send codes or secrets in the clear.
    if !https && !is_loopback(&host) {
        return Err(FetchError::Url(format!("{uri}: http:// only on loopback")));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    let (mut parts, body) = req.into_parts();
    // Origin-form on the wire, with a Host header.
    let pq = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    parts.uri = pq.parse().map_err(|_| FetchError::Url(uri.to_string()))?;
    if !parts.headers.contains_key(http::header::HOST) {
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let v = http::HeaderValue::from_str(&authority)
            .map_err(|_| FetchError::Url(uri.to_string()))?;
        parts.headers.insert(http::header::HOST, v);
    }
    parts
        .headers
        .entry(http::header::USER_AGENT)
        .or_insert(http::HeaderValue::from_static("heim"));
    let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let resp = if https {
        let name = ServerName::try_from(host.clone()).map_err(|_| FetchError::Url(host.clone()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        exchange(TokioIo::new(stream), req).await?
    } else {
        exchange(TokioIo::new(tcp), req).await?
    };
    Ok(resp)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn exchange<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<Vec<u8>>, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    // A plain task (not a local one): the ACME client runs on the control
    // thread's runtime, which has no `LocalSet`, and needs `Send` futures.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(http)?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?
        .to_bytes();
    Ok(http::Response::from_parts(parts, body.to_vec()))
}

impl<'c> openidconnect::AsyncHttpClient<'c> for HttpClient {
    type Error = FetchError;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: http::Request<Vec<u8>>) -> Self::Future {
        Box::pin(self.fetch(request))
    }
}
