//! A browser, as far as heim can tell, for sign-in tests: cookies kept per
//! host by hand, local users' form, the hand-off; and a CLI token got the
//! way `heim-tunnel login` gets one (PKCE code on heim's own page).

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::{Body, Env, Heim, Reply};

/// The password of the tests' local users.
pub const ALICE_PASSWORD: &str = "correct horse";

/// A browser, as far as heim can tell: cookies per host, HTML wanted.
pub struct Browser<'a> {
    e: &'a Env,
    heim: &'a Heim,
    /// Cookies by host, name and value.
    pub cookies: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Browser<'a> {
    pub fn new(e: &'a Env, heim: &'a Heim) -> Self {
        Self {
            e,
            heim,
            cookies: BTreeMap::new(),
        }
    }

    /// One request to `https://host:port/path` (or a path on `host`).
    pub async fn go(&mut self, method: &str, url: &str, form: Option<&str>) -> Reply {
        let rest = url.strip_prefix("https://").expect("an https URL");
        let (authority, pq) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.split(':').next().unwrap().to_string();
        let mut b = http::Request::builder()
            .method(method)
            .uri(if pq.is_empty() { "/" } else { pq })
            .header("host", &host)
            .header("accept", "text/html,application/xhtml+xml");
        if let Some(jar) = self.cookies.get(&host) {
            let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !c.is_empty() {
                b = b.header("cookie", c.join("; "));
            }
        }
        if form.is_some() {
            b = b.header("content-type", "application/x-www-form-urlencoded");
        }
        let body = form.map(|f| Body::from(f.to_string())).unwrap_or_default();
        let r = self
            .e
            .client
            .request(self.heim.https, b.body(body).unwrap())
            .await
            .unwrap();
        for sc in r.headers.get_all("set-cookie") {
            let sc = sc.to_str().unwrap();
            let (kv, _) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = kv.split_once('=').unwrap();
            let jar = self.cookies.entry(host.clone()).or_default();
            if v.is_empty() || sc.contains("Max-Age=0") {
                jar.remove(k);
            } else {
                jar.insert(k.to_string(), v.to_string());
            }
        }
        r
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        self.go("GET", url, None).await
    }

    pub fn url(&self, host: &str, pq: &str) -> String {
        format!("https://{host}:{}{pq}", self.heim.https.port())
    }
}

pub fn location(r: &Reply) -> String {
    r.headers
        .get("location")
        .unwrap_or_else(|| panic!("no Location in {} {:?}", r.status, r.body))
        .to_str()
        .unwrap()
        .to_string()
}

/// After a sign-in form was posted (303 to the auth host's own login page):
/// the response that sends the browser on (to the hand-off, or to `rd`).
pub async fn onward(b: &mut Browser<'_>, posted: &Reply) -> Reply {
    assert_eq!(
        posted.status,
        303,
        "{:?}",
        String::from_utf8_lossy(&posted.body)
    );
    let to = location(posted);
    let url = if to.starts_with('/') {
        b.url("auth.wild.test", &to)
    } else {
        to
    };
    b.get(&url).await
}

/// Signs alice in from `start_url` and completes the hand-off: the browser
/// then holds the route host's session.
pub async fn signed_in_at(b: &mut Browser<'_>, start_url: &str) -> Reply {
    let done = sign_in(b, start_url, "alice@example.com", ALICE_PASSWORD).await;
    let handoff = onward(b, &done).await;
    assert_eq!(handoff.status, 302);
    b.get(&location(&handoff)).await
}

pub fn hidden(body: &[u8], name: &str) -> String {
    let html = String::from_utf8_lossy(body);
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + needle.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs `user` in starting from `start_url`; returns the last response.
pub async fn sign_in(b: &mut Browser<'_>, start_url: &str, user: &str, password: &str) -> Reply {
    let r = b.get(start_url).await;
    assert_eq!(r.status, 302, "{:?}", r.body);
    let login = location(&r);
    let form = b.get(&login).await;
    assert_eq!(form.status, 200, "{:?}", form.body);
    let state = hidden(&form.body, "state");
    let post_url = b.url("auth.wild.test", "/.heim/login");
    let body = format!(
        "state={state}&user={}&password={}",
        enc(user),
        enc(password)
    );
    b.go("POST", &post_url, Some(&body)).await
}

/// Signs `user` in on the auth host and gets a CLI access token for it,
/// as `heim-tunnel login` does (confirm on heim's page, code to a loopback
/// port, exchange with the PKCE verifier).
pub async fn cli_token(b: &mut Browser<'_>, auth_host: &str, user: &str) -> String {
    cli_tokens(b, auth_host, user).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Like [`cli_token`]: `/.heim/cli/token`'s whole answer (access and
/// refresh tokens, their lifetimes, the user).
pub async fn cli_tokens(b: &mut Browser<'_>, auth_host: &str, user: &str) -> serde_json::Value {
    let verifier = "a-cli-verifier-for-the-tests-0123456789abcdefghijkl";
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let login = b.url(
        auth_host,
        &format!("/.heim/cli/login?port=38123&challenge={challenge}"),
    );
    let first = b.get(&login).await;
    let confirm = if first.status == 200 {
        first
    } else {
        let posted = sign_in(b, &login, user, ALICE_PASSWORD).await;
        let mut back = onward(b, &posted).await;
        for _ in 0..4 {
            if back.status != 302 && back.status != 303 {
                break;
            }
            let to = location(&back);
            let url = match to.starts_with('/') {
                true => b.url(auth_host, &to),
                false => to,
            };
            back = b.get(&url).await;
        }
        assert_eq!(
            back.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&back.body)
        );
        back
    };
    let csrf = hidden(&confirm.body, "csrf");
    let url = b.url(auth_host, "/.heim/cli/login");
    let r = b
        .go(
            "POST",
            &url,
            Some(&format!("port=38123&challenge={challenge}&csrf={csrf}")),
        )
        .await;
    let code = location(&r)
        .strip_prefix("http://127.0.0.1:38123/callback?code=")
        .expect("a code for the loopback port")
        .to_string();
    let req = http::Request::post("/.heim/cli/token")
        .header("host", auth_host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=authorization_code&code={code}&code_verifier={verifier}"
        )))
        .unwrap();
    let r = b.e.client.request(b.heim.https, req).await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.json()
}
