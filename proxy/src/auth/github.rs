//! GitHub sign-in (`kind = "github"`): GitHub is no OpenID provider, so
//! this is OAuth 2 (the web flow, with PKCE) and then GitHub's REST API,
//! read once at sign-in: the user, their verified primary email, their
//! organisations and teams. `web_url` and `api_url` point elsewhere for
//! GitHub Enterprise Server (and tests).

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::endpoints::url_encode;
use super::Identity;
use crate::http_client::HttpClient;

/// One GitHub (or GitHub Enterprise Server) provider.
#[derive(Debug)]
pub struct Github {
    client_id: String,
    client_secret: String,
    web_url: String,
    api_url: String,
}

impl Github {
    pub fn new(
        client_id: String,
        client_secret: String,
        web_url: Option<String>,
        api_url: Option<String>,
    ) -> Self {
        Self {
            client_id,
            client_secret,
            web_url: web_url.unwrap_or_else(|| "https://github.com".into()),
            api_url: api_url.unwrap_or_else(|| "https://api.github.com".into()),
        }
    }

    /// The authorization URL for one attempt (`verifier` is its PKCE secret).
    pub fn start(&self, redirect: &str, state: &str, verifier: &str) -> String {
        let challenge =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri={}&scope={}&state={}&code_challenge={challenge}&code_challenge_method=S256&allow_signup=false",
            self.web_url,
            url_encode(&self.client_id),
            url_encode(redirect),
            url_encode("read:user user:email read:org"),
            url_encode(state),
        )
    }

    /// Exchanges the code and reads the user, email, orgs and teams.
    pub async fn finish(
        &self,
        redirect: &str,
        code: &str,
        verifier: &str,
    ) -> Result<Identity, String> {
        let form = format!(
            "client_id={}&client_secret={}&code={}&redirect_uri={}&code_verifier={}",
            url_encode(&self.client_id),
            url_encode(&self.client_secret),
            url_encode(code),
            url_encode(redirect),
            url_encode(verifier),
        );
        let req = http::Request::post(format!("{}/login/oauth/access_token", self.web_url))
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.into_bytes())
            .map_err(|e| e.to_string())?;
        let token = json(req, "token exchange").await?;
        let access = token["access_token"]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "token exchange: {}",
                    token["error"].as_str().unwrap_or("no access_token")
                )
            })?
            .to_string();
        let user = self.api(&access, "/user").await?;
        let login = user["login"]
            .as_str()
            .ok_or("the user has no login")?
            .to_string();
        let emails = self.api(&access, "/user/emails").await?;
        let email = emails.as_array().and_then(|list| {
            list.iter()
                .find(|e| {
                    e["primary"].as_bool() == Some(true) && e["verified"].as_bool() == Some(true)
                })
                .and_then(|e| e["email"].as_str().map(str::to_string))
        });
        let orgs = self.api(&access, "/user/orgs?per_page=100").await?;
        let orgs: Vec<String> = orgs
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|o| o["login"].as_str())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let teams = self.api(&access, "/user/teams?per_page=100").await?;
        let teams: Vec<String> = teams
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|t| {
                        let org = t["organization"]["login"].as_str()?;
                        let slug = t["slug"].as_str()?;
                        Some(format!("{org}/{slug}").to_ascii_lowercase())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Identity {
            user: login,
            email,
            groups: Vec::new(),
            orgs,
            teams,
        })
    }

    async fn api(&self, token: &str, path: &str) -> Result<Value, String> {
        let req = http::Request::get(format!("{}{path}", self.api_url))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        json(req, path).await
    }
}

async fn json(req: http::Request<Vec<u8>>, what: &str) -> Result<Value, String> {
    let resp = HttpClient::default()
        .fetch(req)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{what}: {}", resp.status()));
    }
    serde_json::from_slice(resp.body()).map_err(|e| format!("{what}: {e}"))
}
