//! A closed-loop full-handshake load generator: heim-bench itself is the client.
//!
//! `h2load -n N -c N -m1` (BENCH.md's handshake tool, still available with `--handshake-client
//! h2load`) opens all N connections at once: SYNs overflow the accept queue and are retried after
//! a second, so its handshakes/s is mostly queueing, and h2load (OpenSSL, which checks the
//! server's ECDSA signature: a P-256 verify costs the client ~2× the server's sign) cannot keep
//! one proxy core busy from the other core — the proxies idled at 36-67 % of their core.
//!
//! This client keeps `conns` connections in flight for `secs` seconds, each a fresh TCP
//! connection and a full TLS 1.3 handshake (X25519, TLS_AES_128_GCM_SHA256, ALPN http/1.1, no
//! session resumption, no SNI: the URL host is 127.0.0.1, as with h2load), one `GET /` with
//! `Connection: close`, the whole response, and the server's close. So the server closes first
//! and keeps the TIME_WAIT; the client never runs out of ports.
//!
//! To stay cheaper than the proxy it measures, the client pins the server's certificate (the
//! leaf must be byte-for-byte the bench certificate) instead of checking the handshake signature
//! with it: the server still signs every handshake, as it would for a browser. It is one thread
//! on core 0 (a current-thread tokio runtime), beside the backend nginx. Every wait is bounded;
//! all traffic is on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::idle::on_client_core;
use crate::load::LoadResult;
use crate::peers::BODY;

/// The request on every connection: the server answers, then closes.
const REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: heim-bench\r\nConnection: close\r\n\r\n";

/// One connection (connect, handshake, request, response, close) gives up after this.
const CONN_TIMEOUT: Duration = Duration::from_secs(10);

/// Latency samples kept (one per connection, µs); beyond it the rest count but are not kept.
const MAX_SAMPLES: usize = 4_000_000;

/// Runs `conns` connection loops against `addr` for `secs` seconds on core 0 and reports
/// completed handshakes (each with its one request) as `requests`.
pub fn run(addr: SocketAddr, cert: &Path, conns: u32, secs: u32) -> Result<LoadResult> {
    let expected = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read {}", cert.display()))?
        .next()
        .context("no certificate in the bench certificate file")?
        .with_context(|| format!("parse {}", cert.display()))?;
    let connector = TlsConnector::from(client_config(expected)?);
    on_client_core("handshake", move || {
        drive(addr, connector, conns, Duration::from_secs(secs.into()))
    })
}

/// What the connection loops share.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    first_error: Mutex<Option<String>>,
    tls: Mutex<Option<String>>,
}

async fn drive(
    addr: SocketAddr,
    connector: TlsConnector,
    conns: u32,
    secs: Duration,
) -> Result<LoadResult> {
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + secs;
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (connector, tally) = (connector.clone(), tally.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = tokio::time::timeout(CONN_TIMEOUT, one(addr, &connector, &tally))
                    .await
                    .unwrap_or_else(|_| Err(anyhow!("no answer in {CONN_TIMEOUT:?}")));
                match r {
                    Ok(()) => {
                        tally.ok.fetch_add(1, Relaxed);
                        let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                        let mut l = tally.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
                        if l.len() < MAX_SAMPLES {
                            l.push(us);
                        }
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, Relaxed);
                        tally
                            .first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert_with(|| format!("{e:#}"));
                        // A refused or reset connection must not turn into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    // Every loop ends by the deadline plus one connection's timeout.
    let drained = tokio::time::timeout(secs + CONN_TIMEOUT + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let wall = start.elapsed().as_secs_f64();
    let ok = tally.ok.load(Relaxed);
    let failed = tally.failed.load(Relaxed);
    ensure!(
        ok > 0,
        "no handshake completed against {addr} ({failed} failed); first error: {}",
        tally
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    );
    if let Some(e) = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
    {
        eprintln!(
            "heim-bench: {failed} of {} connections to {addr} failed; first: {e}",
            ok + failed
        );
    }
    let mut lat =
        std::mem::take(&mut *tally.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| -> Option<f64> {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).map(|&v| f64::from(v))
    };
    let mean = (!lat.is_empty())
        .then(|| lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64);
    let tls = tally.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(LoadResult {
        requests: ok,
        rps: ok as f64 / wall,
        errors: failed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        mean_us: mean,
        max_us: lat.last().map(|&v| f64::from(v)),
        tls,
    })
}

/// One connection: TCP, a full handshake, `GET /`, the response, the server's close.
async fn one(addr: SocketAddr, connector: &TlsConnector, tally: &Tally) -> Result<()> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    // An IP address: rustls sends no SNI, so the proxy answers with its default certificate.
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    {
        let mut t = tally.tls.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_none() {
            let (_, c) = tls.get_ref();
            *t = Some(describe(
                c.protocol_version(),
                c.negotiated_cipher_suite(),
                c.negotiated_key_exchange_group().map(|g| g.name()),
                c.alpn_protocol(),
            ));
        }
    }
    tls.write_all(REQUEST).await.context("send the request")?;
    tls.flush().await.context("send the request")?;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                ensure!(buf.len() <= 1 << 16, "a response over 64 KiB");
            }
            // A close without close_notify after a whole response is still a success.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("read the response"),
        }
    }
    check_response(&buf)
}

/// The whole response must be `200` with [`BODY`].
pub fn check_response(buf: &[u8]) -> Result<()> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the connection closed before the response head ended")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next().unwrap_or_default();
    ensure!(
        status.starts_with("HTTP/1.1 200"),
        "answered {status:?}, not HTTP/1.1 200"
    );
    let body = &buf[end + 4..];
    ensure!(
        body == BODY.as_bytes(),
        "the body is {:?}, not {BODY:?}",
        String::from_utf8_lossy(body)
    );
    Ok(())
}

/// "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519, http/1.1" (h2load's fields, in its order).
fn describe(
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::SupportedCipherSuite>,
    group: Option<rustls::NamedGroup>,
    alpn: Option<&[u8]>,
) -> String {
    let version = match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "?".to_string(),
    };
    let suite = suite.map_or("?".to_string(), |s| {
        format!("{:?}", s.suite())
            .trim_start_matches("TLS13_")
            .to_string()
    });
    let group = group.map_or("?".to_string(), |g| format!("{g:?}"));
    let alpn = alpn.map_or("none".to_string(), |a| {
        String::from_utf8_lossy(a).into_owned()
    });
    format!("{version}, TLS_{suite}, {group}, {alpn}")
}

/// TLS 1.3 only, X25519, TLS_AES_128_GCM_SHA256 (as h2load negotiates), ALPN http/1.1, no
/// resumption, and the bench certificate pinned.
fn client_config(expected: CertificateDer<'static>) -> Result<Arc<ClientConfig>> {
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
    provider.cipher_suites = vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 client config")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { expected, schemes }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Accepts exactly the bench certificate and does not check the handshake signature (see the
/// module docs: the client must cost less than the server it loads).
#[derive(Debug)]
struct Pinned {
    expected: CertificateDer<'static>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the bench certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world\n";
        assert!(check_response(ok).is_ok());
        assert!(check_response(&ok[..ok.len() - 1]).is_err());
        assert!(check_response(&ok[..20]).is_err());
        assert!(check_response(b"HTTP/1.1 502 Bad Gateway\r\n\r\nhello world\n").is_err());
    }

    #[test]
    fn tls_description() {
        let d = describe(
            Some(rustls::ProtocolVersion::TLSv1_3),
            Some(aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256),
            Some(rustls::NamedGroup::X25519),
            Some(b"http/1.1"),
        );
        assert_eq!(d, "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519, http/1.1");
    }
}
