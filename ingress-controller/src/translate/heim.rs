//! The `heim.dev/*` annotations.
//!
//! | annotation | value |
//! | --- | --- |
//! | `public` | `"true"`: anyone, without signing in |
//! | `allow-emails`, `allow-domains`, `allow-groups`, `allow-github-orgs`, `allow-github-teams` | comma-separated; any match admits |
//! | `allow-any-authenticated` | `"true"`: anyone who signs in |
//! | `identity-headers` | `Header=email\|user\|groups`, comma-separated |
//! | `backend-protocol` | `HTTP` (default) or `H2C` |
//! | `ssl-redirect` | `"false"`: serve plain HTTP too (default: 308 to https) |
//! | `proxy-body-size` | nginx syntax: `8m`, `512k`, `1g`, `0` = no limit |
//! | `proxy-read-timeout` | seconds (`60`, or `60s`) to the response head and between body reads |
//! | `allow-source-range` | CIDR blocks, comma-separated; others get 403 |
//! | `webhook-secret` | a Secret in the Ingress's namespace (key `secret`): GitHub webhooks signed with it, no sign-in |
//! | `acme` | `"true"`: not acted on in this build (an `UnsupportedAnnotation` Event) |
//!
//! A value that does not parse, an empty value, or a `heim.dev/` annotation
//! that is none of these (a typo such as `allow-source-ranges`) is an error
//! naming the annotation, and the Ingress answers 403 until it is fixed:
//! never served with a weaker policy than written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use heim_proxy::auth::policy::{valid_email, AccessRules};
use heim_proxy::auth::webhook::WebhookSpec;
use heim_proxy::route::Policy;
use heim_proxy::trust::IpNet;
use heim_proxy::upstream::UpstreamProtocol;
use k8s_openapi::api::networking::v1::Ingress;

use super::{IngressOptions, Settings};
use crate::model::{ObjKey, Snapshot};

/// The annotations' prefix.
pub const PREFIX: &str = "heim.dev/";

/// Every `heim.dev/` annotation there is.
pub const KNOWN: &[&str] = &[
    "public",
    "allow-emails",
    "allow-domains",
    "allow-groups",
    "allow-github-orgs",
    "allow-github-teams",
    "allow-any-authenticated",
    "identity-headers",
    "backend-protocol",
    "ssl-redirect",
    "proxy-body-size",
    "proxy-read-timeout",
    "allow-source-range",
    "webhook-secret",
    "acme",
];

/// The longest `proxy-read-timeout`: a day.
const MAX_READ_TIMEOUT_S: u64 = 86_400;

/// Reads an Ingress's `heim.dev/*` annotations; errors are (annotation, message).
pub fn read(
    ingress: &Ingress,
    snap: &Snapshot,
    settings: &Settings,
) -> Result<IngressOptions, Vec<(String, String)>> {
    let empty = BTreeMap::new();
    let all = ingress.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut r = Reader {
        all: all
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v)))
            .collect(),
        errors: Vec::new(),
    };
    let mut o = IngressOptions::default();
    // Empty annotations, reported once (not again by their own parser).
    let mut empty: Vec<&str> = Vec::new();
    for (k, v) in all {
        let Some(name) = k.strip_prefix(PREFIX) else {
            continue;
        };
        if !KNOWN.contains(&name) {
            r.errors.push((
                k.clone(),
                format!(
                    "heim has no annotation {k:?} (a typo?); the known ones are heim.dev/{}",
                    KNOWN.join(", heim.dev/")
                ),
            ));
        } else if v.split(',').all(|item| item.trim().is_empty()) {
            r.errors.push((k.clone(), "is empty".into()));
            empty.push(name);
        }
    }
    for name in empty {
        r.all.remove(name);
    }
    if r.flag("acme") == Some(true) {
        o.unsupported.push((
            format!("{PREFIX}acme"),
            "heim's ACME does not write Ingress Secrets yet: use cert-manager, or [acme] in heim's ConfigMap".into(),
        ));
    }
    let public = r.flag("public");
    let any = r.flag("allow-any-authenticated");
    let rules = AccessRules {
        any_authenticated: any == Some(true),
        emails: r.list_lower("allow-emails"),
        domains: r.list_lower("allow-domains"),
        groups: r.list("allow-groups"),
        github_orgs: r.list_lower("allow-github-orgs"),
        github_teams: r.list_lower("allow-github-teams"),
    };
    for e in &rules.emails {
        if valid_email(e).is_none() {
            r.error("allow-emails", format!("{e:?} is not an email address"));
        }
    }
    for t in &rules.github_teams {
        if !t
            .split_once('/')
            .is_some_and(|(o, t)| !o.is_empty() && !t.is_empty() && !t.contains('/'))
        {
            r.error("allow-github-teams", format!("{t:?} is not org/team"));
        }
    }
    let webhook = r.get("webhook-secret").map(|name| {
        let key = ObjKey::new(
            ingress.metadata.namespace.as_deref().unwrap_or_default(),
            name.trim(),
        );
        let secret = snap.secrets.get(&key).and_then(|s| {
            let data = s.data.as_ref()?;
            data.get("secret")
                .or_else(|| (data.len() == 1).then(|| data.values().next())?)
                .map(|b| heim_proxy::auth::trim_secret(b.0.clone()))
        });
        (key, secret)
    });
    o.policy = match (public == Some(true), rules.is_empty(), webhook) {
        (_, _, Some((key, secret))) => {
            if public == Some(true) || !rules.is_empty() {
                r.error(
                    "webhook-secret",
                    "a webhook needs no user: drop heim.dev/public and the allow rules".into(),
                );
            }
            match secret {
                Some(s) if !s.is_empty() => Some(Policy::Webhook(Arc::new(WebhookSpec {
                    secret_file: Default::default(),
                    secret: s.into(),
                }))),
                _ => {
                    r.error(
                        "webhook-secret",
                        format!("Secret {key} does not exist or has no non-empty key \"secret\""),
                    );
                    None
                }
            }
        }
        (true, false, None) => {
            r.error(
                "public",
                "an Ingress is either public or has allow rules, not both".into(),
            );
            None
        }
        (true, true, None) => Some(Policy::Public),
        (false, false, None) => {
            if !settings.have_auth {
                r.error(
                    "allow-*",
                    "allow rules need sign-in: add [auth] with a provider to heim's ConfigMap"
                        .into(),
                );
            }
            Some(Policy::Allow(Arc::new(rules)))
        }
        // `public: "false"` and no rules: the default policy.
        (false, true, None) => None,
    };
    if let Some(v) = r.get("identity-headers") {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((name, field)) = item.split_once('=') else {
                r.error(
                    "identity-headers",
                    format!("{item:?} is not Header=email|user|groups"),
                );
                continue;
            };
            match heim_proxy::config::identity_header(name.trim(), field.trim()) {
                Ok(h) => o.identity_headers.push(h),
                Err(why) => r.error("identity-headers", why),
            }
        }
    }
    o.protocol =
        r.get("backend-protocol")
            .and_then(|v| match v.trim().to_ascii_uppercase().as_str() {
                "HTTP" => Some(UpstreamProtocol::Http1),
                "H2C" => Some(UpstreamProtocol::H2c),
                _ => {
                    r.error("backend-protocol", format!("{v:?} is not one of HTTP, H2C"));
                    None
                }
            });
    o.https_redirect = r.flag("ssl-redirect");
    o.max_body_bytes =
        r.get("proxy-body-size")
            .and_then(|v| match heim_proxy::config::parse_size(v) {
                Some(n) => Some(n),
                None => {
                    r.error(
                        "proxy-body-size",
                        format!("{v:?} is not a size like 8m, 512k, 1g or 0"),
                    );
                    None
                }
            });
    o.response_timeout = r.get("proxy-read-timeout").and_then(|v| {
        let t = v.trim();
        match t.strip_suffix('s').unwrap_or(t).parse::<u64>() {
            Ok(n) if (1..=MAX_READ_TIMEOUT_S).contains(&n) => Some(Duration::from_secs(n)),
            _ => {
                r.error(
                    "proxy-read-timeout",
                    format!("{v:?} is not a number of seconds from 1 to {MAX_READ_TIMEOUT_S}"),
                );
                None
            }
        }
    });
    if let Some(v) = r.get("allow-source-range") {
        for net in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match net.parse::<IpNet>() {
                Ok(n) => o.source_ranges.push(n),
                Err(why) => r.error("allow-source-range", format!("{net:?}: {why}")),
            }
        }
    }
    if r.errors.is_empty() {
        Ok(o)
    } else {
        Err(r.errors)
    }
}

struct Reader<'a> {
    /// The `heim.dev/` annotations, by name without the prefix.
    all: BTreeMap<&'a str, &'a String>,
    errors: Vec<(String, String)>,
}

impl<'a> Reader<'a> {
    fn get(&self, name: &str) -> Option<&'a String> {
        self.all.get(name).copied()
    }

    fn error(&mut self, name: &str, message: String) {
        self.errors.push((format!("{PREFIX}{name}"), message));
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        let v = self.get(name)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(name, format!("{v:?} is not \"true\" or \"false\""));
                None
            }
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list_lower(&self, name: &str) -> Vec<String> {
        let mut l = self.list(name);
        for s in &mut l {
            s.make_ascii_lowercase();
        }
        l
    }
}
