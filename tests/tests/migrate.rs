//! `heim-ingress migrate -f tests/fixtures/ingress-nginx`: the report over
//! a directory of real-world Ingress YAML written for ingress-nginx
//! (oauth2-proxy pairs, regex rewrites, snippets, a canary, an allowlist),
//! computed by the controller's own translate. The live-cluster form runs
//! in `ingress.rs` against the real API server.

use std::path::Path;
use std::process::Command;

use heim_e2e::ingress_binary;
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress-nginx")
}

fn report(policy: &str) -> (Option<i32>, Value) {
    let out = Command::new(ingress_binary())
        .args([
            "migrate",
            "--output",
            "json",
            "--default-policy",
            policy,
            "-f",
        ])
        .arg(fixtures())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

fn ingress<'a>(r: &'a Value, ns: &str, name: &str) -> &'a Value {
    r["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["namespace"] == ns && i["name"] == name)
        .unwrap_or_else(|| panic!("{ns}/{name} not in {r:#}"))
}

fn verdict<'a>(i: &'a Value, annotation: &str) -> &'a str {
    let full = format!("nginx.ingress.kubernetes.io/{annotation}");
    i["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["annotation"] == full.as_str())
        .unwrap_or_else(|| panic!("{annotation} not in {i:#}"))["verdict"]
        .as_str()
        .unwrap()
}

#[test]
fn the_report_gives_every_annotation_its_verdict() {
    let (code, r) = report("public");
    assert_eq!(code, Some(1), "some Ingresses are not served as before");
    // Only ingress-nginx's Ingresses (by class name or the legacy
    // annotation), not traefik's.
    assert_eq!(r["summary"]["ingresses"], 9, "{r:#}");
    assert!(r["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "other"));

    // The oauth2-proxy pair: heim's sign-in, to review (oauth2-proxy's own
    // limits are not known to heim).
    let grafana = ingress(&r, "monitoring", "grafana");
    assert_eq!(verdict(grafana, "auth-url"), "review");
    assert_eq!(verdict(grafana, "auth-signin"), "difference");
    assert_eq!(verdict(grafana, "auth-response-headers"), "difference");
    assert_eq!(grafana["served_as_before"], false, "{grafana:#}");
    assert_eq!(
        ingress(&r, "monitoring", "grafana-oauth2-proxy")["served_as_before"],
        true
    );

    // A regex rewrite: honoured, the host's regex mode named with the
    // Ingress that caused it and the one it changed.
    let api = ingress(&r, "shop", "api");
    assert_eq!(verdict(api, "rewrite-target"), "honoured");
    assert_eq!(verdict(api, "use-regex"), "difference");
    assert_eq!(verdict(api, "proxy-body-size"), "honoured");
    assert_eq!(api["served_as_before"], true, "{api:#}");
    let effects = r["effects"].as_array().unwrap();
    let regex = effects
        .iter()
        .find(|e| e["effect"] == "regex-mode")
        .expect("regex mode reported");
    let m = regex["message"].as_str().unwrap();
    assert!(m.contains("shop/api") && m.contains("shop/health"), "{m}");

    // Snippets refused by directive, the rest honoured; removed names ignored.
    let legacy = ingress(&r, "default", "legacy-app");
    assert_eq!(verdict(legacy, "configuration-snippet"), "refused");
    assert_eq!(verdict(legacy, "secure-backends"), "ignored");
    let snippet = legacy["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["verdict"] == "refused")
        .unwrap();
    let m = snippet["message"].as_str().unwrap();
    assert!(m.contains("more_set_headers, proxy_set_header)"), "{m}");

    // The canary: honoured, its weight too; it joins the mainline's route.
    let canary = ingress(&r, "default", "legacy-app-canary");
    assert_eq!(verdict(canary, "canary"), "honoured");
    assert_eq!(verdict(canary, "canary-weight"), "honoured");
    assert_eq!(canary["served_as_before"], true, "{canary:#}");

    // Basic auth from the Secret in the files, CORS, limits and an auth
    // service other than oauth2-proxy: honoured, served as before.
    let wiki = ingress(&r, "tools", "wiki");
    assert_eq!(verdict(wiki, "auth-type"), "honoured", "{wiki:#}");
    assert_eq!(verdict(wiki, "auth-realm"), "honoured");
    assert_eq!(wiki["served_as_before"], true, "{wiki:#}");
    let api = ingress(&r, "tools", "public-api");
    for a in [
        "enable-cors",
        "cors-allow-origin",
        "limit-rps",
        "limit-connections",
        "auth-url",
        "auth-response-headers",
    ] {
        assert_eq!(verdict(api, a), "honoured", "{a}: {api:#}");
    }
    assert_eq!(api["served_as_before"], true, "{api:#}");

    // The allowlist: honoured, and the spoofable XFF of old reported.
    let admin = ingress(&r, "internal", "admin");
    assert_eq!(admin["served_as_before"], true);
    assert_eq!(verdict(admin, "backend-protocol"), "honoured");
    assert!(effects.iter().any(|e| e["effect"] == "spoofable-allowlist"));

    // With heim's own default (deny), an Ingress that names no policy is
    // not served as before, and the report says why.
    let (_, r) = report("deny");
    let health = ingress(&r, "shop", "health");
    assert_eq!(health["served_as_before"], false);
    assert_eq!(health["problems"][0]["reason"], "Denied", "{health:#}");
}

#[test]
fn text_output_and_bad_input() {
    let out = Command::new(ingress_binary())
        .args(["migrate", "--default-policy", "public", "-f"])
        .arg(fixtures().join("office-allowlist.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("internal/admin: served as before"), "{text}");
    assert!(
        text.contains("1 Ingresses of ingress-nginx: 1 served as before, 0 not"),
        "{text}"
    );

    let dir = heim_e2e::scratch("migrate-bad");
    std::fs::write(
        dir.join("broken.yaml"),
        "kind: Ingress\nmetadata: [unclosed\n",
    )
    .unwrap();
    let out = Command::new(ingress_binary())
        .args(["migrate", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml"));
}
