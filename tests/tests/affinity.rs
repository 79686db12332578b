//! ingress-nginx's sticky sessions (`affinity: cookie`) through heim-ingress
//! and a real kube-apiserver (tests/src/kube.rs): one Service with two
//! endpoints in a network namespace; with the cookie heim set, every
//! request reaches the same endpoint; without it, requests spread. Named
//! after ingress-nginx's `test/e2e/annotations/affinity.go` where they check
//! the same thing.

use std::time::Duration;

use heim_e2e::kube::{ControlPlane, Netns};
use heim_e2e::upstream::http1_on;
use heim_e2e::{scratch, Client, Heim, Pki, Reply};
use serde_json::{json, Value};

const NS: &str = "apps";
const ING: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses";
const LIVE: Duration = Duration::from_secs(10);

fn expect(what: &str, got: (u16, Value), want: &[u16]) {
    assert!(want.contains(&got.0), "{what}: {} {}", got.0, got.1);
}

async fn create(cp: &ControlPlane, what: &str, path: &str, object: Value) {
    expect(what, cp.create(path, &object).await.unwrap(), &[201]);
}

/// An ingress-nginx Ingress `name` for `host` with `paths` to Service `svc`.
fn ingress(name: &str, host: &str, paths: &[&str], svc: &str, annotations: Value) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|p| {
            json!({ "path": p, "pathType": "Prefix",
                         "backend": { "service": { "name": svc, "port": { "name": "http" } } } })
        })
        .collect();
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": name, "namespace": NS, "annotations": annotations },
            "spec": { "ingressClassName": "nginx",
                      "tls": [{ "hosts": [host], "secretName": "wildcard-tls" }],
                      "rules": [{ "host": host, "http": { "paths": paths } }] } })
}

/// The affinity cookie's `Set-Cookie`, if the response has one.
fn set_cookie(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn upstream(r: &Reply) -> String {
    r.headers
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn affinity_cookie_pins_a_client_to_one_endpoint() {
    let cp = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane did not start: {e:#}"));
    let netns = Netns::new().unwrap_or_else(|e| {
        panic!("cannot create a test network namespace ({e:#}): run as root with iproute2")
    });
    let a = http1_on(netns.listen(0).unwrap(), "a");
    let b = http1_on(netns.listen(0).unwrap(), "b");
    let dir = scratch("affinity");
    let pki = Pki::new(&dir);
    create(
        &cp,
        "namespace",
        "/api/v1/namespaces",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
    )
    .await;
    create(
        &cp,
        "IngressClass",
        "/apis/networking.k8s.io/v1/ingressclasses",
        json!({ "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": { "name": "nginx" }, "spec": { "controller": "k8s.io/ingress-nginx" } }),
    )
    .await;
    // One Service, two endpoints (same pod IP, two ports: two subsets).
    create(
        &cp,
        "Service",
        &format!("/api/v1/namespaces/{NS}/services"),
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "both" },
                "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] } }),
    )
    .await;
    let subset = |addr: std::net::SocketAddr| {
        json!({ "addresses": [{ "ip": addr.ip().to_string() }],
                "ports": [{ "name": "http", "port": addr.port(), "protocol": "TCP" }] })
    };
    create(
        &cp,
        "Endpoints",
        &format!("/api/v1/namespaces/{NS}/endpoints"),
        json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "both" },
                "subsets": [subset(a.addr), subset(b.addr)] }),
    )
    .await;
    {
        use base64::Engine;
        pki.leaf("wildcard-tls", &["*.apps.test"]);
        let b64 = |f: &str| {
            base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(pki.dir.join(f)).unwrap())
        };
        create(
            &cp,
            "Secret",
            &format!("/api/v1/namespaces/{NS}/secrets"),
            json!({ "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": { "name": "wildcard-tls", "namespace": NS },
                    "data": { "tls.crt": b64("wildcard-tls.pem"), "tls.key": b64("wildcard-tls-key.pem") } }),
        )
        .await;
    }
    let settings = "[server]\nhttps_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[ingress_nginx]\ndefault_policy = \"public\"\n";
    create(
        &cp,
        "namespace heim",
        "/api/v1/namespaces",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "heim" } }),
    )
    .await;
    create(
        &cp,
        "ConfigMap",
        "/api/v1/namespaces/heim/configmaps",
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings", "namespace": "heim" },
                "data": { "heim.toml": settings } }),
    )
    .await;
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    for object in [
        ingress(
            "sticky",
            "sticky.apps.test",
            &["/", "/something"],
            "both",
            json!({ n("affinity"): "cookie", n("session-cookie-name"): "SERVERID",
                    n("session-cookie-max-age"): "259200" }),
        ),
        // Another Ingress on the host: its paths stay round-robin.
        ingress("plain", "sticky.apps.test", &["/plain"], "both", json!({})),
    ] {
        create(&cp, "Ingress", ING, object).await;
    }
    let kubeconfig = cp.kubeconfig().unwrap();
    let heim = Heim::start_ingress(
        &dir,
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
    let client = Client::new(&pki.ca_der);
    let host = "sticky.apps.test";
    let get = |path: &'static str, cookie: Option<String>| {
        let client = &client;
        let heim = &heim;
        async move {
            let mut req = http::Request::get(path).header("host", host);
            if let Some(c) = cookie {
                req = req.header("cookie", format!("other=1; {c}"));
            }
            client
                .request(heim.https, req.body(heim_e2e::Body::default()).unwrap())
                .await
                .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + LIVE;
    while get("/", None).await.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sticky.apps.test never served: {}",
            heim.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // should set sticky cookie SERVERID (HttpOnly; Secure over HTTPS).
    let first = get("/", None).await;
    let cookie = set_cookie(&first, "SERVERID")
        .unwrap_or_else(|| panic!("no SERVERID cookie: {:?}", first.headers));
    assert!(cookie.contains("; Path=/;"), "{cookie}");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");
    assert!(cookie.contains("; Secure"), "HTTPS request: {cookie}");
    assert!(cookie.contains("; Max-Age=259200"), "{cookie}");
    assert!(!cookie.contains("; Domain"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    assert!(
        !pair.contains(&a.addr.ip().to_string()),
        "the value reveals no address: {pair}"
    );
    let pinned = upstream(&first);

    // With the cookie: always the same endpoint, and no new cookie.
    for _ in 0..8 {
        let r = get("/", Some(pair.clone())).await;
        assert_eq!(r.status, 200);
        assert_eq!(upstream(&r), pinned, "sticky to {pinned}");
        assert_eq!(set_cookie(&r, "SERVERID"), None, "the cookie stays");
    }
    // Without it: requests spread over both endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(upstream(&get("/", None).await));
    }
    assert_eq!(seen.len(), 2, "round-robin without the cookie: {seen:?}");
    // A forged value picks nothing: balanced, and pinned anew.
    let forged = get("/", Some("SERVERID=0000000000000000".into())).await;
    assert_eq!(forged.status, 200);
    assert!(set_cookie(&forged, "SERVERID").is_some(), "pinned anew");

    // should set the path to /something on the generated cookie.
    let r = get("/something", None).await;
    let c = set_cookie(&r, "SERVERID").expect("cookie on /something");
    assert!(c.contains("; Path=/something;"), "{c}");

    // should not set affinity across all server locations when using
    // separate ingresses.
    for _ in 0..2 {
        let r = get("/plain", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers.get(http::header::SET_COOKIE),
            None,
            "no cookie on another Ingress's path"
        );
    }
    drop((a, b, netns));
}
