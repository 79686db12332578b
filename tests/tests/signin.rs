//! Sign-in against the real binary, by HTTP exchanges a browser would make
//! (its cookies kept by hand): local users, sessions carried to a route's
//! host by a one-time hand-off, policies, identity headers and the JWT, and
//! the attacks the issue names.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use heim_e2e::web::{
    enc, hidden, location, onward, sign_in, signed_in_at, Browser, ALICE_PASSWORD as PASSWORD,
};
use heim_e2e::{env, Body, Env, Heim, Reply};

/// heim with sign-in: `auth.wild.test` is the auth host; `app.test/private`
/// admits `alice@example.com`, `app.test/admin` only `root@example.com`,
/// `app.test/` is public.
fn start(e: &Env, extra_routes: &str) -> Heim {
    start_with(
        e,
        "[[auth.provider]]\nname = \"local\"\nkind = \"local\"\nusers_file = \"users.txt\"\n",
        extra_routes,
    )
}

/// heim with sign-in by `providers` (TOML) and the routes above.
fn start_with(e: &Env, providers: &str, extra_routes: &str) -> Heim {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    std::fs::write(
        e.dir.join("users.txt"),
        format!("alice@example.com:{hash}\nbob:{hash}\n"),
    )
    .unwrap();
    std::fs::write(e.dir.join("cookie.secret"), [7u8; 32]).unwrap();
    let config = heim_e2e::config(
        "",
        &format!(
            r#"
[auth]
auth_host = "auth.wild.test"
cookie_secret_file = "cookie.secret"
signing_key_file = "jwt.pem"
session_ttl = "1h"

{providers}

[[route]]
host = "app.test"
path = "/"
echo = true
public = true

[[route]]
host = "app.test"
path = "/private"
echo = true
allow_emails = ["alice@example.com"]
identity_headers = {{ "X-WEBAUTH-USER" = "email" }}

[[route]]
host = "app.test"
path = "/admin"
echo = true
allow_emails = ["root@example.com"]
{extra_routes}
"#
        ),
    );
    Heim::start(&e.dir, &config).expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sign_in_hands_the_session_to_the_route_host() {
    let e = env("signin-flow");
    let heim = start(&e, "");
    let mut b = Browser::new(&e, &heim);
    let private = b.url("app.test", "/private/x?y=1");

    // Not signed in: a browser is sent to the auth host, with rd.
    let r = b.get(&private).await;
    assert_eq!(r.status, 302);
    let login = location(&r);
    assert!(
        login.starts_with(&b.url(
            "auth.wild.test",
            "/.heim/login?rd=https%3A%2F%2Fapp.test%3A"
        )),
        "{login}"
    );
    // A script gets 401.
    let api = e
        .client
        .request(
            heim.https,
            http::Request::get("/private")
                .header("host", "app.test")
                .header("accept", "application/json")
                .body(Body::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(api.status, 401);
    assert!(api.headers.contains_key("www-authenticate"));

    let done = sign_in(&mut b, &private, "alice@example.com", PASSWORD).await;
    assert_eq!(done.status, 303, "{:?}", done.body);
    // The auth host's own session cookie, with every attribute.
    let set: Vec<&str> = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-heim-session="))
        .expect("a session cookie");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age="] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Domain"), "host-only: {session}");
    assert!(session.len() < 4096);
    let next = onward(&mut b, &done).await;
    let handoff = location(&next);
    assert!(
        handoff.starts_with(&b.url("app.test", "/.heim/handoff?t=")),
        "{handoff}"
    );

    // The hand-off sets app.test's own cookie and returns to the page.
    let r = b.get(&handoff).await;
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), private);
    assert!(b.cookies["app.test"].contains_key("__Host-heim-session"));
    // It works once, and only in the browser it was made for.
    let mut other = Browser::new(&e, &heim);
    assert_eq!(other.get(&handoff).await.status, 400, "a replayed hand-off");

    let r = b.get(&private).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["identity"]["user"], "alice@example.com");
    assert_eq!(j["headers"]["x-heim-user"], "alice@example.com");
    assert_eq!(j["headers"]["x-heim-email"], "alice@example.com");
    assert_eq!(j["headers"]["x-webauth-user"], "alice@example.com");
    let jwt = j["headers"]["x-heim-jwt"]
        .as_str()
        .expect("a JWT")
        .to_string();
    verify_jwt(&mut b, &jwt, "app.test").await;

    // Someone the policy does not name: the 403 page says who they are.
    let r = b.get(&b.url("app.test", "/admin")).await;
    assert_eq!(r.status, 403);
    let page = String::from_utf8_lossy(&r.body);
    assert!(page.contains("alice@example.com"), "{page}");
    assert!(page.contains("/.heim/logout"), "{page}");

    // /.heim/me: the user and the routes they may use, never a token.
    let me = e
        .client
        .request(heim.https, {
            let c = format!(
                "__Host-heim-session={}",
                b.cookies["app.test"]["__Host-heim-session"]
            );
            http::Request::get("/.heim/me")
                .header("host", "app.test")
                .header("accept", "application/json")
                .header("cookie", c)
                .body(Body::default())
                .unwrap()
        })
        .await
        .unwrap();
    let j = me.json();
    assert_eq!(j["user"], "alice@example.com");
    let names: Vec<&str> = j["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"/private") && !names.contains(&"/admin"),
        "{names:?}"
    );
    let text = j.to_string();
    assert!(!text.contains("__Host") && !text.contains("eyJ"), "{text}");
}

/// Checks a JWT's ES256 signature against `/.heim/jwks.json` and its claims.
async fn verify_jwt(b: &mut Browser<'_>, jwt: &str, aud: &str) {
    let jwks = b
        .get(&b.url("auth.wild.test", "/.heim/jwks.json"))
        .await
        .json();
    let k = &jwks["keys"][0];
    let parts: Vec<&str> = jwt.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], k["kid"]);
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["iss"], b.url("auth.wild.test", ""));
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(ttl <= 300, "{ttl}");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(k["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(k["y"].as_str().unwrap()).unwrap());
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("the JWT verifies with the JWKS key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_unknown_users_look_alike_and_slow_down() {
    let e = env("signin-fail");
    let heim = start(&e, "");
    let mut answers = Vec::new();
    for (user, password) in [("alice@example.com", "wrong"), ("nobody", PASSWORD)] {
        let mut b = Browser::new(&e, &heim);
        let r = sign_in(
            &mut b,
            &format!("https://app.test:{}/private", heim.https.port()),
            user,
            password,
        )
        .await;
        assert_eq!(r.status, 401);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        // The same page but for the fresh attempt's state token.
        let state = hidden(&r.body, "state");
        answers.push(text.replace(&state, "STATE"));
        assert!(!b
            .cookies
            .get("auth.wild.test")
            .is_some_and(|j| j.contains_key("__Host-heim-session")));
    }
    assert_eq!(
        answers[0], answers[1],
        "unknown user and wrong password answer alike"
    );
    // Three failures for alice from here, then she is slowed down from
    // here, right password or not.
    let start_url = format!("https://app.test:{}/private", heim.https.port());
    let mut b = Browser::new(&e, &heim);
    for wrong in ["x", "y"] {
        let r = sign_in(&mut b, &start_url, "alice@example.com", wrong).await;
        assert_eq!(r.status, 401);
    }
    let r = sign_in(&mut b, &start_url, "alice@example.com", PASSWORD).await;
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    // bob, from the same address, is not locked out by alice's failures.
    let r = sign_in(&mut b, &start_url, "bob", PASSWORD).await;
    assert_eq!(r.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_needs_heims_own_form_and_revokes_the_session_everywhere() {
    let e = env("signin-logout");
    let heim = start(&e, "");
    let mut b = Browser::new(&e, &heim);
    let private = b.url("app.test", "/private");
    signed_in_at(&mut b, &private).await;
    assert_eq!(b.get(&private).await.status, 200);
    let stolen = b.cookies["app.test"]["__Host-heim-session"].clone();

    // CSRF: a POST without heim's token signs nobody out.
    let r = b
        .go("POST", &b.url("app.test", "/.heim/logout"), Some(""))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(b.get(&private).await.status, 200);

    let page = b.get(&b.url("app.test", "/.heim/logout")).await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf");
    let r = b
        .go(
            "POST",
            &b.url("app.test", "/.heim/logout"),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(b.get(&private).await.status, 302, "signed out");
    // A copy of the cookie stops working too, on every host.
    let mut thief = Browser::new(&e, &heim);
    thief
        .cookies
        .entry("app.test".into())
        .or_default()
        .insert("__Host-heim-session".into(), stolen);
    assert_eq!(thief.get(&private).await.status, 302);
    let auth_me = b.get(&b.url("auth.wild.test", "/.heim/me")).await;
    assert_eq!(auth_me.status, 302, "the auth host's session is gone too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cookies_tokens_and_identity_headers_get_nowhere() {
    let e = env("signin-forged");
    let heim = start(&e, "");
    let mut b = Browser::new(&e, &heim);
    let private = b.url("app.test", "/private");
    signed_in_at(&mut b, &private).await;
    let good = b.cookies["app.test"]["__Host-heim-session"].clone();

    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let none_jwt = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD
            .encode(r#"{"sub":"alice@example.com","email":"alice@example.com","exp":9999999999}"#)
    );
    let cases: Vec<(&str, String)> = vec![
        ("cookie", format!("__Host-heim-session={tampered}")),
        (
            "cookie",
            format!("__Host-heim-session={}", &good[..good.len() - 4]),
        ),
        ("cookie", "__Host-heim-session=".to_string()),
        ("authorization", format!("Bearer {none_jwt}")),
        ("authorization", format!("Bearer {good}")),
    ];
    for (name, value) in cases {
        let r = e
            .client
            .request(
                heim.https,
                http::Request::get("/private")
                    .header("host", "app.test")
                    .header(name, &value)
                    .body(Body::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{name}: {value}");
    }
    // Forged identity headers never reach the backend, with or without a session.
    let forged = [
        ("x-heim-user", "root@example.com"),
        ("x-heim-email", "root@example.com"),
        ("x_heim_email", "root@example.com"),
        ("x-webauth-user", "root@example.com"),
        ("x-forwarded-user", "root@example.com"),
    ];
    let mut req = http::Request::get("/private")
        .header("host", "app.test")
        .header("cookie", format!("__Host-heim-session={good}"));
    for (k, v) in forged {
        req = req.header(k, v);
    }
    let j = e
        .client
        .request(heim.https, req.body(Body::default()).unwrap())
        .await
        .unwrap()
        .json();
    assert_eq!(j["headers"]["x-heim-email"], "alice@example.com");
    assert_eq!(j["headers"]["x-webauth-user"], "alice@example.com");
    assert!(j["headers"].get("x_heim_email").is_none());
    assert!(j["headers"].get("x-forwarded-user").is_none());
    let mut req = http::Request::get("/").header("host", "app.test");
    for (k, v) in forged {
        req = req.header(k, v);
    }
    let j = e
        .client
        .request(heim.https, req.body(Body::default()).unwrap())
        .await
        .unwrap()
        .json();
    for (k, _) in forged {
        assert!(j["headers"].get(k).is_none(), "{k} on a public route");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_urls_never_leave_the_hosts_heim_serves() {
    let e = env("signin-rd");
    let heim = start(&e, "");
    let port = heim.https.port();
    let evil = [
        "//evil.com".to_string(),
        "https:evil.com".into(),
        "\\\\evil.com".into(),
        "/%09/evil.com".into(),
        "https://app.test@evil.com/".into(),
        format!("https://app.test:{port}@evil.com/"),
        "https://evil.com/".into(),
        "javascript:alert(1)".into(),
        "data:text/html,x".into(),
        "http://app.test/".into(),
    ];
    for rd in &evil {
        let mut b = Browser::new(&e, &heim);
        let start_url = b.url("auth.wild.test", &format!("/.heim/login?rd={}", enc(rd)));
        let form = b.get(&start_url).await;
        assert_eq!(form.status, 200);
        let state = hidden(&form.body, "state");
        let body = format!("state={state}&user=bob&password={}", enc(PASSWORD));
        let r = b
            .go(
                "POST",
                &b.url("auth.wild.test", "/.heim/login"),
                Some(&body),
            )
            .await;
        let r = onward(&mut b, &r).await;
        let to = location(&r);
        assert_eq!(
            to,
            b.url("auth.wild.test", "/.heim/me"),
            "rd {rd:?} went to {to}"
        );
    }
    // A pre-auth state from another browser (no cookie) is refused.
    let mut a = Browser::new(&e, &heim);
    let form = a.get(&a.url("auth.wild.test", "/.heim/login")).await;
    let state = hidden(&form.body, "state");
    let mut other = Browser::new(&e, &heim);
    let body = format!("state={state}&user=bob&password={}", enc(PASSWORD));
    let r = other
        .go(
            "POST",
            &other.url("auth.wild.test", "/.heim/login"),
            Some(&body),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// One plain-HTTP GET on loopback (to the GitHub double).
async fn plain_get(url: &str) -> Reply {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, pq) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(pq)
        .header("host", authority)
        .body(Body::default())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    use http_body_util::BodyExt;
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        version: parts.version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_sign_in_reads_orgs_and_teams() {
    use heim_e2e::github::{Account, GithubDouble};
    let e = env("signin-github");
    let gh = GithubDouble::start(
        "heim-app",
        "gh-secret",
        vec![
            Account {
                login: "octocat",
                emails: vec![
                    ("old@example.com", false, true),
                    ("octo@example.com", true, true),
                ],
                orgs: vec!["ICTSC", "other"],
                teams: vec![("ICTSC", "staff"), ("other", "x")],
            },
            Account {
                login: "drifter",
                emails: vec![("drifter@example.com", true, false)],
                orgs: vec!["other"],
                teams: vec![],
            },
        ],
    )
    .await;
    std::fs::write(e.dir.join("gh.secret"), "gh-secret\n").unwrap();
    let providers = format!(
        "[[auth.provider]]\nname = \"github\"\nkind = \"github\"\nclient_id = \"heim-app\"\n\
         client_secret_file = \"gh.secret\"\nweb_url = \"{0}\"\napi_url = \"{0}\"\n",
        gh.url()
    );
    let routes = "[[route]]\nhost = \"app.test\"\npath = \"/staff\"\necho = true\nallow_github_teams = [\"ictsc/staff\"]\n\
                  [[route]]\nhost = \"app.test\"\npath = \"/org\"\necho = true\nallow_github_orgs = [\"ictsc\"]\n";
    let heim = start_with(&e, &providers, routes);

    for (login, path, want) in [("octocat", "/staff", 200), ("drifter", "/org", 403)] {
        let mut b = Browser::new(&e, &heim);
        let target = b.url("app.test", path);
        let r = b.get(&target).await;
        let r = b.get(&location(&r)).await;
        assert_eq!(r.status, 302, "to GitHub: {:?}", r.body);
        let authorize = location(&r);
        assert!(
            authorize.starts_with(&format!("{}/login/oauth/authorize?", gh.url())),
            "{authorize}"
        );
        assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("state="));
        let back = plain_get(&format!("{authorize}&login={login}")).await;
        assert_eq!(back.status, 302, "{:?}", back.body);
        let callback = location(&back);
        assert!(
            callback.starts_with(&b.url("auth.wild.test", "/.heim/callback?code=")),
            "{callback}"
        );
        let r = b.get(&callback).await;
        assert_eq!(r.status, 303, "{:?}", String::from_utf8_lossy(&r.body));
        let r = b.get(&location(&r)).await;
        assert_eq!(location(&r), target);
        let r = b.get(&target).await;
        assert_eq!(
            r.status,
            want,
            "{login}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        if want == 200 {
            let id = &r.json()["identity"];
            assert_eq!(id["user"], "octocat");
            assert_eq!(
                id["email"], "octo@example.com",
                "the verified primary email"
            );
            assert_eq!(
                id["github_orgs"],
                serde_json::json!(["ictsc"]),
                "only orgs a policy names: {id}"
            );
            assert_eq!(id["github_teams"], serde_json::json!(["ictsc/staff"]));
            // The org route admits by org, case-insensitively.
            let r = b.get(&b.url("app.test", "/org")).await;
            assert_eq!(r.status, 200);
        } else {
            let page = String::from_utf8_lossy(&r.body);
            assert!(page.contains("drifter"), "{page}");
        }
    }
    let seen = gh.seen();
    for api in [
        "POST /login/oauth/access_token",
        "GET /user",
        "GET /user/emails",
        "GET /user/orgs",
        "GET /user/teams",
    ] {
        assert!(seen.iter().any(|s| s == api), "{api} not called: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_a_valid_signature_before_the_backend_sees_a_byte() {
    use aws_lc_rs::hmac;
    use std::sync::atomic::Ordering::SeqCst;
    let e = env("webhook");
    let u = heim_e2e::upstream::http1("hooks").await;
    std::fs::write(e.dir.join("hook.secret"), "s3cret\n").unwrap();
    let routes = format!(
        "[[route]]\nhost = \"app.test\"\npath = \"/hook\"\nupstream = [\"{}\"]\nmax_body_bytes = 1024\n\
         webhook = {{ provider = \"github\", secret_file = \"hook.secret\" }}\n",
        u.url()
    );
    let heim = start(&e, &routes);
    let sign = |body: &[u8], secret: &[u8]| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let tag = hmac::sign(&key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    };
    let payload = br#"{"zen":"Keep it logically awesome."}"#;
    let post = |sig: Option<String>, body: Vec<u8>| {
        let mut b = http::Request::post("/hook")
            .header("host", "app.test")
            .header("x-github-event", "ping")
            .header("content-type", "application/json");
        if let Some(s) = sig {
            b = b.header("x-hub-signature-256", s);
        }
        let client = e.client.clone();
        let addr = heim.https;
        let req = b.body(Body::from(body)).unwrap();
        async move { client.request(addr, req).await.unwrap().status }
    };
    let wrong_key = sign(payload, b"guess");
    let cases = [
        (None, payload.to_vec(), 401),
        (Some("sha256=".to_string()), payload.to_vec(), 401),
        (Some(wrong_key), payload.to_vec(), 401),
        (Some(sign(payload, b"s3cret")), b"tampered".to_vec(), 401),
        (Some(sign(&[b'x'; 2000], b"s3cret")), vec![b'x'; 2000], 413),
    ];
    for (sig, body, want) in cases {
        assert_eq!(post(sig.clone(), body).await, want, "{sig:?}");
    }
    assert_eq!(u.hits.load(SeqCst), 0, "the backend saw nothing");
    assert_eq!(
        post(Some(sign(payload, b"s3cret")), payload.to_vec()).await,
        200
    );
    assert_eq!(u.hits.load(SeqCst), 1);
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tokens_by_browser_code_and_pkce() {
    let e = env("signin-cli");
    let heim = start(&e, "");
    let mut b = Browser::new(&e, &heim);
    let private = b.url("app.test", "/private");
    let done = sign_in(&mut b, &private, "alice@example.com", PASSWORD).await;
    assert_eq!(done.status, 303);

    let verifier = "a-cli-verifier-that-is-long-enough-0123456789abcdef";
    let challenge = s256(verifier);
    for bad in [
        format!("port=0&challenge={challenge}"),
        format!("port=70000&challenge={challenge}"),
        format!("port=evil.com&challenge={challenge}"),
        "port=8000&challenge=short".to_string(),
    ] {
        let r = b
            .get(&b.url("auth.wild.test", &format!("/.heim/cli/login?{bad}")))
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    // The user says yes on heim's own page (a page cannot do it for them).
    let confirm = b
        .get(&b.url(
            "auth.wild.test",
            &format!("/.heim/cli/login?port=38123&challenge={challenge}"),
        ))
        .await;
    assert_eq!(confirm.status, 200);
    assert!(String::from_utf8_lossy(&confirm.body).contains("alice@example.com"));
    let csrf = hidden(&confirm.body, "csrf");
    let url = b.url("auth.wild.test", "/.heim/cli/login");
    let forged = b
        .go(
            "POST",
            &url,
            Some(&format!("port=38123&challenge={challenge}&csrf=x")),
        )
        .await;
    assert_eq!(forged.status, 400, "no code without heim's own page");
    let r = b
        .go(
            "POST",
            &url,
            Some(&format!("port=38123&challenge={challenge}&csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, 303);
    let to = location(&r);
    let code = to
        .strip_prefix("http://127.0.0.1:38123/callback?code=")
        .unwrap_or_else(|| panic!("only to the CLI's loopback port: {to}"))
        .to_string();

    let token = |form: String| {
        let client = e.client.clone();
        let addr = heim.https;
        async move {
            let req = http::Request::post("/.heim/cli/token")
                .header("host", "app.test")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form))
                .unwrap();
            client.request(addr, req).await.unwrap()
        }
    };
    let wrong = token(format!(
        "grant_type=authorization_code&code={code}&code_verifier=nope"
    ))
    .await;
    assert_eq!(wrong.status, 400, "a wrong verifier");
    let ok = token(format!(
        "grant_type=authorization_code&code={code}&code_verifier={verifier}"
    ))
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let replay = token(format!(
        "grant_type=authorization_code&code={code}&code_verifier={verifier}"
    ))
    .await;
    assert_eq!(replay.status, 400, "a code works once");
    let j = ok.json();
    let access = j["access_token"].as_str().unwrap().to_string();
    let refresh = j["refresh_token"].as_str().unwrap().to_string();
    assert!(j["expires_in"].as_u64().unwrap() <= 3600);

    let api = |bearer: String| {
        let client = e.client.clone();
        let addr = heim.https;
        async move {
            let req = http::Request::get("/private")
                .header("host", "app.test")
                .header("authorization", format!("Bearer {bearer}"))
                .body(Body::default())
                .unwrap();
            client.request(addr, req).await.unwrap()
        }
    };
    let r = api(access.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["identity"]["user"], "alice@example.com");
    assert!(
        r.json()["headers"].get("authorization").is_none(),
        "the token stays with heim"
    );
    let again = token(format!("grant_type=refresh_token&refresh_token={refresh}")).await;
    assert_eq!(again.status, 200);
    let fresh = again.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(api(fresh.clone()).await.status, 200);
    // A refresh token is no access token, nor the other way round.
    assert_eq!(api(refresh.clone()).await.status, 401);
    assert_eq!(
        token(format!("grant_type=refresh_token&refresh_token={access}"))
            .await
            .status,
        400
    );

    // Signing out in the browser ends the CLI's tokens too.
    let page = b.get(&b.url("auth.wild.test", "/.heim/logout")).await;
    let csrf = hidden(&page.body, "csrf");
    let url = b.url("auth.wild.test", "/.heim/logout");
    b.go("POST", &url, Some(&format!("csrf={csrf}"))).await;
    assert_eq!(api(fresh).await.status, 401);
    assert_eq!(
        token(format!("grant_type=refresh_token&refresh_token={refresh}"))
            .await
            .status,
        400
    );
}

/// A WebSocket outlives the request that authorized it: heim closes it
/// within 2 s of a logout or of a reload that takes the user's access away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_cut_when_access_ends() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let e = env("signin-ws");
    let ws = heim_e2e::upstream::websocket_echo().await;
    let routes = format!(
        "[[route]]\nhost = \"app.test\"\npath = \"/ws\"\nupstream = [\"{}\"]\nallow_emails = [\"alice@example.com\"]\n",
        ws.url()
    );
    let heim = start(&e, &routes);

    // Signed in, with a session cookie for app.test.
    let open = |cookie: String| {
        let client = e.client.clone();
        let addr = heim.https;
        async move {
            let (tls, _) = client.tls(addr, "app.test", false).await.unwrap();
            let mut req = "wss://app.test/ws".into_client_request().unwrap();
            req.headers_mut().insert("cookie", cookie.parse().unwrap());
            let (mut socket, resp) = tokio_tungstenite::client_async(req, tls)
                .await
                .expect("upgrade");
            assert_eq!(resp.status(), 101);
            socket.send(Message::text("ping")).await.unwrap();
            let back = socket.next().await.expect("open").expect("a message");
            assert_eq!(back.into_text().unwrap().as_str(), "ping");
            socket
        }
    };
    let closed_within = |mut socket: tokio_tungstenite::WebSocketStream<_>, limit: Duration| async move {
        let end = tokio::time::timeout(limit, async {
            while let Some(Ok(Message::Text(_))) = socket.next().await {}
        })
        .await;
        end.is_ok()
    };
    async fn signed_in(e: &Env, heim: &Heim) -> (String, String) {
        let mut b = Browser::new(e, heim);
        let private = b.url("app.test", "/private");
        signed_in_at(&mut b, &private).await;
        let app = b.cookies["app.test"]["__Host-heim-session"].clone();
        let auth = b.cookies["auth.wild.test"]["__Host-heim-session"].clone();
        (app, auth)
    }

    // 1. Logout revokes the session: the WebSocket goes.
    let (app, auth) = signed_in(&e, &heim).await;
    let socket = open(format!("__Host-heim-session={app}")).await;
    let mut b = Browser::new(&e, &heim);
    b.cookies
        .entry("auth.wild.test".into())
        .or_default()
        .insert("__Host-heim-session".into(), auth);
    let page = b.get(&b.url("auth.wild.test", "/.heim/logout")).await;
    let csrf = hidden(&page.body, "csrf");
    let url = b.url("auth.wild.test", "/.heim/logout");
    b.go("POST", &url, Some(&format!("csrf={csrf}"))).await;
    assert!(
        closed_within(socket, Duration::from_secs(3)).await,
        "cut after logout"
    );

    // 2. A reload that drops alice from the policy: the WebSocket goes.
    let (app, _) = signed_in(&e, &heim).await;
    let socket = open(format!("__Host-heim-session={app}")).await;
    let text = std::fs::read_to_string(&heim.config).unwrap();
    std::fs::write(
        &heim.config,
        text.replace(
            &format!(
                "upstream = [\"{}\"]\nallow_emails = [\"alice@example.com\"]",
                ws.url()
            ),
            &format!(
                "upstream = [\"{}\"]\nallow_emails = [\"root@example.com\"]",
                ws.url()
            ),
        ),
    )
    .unwrap();
    heim.signal("HUP");
    assert!(heim.wait_metric(
        "heim_config_reloads_total{result=\"ok\"} 1",
        Duration::from_secs(5)
    ));
    assert!(
        closed_within(socket, Duration::from_secs(3)).await,
        "cut after the policy changed"
    );
}

/// The README's first command, on a copy of the example: the demo user
/// signs in and the echo shows who they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_signs_the_demo_user_in() {
    let dir = heim_e2e::scratch("quickstart");
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for f in [
        "users.txt",
        "certs/local.pem",
        "certs/local-key.pem",
        "secrets/cookie",
    ] {
        let to = dir.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(examples.join(f), &to).unwrap();
    }
    let config = std::fs::read_to_string(examples.join("quickstart.toml"))
        .unwrap()
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0");
    let heim = Heim::start(&dir, &config).expect("the quickstart starts");
    let e = Env {
        pki: heim_e2e::Pki::new(&dir),
        dir: dir.clone(),
        client: heim_e2e::Client::any_certificate(),
    };
    let mut b = Browser::new(&e, &heim);
    let private = b.url("localhost", "/private");
    let r = b.get(&private).await;
    assert_eq!(r.status, 302);
    let form = b.get(&location(&r)).await;
    let state = hidden(&form.body, "state");
    let url = b.url("localhost", "/.heim/login");
    let r = b
        .go(
            "POST",
            &url,
            Some(&format!("state={state}&user=demo&password=heim-demo")),
        )
        .await;
    assert_eq!(r.status, 303, "{:?}", String::from_utf8_lossy(&r.body));
    let next = b.get(&b.url("localhost", &location(&r))).await;
    assert_eq!(location(&next), private);
    let j = b.get(&private).await.json();
    assert_eq!(j["identity"]["user"], "demo");
    assert_eq!(j["headers"]["x-webauth-user"], "demo");
    assert!(j["headers"]["x-heim-jwt"].is_string());
    // The key was created on first start, readable by heim alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("secrets/jwt-es256.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Reloading the sign-in page does not pile up cookies (oversized cookie
/// headers are the top complaint against oauth2-proxy and Pomerium).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_auth_cookies_do_not_pile_up() {
    let e = env("signin-pile");
    let heim = start(&e, "");
    let mut b = Browser::new(&e, &heim);
    let login = b.url("auth.wild.test", "/.heim/login");
    for _ in 0..10 {
        assert_eq!(b.get(&login).await.status, 200);
        let n = b.cookies["auth.wild.test"]
            .keys()
            .filter(|k| k.starts_with("__Host-heim-pre-"))
            .count();
        assert!(n <= 3, "{n} pre-auth cookies");
    }
    // The newest attempt still signs in.
    let form = b.get(&login).await;
    let state = hidden(&form.body, "state");
    let body = format!("state={state}&user=bob&password={}", enc(PASSWORD));
    let r = b.go("POST", &login, Some(&body)).await;
    assert_eq!(r.status, 303);
}

/// heim's credentials never reach a backend, a backend cannot set them, a
/// cookie opens on its own host only, and a name a wildcard certificate
/// merely covers is no place to send a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stay_on_their_host_and_away_from_backends() {
    let e = env("signin-bound");
    let planted = heim_e2e::upstream::raw_response(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: __Host-heim-session=planted; Path=/; Secure\r\nSet-Cookie: app=1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let routes = format!(
        "[[route]]\nhost = \"app.test\"\npath = \"/planted\"\nupstream = [\"{}\"]\nallow_any_authenticated = true\n",
        planted.url()
    );
    let heim = start(&e, &routes);
    let mut b = Browser::new(&e, &heim);
    let private = b.url("app.test", "/private");
    signed_in_at(&mut b, &private).await;
    let app_cookie = b.cookies["app.test"]["__Host-heim-session"].clone();
    let auth_cookie = b.cookies["auth.wild.test"]["__Host-heim-session"].clone();

    let get = |path: &'static str, cookie: String, extra: Option<(&'static str, String)>| {
        let client = e.client.clone();
        let addr = heim.https;
        async move {
            let mut r = http::Request::get(path)
                .header("host", "app.test")
                .header("cookie", format!("theme=dark; {cookie}"));
            if let Some((k, v)) = extra {
                r = r.header(k, v);
            }
            client
                .request(addr, r.body(Body::default()).unwrap())
                .await
                .unwrap()
        }
    };
    // The backend sees the user's other cookies, never heim's.
    for path in ["/private", "/"] {
        let j = get(path, format!("__Host-heim-session={app_cookie}"), None)
            .await
            .json();
        let cookies = j["headers"]["cookie"].as_str().unwrap_or("");
        assert!(cookies.contains("theme=dark"), "{path}: {cookies}");
        assert!(!cookies.contains("__Host-heim"), "{path}: {cookies}");
    }
    let r = get(
        "/planted",
        format!("__Host-heim-session={app_cookie}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["app=1"], "a backend cannot plant heim's cookie");
    // The auth host's cookie does not open on app.test.
    let r = get(
        "/private",
        format!("__Host-heim-session={auth_cookie}"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // `*.wild.test` has a certificate but no route: no session goes there.
    let evil = enc("https://evil.wild.test/steal");
    let r = b
        .get(&b.url("auth.wild.test", &format!("/.heim/login?rd={evil}")))
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), b.url("auth.wild.test", "/.heim/me"));
    let r = b.get(&b.url("evil.wild.test", "/.heim/handoff?t=x")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_routes_take_only_posts() {
    let e = env("webhook-methods");
    let u = heim_e2e::upstream::http1("hooks").await;
    std::fs::write(e.dir.join("hook.secret"), "s3cret").unwrap();
    let routes = format!(
        "[[route]]\nhost = \"app.test\"\npath = \"/hook\"\nupstream = [\"{}\"]\n\
         webhook = {{ provider = \"github\", secret_file = \"hook.secret\" }}\n",
        u.url()
    );
    let heim = start(&e, &routes);
    let (out, _) = e
        .client
        .raw(
            heim.https,
            "app.test",
            b"GET /hook/x HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Hub-Signature-256: sha256=b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(heim_e2e::raw_status(&out), 405, "{out}");
    assert_eq!(u.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
