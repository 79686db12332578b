//! heim-ingress against a real kube-apiserver 1.20.2 (tests/src/kube.rs):
//! Ingresses applied through the API are served by the controller's data
//! plane, backends run in a TEST-NET-2 network namespace and are reached at
//! the Endpoints' pod addresses, and the controller writes status and
//! Events as a user sees them with kubectl.

use std::net::SocketAddr;
use std::time::Duration;

use heim_e2e::kube::{ControlPlane, Netns};
use heim_e2e::upstream::{http1_on, Upstream};
use heim_e2e::{admin_get, metric, scratch, Client, Heim, Pki};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

const NS: &str = "apps";
const ING: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses";
/// Long enough for a change to reach the data plane on a busy machine;
/// the figure to beat is in benches/RESULTS.md (well under a second).
const LIVE: Duration = Duration::from_secs(10);

/// A control plane with namespace `apps`, IngressClasses `heim` (ours) and
/// `other` (someone else's), Services `web` and `api` whose Endpoints are
/// backends in a network namespace, and a TLS Secret for `*.apps.test`.
struct World {
    cp: ControlPlane,
    pki: Pki,
    _netns: Netns,
    _web: Upstream,
    _api: Upstream,
    dir: std::path::PathBuf,
}

fn expect(what: &str, got: (u16, Value), want: &[u16]) -> Value {
    assert!(want.contains(&got.0), "{what}: {} {}", got.0, got.1);
    got.1
}

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
    for (class, controller) in [
        ("heim", "heim.dev/ingress-controller"),
        ("other", "example.com/other"),
    ] {
        expect(
            "IngressClass",
            cp.create(
                "/apis/networking.k8s.io/v1/ingressclasses",
                &json!({ "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                         "metadata": { "name": class }, "spec": { "controller": controller } }),
            )
            .await
            .unwrap(),
            &[201],
        );
    }
    for (svc, up) in [("web", &web), ("api", &api)] {
        service(&cp, svc, up.addr).await;
    }
    tls_secret(&cp, &pki, "wildcard-tls", &["*.apps.test"]).await;
    World {
        cp,
        pki,
        _netns: netns,
        _web: web,
        _api: api,
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

/// Creates or replaces TLS Secret `name`; returns the certificate.
async fn tls_secret(
    cp: &ControlPlane,
    pki: &Pki,
    name: &str,
    hosts: &[&str],
) -> CertificateDer<'static> {
    use base64::Engine;
    let der = pki.leaf(name, hosts);
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
    der
}

/// An Ingress of class `class` routing `host` `/` to Service `svc`.
fn ingress(name: &str, class: Option<&str>, host: &str, svc: &str, annotations: Value) -> Value {
    let mut spec = json!({
        "tls": [{ "hosts": [host], "secretName": "wildcard-tls" }],
        "rules": [{ "host": host, "http": { "paths": [
            { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": svc, "port": { "name": "http" } } } },
        ] } }],
    });
    if let Some(c) = class {
        spec["ingressClassName"] = json!(c);
    }
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": name, "namespace": NS, "annotations": annotations }, "spec": spec })
}

async fn apply(cp: &ControlPlane, object: &Value) {
    let name = object["metadata"]["name"].as_str().unwrap();
    expect(
        "apply Ingress",
        cp.apply(&format!("{ING}/{name}"), object).await.unwrap(),
        &[200, 201],
    );
}

/// ingress-nginx's IngressClass, as its Helm chart makes it.
async fn nginx_class(cp: &ControlPlane) {
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
}

/// heim's settings as the ConfigMap `heim/settings` holds them.
async fn settings(cp: &ControlPlane, extra: &str) {
    let text = format!(
        "[server]\nhttps_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}"
    );
    let _ = cp
        .create(
            "/api/v1/namespaces",
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "heim" } }),
        )
        .await;
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

/// Starts heim-ingress with the admin kubeconfig and `extra` flags, and
/// waits until it is ready (every cache synced, the first routes in).
fn controller(w: &World, extra: &[&str]) -> Heim {
    let kubeconfig = w.cp.kubeconfig().unwrap();
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--config-map=heim/settings",
        "--pod-namespace=heim",
    ];
    args.extend_from_slice(extra);
    let heim = Heim::start_ingress(&w.dir, &args).unwrap();
    heim.wait_ready()
        .unwrap_or_else(|e| panic!("{e}: {}", heim.log_text()));
    heim
}

/// GET https://host/ through heim: (status, the backend that answered).
async fn get(client: &Client, heim: &Heim, host: &str, path: &str) -> (u16, String) {
    match client.get(heim.https, host, path).await {
        Ok(r) => {
            let who = r
                .headers
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (r.status, who)
        }
        Err(e) => (0, format!("{e:#}")),
    }
}

/// GET http://host/ on heim's plain-HTTP listener: the status (a host heim
/// serves gets 308 to https, one it does not 404).
fn plain_status(heim: &Heim, host: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(heim.http.expect("http_listen")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Waits until GET host/path gives `want` (bounded), and says what it got.
async fn until(client: &Client, heim: &Heim, host: &str, path: &str, want: (u16, &str)) {
    let deadline = tokio::time::Instant::now() + LIVE;
    loop {
        let got = get(client, heim, host, path).await;
        if (got.0, got.1.as_str()) == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{host}{path}: wanted {want:?}, got {got:?}; logs:\n{}",
                heim.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The Warning Events on Ingress `name`: (reason, note).
async fn events(cp: &ControlPlane, name: &str) -> Vec<(String, String)> {
    let (_, list) = cp
        .get(&format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"))
        .await
        .unwrap();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name && e["regarding"]["kind"] == "Ingress")
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Checks `done` every 50 ms until it holds, for at most [`LIVE`].
async fn eventually<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + LIVE;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_ips(cp: &ControlPlane, name: &str) -> Vec<String> {
    let (_, ing) = cp.get(&format!("{ING}/{name}")).await.unwrap();
    ing["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn ingresses_are_served_live_as_they_change() {
    let w = world("ingress-live").await;
    settings(&w.cp, "").await;
    let public = json!({ "heim.dev/public": "true" });
    apply(
        &w.cp,
        &ingress("web", Some("heim"), "web.apps.test", "web", public.clone()),
    )
    .await;
    let heim = controller(&w, &["--publish-status-address=198.51.100.200"]);
    let client = Client::new(&w.pki.ca_der);
    // Served at once, over the Secret's certificate, to the pod address.
    until(&client, &heim, "web.apps.test", "/", (200, "web")).await;

    // A change of backend, then a new path, each live without a reload.
    apply(
        &w.cp,
        &ingress("web", Some("heim"), "web.apps.test", "api", public.clone()),
    )
    .await;
    until(&client, &heim, "web.apps.test", "/", (200, "api")).await;

    // Deny by default: an Ingress that names no policy answers 403.
    apply(
        &w.cp,
        &ingress("quiet", Some("heim"), "quiet.apps.test", "web", json!({})),
    )
    .await;
    until(&client, &heim, "quiet.apps.test", "/", (403, "")).await;

    // Classes: someone else's class is not ours; the legacy annotation and
    // the default class are.
    apply(
        &w.cp,
        &ingress(
            "theirs",
            Some("other"),
            "theirs.apps.test",
            "web",
            public.clone(),
        ),
    )
    .await;
    let legacy = json!({ "heim.dev/public": "true", "kubernetes.io/ingress.class": "heim" });
    apply(
        &w.cp,
        &ingress("legacy", None, "legacy.apps.test", "web", legacy),
    )
    .await;
    until(&client, &heim, "legacy.apps.test", "/", (200, "web")).await;
    apply(
        &w.cp,
        &ingress(
            "classless",
            None,
            "classless.apps.test",
            "web",
            public.clone(),
        ),
    )
    .await;
    let class = "/apis/networking.k8s.io/v1/ingressclasses/heim";
    let (_, mut heim_class) = w.cp.get(class).await.unwrap();
    heim_class["metadata"]["annotations"] =
        json!({ "ingressclass.kubernetes.io/is-default-class": "true" });
    expect(
        "default class",
        w.cp.replace(class, &heim_class).await.unwrap(),
        &[200],
    );
    until(&client, &heim, "classless.apps.test", "/", (200, "web")).await;
    // Not ours: no route, and no certificate either (a Secret serves the
    // hosts of the Ingresses heim serves that name it, no others).
    assert_eq!(plain_status(&heim, "theirs.apps.test"), 404);
    let (status, why) = get(&client, &heim, "theirs.apps.test", "/").await;
    assert!(
        status == 0 && why.contains("alert"),
        "no certificate: {status} {why}"
    );
    // The class taken away: no longer ours.
    let mut moved = ingress(
        "legacy",
        Some("other"),
        "legacy.apps.test",
        "web",
        json!({ "heim.dev/public": "true" }),
    );
    moved["metadata"]["annotations"] = json!({ "heim.dev/public": "true" });
    expect(
        "replace",
        w.cp.delete(&format!("{ING}/legacy")).await.unwrap(),
        &[200],
    );
    apply(&w.cp, &moved).await;
    assert!(
        eventually(|| async { plain_status(&heim, "legacy.apps.test") == 404 }).await,
        "legacy.apps.test still served: {}",
        heim.log_text()
    );

    // Overlap: the younger Ingress's claim loses, with an Event.
    apply(
        &w.cp,
        &ingress(
            "copycat",
            Some("heim"),
            "web.apps.test",
            "web",
            public.clone(),
        ),
    )
    .await;
    let conflict = eventually(|| async {
        events(&w.cp, "copycat")
            .await
            .iter()
            .any(|(r, n)| r == "RouteConflict" && n.contains("apps/web"))
    })
    .await;
    assert!(
        conflict,
        "no RouteConflict Event on copycat: {:?}",
        events(&w.cp, "copycat").await
    );
    assert_eq!(
        get(&client, &heim, "web.apps.test", "/").await,
        (200, "api".into())
    );

    // An invalid annotation: an Event naming it, that Ingress denied (it
    // keeps its claims), the others serving.
    apply(
        &w.cp,
        &ingress(
            "quiet",
            Some("heim"),
            "quiet.apps.test",
            "web",
            public.clone(),
        ),
    )
    .await;
    until(&client, &heim, "quiet.apps.test", "/", (200, "web")).await;
    let bad = json!({ "heim.dev/public": "true", "heim.dev/proxy-body-size": "huge" });
    apply(
        &w.cp,
        &ingress("quiet", Some("heim"), "quiet.apps.test", "web", bad),
    )
    .await;
    until(&client, &heim, "quiet.apps.test", "/", (403, "")).await;
    // It keeps its claim: a younger public Ingress for the same host and
    // path does not take over while it is broken.
    apply(
        &w.cp,
        &ingress(
            "usurper",
            Some("heim"),
            "quiet.apps.test",
            "web",
            public.clone(),
        ),
    )
    .await;
    let told = eventually(|| async {
        events(&w.cp, "usurper")
            .await
            .iter()
            .any(|(r, _)| r == "RouteConflict")
    })
    .await;
    assert!(
        told,
        "no RouteConflict on usurper: {:?}",
        events(&w.cp, "usurper").await
    );
    assert_eq!(
        get(&client, &heim, "quiet.apps.test", "/").await,
        (403, String::new())
    );
    let evs = events(&w.cp, "quiet").await;
    assert!(
        evs.iter()
            .any(|(r, n)| r == "InvalidAnnotation" && n.contains("heim.dev/proxy-body-size")),
        "{evs:?}"
    );
    assert_eq!(
        get(&client, &heim, "web.apps.test", "/").await,
        (200, "api".into())
    );

    // Status: the published address, written once.
    let written =
        eventually(|| async { status_ips(&w.cp, "web").await == ["198.51.100.200"] }).await;
    assert!(
        written,
        "status of web: {:?}",
        status_ips(&w.cp, "web").await
    );
    assert!(
        status_ips(&w.cp, "theirs").await.is_empty(),
        "another class's Ingress got our status"
    );

    // Deleted: the younger claim serves now, and once it goes too, nothing.
    expect(
        "delete",
        w.cp.delete(&format!("{ING}/web")).await.unwrap(),
        &[200],
    );
    until(&client, &heim, "web.apps.test", "/", (200, "web")).await;
    expect(
        "delete",
        w.cp.delete(&format!("{ING}/copycat")).await.unwrap(),
        &[200],
    );
    assert!(
        eventually(|| async { plain_status(&heim, "web.apps.test") == 404 }).await,
        "web.apps.test still served"
    );

    let (_, m) = heim.admin("/metrics");
    assert!(
        metric(&m, "heim_kube_objects{kind=\"Ingress\"}").is_some(),
        "{m}"
    );
    assert_eq!(metric(&m, "heim_kube_leader"), Some(1), "{m}");
}

#[tokio::test]
async fn a_secret_rotation_is_seen_by_the_next_handshake() {
    let w = world("ingress-rotate").await;
    settings(&w.cp, "").await;
    let mut ing = ingress(
        "web",
        Some("heim"),
        "web.apps.test",
        "web",
        json!({ "heim.dev/public": "true" }),
    );
    ing["spec"]["tls"][0]["secretName"] = json!("web-tls");
    let first = tls_secret(&w.cp, &w.pki, "web-tls", &["web.apps.test"]).await;
    apply(&w.cp, &ing).await;
    let heim = controller(&w, &[]);
    let client = Client::new(&w.pki.ca_der);
    until(&client, &heim, "web.apps.test", "/", (200, "web")).await;
    let (_, leaf) = client
        .tls(heim.https, "web.apps.test", false)
        .await
        .unwrap();
    assert_eq!(leaf, first);
    // cert-manager renews: the Secret gets a new certificate.
    let second = tls_secret(&w.cp, &w.pki, "web-tls", &["web.apps.test"]).await;
    assert_ne!(first, second);
    let seen = eventually(|| async {
        let (_, leaf) = client
            .tls(heim.https, "web.apps.test", false)
            .await
            .unwrap();
        leaf == second
    })
    .await;
    assert!(
        seen,
        "the rotated certificate was never served; logs:\n{}",
        heim.log_text()
    );
}

#[tokio::test]
async fn one_leader_writes_status_and_another_takes_over() {
    let w = world("ingress-leader").await;
    settings(&w.cp, "").await;
    apply(
        &w.cp,
        &ingress(
            "web",
            Some("heim"),
            "web.apps.test",
            "web",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    let a = controller(
        &w,
        &[
            "--pod-name=replica-a",
            "--publish-status-address=198.51.100.201",
        ],
    );
    let b = controller(
        &w,
        &[
            "--pod-name=replica-b",
            "--publish-status-address=198.51.100.201",
        ],
    );
    let shadow = controller(
        &w,
        &[
            "--pod-name=shadow",
            "--update-status=false",
            "--election-id=shadow-lease",
            "--publish-status-address=198.51.100.99",
        ],
    );
    let client = Client::new(&w.pki.ca_der);
    for h in [&a, &b, &shadow] {
        until(&client, h, "web.apps.test", "/", (200, "web")).await;
    }
    let leader_of = |h: &Heim| {
        admin_get(h.admin, "/metrics")
            .ok()
            .and_then(|(_, m)| metric(&m, "heim_kube_leader"))
    };
    let one_leader =
        |l: (Option<u64>, Option<u64>)| matches!(l, (Some(1), Some(0)) | (Some(0), Some(1)));
    eventually(|| async { one_leader((leader_of(&a), leader_of(&b))) }).await;
    let leaders = (leader_of(&a), leader_of(&b));
    assert!(one_leader(leaders), "leaders: {leaders:?}");
    let (leader, follower) = if leaders.0 == Some(1) { (a, b) } else { (b, a) };
    let written =
        eventually(|| async { status_ips(&w.cp, "web").await == ["198.51.100.201"] }).await;
    assert!(written, "status: {:?}", status_ips(&w.cp, "web").await);
    let writes = |h: &Heim| {
        admin_get(h.admin, "/metrics")
            .ok()
            .and_then(|(_, m)| metric(&m, "heim_kube_status_writes_total"))
    };
    assert_eq!(writes(&leader), Some(1), "the leader wrote status once");
    assert_eq!(writes(&follower), Some(0), "the follower wrote nothing");
    assert_eq!(
        writes(&shadow),
        Some(0),
        "--update-status=false writes nothing"
    );

    // The leader stops (SIGTERM releases the Lease): the follower leads and
    // writes the status of a new Ingress.
    leader.signal("TERM");
    let took_over = eventually(|| async { leader_of(&follower) == Some(1) }).await;
    assert!(
        took_over,
        "the follower never led; logs:\n{}",
        follower.log_text()
    );
    apply(
        &w.cp,
        &ingress(
            "api",
            Some("heim"),
            "api.apps.test",
            "api",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    let written =
        eventually(|| async { status_ips(&w.cp, "api").await == ["198.51.100.201"] }).await;
    assert!(
        written,
        "status of api: {:?}",
        status_ips(&w.cp, "api").await
    );
    assert_eq!(writes(&shadow), Some(0));
    assert!(!status_ips(&w.cp, "web")
        .await
        .contains(&"198.51.100.99".to_string()));

    // Moved to another controller's class: the leader takes back the
    // address heim wrote (and the shadow replica still writes nothing).
    apply(
        &w.cp,
        &ingress(
            "web",
            Some("other"),
            "web.apps.test",
            "web",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    let cleared = eventually(|| async { status_ips(&w.cp, "web").await.is_empty() }).await;
    assert!(
        cleared,
        "status of web after its class moved: {:?}",
        status_ips(&w.cp, "web").await
    );
    assert_eq!(writes(&shadow), Some(0));
}

#[tokio::test]
async fn the_api_server_going_away_keeps_the_last_snapshot_serving() {
    let mut w = world("ingress-apiserver").await;
    settings(&w.cp, "").await;
    apply(
        &w.cp,
        &ingress(
            "web",
            Some("heim"),
            "web.apps.test",
            "web",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    let heim = controller(&w, &[]);
    let client = Client::new(&w.pki.ca_der);
    until(&client, &heim, "web.apps.test", "/", (200, "web")).await;
    w.cp.stop_apiserver();
    // Still served, request after request, while the watches fail.
    let restarts = || {
        admin_get(heim.admin, "/metrics").ok().and_then(|(_, m)| {
            m.lines()
                .filter(|l| l.starts_with("heim_kube_watch_restarts_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .reduce(|a, b| a + b)
        })
    };
    let mut failing_seen = false;
    for _ in 0..100 {
        assert_eq!(
            get(&client, &heim, "web.apps.test", "/").await,
            (200, "web".into())
        );
        if restarts().unwrap_or(0) > 0 {
            failing_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failing_seen,
        "no watch restart counted; logs:\n{}",
        heim.log_text()
    );
    // The log line is read from heim's stdout by another thread: wait for it.
    assert!(heim.wait_log("watch failed", LIVE), "{}", heim.log_text());
    assert_eq!(
        heim.admin("/readyz").0,
        200,
        "still ready: it serves the last snapshot"
    );
    w.cp.start_apiserver().await.unwrap();
    // Watches resume: a change made now is live.
    apply(
        &w.cp,
        &ingress(
            "web",
            Some("heim"),
            "web.apps.test",
            "api",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    until(&client, &heim, "web.apps.test", "/", (200, "api")).await;
    assert!(heim.wait_log("watch resumed", LIVE), "{}", heim.log_text());
}

/// `kubectl` 1.20.2 from tests/setup-kube.
fn kubectl(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let bin = heim_e2e::kube::kubectl_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig().unwrap())
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn deploy_applies_and_its_rbac_is_enough() {
    let w = world("ingress-deploy").await;
    // A server-side dry run does not create the namespace its objects go to.
    // (and the example overlay's Ingress goes where Grafana runs).
    let (ok, out) = kubectl(&w.cp, &["apply", "-f", "deploy/base/namespace.yaml"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&w.cp, &["create", "namespace", "monitoring"]);
    assert!(ok, "{out}");
    // kustomize as kubectl 1.20 builds it; the PodDisruptionBudget is
    // policy/v1 (1.21 and later), which this 1.20 API server serves as
    // v1beta1: the only rewrite.
    let built = |dir: &str| {
        let (ok, out) = kubectl(&w.cp, &["kustomize", dir]);
        assert!(ok, "kubectl kustomize {dir}:\n{out}");
        assert!(out.contains("apiVersion: policy/v1\n"), "{out}");
        let file = w.dir.join(format!("{}.yaml", dir.replace('/', "-")));
        std::fs::write(
            &file,
            out.replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n"),
        )
        .unwrap();
        file
    };
    for dir in ["deploy/base", "deploy/overlays/grafana-google"] {
        let file = built(dir);
        let (ok, out) = kubectl(
            &w.cp,
            &["apply", "--dry-run=server", "-f", file.to_str().unwrap()],
        );
        assert!(ok, "kubectl apply --dry-run=server of {dir}:\n{out}");
    }
    let file = built("deploy/base");
    let (ok, out) = kubectl(&w.cp, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "kubectl apply of deploy/base:\n{out}");
    // The base's settings with test listeners (the real ports are the
    // Deployment's), then the controller as the ServiceAccount.
    let (_, mut cm) =
        w.cp.get("/api/v1/namespaces/heim/configmaps/heim-ingress")
            .await
            .unwrap();
    cm["data"]["heim.toml"] = json!("[server]\nhttps_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    expect(
        "ConfigMap",
        w.cp.replace("/api/v1/namespaces/heim/configmaps/heim-ingress", &cm)
            .await
            .unwrap(),
        &[200],
    );
    let token =
        w.cp.service_account_token("heim", "heim-ingress")
            .await
            .unwrap();
    let kubeconfig = w.cp.kubeconfig_for("heim-ingress", &token).unwrap();
    apply(
        &w.cp,
        &ingress(
            "web",
            Some("heim"),
            "web.apps.test",
            "web",
            json!({ "heim.dev/public": "true", "heim.dev/allow-emails": "x" }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress(
            "ok",
            Some("heim"),
            "ok.apps.test",
            "web",
            json!({ "heim.dev/public": "true" }),
        ),
    )
    .await;
    let heim = Heim::start_ingress(
        &w.dir,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--config-map=heim/heim-ingress",
            "--pod-namespace=heim",
            "--pod-name=sa",
            "--publish-status-address=198.51.100.202",
        ],
    )
    .unwrap();
    heim.wait_ready()
        .unwrap_or_else(|e| panic!("{e}: {}", heim.log_text()));
    let client = Client::new(&w.pki.ca_der);
    until(&client, &heim, "ok.apps.test", "/", (200, "web")).await;
    // Lease, status and Events, all with the ServiceAccount's rights.
    let done = eventually(|| async {
        status_ips(&w.cp, "ok").await == ["198.51.100.202"]
            && events(&w.cp, "web")
                .await
                .iter()
                .any(|(r, _)| r == "InvalidAnnotation")
    })
    .await;
    let (_, lease) =
        w.cp.get("/apis/coordination.k8s.io/v1/namespaces/heim/leases/heim-ingress-leader")
            .await
            .unwrap();
    assert!(
        done,
        "status or Event missing; lease {lease}; logs:\n{}",
        heim.log_text()
    );
    assert_eq!(lease["spec"]["holderIdentity"], "sa", "{lease}");
    assert!(
        !heim.log_text().contains("forbidden"),
        "an RBAC refusal:\n{}",
        heim.log_text()
    );
}

/// The move off ingress-nginx: heim answers to ingress-nginx's controller
/// string, so the Ingresses of its `nginx` class are served unedited, in
/// the nginx dialect: `[ingress_nginx] default_policy` (public here, as
/// they were), `proxy-body-size` (413), `whitelist-source-range` (403),
/// a snippet refused with an Event while the rest serves, an auth service
/// that cannot be reached (500), and `Normal Adopted` Events; heim's
/// own class keeps heim's deny-by-default.
#[tokio::test]
async fn ingress_nginx_ingresses_are_taken_over() {
    let w = world("ingress-nginx-takeover").await;
    nginx_class(&w.cp).await;
    // Sign-in, for the oauth2-proxy pair heim serves itself.
    std::fs::write(w.dir.join("cookie.secret"), [7u8; 32]).unwrap();
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(
        w.dir.join("users.txt"),
        format!("alice@example.com:{hash}\n"),
    )
    .unwrap();
    let d = w.dir.display();
    settings(
        &w.cp,
        &format!(
            "[ingress_nginx]\ndefault_policy = \"public\"\n\n[auth]\nauth_host = \"auth.apps.test\"\ncookie_secret_file = \"{d}/cookie.secret\"\nsigning_key_file = \"{d}/jwt.pem\"\n\n[[auth.provider]]\nname = \"local\"\nkind = \"local\"\nusers_file = \"{d}/users.txt\"\n"
        ),
    )
    .await;
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    apply(
        &w.cp,
        &ingress(
            "sso",
            Some("nginx"),
            "sso.apps.test",
            "web",
            json!({
                n("auth-url"): "https://$host/oauth2/auth",
                n("auth-signin"): "https://$host/oauth2/start?rd=$escaped_request_uri",
                n("auth-response-headers"): "X-Auth-Request-User, X-Auth-Request-Email",
            }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress(
            "shop",
            Some("nginx"),
            "shop.apps.test",
            "web",
            json!({
                n("proxy-body-size"): "1k",
                n("configuration-snippet"): "more_set_headers \"X-Frame-Options: DENY\";",
                n("secure-backends"): "true",
            }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress(
            "office",
            Some("nginx"),
            "office.apps.test",
            "web",
            json!({ n("whitelist-source-range"): "192.0.2.0/24" }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress(
            "guarded",
            Some("nginx"),
            "guarded.apps.test",
            "web",
            json!({ n("auth-url"): "http://auth.example.svc.cluster.local/check" }),
        ),
    )
    .await;
    // Regex mode and a rewrite: /api(/|$)(.*) -> /$2 on the api Service,
    // and the Exact /healthz of another Ingress on the host is a
    // case-insensitive regex from the start too.
    let mut api = ingress(
        "api",
        Some("nginx"),
        "regex.apps.test",
        "api",
        json!({
            n("use-regex"): "true",
            n("rewrite-target"): "/$2",
            n("x-forwarded-prefix"): "/api",
            n("upstream-vhost"): "api.internal",
        }),
    );
    api["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/api(/|$)(.*)");
    api["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("ImplementationSpecific");
    apply(&w.cp, &api).await;
    let mut health = ingress("health", Some("nginx"), "regex.apps.test", "web", json!({}));
    health["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/healthz");
    health["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("Exact");
    apply(&w.cp, &health).await;
    // Redirects, answered before sign-in: a moved site keeps the request
    // URI ($request_uri), an app root sends / to its start page.
    apply(
        &w.cp,
        &ingress(
            "moved",
            Some("nginx"),
            "moved.apps.test",
            "web",
            json!({
                n("permanent-redirect"): "https://new.apps.test$request_uri",
                n("permanent-redirect-code"): "308",
            }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress(
            "approot",
            Some("nginx"),
            "approot.apps.test",
            "web",
            json!({ n("app-root"): "/login$is_args$args" }),
        ),
    )
    .await;
    // The legacy annotation names the class too.
    apply(
        &w.cp,
        &ingress(
            "old",
            None,
            "old.apps.test",
            "api",
            json!({ "kubernetes.io/ingress.class": "nginx" }),
        ),
    )
    .await;
    apply(
        &w.cp,
        &ingress("mine", Some("heim"), "mine.apps.test", "web", json!({})),
    )
    .await;
    let heim = controller(
        &w,
        &[
            "--controller-class=heim.dev/ingress-controller",
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
        ],
    );
    let client = Client::new(&w.pki.ca_der);
    until(&client, &heim, "shop.apps.test", "/", (200, "web")).await;
    until(&client, &heim, "old.apps.test", "/", (200, "api")).await;
    until(&client, &heim, "office.apps.test", "/", (403, "")).await;
    // An auth service that cannot be reached: 500, as nginx's auth_request.
    until(&client, &heim, "guarded.apps.test", "/", (500, "")).await;
    until(&client, &heim, "mine.apps.test", "/", (403, "")).await;
    until(
        &client,
        &heim,
        "regex.apps.test",
        "/API/v1/users?x=1",
        (200, "api"),
    )
    .await;
    let got = client
        .get(heim.https, "regex.apps.test", "/API/v1/users?x=1")
        .await
        .unwrap();
    assert_eq!(
        got.json()["uri"],
        "/v1/users?x=1",
        "rewritten with the groups"
    );
    assert_eq!(got.json()["headers"]["x-forwarded-prefix"][0], "/api");
    assert_eq!(
        got.json()["headers"]["host"][0],
        "api.internal",
        "upstream-vhost"
    );
    until(
        &client,
        &heim,
        "regex.apps.test",
        "/HEALTHZ/more",
        (200, "web"),
    )
    .await;
    until(&client, &heim, "regex.apps.test", "/nothing", (404, "")).await;
    until(&client, &heim, "moved.apps.test", "/a/b?c=1", (308, "")).await;
    let r = client
        .get(heim.https, "moved.apps.test", "/a/b?c=1")
        .await
        .unwrap();
    assert_eq!(r.headers["location"], "https://new.apps.test/a/b?c=1");
    let r = client
        .get(heim.https, "approot.apps.test", "/?x=1")
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "https://approot.apps.test/login?x=1");
    let r = client
        .get(heim.https, "approot.apps.test", "/other")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.headers["x-upstream"].to_str().unwrap()),
        (200, "web"),
        "only / itself"
    );
    // oauth2-proxy's pair is heim's sign-in: a script gets 401, a browser
    // goes to heim's sign-in page, never to the backend.
    until(&client, &heim, "sso.apps.test", "/", (401, "")).await;
    let browser = http::Request::get("/app?x=1")
        .header("host", "sso.apps.test")
        .header("accept", "text/html")
        .body(heim_e2e::Body::default())
        .unwrap();
    let r = client.request(heim.https, browser).await.unwrap();
    assert_eq!(r.status, 302);
    let to = r.headers["location"].to_str().unwrap();
    assert!(to.starts_with("https://auth.apps.test"), "{to}");
    assert!(to.contains("/.heim/login?rd="), "{to}");
    // oauth2-proxy's own paths are heim's now: a bookmarked start goes to
    // heim's sign-in (back to rd on the host, never elsewhere), its auth
    // probe is 401 without a session, sign_out goes to heim's sign-out.
    let start = |rd: &str| {
        http::Request::get(format!("/oauth2/start?rd={rd}"))
            .header("host", "sso.apps.test")
            .header("accept", "text/html")
            .body(heim_e2e::Body::default())
            .unwrap()
    };
    let r = client.request(heim.https, start("%2Fapp")).await.unwrap();
    assert_eq!(r.status, 302);
    let to = r.headers["location"].to_str().unwrap();
    assert!(
        to.contains("/.heim/login?rd=https%3A%2F%2Fsso.apps.test") && to.contains("%2Fapp&"),
        "{to}"
    );
    let r = client
        .request(heim.https, start("https://evil.test/"))
        .await
        .unwrap();
    let to = r.headers["location"].to_str().unwrap();
    assert!(!to.contains("evil.test"), "no open redirect: {to}");
    let r = client
        .get(heim.https, "sso.apps.test", "/oauth2/auth")
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = client
        .get(heim.https, "sso.apps.test", "/oauth2/sign_out")
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert!(r.headers["location"]
        .to_str()
        .unwrap()
        .contains("/.heim/logout"));
    // proxy-body-size: 1 KiB passes, one byte more is 413.
    let post = |n: usize| {
        http::Request::post("/")
            .header("host", "shop.apps.test")
            .body(heim_e2e::Body::from(vec![b'x'; n]))
            .unwrap()
    };
    assert_eq!(
        client.request(heim.https, post(1024)).await.unwrap().status,
        200
    );
    assert_eq!(
        client.request(heim.https, post(1025)).await.unwrap().status,
        413
    );
    // Each verdict is an Event on its Ingress.
    let ok = eventually(|| async {
        let e = events(&w.cp, "shop").await;
        let has = |r: &str| e.iter().any(|(reason, _)| reason == r);
        has("Adopted") && has("SnippetRefused") && has("AnnotationIgnored")
    })
    .await;
    assert!(ok, "shop's Events: {:?}", events(&w.cp, "shop").await);
    let shop = events(&w.cp, "shop").await;
    let snippet = shop.iter().find(|(r, _)| r == "SnippetRefused").unwrap();
    assert!(snippet.1.contains("more_set_headers"), "{snippet:?}");
    let adopted = shop.iter().find(|(r, _)| r == "Adopted").unwrap();
    assert!(adopted.1.contains("proxy-body-size"), "{adopted:?}");
    let ok = eventually(|| async {
        events(&w.cp, "guarded")
            .await
            .iter()
            .any(|(r, note)| r == "Adopted" && note.contains("auth-url"))
    })
    .await;
    assert!(ok, "guarded's Events: {:?}", events(&w.cp, "guarded").await);

    // `migrate` against the live cluster: the same verdicts.
    let kubeconfig = w.cp.kubeconfig().unwrap();
    let out = tokio::process::Command::new(heim_e2e::ingress_binary())
        .args(["migrate", "--output", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shop = r["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "shop")
        .unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(shop["served_as_before"], false, "the snippet: {shop:#}");
    let mine = r["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "mine");
    assert!(!mine, "heim's own class is not ingress-nginx's");

    // ingress-nginx uninstalled carelessly: its admission webhook is left,
    // its Service has no endpoints, and every Ingress write would fail. A
    // controller starting now says so.
    expect(
        "ValidatingWebhookConfiguration",
        w.cp.create(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            &json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                "metadata": { "name": "ingress-nginx-admission" },
                "webhooks": [{ "name": "validate.nginx.ingress.kubernetes.io",
                    "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
                    "clientConfig": { "service": { "namespace": "ingress-nginx", "name": "ingress-nginx-controller-admission", "path": "/networking/v1/ingresses" } },
                    "rules": [{ "apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                                "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"] }] }] }),
        )
        .await
        .unwrap(),
        &[201],
    );
    let second = controller(&w, &["--controller-class=k8s.io/ingress-nginx"]);
    assert!(
        second.wait_log(
            "ingress-nginx/ingress-nginx-controller-admission, which has no ready endpoints",
            LIVE
        ),
        "{}",
        second.log_text()
    );
}

/// ingress-nginx's access annotations against the real API server, each as
/// ingress-nginx's e2e tests (test/e2e/annotations/) assert it: basic auth
/// from an htpasswd Secret (401 with the realm, the password passes and
/// `Authorization` goes no further), `auth-url` to an auth service (its
/// verdict, `auth-response-headers` over a client's forged copy, the
/// sign-in redirect with `rd`), CORS (preflight 204, the Origin echoed, a
/// foreign Origin gets nothing), a canary by header, `limit-rps` (503),
/// `denylist-source-range` (403), `custom-http-errors` and
/// `default-backend`, and the implicit root location carrying the oldest
/// Ingress's redirect.
#[tokio::test]
async fn ingress_nginx_access_annotations() {
    let w = world("ingress-nginx-access").await;
    nginx_class(&w.cp).await;
    settings(&w.cp, "[ingress_nginx]\ndefault_policy = \"public\"\n").await;
    // An auth service: 202 with the user for the right token, else 401; it
    // echoes what nginx's sub-request carries.
    let (auth, _auth_task) =
        heim_e2e::serve_http1(|req: http::Request<hyper::body::Incoming>| async move {
            let ok = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer good");
            let original = req
                .headers()
                .get("x-original-url")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            http::Response::builder()
                .status(if ok { 202 } else { 401 })
                .header("x-auth-request-user", if ok { "bob" } else { "" })
                .header("x-seen-original-url", original)
                .body(heim_e2e::Body::default())
                .unwrap()
        })
        .await;
    // htpasswd -bm: user foo, password s3cret (Apache MD5).
    let htpasswd = "foo:$apr1$heimsalt$gTGGNXAD5dFP8pGZRq4Bx0\n";
    expect(
        "Secret",
        w.cp.create(
            &format!("/api/v1/namespaces/{NS}/secrets"),
            &json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": { "name": "basic-auth", "namespace": NS },
                     "stringData": { "auth": htpasswd } }),
        )
        .await
        .unwrap(),
        &[201],
    );
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    for (name, host, svc, annotations) in [
        (
            "basic",
            "basic.apps.test",
            "web",
            json!({ n("auth-type"): "basic", n("auth-secret"): "basic-auth", n("auth-realm"): "Staff only" }),
        ),
        (
            "external",
            "ext.apps.test",
            "web",
            json!({ n("auth-url"): format!("http://{auth}/check"),
                    n("auth-signin"): "https://login.apps.test/start",
                    n("auth-response-headers"): "X-Auth-Request-User" }),
        ),
        (
            "cors",
            "cors.apps.test",
            "web",
            json!({ n("enable-cors"): "true", n("cors-allow-origin"): "https://*.apps.test" }),
        ),
        ("main", "canary.apps.test", "web", json!({})),
        (
            "main-canary",
            "canary.apps.test",
            "api",
            json!({ n("canary"): "true", n("canary-by-header"): "X-Canary" }),
        ),
        (
            "limited",
            "limited.apps.test",
            "web",
            json!({ n("limit-rps"): "1", n("limit-burst-multiplier"): "1" }),
        ),
        (
            "denied",
            "denied.apps.test",
            "web",
            json!({ n("denylist-source-range"): "127.0.0.0/8" }),
        ),
        (
            "pages",
            "pages.apps.test",
            "api",
            json!({ n("default-backend"): "web", n("custom-http-errors"): "404,503" }),
        ),
        (
            "idle",
            "idle.apps.test",
            "missing",
            json!({ n("default-backend"): "web" }),
        ),
    ] {
        apply(&w.cp, &ingress(name, Some("nginx"), host, svc, annotations)).await;
    }
    // Only /something is written; the host's other paths reach the
    // implicit root location, which carries this Ingress's redirect too.
    let mut gone = ingress(
        "gone",
        Some("nginx"),
        "gone.apps.test",
        "web",
        json!({ n("permanent-redirect"): "https://new.apps.test/" }),
    );
    gone["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/something");
    apply(&w.cp, &gone).await;
    let heim = controller(
        &w,
        &[
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
        ],
    );
    let client = Client::new(&w.pki.ca_der);
    let send = |host: &str, path: &str, headers: &[(&str, &str)], method: &str| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(heim_e2e::Body::default()).unwrap()
    };

    // Basic auth.
    until(&client, &heim, "basic.apps.test", "/", (401, "")).await;
    let r = client
        .get(heim.https, "basic.apps.test", "/")
        .await
        .unwrap();
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Staff only\"");
    let basic = |user_password: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    };
    for wrong in ["foo:S3cret", "bar:s3cret", "foo:"] {
        let a = basic(wrong);
        let r = client
            .request(
                heim.https,
                send("basic.apps.test", "/", &[("authorization", &a)], "GET"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{wrong}");
    }
    let a = basic("foo:s3cret");
    let r = client
        .request(
            heim.https,
            send("basic.apps.test", "/", &[("authorization", &a)], "GET"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.json()["headers"].get("authorization").is_none(),
        "the password goes no further: {}",
        r.json()
    );

    // An auth service: its verdict, its headers over a forged copy.
    until(&client, &heim, "ext.apps.test", "/", (302, "")).await;
    let r = client
        .request(heim.https, send("ext.apps.test", "/app?a=b", &[], "GET"))
        .await
        .unwrap();
    assert_eq!(
        r.headers["location"],
        "https://login.apps.test/start?rd=https://ext.apps.test%2Fapp%3Fa%3Db"
    );
    let r = client
        .request(
            heim.https,
            send(
                "ext.apps.test",
                "/app",
                &[
                    ("authorization", "Bearer good"),
                    ("x-auth-request-user", "mallory"),
                ],
                "POST",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-auth-request-user"][0],
        "bob",
        "{}",
        r.json()
    );
    assert_eq!(
        r.json()["headers"]["x-auth-request-user"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // CORS.
    until(&client, &heim, "cors.apps.test", "/", (200, "web")).await;
    let r = client
        .request(
            heim.https,
            send(
                "cors.apps.test",
                "/",
                &[
                    ("origin", "https://app.apps.test"),
                    ("access-control-request-method", "PUT"),
                ],
                "OPTIONS",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 204, "answered by heim");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.apps.test"
    );
    assert!(
        r.headers.get("x-upstream").is_none(),
        "never reaches the backend"
    );
    let r = client
        .request(
            heim.https,
            send(
                "cors.apps.test",
                "/",
                &[("origin", "https://APP.apps.test")],
                "GET",
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://APP.apps.test"
    );
    for foreign in [
        "https://evil.test",
        "https://a.b.apps.test",
        "http://app.apps.test",
    ] {
        let r = client
            .request(
                heim.https,
                send("cors.apps.test", "/", &[("origin", foreign)], "GET"),
            )
            .await
            .unwrap();
        assert!(
            r.headers.get("access-control-allow-origin").is_none(),
            "{foreign}"
        );
    }

    // A canary by header: `always` goes to it, `never` and none to the mainline.
    until(&client, &heim, "canary.apps.test", "/", (200, "web")).await;
    for (value, want) in [("always", "api"), ("never", "web"), ("other", "web")] {
        let r = client
            .request(
                heim.https,
                send("canary.apps.test", "/", &[("x-canary", value)], "GET"),
            )
            .await
            .unwrap();
        assert_eq!(r.headers["x-upstream"], want, "X-Canary: {value}");
    }

    // limit-rps 1 with a burst of 1: of five requests at once, some get 503.
    until(&client, &heim, "limited.apps.test", "/", (200, "web")).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&client, &heim, "limited.apps.test", "/").await.0);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );

    // The test client is on 127.0.0.1: denied.
    until(&client, &heim, "denied.apps.test", "/", (403, "")).await;

    // custom-http-errors: api's 404 is replaced by the default backend's
    // answer, told what happened; other statuses pass. A Service without
    // endpoints is served by the default backend.
    until(&client, &heim, "pages.apps.test", "/", (200, "api")).await;
    let r = client
        .request(
            heim.https,
            send(
                "pages.apps.test",
                "/status/404?x=1",
                &[("accept", "application/json")],
                "GET",
            ),
        )
        .await
        .unwrap();
    // The error backend's own status (web answers 200 for `/`).
    assert_eq!(
        (r.status, r.headers["x-upstream"].to_str().unwrap()),
        (200, "web")
    );
    assert_eq!(r.json()["uri"], "/", "as ingress-nginx's error location");
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-code"][0], "404", "{seen}");
    assert_eq!(seen["x-original-uri"][0], "/status/404?x=1");
    assert_eq!(seen["x-format"][0], "application/json");
    assert_eq!(seen["x-ingress-name"][0], "pages");
    let r = client
        .get(heim.https, "pages.apps.test", "/status/418")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.headers["x-upstream"].to_str().unwrap()),
        (418, "api")
    );
    until(&client, &heim, "idle.apps.test", "/", (200, "web")).await;

    // The implicit root: paths no Ingress names are redirected as well.
    until(&client, &heim, "gone.apps.test", "/other", (301, "")).await;
    let r = client
        .get(heim.https, "gone.apps.test", "/other/x")
        .await
        .unwrap();
    assert_eq!(r.headers["location"], "https://new.apps.test/");
}

/// A TLS backend in the test namespace: a certificate for `names` from the
/// test CA, answering every request with `x-upstream: <name>`.
fn tls_backend(
    listener: std::net::TcpListener,
    pki: &Pki,
    name: &'static str,
    names: &[&str],
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    pki.leaf(name, names);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.dir.join(format!("{name}.pem")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(pki.dir.join(format!("{name}-key.pem")))
            .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-upstream", name)
                            .body(heim_e2e::Body::from("end to end"))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// ingress-nginx's `ssl-passthrough` (with `--enable-ssl-passthrough`, as
/// there): the client's TLS goes through heim unopened to the pod, whose
/// own certificate answers; without the flag the annotation does nothing
/// (ingress-nginx's behaviour), and other hosts are still heim's.
#[tokio::test]
async fn ingress_nginx_ssl_passthrough() {
    let w = world("ingress-nginx-passthrough").await;
    nginx_class(&w.cp).await;
    settings(&w.cp, "[ingress_nginx]\ndefault_policy = \"public\"\n").await;
    let (pod, _pod_task) = tls_backend(
        w._netns.listen(0).unwrap(),
        &w.pki,
        "pod-tls",
        &["pt.apps.test"],
    );
    service(&w.cp, "pod-tls", pod).await;
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    let mut pt = ingress(
        "pt",
        Some("nginx"),
        "pt.apps.test",
        "pod-tls",
        json!({ n("ssl-passthrough"): "true" }),
    );
    // A passthrough Ingress needs no TLS section of its own.
    pt["spec"].as_object_mut().unwrap().remove("tls");
    apply(&w.cp, &pt).await;
    apply(
        &w.cp,
        &ingress("plain", Some("nginx"), "plain.apps.test", "web", json!({})),
    )
    .await;
    let heim = controller(
        &w,
        &[
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
            "--enable-ssl-passthrough",
        ],
    );
    let client = Client::new(&w.pki.ca_der);
    until(&client, &heim, "plain.apps.test", "/", (200, "web")).await;
    until(&client, &heim, "pt.apps.test", "/", (200, "pod-tls")).await;
    let r = client.get(heim.https, "pt.apps.test", "/x").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.body), "end to end");
    drop(heim);

    // Without --enable-ssl-passthrough: heim terminates TLS for the host,
    // and speaks plain HTTP to a pod that wants TLS (ingress-nginx did the
    // same): never the pod's answer.
    let heim = controller(
        &w,
        &[
            "--controller-class=k8s.io/ingress-nginx",
            "--ingress-class=nginx",
        ],
    );
    until(&client, &heim, "plain.apps.test", "/", (200, "web")).await;
    let (status, who) = get(&client, &heim, "pt.apps.test", "/").await;
    assert_ne!(who, "pod-tls", "{status}");
}
