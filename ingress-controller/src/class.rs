//! Which Ingresses are heim's, by the Kubernetes API reference's rules and
//! ingress-nginx's flags.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The annotation Kubernetes used before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// ingress-nginx's `spec.controller`.
pub const NGINX_CONTROLLER: &str = "k8s.io/ingress-nginx";
/// The annotations of ingress-nginx.
const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Marks an IngressClass as the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// What makes an Ingress heim's (the `--ingress-class*`, `--controller-class`
/// and `--watch-ingress-without-class` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassFilter {
    /// `--ingress-class`: the class name heim answers to by name (the legacy
    /// annotation, and `--ingress-class-by-name`).
    pub ingress_class: String,
    /// `--controller-class`: the `spec.controller` values that are heim.
    pub controllers: Vec<String>,
    /// `--watch-ingress-without-class`.
    pub without_class: bool,
    /// `--ingress-class-by-name`: `ingressClassName: <ingress_class>` is
    /// heim's even when no such IngressClass exists (any more).
    pub by_name: bool,
}

/// Why an Ingress is heim's, or is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `spec.ingressClassName` names a class of one of heim's controllers.
    ClassName,
    /// `spec.ingressClassName` names a class that does not exist, and
    /// `--ingress-class-by-name` claims it by name.
    ClassNameMissing,
    /// The legacy `kubernetes.io/ingress.class` annotation.
    Annotation,
    /// No class at all: a default class of heim's, or
    /// `--watch-ingress-without-class`.
    Default,
    /// Not heim's.
    No,
}

impl ClassFilter {
    fn ours(&self, class: &IngressClass) -> bool {
        class
            .spec
            .as_ref()
            .and_then(|s| s.controller.as_deref())
            .is_some_and(|c| self.controllers.iter().any(|o| o == c))
    }

    /// Whether `ingress` was written for ingress-nginx: it carries
    /// `nginx.ingress.kubernetes.io/*` annotations, or its class (by
    /// `ingressClassName` or the legacy annotation) is `nginx` or one whose
    /// controller is ingress-nginx's. Its annotations are then read in
    /// that dialect, and `[ingress_nginx] default_policy` applies.
    pub fn is_nginx(&self, ingress: &Ingress, classes: &[std::sync::Arc<IngressClass>]) -> bool {
        let annotations = ingress.metadata.annotations.as_ref();
        annotations.is_some_and(|a| a.keys().any(|k| k.starts_with(NGINX_PREFIX)))
            || self.is_nginx_class(ingress, classes)
    }

    /// Whether `ingress`'s class (by `ingressClassName` or the legacy
    /// annotation) is `nginx` or one whose controller is ingress-nginx's.
    pub fn is_nginx_class(
        &self,
        ingress: &Ingress,
        classes: &[std::sync::Arc<IngressClass>],
    ) -> bool {
        let annotations = ingress.metadata.annotations.as_ref();
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                annotations
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        class.is_some_and(|name| {
            name == "nginx"
                || classes.iter().any(|c| {
                    c.metadata.name.as_deref() == Some(name)
                        && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                            == Some(NGINX_CONTROLLER)
                })
        })
    }

    /// Decides for one Ingress, given every IngressClass.
    pub fn claim(&self, ingress: &Ingress, classes: &[std::sync::Arc<IngressClass>]) -> Claim {
        let name = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        if let Some(name) = name {
            return match classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
            {
                Some(class) if self.ours(class) => Claim::ClassName,
                Some(_) => Claim::No,
                None if self.by_name && name == self.ingress_class => Claim::ClassNameMissing,
                None => Claim::No,
            };
        }
        if let Some(value) = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        {
            // `--ingress-class`, or the name of a class of ours.
            let ours = *value == self.ingress_class
                || classes
                    .iter()
                    .any(|c| c.metadata.name.as_deref() == Some(value.as_str()) && self.ours(c));
            return if ours { Claim::Annotation } else { Claim::No };
        }
        let default_is_ours = classes.iter().any(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
                && self.ours(c)
        });
        if self.without_class || default_is_ours {
            Claim::Default
        } else {
            Claim::No
        }
    }
}
