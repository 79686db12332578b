//! A stand-in for GitHub (which cannot be reached from here), following
//! the documented shapes of its OAuth web flow and REST API:
//! `GET /login/oauth/authorize` (redirects back with `code` and `state`),
//! `POST /login/oauth/access_token` (form in, JSON out with `Accept:
//! application/json`; PKCE S256 checked), and `GET /user`, `/user/emails`,
//! `/user/orgs`, `/user/teams` with `Authorization: Bearer`.
//!
//! The signed-in user is chosen by the test with `?login=` on the
//! authorize URL (GitHub's own login page is the browser's business).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// A GitHub account the double knows.
#[derive(Clone, Debug)]
pub struct Account {
    pub login: &'static str,
    /// (email, primary, verified)
    pub emails: Vec<(&'static str, bool, bool)>,
    pub orgs: Vec<&'static str>,
    /// (org, team slug)
    pub teams: Vec<(&'static str, &'static str)>,
}

struct Grant {
    login: String,
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct State {
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    /// Requests seen, for assertions (`METHOD path`).
    seen: Vec<String>,
}

/// The running double; stops when dropped.
pub struct GithubDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for GithubDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GithubDouble {
    /// `http://ADDR`: both `web_url` and `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests the double has served, as `METHOD /path`.
    pub fn seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Starts the double for OAuth app `client_id`/`client_secret`.
    pub async fn start(
        client_id: &'static str,
        client_secret: &'static str,
        accounts: Vec<Account>,
    ) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let accounts = Arc::new(accounts);
        let st = state.clone();
        let (addr, task) = crate::serve_http1(move |req| {
            let (st, accounts) = (st.clone(), accounts.clone());
            async move { answer(req, &st, &accounts, client_id, client_secret).await }
        })
        .await;
        Self { addr, state, task }
    }
}

fn params(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: u16, v: Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

async fn answer(
    req: http::Request<Incoming>,
    st: &Mutex<State>,
    accounts: &[Account],
    client_id: &str,
    client_secret: &str,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    st.lock()
        .unwrap()
        .seen
        .push(format!("{} {path}", parts.method));
    let query = params(parts.uri.query().unwrap_or(""));
    match (parts.method.as_str(), path.as_str()) {
        ("GET", "/login/oauth/authorize") => {
            let login = query.get("login").cloned().unwrap_or_default();
            if query.get("client_id").map(String::as_str) != Some(client_id)
                || query.get("code_challenge_method").map(String::as_str) != Some("S256")
                || !accounts.iter().any(|a| a.login == login)
            {
                return reply(400, json!({ "error": "bad authorize request" }));
            }
            let code = format!("code-{}", st.lock().unwrap().codes.len());
            let redirect_uri = query.get("redirect_uri").cloned().unwrap_or_default();
            st.lock().unwrap().codes.insert(
                code.clone(),
                Grant {
                    login,
                    challenge: query.get("code_challenge").cloned().unwrap_or_default(),
                    redirect_uri: redirect_uri.clone(),
                },
            );
            let state = query.get("state").cloned().unwrap_or_default();
            http::Response::builder()
                .status(302)
                .header(
                    "location",
                    format!("{redirect_uri}?code={code}&state={state}"),
                )
                .body(Full::new(Bytes::new()))
                .expect("response")
        }
        ("POST", "/login/oauth/access_token") => {
            let form = params(&String::from_utf8_lossy(&body));
            let json_wanted = parts
                .headers
                .get("accept")
                .is_some_and(|a| a.to_str().unwrap_or("").contains("application/json"));
            let mut s = st.lock().unwrap();
            let Some(grant) = form.get("code").and_then(|c| s.codes.remove(c)) else {
                return reply(200, json!({ "error": "bad_verification_code" }));
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge =
                URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
            if !json_wanted
                || form.get("client_id").map(String::as_str) != Some(client_id)
                || form.get("client_secret").map(String::as_str) != Some(client_secret)
                || form.get("redirect_uri") != Some(&grant.redirect_uri)
                || challenge != grant.challenge
            {
                return reply(200, json!({ "error": "incorrect_client_credentials" }));
            }
            let token = format!("gho_{}", s.tokens.len());
            s.tokens.insert(token.clone(), grant.login);
            reply(
                200,
                json!({ "access_token": token, "token_type": "bearer", "scope": "read:org,read:user,user:email" }),
            )
        }
        ("GET", api) => {
            let token = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let login = st.lock().unwrap().tokens.get(token).cloned();
            let Some(a) = login.and_then(|l| accounts.iter().find(|a| a.login == l)) else {
                return reply(401, json!({ "message": "Bad credentials" }));
            };
            if parts.headers.get("user-agent").is_none() {
                return reply(403, json!({ "message": "User-Agent required" }));
            }
            match api {
                "/user" => reply(200, json!({ "login": a.login, "id": 1, "type": "User" })),
                "/user/emails" => reply(
                    200,
                    Value::Array(
                        a.emails
                            .iter()
                            .map(|(e, p, v)| json!({ "email": e, "primary": p, "verified": v, "visibility": "private" }))
                            .collect(),
                    ),
                ),
                "/user/orgs" => reply(
                    200,
                    Value::Array(a.orgs.iter().map(|o| json!({ "login": o, "id": 2 })).collect()),
                ),
                "/user/teams" => reply(
                    200,
                    Value::Array(
                        a.teams
                            .iter()
                            .map(|(o, t)| json!({ "slug": t, "name": t, "organization": { "login": o } }))
                            .collect(),
                    ),
                ),
                _ => reply(404, json!({ "message": "Not Found" })),
            }
        }
        _ => reply(404, json!({ "message": "Not Found" })),
    }
}
