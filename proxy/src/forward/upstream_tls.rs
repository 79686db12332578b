//! TLS to upstreams: ingress-nginx's `backend-protocol: HTTPS` and `GRPCS`
//! and its `proxy-ssl-*` annotations.
//!
//! [`UpstreamTls`] is the plain value a route's source declares (CA roots,
//! the name to verify, SNI, a client certificate, all as DER bytes);
//! [`UpstreamTlsClient`] is what it compiles into once per upstream group:
//! the `rustls` client configurations that every new connection of the group
//! shares, so a request never builds one. Pooling is `forward::pool`'s: a TLS
//! connection is pooled (HTTP/1) or shared (HTTP/2) like a plain one, under
//! an endpoint id that differs from the plain one's (`upstream::Endpoint`).
//!
//! The defaults are nginx's, deliberately: with no `verify` the upstream's
//! certificate is not checked (`proxy_ssl_verify off`) and no SNI is sent
//! (`proxy_ssl_server_name off`), which is what pods serving a self-signed
//! certificate rely on. The handshake's signatures are checked even then,
//! so the peer must hold the key of the certificate it shows.
//!
//! Where heim differs from nginx, knowingly:
//! - `verify` without a `server_name` checks the chain against the CA but
//!   not the name (nginx checks the name of its upstream block, e.g.
//!   `default-app-443`, which no certificate carries, so such a setting
//!   never worked there).
//! - TLS 1.2 and 1.3 with rustls's fixed, safe cipher suites:
//!   `proxy-ssl-ciphers` and `-protocols` have no counterpart, and neither
//!   has `proxy-ssl-verify-depth` (webpki bounds chains itself).
//! - HTTPS offers no ALPN (as nginx's `proxy_pass`); GRPCS offers `h2` (as
//!   nginx's `grpc_pass grpcs://`).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::upstream::{UpstreamAddr, UpstreamProtocol};

/// How heim speaks TLS to a route's upstreams (`backend-protocol: HTTPS`
/// or `GRPCS`, and the `proxy-ssl-*` annotations).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct UpstreamTls {
    /// CA certificates the upstream's chain must lead to (`proxy-ssl-verify:
    /// on` with the `ca.crt` of `proxy-ssl-secret`); `None`: not verified.
    pub verify: Option<Vec<CertificateDer<'static>>>,
    /// The name the certificate must carry, and the one sent as SNI when
    /// `sni` is set (`proxy-ssl-name`). Without it, an endpoint known by
    /// name (an ExternalName Service) sends that name as SNI, an IP none.
    pub server_name: Option<String>,
    /// Send the name in the TLS ClientHello (`proxy-ssl-server-name: on`).
    pub sni: bool,
    /// A client certificate for mutual TLS (`tls.crt`/`tls.key` of
    /// `proxy-ssl-secret`).
    pub client_cert: Option<ClientCert>,
}

impl UpstreamTls {
    /// nginx's defaults for `backend-protocol: HTTPS`: nothing verified, no SNI.
    pub fn unverified() -> Self {
        Self::default()
    }

    /// Reads a `proxy-ssl-secret`'s PEM: `ca.crt` becomes the roots when
    /// `verify` is asked for (it must then hold one), `tls.crt` with
    /// `tls.key` the client certificate.
    pub fn with_pem(
        mut self,
        ca: Option<&[u8]>,
        cert: Option<&[u8]>,
        key: Option<&[u8]>,
        verify: bool,
    ) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        if verify {
            let roots: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(ca.unwrap_or_default())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("ca.crt: {e}"))?;
            if roots.is_empty() {
                return Err(
                    "proxy-ssl-verify is on, and the Secret has no ca.crt certificate".into(),
                );
            }
            self.verify = Some(roots);
        }
        if let (Some(cert), Some(key)) = (cert, key) {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls.crt: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| "tls.key: no private key".to_string())?;
            self.client_cert = Some(ClientCert { chain, key });
        }
        self.validate().map_err(|e| e.to_string())?;
        Ok(self)
    }

    /// Whether the settings compile, so a config source can refuse them at
    /// load time rather than leave a route that answers 502.
    pub fn validate(&self) -> Result<(), UpstreamTlsError> {
        Compiled::new(self).map(drop)
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verify_cas", &self.verify.as_ref().map(Vec::len))
            .field("server_name", &self.server_name)
            .field("sni", &self.sni)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// A client certificate chain (leaf first) and its private key.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl PartialEq for ClientCert {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
            && crate::auth::constant_time_eq(self.key.secret_der(), other.key.secret_der())
    }
}

impl Eq for ClientCert {}

impl Hash for ClientCert {
    /// The chain only: a key goes with its certificate, and its bytes stay
    /// out of hashes (an endpoint's id is one).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.chain.hash(state);
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why upstream TLS settings cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("CA certificate {index} is not usable: {reason}")]
    CaCertificate { index: usize, reason: String },
    #[error("verification asked for, but no CA certificate given")]
    NoCaCertificate,
    #[error("{0:?} is not a DNS name or IP address")]
    ServerName(String),
    #[error("client certificate or key not usable: {0}")]
    ClientCert(String),
}

/// A group's upstream TLS, compiled once: the client configurations its
/// connections share. Settings that did not compile make every connection
/// fail (a 502), never fall back to less verification.
pub struct UpstreamTlsClient {
    compiled: Result<Compiled, UpstreamTlsError>,
}

struct Compiled {
    /// HTTP/1.1 (HTTPS, and WebSocket upgrades): no ALPN.
    http1: TlsConnector,
    /// HTTP/2 (GRPCS): ALPN `h2`.
    h2: TlsConnector,
    name: Option<ServerName<'static>>,
}

impl UpstreamTlsClient {
    /// Compiles `tls`; unusable settings are logged here, once per group.
    pub fn new(tls: &UpstreamTls) -> Self {
        let compiled = Compiled::new(tls);
        if let Err(e) = &compiled {
            tracing::error!(error = %e, "upstream TLS settings unusable: the route answers 502");
        }
        Self { compiled }
    }

    /// Why the settings did not compile, if they did not.
    pub fn error(&self) -> Option<&UpstreamTlsError> {
        self.compiled.as_ref().err()
    }

    /// Runs the TLS handshake on a fresh connection to `addr`, offering the
    /// ALPN `protocol` calls for.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &UpstreamAddr,
        protocol: UpstreamProtocol,
    ) -> io::Result<TlsStream<TcpStream>> {
        let c = self
            .compiled
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        let connector = match protocol {
            UpstreamProtocol::Http1 => &c.http1,
            UpstreamProtocol::H2c => &c.h2,
        };
        connector.connect(c.name_for(addr), tcp).await
    }
}

impl fmt::Debug for UpstreamTlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.compiled {
            Ok(c) => f
                .debug_struct("UpstreamTlsClient")
                .field("name", &c.name)
                .finish_non_exhaustive(),
            Err(e) => f.debug_tuple("UpstreamTlsClient").field(e).finish(),
        }
    }
}

impl Compiled {
    fn new(tls: &UpstreamTls) -> Result<Self, UpstreamTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let name = match &tls.server_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| UpstreamTlsError::ServerName(n.clone()))?,
            ),
        };
        let roots = match &tls.verify {
            None => None,
            Some(cas) if cas.is_empty() => return Err(UpstreamTlsError::NoCaCertificate),
            Some(cas) => {
                let mut roots = RootCertStore::empty();
                for (index, ca) in cas.iter().enumerate() {
                    roots
                        .add(ca.clone())
                        .map_err(|e| UpstreamTlsError::CaCertificate {
                            index,
                            reason: e.to_string(),
                        })?;
                }
                Some(Arc::new(roots))
            }
        };
        let verifier = Arc::new(UpstreamVerifier {
            roots,
            check_name: name.is_some(),
            provider: provider.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            // The default protocol versions are always available.
            .unwrap_or_else(|_| unreachable!("TLS 1.2 and 1.3 are built in"))
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => builder
                .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
                .map_err(|e| UpstreamTlsError::ClientCert(e.to_string()))?,
        };
        config.enable_sni = tls.sni;
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            http1: TlsConnector::from(Arc::new(config)),
            h2: TlsConnector::from(Arc::new(h2)),
            name,
        })
    }

    /// The name for the handshake: the configured one, else the endpoint's
    /// own (which rustls never sends as SNI when it is an IP address). When
    /// no name is configured it is not verified, so the fallback for a host
    /// that is no valid name only has to be one rustls never sends.
    fn name_for(&self, addr: &UpstreamAddr) -> ServerName<'static> {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match addr {
            UpstreamAddr::Socket(a) => ServerName::IpAddress(a.ip().into()),
            UpstreamAddr::Name { host, .. } => ServerName::try_from(host.clone())
                .unwrap_or(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into())),
        }
    }
}

/// nginx's `proxy_ssl_verify`: off (no roots) accepts any certificate;
/// on checks the chain against the roots, and the name when one was
/// configured. The handshake's signatures are checked in every case.
#[derive(Debug)]
pub(crate) struct UpstreamVerifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl UpstreamVerifier {
    /// nginx's `proxy_ssl_verify off`: any certificate, its handshake
    /// signatures checked (also the auth sub-request's, `auth::external`).
    pub(crate) fn unverified(provider: Arc<CryptoProvider>) -> Self {
        Self {
            roots: None,
            check_name: false,
            provider,
        }
    }
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! Against real local TLS servers (tokio-rustls and hyper on
    //! 127.0.0.1:0), which record what each accepted handshake showed.

    use super::*;

    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{CONNECTION, HOST, UPGRADE};
    use http::{Request, Response, StatusCode, Version};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::server::WebPkiClientVerifier;
    use rustls::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use crate::body::UpstreamBody;
    use crate::error::ProxyError;
    use crate::forward::{forward, open_http1, Outgoing};
    use crate::metrics::Metrics;
    use crate::rt::LocalExec;
    use crate::upstream::{UpstreamGroup, UpstreamLimits, UpstreamSpec};

    /// A test CA.
    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    impl Ca {
        fn new(name: &str) -> Self {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            Self { cert, key }
        }

        fn der(&self) -> CertificateDer<'static> {
            self.cert.der().clone()
        }

        /// A leaf for `names`, for a server or (`client`) a client.
        fn issue(&self, names: &[&str], client: bool) -> ClientCert {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            ClientCert {
                chain: vec![cert.der().clone()],
                key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            }
        }
    }

    /// What the server saw of one completed handshake.
    #[derive(Debug, Clone)]
    struct Hello {
        sni: Option<String>,
        alpn: Option<Vec<u8>>,
        client_certs: Vec<CertificateDer<'static>>,
    }

    struct Backend {
        addr: SocketAddr,
        /// TCP connections accepted.
        accepts: Rc<Cell<usize>>,
        /// Handshakes completed.
        hellos: Rc<RefCell<Vec<Hello>>>,
    }

    struct ServerOpts<'a> {
        cert: ClientCert,
        client_ca: Option<&'a Ca>,
        h2: bool,
    }

    /// Starts a TLS server: HTTP/2 when ALPN chose `h2`, else HTTP/1.1
    /// (with WebSocket-style upgrades echoing bytes). Each response body is
    /// the request's version and URI scheme.
    async fn backend(opts: ServerOpts<'_>) -> Backend {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match opts.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der()).unwrap();
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        let mut config = builder
            .with_single_cert(opts.cert.chain, opts.cert.key)
            .unwrap();
        if opts.h2 {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Rc::new(Cell::new(0));
        let hellos = Rc::new(RefCell::new(Vec::new()));
        let (a, h) = (accepts.clone(), hellos.clone());
        tokio::task::spawn_local(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                a.set(a.get() + 1);
                let (acceptor, h) = (acceptor.clone(), h.clone());
                tokio::task::spawn_local(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let hello = Hello {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                        client_certs: conn.peer_certificates().unwrap_or_default().to_vec(),
                    };
                    let h2 = hello.alpn.as_deref() == Some(b"h2");
                    h.borrow_mut().push(hello);
                    let svc = service_fn(answer);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(LocalExec)
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .with_upgrades()
                            .await;
                    }
                });
            }
        });
        Backend {
            addr,
            accepts,
            hellos,
        }
    }

    async fn answer(
        mut req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        if req.headers().contains_key(UPGRADE) {
            let on = hyper::upgrade::on(&mut req);
            tokio::task::spawn_local(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 4];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            let resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(UPGRADE, "websocket")
                .header(CONNECTION, "upgrade")
                .body(Full::default())
                .unwrap();
            return Ok(resp);
        }
        let seen = format!(
            "{:?} {}",
            req.version(),
            req.uri().scheme_str().unwrap_or("-")
        );
        Ok(Response::new(Full::new(Bytes::from(seen))))
    }

    fn run<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    fn limits() -> UpstreamLimits {
        let d = Duration::from_secs(5);
        UpstreamLimits {
            connect_timeout: d,
            response_timeout: d,
            idle_timeout: Duration::from_secs(60),
            max_connections: 8,
            queue_size: 8,
        }
    }

    fn group(addr: UpstreamAddr, protocol: UpstreamProtocol, tls: UpstreamTls) -> UpstreamGroup {
        let spec = UpstreamSpec {
            endpoints: vec![addr],
            protocol,
            limits: limits(),
            tls: Some(tls),
        };
        UpstreamGroup::compile(&spec, &mut HashMap::new())
    }

    fn https(b: &Backend, tls: UpstreamTls) -> UpstreamGroup {
        group(UpstreamAddr::Socket(b.addr), UpstreamProtocol::Http1, tls)
    }

    fn get(version: Version) -> Outgoing {
        let (body, sent) = UpstreamBody::buffered(Bytes::new());
        let request = if version == Version::HTTP_2 {
            // As `service` makes it for an HTTP/2 upstream.
            Request::builder().uri("http://backend.test/svc.Echo/Call")
        } else {
            Request::builder().uri("/").header(HOST, "backend.test")
        };
        let request = request.version(version).body(body).unwrap();
        Outgoing { request, sent }
    }

    /// One request through `forward`: the response body, read whole (so an
    /// HTTP/1 connection goes back to the pool), or the error.
    async fn fetch(g: &UpstreamGroup, version: Version) -> Result<String, ProxyError> {
        let (resp, _) = forward(get(version), g, &Metrics::default()).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    fn server(ca: &Ca) -> ServerOpts<'static> {
        ServerOpts {
            cert: ca.issue(&["backend.test"], false),
            client_ca: None,
            h2: false,
        }
    }

    fn verified(ca: &Ca, name: Option<&str>) -> UpstreamTls {
        UpstreamTls {
            verify: Some(vec![ca.der()]),
            server_name: name.map(str::to_string),
            ..UpstreamTls::default()
        }
    }

    #[test]
    fn https_without_verification_pools_the_connection() {
        run(async {
            // The pod's certificate is its own, trusted by nobody.
            let ca = Ca::new("pod's own");
            let b = backend(ServerOpts {
                h2: true,
                ..server(&ca)
            })
            .await;
            let g = https(&b, UpstreamTls::unverified());
            assert_eq!(fetch(&g, Version::HTTP_11).await.unwrap(), "HTTP/1.1 -");
            assert_eq!(fetch(&g, Version::HTTP_11).await.unwrap(), "HTTP/1.1 -");
            assert_eq!(
                b.accepts.get(),
                1,
                "the second request reused the connection"
            );
            let hellos = b.hellos.borrow();
            assert_eq!(
                hellos[0].sni, None,
                "no SNI by default (proxy_ssl_server_name off)"
            );
            assert_eq!(hellos[0].alpn, None, "HTTPS offers no ALPN, as proxy_pass");
        });
    }

    #[test]
    fn verification_against_the_ca_and_the_name() {
        run(async {
            let ca = Ca::new("backend CA");
            let other = Ca::new("another CA");
            let b = backend(server(&ca)).await;
            let ok = https(&b, verified(&ca, Some("backend.test")));
            assert_eq!(fetch(&ok, Version::HTTP_11).await.unwrap(), "HTTP/1.1 -");
            let chain_only = https(&b, verified(&ca, None));
            assert!(fetch(&chain_only, Version::HTTP_11).await.is_ok());

            let wrong_ca = https(&b, verified(&other, Some("backend.test")));
            let err = fetch(&wrong_ca, Version::HTTP_11).await.unwrap_err();
            assert!(matches!(err, ProxyError::UpstreamConnect), "{err:?}");
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
            let wrong_ca_no_name = https(&b, verified(&other, None));
            assert!(fetch(&wrong_ca_no_name, Version::HTTP_11).await.is_err());
            let wrong_name = https(&b, verified(&ca, Some("other.test")));
            let err = fetch(&wrong_name, Version::HTTP_11).await.unwrap_err();
            assert!(matches!(err, ProxyError::UpstreamConnect), "{err:?}");
            assert_eq!(
                b.hellos.borrow().len(),
                2,
                "only the two verified ones completed"
            );
        });
    }

    #[test]
    fn sni_only_when_asked() {
        run(async {
            let ca = Ca::new("backend CA");
            let b = backend(server(&ca)).await;
            let sni = |server_name: Option<&str>, sni: bool| UpstreamTls {
                server_name: server_name.map(str::to_string),
                sni,
                ..UpstreamTls::default()
            };
            for tls in [
                sni(Some("backend.test"), true),
                sni(Some("backend.test"), false),
                sni(None, true),
            ] {
                fetch(&https(&b, tls), Version::HTTP_11).await.unwrap();
            }
            // A name endpoint (an ExternalName Service) sends its own name.
            let by_name = UpstreamAddr::Name {
                host: "localhost".into(),
                port: b.addr.port(),
            };
            let g = group(by_name, UpstreamProtocol::Http1, sni(None, true));
            fetch(&g, Version::HTTP_11).await.unwrap();
            let seen: Vec<_> = b.hellos.borrow().iter().map(|h| h.sni.clone()).collect();
            assert_eq!(
                seen,
                [
                    Some("backend.test".to_string()),
                    None,
                    None, // an IP address is never sent
                    Some("localhost".to_string()),
                ]
            );
        });
    }

    #[test]
    fn client_certificate_for_mutual_tls() {
        run(async {
            let ca = Ca::new("backend CA");
            let clients = Ca::new("client CA");
            let b = backend(ServerOpts {
                client_ca: Some(&clients),
                ..server(&ca)
            })
            .await;
            let without = https(&b, verified(&ca, Some("backend.test")));
            let err = fetch(&without, Version::HTTP_11).await.unwrap_err();
            // In TLS 1.3 the server's refusal comes after the client's
            // handshake ends, so it is seen as the request fails: still a 502.
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err:?}");

            let ours = clients.issue(&["heim.test"], true);
            let with = https(
                &b,
                UpstreamTls {
                    client_cert: Some(ours.clone()),
                    ..verified(&ca, Some("backend.test"))
                },
            );
            assert_eq!(fetch(&with, Version::HTTP_11).await.unwrap(), "HTTP/1.1 -");
            let hellos = b.hellos.borrow();
            assert_eq!(hellos.len(), 1);
            assert_eq!(hellos[0].client_certs, ours.chain);
        });
    }

    #[test]
    fn grpcs_is_h2_over_tls_by_alpn_multiplexed() {
        run(async {
            let ca = Ca::new("backend CA");
            let b = backend(ServerOpts {
                h2: true,
                ..server(&ca)
            })
            .await;
            let addr = UpstreamAddr::Socket(b.addr);
            let g = group(addr, UpstreamProtocol::H2c, UpstreamTls::unverified());
            for _ in 0..2 {
                assert_eq!(fetch(&g, Version::HTTP_2).await.unwrap(), "HTTP/2.0 https");
            }
            assert_eq!(b.accepts.get(), 1, "one connection for both requests");
            assert_eq!(b.hellos.borrow()[0].alpn.as_deref(), Some(&b"h2"[..]));
        });
    }

    #[test]
    fn websocket_upgrade_runs_over_tls() {
        run(async {
            let ca = Ca::new("backend CA");
            let b = backend(server(&ca)).await;
            let g = https(&b, UpstreamTls::unverified());
            let mut sender = open_http1(&g.endpoints[0], &g, &Metrics::default(), true)
                .await
                .unwrap();
            let (body, _) = UpstreamBody::buffered(Bytes::new());
            let req = Request::builder()
                .uri("/ws")
                .header(HOST, "backend.test")
                .header(UPGRADE, "websocket")
                .header(CONNECTION, "upgrade")
                .body(body)
                .unwrap();
            let mut resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
            let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
            io.write_all(b"ping").await.unwrap();
            let mut echo = [0u8; 4];
            io.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"ping");
        });
    }

    #[test]
    fn unusable_settings_fail_closed() {
        let ca = Ca::new("backend CA");
        let leaf = ca.issue(&["heim.test"], true);
        let other_key = ca.issue(&["heim.test"], true).key;
        let cases = [
            (
                UpstreamTls {
                    verify: Some(vec![]),
                    ..UpstreamTls::default()
                },
                UpstreamTlsError::NoCaCertificate,
            ),
            (
                UpstreamTls {
                    verify: Some(vec![CertificateDer::from(vec![1, 2, 3])]),
                    ..UpstreamTls::default()
                },
                UpstreamTlsError::CaCertificate {
                    index: 0,
                    reason: String::new(),
                },
            ),
            (
                UpstreamTls {
                    server_name: Some("not a name".into()),
                    ..UpstreamTls::default()
                },
                UpstreamTlsError::ServerName("not a name".into()),
            ),
            (
                UpstreamTls {
                    client_cert: Some(ClientCert {
                        chain: leaf.chain.clone(),
                        key: other_key,
                    }),
                    ..UpstreamTls::default()
                },
                UpstreamTlsError::ClientCert(String::new()),
            ),
        ];
        for (tls, want) in cases {
            let got = tls.validate().unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{tls:?}: {got}"
            );
            assert_eq!(UpstreamTlsClient::new(&tls).error(), Some(&got));
        }
        assert_eq!(UpstreamTls::unverified().validate(), Ok(()));
        assert_eq!(
            UpstreamTls {
                client_cert: Some(leaf),
                server_name: Some("10.0.0.1".into()),
                ..verified(&ca, None)
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn unusable_settings_answer_502_without_a_handshake() {
        run(async {
            let ca = Ca::new("backend CA");
            let b = backend(server(&ca)).await;
            let broken = UpstreamTls {
                verify: Some(vec![]),
                ..UpstreamTls::default()
            };
            let err = fetch(&https(&b, broken), Version::HTTP_11)
                .await
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
            assert!(b.hellos.borrow().is_empty());
        });
    }

    #[test]
    fn debug_never_prints_the_key() {
        let ca = Ca::new("backend CA");
        let cert = ca.issue(&["heim.test"], true);
        let key = format!("{:?}", cert.key.secret_der());
        let tls = UpstreamTls {
            client_cert: Some(cert),
            ..UpstreamTls::default()
        };
        let shown = format!("{tls:?} {:?}", UpstreamTlsClient::new(&tls));
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(&key[1..40]), "{shown}");
    }

    #[test]
    fn equality_covers_the_key() {
        let ca = Ca::new("backend CA");
        let a = ca.issue(&["heim.test"], true);
        let b = ClientCert {
            chain: a.chain.clone(),
            key: ca.issue(&["heim.test"], true).key,
        };
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
    }
}
