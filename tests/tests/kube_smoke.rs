//! The test control plane itself (tests/src/kube.rs), before anything runs
//! against it: the real kube-apiserver 1.20.2 that `tests/setup-kube` builds
//! serves the kinds the ingress controller reads and writes (Ingress and
//! IngressClass v1, Lease v1, EndpointSlice only as v1beta1), takes
//! ServiceAccount tokens, and accepts Endpoints on a test network
//! namespace's address while refusing loopback ones.

use heim_e2e::kube::{ControlPlane, Netns};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn control_plane() -> ControlPlane {
    match ControlPlane::start().await {
        Ok(cp) => cp,
        Err(e) => panic!("control plane did not start: {e:#}"),
    }
}

/// `(status, body)` must have `want`; the body tells why not.
fn expect(what: &str, got: (u16, Value), want: u16) -> Value {
    assert_eq!(got.0, want, "{what}: {}", got.1);
    got.1
}

#[tokio::test]
async fn serves_the_kinds_the_ingress_controller_uses() {
    let cp = control_plane().await;

    let version = expect("GET /version", cp.get("/version").await.unwrap(), 200);
    assert_eq!(version["gitVersion"], "v1.20.2", "{version}");

    expect(
        "create Namespace",
        cp.create(
            "/api/v1/namespaces",
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "smoke" } }),
        )
        .await
        .unwrap(),
        201,
    );

    let class = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": "heim",
            "annotations": { "ingressclass.kubernetes.io/is-default-class": "true" },
        },
        "spec": { "controller": "heim.dev/ingress-controller" },
    });
    expect(
        "create IngressClass",
        cp.create("/apis/networking.k8s.io/v1/ingressclasses", &class)
            .await
            .unwrap(),
        201,
    );

    let ingresses = "/apis/networking.k8s.io/v1/namespaces/smoke/ingresses";
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": "web", "annotations": { "heim.dev/public": "true" } },
        "spec": {
            "ingressClassName": "heim",
            "tls": [{ "hosts": ["app.test"], "secretName": "app-tls" }],
            "rules": [{
                "host": "app.test",
                "http": { "paths": [{
                    "path": "/api",
                    "pathType": "Prefix",
                    "backend": { "service": { "name": "web", "port": { "name": "http" } } },
                }] },
            }],
        },
    });
    expect(
        "create Ingress",
        cp.create(ingresses, &ingress).await.unwrap(),
        201,
    );
    let mut read = expect(
        "read Ingress back",
        cp.get(&format!("{ingresses}/web")).await.unwrap(),
        200,
    );
    assert_eq!(read["spec"], ingress["spec"], "{read}");
    assert_eq!(read["metadata"]["annotations"]["heim.dev/public"], "true");

    // The status subresource, which only the leader writes.
    read["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.1" }] } });
    let updated = expect(
        "PUT Ingress status",
        cp.replace(&format!("{ingresses}/web/status"), &read)
            .await
            .unwrap(),
        200,
    );
    assert_eq!(
        updated["status"]["loadBalancer"]["ingress"][0]["ip"],
        "198.51.100.1"
    );

    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": "heim-leader" },
        "spec": {
            "holderIdentity": "heim-0",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    });
    let leases = "/apis/coordination.k8s.io/v1/namespaces/smoke/leases";
    expect(
        "create Lease",
        cp.create(leases, &lease).await.unwrap(),
        201,
    );
    let read = expect(
        "read Lease back",
        cp.get(&format!("{leases}/heim-leader")).await.unwrap(),
        200,
    );
    assert_eq!(read["spec"]["holderIdentity"], "heim-0");

    // Server-side apply, as a controller would write its objects.
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "heim", "namespace": "smoke" },
        "data": { "heim.toml": "[server]\n" },
    });
    let path = "/api/v1/namespaces/smoke/configmaps/heim";
    expect(
        "apply ConfigMap",
        cp.apply(path, &config_map).await.unwrap(),
        201,
    );
    let read = expect("read ConfigMap", cp.get(path).await.unwrap(), 200);
    assert_eq!(read["data"]["heim.toml"], "[server]\n");

    // EndpointSlice is v1beta1 only in 1.20: hence the Endpoints fallback.
    let (status, body) = cp.get("/apis/discovery.k8s.io/v1").await.unwrap();
    assert_eq!(status, 404, "discovery.k8s.io/v1 is served: {body}");
    let beta = expect(
        "GET discovery.k8s.io/v1beta1",
        cp.get("/apis/discovery.k8s.io/v1beta1").await.unwrap(),
        200,
    );
    assert!(served(&beta, "endpointslices"), "{beta}");
    let networking = expect(
        "GET networking.k8s.io/v1",
        cp.get("/apis/networking.k8s.io/v1").await.unwrap(),
        200,
    );
    assert!(served(&networking, "ingresses"), "{networking}");
    assert!(served(&networking, "ingresses/status"), "{networking}");
    assert!(served(&networking, "ingressclasses"), "{networking}");

    // A ServiceAccount's token authenticates (RBAC then denies: 403, not 401).
    expect(
        "create ServiceAccount",
        cp.create(
            "/api/v1/namespaces/smoke/serviceaccounts",
            &json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "heim" } }),
        )
        .await
        .unwrap(),
        201,
    );
    let token = cp.service_account_token("smoke", "heim").await.unwrap();
    let (status, body) = cp.api_as(&token).get(ingresses).await.unwrap();
    assert_eq!(status, 403, "the ServiceAccount has no role yet: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("system:serviceaccount:smoke:heim")),
        "{body}"
    );
    let (status, _) = cp.api_as("not-a-token").get(ingresses).await.unwrap();
    assert_eq!(status, 401);

    // The kubeconfig carries the server, the CA and the token.
    let kubeconfig: Value =
        serde_json::from_slice(&std::fs::read(cp.kubeconfig().unwrap()).unwrap()).unwrap();
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], cp.url);
    assert_eq!(kubeconfig["users"][0]["user"]["token"], cp.token);

    expect(
        "delete Ingress",
        cp.delete(&format!("{ingresses}/web")).await.unwrap(),
        200,
    );
    let (status, _) = cp.get(&format!("{ingresses}/web")).await.unwrap();
    assert_eq!(status, 404);
}

/// The API server keeps its objects (in etcd) across a restart on the same port.
#[tokio::test]
async fn api_server_restarts_with_its_objects() {
    let mut cp = control_plane().await;
    let class = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": { "name": "heim" },
        "spec": { "controller": "heim.dev/ingress-controller" },
    });
    expect(
        "create IngressClass",
        cp.create("/apis/networking.k8s.io/v1/ingressclasses", &class)
            .await
            .unwrap(),
        201,
    );
    cp.stop_apiserver();
    assert!(
        cp.get("/version").await.is_err(),
        "the API server is stopped"
    );
    cp.start_apiserver().await.unwrap();
    expect(
        "IngressClass after restart",
        cp.get("/apis/networking.k8s.io/v1/ingressclasses/heim")
            .await
            .unwrap(),
        200,
    );
}

#[tokio::test]
async fn endpoints_take_a_netns_address_but_not_loopback() {
    let ns = Netns::new().unwrap_or_else(|e| {
        panic!(
            "cannot create a test network namespace ({e:#}); backends with \
             non-loopback Endpoints need `ip netns add` and veth pairs (root, CAP_NET_ADMIN)"
        )
    });
    let std::net::IpAddr::V4(v4) = ns.addr else {
        panic!("not IPv4: {}", ns.addr)
    };
    assert_eq!(v4.octets()[..3], [198, 51, 100], "{v4} is not TEST-NET-2");

    // The namespace is reachable from the host, and only by its own address.
    let shown = ns
        .command("ip")
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains(&format!("{}/24", ns.addr)), "{shown}");
    let listener = tokio::net::TcpListener::from_std(ns.listen(0).unwrap()).unwrap();
    let backend = listener.local_addr().unwrap();
    assert_eq!(backend.ip(), ns.addr);
    let server = tokio::spawn(async move {
        let (mut tcp, peer) = listener.accept().await.unwrap();
        tcp.write_all(b"hello from the namespace").await.unwrap();
        peer
    });
    let mut tcp = tokio::net::TcpStream::connect(backend).await.unwrap();
    let mut got = String::new();
    tcp.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello from the namespace");
    assert_eq!(server.await.unwrap().ip(), ns.host_addr);

    let cp = control_plane().await;
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "web" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": backend.port() }] },
    });
    expect(
        "create Service",
        cp.create("/api/v1/namespaces/default/services", &service)
            .await
            .unwrap(),
        201,
    );
    let endpoints = |name: &str, ip: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": { "name": name },
            "subsets": [{
                "addresses": [{ "ip": ip }],
                "ports": [{ "name": "http", "port": backend.port(), "protocol": "TCP" }],
            }],
        })
    };
    let path = "/api/v1/namespaces/default/endpoints";
    let made = expect(
        "Endpoints on the namespace's address",
        cp.create(path, &endpoints("web", &ns.addr.to_string()))
            .await
            .unwrap(),
        201,
    );
    assert_eq!(
        made["subsets"][0]["addresses"][0]["ip"],
        ns.addr.to_string()
    );

    let (status, body) = cp
        .create(path, &endpoints("loopback", "127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(status, 422, "loopback Endpoints were accepted: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("loopback")),
        "{body}"
    );

    // The same address as an EndpointSlice, the way 1.20 serves them.
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": { "name": "web-1", "labels": { "kubernetes.io/service-name": "web" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ns.addr.to_string()], "conditions": { "ready": true } }],
        "ports": [{ "name": "http", "port": backend.port(), "protocol": "TCP" }],
    });
    expect(
        "EndpointSlice v1beta1",
        cp.create(
            "/apis/discovery.k8s.io/v1beta1/namespaces/default/endpointslices",
            &slice,
        )
        .await
        .unwrap(),
        201,
    );
}

/// Whether an API group version's resource list names `resource`.
fn served(list: &Value, resource: &str) -> bool {
    list["resources"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x["name"] == resource))
}
