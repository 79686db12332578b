//! `heim-ingress`'s flags: ingress-nginx's names where it has one, and its
//! `--flag=value` form for booleans (`--update-status=false`).

use std::path::PathBuf;

use clap::{ArgAction, Parser};

use crate::class::ClassFilter;
use crate::model::ObjKey;

/// heim's Kubernetes ingress controller: serves the cluster's Ingress
/// objects (networking.k8s.io/v1) with heim's data plane in the same
/// process, sign-in and policy in front of every backend, certificates from
/// the Ingresses' TLS Secrets, hot-swapped on every change with no reload.
///
/// heim's own settings (listeners, [auth], providers, [acme], [ingress]
/// default_policy, optional [[route]]s) come from the `heim.toml` key of
/// --config-map, in heim-proxy's config schema; without it heim listens on
/// [::]:8443 (https), [::]:8080 (http) and [::]:10254 (/healthz, /readyz,
/// /metrics) and denies every Ingress that names no policy. Logs are JSON
/// lines on stdout (RUST_LOG, default "info"). SIGTERM drains. See
/// docs/ingress.md.
///
/// Moving off ingress-nginx: `--controller-class k8s.io/ingress-nginx`
/// serves its classes (its annotations read in its dialect), and
/// `heim-ingress migrate --help` reports, per Ingress and annotation, what
/// heim would serve as before (docs/migrate-from-ingress-nginx.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "heim-ingress", version)]
pub struct Options {
    /// A kubeconfig file; default: $KUBECONFIG or ~/.kube/config when
    /// there is one, else the in-cluster service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The IngressClass name heim answers to by name: the legacy
    /// kubernetes.io/ingress.class annotation, and --ingress-class-by-name.
    #[arg(long, value_name = "NAME", default_value = "heim")]
    pub ingress_class: String,

    /// An IngressClass spec.controller value that is heim (repeatable; e.g.
    /// k8s.io/ingress-nginx to take over ingress-nginx's classes).
    #[arg(
        long = "controller-class",
        value_name = "CONTROLLER",
        default_value = "heim.dev/ingress-controller"
    )]
    pub controller_classes: Vec<String>,

    /// Also serve Ingresses that name no class at all.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set)]
    pub watch_ingress_without_class: bool,

    /// Serve `ingressClassName: <--ingress-class>` even when that
    /// IngressClass does not exist.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set)]
    pub ingress_class_by_name: bool,

    /// Watch only this namespace's Ingresses, Services, endpoints and
    /// Secrets (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// heim's settings: the `heim.toml` key of this ConfigMap, reloaded
    /// when it changes (an invalid change is refused with an Event and the
    /// running settings stay).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_key)]
    pub config_map: Option<ObjKey>,

    /// Serve `ssl-passthrough` Ingresses by splicing their hosts' TLS to
    /// the pod unopened (ingress-nginx's flag of the same name; without
    /// it the annotation has no effect, as there).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = ArgAction::Set)]
    pub enable_ssl_passthrough: bool,

    /// ingress-nginx's ConfigMap: the cluster-wide keys its Ingresses rely
    /// on (`proxy-body-size`, `ssl-redirect`, `hsts*`,
    /// `allow-snippet-annotations`, `annotations-risk-level`,
    /// `global-auth-url`, …) are read from it, and reloaded when it changes.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_key)]
    pub nginx_configmap: Option<ObjKey>,

    /// Write this Service's load-balancer addresses into the status of the
    /// Ingresses heim serves.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_key, conflicts_with = "publish_status_address")]
    pub publish_service: Option<ObjKey>,

    /// Write these addresses (comma-separated IPs or host names) into the
    /// status of the Ingresses heim serves.
    #[arg(long, value_name = "ADDRESSES", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,

    /// Write Ingress status (only the leader does, only when it differs);
    /// false = shadow mode beside another controller: never write status.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "true", default_missing_value = "true", action = ArgAction::Set)]
    pub update_status: bool,

    /// The coordination.k8s.io/v1 Lease replicas elect a leader with (in
    /// the pod's namespace, $POD_NAMESPACE).
    #[arg(long, value_name = "NAME", default_value = "heim-ingress-leader")]
    pub election_id: String,

    /// This replica's name in the Lease (default: $POD_NAME, else the host
    /// name and process id).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The namespace of the Lease (default: $POD_NAMESPACE, else that of
    /// --config-map, else "default").
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

pub(crate) fn parse_key(s: &str) -> Result<ObjKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjKey::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

impl Options {
    /// What makes an Ingress heim's.
    pub fn class_filter(&self) -> ClassFilter {
        ClassFilter {
            ingress_class: self.ingress_class.clone(),
            controllers: self.controller_classes.clone(),
            without_class: self.watch_ingress_without_class,
            by_name: self.ingress_class_by_name,
        }
    }

    /// The namespace of heim's own objects (the Lease).
    pub fn own_namespace(&self) -> String {
        self.pod_namespace
            .clone()
            .or_else(|| self.config_map.as_ref().map(|k| k.namespace.clone()))
            .unwrap_or_else(|| "default".into())
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.pod_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "heim".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_ingress_nginx_forms() {
        let o = Options::try_parse_from([
            "heim-ingress",
            "--update-status=false",
            "--watch-ingress-without-class",
            "--controller-class",
            "k8s.io/ingress-nginx",
            "--controller-class=heim.dev/ingress-controller",
            "--config-map=heim/heim-ingress",
            "--publish-status-address=198.51.100.7,lb.example.com",
        ])
        .unwrap();
        assert!(!o.update_status);
        assert!(o.watch_ingress_without_class);
        assert!(!o.ingress_class_by_name);
        assert_eq!(
            o.controller_classes,
            ["k8s.io/ingress-nginx", "heim.dev/ingress-controller"]
        );
        assert_eq!(o.config_map, Some(ObjKey::new("heim", "heim-ingress")));
        assert_eq!(o.publish_status_address, ["198.51.100.7", "lb.example.com"]);
        let d = Options::try_parse_from(["heim-ingress"]).unwrap();
        assert!(d.update_status);
        assert_eq!(d.controller_classes, ["heim.dev/ingress-controller"]);
        assert_eq!(d.ingress_class, "heim");
        assert!(Options::try_parse_from(["heim-ingress", "--config-map=nons"]).is_err());
    }
}
