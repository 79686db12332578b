//! Browser sign-in with a real OpenID provider and a real browser: node
//! `oidc-provider` (tests/browser/idp.mjs; its development login and consent
//! pages stand in for Google's) and Debian's chromium driven by
//! `playwright-core` (tests/browser/signin.mjs). heim discovers the provider,
//! signs the user in by the code flow with PKCE, reads email and groups from
//! userinfo, and applies the routes' group policies to them.
//!
//! The browser's requests never leave loopback: `*.test` resolves to
//! 127.0.0.1 inside chromium, and the provider listens on 127.0.0.1.
//!
//! Needs `tests/setup-browser` (chromium and the npm packages); without it
//! every test here fails and says so.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use heim_e2e::{wait_until, Env, Heim};
use serde_json::Value;

const CLIENT_SECRET: &str = "heim-test-secret";
const CHROMIUM: &str = "/usr/bin/chromium";
const SESSION_COOKIE: &str = "__Host-heim-session";
/// One whole browser run; signin.mjs gives up by itself after 120 s.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// tests/browser: the node scripts and their packages.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// node, npm, chromium and the npm packages as locked, or a failure that
/// says how to get them: a machine without them must not pass by skipping.
fn prerequisites() {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut missing: Vec<String> = ["node", "npm"]
        .into_iter()
        .filter(|t| !runs(t))
        .map(String::from)
        .collect();
    if !Path::new(CHROMIUM).exists() {
        missing.push(CHROMIUM.into());
    }
    let modules = browser_dir().join("node_modules");
    for package in ["oidc-provider", "playwright-core"] {
        if !modules.join(package).join("package.json").exists() {
            missing.push(format!("the npm package {package}"));
        }
    }
    // setup-browser copies the lock file in once `npm ci` has finished.
    let lock = std::fs::read(browser_dir().join("package-lock.json")).ok();
    let installed = std::fs::read(modules.join(".heim-package-lock.json")).ok();
    if missing.is_empty() && lock != installed {
        missing.push("the npm packages of tests/browser/package-lock.json as it is now".into());
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}: run `tests/setup-browser` (as root on Debian)",
        missing.join(", ")
    );
}

// === node child processes ===

/// A stream's lines as they come, and whether it has ended.
#[derive(Clone, Default)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<AtomicBool>,
}

impl Lines {
    fn read(stream: impl std::io::Read + Send + 'static) -> Lines {
        let out = Lines::default();
        let copy = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                copy.lines.lock().expect("lines").push(line);
            }
            copy.ended.store(true, Ordering::SeqCst);
        });
        out
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// `node <script> <args>` in tests/browser, its stdin held open (idp.mjs
/// exits when it closes) and its output collected; stopped on drop.
struct Node {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl Node {
    fn spawn(script: &str, args: &[String]) -> Node {
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("node {script}: {e}; run `tests/setup-browser`"));
        let stdout = Lines::read(child.stdout.take().expect("stdout"));
        let stderr = Lines::read(child.stderr.take().expect("stderr"));
        Node {
            child,
            stdout,
            stderr,
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        // SIGTERM first: playwright then closes chromium, which SIGKILL
        // would leave running.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if !heim_e2e::poll_until(Duration::from_secs(5), || self.exited()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The OpenID provider, at `issuer`.
struct Idp {
    node: Node,
    issuer: String,
}

impl Idp {
    async fn start(port: u16, redirect_uri: &str) -> Idp {
        let mut node = Node::spawn(
            "idp.mjs",
            &[port.to_string(), CLIENT_SECRET.into(), redirect_uri.into()],
        );
        let up = wait_until(Duration::from_secs(20), || {
            !node.stdout.all().is_empty() || node.exited()
        })
        .await;
        let line = node.stdout.all().first().cloned();
        let issuer = line
            .as_deref()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .and_then(|v| v["issuer"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                panic!(
                    "idp.mjs did not start (within 20 s: {up}); stdout {line:?}; stderr:\n{}",
                    node.stderr.all().join("\n")
                )
            });
        assert_eq!(issuer, format!("http://127.0.0.1:{port}"));
        Idp { node, issuer }
    }

    /// What the provider logged: one JSON line per request and error.
    fn log_text(&self) -> String {
        self.node
            .stderr
            .all()
            .into_iter()
            .filter(|l| !l.contains("WARNING"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// === the rig: heim, the provider, a browser ===

struct Rig {
    e: Env,
    heim: Heim,
    idp: Idp,
}

/// A port nobody listens on now (for the provider, which heim must know
/// before it starts, while the provider must know heim's port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// heim with the provider `idp`: `app.test/` is for the group `staff`,
/// `app.test/admin` for `admins`.
async fn rig(name: &str) -> Rig {
    prerequisites();
    let e = heim_e2e::env(name);
    let idp_port = free_port();
    // Hex, so that no random final byte is a newline heim trims off
    // (which left 31 bytes, and a refused config, once in 128 runs).
    let mut random = [0u8; 32];
    aws_lc_rs::rand::fill(&mut random).expect("random bytes");
    let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(e.dir.join("cookie.secret"), secret).expect("cookie secret");
    std::fs::write(e.dir.join("idp.secret"), CLIENT_SECRET).expect("client secret");
    let config = heim_e2e::config(
        "",
        &format!(
            r#"
[auth]
auth_host = "auth.wild.test"
cookie_secret_file = "cookie.secret"
signing_key_file = "jwt.pem"

[[auth.provider]]
name = "idp"
kind = "oidc"
issuer = "http://127.0.0.1:{idp_port}"
client_id = "heim"
client_secret_file = "idp.secret"
scopes = ["openid", "email", "profile", "groups"]

[[route]]
host = "app.test"
path = "/"
echo = true
allow_groups = ["staff"]

[[route]]
host = "app.test"
path = "/admin"
echo = true
allow_groups = ["admins"]
"#
        ),
    );
    // heim discovers the provider at the first sign-in, so it starts first.
    let heim = Heim::start(&e.dir, &config).expect("start heim");
    let redirect_uri = format!(
        "https://auth.wild.test:{}/.heim/callback",
        heim.https.port()
    );
    let idp = Idp::start(idp_port, &redirect_uri).await;
    Rig { e, heim, idp }
}

impl Rig {
    fn url(&self, host: &str, pq: &str) -> String {
        format!("https://{host}:{}{pq}", self.heim.https.port())
    }

    /// Signs `login` in with chromium from `start`, then runs `actions`
    /// (see signin.mjs); returns its report.
    async fn browser(&self, start: &str, login: &str, actions: &[String]) -> Value {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = self.e.dir.join(format!(
            "browser-{login}-{}",
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let mut args = vec![
            "--dir".to_string(),
            dir.display().to_string(),
            start.to_string(),
            login.to_string(),
        ];
        args.extend(actions.iter().cloned());
        let mut node = Node::spawn("signin.mjs", &args);
        let done = wait_until(BROWSER_TIMEOUT, || node.exited()).await;
        // Its one line may still be in the pipe when it exits.
        wait_until(Duration::from_secs(5), || node.stdout.ended()).await;
        let report = node
            .stdout
            .all()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok());
        let Some(report) = report.filter(|r| r["ok"] == true) else {
            panic!(
                "chromium did not finish signing {login} in (exited: {done}); report:\n{}\n\
                 signin.mjs stderr:\n{}\n{}",
                node.stdout.all().join("\n"),
                node.stderr.all().join("\n"),
                self.logs()
            );
        };
        report
    }

    /// heim's and the provider's logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "heim log:\n{}\nprovider log:\n{}",
            self.heim.log_text(),
            self.idp.log_text()
        )
    }

    /// A browser report and the logs, for failure messages.
    fn diag(&self, report: &Value) -> String {
        format!(
            "browser report:\n{}\n{}",
            serde_json::to_string_pretty(report).unwrap_or_default(),
            self.logs()
        )
    }
}

// === reading the report ===

/// The cookie `name` the browser holds for `domain`.
fn cookie<'a>(cookies: &'a Value, domain: &str, name: &str) -> Option<&'a Value> {
    cookies[domain]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The first response of `chain` whose URL starts with `prefix`.
fn hop<'a>(chain: &'a Value, prefix: &str) -> Option<&'a Value> {
    chain
        .as_array()?
        .iter()
        .find(|r| r["url"].as_str().is_some_and(|u| u.starts_with(prefix)))
}

/// The first response's redirect target in `page`'s chain.
fn first_location(page: &Value) -> String {
    page["chain"][0]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A URL's query parameters, decoded.
fn query(url: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// An echoed request header (a string, or the first of a list).
fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    let h = &echo["headers"][name];
    h.as_str().or_else(|| h[0].as_str())
}

/// The session cookie is heim's, host-only and locked down, on `host`.
fn assert_session_cookie(rig: &Rig, report: &Value, host: &str) {
    let c = cookie(&report["cookies"], host, SESSION_COOKIE)
        .unwrap_or_else(|| panic!("no {SESSION_COOKIE} on {host}:\n{}", rig.diag(report)));
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["sameSite"], "Lax", "{c}");
    assert_eq!(c["path"], "/", "{c}");
    assert_eq!(c["domain"], host, "host-only, no Domain attribute: {c}");
}

/// Checks a JWT's ES256 signature against heim's `/.heim/jwks.json`;
/// returns its claims.
async fn verify_jwt(rig: &Rig, jwt: &str) -> Value {
    let jwks = rig
        .e
        .client
        .get(rig.heim.https, "auth.wild.test", "/.heim/jwks.json")
        .await
        .expect("jwks")
        .json();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let part = |i: usize| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[i]).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (part(0), part(1));
    assert_eq!(header["alg"], "ES256");
    let k = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .unwrap_or_else(|| panic!("no key {} in {jwks}", header["kid"]));
    assert_eq!(k["kty"], "EC");
    assert_eq!(k["crv"], "P-256");
    let mut point = vec![4u8];
    for c in ["x", "y"] {
        point.extend(
            URL_SAFE_NO_PAD
                .decode(k[c].as_str().expect("coordinate"))
                .expect("base64url"),
        );
    }
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("the JWT verifies with the JWKS key");
    claims
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_the_group_signs_in_at_the_provider_and_reaches_the_route() {
    let rig = rig("browser-alice").await;
    let start = rig.url("app.test", "/hello?x=1");
    let admin = rig.url("app.test", "/admin");
    let r = rig
        .browser(&start, "alice", &[format!("visit:{admin}")])
        .await;
    let d = || rig.diag(&r);

    // The way in: to heim's auth host, and on to the provider.
    let entry = &r["entry"];
    assert_eq!(entry[0]["status"], 302, "{}", d());
    assert!(
        entry[0]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with(&rig.url("auth.wild.test", "/.heim/login?rd="))),
        "{}",
        d()
    );

    // The authorization request: the code flow with PKCE, state and nonce.
    let authorization = r["authorization"].as_str().unwrap_or_default();
    assert!(
        authorization.starts_with(&format!("{}/auth?", rig.idp.issuer)),
        "heim uses the discovered authorization endpoint: {}",
        d()
    );
    let q = query(authorization);
    let redirect_uri = rig.url("auth.wild.test", "/.heim/callback");
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("client_id").map(String::as_str), Some("heim"));
    assert_eq!(q.get("redirect_uri"), Some(&redirect_uri));
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(q.get("code_challenge").map(String::len), Some(43), "{q:?}");
    for k in ["state", "nonce"] {
        assert!(q.get(k).is_some_and(|v| v.len() >= 16), "{k}: {q:?}");
    }
    let scopes: Vec<&str> = q.get("scope").map_or(vec![], |s| s.split(' ').collect());
    for s in ["openid", "email", "profile", "groups"] {
        assert!(scopes.contains(&s), "{s} in {scopes:?}");
    }

    // The way back: heim's callback, the hand-off to app.test, the page.
    let callback = hop(&r["chain"], &redirect_uri).unwrap_or_else(|| panic!("{}", d()));
    assert_eq!(callback["status"], 303, "{}", d());
    assert!(
        callback["location"]
            .as_str()
            .is_some_and(|l| l.starts_with(&rig.url("app.test", "/.heim/handoff?t="))),
        "{}",
        d()
    );
    assert_eq!(r["url"], start.as_str(), "{}", d());
    assert_eq!(r["status"], 200, "{}", d());

    // Who she is, from userinfo (the ID token carries no email or groups).
    let echo: Value = serde_json::from_str(r["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the echo route's JSON ({e}):\n{}", d()));
    let id = &echo["identity"];
    assert_eq!(id["email"], "alice@example.com", "{}", d());
    assert_eq!(id["groups"], serde_json::json!(["staff"]), "{}", d());
    assert_eq!(id["provider"], "idp", "{}", d());
    let user = id["user"].as_str().unwrap_or_default();
    assert!(
        ["alice@example.com", "alice"].contains(&user),
        "user {user:?}: {}",
        d()
    );
    assert_eq!(header(&echo, "x-heim-user"), Some(user));
    assert_eq!(header(&echo, "x-heim-email"), Some("alice@example.com"));
    assert_eq!(header(&echo, "x-heim-groups"), Some("staff"));
    let jwt = header(&echo, "x-heim-jwt").unwrap_or_else(|| panic!("no JWT: {}", d()));
    let claims = verify_jwt(&rig, jwt).await;
    assert_eq!(claims["aud"], "app.test");
    assert_eq!(claims["iss"], rig.url("auth.wild.test", ""));
    assert_eq!(claims["sub"], user);
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["staff"]));
    let ttl = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    assert!(ttl > 0 && ttl <= 300, "{claims}");
    assert!(
        !r["body"]
            .as_str()
            .unwrap_or_default()
            .contains("access_token"),
        "no provider token reaches the backend"
    );

    // A session on both hosts, each cookie its own host's; nothing wider.
    for host in ["app.test", "auth.wild.test"] {
        assert_session_cookie(&rig, &r, host);
    }
    let domains: Vec<&String> = r["cookies"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    for domain in domains {
        assert!(
            ["app.test", "auth.wild.test", "127.0.0.1"].contains(&domain.as_str()),
            "a cookie for {domain}: {}",
            d()
        );
    }

    // heim exchanged the code and read userinfo, from its own side.
    let idp_log = rig.idp.log_text();
    assert!(
        idp_log.contains(r#""method":"POST","path":"/token","status":200"#),
        "{}",
        d()
    );
    assert!(
        idp_log.contains(r#""method":"GET","path":"/me","status":200"#),
        "{}",
        d()
    );

    // /admin is for admins: the 403 page says who she is.
    let a = &r["actions"][0];
    assert_eq!(a["status"], 403, "{}", d());
    assert!(
        a["text"]
            .as_str()
            .is_some_and(|t| t.contains("alice@example.com")),
        "{}",
        d()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_group_signs_in_and_is_shown_who_they_are() {
    let rig = rig("browser-mallory").await;
    let start = rig.url("app.test", "/");
    let r = rig.browser(&start, "mallory", &[]).await;
    let d = || rig.diag(&r);
    assert_eq!(r["url"], start.as_str(), "{}", d());
    assert_eq!(r["status"], 403, "{}", d());
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.contains("mallory@example.com"), "{}", d());
    let body = r["body"].as_str().unwrap_or_default();
    assert!(
        !body.contains("\"identity\""),
        "the route never answered: {}",
        d()
    );
    // She is signed in, just not allowed here.
    assert_session_cookie(&rig, &r, "app.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_with_the_pages_button_sends_the_next_visit_to_sign_in() {
    let rig = rig("browser-logout").await;
    let start = rig.url("app.test", "/");
    let r = rig.browser(&start, "alice", &["logout".into()]).await;
    let d = || rig.diag(&r);
    assert_eq!(r["status"], 200, "{}", d());
    let logout = &r["actions"][0];
    assert_eq!(logout["action"], "logout", "{}", d());
    assert_eq!(logout["page"]["status"], 200, "{}", d());
    assert_eq!(logout["after"]["status"], 200, "{}", d());
    assert!(
        logout["after"]["text"]
            .as_str()
            .is_some_and(|t| t.to_lowercase().contains("signed out")),
        "{}",
        d()
    );
    assert!(
        cookie(&logout["cookies"], "app.test", SESSION_COOKIE).is_none(),
        "the session cookie is cleared: {}",
        d()
    );
    // The next visit goes to sign in, and heim asks the provider afresh.
    let revisit = &logout["revisit"];
    assert_eq!(revisit["chain"][0]["url"], start.as_str(), "{}", d());
    assert_eq!(revisit["chain"][0]["status"], 302, "{}", d());
    assert!(
        first_location(revisit).starts_with(&rig.url("auth.wild.test", "/.heim/login")),
        "{}",
        d()
    );
    assert!(
        hop(&revisit["chain"], &format!("{}/auth?", rig.idp.issuer)).is_some(),
        "the auth host's session is gone too: {}",
        d()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_is_refused_sign_in() {
    let rig = rig("browser-unverified").await;
    let start = rig.url("app.test", "/");
    let r = rig.browser(&start, "unverified", &[]).await;
    let d = || rig.diag(&r);
    let status = r["status"].as_u64().unwrap_or(0);
    assert!((400..500).contains(&status), "status {status}: {}", d());
    assert!(
        r["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&rig.url("auth.wild.test", "/.heim/"))),
        "heim's own error page, not the route: {}",
        d()
    );
    assert!(
        !r["body"]
            .as_str()
            .unwrap_or_default()
            .contains("\"identity\""),
        "{}",
        d()
    );
    for host in ["app.test", "auth.wild.test"] {
        assert!(
            cookie(&r["cookies"], host, SESSION_COOKIE).is_none(),
            "no session on {host}: {}",
            d()
        );
    }
    // heim asked userinfo, which said the email is not verified.
    assert!(
        rig.idp
            .log_text()
            .contains(r#""method":"GET","path":"/me","status":200"#),
        "{}",
        d()
    );
}
