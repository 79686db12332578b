//! heim-ingress: the Kubernetes control plane of heim.
//!
//! Skeleton. It will watch Ingress, IngressClass, Service, EndpointSlice,
//! Secret and heim's ConfigMap and feed one pure function
//! `translate(snapshot) -> (RouteTable, certificates, problems)`, whose
//! output is `heim_proxy::route::RouteSpec` values (see DESIGN.md).

pub use heim_proxy::route::RouteSpec;
