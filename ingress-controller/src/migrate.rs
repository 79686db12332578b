//! `heim-ingress migrate`: what heim would make of a cluster's Ingresses
//! written for ingress-nginx, computed by the same [`translate`] the
//! controller runs. Per Ingress and per annotation, one of four verdicts —
//! honoured exactly, honoured with a stated difference, ignored (no effect
//! in ingress-nginx either), refused (snippets, ModSecurity) — or "not yet"
//! (understood, not in this build) and "invalid"; plus the emergent effects
//! nobody else reports (a host in regex mode because of one Ingress, an
//! allowlist that trusted a spoofable `X-Forwarded-For`). Text, or
//! `--output json` for CI; the exit code is 1 when something would not be
//! served as before.
//!
//! [`translate`]: crate::translate

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use heim_proxy::config::{DefaultPolicy, RouteDefaults};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{json, Value};

use crate::class::{ClassFilter, NGINX_CONTROLLER};
use crate::model::{ObjKey, Snapshot};
use crate::translate::nginx::{self, Verdict};
use crate::translate::{Settings, ADOPTED};

/// Report how heim would serve the Ingresses written for ingress-nginx:
/// per Ingress and annotation, honoured exactly, honoured with a stated
/// difference, to review (who may pass is decided differently), ignored
/// (no effect in ingress-nginx either), refused (snippets), not yet built,
/// or invalid; exits 1 when something would not be served as before, 2 on
/// bad input. See docs/migrate-from-ingress-nginx.md.
#[derive(Parser, Debug)]
#[command(name = "heim-ingress migrate")]
pub struct Migrate {
    /// YAML files or directories of them (every *.yaml / *.yml; several
    /// documents per file and `kind: List` too); repeatable. Without -f,
    /// the live cluster of --kubeconfig is read.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The class name of ingress-nginx's Ingresses.
    #[arg(long, value_name = "NAME", default_value = "nginx")]
    pub ingress_class: String,
    /// `text` or `json`.
    #[arg(long, short, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Whether heim's ConfigMap will have [auth] (sign-in): oauth2-proxy's
    /// auth-url is served by it only then.
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
    pub with_sign_in: bool,
    /// heim's `[ingress_nginx] default_policy`: `deny` (heim's default),
    /// `public` (as ingress-nginx served them), `any-authenticated`.
    #[arg(long, value_name = "POLICY", default_value = "deny", value_parser = ["deny", "public", "any-authenticated"])]
    pub default_policy: String,
    /// heim's `[ingress_nginx] interpret_snippets`: configuration-snippets
    /// of the allow-list are applied as data.
    #[arg(long, value_name = "BOOL", default_value = "false", action = clap::ArgAction::Set)]
    pub interpret_snippets: bool,
    /// ingress-nginx's ConfigMap, as the controller's --nginx-configmap:
    /// read from the cluster, or from the files (-f) when one of them holds it.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = crate::options::parse_key)]
    pub nginx_configmap: Option<ObjKey>,
}

/// One annotation's line in the report.
struct Line {
    annotation: String,
    verdict: &'static str,
    message: String,
    as_before: bool,
}

fn line(annotation: &str, v: &Verdict) -> Line {
    let (verdict, message, as_before) = match v {
        Verdict::Exact => ("honoured", String::new(), true),
        Verdict::Differs(m) => ("difference", m.clone(), true),
        Verdict::Review(m) => ("review", m.clone(), false),
        Verdict::Ignored(m) => ("ignored", m.clone(), true),
        Verdict::Refused(m) => ("refused", m.clone(), false),
        Verdict::Unsupported(m) => ("not-yet", m.clone(), false),
        Verdict::Invalid(m) => ("invalid", m.clone(), false),
    };
    Line {
        annotation: annotation.to_string(),
        verdict,
        message,
        as_before,
    }
}

/// Runs the report; the process's exit code.
pub async fn run(m: Migrate) -> anyhow::Result<u8> {
    let (snap, from_cluster) = if m.files.is_empty() {
        (live(&m).await?, true)
    } else {
        let mut snap = from_files(&m.files)?;
        if let Some(key) = &m.nginx_configmap {
            snap.nginx_configmap = Some(configmap_in_files(&m.files, key)?);
        }
        (snap, false)
    };
    let report = report(&snap, &m, from_cluster);
    if m.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report["summary"]["not_as_before"] == 0 {
        0
    } else {
        1
    })
}

/// Builds the report (a JSON document; the text form is rendered from it).
pub fn report(snap: &Snapshot, m: &Migrate, from_cluster: bool) -> Value {
    let settings = Settings {
        classes: ClassFilter {
            ingress_class: m.ingress_class.clone(),
            controllers: vec![NGINX_CONTROLLER.to_string()],
            without_class: false,
            by_name: true,
        },
        defaults: RouteDefaults {
            upstream: heim_proxy::upstream::UpstreamLimits {
                connect_timeout: std::time::Duration::from_secs(5),
                response_timeout: std::time::Duration::from_secs(60),
                idle_timeout: std::time::Duration::from_secs(60),
                max_connections: 256,
                queue_size: 4096,
            },
            max_body_bytes: 1 << 20,
        },
        default_policy: DefaultPolicy::Deny,
        nginx_default_policy: match m.default_policy.as_str() {
            "public" => DefaultPolicy::Public,
            "any-authenticated" => DefaultPolicy::AnyAuthenticated,
            _ => DefaultPolicy::Deny,
        },
        interpret_snippets: m.interpret_snippets,
        ssl_passthrough: true,
        have_auth: m.with_sign_in,
        allow_external_name: false,
    };
    let t = crate::translate::translate_once(snap, &settings);
    // Problems that come from the cluster's other objects mean nothing for
    // YAML files that do not hold them; TLS Secrets are never read here.
    let relevant = |key: &str| {
        !key.contains("spec.tls")
            && (from_cluster || !(key.contains(".backend") || key.contains("defaultBackend")))
    };
    let mut ingresses = Vec::new();
    let mut not_as_before = 0;
    // host -> the Ingresses whose use-regex / rewrite-target puts it in
    // ingress-nginx's regex mode.
    let mut regex_hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ing in &snap.ingresses {
        let key = ObjKey::of(ing.as_ref());
        if !t.served.contains(&key) {
            continue;
        }
        // As the controller reads it: heim.dev/* first, then the nginx dialect.
        let mut o = crate::translate::heim::read(ing, snap, &settings).unwrap_or_default();
        let mut verdicts = nginx::read(ing, m.with_sign_in, snap, &mut o);
        if m.interpret_snippets {
            crate::translate::snippet::apply(ing, &mut o, &mut verdicts);
        }
        let lines: Vec<Line> = verdicts.iter().map(|(a, v)| line(a, v)).collect();
        let denied = t
            .routes
            .iter()
            .zip(&t.owners)
            .any(|(r, owner)| *owner == key && r.policy == heim_proxy::route::Policy::Deny);
        let mut problems: Vec<Value> = t
            .problems
            .iter()
            .filter(|p| p.ingress == key && p.reason != ADOPTED && relevant(&p.key))
            .filter(|p| {
                // The annotation verdicts are listed above, not twice.
                !p.key.starts_with(nginx::PREFIX)
            })
            .map(|p| json!({ "reason": p.reason, "key": p.key, "message": p.message }))
            .collect();
        if denied {
            problems.push(json!({
                "reason": "Denied",
                "key": "policy",
                "message": format!(
                    "answers 403: a verdict above closes it, or it names no policy and [ingress_nginx] default_policy is {:?}",
                    m.default_policy
                ),
            }));
        }
        if nginx::regex_mode(ing) {
            for rule in ing.spec.iter().flat_map(|s| s.rules.iter().flatten()) {
                let host = rule.host.clone().unwrap_or_else(|| "*".into());
                regex_hosts.entry(host).or_default().push(key.to_string());
            }
        }
        let as_before = lines.iter().all(|l| l.as_before) && problems.is_empty();
        if !as_before {
            not_as_before += 1;
        }
        ingresses.push(json!({
            "namespace": key.namespace,
            "name": key.name,
            "served_as_before": as_before,
            "annotations": lines.iter().map(|l| json!({
                "annotation": l.annotation, "verdict": l.verdict, "message": l.message,
            })).collect::<Vec<_>>(),
            "problems": problems,
        }));
    }
    let mut effects = Vec::new();
    for (host, by) in &regex_hosts {
        let others: Vec<String> = snap
            .ingresses
            .iter()
            .filter(|i| t.served.contains(&ObjKey::of(i.as_ref())))
            .filter(|i| {
                i.spec
                    .iter()
                    .flat_map(|s| s.rules.iter().flatten())
                    .any(|r| r.host.as_deref().unwrap_or("*") == host)
            })
            .map(|i| ObjKey::of(i.as_ref()).to_string())
            .filter(|k| !by.contains(k))
            .collect();
        effects.push(json!({
            "host": host,
            "effect": "regex-mode",
            "message": format!(
                "every path of {host} is a case-insensitive regular expression anchored at the start, longest first, because of {}{}: in ingress-nginx and in heim alike",
                by.join(", "),
                if others.is_empty() { String::new() } else { format!(" (this also changed the paths of {})", others.join(", ")) }
            ),
        }));
    }
    for ing in &ingresses {
        for a in ing["annotations"].as_array().into_iter().flatten() {
            let name = a["annotation"].as_str().unwrap_or("");
            if name.ends_with("source-range") && a["verdict"] == "difference" {
                effects.push(json!({
                    "ingress": format!("{}/{}", ing["namespace"].as_str().unwrap_or(""), ing["name"].as_str().unwrap_or("")),
                    "effect": "spoofable-allowlist",
                    "message": "if ingress-nginx ran with use-forwarded-headers, this allowlist believed any client's X-Forwarded-For; heim believes it only from [server] trusted_proxies peers (behind a load balancer, list it there, or the balancer's own address is what the allowlist sees)",
                }));
            }
        }
    }
    json!({
        "ingresses": ingresses,
        "effects": effects,
        "summary": {
            "ingresses": ingresses.len(),
            "served_as_before": ingresses.len() - not_as_before,
            "not_as_before": not_as_before,
        },
    })
}

/// The report as text.
pub fn text(r: &Value) -> String {
    let mut out = String::new();
    for ing in r["ingresses"].as_array().into_iter().flatten() {
        let ok = ing["served_as_before"] == true;
        out.push_str(&format!(
            "{}/{}: {}\n",
            ing["namespace"].as_str().unwrap_or(""),
            ing["name"].as_str().unwrap_or(""),
            if ok {
                "served as before"
            } else {
                "NOT served as before"
            }
        ));
        for a in ing["annotations"].as_array().into_iter().flatten() {
            let msg = a["message"].as_str().unwrap_or("");
            out.push_str(&format!(
                "  {:<10} {}{}{}\n",
                a["verdict"].as_str().unwrap_or(""),
                a["annotation"].as_str().unwrap_or(""),
                if msg.is_empty() { "" } else { ": " },
                msg
            ));
        }
        for p in ing["problems"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<10} {} {}: {}\n",
                "problem",
                p["reason"].as_str().unwrap_or(""),
                p["key"].as_str().unwrap_or(""),
                p["message"].as_str().unwrap_or("")
            ));
        }
    }
    for e in r["effects"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "effect {}: {}\n",
            e["effect"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    let s = &r["summary"];
    out.push_str(&format!(
        "{} Ingresses of ingress-nginx: {} served as before, {} not\n",
        s["ingresses"], s["served_as_before"], s["not_as_before"]
    ));
    out
}

/// Ingresses, IngressClasses, Services and Secrets from YAML files.
pub fn from_files(paths: &[PathBuf]) -> anyhow::Result<Snapshot> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    let mut docs = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for v in values.into_iter().filter(Value::is_object) {
            match v["kind"].as_str() {
                Some("List") => docs.extend(v["items"].as_array().cloned().unwrap_or_default()),
                _ => docs.push(v),
            }
        }
    }
    let mut snap = Snapshot::default();
    let mut services = Vec::new();
    let mut secrets = Vec::new();
    for mut d in docs.into_iter().filter(|d| d["metadata"].is_object()) {
        if d["metadata"]["namespace"].is_null() && d["kind"] != "IngressClass" {
            d["metadata"]["namespace"] = json!("default");
        }
        let name = || {
            format!(
                "{}/{}",
                d["metadata"]["namespace"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            )
        };
        if d["kind"] == "Ingress" && d["apiVersion"] != "networking.k8s.io/v1" {
            anyhow::bail!(
                "Ingress {}: apiVersion {} is gone since Kubernetes 1.22; heim reads networking.k8s.io/v1",
                name(),
                d["apiVersion"]
            );
        }
        match d["kind"].as_str() {
            Some("Ingress") => snap.ingresses.push(Arc::new(
                serde_json::from_value::<Ingress>(d.clone())
                    .map_err(|e| anyhow::anyhow!("Ingress {}: {e}", name()))?,
            )),
            Some("IngressClass") => snap
                .classes
                .push(Arc::new(serde_json::from_value::<IngressClass>(d)?)),
            Some("Service") => services.push(Arc::new(serde_json::from_value::<Service>(d)?)),
            Some("Secret") => {
                let mut secret = serde_json::from_value::<Secret>(d)?;
                // The API server folds `stringData` into `data`; files hold it as written.
                if let Some(plain) = secret.string_data.take() {
                    let data = secret.data.get_or_insert_with(Default::default);
                    for (k, v) in plain {
                        data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
                    }
                }
                secrets.push(Arc::new(secret))
            }
            _ => {}
        }
    }
    snap.set_services(services);
    snap.set_secrets(secrets);
    Ok(snap)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// The live cluster's Ingresses, IngressClasses, Services, `Opaque` and
/// TLS Secrets (basic auth's htpasswd, proxy-ssl's CA and client
/// certificate) and, when named,
/// ingress-nginx's ConfigMap.
async fn live(m: &Migrate) -> anyhow::Result<Snapshot> {
    let client = crate::controller::client_for(m.kubeconfig.as_deref()).await?;
    let lp = kube::api::ListParams::default();
    let ingresses = kube::Api::<Ingress>::all(client.clone()).list(&lp).await?;
    let classes = kube::Api::<IngressClass>::all(client.clone())
        .list(&lp)
        .await?;
    let services = kube::Api::<Service>::all(client.clone()).list(&lp).await?;
    let mut secrets = Vec::new();
    for kind in ["type=Opaque", "type=kubernetes.io/tls"] {
        let api = kube::Api::<Secret>::all(client.clone());
        secrets.extend(
            api.list(&kube::api::ListParams::default().fields(kind))
                .await?
                .items,
        );
    }
    let mut snap = Snapshot {
        ingresses: ingresses.items.into_iter().map(Arc::new).collect(),
        classes: classes.items.into_iter().map(Arc::new).collect(),
        ..Snapshot::default()
    };
    snap.set_services(services.items.into_iter().map(Arc::new));
    snap.set_secrets(secrets.into_iter().map(Arc::new));
    if let Some(key) = &m.nginx_configmap {
        let api =
            kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, &key.namespace);
        let cm = api.get_opt(&key.name).await?;
        snap.nginx_configmap = Some(cm.and_then(|c| c.data).unwrap_or_default());
    }
    Ok(snap)
}

/// The data of ConfigMap `key` in the files (empty when none holds it:
/// ingress-nginx's defaults).
fn configmap_in_files(paths: &[PathBuf], key: &ObjKey) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    for f in &files {
        let text =
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let values: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for v in values {
            let m = &v["metadata"];
            if v["kind"] == "ConfigMap"
                && m["name"] == key.name.as_str()
                && m["namespace"].as_str().unwrap_or("default") == key.namespace
            {
                if v["data"].is_null() {
                    return Ok(BTreeMap::new());
                }
                return serde_json::from_value(v["data"].clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: ConfigMap {key}: data: {e} (quote every value)",
                        f.display()
                    )
                });
            }
        }
    }
    Ok(BTreeMap::new())
}
