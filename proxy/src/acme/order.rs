//! One ACME order for one name, start to finish: account, order, the
//! challenge (HTTP-01, TLS-ALPN-01 or DNS-01), finalization with a fresh
//! ECDSA P-256 key, the certificate chain. Whatever happens, the challenge
//! is withdrawn again (token, challenge certificate, TXT record).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};

use super::dns::{DnsSolver, TxtRecord};
use super::storage::{write_private, Storage};
use super::{ChallengeKind, Challenges};
use crate::http_client::HttpClient;
use crate::tls::CertLayers;

/// Why an order failed: a short `reason` for the metric's label (the ACME
/// problem type, or what failed on heim's side) and the whole story.
#[derive(Debug)]
pub struct OrderError {
    pub reason: String,
    pub message: String,
}

impl OrderError {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn acme(step: &str, e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => Self::problem(step, &p),
            instant_acme::Error::Other(e) => Self::new("network", format!("{step}: {e}")),
            instant_acme::Error::Timeout(_) => {
                Self::new("timeout", format!("{step}: the ACME server took too long"))
            }
            e => Self::new("client", format!("{step}: {e}")),
        }
    }

    /// From an ACME problem document (RFC 8555 §6.7, RFC 7807).
    fn problem(step: &str, p: &Problem) -> Self {
        let kind = p.r#type.as_deref().unwrap_or("");
        let reason = kind
            .strip_prefix("urn:ietf:params:acme:error:")
            .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("problem");
        let mut message = format!(
            "{step}: {} ({kind}, status {})",
            p.detail.as_deref().unwrap_or("no detail"),
            p.status.map_or("-".into(), |s| s.to_string())
        );
        for sub in &p.subproblems {
            message.push_str(&format!(
                "; {}: {}",
                sub.identifier
                    .as_ref()
                    .map_or("-".into(), |i| format!("{i:?}")),
                sub.detail.as_deref().unwrap_or("")
            ));
        }
        Self::new(reason, message)
    }
}

/// Everything an order needs, shared by the orders of one `[acme]`.
pub struct Orderer {
    pub directory: String,
    pub contact: Vec<String>,
    pub challenge: ChallengeKind,
    pub storage: Storage,
    pub http: HttpClient,
    pub dns: Option<Arc<DnsSolver>>,
    pub challenges: Arc<Challenges>,
    pub certs: Arc<CertLayers>,
    account: tokio::sync::Mutex<Option<Account>>,
}

/// instant-acme's view of heim's HTTP client.
struct AcmeHttp(HttpClient);

impl instant_acme::HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| instant_acme::Error::Other(e.into()))?
                .to_bytes();
            let resp = client
                .fetch(http::Request::from_parts(parts, body.to_vec()))
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(resp.map(|b| Full::new(Bytes::from(b)))))
        })
    }
}

/// A challenge's answer while it is up. `withdraw` takes it down (and
/// waits for a DNS record's removal); dropped without it, say when a reload
/// aborts the order, it is taken down all the same, DNS in the background.
enum Answer {
    Http01(Arc<Challenges>, String),
    TlsAlpn01(Arc<CertLayers>, String),
    Dns01(Arc<DnsSolver>, Option<TxtRecord>),
}

impl Answer {
    async fn withdraw(mut self) {
        if let Answer::Dns01(dns, record) = &mut self {
            if let Some(record) = record.take() {
                remove_record(dns, &record).await;
            }
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        match self {
            Answer::Http01(c, token) => c.set_http01(token, None),
            Answer::TlsAlpn01(certs, name) => certs.set_alpn_challenge(name, None),
            Answer::Dns01(dns, record) => {
                if let (Some(record), Ok(rt)) =
                    (record.take(), tokio::runtime::Handle::try_current())
                {
                    let dns = dns.clone();
                    rt.spawn(async move { remove_record(&dns, &record).await });
                }
            }
        }
    }
}

async fn remove_record(dns: &DnsSolver, record: &TxtRecord) {
    if let Err(e) = dns.cleanup(record).await {
        tracing::warn!(error = %e, ?record, "could not remove the ACME TXT record");
    }
}

impl Orderer {
    pub fn new(
        spec: &super::AcmeSpec,
        http: HttpClient,
        dns: Option<Arc<DnsSolver>>,
        challenges: Arc<Challenges>,
        certs: Arc<CertLayers>,
    ) -> Orderer {
        Orderer {
            directory: spec.directory.clone(),
            contact: spec.contact.clone(),
            challenge: spec.challenge,
            storage: Storage::new(&spec.storage_dir),
            http,
            dns,
            challenges,
            certs,
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// The account: from storage, or registered now (and stored).
    async fn account(&self) -> Result<Account, OrderError> {
        let mut cached = self.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let path = self.storage.account_path(&self.directory);
        let builder = || Account::builder_with_http(Box::new(AcmeHttp(self.http.clone())));
        let account = match std::fs::read(&path) {
            Ok(bytes) => {
                let creds: AccountCredentials = serde_json::from_slice(&bytes)
                    .map_err(|e| OrderError::new("storage", format!("{}: {e}", path.display())))?;
                builder()
                    .from_credentials(creds)
                    .await
                    .map_err(|e| OrderError::acme("loading the stored account", e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
                let (account, creds) = builder()
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| OrderError::acme("registering an account", e))?;
                let json = serde_json::to_vec(&creds)
                    .map_err(|e| OrderError::new("storage", e.to_string()))?;
                write_private(&path, &json)
                    .map_err(|e| OrderError::new("storage", format!("{}: {e}", path.display())))?;
                tracing::info!(directory = %self.directory, id = account.id(), "ACME account registered");
                account
            }
            Err(e) => {
                return Err(OrderError::new(
                    "storage",
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// The CA's suggested renewal window (Unix seconds) for a certificate
    /// (authority key id, serial), where the CA offers ARI (RFC 9773).
    pub async fn renewal_window(&self, aki: &[u8], serial: &[u8]) -> Option<(i64, i64)> {
        use rustls::pki_types::Der;
        let account = self.account().await.ok()?;
        let id =
            instant_acme::CertificateIdentifier::new(Der::from_slice(aki), Der::from_slice(serial));
        match account.renewal_info(&id).await {
            Ok((info, _)) => {
                let w = info.suggested_window;
                Some((w.start.unix_timestamp(), w.end.unix_timestamp()))
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                tracing::debug!(error = %e, "ACME renewal information unavailable");
                None
            }
        }
    }

    /// Orders a certificate for `name`; returns the chain and key as PEM.
    pub async fn order(&self, name: &str) -> Result<(String, String), OrderError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| OrderError::acme("creating the order", e))?;
        let mut answers = Vec::new();
        let result = self.validate(&mut order, name, &mut answers).await;
        for a in answers {
            a.withdraw().await;
        }
        result?;
        let key = rcgen::KeyPair::generate()
            .map_err(|e| OrderError::new("client", format!("key generation: {e}")))?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
            .map_err(|e| OrderError::new("client", format!("CSR for {name}: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| OrderError::new("client", format!("CSR for {name}: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| OrderError::acme("finalizing", e))?;
        let chain = order
            .poll_certificate(&retry())
            .await
            .map_err(|e| OrderError::acme("downloading the certificate", e))?;
        Ok((chain, key.serialize_pem()))
    }

    /// Answers the order's challenge and waits for the order to be ready.
    async fn validate(
        &self,
        order: &mut instant_acme::Order,
        name: &str,
        answers: &mut Vec<Answer>,
    ) -> Result<(), OrderError> {
        let kind = match self.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Dns01 => ChallengeType::Dns01,
        };
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| OrderError::acme("fetching the authorization", e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(OrderError::new(
                        "authorization",
                        format!("authorization for {name} is {other:?}"),
                    ))
                }
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                OrderError::new(
                    "unsupported_challenge",
                    format!(
                        "the ACME server offers no {} challenge for {name}",
                        self.challenge.as_str()
                    ),
                )
            })?;
            let key_auth = challenge.key_authorization();
            match self.challenge {
                ChallengeKind::Http01 => {
                    let token = challenge.token.clone();
                    self.challenges.set_http01(&token, Some(key_auth.as_str()));
                    answers.push(Answer::Http01(self.challenges.clone(), token));
                }
                ChallengeKind::TlsAlpn01 => {
                    let cert = alpn_certificate(name, key_auth.digest().as_ref())?;
                    self.certs.set_alpn_challenge(name, Some(cert));
                    answers.push(Answer::TlsAlpn01(self.certs.clone(), name.to_string()));
                }
                ChallengeKind::Dns01 => {
                    let dns = self
                        .dns
                        .as_ref()
                        .ok_or_else(|| OrderError::new("client", "dns-01 without [acme.dns]"))?;
                    let base = name.strip_prefix("*.").unwrap_or(name);
                    let record = dns
                        .present(base, &key_auth.dns_value())
                        .await
                        .map_err(|e| {
                            OrderError::new("dns", format!("creating the TXT record: {e}"))
                        })?;
                    let visible = dns.wait_visible(&record).await;
                    answers.push(Answer::Dns01(dns.clone(), Some(record)));
                    visible.map_err(|e| {
                        OrderError::new("dns", format!("waiting for the TXT record: {e}"))
                    })?;
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| OrderError::acme("answering the challenge", e))?;
        }
        let status = order
            .poll_ready(&retry())
            .await
            .map_err(|e| OrderError::acme("waiting for validation", e))?;
        if status == OrderStatus::Ready {
            return Ok(());
        }
        // Invalid: the challenge's error says why.
        let mut authzs = order.authorizations();
        while let Some(Ok(authz)) = authzs.next().await {
            if let Some(p) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
                return Err(OrderError::problem("validation", p));
            }
        }
        Err(OrderError::new(
            "invalid",
            format!("the order for {name} became {status:?}"),
        ))
    }
}

/// Polling an order: a quarter second, doubling, for up to two minutes.
fn retry() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(2.0)
        .timeout(Duration::from_secs(120))
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed, the
/// name as its only subjectAltName, and the critical acmeIdentifier
/// extension holding the SHA-256 digest of the key authorization.
fn alpn_certificate(
    name: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let fail = |e: rcgen::Error| OrderError::new("client", format!("TLS-ALPN-01 certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(fail)?;
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| OrderError::new("client", e.to_string()))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| OrderError::new("client", e.to_string()))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}
