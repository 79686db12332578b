//! heim's own ACME client (RFC 8555, through `instant-acme`): it orders,
//! stores and renews certificates for `acme.domains` and every route with
//! `acme = true`, and feeds them to the certificate store's ACME layer.

pub mod dns;

use std::path::PathBuf;
use std::time::Duration;

/// How the ACME server is to check that heim controls a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A token at `http://NAME/.well-known/acme-challenge/` (port 80).
    Http01,
    /// A self-signed certificate on `acme-tls/1` (port 443, RFC 8737).
    TlsAlpn01,
    /// A TXT record `_acme-challenge.NAME`; the only one for wildcards.
    Dns01,
}

impl ChallengeKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http-01" => Some(Self::Http01),
            "tls-alpn-01" => Some(Self::TlsAlpn01),
            "dns-01" => Some(Self::Dns01),
            _ => None,
        }
    }

    /// The config spelling, also the `challenge` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }
}

/// `[acme.dns]`, validated but with its secret files not yet read.
#[derive(Clone, Debug, PartialEq)]
pub enum DnsProviderSpec {
    Rfc2136 {
        server: std::net::SocketAddr,
        tsig_key_name: String,
        tsig_algorithm: String,
        tsig_secret_file: PathBuf,
    },
    Cloudflare {
        api_token_file: PathBuf,
        zone_id: Option<String>,
        api_url: String,
    },
}

/// `[acme.dns]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    pub provider: DnsProviderSpec,
    pub check_servers: Vec<std::net::SocketAddr>,
    pub propagation_timeout: Duration,
}

/// `[acme]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AcmeSpec {
    pub directory: String,
    pub contact: Vec<String>,
    pub storage_dir: PathBuf,
    pub challenge: ChallengeKind,
    pub ca_file: Option<PathBuf>,
    /// `domains` plus the host of every route with `acme = true`, lowercase,
    /// without duplicates, in config order.
    pub domains: Vec<String>,
    pub dns: Option<DnsConfig>,
    /// Line of `[acme]`, for errors found when files are read.
    pub line: usize,
}

mod order;
pub mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::config::ConfigError;
use crate::http_client::HttpClient;
use crate::state::Shared;
use crate::tls::{CertEntry, Source};
use order::Orderer;

/// Answers the ACME server is checking right now, where the listeners
/// find them: HTTP-01 tokens here; TLS-ALPN-01 certificates in the
/// certificate store (see `tls::CertLayers::set_alpn_challenge`).
#[derive(Debug, Default)]
pub struct Challenges {
    /// token -> key authorization.
    http01: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// Serves (Some) or withdraws (None) the answer to an HTTP-01 token.
    pub fn set_http01(&self, token: &str, key_authorization: Option<&str>) {
        let mut m = self.http01.lock().unwrap_or_else(|e| e.into_inner());
        match key_authorization {
            Some(k) => m.insert(token.to_string(), k.to_string()),
            None => m.remove(token),
        };
    }

    /// The key authorization for a token under `/.well-known/acme-challenge/`.
    pub fn http01(&self, token: &str) -> Option<String> {
        let m = self.http01.lock().unwrap_or_else(|e| e.into_inner());
        m.get(token).cloned()
    }
}

/// `[acme]` with its files read: ready to run.
pub struct Loaded {
    pub spec: AcmeSpec,
    http: HttpClient,
    dns: Option<dns::DnsSpec>,
    /// What the files held, to tell a changed secret on reload.
    files: Vec<u8>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Loaded").field("spec", &self.spec).finish()
    }
}

/// Reads `[acme]`'s files (CA, TSIG secret, API token); errors name the key.
pub fn load(spec: &AcmeSpec, config_path: &std::path::Path) -> Result<Loaded, Vec<ConfigError>> {
    let err = |key: &str, message: String| ConfigError {
        file: config_path.to_path_buf(),
        line: spec.line,
        key: key.into(),
        message,
    };
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let http = match &spec.ca_file {
        None => Some(HttpClient::default()),
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let certs = std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|pem| {
                    files.extend_from_slice(&pem);
                    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{}: {e}", path.display()))
                })
                .and_then(|certs| match certs.is_empty() {
                    true => Err(format!("{}: no CERTIFICATE block", path.display())),
                    false => HttpClient::with_extra_roots(&certs),
                });
            certs.map_err(|m| errors.push(err("acme.ca_file", m))).ok()
        }
    };
    let dns = spec.dns.as_ref().and_then(|d| {
        let mut secret = |key: &str, path: &std::path::Path| match std::fs::read(path) {
            Ok(b) if !b.iter().all(u8::is_ascii_whitespace) => {
                files.extend_from_slice(&b);
                Some(b)
            }
            Ok(_) => {
                errors.push(err(key, format!("{} is empty", path.display())));
                None
            }
            Err(e) => {
                errors.push(err(key, format!("{}: {e}", path.display())));
                None
            }
        };
        let provider = match &d.provider {
            DnsProviderSpec::Rfc2136 {
                server,
                tsig_key_name,
                tsig_algorithm,
                tsig_secret_file,
            } => {
                secret("acme.dns.tsig_secret_file", tsig_secret_file)?;
                let key = dns::read_tsig_secret(tsig_secret_file)
                    .map_err(|m| errors.push(err("acme.dns.tsig_secret_file", m)))
                    .ok()?;
                dns::DnsProvider::Rfc2136 {
                    server: *server,
                    key_name: tsig_key_name.clone(),
                    algorithm: dns::TsigAlgorithm::parse(tsig_algorithm)?,
                    secret: key,
                }
            }
            DnsProviderSpec::Cloudflare {
                api_token_file,
                zone_id,
                api_url,
            } => {
                let token = secret("acme.dns.api_token_file", api_token_file)?;
                dns::DnsProvider::Cloudflare {
                    api_token: String::from_utf8_lossy(&token).trim().to_string(),
                    zone_id: zone_id.clone(),
                    api_url: api_url.clone(),
                }
            }
        };
        Some(dns::DnsSpec {
            provider,
            check_servers: d.check_servers.clone(),
            propagation_timeout: d.propagation_timeout,
        })
    });
    match http {
        Some(http) if errors.is_empty() => Ok(Loaded {
            spec: spec.clone(),
            http,
            dns,
            files,
        }),
        _ => Err(errors),
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`
/// (Unix seconds): inside the window the CA suggests by ACME Renewal
/// Information (RFC 9773) when it gives one (`pick` in 0..1 places it
/// there), else at two thirds of the lifetime, as Let's Encrypt advises.
pub fn renew_at(not_before: i64, not_after: i64, ari: Option<(i64, i64)>, pick: f64) -> i64 {
    match ari {
        Some((start, end)) if start <= end => start + ((end - start) as f64 * pick) as i64,
        _ => not_before + (not_after - not_before) * 2 / 3,
    }
}

/// The wait after the `failures`-th failure in a row: a minute, doubling,
/// at most six hours (Let's Encrypt allows 5 failed validations per name
/// and hour).
pub fn backoff(failures: u32) -> std::time::Duration {
    let mins = 1u64 << failures.saturating_sub(1).min(9);
    std::time::Duration::from_secs((mins * 60).min(6 * 3600))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Keeps the certificates of the current `[acme]` section: one task per
/// name on the control thread's runtime, restarted when the section (or
/// one of its files) changes on reload.
#[derive(Default)]
pub struct Manager {
    /// What runs: the spec (its `line` zeroed) and its files' contents.
    running: Option<(AcmeSpec, Vec<u8>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ACME layer, by name.
    issued: Arc<Mutex<BTreeMap<String, CertEntry>>>,
}

impl Manager {
    /// Runs `loaded` (or nothing); a no-op when it equals what runs.
    /// Must be called on a Tokio runtime.
    pub fn apply(&mut self, loaded: Option<Loaded>, shared: &Arc<Shared>) {
        // Where `[acme]` sits in the file is no change: a route added above
        // it must not abort the orders in flight.
        let running = loaded.as_ref().map(|l| {
            let spec = AcmeSpec {
                line: 0,
                ..l.spec.clone()
            };
            (spec, l.files.clone())
        });
        let same = running == self.running;
        if same {
            return;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let Some(loaded) = loaded else {
            self.running = None;
            self.issued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            shared.certs.replace(Source::Acme, Vec::new());
            return;
        };
        {
            // Names no longer wanted stop being served.
            let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
            issued.retain(|name, _| loaded.spec.domains.contains(name));
            shared
                .certs
                .replace(Source::Acme, issued.values().cloned().collect());
        }
        let orderer = Arc::new(Orderer::new(
            &loaded.spec,
            loaded.http,
            loaded
                .dns
                .map(|d| Arc::new(dns::DnsSolver::new(d, HttpClient::default()))),
            shared.acme_challenges.clone(),
            shared.certs.clone(),
        ));
        tracing::info!(
            directory = %loaded.spec.directory,
            challenge = loaded.spec.challenge.as_str(),
            domains = ?loaded.spec.domains,
            "ACME: keeping certificates"
        );
        for name in &loaded.spec.domains {
            let keeper = Keeper {
                name: name.clone(),
                orderer: orderer.clone(),
                shared: shared.clone(),
                issued: self.issued.clone(),
            };
            self.tasks.push(tokio::spawn(keeper.run()));
        }
        self.running = running;
    }
}

/// The task that keeps one name's certificate.
struct Keeper {
    name: String,
    orderer: Arc<Orderer>,
    shared: Arc<Shared>,
    issued: Arc<Mutex<BTreeMap<String, CertEntry>>>,
}

/// A certificate held, and when it is due.
struct Held {
    entry: CertEntry,
    not_before: i64,
    /// The ACME directory that issued it (None: put in storage by hand).
    directory: Option<String>,
    /// The certificate's ARI identifier (authority key id, serial), if any.
    ari_id: Option<(Vec<u8>, Vec<u8>)>,
}

impl Keeper {
    async fn run(self) {
        let challenge = self.orderer.challenge.as_str();
        let mut held = self.load_stored();
        if let Some(h) = &held {
            self.publish(h.entry.clone());
            tracing::info!(name = %self.name, expires_in_s = h.entry.not_after - unix_now(), "ACME: certificate loaded from storage");
        }
        let mut failures = 0u32;
        loop {
            let now = unix_now();
            let due = match &held {
                None => now,
                // Switched CAs (say, from staging): the new one's, now.
                Some(h) if self.foreign(h) => now,
                Some(h) => {
                    let ari = self.renewal_info(h).await;
                    let pick = f64::from(rand_u16()) / f64::from(u16::MAX);
                    renew_at(h.not_before, h.entry.not_after, ari, pick)
                }
            };
            if due > now {
                tracing::info!(name = %self.name, renew_in_s = due - now, "ACME: next renewal");
                // Woken at least twice a day to ask for renewal info again.
                let wait = (due - now).min(12 * 3600) as u64;
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            let Some(_lock) = self.lock().await else {
                continue;
            };
            // Another process may have renewed it while this one waited.
            if let Some(h) = self.load_stored() {
                let stored_due = renew_at(h.not_before, h.entry.not_after, None, 0.0);
                if held
                    .as_ref()
                    .is_none_or(|old| old.entry.not_after < h.entry.not_after)
                    && stored_due > unix_now()
                    && !self.foreign(&h)
                {
                    self.publish(h.entry.clone());
                    held = Some(h);
                    continue;
                }
            }
            let why = match &held {
                None => "no certificate yet",
                Some(h) if self.foreign(h) => "the certificate is from another ACME directory",
                Some(h) if h.entry.not_after <= now => "the certificate has expired",
                Some(_) => "renewal is due",
            };
            tracing::info!(name = %self.name, challenge, why, "ACME: ordering a certificate");
            self.shared.metrics.acme_order(challenge);
            match self.order().await {
                Ok(h) => {
                    failures = 0;
                    tracing::info!(name = %self.name, challenge, expires_in_s = h.entry.not_after - unix_now(), "ACME: certificate issued and serving");
                    held = Some(h);
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    self.shared.metrics.acme_failure(challenge, &e.reason);
                    tracing::error!(
                        name = %self.name,
                        challenge,
                        reason = %e.reason,
                        retry_in_s = wait.as_secs(),
                        serving = held.as_ref().map(|h| h.entry.not_after > now),
                        "ACME: order failed: {}",
                        e.message
                    );
                    drop(_lock);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// True for a certificate another ACME directory issued.
    fn foreign(&self, h: &Held) -> bool {
        h.directory
            .as_ref()
            .is_some_and(|d| *d != self.orderer.directory)
    }

    /// Orders and checks a new certificate, serves it, then stores it. A
    /// certificate that cannot be stored still serves: ordering it again
    /// would spend the CA's duplicate-certificate limit.
    async fn order(&self) -> Result<Held, order::OrderError> {
        let (chain, key) = self.orderer.order(&self.name).await?;
        let mut held =
            held(chain.as_bytes(), key.as_bytes(), &self.name).map_err(|m| order::OrderError {
                reason: "bad_certificate".into(),
                message: format!("the CA's certificate for {}: {m}", self.name),
            })?;
        held.directory = Some(self.orderer.directory.clone());
        self.publish(held.entry.clone());
        let stored = self.orderer.storage.save(
            &self.name,
            &self.orderer.directory,
            chain.as_bytes(),
            key.as_bytes(),
        );
        if let Err(e) = stored {
            self.shared
                .metrics
                .acme_failure(self.orderer.challenge.as_str(), "storage");
            tracing::error!(name = %self.name, error = %e, "ACME: the new certificate serves but cannot be stored: a restart will order it again");
        }
        Ok(held)
    }

    fn load_stored(&self) -> Option<Held> {
        match self.orderer.storage.load(&self.name) {
            Ok(Some(s)) => match held(&s.chain_pem, &s.key_pem, &self.name) {
                Ok(h) => Some(Held {
                    directory: s.directory,
                    ..h
                }),
                Err(m) => {
                    tracing::warn!(name = %self.name, "ACME: the stored certificate is unusable, ordering anew: {m}");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(name = %self.name, error = %e, "ACME: cannot read the stored certificate");
                None
            }
        }
    }

    /// The order lock of this name; waits (and returns None, to look
    /// again) while another process holds it.
    async fn lock(&self) -> Option<std::fs::File> {
        match self.orderer.storage.try_lock(&self.name) {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                tracing::info!(name = %self.name, "ACME: another process is ordering this name; waiting");
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                None
            }
            Err(e) => {
                tracing::error!(name = %self.name, error = %e, "ACME: cannot take the order lock");
                self.shared
                    .metrics
                    .acme_failure(self.orderer.challenge.as_str(), "storage");
                tokio::time::sleep(backoff(1)).await;
                None
            }
        }
    }

    /// The CA's suggested renewal window, where it offers ARI.
    async fn renewal_info(&self, h: &Held) -> Option<(i64, i64)> {
        let (aki, serial) = h.ari_id.as_ref()?;
        self.orderer.renewal_window(aki, serial).await
    }

    fn publish(&self, entry: CertEntry) {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.insert(self.name.clone(), entry);
        self.shared
            .certs
            .replace(Source::Acme, issued.values().cloned().collect());
    }
}

/// A stored or issued certificate, checked to serve `name`.
fn held(chain_pem: &[u8], key_pem: &[u8], name: &str) -> Result<Held, String> {
    let entry =
        CertEntry::from_pem(chain_pem, key_pem, &[name.to_string()]).map_err(|e| e.to_string())?;
    let leaf = crate::tls::leaf_info(chain_pem)?;
    Ok(Held {
        entry,
        not_before: leaf.not_before,
        ari_id: leaf.ari_id,
        directory: None,
    })
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_two_thirds_or_inside_the_ari_window() {
        let day = 86_400;
        // A 90-day certificate: day 60.
        assert_eq!(renew_at(0, 90 * day, None, 0.5), 60 * day);
        // ARI moves it, e.g. for a revocation: anywhere inside the window.
        let w = Some((10 * day, 11 * day));
        assert_eq!(renew_at(0, 90 * day, w, 0.0), 10 * day);
        assert_eq!(renew_at(0, 90 * day, w, 1.0), 11 * day);
        // A window backwards is ignored.
        assert_eq!(
            renew_at(0, 90 * day, Some((11 * day, 10 * day)), 0.5),
            60 * day
        );
    }

    #[test]
    fn failures_back_off_to_six_hours() {
        assert_eq!(backoff(1).as_secs(), 60);
        assert_eq!(backoff(2).as_secs(), 120);
        assert_eq!(backoff(5).as_secs(), 960);
        assert_eq!(backoff(30).as_secs(), 6 * 3600);
    }

    #[test]
    fn http01_tokens_come_and_go() {
        let c = Challenges::default();
        c.set_http01("tok", Some("tok.thumb"));
        assert_eq!(c.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01("other"), None);
        c.set_http01("tok", None);
        assert_eq!(c.http01("tok"), None);
    }
}
