//! OpenID Connect sign-in (`kind = "oidc"`, and `"google"` with its issuer
//! preset) through `openidconnect`: the authorization code flow with PKCE
//! (S256), `state` and `nonce`; the ID token verified against the issuer's
//! keys from discovery; claims completed from the userinfo endpoint (many
//! issuers put `email` and `groups` only there); `email_verified` required.
//!
//! Discovery (and its keys) is fetched at the first sign-in, kept for an
//! hour, and fetched again at once when a token names a key heim has not
//! seen. Nothing here runs per request: an issuer that is down stops new
//! sign-ins, never existing sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use serde_json::Value;

use super::Identity;
use crate::http_client::HttpClient;

/// Discovery is fetched again after this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Discovered {
    metadata: CoreProviderMetadata,
    at: Instant,
}

/// One OIDC provider.
pub struct Oidc {
    issuer: String,
    client_id: String,
    client_secret: String,
    scopes: Vec<String>,
    groups_claim: String,
    hd: Option<String>,
    discovered: ArcSwapOption<Discovered>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// What a sign-in attempt needs back at the callback.
pub struct Started {
    pub url: String,
    pub nonce: String,
    pub verifier: String,
}

impl Oidc {
    pub fn new(
        issuer: String,
        client_id: String,
        client_secret: String,
        scopes: Vec<String>,
        groups_claim: String,
        hd: Option<String>,
    ) -> Self {
        Self {
            issuer,
            client_id,
            client_secret,
            scopes,
            groups_claim,
            hd,
            discovered: ArcSwapOption::empty(),
        }
    }

    async fn client(&self, redirect: &str, fresh: bool) -> Result<Client, String> {
        let cached = self.discovered.load_full();
        let d = match cached {
            Some(d) if !fresh && d.at.elapsed() < DISCOVERY_TTL => d,
            _ => {
                let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| e.to_string())?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &HttpClient::default())
                    .await
                    .map_err(|e| format!("discovery at {}: {e}", self.issuer))?;
                let d = Arc::new(Discovered {
                    metadata,
                    at: Instant::now(),
                });
                self.discovered.store(Some(d.clone()));
                d
            }
        };
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| e.to_string())?;
        Ok(CoreClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(self.client_id.clone()),
            Some(ClientSecret::new(self.client_secret.clone())),
        )
        .set_redirect_uri(redirect))
    }

    /// The issuer, as configured (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The provider's authorization URL for one attempt.
    pub async fn start(&self, redirect: &str, state: &str) -> Result<Started, String> {
        let client = self.client(redirect, false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in self.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        if let Some(hd) = &self.hd {
            req = req.add_extra_param("hd", hd.clone());
        }
        let (url, _, nonce) = req.url();
        Ok(Started {
            url: url.to_string(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code and reads who signed in.
    pub async fn finish(
        &self,
        redirect: &str,
        code: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<Identity, String> {
        let client = self.client(redirect, false).await?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| e.to_string())?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&HttpClient::default())
            .await
            .map_err(|e| format!("token exchange: {e}"))?;
        let id_token = token
            .id_token()
            .ok_or("the token response has no ID token")?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // A key heim has not seen: the issuer rotated. Fetch its
                // keys again, once.
                let fresh = self.client(redirect, true).await?;
                let verifier = fresh.id_token_verifier();
                id_token
                    .claims(&verifier, &nonce)
                    .map_err(|_| format!("ID token: {first}"))?
                    .clone()
            }
        };
        // The verified token's payload, for claims the library does not
        // model (groups, hd).
        let raw = id_token.to_string();
        let payload: Value = raw
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice(&p).ok())
            .unwrap_or(Value::Null);
        let mut email = claims.email().map(|e| e.to_string());
        let mut verified = claims.email_verified();
        let mut groups = strings(&payload[&self.groups_claim]);
        // Without an email, the subject: stable and unique at the issuer,
        // unlike `preferred_username`, which users may choose.
        let username = claims.subject().to_string();
        if email.is_none() || groups.is_empty() {
            if let Some(info) = self
                .userinfo(&client, token.access_token().secret())
                .await?
            {
                if info["sub"].as_str() != Some(claims.subject().as_str()) {
                    return Err("userinfo is for another subject".into());
                }
                if email.is_none() {
                    email = info["email"].as_str().map(str::to_string);
                    verified = info["email_verified"].as_bool();
                }
                if groups.is_empty() {
                    groups = strings(&info[&self.groups_claim]);
                }
            }
        }
        if email.is_some() && verified != Some(true) {
            return Err("the provider has not verified this email address".into());
        }
        if let Some(hd) = &self.hd {
            if payload["hd"].as_str() != Some(hd.as_str()) {
                return Err(format!("not a member of the {hd} workspace"));
            }
        }
        Ok(Identity {
            user: email.clone().unwrap_or(username),
            email,
            groups,
            orgs: Vec::new(),
            teams: Vec::new(),
        })
    }

    async fn userinfo(&self, client: &Client, access_token: &str) -> Result<Option<Value>, String> {
        let Some(url) = client.user_info_url() else {
            return Ok(None);
        };
        let req = http::Request::get(url.as_str())
            .header("authorization", format!("Bearer {access_token}"))
            .header("accept", "application/json")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let resp = HttpClient::default()
            .fetch(req)
            .await
            .map_err(|e| format!("userinfo: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("userinfo: {}", resp.status()));
        }
        serde_json::from_slice(resp.body())
            .map(Some)
            .map_err(|e| format!("userinfo: {e}"))
    }
}

/// A claim that is a list of strings (or one string).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}
