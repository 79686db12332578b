//! TLS termination: the certificate store and rustls' server config.
//!
//! A [`CertStore`] maps host names (exact and one-label wildcard) to
//! certified keys; the [`CertResolver`] that rustls calls on every handshake
//! reads the current store through an `ArcSwap`, so a reload swaps
//! certificates without touching a listener or a connection. Stores are
//! built from PEM files here; Kubernetes Secrets and ACME fill the same
//! store later. This module does not watch files (see `reload`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{CertificateSpec, Config, ConfigError};
use crate::route::wildcard_suffix;

/// Host name -> certificate, with a default for unknown or missing SNI.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Adds a certificate for `names`; the first certificate added is the default.
    pub fn insert(&mut self, names: &[String], key: Arc<CertifiedKey>) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(suffix) => self
                    .wildcard
                    .entry(suffix.to_string())
                    .or_insert_with(|| key.clone()),
                None => self
                    .exact
                    .entry(name.clone())
                    .or_insert_with(|| key.clone()),
            };
        }
        self.default.get_or_insert(key);
    }

    /// The certificate for a SNI name (lowercase): exact, then wildcard, then default.
    pub fn get(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            if let Some(k) = self.exact.get(name) {
                return Some(k.clone());
            }
            if let Some(k) = wildcard_suffix(name).and_then(|s| self.wildcard.get(s)) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }

    /// True when a certificate other than the default names `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || wildcard_suffix(host).is_some_and(|s| self.wildcard.contains_key(s))
    }

    /// Reads every certificate of a config. Errors name the entry's line and key.
    pub fn from_config(config: &Config) -> Result<CertStore, Vec<ConfigError>> {
        let mut store = CertStore::default();
        let mut errors = Vec::new();
        for spec in &config.certificates {
            match load_pair(spec) {
                Ok((names, key)) => store.insert(&names, key),
                Err((key, message)) => errors.push(ConfigError {
                    file: config.path.clone(),
                    line: spec.line,
                    key: format!("certificate[{}].{key}", spec.index),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }
}

/// The names a certificate serves, and the certificate.
type NamedKey = (Vec<String>, Arc<CertifiedKey>);

/// Loads one PEM chain + key; on error, which key (`cert_file`/`key_file`) and why.
fn load_pair(spec: &CertificateSpec) -> Result<NamedKey, (&'static str, String)> {
    let chain = read_chain(&spec.cert_file).map_err(|e| ("cert_file", e))?;
    let key = PrivateKeyDer::from_pem_file(&spec.key_file).map_err(|e| {
        (
            "key_file",
            format!("{}: no private key: {e}", spec.key_file.display()),
        )
    })?;
    let signer = aws_lc_rs::sign::any_supported_type(&key).map_err(|e| {
        (
            "key_file",
            format!("{}: unsupported key: {e}", spec.key_file.display()),
        )
    })?;
    let names = if spec.hosts.is_empty() {
        dns_names(&chain[0])
            .map_err(|e| ("cert_file", format!("{}: {e}", spec.cert_file.display())))?
    } else {
        spec.hosts.clone()
    };
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        (
            "key_file",
            format!(
                "{} does not match {}: {e}",
                spec.key_file.display(),
                spec.cert_file.display()
            ),
        )
    })?;
    Ok((names, Arc::new(certified)))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", path.display()));
    }
    Ok(chain)
}

/// The DNS names a certificate is for (subjectAltName), lowercased.
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::*;
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// rustls' view of the live [`CertStore`].
#[derive(Debug)]
pub struct CertResolver {
    store: Arc<ArcSwap<CertStore>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        match hello.server_name() {
            Some(n) if n.bytes().any(|b| b.is_ascii_uppercase()) => {
                store.get(Some(&n.to_ascii_lowercase()))
            }
            n => store.get(n),
        }
    }
}

/// The rustls server config heim serves with: TLS 1.3 and 1.2, ALPN h2 and
/// http/1.1, session tickets and a session cache for resumption.
pub fn server_config(store: Arc<ArcSwap<CertStore>>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CertResolver { store }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = aws_lc_rs::Ticketer::new()?;
    cfg.session_storage = ServerSessionMemoryCache::new(20_000);
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        let der = PrivateKeyDer::try_from(c.key_pair.serialize_der()).expect("key");
        let signer = aws_lc_rs::sign::any_supported_type(&der).expect("signer");
        Arc::new(CertifiedKey::new(vec![c.cert.der().clone()], signer))
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (default, wild, exact) = (
            key("default.test"),
            key("*.example.com"),
            key("app.example.com"),
        );
        let mut s = CertStore::default();
        s.insert(&["default.test".into()], default.clone());
        s.insert(&["*.example.com".into()], wild.clone());
        s.insert(&["app.example.com".into()], exact.clone());
        let cases = [
            (Some("app.example.com"), &exact),
            (Some("other.example.com"), &wild),
            (Some("a.b.example.com"), &default),
            (Some("example.com"), &default),
            (Some("unknown.org"), &default),
            (None, &default),
        ];
        for (sni, want) in cases {
            assert!(Arc::ptr_eq(&s.get(sni).expect("a cert"), want), "{sni:?}");
        }
    }

    #[test]
    fn names_come_from_subject_alt_names() {
        let c = rcgen::generate_simple_self_signed(vec![
            "A.example.com".into(),
            "*.b.example.com".into(),
        ])
        .expect("rcgen");
        let names = dns_names(c.cert.der()).expect("parse");
        assert_eq!(names, vec!["a.example.com", "*.b.example.com"]);
    }
}
