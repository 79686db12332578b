//! heim-ingress: heim's Kubernetes ingress controller.
//!
//! One process runs the controller and heim's data plane (`heim_proxy::start`,
//! a library call). Reflectors ([`watch`]) cache Ingress, IngressClass,
//! Service, EndpointSlice (or Endpoints), Secret and heim's ConfigMap; every
//! change (debounced) runs [`translate`], a pure function of the snapshot,
//! whose routes and certificates are pushed into the data plane as the
//! `Kubernetes` source, beside the ConfigMap's own `[[route]]`s. The leader
//! ([`leader`], a Lease) writes Ingress status and publishes the problems as
//! Events. See docs/ingress.md.

pub mod class;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod options;
pub mod translate;
pub mod watch;
pub mod webhooks;

pub use options::Options;
pub use translate::{translate_once, Settings, Translation};
