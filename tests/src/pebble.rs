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
        let reply = crate::Client::new(&pki.ca_der)
            .get(self.management, "localhost", "/roots/0")
            .await?;
        if reply.status != 200 {
            bail!("pebble /roots/0: {}", reply.status);
        }
        CertificateDer::from_pem_slice(&reply.body).context("pebble's root is no PEM certificate")
    }
}
