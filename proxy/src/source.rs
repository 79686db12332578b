//! Where routes and certificates come from. Each source pushes whole
//! snapshots of its own (the config file on load and reload, the ingress
//! controller from the cluster, ACME as it issues); the live route table
//! and certificate store are rebuilt from every source's latest snapshot,
//! and no source ever overwrites another's. The order is precedence: what
//! the operator wrote in heim's own file first.

/// A source of routes and certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The config file: `[[route]]` and `[[certificate]]`.
    File,
    /// The cluster: Ingresses and the `kubernetes.io/tls` Secrets they name.
    Kubernetes,
    /// heim's own ACME client (certificates only).
    Acme,
}

impl Source {
    /// The `source` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Kubernetes => "kubernetes",
            Source::Acme => "acme",
        }
    }
}
