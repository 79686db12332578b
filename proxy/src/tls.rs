//! TLS termination: the certificate store and rustls' server config.
//!
//! Certificates come from several sources (the config file's
//! `[[certificate]]` files, heim's ACME client, later Kubernetes Secrets).
//! [`CertLayers`] holds one layer per source, each replaced whole by its
//! source alone; after every change the live [`CertStore`] is rebuilt from
//! all layers and swapped in through an `ArcSwap`, so the [`CertResolver`]
//! rustls calls on every handshake sees it at once and no listener or
//! connection is touched. Precedence for a name: an exact name beats a
//! wildcard; among equals, a certificate the operator named (file, Secret)
//! beats one from ACME, then the earlier in its layer wins. The default
//! certificate (no SNI, or a name nothing covers) is the one covering
//! `server.default_certificate`, else the config file's first
//! `[[certificate]]`, else none: such handshakes then fail, counted as
//! `heim_tls_handshakes_total{result="no_certificate"}`.
//!
//! TLS-ALPN-01 (RFC 8737): a ClientHello offering only `acme-tls/1` gets the
//! challenge certificate ACME put here for its name, or nothing.
//! This module does not watch files (see `reload`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{CertificateSpec, Config, ConfigError};
use crate::route::wildcard_suffix;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

pub use crate::source::Source;

/// One certificate of a source: the names it serves and when it expires.
#[derive(Clone, Debug)]
pub struct CertEntry {
    /// Lowercase host names, `*.` for a one-label wildcard.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertEntry {
    /// Reads a PEM chain and key, as a source hands them over; `names`
    /// empty means the certificate's own DNS names.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        names: &[String],
    ) -> Result<Self, EntryError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EntryError::Cert(e.to_string()))?;
        if chain.is_empty() {
            return Err(EntryError::Cert("no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| EntryError::Key(format!("no private key: {e}")))?;
        Self::new(chain, &key, names)
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKeyDer<'_>,
        names: &[String],
    ) -> Result<Self, EntryError> {
        let leaf = Leaf::parse(&chain[0]).map_err(EntryError::Cert)?;
        let names = if names.is_empty() {
            leaf.names
        } else {
            if let Some(n) = names.iter().find(|n| !san_covers(&leaf.names, n)) {
                return Err(EntryError::Names(format!(
                    "{n:?} is not among the certificate's names ({})",
                    leaf.names.join(", ")
                )));
            }
            names.to_vec()
        };
        let signer = aws_lc_rs::sign::any_supported_type(key)
            .map_err(|e| EntryError::Key(format!("unsupported private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|e| {
            EntryError::Key(format!(
                "the private key does not match the certificate: {e}"
            ))
        })?;
        Ok(CertEntry {
            names,
            key: Arc::new(certified),
            not_after: leaf.not_after,
        })
    }
}

/// Why a certificate and key cannot be served, by the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
    /// A configured name the certificate is not valid for.
    #[error("{0}")]
    Names(String),
}

/// True when a certificate with subjectAltNames `sans` is valid for `host`
/// (`*.x` in `sans` covers one label; a wildcard host needs that wildcard).
fn san_covers(sans: &[String], host: &str) -> bool {
    sans.iter().any(|s| {
        s == host
            || (!host.starts_with("*.")
                && s.strip_prefix("*.")
                    .is_some_and(|suffix| wildcard_suffix(host) == Some(suffix)))
    })
}

/// True when one of `entries`, or an ACME name of `acme`, serves `name`.
pub fn names_cover(entries: &[CertEntry], acme: &[String], name: &str) -> bool {
    entries.iter().any(|e| san_covers(&e.names, name)) || san_covers(acme, name)
}

/// Host name -> certificate, with a default for unknown or missing SNI:
/// one snapshot, built from every layer.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Every certificate that serves a name, for the metrics: (source,
    /// the first name it serves, notAfter).
    expiry: Vec<(Source, String, i64)>,
}

impl CertStore {
    /// Adds a certificate for `names`; names already held keep theirs.
    fn insert(&mut self, names: &[String], key: &Arc<CertifiedKey>) {
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
    }

    /// The store for `layers` (in precedence order) and a default name.
    fn build(layers: &BTreeMap<Source, Vec<CertEntry>>, default_name: Option<&str>) -> CertStore {
        let mut store = CertStore::default();
        for entries in layers.values() {
            for e in entries {
                store.insert(&e.names, &e.key);
            }
        }
        // A certificate every one of whose names another one took serves
        // nothing, and is not reported.
        for (source, entries) in layers {
            for e in entries {
                let serves = |n: &String| {
                    let held = match n.strip_prefix("*.") {
                        Some(suffix) => store.wildcard.get(suffix),
                        None => store.exact.get(n),
                    };
                    held.is_some_and(|k| Arc::ptr_eq(k, &e.key))
                };
                if let Some(first) = e.names.iter().find(|n| serves(n)) {
                    store.expiry.push((*source, first.clone(), e.not_after));
                }
            }
        }
        store.default = match default_name {
            Some(name) => store.lookup(name),
            None => layers
                .get(&Source::File)
                .and_then(|f| f.first())
                .map(|e| e.key.clone()),
        };
        store
    }

    fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        if let Some(k) = wildcard_suffix(name).and_then(|s| self.wildcard.get(s)) {
            return Some(k.clone());
        }
        name.strip_prefix("*.")
            .and_then(|s| self.wildcard.get(s))
            .cloned()
    }

    /// The certificate for a SNI name (lowercase): exact, then wildcard, then default.
    pub fn get(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        sni.and_then(|name| self.lookup(name))
            .or_else(|| self.default.clone())
    }

    /// True when a certificate other than the default names `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.exact.contains_key(host)
            || wildcard_suffix(host).is_some_and(|s| self.wildcard.contains_key(s))
    }

    /// `heim_certificate_expiry_seconds{name}`: seconds until each served
    /// certificate's notAfter (negative once expired) at `now` (Unix
    /// seconds), by the first name it serves; `heim_certificates{source}`:
    /// how many each source serves.
    pub fn render_expiry(&self, now: i64, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(
            "# HELP heim_certificate_expiry_seconds Seconds until a served certificate expires (negative: expired), by the first name it serves.\n\
             # TYPE heim_certificate_expiry_seconds gauge\n",
        );
        for (_, name, not_after) in &self.expiry {
            let _ = writeln!(
                out,
                "heim_certificate_expiry_seconds{{name=\"{}\"}} {}",
                crate::metrics::escape(name),
                not_after - now
            );
        }
        out.push_str(
            "# HELP heim_certificates Certificates served, by source (file, kubernetes, acme).\n\
             # TYPE heim_certificates gauge\n",
        );
        for source in [Source::File, Source::Kubernetes, Source::Acme] {
            let n = self.expiry.iter().filter(|(s, _, _)| *s == source).count();
            let _ = writeln!(
                out,
                "heim_certificates{{source=\"{}\"}} {n}",
                source.label()
            );
        }
    }

    /// Reads every certificate of a config (the file layer). Errors name
    /// the entry's line and key.
    pub fn file_layer(config: &Config) -> Result<Vec<CertEntry>, Vec<ConfigError>> {
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for spec in &config.certificates {
            match load_pair(spec) {
                Ok(e) => entries.push(e),
                Err((key, message)) => errors.push(ConfigError {
                    file: config.path.clone(),
                    line: spec.line,
                    key: format!("certificate[{}].{key}", spec.index),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(entries)
        } else {
            Err(errors)
        }
    }
}

/// Each source's certificates, and the default name.
#[derive(Debug, Default)]
struct Layers {
    by_source: BTreeMap<Source, Vec<CertEntry>>,
    default_name: Option<String>,
}

impl Layers {
    fn build(&self) -> Arc<CertStore> {
        Arc::new(CertStore::build(
            &self.by_source,
            self.default_name.as_deref(),
        ))
    }
}

/// Every source's certificates, and the live store built from them.
#[derive(Debug, Default)]
pub struct CertLayers {
    layers: Mutex<Layers>,
    live: ArcSwap<CertStore>,
    /// TLS-ALPN-01 challenge certificates, by name (set by ACME).
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertLayers {
    /// The live store.
    pub fn load(&self) -> Guard<Arc<CertStore>> {
        self.live.load()
    }

    /// Replaces one source's certificates and swaps in the rebuilt store.
    pub fn replace(&self, source: Source, entries: Vec<CertEntry>) {
        let mut l = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        l.by_source.insert(source, entries);
        self.live.store(l.build());
    }

    /// Replaces the file layer and the default name at once (a config reload).
    pub fn replace_files(&self, entries: Vec<CertEntry>, default_name: Option<String>) {
        let mut l = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        l.by_source.insert(Source::File, entries);
        l.default_name = default_name;
        self.live.store(l.build());
    }

    /// One source's certificates now.
    pub fn layer(&self, source: Source) -> Vec<CertEntry> {
        let l = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        l.by_source.get(&source).cloned().unwrap_or_default()
    }

    /// Serves `key` to TLS-ALPN-01 validation of `name` (None: stop).
    pub fn set_alpn_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut c = self
            .alpn_challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match key {
            Some(k) => c.insert(name.to_string(), k),
            None => c.remove(name),
        };
    }

    fn alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let c = self
            .alpn_challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.get(name).cloned()
    }
}

/// Loads one PEM chain + key; on error, which key (`cert_file`/`key_file`/`hosts`) and why.
fn load_pair(spec: &CertificateSpec) -> Result<CertEntry, (&'static str, String)> {
    let chain = read_chain(&spec.cert_file).map_err(|e| ("cert_file", e))?;
    let key = PrivateKeyDer::from_pem_file(&spec.key_file).map_err(|e| {
        (
            "key_file",
            format!("{}: no private key: {e}", spec.key_file.display()),
        )
    })?;
    CertEntry::new(chain, &key, &spec.hosts).map_err(|e| match e {
        EntryError::Cert(m) => ("cert_file", format!("{}: {m}", spec.cert_file.display())),
        EntryError::Key(m) => ("key_file", format!("{}: {m}", spec.key_file.display())),
        EntryError::Names(m) => ("hosts", format!("{}: {m}", spec.cert_file.display())),
    })
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

/// What heim reads off a leaf certificate.
#[derive(Debug)]
pub struct Leaf {
    /// subjectAltName DNS names, lowercased.
    pub names: Vec<String>,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// (authority key identifier, serial number) as ACME Renewal
    /// Information names a certificate; None without an AKI.
    pub ari_id: Option<(Vec<u8>, Vec<u8>)>,
}

impl Leaf {
    fn parse(cert: &CertificateDer<'_>) -> Result<Leaf, String> {
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
        let aki = x509
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        Ok(Leaf {
            names,
            not_before: x509.validity().not_before.timestamp(),
            not_after: x509.validity().not_after.timestamp(),
            ari_id: aki.map(|a| (a, x509.raw_serial().to_vec())),
        })
    }
}

/// What the leaf of a PEM certificate chain says.
pub fn leaf_info(chain_pem: &[u8]) -> Result<Leaf, String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or("no CERTIFICATE block")?
        .map_err(|e| e.to_string())?;
    Leaf::parse(&leaf)
}

/// rustls' view of the live [`CertStore`].
#[derive(Debug)]
pub struct CertResolver {
    certs: Arc<CertLayers>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Lowercased only when it is not already (no allocation on the
        // usual handshake).
        let name: Option<Cow<'_, str>> = hello.server_name().map(|n| {
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(n.to_ascii_lowercase())
            } else {
                Cow::Borrowed(n)
            }
        });
        // A validator offers `acme-tls/1` and nothing else (RFC 8737 §3).
        let acme = hello
            .alpn()
            .is_some_and(|mut p| p.next() == Some(ACME_TLS_ALPN) && p.all(|p| p == ACME_TLS_ALPN));
        if acme {
            name.as_deref().and_then(|n| self.certs.alpn_challenge(n))
        } else {
            self.certs.load().get(name.as_deref())
        }
    }
}

/// True when a handshake failed because no certificate covers the name
/// (the resolver found none, so rustls gave up).
pub fn is_no_certificate(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::General(m) if m == "no server certificate chain resolved"))
}

/// The rustls server config heim serves with: TLS 1.3 and 1.2, ALPN h2,
/// http/1.1 and acme-tls/1, session tickets and a session cache for resumption.
pub fn server_config(certs: Arc<CertLayers>) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CertResolver { certs }));
    // `acme-tls/1` last: only an ACME validator offers it, alone.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    cfg.ticketer = aws_lc_rs::Ticketer::new()?;
    cfg.session_storage = ServerSessionMemoryCache::new(20_000);
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> CertEntry {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        CertEntry::from_pem(
            c.cert.pem().as_bytes(),
            c.key_pair.serialize_pem().as_bytes(),
            &[],
        )
        .expect("entry")
    }

    fn served(l: &CertLayers, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        l.load().get(sni)
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (default, wild, exact) = (
            entry(&["default.test"]),
            entry(&["*.example.com"]),
            entry(&["app.example.com"]),
        );
        let l = CertLayers::default();
        l.replace_files(vec![default.clone(), wild.clone(), exact.clone()], None);
        let cases = [
            (Some("app.example.com"), &exact),
            (Some("other.example.com"), &wild),
            (Some("a.b.example.com"), &default),
            (Some("example.com"), &default),
            (Some("unknown.org"), &default),
            (None, &default),
        ];
        for (sni, want) in cases {
            let got = served(&l, sni).expect("a cert");
            assert!(Arc::ptr_eq(&got, &want.key), "{sni:?}");
        }
    }

    #[test]
    fn layers_replace_alone_and_operator_certificates_win() {
        let l = CertLayers::default();
        let file_app = entry(&["app.example.com"]);
        let acme_app = entry(&["app.example.com"]);
        let acme_wild = entry(&["*.example.com"]);
        let acme_other = entry(&["other.test"]);
        l.replace(
            Source::Acme,
            vec![acme_app.clone(), acme_wild.clone(), acme_other.clone()],
        );
        // Only ACME: its certificates serve; no default is named, so an
        // unknown name gets none.
        assert!(Arc::ptr_eq(
            &served(&l, Some("app.example.com")).unwrap(),
            &acme_app.key
        ));
        assert!(served(&l, Some("unknown.org")).is_none());
        assert!(served(&l, None).is_none());
        // A file for the same exact name beats ACME's; the wildcard from
        // ACME still serves the other names; a reload of the file layer
        // leaves ACME's layer alone.
        l.replace_files(vec![file_app.clone()], None);
        assert!(Arc::ptr_eq(
            &served(&l, Some("app.example.com")).unwrap(),
            &file_app.key
        ));
        assert!(Arc::ptr_eq(
            &served(&l, Some("x.example.com")).unwrap(),
            &acme_wild.key
        ));
        assert!(Arc::ptr_eq(
            &served(&l, Some("unknown.org")).unwrap(),
            &file_app.key
        ));
        l.replace_files(Vec::new(), Some("other.test".into()));
        assert!(Arc::ptr_eq(
            &served(&l, Some("app.example.com")).unwrap(),
            &acme_app.key
        ));
        assert!(Arc::ptr_eq(
            &served(&l, Some("unknown.org")).unwrap(),
            &acme_other.key
        ));
        assert_eq!(l.layer(Source::Acme).len(), 3);
        // An exact ACME name beats an operator's wildcard.
        let file_wild = entry(&["*.example.com"]);
        l.replace_files(vec![file_wild.clone()], None);
        assert!(Arc::ptr_eq(
            &served(&l, Some("app.example.com")).unwrap(),
            &acme_app.key
        ));
        assert!(Arc::ptr_eq(
            &served(&l, Some("x.example.com")).unwrap(),
            &file_wild.key
        ));
    }

    #[test]
    fn configured_hosts_must_be_covered_by_the_certificate() {
        let c = rcgen::generate_simple_self_signed(vec![
            "app.example.com".to_string(),
            "*.ssh.example.com".to_string(),
        ])
        .expect("rcgen");
        let (cert, key) = (c.cert.pem(), c.key_pair.serialize_pem());
        let with = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            CertEntry::from_pem(cert.as_bytes(), key.as_bytes(), &names)
        };
        assert!(with(&["app.example.com", "a.ssh.example.com", "*.ssh.example.com"]).is_ok());
        for bad in ["other.example.com", "a.b.ssh.example.com", "*.example.com"] {
            match with(&[bad]) {
                Err(EntryError::Names(m)) => assert!(m.contains(bad), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn expiry_is_rendered_per_served_certificate() {
        let l = CertLayers::default();
        let e = entry(&["app.example.com"]);
        let not_after = e.not_after;
        l.replace(Source::Acme, vec![e, entry(&["other.example.com"])]);
        // The file's certificate for app.example.com shadows ACME's.
        l.replace_files(vec![entry(&["app.example.com"])], None);
        let mut out = String::new();
        l.load().render_expiry(not_after - 100, &mut out);
        let series: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("heim_certificate_expiry_seconds{"))
            .collect();
        assert_eq!(series.len(), 2, "{out}");
        assert!(
            out.contains("heim_certificate_expiry_seconds{name=\"other.example.com\"}"),
            "{out}"
        );
        assert!(
            out.contains("heim_certificates{source=\"file\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("heim_certificates{source=\"acme\"} 1"),
            "{out}"
        );
        let mut only_acme = String::new();
        let l = CertLayers::default();
        let e = entry(&["app.example.com"]);
        l.replace(Source::Acme, vec![e]);
        l.load().render_expiry(not_after - 100, &mut only_acme);
        assert!(
            only_acme.contains("heim_certificate_expiry_seconds{name=\"app.example.com\"} "),
            "{only_acme}"
        );
    }

    #[test]
    fn names_come_from_subject_alt_names() {
        let c = rcgen::generate_simple_self_signed(vec![
            "A.example.com".into(),
            "*.b.example.com".into(),
        ])
        .expect("rcgen");
        let leaf = leaf_info(c.cert.pem().as_bytes()).expect("parse");
        assert_eq!(leaf.names, vec!["a.example.com", "*.b.example.com"]);
    }
}
