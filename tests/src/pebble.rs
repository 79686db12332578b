//! Pebble, Let's Encrypt's ACME test server (Debian `pebble`), and its
//! companion `pebble-challtestsrv` as the DNS server Pebble's validation
//! authority asks (every name resolves to 127.0.0.1), all on loopback.
//!
//! Pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`
//! of 127.0.0.1: the test gives it heim's listener ports, chosen before
//! either starts ([`free_port`]). Pebble's own HTTPS uses a certificate
//! from the test's [`Pki`]; the certificates it issues chain to a root made
//! at start, fetched from its management API ([`Pebble::root`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::CertificateDer;

use crate::cloudflare::ChallTestSrv;
use crate::Pki;

/// A free port on 127.0.0.1 (see `named::free_port`).
pub fn free_port() -> u16 {
    crate::named::free_port().expect("a free port")
}

fn need(bin: &str) -> anyhow::Result<()> {
    if !Path::new(bin).exists() {
        bail!("{bin} is missing: apt-get install pebble (tests/run does)");
    }
    Ok(())
}

/// A running Pebble (and challtestsrv when Pebble's DNS is its own);
/// killed on drop.
pub struct Pebble {
    child: Child,
    /// `https://localhost:PORT/dir`
    pub directory: String,
    pub management: SocketAddr,
    /// The DNS server Pebble asks, when it is the one started here.
    pub challtestsrv: Option<ChallTestSrv>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pebble {
    /// Starts Pebble validating on 127.0.0.1 `http_port` / `tls_port`,
    /// resolving names with `dns` (None: a challtestsrv started here).
    /// Its HTTPS certificate (for `localhost`) comes from `pki`.
    pub fn start(
        dir: &Path,
        pki: &Pki,
        http_port: u16,
        tls_port: u16,
        dns: Option<SocketAddr>,
    ) -> anyhow::Result<Pebble> {
        need("/usr/bin/pebble")?;
        let (dns, challtestsrv) = match dns {
            Some(d) => (d, None),
            None => {
                let c = ChallTestSrv::start()?;
                (c.dns, Some(c))
            }
        };
        pki.leaf("pebble", &["localhost"]);
        let port = free_port();
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": management.to_string(),
                "certificate": dir.join("pebble.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble-config.json");
        std::fs::write(&config_path, config.to_string())?;
        let log = std::fs::File::create(dir.join("pebble.log"))?;
        let child = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            // No sleeps before validation, no random nonce rejections, a
            // fresh authorization for every order.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn pebble")?;
        let pebble = Pebble {
            child,
            directory: format!("https://localhost:{port}/dir"),
            management,
            challtestsrv,
        };
        let up = crate::poll_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(management).is_ok()
        });
        if !up {
            bail!(
                "pebble did not start; its log:\n{}",
                std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
            );
        }
        Ok(pebble)
    }

    /// The root Pebble signs with (its management API, `/roots/0`).
    pub async fn root(&self, pki: &Pki) -> anyhow::Result<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        let pem = https_get(
            pki,
            &format!("https://localhost:{}/roots/0", self.management.port()),
        )
        .await?;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .context("pebble's root is no PEM certificate")
    }
}

/// GET over HTTPS trusting the test CA; the body as text.
pub async fn https_get(pki: &Pki, url: &str) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse()?;
    let host = uri.host().context("host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone())?;
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls::pki_types::ServerName::try_from(host.clone())?, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(uri.path())
        .header("host", format!("{host}:{port}"))
        .body(crate::Body::default())?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{url}: {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
