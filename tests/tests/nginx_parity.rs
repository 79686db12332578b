//! Parity with ingress-nginx, request by request: the same Ingresses are
//! served by heim-ingress (against a real kube-apiserver, tests/src/kube.rs)
//! and by Debian's nginx running the configuration ingress-nginx's template
//! (`rootfs/etc/nginx/template/nginx.tmpl`, `template.go`'s
//! `buildLocation`/`enforceRegexModifier`/`buildProxyPass`,
//! `location.go`'s `updateServerLocations`, the sort in `controller.go`)
//! would render for them, [`render`] below. Both forward to the same echo
//! backends in a TEST-NET-2 network namespace, and each row of [`rows`]
//! compares what came back: status, `Location`, and the backend and URI it
//! saw. Covered: regex mode (host-wide, case-insensitive, anchored at the
//! start only, longest first), Prefix and Exact in both modes,
//! `rewrite-target` with groups and queries, an absolute target (302),
//! `permanent-redirect`, `app-root`, the implicit root location inheriting
//! the oldest Ingress's annotations, and the plain-HTTP redirect to https.
//!
//! Rows where heim differs on purpose assert heim's documented answer and
//! say why; nginx is still checked against ingress-nginx's answer, so the
//! emulation itself is under test too. They are, from
//! docs/migrate-from-ingress-nginx.md ("Where heim differs on purpose",
//! the `ssl-redirect` row) and docs/proxy.md (routing):
//! * the https redirect keeps the URI (no trim of one trailing `/`);
//! * on plain HTTP the 308 to https comes before a route's own redirect
//!   (`permanent-redirect`, an absolute `rewrite-target`, `app-root`);
//! * a regex path is anchored as a whole (`^(?:/one|/two)`);
//! * the upstream gets the normalised path (`//`, `.`, `..` resolved).
//!
//! The port: heim names the https port in redirects unless it is 443;
//! the settings say `https_port = 443` (as behind a Service), so both
//! leave it out, as ingress-nginx does.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use heim_e2e::kube::{ControlPlane, Netns};
use heim_e2e::upstream::{http1_on, Upstream};
use heim_e2e::{scratch, Client, Heim, Pki};
use http_body_util::BodyExt;
use serde_json::{json, Value};

const NS: &str = "apps";
const ING: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses";
/// Long enough for the Ingresses to reach the data plane on a busy machine.
const LIVE: Duration = Duration::from_secs(10);

// === the Ingresses ===

/// One Ingress of class `nginx`, its host under `spec.tls` (the wildcard
/// Secret): so both proxies redirect its plain HTTP to https.
struct Ing {
    name: &'static str,
    host: &'static str,
    /// (path, pathType, Service)
    paths: &'static [(&'static str, &'static str, &'static str)],
    /// `nginx.ingress.kubernetes.io/` annotations, without the prefix.
    annotations: &'static [(&'static str, &'static str)],
}

/// In creation order (applied one by one; the oldest of a host matters
/// for its implicit root, and every host's implicit root answers the same
/// whichever of its Ingresses is oldest, so creation-time ties in the same
/// second do not change an answer).
const INGRESSES: &[Ing] = &[
    // regex.apps.test: regex mode through r-api's rewrite-target; every
    // other path of the host becomes `~* "^<path>"` with it.
    Ing {
        name: "r-api",
        host: "regex.apps.test",
        paths: &[("/api(/|$)(.*)", "ImplementationSpecific", "api")],
        annotations: &[("use-regex", "true"), ("rewrite-target", "/$2")],
    },
    Ing {
        name: "r-health",
        host: "regex.apps.test",
        paths: &[("/healthz", "Exact", "web")],
        annotations: &[],
    },
    Ing {
        name: "r-foo",
        host: "regex.apps.test",
        paths: &[("/foo", "Prefix", "web")],
        annotations: &[],
    },
    // docs/user-guide/ingress-path-matching.md's warning: the longer
    // regex wins over the literal path that is written for the request.
    Ing {
        name: "r-order",
        host: "regex.apps.test",
        paths: &[
            ("/foo/bar/[a-z]{3}", "ImplementationSpecific", "api"),
            ("/foo/bar/bar", "ImplementationSpecific", "web"),
        ],
        annotations: &[("use-regex", "true")],
    },
    Ing {
        name: "r-alt",
        host: "regex.apps.test",
        paths: &[("/one|/two", "ImplementationSpecific", "api")],
        annotations: &[("use-regex", "true")],
    },
    // plain.apps.test: normal mode.
    Ing {
        name: "p-main",
        host: "plain.apps.test",
        paths: &[("/foo", "Prefix", "web"), ("/exact", "Exact", "api")],
        annotations: &[],
    },
    // rw.apps.test: relative rewrites.
    Ing {
        name: "rw-drop",
        host: "rw.apps.test",
        paths: &[("/drop/[a-z]+", "ImplementationSpecific", "api")],
        annotations: &[("rewrite-target", "/landing")],
    },
    Ing {
        name: "rw-swap",
        host: "rw.apps.test",
        paths: &[("/swap/([a-z]+)/([0-9]+)", "ImplementationSpecific", "web")],
        annotations: &[("rewrite-target", "/$2/$1")],
    },
    // abs.apps.test: an absolute rewrite target is a 302, and the host's
    // implicit root carries it too (Traefik's differential suite).
    Ing {
        name: "abs",
        host: "abs.apps.test",
        paths: &[("/original/(.*)", "ImplementationSpecific", "web")],
        annotations: &[("rewrite-target", "https://bar.example.org/$1")],
    },
    // moved.apps.test: `return 301 URL` in every location of the host,
    // the implicit root included. No `$` in the URL: ingress-nginx >= 1.12
    // drops such an Ingress.
    Ing {
        name: "moved",
        host: "moved.apps.test",
        paths: &[("/old", "Prefix", "web")],
        annotations: &[("permanent-redirect", "https://new.apps.test/landing")],
    },
    Ing {
        name: "approot",
        host: "approot.apps.test",
        paths: &[("/", "Prefix", "web")],
        annotations: &[("app-root", "/login")],
    },
];

/// The Ingress object for `ing`.
fn ingress(ing: &Ing) -> Value {
    let paths: Vec<Value> = ing
        .paths
        .iter()
        .map(|(path, path_type, svc)| {
            json!({ "path": path, "pathType": path_type,
                    "backend": { "service": { "name": svc, "port": { "name": "http" } } } })
        })
        .collect();
    let annotations: serde_json::Map<String, Value> = ing
        .annotations
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v)))
        .collect();
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": ing.name, "namespace": NS, "annotations": annotations },
            "spec": { "ingressClassName": "nginx",
                      "tls": [{ "hosts": [ing.host], "secretName": "wildcard-tls" }],
                      "rules": [{ "host": ing.host, "http": { "paths": paths } }] } })
}

// === what ingress-nginx renders ===

/// One nginx `location` as ingress-nginx builds it (`ingress.Location`).
#[derive(Clone)]
struct Loc {
    path: String,
    exact: bool,
    /// The Service, or `None` for the default backend (404).
    svc: Option<&'static str>,
    rewrite_target: Option<&'static str>,
    use_regex: bool,
    permanent_redirect: Option<&'static str>,
    app_root: Option<&'static str>,
}

impl Loc {
    /// The location's annotations are `ing`'s (`locationApplyAnnotations`).
    fn of(ing: &Ing, path: &str, exact: bool, svc: Option<&'static str>) -> Loc {
        let get = |k: &str| {
            ing.annotations
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| *v)
        };
        Loc {
            path: path.to_string(),
            exact,
            svc,
            rewrite_target: get("rewrite-target"),
            use_regex: get("use-regex") == Some("true"),
            permanent_redirect: get("permanent-redirect"),
            app_root: get("app-root"),
        }
    }

    /// `needsRewrite`: a target other than the path itself.
    fn needs_rewrite(&self) -> bool {
        self.rewrite_target.is_some_and(|t| t != self.path)
    }
}

/// `sanitizeQuotedRegex`: a path inside double quotes.
fn quoted(path: &str) -> String {
    path.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The nginx configuration ingress-nginx would render for [`INGRESSES`],
/// reduced to what decides these answers (no Lua: its two effects here
/// are written as nginx directives, see the comments).
fn render(
    dir: &Path,
    https: SocketAddr,
    http: SocketAddr,
    backends: &[(&str, SocketAddr)],
) -> String {
    let d = dir.display();
    let mut conf = format!(
        "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 256; }}\nhttp {{\n"
    );
    for line in [
        "access_log off;".to_string(),
        format!("client_body_temp_path {d};"),
        format!("proxy_temp_path {d};"),
        format!("fastcgi_temp_path {d};"),
        format!("uwsgi_temp_path {d};"),
        format!("scgi_temp_path {d};"),
        format!("ssl_certificate {d}/wildcard-tls.pem;"),
        format!("ssl_certificate_key {d}/wildcard-tls-key.pem;"),
        // nginx.tmpl's own settings that bear on redirects.
        "port_in_redirect off;".into(),
        "server_name_in_redirect off;".into(),
        // lua_ingress.lua's redirect_to_https as nginx variables: the Host
        // without its port, and $request_uri with its last byte dropped
        // when that byte is `/` (preserve-trailing-slash is false): `/` ->
        // ``, `/foo/` -> `/foo`, `/foo/?a=1` as it is.
        r#"map $request_uri $redirect_uri { "~^(?<kept>.*)/$" $kept; default $request_uri; }"#
            .into(),
        r#"map $http_host $redirect_host { "~^(?<name>[^:]*)" $name; default $http_host; }"#.into(),
    ] {
        conf += &format!("  {line}\n");
    }
    for (name, addr) in backends {
        conf += &format!("  upstream {name} {{ server {addr}; }}\n");
    }
    let mut hosts: Vec<&str> = INGRESSES.iter().map(|i| i.host).collect();
    hosts.dedup();
    for host in hosts {
        let ings: Vec<&Ing> = INGRESSES.iter().filter(|i| i.host == host).collect();
        let mut locs = Vec::new();
        for ing in &ings {
            for (path, path_type, svc) in ing.paths {
                // ImplementationSpecific is Prefix (`SetDefaultNGINXPathType`).
                locs.push(Loc::of(ing, path, *path_type == "Exact", Some(*svc)));
            }
        }
        // The implicit root: a host without `/` has one, to the default
        // backend, with the annotations of the host's oldest Ingress.
        if !locs.iter().any(|l| l.path == "/" && !l.exact) {
            locs.insert(0, Loc::of(ings[0], "/", false, None));
        }
        let mut locs = update_server_locations(locs);
        let regex = locs.iter().any(|l| l.needs_rewrite() || l.use_regex);
        // controller.go: by path, reverse-lexicographic, then (stable) by
        // length, longest first.
        locs.sort_by(|a, b| b.path.cmp(&a.path));
        locs.sort_by_key(|l| std::cmp::Reverse(l.path.len()));
        conf += &format!(
            "  server {{\n    listen {https} ssl;\n    listen {http};\n    server_name {host};\n"
        );
        // app-root: a server-level `if`, ahead of any location.
        for l in &locs {
            if let Some(root) = l.app_root {
                conf +=
                    &format!("    if ($uri = /) {{ return 302 $scheme://$http_host{root}; }}\n");
            }
        }
        for l in &locs {
            conf += &location(l, regex);
        }
        conf += "  }\n";
    }
    conf + "}\n"
}

/// `updateServerLocations`: a Prefix path (not `/`, no rewrite, no
/// use-regex of its own) becomes `<path>/` plus an exact `<path>`.
fn update_server_locations(locs: Vec<Loc>) -> Vec<Loc> {
    let exact: Vec<String> = locs
        .iter()
        .filter(|l| l.exact)
        .map(|l| l.path.clone())
        .collect();
    let mut out = Vec::new();
    for mut l in locs {
        if l.path == "/" || l.exact || l.needs_rewrite() || l.use_regex {
            out.push(l);
            continue;
        }
        let mut e = l.clone();
        e.exact = true;
        if !l.path.ends_with('/') {
            l.path.push('/');
        }
        let add_exact = !exact.contains(&e.path);
        out.push(l);
        if add_exact {
            out.push(e);
        }
    }
    out
}

/// One `location` block: `buildLocation`, then the directives of the
/// rewrite phase in the order nginx runs them. ingress-nginx's https
/// redirect is Lua (`rewrite_by_lua`, which runs after the rewrite module's
/// directives): so a `return` or a rewrite to an absolute URL answers
/// first, even on plain HTTP, and a relative `rewrite ... break` (which
/// would skip a later `if`) does not change the redirect, which is built
/// from `$request_uri`; the `if` goes between the two.
fn location(l: &Loc, regex: bool) -> String {
    let selector = if regex {
        format!("~* \"^{}\"", quoted(&l.path))
    } else if l.exact {
        format!("= \"{}\"", quoted(&l.path))
    } else {
        format!("\"{}\"", quoted(&l.path))
    };
    let mut out = format!("    location {selector} {{\n");
    if let Some(url) = l.permanent_redirect {
        out += &format!("      return 301 {url};\n");
    }
    let rewrite = l.needs_rewrite().then(|| {
        let target = l.rewrite_target.unwrap_or_default();
        (
            target.starts_with("http://") || target.starts_with("https://"),
            format!(
                "      rewrite \"(?i){}\" {target} break;\n",
                quoted(&l.path)
            ),
        )
    });
    if let Some((true, r)) = &rewrite {
        out += r;
    }
    out += "      if ($scheme = http) { return 308 https://$redirect_host$redirect_uri; }\n";
    if let Some((false, r)) = &rewrite {
        out += r;
    }
    match l.svc {
        Some(svc) => out += &format!("      proxy_pass http://{svc};\n"),
        None => out += "      return 404;\n",
    }
    out + "    }\n"
}

/// Debian's nginx with `conf`, killed on drop.
struct Nginx {
    https: SocketAddr,
    http: SocketAddr,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default()
    }
}

/// A loopback port free right now (nginx cannot listen on 0 and say).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn nginx(dir: &Path, backends: &[(&str, SocketAddr)]) -> Nginx {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("nginx is missing: apt-get install nginx-light (tests/run does)")
        });
    let (https, http) = (free_port(), free_port());
    let conf = dir.join("nginx-parity.conf");
    std::fs::write(&conf, render(dir, https, http, backends)).unwrap();
    let child = std::process::Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut n = Nginx {
        https,
        http,
        dir: dir.to_path_buf(),
        child,
    };
    let deadline = tokio::time::Instant::now() + LIVE;
    loop {
        if let Ok(Some(status)) = n.child.try_wait() {
            panic!(
                "nginx exited ({status}):\n{}\n{}",
                n.error_log(),
                std::fs::read_to_string(&conf).unwrap_or_default()
            );
        }
        let up = |a| std::net::TcpStream::connect(a).is_ok();
        if up(https) && up(http) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx did not listen: {}",
            n.error_log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// === the control plane and heim (as tests/tests/ingress.rs) ===

struct World {
    cp: ControlPlane,
    pki: Pki,
    _netns: Netns,
    web: Upstream,
    api: Upstream,
    dir: std::path::PathBuf,
}

fn expect(what: &str, got: (u16, Value), want: &[u16]) {
    assert!(want.contains(&got.0), "{what}: {} {}", got.0, got.1);
}

/// Namespace `apps`, IngressClass `nginx` (ingress-nginx's controller
/// string), Services `web` and `api` with backends in a network namespace,
/// TLS Secret `wildcard-tls` for `*.apps.test`, and heim's settings.
async fn world(name: &str) -> World {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane did not start: {e:#}"));
    let netns = Netns::new().unwrap_or_else(|e| {
        panic!(
            "cannot create a test network namespace ({e:#}): the tests run as root with iproute2"
        )
    });
    let web = http1_on(netns.listen(0).unwrap(), "web");
    let api = http1_on(netns.listen(0).unwrap(), "api");
    let dir = scratch(name);
    let pki = Pki::new(&dir);
    expect(
        "namespace",
        cp.create(
            "/api/v1/namespaces",
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
        )
        .await
        .unwrap(),
        &[201],
    );
    expect(
        "IngressClass nginx",
        cp.create(
            "/apis/networking.k8s.io/v1/ingressclasses",
            &json!({ "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                     "metadata": { "name": "nginx" }, "spec": { "controller": "k8s.io/ingress-nginx" } }),
        )
        .await
        .unwrap(),
        &[201],
    );
    for (svc, up) in [("web", &web), ("api", &api)] {
        service(&cp, svc, up.addr).await;
    }
    tls_secret(&cp, &pki, "wildcard-tls", &["*.apps.test"]).await;
    settings(&cp).await;
    World {
        cp,
        pki,
        _netns: netns,
        web,
        api,
        dir,
    }
}

/// Service `name` (port `http` 80) with Endpoints at `backend`.
async fn service(cp: &ControlPlane, name: &str, backend: SocketAddr) {
    expect(
        "Service",
        cp.create(
            &format!("/api/v1/namespaces/{NS}/services"),
            &json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name },
                     "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": backend.port() }] } }),
        )
        .await
        .unwrap(),
        &[201],
    );
    expect(
        "Endpoints",
        cp.create(
            &format!("/api/v1/namespaces/{NS}/endpoints"),
            &json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": name },
                     "subsets": [{ "addresses": [{ "ip": backend.ip().to_string() }],
                                   "ports": [{ "name": "http", "port": backend.port(), "protocol": "TCP" }] }] }),
        )
        .await
        .unwrap(),
        &[201],
    );
}

/// TLS Secret `name` (its files stay in the PKI's directory for nginx).
async fn tls_secret(cp: &ControlPlane, pki: &Pki, name: &str, hosts: &[&str]) {
    use base64::Engine;
    pki.leaf(name, hosts);
    let b64 = |f: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(pki.dir.join(f)).unwrap())
    };
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": { "name": name, "namespace": NS },
        "data": { "tls.crt": b64(&format!("{name}.pem")), "tls.key": b64(&format!("{name}-key.pem")) } });
    expect(
        "Secret",
        cp.apply(&format!("/api/v1/namespaces/{NS}/secrets/{name}"), &secret)
            .await
            .unwrap(),
        &[200, 201],
    );
}

/// heim's settings: test listeners; redirects name port 443, as behind a
/// Service (ingress-nginx drops the port); ingress-nginx's Ingresses public,
/// as they were.
async fn settings(cp: &ControlPlane) {
    let text = "[server]\nhttps_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
                admin_listen = \"127.0.0.1:0\"\nhttps_port = 443\n\n\
                [ingress_nginx]\ndefault_policy = \"public\"\n";
    expect(
        "namespace heim",
        cp.create(
            "/api/v1/namespaces",
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "heim" } }),
        )
        .await
        .unwrap(),
        &[201],
    );
    expect(
        "ConfigMap",
        cp.apply(
            "/api/v1/namespaces/heim/configmaps/settings",
            &json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "heim" },
                     "data": { "heim.toml": text } }),
        )
        .await
        .unwrap(),
        &[200, 201],
    );
}

/// heim-ingress serving ingress-nginx's class, ready.
fn controller(w: &World) -> Heim {
    let kubeconfig = w.cp.kubeconfig().unwrap();
    let heim = Heim::start_ingress(
        &w.dir,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--config-map=heim/settings",
            "--pod-namespace=heim",
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
        ],
    )
    .unwrap();
    heim.wait_ready()
        .unwrap_or_else(|e| panic!("{e}: {}", heim.log_text()));
    heim
}

// === the requests ===

/// What one request got: the status, `Location`, and for a proxied answer
/// the backend and the path and query it received.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    location: String,
    upstream: String,
    uri: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.upstream.is_empty() {
            write!(f, "{} {} {}", self.status, self.upstream, self.uri)
        } else if !self.location.is_empty() {
            write!(f, "{} -> {}", self.status, self.location)
        } else if !self.uri.is_empty() {
            write!(f, "{} {}", self.status, self.uri)
        } else {
            write!(f, "{}", self.status)
        }
    }
}

/// Proxied to `upstream`, which saw `uri`.
fn to(upstream: &str, uri: &str) -> Answer {
    Answer {
        status: 200,
        location: String::new(),
        upstream: upstream.into(),
        uri: uri.into(),
    }
}

/// A redirect.
fn go(status: u16, location: &str) -> Answer {
    Answer {
        status,
        location: location.into(),
        upstream: String::new(),
        uri: String::new(),
    }
}

/// Neither proxied nor redirected (404 from the default backend).
fn code(status: u16) -> Answer {
    go(status, "")
}

fn answer(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Answer {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let upstream = header("x-upstream");
    let uri = match upstream.is_empty() {
        true => String::new(),
        false => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|j| j["uri"].as_str().map(str::to_string))
            .unwrap_or_else(|| "(no JSON)".into()),
    };
    Answer {
        status,
        location: header("location"),
        upstream,
        uri,
    }
}

fn failed(e: anyhow::Error) -> Answer {
    Answer {
        uri: format!("error: {e:#}"),
        ..code(0)
    }
}

/// GET `path` with `Host: host`: over TLS (SNI `host`) to `https`, or in
/// the clear to `http`.
async fn send(
    client: &Client,
    tls: bool,
    https: SocketAddr,
    http: SocketAddr,
    host: &str,
    path: &str,
) -> Answer {
    if tls {
        return match client.get(https, host, path).await {
            Ok(r) => answer(r.status, &r.headers, &r.body),
            Err(e) => failed(e),
        };
    }
    let plain = async {
        let tcp = tokio::net::TcpStream::connect(http).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let resp = sender.send_request(heim_e2e::get(host, path)).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(answer(status, &headers, &body))
    };
    match tokio::time::timeout(Duration::from_secs(5), plain).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => failed(e),
        Err(_) => failed(anyhow::anyhow!("no answer in 5 s")),
    }
}

/// What heim is expected to answer for a row.
enum Want {
    /// What nginx answers.
    Same,
    /// Documented on purpose: this answer, and why.
    Differs(Answer, &'static str),
}

struct Row {
    tls: bool,
    host: &'static str,
    path: &'static str,
    /// What ingress-nginx answers (its template, lua_ingress.lua, the
    /// notes in /work/shared/ingress-nginx.md §1.3), checked against nginx.
    nginx: Answer,
    heim: Want,
}

fn https(host: &'static str, path: &'static str, nginx: Answer) -> Row {
    Row {
        tls: true,
        host,
        path,
        nginx,
        heim: Want::Same,
    }
}

fn http(host: &'static str, path: &'static str, nginx: Answer) -> Row {
    Row {
        tls: false,
        ..https(host, path, nginx)
    }
}

impl Row {
    fn differs(self, heim: Answer, why: &'static str) -> Row {
        Row {
            heim: Want::Differs(heim, why),
            ..self
        }
    }

    fn heim_ok(&self, nginx: &Answer, heim: &Answer) -> bool {
        match &self.heim {
            Want::Same => heim == nginx,
            Want::Differs(want, _) => heim == want,
        }
    }
}

/// heim's 308 to https comes before a route's own redirect (docs/
/// migrate-from-ingress-nginx.md; nginx ran its `return` or redirecting
/// `rewrite` first, ahead of the Lua): plain HTTP is always upgraded first.
const FIRST_TO_HTTPS: &str = "heim's 308 to https comes before a route's own redirect";
/// heim keeps the request URI in the https redirect (the verdict on
/// `preserve-trailing-slash`, and the `ssl-redirect` row of the
/// migration guide): ingress-nginx's trim of one `/` is not copied.
const URI_AS_IT_IS: &str = "heim's https redirect keeps the request URI as it is";

/// heim forwards the path it routed by, normalised (docs/proxy.md: `.`,
/// `..` and `//` resolved), so a backend never sees a path that routed
/// as another.
const NORMALISED: &str = "heim forwards the normalised path it routed by";

fn rows() -> Vec<Row> {
    const R: &str = "regex.apps.test";
    const P: &str = "plain.apps.test";
    const RW: &str = "rw.apps.test";
    const ABS: &str = "abs.apps.test";
    const MOVED: &str = "moved.apps.test";
    const ROOT: &str = "approot.apps.test";
    vec![
        // Regex mode: case-insensitive, groups and the query through
        // `rewrite-target: /$2`.
        https(R, "/API/v1/users?x=1", to("api", "/v1/users?x=1")),
        https(R, "/api/v1/users?x=1&y=2", to("api", "/v1/users?x=1&y=2")),
        https(R, "/api", to("api", "/")),
        https(R, "/api/", to("api", "/")),
        // `(/|$)` does not take `x`: the implicit root, 404.
        https(R, "/apix", code(404)),
        // A capture is escaped again before proxying.
        https(R, "/api/a%20b", to("api", "/a%20b")),
        https(R, "/api/a%2Fb", to("api", "/a/b")),
        https(R, "/api/%7Euser", to("api", "/~user")),
        https(R, "/api/x%3Fy", to("api", "/x%3Fy")),
        // Exact becomes a prefix, case-insensitive.
        https(R, "/healthz", to("web", "/healthz")),
        https(R, "/HEALTHZ/more", to("web", "/HEALTHZ/more")),
        https(R, "/healthzzz", to("web", "/healthzzz")),
        // Prefix `/foo` is `^/foo/` and `^/foo`: `/foobar` matches.
        https(R, "/foobar", to("web", "/foobar")),
        https(R, "/FOO/x?y=1", to("web", "/FOO/x?y=1")),
        // Longest first: the regex beats the literal written for it.
        https(R, "/foo/bar/bar", to("api", "/foo/bar/bar")),
        https(R, "/foo/bar/BAZ", to("api", "/foo/bar/BAZ")),
        https(R, "/foo/bar/b", to("web", "/foo/bar/b")),
        // nginx anchors only the first alternative of `^/one|/two`.
        https(R, "/zzz/two", to("api", "/zzz/two")).differs(
            code(404),
            "heim anchors a regex path as a whole (`^(?:/one|/two)`)",
        ),
        https(R, "/two/x", to("api", "/two/x")),
        http(R, "/API/x", go(308, "https://regex.apps.test/API/x")),
        http(R, "/foo/", go(308, "https://regex.apps.test/foo"))
            .differs(go(308, "https://regex.apps.test/foo/"), URI_AS_IT_IS),
        // Normal mode: segment prefixes, exact, case-sensitive; the URI
        // passed on as the client wrote it.
        https(P, "/foo", to("web", "/foo")),
        https(P, "/foo/x?y=1", to("web", "/foo/x?y=1")),
        https(P, "/foo/a%2Fb", to("web", "/foo/a%2Fb")),
        // nginx routes by the normalised path but forwards the raw one,
        // so `/exact/../foo/y` passes `/foo/`'s checks and reaches the
        // backend as `/exact/...`.
        https(P, "/foo//x", to("web", "/foo//x")).differs(to("web", "/foo/x"), NORMALISED),
        https(P, "/foo/./x", to("web", "/foo/./x")).differs(to("web", "/foo/x"), NORMALISED),
        https(P, "/exact/../foo/y", to("web", "/exact/../foo/y"))
            .differs(to("web", "/foo/y"), NORMALISED),
        https(P, "/foobar", code(404)),
        https(P, "/FOO", code(404)),
        https(P, "/exact", to("api", "/exact")),
        https(P, "/exact/more", code(404)),
        // The plain-HTTP redirect of a host under `spec.tls`, every path.
        http(P, "/", go(308, "https://plain.apps.test"))
            .differs(go(308, "https://plain.apps.test/"), URI_AS_IT_IS),
        http(P, "/foo/", go(308, "https://plain.apps.test/foo"))
            .differs(go(308, "https://plain.apps.test/foo/"), URI_AS_IT_IS),
        http(P, "/foo/?a=1", go(308, "https://plain.apps.test/foo/?a=1")),
        http(P, "/foo", go(308, "https://plain.apps.test/foo")),
        http(
            P,
            "/nothing?q=1",
            go(308, "https://plain.apps.test/nothing?q=1"),
        ),
        // Relative rewrites: the unmatched suffix dropped, groups reordered.
        https(RW, "/drop/abc/rest?q=1", to("api", "/landing?q=1")),
        https(RW, "/DROP/x", to("api", "/landing")),
        https(RW, "/drop/123", code(404)),
        https(RW, "/swap/ab/12/tail?k=v", to("web", "/12/ab?k=v")),
        // An absolute target: 302, the query appended; the implicit root
        // carries it (`$1` empty there).
        https(
            ABS,
            "/original/x/y?q=1",
            go(302, "https://bar.example.org/x/y?q=1"),
        ),
        https(ABS, "/original", go(302, "https://bar.example.org/")),
        http(ABS, "/original/x", go(302, "https://bar.example.org/x"))
            .differs(go(308, "https://abs.apps.test/original/x"), FIRST_TO_HTTPS),
        // permanent-redirect: 301, nothing appended, the implicit root too.
        https(
            MOVED,
            "/old/a?c=1",
            go(301, "https://new.apps.test/landing"),
        ),
        https(MOVED, "/old", go(301, "https://new.apps.test/landing")),
        https(
            MOVED,
            "/elsewhere",
            go(301, "https://new.apps.test/landing"),
        ),
        http(MOVED, "/old", go(301, "https://new.apps.test/landing"))
            .differs(go(308, "https://moved.apps.test/old"), FIRST_TO_HTTPS),
        // app-root: 302 for `/` only (`return` appends no query).
        https(ROOT, "/", go(302, "https://approot.apps.test/login")),
        https(ROOT, "/?x=1", go(302, "https://approot.apps.test/login")),
        https(ROOT, "/other", to("web", "/other")),
        https(ROOT, "/login", to("web", "/login")),
        http(ROOT, "/", go(302, "http://approot.apps.test/login"))
            .differs(go(308, "https://approot.apps.test/"), FIRST_TO_HTTPS),
    ]
}

/// The table, every row with its verdict, for a failure message.
fn table(rows: &[Row], nginx: &[Answer], heim: &[Answer]) -> String {
    let mut out = String::from("\n  # | request | ingress-nginx | nginx | heim | verdict\n");
    for (i, ((r, n), h)) in rows.iter().zip(nginx).zip(heim).enumerate() {
        let scheme = if r.tls { "https" } else { "http" };
        let verdict = if *n != r.nginx {
            "NGINX EMULATION WRONG".to_string()
        } else if !r.heim_ok(n, h) {
            match &r.heim {
                Want::Same => "DIFFERS".to_string(),
                Want::Differs(want, why) => format!("DIFFERS (wanted {want}: {why})"),
            }
        } else {
            match &r.heim {
                Want::Same => "ok".to_string(),
                Want::Differs(_, why) => format!("ok, on purpose: {why}"),
            }
        };
        out += &format!(
            "{i:>3} | {scheme}://{}{} | {} | {n} | {h} | {verdict}\n",
            r.host, r.path, r.nginx
        );
    }
    out
}

#[tokio::test]
async fn heim_answers_as_ingress_nginx_does() {
    let w = world("nginx-parity").await;
    for ing in INGRESSES {
        let object = ingress(ing);
        expect(
            "apply Ingress",
            w.cp.apply(&format!("{ING}/{}", ing.name), &object)
                .await
                .unwrap(),
            &[200, 201],
        );
    }
    let backends = [("web", w.web.addr), ("api", w.api.addr)];
    let nginx = nginx(&w.dir, &backends).await;
    let heim = controller(&w);
    let client = Client::new(&w.pki.ca_der);
    let rows = rows();

    let mut from_nginx = Vec::new();
    for r in &rows {
        from_nginx.push(send(&client, r.tls, nginx.https, nginx.http, r.host, r.path).await);
    }
    // heim serves what the API server holds once its routes are in; ask
    // again (bounded) until every row answers, in case one is late.
    let heim_http = heim.http.expect("http_listen");
    let deadline = tokio::time::Instant::now() + LIVE;
    let from_heim = loop {
        let mut got = Vec::new();
        for r in &rows {
            got.push(send(&client, r.tls, heim.https, heim_http, r.host, r.path).await);
        }
        let all = rows
            .iter()
            .zip(&from_nginx)
            .zip(&got)
            .all(|((r, n), h)| r.heim_ok(n, h));
        if all || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shown = table(&rows, &from_nginx, &from_heim);
    let emulated = rows.iter().zip(&from_nginx).all(|(r, n)| *n == r.nginx);
    assert!(
        emulated,
        "nginx does not answer as ingress-nginx would: {shown}\nnginx's error log:\n{}\nconfig:\n{}",
        nginx.error_log(),
        std::fs::read_to_string(w.dir.join("nginx-parity.conf")).unwrap_or_default()
    );
    let same = rows
        .iter()
        .zip(&from_nginx)
        .zip(&from_heim)
        .all(|((r, n), h)| r.heim_ok(n, h));
    assert!(
        same,
        "heim and ingress-nginx differ: {shown}\nheim's log:\n{}",
        heim.log_text()
    );
}
