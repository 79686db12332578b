//! `translate` on hand-made snapshots, compared with `assert_eq!`.

use std::sync::Arc;
use std::time::Duration;

use heim_proxy::config::{DefaultPolicy, RouteDefaults};
use heim_proxy::route::{Backend, PathMatch, Policy, RouteSpec};
use heim_proxy::upstream::{UpstreamAddr, UpstreamLimits, UpstreamProtocol, UpstreamSpec};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{json, Value};

use super::*;
use crate::class::ClassFilter;
use crate::model::{ObjKey, Snapshot};

fn limits() -> UpstreamLimits {
    let d = Duration::from_secs(5);
    UpstreamLimits {
        connect_timeout: d,
        response_timeout: Duration::from_secs(60),
        idle_timeout: d,
        max_connections: 256,
        queue_size: 4096,
    }
}

fn settings() -> Settings {
    Settings {
        classes: ClassFilter {
            ingress_class: "heim".into(),
            controllers: vec!["heim.dev/ingress-controller".into()],
            without_class: false,
            by_name: false,
        },
        defaults: RouteDefaults {
            upstream: limits(),
            max_body_bytes: 1 << 20,
        },
        default_policy: DefaultPolicy::Deny,
        nginx_default_policy: DefaultPolicy::Deny,
        interpret_snippets: false,
        ssl_passthrough: false,
        have_auth: true,
        allow_external_name: false,
    }
}

fn ingress(name: &str, created: &str, annotations: Value, spec: Value) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "default",
                "creationTimestamp": created,
                "annotations": annotations,
            },
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
    let mut meta = json!({ "name": name });
    if default {
        meta["annotations"] = json!({ "ingressclass.kubernetes.io/is-default-class": "true" });
    }
    Arc::new(
        serde_json::from_value(json!({ "metadata": meta, "spec": { "controller": controller } }))
            .unwrap(),
    )
}

/// Service `name` with ports `http: 80` and `metrics: 9090`, and ready
/// endpoints 198.51.100.{10,11} on 8080 (http) and 9100 (metrics).
fn service(snap: &mut Snapshot, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "ports": [
            { "name": "http", "port": 80, "targetPort": 8080 },
            { "name": "metrics", "port": 9090, "targetPort": 9100 },
        ] },
    }))
    .unwrap();
    let ep: Endpoints = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "subsets": [{
            "addresses": [{ "ip": "198.51.100.11" }, { "ip": "198.51.100.10" }],
            "notReadyAddresses": [{ "ip": "198.51.100.99" }],
            "ports": [{ "name": "http", "port": 8080 }, { "name": "metrics", "port": 9100 }],
        }],
    }))
    .unwrap();
    snap.services
        .insert(ObjKey::new("default", name), Arc::new(svc));
    // Through the real Endpoints reader (ready addresses only, sorted).
    let mut one = Snapshot::default();
    one.set_endpoints([Arc::new(ep)]);
    snap.endpoints.extend(one.endpoints);
}

fn upstream(port: u16) -> Backend {
    Backend::Upstream(UpstreamSpec {
        endpoints: [10, 11]
            .iter()
            .map(|h| UpstreamAddr::Socket(([198, 51, 100, *h], port).into()))
            .collect(),
        protocol: UpstreamProtocol::Http1,
        limits: limits(),
        tls: None,
    })
}

fn route(name: &str, host: Option<&str>, path: &str, path_type: PathMatch, port: u16) -> RouteSpec {
    RouteSpec {
        max_body_bytes: Some(1 << 20),
        ..RouteSpec::new(
            name.into(),
            host.map(str::to_string),
            path.into(),
            path_type,
            upstream(port),
            Policy::Public,
        )
    }
}

fn base() -> Snapshot {
    let mut snap = Snapshot {
        classes: vec![
            class("heim", "heim.dev/ingress-controller", false),
            class("other", "example.com/other", false),
        ],
        ..Snapshot::default()
    };
    service(&mut snap, "app");
    snap
}

fn public() -> Value {
    json!({ "heim.dev/public": "true" })
}

#[test]
fn paths_hosts_and_ports_as_the_api_reference_states() {
    let mut snap = base();
    snap.ingresses = vec![ingress(
        "app",
        "2026-01-01T00:00:00Z",
        public(),
        json!({
            "ingressClassName": "heim",
            "rules": [
                { "host": "App.Example.com", "http": { "paths": [
                    { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
                    { "path": "/metrics", "pathType": "Exact", "backend": { "service": { "name": "app", "port": { "name": "metrics" } } } },
                    { "path": "/impl", "pathType": "ImplementationSpecific", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
                ] } },
                { "host": "*.apps.example.com", "http": { "paths": [
                    { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
                ] } },
            ],
        }),
    )];
    let t = translate_once(&snap, &settings());
    assert_eq!(t.problems, []);
    assert_eq!(
        t.routes,
        [
            route(
                "default/app:app.example.com/",
                Some("app.example.com"),
                "/",
                PathMatch::Prefix,
                8080
            ),
            route(
                "default/app:app.example.com/metrics exact",
                Some("app.example.com"),
                "/metrics",
                PathMatch::Exact,
                9100
            ),
            route(
                "default/app:app.example.com/impl",
                Some("app.example.com"),
                "/impl",
                PathMatch::Prefix,
                8080
            ),
            route(
                "default/app:*.apps.example.com/",
                Some("*.apps.example.com"),
                "/",
                PathMatch::Prefix,
                8080
            ),
        ]
    );
    assert_eq!(t.served, [ObjKey::new("default", "app")]);
}

#[test]
fn which_ingresses_are_ours() {
    let mut snap = base();
    let rule = |host: &str| {
        json!([{ "host": host, "http": { "paths": [
            { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
        ] } }])
    };
    let legacy = json!({ "heim.dev/public": "true", "kubernetes.io/ingress.class": "heim" });
    let legacy_other = json!({ "heim.dev/public": "true", "kubernetes.io/ingress.class": "nginx" });
    snap.ingresses = vec![
        ingress(
            "by-class",
            "2026-01-01T00:00:00Z",
            public(),
            json!({ "ingressClassName": "heim", "rules": rule("a.test") }),
        ),
        ingress(
            "other-class",
            "2026-01-01T00:00:01Z",
            public(),
            json!({ "ingressClassName": "other", "rules": rule("b.test") }),
        ),
        ingress(
            "missing-class",
            "2026-01-01T00:00:02Z",
            public(),
            json!({ "ingressClassName": "gone", "rules": rule("c.test") }),
        ),
        ingress(
            "legacy",
            "2026-01-01T00:00:03Z",
            legacy,
            json!({ "rules": rule("d.test") }),
        ),
        ingress(
            "legacy-other",
            "2026-01-01T00:00:04Z",
            legacy_other,
            json!({ "rules": rule("e.test") }),
        ),
        ingress(
            "no-class",
            "2026-01-01T00:00:05Z",
            public(),
            json!({ "rules": rule("f.test") }),
        ),
    ];
    let served = |snap: &Snapshot, s: &Settings| -> Vec<String> {
        translate_once(snap, s)
            .served
            .into_iter()
            .map(|k| k.name)
            .collect()
    };
    assert_eq!(served(&snap, &settings()), ["by-class", "legacy"]);
    // A default class of ours takes the Ingresses without one.
    let mut with_default = snap.clone();
    with_default.classes[0] = class("heim", "heim.dev/ingress-controller", true);
    assert_eq!(
        served(&with_default, &settings()),
        ["by-class", "legacy", "no-class"]
    );
    // Another controller's default class does not.
    let mut other_default = snap.clone();
    other_default.classes[1] = class("other", "example.com/other", true);
    assert_eq!(served(&other_default, &settings()), ["by-class", "legacy"]);
    let mut s = settings();
    s.classes.without_class = true;
    assert_eq!(served(&snap, &s), ["by-class", "legacy", "no-class"]);
    // --ingress-class-by-name claims a class name that has no object.
    let mut s = settings();
    s.classes.ingress_class = "gone".into();
    s.classes.by_name = true;
    // (the legacy annotation also names a class of ours, `heim`, by name)
    assert_eq!(served(&snap, &s), ["by-class", "missing-class", "legacy"]);
}

#[test]
fn the_oldest_claim_wins_and_the_other_is_told() {
    let mut snap = base();
    let spec = json!({ "ingressClassName": "heim", "rules": [{ "host": "a.test", "http": { "paths": [
        { "path": "/api/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
    ] } }] });
    // Listed newest first: order in the cache must not matter.
    snap.ingresses = vec![
        ingress("newer", "2026-02-01T00:00:00Z", public(), spec.clone()),
        ingress("older", "2026-01-01T00:00:00Z", public(), spec),
    ];
    let t = translate_once(&snap, &settings());
    assert_eq!(t.routes.len(), 1);
    assert_eq!(t.owners, [ObjKey::new("default", "older")]);
    assert_eq!(t.problems.len(), 1);
    let p = &t.problems[0];
    assert_eq!(
        (p.ingress.name.as_str(), p.reason),
        ("newer", "RouteConflict")
    );
    assert!(p.message.contains("default/older"), "{}", p.message);
}

#[test]
fn default_backend_takes_what_no_path_claims() {
    let mut snap = base();
    service(&mut snap, "fallback");
    let backend = |name: &str| json!({ "service": { "name": name, "port": { "number": 80 } } });
    snap.ingresses = vec![
        ingress(
            "a",
            "2026-01-01T00:00:00Z",
            public(),
            json!({
                "ingressClassName": "heim",
                "defaultBackend": backend("fallback"),
                "rules": [
                    { "host": "a.test", "http": { "paths": [{ "path": "/x", "pathType": "Prefix", "backend": backend("app") }] } },
                    { "host": "b.test" },
                ],
            }),
        ),
        // A younger Ingress's own `/` on a.test wins over a's default backend.
        ingress(
            "b",
            "2026-01-02T00:00:00Z",
            public(),
            json!({ "ingressClassName": "heim", "rules": [
                { "host": "a.test", "http": { "paths": [{ "path": "/", "pathType": "Prefix", "backend": backend("app") }] } },
            ] }),
        ),
        ingress(
            "catch-all",
            "2026-01-03T00:00:00Z",
            public(),
            json!({ "ingressClassName": "heim", "defaultBackend": backend("fallback") }),
        ),
    ];
    let t = translate_once(&snap, &settings());
    assert_eq!(t.problems, []);
    let got: Vec<(&str, Option<&str>, &str)> = t
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.host.as_deref(), r.path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("default/a:a.test/x", Some("a.test"), "/x"),
            ("default/b:a.test/", Some("a.test"), "/"),
            ("default/a:b.test/", Some("b.test"), "/"),
            ("default/catch-all:*/", None, "/"),
        ]
    );
}

#[test]
fn broken_things_skip_only_what_they_affect() {
    let mut snap = base();
    let path =
        |p: &str, backend: Value| json!({ "path": p, "pathType": "Prefix", "backend": backend });
    let svc = |name: &str, port: Value| json!({ "service": { "name": name, "port": port } });
    snap.ingresses = vec![
        ingress(
            "mixed",
            "2026-01-01T00:00:00Z",
            public(),
            json!({ "ingressClassName": "heim", "tls": [{ "hosts": ["a.test"], "secretName": "missing-tls" }], "rules": [{ "host": "a.test", "http": { "paths": [
                path("/ok", svc("app", json!({ "number": 80 }))),
                path("/no-service", svc("nope", json!({ "number": 80 }))),
                path("/no-port", svc("app", json!({ "number": 81 }))),
                path("/resource", json!({ "resource": { "kind": "StorageBucket", "name": "b" } })),
            ] } }] }),
        ),
        ingress(
            "bad-annotation",
            "2026-01-02T00:00:00Z",
            json!({ "heim.dev/public": "true", "heim.dev/proxy-body-size": "lots" }),
            json!({ "ingressClassName": "heim", "rules": [{ "host": "b.test", "http": { "paths": [path("/", svc("app", json!({ "number": 80 })))] } }] }),
        ),
    ];
    let t = translate_once(&snap, &settings());
    // Every path keeps its claim: a broken backend answers 503 (no
    // endpoints), a broken Ingress 403; the rest serves as written.
    let got: Vec<(&str, usize, &Policy)> = t
        .routes
        .iter()
        .map(|r| {
            let Backend::Upstream(u) = &r.backend else {
                panic!()
            };
            (r.name.as_str(), u.endpoints.len(), &r.policy)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("default/mixed:a.test/ok", 2, &Policy::Public),
            ("default/mixed:a.test/no-service", 0, &Policy::Public),
            ("default/mixed:a.test/no-port", 0, &Policy::Public),
            ("default/mixed:a.test/resource", 0, &Policy::Public),
            ("default/bad-annotation:b.test/", 2, &Policy::Deny),
        ]
    );
    let got: Vec<(&str, &str, &str)> = t
        .problems
        .iter()
        .map(|p| (p.ingress.name.as_str(), p.reason, p.key.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "mixed",
                "ResourceBackendUnsupported",
                "spec.rules[0].http.paths[3].backend.resource"
            ),
            ("mixed", "SecretNotFound", "spec.tls[0].secretName"),
            (
                "mixed",
                "ServiceNotFound",
                "spec.rules[0].http.paths[1].backend.service.name"
            ),
            (
                "mixed",
                "ServicePortNotFound",
                "spec.rules[0].http.paths[2].backend.service.port"
            ),
            (
                "bad-annotation",
                "InvalidAnnotation",
                "heim.dev/proxy-body-size"
            ),
        ]
    );
}

#[test]
fn typos_empty_values_and_odd_paths_are_refused_not_ignored() {
    let mut snap = base();
    let rules = |path: &str| {
        json!({ "ingressClassName": "heim", "rules": [{ "host": "t.test", "http": { "paths": [
            { "path": path, "pathType": "ImplementationSpecific", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
        ] } }] })
    };
    snap.ingresses = vec![
        ingress(
            "typo",
            "2026-01-01T00:00:00Z",
            json!({ "heim.dev/public": "true", "heim.dev/allow-source-ranges": "10.0.0.0/8" }),
            rules("/"),
        ),
        ingress(
            "empty",
            "2026-01-01T00:00:01Z",
            json!({ "heim.dev/allow-source-range": " ", "heim.dev/public": "true" }),
            rules("/e"),
        ),
        ingress(
            "regex",
            "2026-01-01T00:00:02Z",
            public(),
            rules("/api/(.*)"),
        ),
        ingress("dots", "2026-01-01T00:00:03Z", public(), rules("/a/../b")),
        ingress(
            "acme",
            "2026-01-01T00:00:04Z",
            json!({ "heim.dev/public": "true", "heim.dev/acme": "true" }),
            rules("/ok"),
        ),
        // A timeout that would overflow a deadline is refused, not a panic.
        ingress(
            "forever",
            "2026-01-01T00:00:05Z",
            json!({ "heim.dev/public": "true", "heim.dev/proxy-read-timeout": "9999999999999999999" }),
            rules("/f"),
        ),
    ];
    let t = translate_once(&snap, &settings());
    let got: Vec<(&str, &str, &str)> = t
        .problems
        .iter()
        .map(|p| (p.ingress.name.as_str(), p.reason, p.key.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("typo", "InvalidAnnotation", "heim.dev/allow-source-ranges"),
            ("empty", "InvalidAnnotation", "heim.dev/allow-source-range"),
            ("regex", "InvalidPath", "spec.rules[0].http.paths[0].path"),
            ("dots", "InvalidPath", "spec.rules[0].http.paths[0].path"),
            ("acme", "UnsupportedAnnotation", "heim.dev/acme"),
            (
                "forever",
                "InvalidAnnotation",
                "heim.dev/proxy-read-timeout"
            ),
        ]
    );
    let policy = |name: &str| {
        t.routes
            .iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| r.policy.clone())
    };
    assert_eq!(policy("default/typo:"), Some(Policy::Deny));
    assert_eq!(policy("default/empty:"), Some(Policy::Deny));
    assert_eq!(
        policy("default/acme:"),
        Some(Policy::Public),
        "an unsupported annotation changes nothing"
    );
    assert!(policy("default/regex:").is_none() && policy("default/dots:").is_none());
}

#[test]
fn external_names_need_the_operator_and_solvers_are_public() {
    let mut snap = base();
    let ext: Service = serde_json::from_value(json!({
        "metadata": { "name": "ext", "namespace": "default" },
        "spec": { "type": "ExternalName", "externalName": "metadata.internal", "ports": [{ "port": 80 }] },
    }))
    .unwrap();
    snap.services
        .insert(ObjKey::new("default", "ext"), Arc::new(ext));
    let backend = |svc: &str| json!({ "service": { "name": svc, "port": { "number": 80 } } });
    snap.ingresses = vec![
        ingress(
            "ext",
            "2026-01-01T00:00:00Z",
            public(),
            json!({ "ingressClassName": "heim", "rules": [
            { "host": "x.test", "http": { "paths": [{ "path": "/", "pathType": "Prefix", "backend": backend("ext") }] } }] }),
        ),
        // cert-manager's solver Ingress, no policy annotation.
        ingress(
            "cm-acme-http-solver",
            "2026-01-01T00:00:01Z",
            json!({}),
            json!({ "ingressClassName": "heim", "rules": [
            { "host": "x.test", "http": { "paths": [{ "path": "/.well-known/acme-challenge/tok", "pathType": "ImplementationSpecific", "backend": backend("app") }] } }] }),
        ),
    ];
    let t = translate_once(&snap, &settings());
    assert_eq!(t.problems.len(), 1);
    assert_eq!(t.problems[0].reason, "ExternalNameRefused");
    let Backend::Upstream(u) = &t.routes[0].backend else {
        panic!()
    };
    assert!(u.endpoints.is_empty(), "refused: 503");
    let solver = &t.routes[1];
    assert_eq!(
        (&solver.policy, solver.https_redirect),
        (&Policy::Public, false)
    );
    let mut s = settings();
    s.allow_external_name = true;
    let t = translate_once(&snap, &s);
    assert_eq!(t.problems, []);
    let Backend::Upstream(u) = &t.routes[0].backend else {
        panic!()
    };
    assert_eq!(
        u.endpoints,
        [UpstreamAddr::Name {
            host: "metadata.internal".into(),
            port: 80
        }]
    );
}

#[test]
fn endpoint_slices_give_ready_addresses_by_service() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slice = |name: &str, endpoints: Value| -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": "app" } },
                "addressType": "IPv4",
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
                "endpoints": endpoints,
            }))
            .unwrap(),
        )
    };
    let mut snap = Snapshot::default();
    snap.set_endpoint_slices([
        slice("app-1", json!([
            { "addresses": ["198.51.100.12"], "conditions": { "ready": true } },
            { "addresses": ["198.51.100.13"], "conditions": { "ready": false } },
            { "addresses": ["198.51.100.14"], "conditions": { "ready": true, "terminating": true } },
        ])),
        slice("app-2", json!([{ "addresses": ["198.51.100.10"] }, { "addresses": ["198.51.100.12"] }])),
    ]);
    let ready: Vec<String> = snap.endpoints[&ObjKey::new("default", "app")]
        .iter()
        .map(|r| format!("{}:{}/{}", r.ip, r.port, r.port_name))
        .collect();
    assert_eq!(
        ready,
        ["198.51.100.10:8080/http", "198.51.100.12:8080/http"]
    );
}

#[test]
fn annotations_become_typed_values() {
    let mut snap = base();
    snap.ingresses = vec![ingress(
        "grafana",
        "2026-01-01T00:00:00Z",
        json!({
            "heim.dev/allow-domains": "Example.com, example.org",
            "heim.dev/allow-emails": "Ops@Example.net",
            "heim.dev/allow-github-teams": "acme/SRE",
            "heim.dev/identity-headers": "X-WEBAUTH-USER=email, X-WEBAUTH-GROUPS=groups",
            "heim.dev/backend-protocol": "h2c",
            "heim.dev/ssl-redirect": "false",
            "heim.dev/proxy-body-size": "8m",
            "heim.dev/proxy-read-timeout": "120",
            "heim.dev/allow-source-range": "10.0.0.0/8, 198.51.100.7",
        }),
        json!({ "ingressClassName": "heim", "rules": [{ "host": "grafana.test", "http": { "paths": [
            { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
        ] } }] }),
    )];
    let t = translate_once(&snap, &settings());
    assert_eq!(t.problems, []);
    let r = &t.routes[0];
    let mut want_limits = limits();
    want_limits.response_timeout = Duration::from_secs(120);
    let Backend::Upstream(u) = &r.backend else {
        panic!()
    };
    assert_eq!((u.protocol, u.limits), (UpstreamProtocol::H2c, want_limits));
    assert_eq!(
        r.policy,
        Policy::Allow(Arc::new(heim_proxy::auth::policy::AccessRules {
            emails: vec!["ops@example.net".into()],
            domains: vec!["example.com".into(), "example.org".into()],
            github_teams: vec!["acme/sre".into()],
            ..Default::default()
        }))
    );
    assert_eq!(
        r.identity_headers,
        [
            heim_proxy::config::identity_header("X-WEBAUTH-USER", "email").unwrap(),
            heim_proxy::config::identity_header("X-WEBAUTH-GROUPS", "groups").unwrap(),
        ]
    );
    assert!(!r.https_redirect);
    assert_eq!(r.max_body_bytes, Some(8 << 20));
    assert_eq!(
        r.source_ranges,
        [
            "10.0.0.0/8".parse().unwrap(),
            "198.51.100.7".parse().unwrap()
        ]
    );
}

#[test]
fn the_default_policy_applies_to_ingresses_that_name_none() {
    let mut snap = base();
    snap.ingresses = vec![ingress(
        "quiet",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "ingressClassName": "heim", "rules": [{ "host": "q.test", "http": { "paths": [
            { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
        ] } }] }),
    )];
    assert_eq!(
        translate_once(&snap, &settings()).routes[0].policy,
        Policy::Deny
    );
    let mut s = settings();
    s.default_policy = DefaultPolicy::Public;
    assert_eq!(translate_once(&snap, &s).routes[0].policy, Policy::Public);
    // Allow rules without sign-in configured are refused, not weakened.
    let mut s = settings();
    s.have_auth = false;
    snap.ingresses = vec![ingress(
        "rules",
        "2026-01-01T00:00:00Z",
        json!({ "heim.dev/allow-domains": "example.com", "heim.dev/public": "maybe" }),
        json!({ "ingressClassName": "heim", "rules": [] }),
    )];
    let t = translate_once(&snap, &s);
    let keys: Vec<&str> = t.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["heim.dev/allow-*", "heim.dev/public"]);
}

#[test]
fn sizes_in_nginx_syntax() {
    use heim_proxy::config::parse_size as nginx_size;
    assert_eq!(nginx_size("0"), Some(0));
    assert_eq!(nginx_size("512"), Some(512));
    assert_eq!(nginx_size("8m"), Some(8 << 20));
    assert_eq!(nginx_size("1G"), Some(1 << 30));
    assert_eq!(nginx_size("64k"), Some(64 << 10));
    assert_eq!(nginx_size("8mb"), None);
    assert_eq!(nginx_size("-1"), None);
    assert_eq!(nginx_size(""), None);
}

/// A `kubernetes.io/tls` Secret `ns/name` with a self-signed certificate for `names`.
fn tls_secret(snap: &mut Snapshot, ns: &str, name: &str, names: &[&str]) {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns, "resourceVersion": "1" },
        "type": "kubernetes.io/tls",
        "data": { "tls.crt": b64(cert.pem()), "tls.key": b64(key.serialize_pem()) },
    }))
    .unwrap();
    snap.secrets.insert(ObjKey::new(ns, name), Arc::new(secret));
}

fn tls_ingress(
    ns: &str,
    name: &str,
    created: &str,
    host: &str,
    path: &str,
    secret: &str,
    tls_hosts: &[&str],
) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": ns, "creationTimestamp": created,
                          "annotations": { "heim.dev/public": "true" } },
            "spec": {
                "ingressClassName": "heim",
                "tls": [{ "hosts": tls_hosts, "secretName": secret }],
                "rules": [{ "host": host, "http": { "paths": [
                    { "path": path, "pathType": "Prefix", "backend": { "service": { "name": "app", "port": { "number": 80 } } } },
                ] } }],
            },
        }))
        .unwrap(),
    )
}

#[test]
fn a_certificate_serves_only_its_own_namespace_hosts() {
    let mut snap = base();
    // Namespace `evil` holds a certificate that also covers victim.test.
    tls_secret(&mut snap, "evil", "evil-tls", &["evil.test", "victim.test"]);
    tls_secret(&mut snap, "victim", "victim-tls", &["victim.test"]);
    snap.ingresses = vec![
        tls_ingress(
            "evil",
            "e1",
            "2026-01-01T00:00:00Z",
            "evil.test",
            "/",
            "evil-tls",
            &[],
        ),
        tls_ingress(
            "victim",
            "v",
            "2026-01-02T00:00:00Z",
            "victim.test",
            "/",
            "victim-tls",
            &[],
        ),
        // A younger path on the victim's host, naming the evil Secret.
        tls_ingress(
            "evil",
            "e2",
            "2026-01-03T00:00:00Z",
            "victim.test",
            "/x",
            "evil-tls",
            &["victim.test"],
        ),
    ];
    let t = translate_once(&snap, &settings());
    let served: Vec<(String, Vec<String>)> = t
        .certificate_versions
        .iter()
        .map(|(k, _, names)| (k.to_string(), names.clone()))
        .collect();
    assert_eq!(
        served,
        [
            ("evil/evil-tls".to_string(), vec!["evil.test".to_string()]),
            (
                "victim/victim-tls".to_string(),
                vec!["victim.test".to_string()]
            ),
        ]
    );
    // (the Service `app` is only in `default`: those problems aside)
    let got: Vec<(&str, &str)> = t
        .problems
        .iter()
        .filter(|p| p.reason != "ServiceNotFound")
        .map(|p| (p.ingress.name.as_str(), p.reason))
        .collect();
    assert_eq!(got, [("e2", "TLSHostNotServed")]);
    // The victim's route serves; e2's own path too (paths are not certificates).
    assert_eq!(t.routes.len(), 3);

    // Two Secrets in one namespace for one host: the older Ingress's serves.
    let mut snap = base();
    tls_secret(&mut snap, "default", "first-tls", &["app.test"]);
    tls_secret(&mut snap, "default", "second-tls", &["app.test"]);
    snap.ingresses = vec![
        tls_ingress(
            "default",
            "one",
            "2026-01-01T00:00:00Z",
            "app.test",
            "/",
            "first-tls",
            &[],
        ),
        tls_ingress(
            "default",
            "two",
            "2026-01-02T00:00:00Z",
            "app.test",
            "/two",
            "second-tls",
            &[],
        ),
    ];
    let t = translate_once(&snap, &settings());
    let served: Vec<String> = t
        .certificate_versions
        .iter()
        .map(|(k, _, _)| k.to_string())
        .collect();
    assert_eq!(served, ["default/first-tls"]);
    assert_eq!(t.problems.len(), 1);
    assert_eq!(
        (t.problems[0].ingress.name.as_str(), t.problems[0].reason),
        ("two", "CertificateConflict")
    );
}

/// An Ingress of ingress-nginx's class, taken over: its annotations are
/// read in the nginx dialect, `[ingress_nginx] default_policy` applies, and
/// each verdict is an Event (`Adopted` for what is honoured).
#[test]
fn ingress_nginx_takeover() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let spec = json!({ "ingressClassName": "nginx", "rules": [{ "host": "app.example.com",
        "http": { "paths": [{ "path": "/", "pathType": "Prefix",
            "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] });
    snap.ingresses = vec![
        ingress(
            "legacy",
            "2026-01-01T00:00:00Z",
            json!({
                "nginx.ingress.kubernetes.io/proxy-body-size": "8m",
                "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers \"X: y\";",
                "nginx.ingress.kubernetes.io/secure-backends": "true",
            }),
            spec.clone(),
        ),
        ingress("plain", "2026-01-02T00:00:00Z", json!({}), {
            let mut s = spec.clone();
            s["rules"][0]["host"] = json!("plain.example.com");
            s
        }),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    s.nginx_default_policy = DefaultPolicy::Public;
    let t = translate_once(&snap, &s);
    assert_eq!(t.routes.len(), 2, "{:?}", t.problems);
    assert!(
        t.routes.iter().all(|r| r.policy == Policy::Public),
        "the nginx default policy"
    );
    assert_eq!(t.routes[0].max_body_bytes, Some(8 << 20));
    let reasons: Vec<(&str, &str)> = t
        .problems
        .iter()
        .map(|p| (p.ingress.name.as_str(), p.reason))
        .collect();
    for want in [
        ("legacy", "Adopted"),
        ("legacy", "SnippetRefused"),
        ("legacy", "AnnotationIgnored"),
        ("plain", "Adopted"),
    ] {
        assert!(reasons.contains(&want), "{want:?} in {reasons:?}");
    }
    // heim's own default stays for heim's own class.
    s.nginx_default_policy = DefaultPolicy::Deny;
    let t = translate_once(&snap, &s);
    assert!(t.routes.iter().all(|r| r.policy == Policy::Deny));
}

/// ingress-nginx's regex mode is host-wide: `use-regex` on one Ingress
/// makes the Exact path of another on the same host a regex too; a
/// `rewrite-target` rewrites with the path's groups.
#[test]
fn regex_mode_is_host_wide_and_rewrites_use_the_groups() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let path = |p: &str, t: &str| {
        json!({ "path": p, "pathType": t,
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } })
    };
    let spec = |paths: Value| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": "shop.example.com",
            "http": { "paths": paths } }] })
    };
    snap.ingresses = vec![
        ingress(
            "api",
            "2026-01-01T00:00:00Z",
            json!({
                "nginx.ingress.kubernetes.io/use-regex": "true",
                "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
            }),
            spec(json!([path("/api(/|$)(.*)", "ImplementationSpecific")])),
        ),
        ingress(
            "health",
            "2026-01-02T00:00:00Z",
            json!({}),
            spec(json!([path("/healthz", "Exact")])),
        ),
        // Another host stays as written.
        ingress("plain", "2026-01-03T00:00:00Z", json!({}), {
            let mut s = spec(json!([path("/healthz", "Exact")]));
            s["rules"][0]["host"] = json!("plain.example.com");
            s
        }),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let types: Vec<(&str, &str, PathMatch)> = t
        .routes
        .iter()
        .map(|r| (r.host.as_deref().unwrap(), r.path.as_str(), r.path_type))
        .collect();
    assert_eq!(
        types,
        [
            ("shop.example.com", "/api(/|$)(.*)", PathMatch::Regex),
            ("shop.example.com", "/healthz", PathMatch::Regex),
            ("plain.example.com", "/healthz", PathMatch::Exact),
            // Each host's implicit root, last.
            ("shop.example.com", "/", PathMatch::Prefix),
            ("plain.example.com", "/", PathMatch::Prefix),
        ],
        "{:?}",
        t.problems
    );
    let rw = t.routes[0].rewrite.as_ref().expect("a rewrite");
    assert_eq!(
        rw.apply("/api/v1/users", Some("x=1")),
        Some(heim_proxy::route::Rewritten::Path("/v1/users?x=1".into()))
    );
    assert!(
        t.routes[1].rewrite.is_none(),
        "only the Ingress that asks for it"
    );
}

/// ingress-nginx gives a host without a `/` path an implicit `location /`
/// (its default backend, 404) with the annotations of the host's oldest
/// Ingress: its absolute rewrite target and its redirects answer the
/// unmatched paths too; a host with its own `/` has none; neither has a
/// host whose oldest Ingress is heim's own.
#[test]
fn the_implicit_root_carries_the_oldest_ingress_annotations() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let spec = |host: &str, class: &str, p: &str| {
        json!({ "ingressClassName": class, "rules": [{ "host": host,
            "http": { "paths": [{ "path": p, "pathType": "ImplementationSpecific",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] })
    };
    let nginx = "nginx.ingress.kubernetes.io/";
    snap.ingresses = vec![
        ingress(
            "moved",
            "2026-01-01T00:00:00Z",
            json!({ format!("{nginx}rewrite-target"): "https://bar.example.org/$1",
                    format!("{nginx}use-regex"): "true" }),
            spec("foo.example.com", "nginx", "/original/(.*)"),
        ),
        // Younger: its annotations do not reach foo's root.
        ingress(
            "younger",
            "2026-01-02T00:00:00Z",
            json!({ format!("{nginx}permanent-redirect"): "https://elsewhere.example.org/" }),
            spec("foo.example.com", "nginx", "/other"),
        ),
        ingress(
            "gone",
            "2026-01-03T00:00:00Z",
            json!({ format!("{nginx}permanent-redirect"): "https://new.example.org/" }),
            spec("old.example.com", "nginx", "/something"),
        ),
        ingress(
            "rooted",
            "2026-01-04T00:00:00Z",
            json!({ format!("{nginx}permanent-redirect"): "https://new.example.org/" }),
            spec("rooted.example.com", "nginx", "/"),
        ),
        ingress(
            "own",
            "2026-01-05T00:00:00Z",
            json!({ format!("{nginx}permanent-redirect"): "https://new.example.org/" }),
            spec("own.example.com", "heim", "/x"),
        ),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let roots: Vec<(&RouteSpec, &str)> = t
        .routes
        .iter()
        .zip(&t.owners)
        .filter(|(r, _)| r.backend == Backend::NotFound)
        .map(|(r, o)| (r, o.name.as_str()))
        .collect();
    let hosts: Vec<(&str, &str)> = roots
        .iter()
        .map(|(r, o)| (r.host.as_deref().unwrap(), *o))
        .collect();
    assert_eq!(
        hosts,
        [("foo.example.com", "moved"), ("old.example.com", "gone")],
        "{:?}",
        t.problems
    );
    let (foo, old) = (roots[0].0, roots[1].0);
    assert_eq!((foo.path.as_str(), foo.path_type), ("/", PathMatch::Prefix));
    // `/original` does not match `/original/(.*)`: nginx's root location
    // rewrites it with `(?i)/` to the target, `$1` empty: a 302 there.
    assert_eq!(
        foo.rewrite
            .as_ref()
            .expect("the rewrite")
            .apply("/original", None),
        Some(heim_proxy::route::Rewritten::Redirect(
            "https://bar.example.org/".into()
        ))
    );
    assert!(foo.redirect.is_none(), "not the younger Ingress's");
    assert_eq!(
        old.redirect.as_ref().map(|r| r.to.as_str()),
        Some("https://new.example.org/")
    );
    // It serves nothing, so heim's deny default does not turn a 404 into a 403.
    assert!(roots.iter().all(|(r, _)| r.policy == Policy::Public));
}

/// A canary Ingress (ingress-nginx's `canary: "true"`) claims nothing: its
/// path becomes the canary backend of the mainline route with the same
/// host and path; without a mainline it is told so.
#[test]
fn a_canary_joins_its_mainline_route() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    service(&mut snap, "app-v2");
    let spec = |host: &str, svc: &str| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": host,
            "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": svc, "port": { "number": 80 } } } }] } }] })
    };
    let nginx = "nginx.ingress.kubernetes.io/";
    let canary = json!({
        format!("{nginx}canary"): "true",
        format!("{nginx}canary-by-header"): "X-Canary",
        format!("{nginx}canary-weight"): "20",
        // Ignored on a canary, as in ingress-nginx.
        format!("{nginx}proxy-body-size"): "1k",
    });
    snap.ingresses = vec![
        // Older than its mainline: order does not matter.
        ingress(
            "app-canary",
            "2026-01-01T00:00:00Z",
            canary.clone(),
            spec("app.example.com", "app-v2"),
        ),
        ingress(
            "app",
            "2026-01-02T00:00:00Z",
            json!({}),
            spec("app.example.com", "app"),
        ),
        ingress(
            "lonely-canary",
            "2026-01-03T00:00:00Z",
            canary.clone(),
            spec("lonely.example.com", "app-v2"),
        ),
        // Another namespace's canary never takes this one's traffic.
        {
            let mut i = (*ingress(
                "intruder",
                "2026-01-04T00:00:00Z",
                canary,
                spec("app.example.com", "app-v2"),
            ))
            .clone();
            i.metadata.namespace = Some("elsewhere".into());
            Arc::new(i)
        },
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let hosts: Vec<&str> = t
        .routes
        .iter()
        .map(|r| r.host.as_deref().unwrap())
        .collect();
    assert_eq!(hosts, ["app.example.com"], "{:?}", t.problems);
    let r = &t.routes[0];
    assert_eq!(t.owners[0].name, "app");
    assert_ne!(
        r.max_body_bytes,
        Some(1024),
        "the canary's annotations do not apply"
    );
    let c = r.canary.as_ref().expect("the canary");
    assert_eq!(
        c.rule.by_header.as_ref().map(|h| h.as_str()),
        Some("x-canary")
    );
    assert_eq!((c.rule.weight, c.rule.weight_total), (20, 100));
    assert!(!c.backend.endpoints.is_empty(), "app-v2's endpoints");
    let lonely: Vec<&Problem> = t
        .problems
        .iter()
        .filter(|p| p.ingress.name == "lonely-canary" && p.reason == "CanaryWithoutMainline")
        .collect();
    assert_eq!(lonely.len(), 1, "{:?}", t.problems);
    let intruder = t
        .problems
        .iter()
        .find(|p| p.ingress.name == "intruder" && p.reason == "CanaryWithoutMainline")
        .expect("the intruder is told");
    assert!(
        intruder.message.contains("another namespace"),
        "{intruder:?}"
    );
    assert_eq!(
        r.canary.as_ref().unwrap().backend,
        c.backend,
        "still the first canary"
    );
    let ignored = t.problems.iter().any(|p| {
        p.ingress.name == "app-canary"
            && p.reason == "AnnotationIgnored"
            && p.key.ends_with("proxy-body-size")
    });
    assert!(ignored, "{:?}", t.problems);
}

/// `[ingress_nginx] interpret_snippets`: a configuration-snippet of the
/// allow-list becomes the route's header edits; one with anything else
/// stays refused, and the Ingress is served without it.
#[test]
fn snippets_are_interpreted_only_when_asked_and_only_whole() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let spec = |host: &str| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": host,
            "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] })
    };
    let key = "nginx.ingress.kubernetes.io/configuration-snippet";
    snap.ingresses = vec![
        ingress(
            "headers",
            "2026-01-01T00:00:00Z",
            json!({ key: "more_set_headers \"X-Frame-Options: DENY\";\nproxy_set_header X-Tenant blue;" }),
            spec("a.example.com"),
        ),
        ingress(
            "lua",
            "2026-01-02T00:00:00Z",
            json!({ key: "more_set_headers \"X-A: b\";\naccess_by_lua_block { ngx.exit(200) }" }),
            spec("b.example.com"),
        ),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    assert!(
        t.routes.iter().all(|r| r.response_headers.is_empty()),
        "off by default"
    );
    s.interpret_snippets = true;
    let t = translate_once(&snap, &s);
    let a = &t.routes[0];
    assert_eq!(a.response_headers.len(), 1, "{:?}", t.problems);
    assert_eq!(
        a.request_headers,
        [(
            http::HeaderName::from_static("x-tenant"),
            Some(http::HeaderValue::from_static("blue"))
        )]
    );
    let b = &t.routes[1];
    assert!(b.response_headers.is_empty(), "never half a snippet");
    let refused = t
        .problems
        .iter()
        .find(|p| p.ingress.name == "lua" && p.reason == "SnippetRefused")
        .expect("refused");
    assert!(refused.message.contains("not interpreted"), "{refused:?}");
    assert!(!t
        .problems
        .iter()
        .any(|p| p.ingress.name == "headers" && p.reason == "SnippetRefused"));
}

/// `server-alias` serves every path of the host under the alias too (not
/// a name a rule owns); `from-to-www-redirect` makes the other name
/// redirect (308) to the rule's host, unless a rule owns it.
#[test]
fn server_aliases_and_the_www_redirect() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let spec = |host: &str, path: &str| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": host,
            "http": { "paths": [{ "path": path, "pathType": "Prefix",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] })
    };
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    snap.ingresses = vec![
        ingress(
            "shop",
            "2026-01-01T00:00:00Z",
            json!({ n("server-alias"): "shop.example.org, owned.example.com",
                    n("from-to-www-redirect"): "true" }),
            spec("shop.example.com", "/"),
        ),
        ingress(
            "shop-api",
            "2026-01-02T00:00:00Z",
            json!({}),
            spec("shop.example.com", "/api"),
        ),
        ingress(
            "owned",
            "2026-01-03T00:00:00Z",
            json!({}),
            spec("owned.example.com", "/"),
        ),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let on = |host: &str| -> Vec<&RouteSpec> {
        t.routes
            .iter()
            .filter(|r| r.host.as_deref() == Some(host))
            .collect()
    };
    let alias: Vec<&str> = on("shop.example.org")
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        alias,
        ["/", "/api"],
        "every path of the host: {:?}",
        t.problems
    );
    assert_eq!(on("owned.example.com").len(), 1, "a rule owns it");
    let www = on("www.shop.example.com");
    assert_eq!(www.len(), 1);
    let r = www[0].redirect.as_ref().expect("a redirect");
    assert_eq!(
        (r.code, r.to.as_str()),
        (308, "$scheme://shop.example.com$request_uri")
    );
    assert_eq!(www[0].policy, Policy::Public);
}

/// `service-upstream`: the Service's cluster IP and port, not its pods.
#[test]
fn service_upstream_goes_to_the_cluster_ip() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let key = ObjKey::new("default", "app");
    let mut svc = (**snap.services.get(&key).expect("app")).clone();
    svc.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.12".into());
    snap.services.insert(key, Arc::new(svc));
    snap.ingresses = vec![ingress(
        "app",
        "2026-01-01T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/service-upstream": "true" }),
        json!({ "ingressClassName": "nginx", "rules": [{ "host": "app.example.com",
            "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] }),
    )];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let Backend::Upstream(u) = &t.routes[0].backend else {
        panic!("{:?}", t.routes[0].backend)
    };
    assert_eq!(
        u.endpoints,
        [UpstreamAddr::Socket(([10, 96, 0, 12], 80).into())],
        "{:?}",
        t.problems
    );
}

/// `backend-protocol: HTTPS` is TLS without verification (nginx's
/// defaults); `proxy-ssl-verify: on` without a CA closes the Ingress;
/// `default-backend` + `custom-http-errors` give every path the error
/// backend.
#[test]
fn https_backends_and_error_pages() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    service(&mut snap, "errors");
    let spec = |host: &str| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": host,
            "http": { "paths": [{ "path": "/", "pathType": "Prefix",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] })
    };
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    snap.ingresses = vec![
        ingress(
            "tls",
            "2026-01-01T00:00:00Z",
            json!({ n("backend-protocol"): "HTTPS" }),
            spec("tls.example.com"),
        ),
        ingress(
            "strict",
            "2026-01-02T00:00:00Z",
            json!({ n("backend-protocol"): "HTTPS", n("proxy-ssl-verify"): "on" }),
            spec("strict.example.com"),
        ),
        ingress(
            "pages",
            "2026-01-03T00:00:00Z",
            json!({ n("default-backend"): "errors", n("custom-http-errors"): "404, 503" }),
            spec("pages.example.com"),
        ),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    s.nginx_default_policy = DefaultPolicy::Public;
    let t = translate_once(&snap, &s);
    let by = |host: &str| {
        t.routes
            .iter()
            .find(|r| r.host.as_deref() == Some(host))
            .unwrap_or_else(|| panic!("{host}: {:?}", t.problems))
    };
    let Backend::Upstream(u) = &by("tls.example.com").backend else {
        panic!()
    };
    let tls = u.tls.as_ref().expect("TLS to the pod");
    assert!(tls.verify.is_none() && !tls.sni, "nginx's defaults");
    assert_eq!(
        by("strict.example.com").policy,
        Policy::Deny,
        "no CA to verify with"
    );
    let eb = by("pages.example.com")
        .error_backend
        .as_ref()
        .expect("error pages");
    assert_eq!(eb.codes, [404, 503]);
    assert!(
        !eb.backend.endpoints.is_empty(),
        "the errors Service's endpoints"
    );
}

/// oauth2-proxy's `/oauth2` Ingress becomes heim's own answer on a host
/// heim's sign-in took over, in the namespace that owns the host only.
#[test]
fn oauth2_proxy_paths_are_heims_in_the_hosts_namespace() {
    let mut snap = base();
    snap.classes
        .push(class("nginx", "k8s.io/ingress-nginx", false));
    let spec = |host: &str, path: &str| {
        json!({ "ingressClassName": "nginx", "rules": [{ "host": host,
            "http": { "paths": [{ "path": path, "pathType": "Prefix",
                "backend": { "service": { "name": "app", "port": { "number": 80 } } } }] } }] })
    };
    let sso = json!({
        "nginx.ingress.kubernetes.io/auth-url": "https://$host/oauth2/auth",
        "nginx.ingress.kubernetes.io/auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri",
    });
    let elsewhere = |mut i: Ingress| {
        i.metadata.namespace = Some("other".into());
        Arc::new(i)
    };
    snap.ingresses = vec![
        ingress(
            "grafana",
            "2026-01-01T00:00:00Z",
            sso.clone(),
            spec("g.example.com", "/"),
        ),
        ingress(
            "oauth2-proxy",
            "2026-01-02T00:00:00Z",
            json!({}),
            spec("g.example.com", "/oauth2"),
        ),
        // Another namespace marking the same host changes nothing of it.
        elsewhere(
            (*ingress(
                "intruder",
                "2026-01-03T00:00:00Z",
                sso,
                spec("g.example.com", "/x"),
            ))
            .clone(),
        ),
    ];
    let mut s = settings();
    s.classes.controllers.push("k8s.io/ingress-nginx".into());
    let t = translate_once(&snap, &s);
    let oauth2: Vec<(&RouteSpec, &ObjKey)> = t
        .routes
        .iter()
        .zip(&t.owners)
        .filter(|(r, _)| r.backend == Backend::OAuth2Paths)
        .collect();
    assert_eq!(oauth2.len(), 1, "{:?}", t.problems);
    assert_eq!(oauth2[0].0.path, "/oauth2");
    assert_eq!(
        oauth2[0].1.name, "oauth2-proxy",
        "its own Ingress, taken over"
    );
    assert!(
        matches!(oauth2[0].0.policy, Policy::Allow(_)),
        "the sign-in's rules"
    );
}
