//! heim's own ACME client (RFC 8555, through `instant-acme`): it orders,
//! stores and renews certificates for `acme.domains` and every route with
//! `acme = true`, and feeds them to the certificate store's ACME layer.

pub mod dns;

use std::path::PathBuf;
use std::time::Duration;

/// How the ACME server is to check that heim controls a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A token at `http://NAME/.well-known/acme-challenge/` (port 80).
    Http01,
    /// A self-signed certificate on `acme-tls/1` (port 443, RFC 8737).
    TlsAlpn01,
    /// A TXT record `_acme-challenge.NAME`; the only one for wildcards.
    Dns01,
}

impl ChallengeKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http-01" => Some(Self::Http01),
            "tls-alpn-01" => Some(Self::TlsAlpn01),
            "dns-01" => Some(Self::Dns01),
            _ => None,
        }
    }

    /// The config spelling, also the `challenge` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Dns01 => "dns-01",
        }
    }
}

/// `[acme.dns]`, validated but with its secret files not yet read.
#[derive(Clone, Debug, PartialEq)]
pub enum DnsProviderSpec {
    Rfc2136 {
        server: std::net::SocketAddr,
        tsig_key_name: String,
        tsig_algorithm: String,
        tsig_secret_file: PathBuf,
    },
    Cloudflare {
        api_token_file: PathBuf,
        zone_id: Option<String>,
        api_url: String,
    },
}

/// `[acme.dns]`.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    pub provider: DnsProviderSpec,
    pub check_servers: Vec<std::net::SocketAddr>,
    pub propagation_timeout: Duration,
}

/// `[acme]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct AcmeSpec {
    pub directory: String,
    pub contact: Vec<String>,
    pub storage_dir: PathBuf,
    pub challenge: ChallengeKind,
    pub ca_file: Option<PathBuf>,
    /// `domains` plus the host of every route with `acme = true`, lowercase,
    /// without duplicates, in config order.
    pub domains: Vec<String>,
    pub dns: Option<DnsConfig>,
    /// Line of `[acme]`, for errors found when files are read.
    pub line: usize,
}
