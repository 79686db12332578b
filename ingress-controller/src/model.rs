//! The cluster as `translate` sees it: the objects the reflectors hold,
//! indexed for lookups, and nothing else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: kube::Resource>(obj: &K) -> Self {
        Self::new(
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One ready address of a Service, on one of its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub ip: IpAddr,
    /// The Service port's name this is for (`""` for an unnamed port).
    pub port_name: String,
    pub port: u16,
}

/// Everything `translate` reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: HashMap<ObjKey, Arc<Service>>,
    /// Ready endpoints by Service (from EndpointSlices or Endpoints).
    pub endpoints: HashMap<ObjKey, Vec<Ready>>,
    /// Secrets of type `kubernetes.io/tls` and `Opaque`.
    pub secrets: HashMap<ObjKey, Arc<Secret>>,
    /// The data of ingress-nginx's ConfigMap (`--nginx-configmap`), when
    /// given: the cluster-wide defaults its Ingresses were written against.
    pub nginx_configmap: Option<std::collections::BTreeMap<String, String>>,
}

impl Snapshot {
    /// Indexes services by key.
    pub fn set_services(&mut self, services: impl IntoIterator<Item = Arc<Service>>) {
        self.services = services
            .into_iter()
            .map(|s| (ObjKey::of(s.as_ref()), s))
            .collect();
    }

    /// Indexes secrets by key.
    pub fn set_secrets(&mut self, secrets: impl IntoIterator<Item = Arc<Secret>>) {
        self.secrets = secrets
            .into_iter()
            .map(|s| (ObjKey::of(s.as_ref()), s))
            .collect();
    }

    /// Ready endpoints from core `Endpoints` (one object per Service).
    pub fn set_endpoints(&mut self, all: impl IntoIterator<Item = Arc<Endpoints>>) {
        self.endpoints.clear();
        for ep in all {
            let mut ready = Vec::new();
            for subset in ep.subsets.iter().flatten() {
                for port in subset.ports.iter().flatten() {
                    let Ok(number) = u16::try_from(port.port) else {
                        continue;
                    };
                    if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                        continue;
                    }
                    // `addresses` are ready; `notReadyAddresses` are not.
                    for a in subset.addresses.iter().flatten() {
                        if let Ok(ip) = a.ip.parse() {
                            ready.push(Ready {
                                ip,
                                port_name: port.name.clone().unwrap_or_default(),
                                port: number,
                            });
                        }
                    }
                }
            }
            self.endpoints.insert(ObjKey::of(ep.as_ref()), ready);
        }
        self.sort_endpoints();
    }

    /// Ready endpoints from `discovery.k8s.io/v1` EndpointSlices (several
    /// per Service, by the `kubernetes.io/service-name` label).
    pub fn set_endpoint_slices(&mut self, all: impl IntoIterator<Item = Arc<EndpointSlice>>) {
        self.endpoints.clear();
        for slice in all {
            let Some(service) = slice.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let key = ObjKey::new(slice.namespace().as_deref().unwrap_or_default(), service);
            let ready = self.endpoints.entry(key).or_default();
            for port in slice.ports.iter().flatten() {
                let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                for ep in &slice.endpoints {
                    // Ready unless said otherwise (the API's own default);
                    // a terminating endpoint is not ready.
                    let c = ep.conditions.as_ref();
                    if c.and_then(|c| c.ready) == Some(false)
                        || c.and_then(|c| c.terminating) == Some(true)
                    {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse() {
                            ready.push(Ready {
                                ip,
                                port_name: port.name.clone().unwrap_or_default(),
                                port: number,
                            });
                        }
                    }
                }
            }
        }
        self.sort_endpoints();
    }

    /// One order for the same addresses, so that an unchanged Service
    /// compiles to an equal `UpstreamSpec` (and keeps its live state).
    fn sort_endpoints(&mut self) {
        for list in self.endpoints.values_mut() {
            list.sort_by(|a, b| (&a.port_name, a.ip, a.port).cmp(&(&b.port_name, b.ip, b.port)));
            list.dedup();
        }
    }
}
