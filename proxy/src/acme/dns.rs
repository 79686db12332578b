//! ACME DNS-01 solvers: put the TXT record `_acme-challenge.<domain>`, wait
//! until the authoritative servers answer it, take it away afterwards.
//!
//! Two providers: RFC 2136 dynamic update signed with TSIG (RFC 8945), which
//! BIND, Knot, PowerDNS and most self-hosted DNS speak, and the Cloudflare
//! API v4. For the first, this module writes and reads the few DNS messages
//! it needs (a SOA and a TXT query, an UPDATE) itself: it is not a resolver
//! and follows no CNAME or delegation. What it does not own: the ACME order
//! and the key authorization (`acme`), the config keys (`config`).
//!
//! Each record is removed by its exact value, never by name: a wildcard and
//! its base name share `_acme-challenge.<base>`, and both challenges may be
//! pending at once.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::http_client::{FetchError, HttpClient};
use wire::Name;

/// TTL of the challenge record, in seconds: short, so a stale value from a
/// failed attempt does not linger in caches.
const CHALLENGE_TTL: u32 = 60;
/// How long one UDP try waits for an answer.
const UDP_TIMEOUT: Duration = Duration::from_secs(2);
/// UDP tries for an update or a zone lookup before giving up.
const UDP_TRIES: u32 = 3;
/// Time allowed for a whole exchange over TCP (after a truncated answer).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds of clock difference TSIG tolerates (RFC 8945 recommends 300).
const FUDGE: u16 = 300;
/// Pause between two visibility checks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

// === public API ===

/// A TSIG MAC algorithm heim signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha512,
}

impl TsigAlgorithm {
    /// Parses the config spelling, `hmac-sha256` or `hmac-sha512` (as BIND writes them).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
            "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
            _ => None,
        }
    }

    /// The algorithm's name in the TSIG record (without the root dot).
    fn dns_name(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            TsigAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
            TsigAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }
}

/// Where the challenge records are written.
#[derive(Clone)]
pub enum DnsProvider {
    /// RFC 2136 dynamic update, TSIG-signed, sent to the zone's primary.
    Rfc2136 {
        server: SocketAddr,
        key_name: String,
        algorithm: TsigAlgorithm,
        /// The decoded key bytes.
        secret: Vec<u8>,
    },
    /// The Cloudflare API v4 with an API token (`Zone.DNS:Edit`).
    Cloudflare {
        api_token: String,
        /// `None`: found by name, walking up from the domain.
        zone_id: Option<String>,
        /// Default `https://api.cloudflare.com/client/v4`.
        api_url: String,
    },
}

// Secrets stay out of logs and panics.
impl fmt::Debug for DnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsProvider::Rfc2136 {
                server,
                key_name,
                algorithm,
                ..
            } => f
                .debug_struct("Rfc2136")
                .field("server", server)
                .field("key_name", key_name)
                .field("algorithm", algorithm)
                .field("secret", &"<redacted>")
                .finish(),
            DnsProvider::Cloudflare {
                zone_id, api_url, ..
            } => f
                .debug_struct("Cloudflare")
                .field("api_token", &"<redacted>")
                .field("zone_id", zone_id)
                .field("api_url", api_url)
                .finish(),
        }
    }
}

/// A DNS-01 solver's settings.
#[derive(Clone, Debug)]
pub struct DnsSpec {
    pub provider: DnsProvider,
    /// Where visibility is checked ("ip:port"); empty = the default: for rfc2136 the `server`; for
    /// cloudflare the zone's `name_servers` from the API, resolved with the system resolver, port 53.
    pub check_servers: Vec<SocketAddr>,
    /// How long to wait for the record to show up (default 120 s).
    pub propagation_timeout: Duration,
}

/// Reads a TSIG secret file: either just the base64 secret on one line, or a BIND key file as written by
/// `tsig-keygen` (`key "name" { algorithm hmac-sha256; secret "base64"; };`). Errors are human sentences.
pub fn read_tsig_secret(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the TSIG secret file {}: {e}", path.display()))?;
    parse_tsig_secret(&text).map_err(|e| format!("TSIG secret file {}: {e}", path.display()))
}

/// A challenge record heim put, to check and to remove.
#[derive(Clone, Debug)]
pub struct TxtRecord {
    /// `_acme-challenge.<domain>`, lower case, no trailing dot.
    fqdn: String,
    name: Name,
    value: String,
    at: RecordAt,
}

#[derive(Clone, Debug)]
enum RecordAt {
    Rfc2136 {
        zone: Name,
    },
    Cloudflare {
        zone_id: String,
        record_id: String,
        name_servers: Vec<String>,
    },
}

impl TxtRecord {
    /// `_acme-challenge.<domain>` (no trailing dot).
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// The TXT value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Why a DNS-01 step failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The domain (or the TSIG key name) is not a DNS name heim can write.
    #[error("{name:?} is not a usable DNS name: {why}")]
    BadName { name: String, why: &'static str },
    /// No answer from a DNS server, or a socket error.
    #[error("{step} at {server}: {detail}")]
    Transport {
        server: SocketAddr,
        step: String,
        detail: String,
    },
    /// A DNS server's answer could not be read or does not fit the question.
    #[error("{step} at {server}: unusable answer: {detail}")]
    Malformed {
        server: SocketAddr,
        step: String,
        detail: String,
    },
    /// A DNS server answered with an error code.
    #[error("{step} at {server}: the server answered {rcode}{}", rcode_hint(.rcode))]
    Rcode {
        server: SocketAddr,
        step: String,
        rcode: &'static str,
    },
    /// The server refused heim's TSIG signature, or its answer's did not verify.
    #[error("{step} at {server}: TSIG: {detail}")]
    Tsig {
        server: SocketAddr,
        step: String,
        detail: String,
    },
    /// No SOA record names a zone holding the challenge name.
    #[error("no zone holding {name} found at {server} (its SOA queries gave no SOA record)")]
    NoZone { name: String, server: SocketAddr },
    /// The Cloudflare API answered with an error.
    #[error("Cloudflare API, {step}: HTTP {status}: {message}")]
    Cloudflare {
        step: String,
        status: u16,
        message: String,
    },
    /// The Cloudflare API could not be reached or answered no JSON.
    #[error("Cloudflare API, {step}: {detail}")]
    CloudflareRequest { step: String, detail: String },
    /// No active Cloudflare zone holds the domain.
    #[error("no active Cloudflare zone holds {domain} (asked for {tried})")]
    CloudflareNoZone { domain: String, tried: String },
    /// A record given to a solver of another provider than the one that put it.
    #[error("TXT {fqdn} was put by another DNS provider")]
    OtherProvider { fqdn: String },
    /// The servers to check visibility at are not known.
    #[error("cannot find the servers to check {fqdn} at: {detail}")]
    CheckServers { fqdn: String, detail: String },
    /// The record did not show up in time.
    #[error("TXT {fqdn} not visible after {}s at {pending}", .waited.as_secs())]
    NotVisible {
        fqdn: String,
        waited: Duration,
        /// Each server still missing the value, with what it answered last.
        pending: String,
    },
}

fn rcode_hint(rcode: &str) -> &'static str {
    match rcode {
        "REFUSED" => " (refused by the server's policy: is the key allowed to update this name?)",
        "NOTAUTH" => " (the server is not authoritative for the zone, or does not accept the key)",
        "NOTZONE" => " (the name is outside the zone)",
        "SERVFAIL" => " (the server failed; its log says why)",
        "NOTIMP" => " (the server does not implement this)",
        _ => "",
    }
}

/// Puts, checks and removes DNS-01 challenge records with one provider.
pub struct DnsSolver {
    provider: Provider,
    check_servers: Vec<SocketAddr>,
    propagation_timeout: Duration,
    http: HttpClient,
}

enum Provider {
    /// Boxed: an HMAC key is over a kilobyte.
    Rfc2136(Box<Rfc2136>),
    Cloudflare(Cloudflare),
}

// === impl DnsSolver ===

impl DnsSolver {
    /// A solver for `spec`; `http` reaches the Cloudflare API.
    pub fn new(spec: DnsSpec, http: HttpClient) -> DnsSolver {
        let provider = match spec.provider {
            DnsProvider::Rfc2136 {
                server,
                key_name,
                algorithm,
                secret,
            } => Provider::Rfc2136(Box::new(Rfc2136 {
                server,
                key: TsigKey::new(&key_name, algorithm, &secret),
            })),
            DnsProvider::Cloudflare {
                api_token,
                zone_id,
                api_url,
            } => Provider::Cloudflare(Cloudflare {
                api_token,
                zone_id,
                api_url: api_url.trim_end_matches('/').to_string(),
            }),
        };
        DnsSolver {
            provider,
            check_servers: spec.check_servers,
            propagation_timeout: spec.propagation_timeout,
            http,
        }
    }

    /// Puts TXT `_acme-challenge.<domain>` = `value` (`domain` without `*.`).
    pub async fn present(&self, domain: &str, value: &str) -> Result<TxtRecord, DnsError> {
        let (domain, name) = challenge_name(domain)?;
        let fqdn = name.to_string().trim_end_matches('.').to_string();
        let at = match &self.provider {
            Provider::Rfc2136(p) => p.present(&name, value).await?,
            Provider::Cloudflare(p) => p.present(&self.http, &domain, &fqdn, value).await?,
        };
        Ok(TxtRecord {
            fqdn,
            name,
            value: value.to_string(),
            at,
        })
    }

    /// Waits until every check server answers the record's value (bounded by
    /// `propagation_timeout`, polling every 500 ms).
    pub async fn wait_visible(&self, record: &TxtRecord) -> Result<(), DnsError> {
        let started = Instant::now();
        let mut progress = Vec::new();
        let polled = tokio::time::timeout_at(
            started + self.propagation_timeout,
            self.poll_visible(record, &mut progress),
        )
        .await;
        match polled {
            Ok(result) => result,
            Err(_) => {
                let pending = if progress.is_empty() {
                    "no server: the check servers were not found in time".to_string()
                } else {
                    progress
                        .iter()
                        .filter(|p| !p.done)
                        .map(|p| format!("{} (last seen: {})", p.server, p.last))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(DnsError::NotVisible {
                    fqdn: record.fqdn.clone(),
                    waited: started.elapsed(),
                    pending,
                })
            }
        }
    }

    /// Removes the record (only this value; others of the same name stay).
    pub async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError> {
        match (&self.provider, &record.at) {
            (Provider::Rfc2136(p), RecordAt::Rfc2136 { zone }) => p.cleanup(record, zone).await,
            (
                Provider::Cloudflare(p),
                RecordAt::Cloudflare {
                    zone_id, record_id, ..
                },
            ) => p.cleanup(&self.http, record, zone_id, record_id).await,
            _ => Err(DnsError::OtherProvider {
                fqdn: record.fqdn.clone(),
            }),
        }
    }

    async fn poll_visible(
        &self,
        record: &TxtRecord,
        progress: &mut Vec<Visibility>,
    ) -> Result<(), DnsError> {
        for server in self.visibility_servers(record).await? {
            progress.push(Visibility {
                server,
                done: false,
                last: "not asked yet".into(),
            });
        }
        loop {
            for p in progress.iter_mut().filter(|p| !p.done) {
                match txt_values(p.server, &record.name).await {
                    Ok(TxtLookup::Values(values)) if values.contains(&record.value) => {
                        p.done = true;
                        tracing::debug!(fqdn = %record.fqdn, server = %p.server, "dns-01: record visible");
                    }
                    Ok(seen) => p.last = seen.to_string(),
                    Err(e) => p.last = e,
                }
            }
            if progress.iter().all(|p| p.done) {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn visibility_servers(&self, record: &TxtRecord) -> Result<Vec<SocketAddr>, DnsError> {
        if !self.check_servers.is_empty() {
            return Ok(self.check_servers.clone());
        }
        match (&self.provider, &record.at) {
            (Provider::Rfc2136(p), _) => Ok(vec![p.server]),
            (_, RecordAt::Cloudflare { name_servers, .. }) => {
                resolve_name_servers(&record.fqdn, name_servers).await
            }
            (_, RecordAt::Rfc2136 { .. }) => Err(DnsError::OtherProvider {
                fqdn: record.fqdn.clone(),
            }),
        }
    }
}

/// One check server's state while waiting.
struct Visibility {
    server: SocketAddr,
    done: bool,
    last: String,
}

/// `_acme-challenge.<domain>`, and the domain itself, both checked.
fn challenge_name(domain: &str) -> Result<(Name, Name), DnsError> {
    let bad = |why| DnsError::BadName {
        name: domain.to_string(),
        why,
    };
    let plain = domain.strip_prefix("*.").unwrap_or(domain);
    let base = Name::parse_host(plain).map_err(bad)?;
    if base.label_count() == 0 {
        return Err(bad("the root cannot be validated"));
    }
    let name = base.child("_acme-challenge").map_err(bad)?;
    Ok((base, name))
}

/// The system resolver's addresses (IPv4 first) for each name server, port 53.
async fn resolve_name_servers(
    fqdn: &str,
    name_servers: &[String],
) -> Result<Vec<SocketAddr>, DnsError> {
    if name_servers.is_empty() {
        return Err(DnsError::CheckServers {
            fqdn: fqdn.to_string(),
            detail: "the zone lists no name servers; set the check servers".into(),
        });
    }
    let mut out = Vec::new();
    for ns in name_servers {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((ns.as_str(), 53))
            .await
            .map_err(|e| DnsError::CheckServers {
                fqdn: fqdn.to_string(),
                detail: format!("cannot resolve name server {ns}: {e}"),
            })?
            .collect();
        // One address per name server: it is the server that must have the
        // record, and this host may have no IPv6 route.
        let pick = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied();
        match pick {
            Some(a) => out.push(a),
            None => {
                return Err(DnsError::CheckServers {
                    fqdn: fqdn.to_string(),
                    detail: format!("name server {ns} has no address"),
                })
            }
        }
    }
    Ok(out)
}

// === RFC 2136 ===

struct Rfc2136 {
    server: SocketAddr,
    /// `Err`: the key name is not a DNS name, said at first use.
    key: Result<TsigKey, (String, &'static str)>,
}

impl Rfc2136 {
    fn key(&self) -> Result<&TsigKey, DnsError> {
        self.key.as_ref().map_err(|(name, why)| DnsError::BadName {
            name: name.clone(),
            why,
        })
    }

    async fn present(&self, name: &Name, value: &str) -> Result<RecordAt, DnsError> {
        let zone = self.find_zone(name).await?;
        let rr = txt_rr(name, wire::CLASS_IN, CHALLENGE_TTL, value);
        self.update(
            &zone,
            rr,
            format!("UPDATE adding TXT {name} in zone {zone}"),
        )
        .await?;
        tracing::info!(fqdn = %name, zone = %zone, server = %self.server, "dns-01: TXT record added");
        Ok(RecordAt::Rfc2136 { zone })
    }

    async fn cleanup(&self, record: &TxtRecord, zone: &Name) -> Result<(), DnsError> {
        // Class NONE, TTL 0: delete this one RR (RFC 2136 §2.5.4).
        let rr = txt_rr(&record.name, wire::CLASS_NONE, 0, &record.value);
        let name = &record.name;
        self.update(
            zone,
            rr,
            format!("UPDATE removing TXT {name} in zone {zone}"),
        )
        .await?;
        tracing::info!(fqdn = %name, zone = %zone, server = %self.server, "dns-01: TXT record removed");
        Ok(())
    }

    /// The zone holding `name`: the owner of the SOA record in the answer
    /// (`name` is an apex) or in the authority section (NXDOMAIN, NODATA),
    /// walking up a label when neither has one (not to the root, which no
    /// one updates).
    async fn find_zone(&self, name: &Name) -> Result<Name, DnsError> {
        let key = self.key()?;
        let mut candidate = Some(name.clone());
        while let Some(q) = candidate.filter(|q| q.label_count() > 0) {
            let step = format!("SOA query for {q}");
            let request = wire::Message::query(random_id(), q.clone(), wire::TYPE_SOA, false);
            let reply = ask(self.server, &request, Some(key), UDP_TRIES, &step).await?;
            match wire::rcode(reply.flags) {
                wire::RCODE_NOERROR | wire::RCODE_NXDOMAIN => {}
                rcode => {
                    return Err(DnsError::Rcode {
                        server: self.server,
                        step,
                        rcode: wire::rcode_name(rcode),
                    })
                }
            }
            let soa = reply
                .answer
                .iter()
                .chain(&reply.authority)
                .find(|rr| rr.rtype == wire::TYPE_SOA && name.is_within(&rr.name));
            if let Some(soa) = soa {
                return Ok(soa.name.clone());
            }
            candidate = q.parent();
        }
        Err(DnsError::NoZone {
            name: name.to_string(),
            server: self.server,
        })
    }

    async fn update(&self, zone: &Name, rr: wire::Record, step: String) -> Result<(), DnsError> {
        let key = self.key()?;
        let request = wire::Message {
            id: random_id(),
            flags: wire::OPCODE_UPDATE << 11,
            // Zone section: the zone's SOA (RFC 2136 §2.3).
            question: vec![wire::Question {
                name: zone.clone(),
                qtype: wire::TYPE_SOA,
                qclass: wire::CLASS_IN,
            }],
            // No prerequisites: adding an RR that exists, or deleting one
            // that does not, is a no-op, so retries are harmless.
            answer: Vec::new(),
            authority: vec![rr],
            additional: Vec::new(),
            tsig: None,
        };
        let reply = ask(self.server, &request, Some(key), UDP_TRIES, &step).await?;
        match wire::rcode(reply.flags) {
            wire::RCODE_NOERROR => Ok(()),
            rcode => Err(DnsError::Rcode {
                server: self.server,
                step,
                rcode: wire::rcode_name(rcode),
            }),
        }
    }
}

/// A TXT RR holding `value` (split into character-strings of at most 255 bytes).
fn txt_rr(name: &Name, class: u16, ttl: u32, value: &str) -> wire::Record {
    let mut rdata = Vec::with_capacity(value.len() + 1);
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        rdata.push(0);
    }
    for chunk in bytes.chunks(255) {
        rdata.push(chunk.len() as u8);
        rdata.extend_from_slice(chunk);
    }
    wire::Record {
        name: name.clone(),
        rtype: wire::TYPE_TXT,
        class,
        ttl,
        rdata,
    }
}

/// What a check server answered for the challenge name.
enum TxtLookup {
    NxDomain,
    Values(Vec<String>),
    Rcode(&'static str),
}

impl fmt::Display for TxtLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxtLookup::NxDomain => f.write_str("NXDOMAIN"),
            TxtLookup::Values(v) if v.is_empty() => f.write_str("no TXT record"),
            TxtLookup::Values(v) => write!(f, "TXT {v:?}"),
            TxtLookup::Rcode(r) => f.write_str(r),
        }
    }
}

/// Asks `server` (RD=0, unsigned: check servers need not know the key) for
/// the TXT values of `name`.
async fn txt_values(server: SocketAddr, name: &Name) -> Result<TxtLookup, String> {
    let step = format!("TXT query for {name}");
    let request = wire::Message::query(random_id(), name.clone(), wire::TYPE_TXT, false);
    // One try: the caller polls.
    // The server and the step are said by the caller.
    let reply = ask(server, &request, None, 1, &step)
        .await
        .map_err(|e| match e {
            DnsError::Transport { detail, .. } => detail,
            DnsError::Malformed { detail, .. } => format!("an unusable answer: {detail}"),
            other => other.to_string(),
        })?;
    Ok(match wire::rcode(reply.flags) {
        wire::RCODE_NOERROR => TxtLookup::Values(
            reply
                .answer
                .iter()
                .filter(|rr| rr.rtype == wire::TYPE_TXT && rr.name == *name)
                .filter_map(|rr| wire::txt_strings(&rr.rdata))
                .map(|parts| String::from_utf8_lossy(&parts.concat()).into_owned())
                .collect(),
        ),
        wire::RCODE_NXDOMAIN => TxtLookup::NxDomain,
        rcode => TxtLookup::Rcode(wire::rcode_name(rcode)),
    })
}

/// Sends `request` (signed with `key` if given) and returns the answer,
/// which is checked to answer it (id, opcode, question) and, if signed,
/// to carry a valid TSIG by the same key. The rcode is the caller's.
async fn ask(
    server: SocketAddr,
    request: &wire::Message,
    key: Option<&TsigKey>,
    udp_tries: u32,
    step: &str,
) -> Result<wire::Message, DnsError> {
    let mut bytes = request.encode();
    let request_mac = key.map(|k| k.sign(&mut bytes, unix_now()));
    let raw = exchange(server, &bytes, udp_tries)
        .await
        .map_err(|detail| DnsError::Transport {
            server,
            step: step.to_string(),
            detail,
        })?;
    let malformed = |detail: String| DnsError::Malformed {
        server,
        step: step.to_string(),
        detail,
    };
    let reply = wire::Message::decode(&raw).map_err(|e| malformed(e.to_string()))?;
    if wire::opcode(reply.flags) != wire::opcode(request.flags)
        || !(reply.question.is_empty() || reply.question == request.question)
    {
        return Err(malformed("it answers another question".into()));
    }
    let (Some(key), Some(request_mac)) = (key, request_mac) else {
        return Ok(reply);
    };
    let rcode = wire::rcode(reply.flags);
    let tsig_failed = |detail: String| DnsError::Tsig {
        server,
        step: step.to_string(),
        detail,
    };
    match &reply.tsig {
        // BADSIG and BADKEY answers carry no MAC to check (RFC 8945 §5.2).
        Some(t) if t.error != 0 => Err(tsig_failed(format!(
            "the server answered {} with TSIG error {}{}",
            wire::rcode_name(rcode),
            wire::tsig_error_name(t.error),
            tsig_error_hint(t.error, key),
        ))),
        Some(t) => {
            key.verify(&raw, t, &request_mac, unix_now())
                .map_err(tsig_failed)?;
            Ok(reply)
        }
        // An unsigned error (a server that does not do TSIG, say) can only
        // make heim fail, so it is reported as it is.
        None if rcode != wire::RCODE_NOERROR => Err(DnsError::Rcode {
            server,
            step: step.to_string(),
            rcode: wire::rcode_name(rcode),
        }),
        None => Err(tsig_failed("the answer is not signed".into())),
    }
}

fn tsig_error_hint(error: u16, key: &TsigKey) -> String {
    match error {
        wire::TSIG_BADSIG => {
            " (the server does not accept the signature: is the secret right?)".into()
        }
        wire::TSIG_BADKEY => format!(
            " (the server does not know key {} with algorithm {})",
            key.name,
            key.algorithm.dns_name()
        ),
        wire::TSIG_BADTIME => {
            format!(" (the clocks of heim and the server differ by more than {FUDGE} s)")
        }
        _ => String::new(),
    }
}

/// One exchange: UDP with `tries` tries of 2 s each, TCP if the answer is
/// truncated. Returns a response with the request's id.
async fn exchange(server: SocketAddr, request: &[u8], tries: u32) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    // Connected: datagrams from anyone else are dropped by the kernel.
    socket
        .connect(server)
        .await
        .map_err(|e| format!("UDP: {e}"))?;
    let mut buf = vec![0u8; 65535];
    let mut last = String::from("no answer");
    for _ in 0..tries {
        if let Err(e) = socket.send(request).await {
            last = e.to_string();
            continue;
        }
        let deadline = Instant::now() + UDP_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => {
                    last = format!("no answer within {} s", UDP_TIMEOUT.as_secs());
                    break;
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    break;
                }
                Ok(Ok(n)) => {
                    let reply = &buf[..n];
                    if !is_response_to(reply, request) {
                        // A late answer to an earlier try, or noise.
                        continue;
                    }
                    if reply[2] & 0x02 != 0 {
                        return tcp_exchange(server, request).await;
                    }
                    return Ok(reply.to_vec());
                }
            }
        }
    }
    Err(match tries {
        1 => format!("no answer over UDP ({last})"),
        n => format!("no answer over UDP after {n} tries ({last})"),
    })
}

async fn tcp_exchange(server: SocketAddr, request: &[u8]) -> Result<Vec<u8>, String> {
    let len = u16::try_from(request.len()).map_err(|_| "request too large".to_string())?;
    let talk = async {
        let mut tcp = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(request);
        tcp.write_all(&framed).await?;
        loop {
            let mut len = [0u8; 2];
            tcp.read_exact(&mut len).await?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tcp.read_exact(&mut reply).await?;
            if is_response_to(&reply, request) {
                return Ok::<_, std::io::Error>(reply);
            }
        }
    };
    match tokio::time::timeout(TCP_TIMEOUT, talk).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(format!("TCP (after a truncated UDP answer): {e}")),
        Err(_) => Err(format!(
            "TCP (after a truncated UDP answer): no answer within {} s",
            TCP_TIMEOUT.as_secs()
        )),
    }
}

fn is_response_to(reply: &[u8], request: &[u8]) -> bool {
    reply.len() >= 12 && reply[..2] == request[..2] && reply[2] & 0x80 != 0
}

/// A random message id (RFC 5452: ids must not be guessable).
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // AWS-LC's generator does not fail once seeded; should it, the
        // clock still gives a usable id (the answer is TSIG-checked anyway).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        b = (nanos as u16).to_be_bytes();
    }
    u16::from_be_bytes(b)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === TSIG (RFC 8945) ===

struct TsigKey {
    name: Name,
    algorithm: TsigAlgorithm,
    algorithm_name: Name,
    key: hmac::Key,
}

impl TsigKey {
    fn new(
        name: &str,
        algorithm: TsigAlgorithm,
        secret: &[u8],
    ) -> Result<TsigKey, (String, &'static str)> {
        let key_name = Name::parse_any(name).map_err(|why| (name.to_string(), why))?;
        let algorithm_name = Name::parse_any(algorithm.dns_name())
            .map_err(|why| (algorithm.dns_name().to_string(), why))?;
        Ok(TsigKey {
            name: key_name,
            algorithm,
            algorithm_name,
            key: hmac::Key::new(algorithm.hmac(), secret),
        })
    }

    /// Appends the TSIG RR to `msg` (a whole message without one) and
    /// returns the MAC, which the answer's MAC covers.
    fn sign(&self, msg: &mut Vec<u8>, time_signed: u64) -> Vec<u8> {
        let mut signed = msg.clone();
        self.put_variables(&mut signed, time_signed, FUDGE, 0, &[]);
        let mac = hmac::sign(&self.key, &signed).as_ref().to_vec();
        let original_id = [msg[0], msg[1]];

        self.name.write(msg);
        wire::put_u16(msg, wire::TYPE_TSIG);
        wire::put_u16(msg, wire::CLASS_ANY);
        wire::put_u32(msg, 0);
        let mut rdata = Vec::with_capacity(64 + mac.len());
        self.algorithm_name.write(&mut rdata);
        wire::put_u48(&mut rdata, time_signed);
        wire::put_u16(&mut rdata, FUDGE);
        wire::put_u16(&mut rdata, mac.len() as u16);
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&original_id);
        wire::put_u16(&mut rdata, 0); // error
        wire::put_u16(&mut rdata, 0); // other len
        wire::put_u16(msg, rdata.len() as u16);
        msg.extend_from_slice(&rdata);
        let arcount = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
        msg[10..12].copy_from_slice(&arcount.to_be_bytes());
        mac
    }

    /// Checks the TSIG of an answer (`reply`, as received) to a request
    /// that carried `request_mac` (RFC 8945 §5.3.1, §5.4).
    fn verify(
        &self,
        reply: &[u8],
        tsig: &wire::Tsig,
        request_mac: &[u8],
        now: u64,
    ) -> Result<(), String> {
        if tsig.key_name != self.name {
            return Err(format!(
                "the answer is signed with key {}, not {}",
                tsig.key_name, self.name
            ));
        }
        if tsig.algorithm != self.algorithm_name {
            return Err(format!(
                "the answer is signed with {}, not {}",
                tsig.algorithm, self.algorithm_name
            ));
        }
        let mut signed = Vec::with_capacity(reply.len() + 2 + request_mac.len() + 64);
        wire::put_u16(&mut signed, request_mac.len() as u16);
        signed.extend_from_slice(request_mac);
        // The message as it was before the TSIG RR was added.
        let start = signed.len();
        signed.extend_from_slice(&reply[..tsig.start]);
        signed[start..start + 2].copy_from_slice(&tsig.original_id.to_be_bytes());
        let arcount = u16::from_be_bytes([signed[start + 10], signed[start + 11]]).wrapping_sub(1);
        signed[start + 10..start + 12].copy_from_slice(&arcount.to_be_bytes());
        self.put_variables(
            &mut signed,
            tsig.time_signed,
            tsig.fudge,
            tsig.error,
            &tsig.other,
        );
        // Constant time; only a full-length MAC is accepted.
        hmac::verify(&self.key, &signed, &tsig.mac)
            .map_err(|_| "the answer's MAC does not verify (a forged or altered answer?)")?;
        if now.abs_diff(tsig.time_signed) > u64::from(tsig.fudge) {
            return Err(format!(
                "the answer was signed {} s away from heim's clock (BADTIME)",
                now.abs_diff(tsig.time_signed)
            ));
        }
        Ok(())
    }

    /// The TSIG variables (RFC 8945 §4.3.3): names canonical (uncompressed,
    /// lower case), class ANY, TTL 0.
    fn put_variables(&self, out: &mut Vec<u8>, time: u64, fudge: u16, error: u16, other: &[u8]) {
        self.name.write(out);
        wire::put_u16(out, wire::CLASS_ANY);
        wire::put_u32(out, 0);
        self.algorithm_name.write(out);
        wire::put_u48(out, time);
        wire::put_u16(out, fudge);
        wire::put_u16(out, error);
        wire::put_u16(out, other.len() as u16);
        out.extend_from_slice(other);
    }
}

/// The key bytes of a TSIG secret file's text.
fn parse_tsig_secret(text: &str) -> Result<Vec<u8>, String> {
    // Base64 never holds a brace, a BIND key file always does.
    let b64 = if text.contains('{') {
        bind_key_secret(text)?
    } else {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.as_slice() {
            [one] => one.to_string(),
            [] => return Err("the file is empty".into()),
            _ => {
                return Err(
                    "expected the base64 secret on one line, or a BIND key file (tsig-keygen)"
                        .into(),
                )
            }
        }
    };
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let secret = lenient
        .decode(b64.as_bytes())
        .map_err(|_| "the secret is not valid base64".to_string())?;
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    Ok(secret)
}

/// The `secret "…";` of a BIND `key` statement (comments `#`, `//`, `/* */`).
fn bind_key_secret(text: &str) -> Result<String, String> {
    #[derive(PartialEq)]
    enum Token {
        Word(String),
        Quoted(String),
        Punct(char),
    }
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                chars.by_ref().find(|&c| c == '\n');
            }
            '/' if chars.peek() == Some(&'/') => {
                chars.by_ref().find(|&c| c == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                let s: String = chars.by_ref().take_while(|&c| c != '"').collect();
                tokens.push(Token::Quoted(s));
            }
            '{' | '}' | ';' => tokens.push(Token::Punct(c)),
            c => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                tokens.push(Token::Word(w));
            }
        }
    }
    let secrets: Vec<&String> = tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Word(k), Token::Quoted(s), Token::Punct(';')] if k == "secret" => Some(s),
            _ => None,
        })
        .collect();
    match secrets.as_slice() {
        [one] => Ok(one.split_whitespace().collect()),
        [] => Err("a BIND key file without a `secret \"…\";` statement".into()),
        many => Err(format!(
            "the file holds {} keys; heim needs a file with one",
            many.len()
        )),
    }
}

// === Cloudflare API v4 ===

struct Cloudflare {
    api_token: String,
    zone_id: Option<String>,
    /// Without a trailing slash.
    api_url: String,
}

/// A zone as the API describes it.
struct CfZone {
    id: String,
    name_servers: Vec<String>,
}

/// Why an API call failed, before it is put in the caller's terms.
enum CfFailure {
    Request(String),
    Api {
        status: u16,
        /// `(code, message)` of the answer's `errors`.
        errors: Vec<(i64, String)>,
    },
}

/// Cloudflare's code for "Record already exists." (an identical record).
const CF_RECORD_EXISTS: i64 = 81057;
/// Cloudflare's code for "Record does not exist.".
const CF_RECORD_MISSING: i64 = 81044;

impl CfFailure {
    fn has_code(&self, code: i64) -> bool {
        matches!(self, CfFailure::Api { errors, .. } if errors.iter().any(|(c, _)| *c == code))
    }

    fn in_step(self, step: &str) -> DnsError {
        match self {
            CfFailure::Request(detail) => DnsError::CloudflareRequest {
                step: step.to_string(),
                detail,
            },
            CfFailure::Api { status, errors } => DnsError::Cloudflare {
                step: step.to_string(),
                status,
                message: if errors.is_empty() {
                    "no error given".into()
                } else {
                    errors
                        .iter()
                        .map(|(code, m)| format!("{m} (code {code})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            },
        }
    }
}

impl Cloudflare {
    async fn present(
        &self,
        http: &HttpClient,
        domain: &Name,
        fqdn: &str,
        value: &str,
    ) -> Result<RecordAt, DnsError> {
        let zone = self.zone(http, domain).await?;
        let step = format!("creating TXT {fqdn}");
        let path = format!("/zones/{}/dns_records", encode(&zone.id));
        let body = json!({ "type": "TXT", "name": fqdn, "content": value, "ttl": CHALLENGE_TTL });
        let record_id = match self.call(http, http::Method::POST, &path, Some(body)).await {
            Ok(result) => result_id(&result).ok_or_else(|| {
                CfFailure::Request("the answer has no result.id".into()).in_step(&step)
            })?,
            // Left by an attempt that ended before its cleanup: take it over.
            Err(e) if e.has_code(CF_RECORD_EXISTS) => self
                .existing(http, &zone.id, fqdn, value)
                .await?
                .ok_or_else(|| e.in_step(&step))?,
            Err(e) => return Err(e.in_step(&step)),
        };
        tracing::info!(fqdn, zone_id = %zone.id, record_id, "dns-01: TXT record added");
        Ok(RecordAt::Cloudflare {
            zone_id: zone.id,
            record_id,
            name_servers: zone.name_servers,
        })
    }

    async fn cleanup(
        &self,
        http: &HttpClient,
        record: &TxtRecord,
        zone_id: &str,
        record_id: &str,
    ) -> Result<(), DnsError> {
        let path = format!(
            "/zones/{}/dns_records/{}",
            encode(zone_id),
            encode(record_id)
        );
        match self.call(http, http::Method::DELETE, &path, None).await {
            Ok(_) => {}
            Err(e) if e.has_code(CF_RECORD_MISSING) => {
                tracing::debug!(fqdn = %record.fqdn, record_id, "dns-01: TXT record was already gone");
            }
            Err(e) => return Err(e.in_step(&format!("deleting TXT {}", record.fqdn))),
        }
        tracing::info!(fqdn = %record.fqdn, zone_id, record_id, "dns-01: TXT record removed");
        Ok(())
    }

    /// The configured zone, or the first active zone named by the domain or
    /// one of its parents.
    async fn zone(&self, http: &HttpClient, domain: &Name) -> Result<CfZone, DnsError> {
        if let Some(id) = &self.zone_id {
            let step = format!("reading zone {id}");
            let path = format!("/zones/{}", encode(id));
            let result = self
                .call(http, http::Method::GET, &path, None)
                .await
                .map_err(|e| e.in_step(&step))?;
            return cf_zone(&result).ok_or_else(|| {
                CfFailure::Request("the answer has no zone id".into()).in_step(&step)
            });
        }
        let mut tried = Vec::new();
        let mut candidate = Some(domain.clone());
        // A zone has at least two labels (no zone is a TLD).
        while let Some(c) = candidate.filter(|c| c.label_count() >= 2) {
            let name = c.to_string().trim_end_matches('.').to_string();
            let path = format!("/zones?name={}&status=active", encode(&name));
            let result = self
                .call(http, http::Method::GET, &path, None)
                .await
                .map_err(|e| e.in_step(&format!("looking up zone {name}")))?;
            if let Some(zone) = result.as_array().and_then(|a| a.first()).and_then(cf_zone) {
                return Ok(zone);
            }
            tried.push(name);
            candidate = c.parent();
        }
        Err(DnsError::CloudflareNoZone {
            domain: domain.to_string().trim_end_matches('.').to_string(),
            tried: tried.join(", "),
        })
    }

    /// The id of the TXT record `fqdn` = `value`, if the zone has it.
    async fn existing(
        &self,
        http: &HttpClient,
        zone_id: &str,
        fqdn: &str,
        value: &str,
    ) -> Result<Option<String>, DnsError> {
        let path = format!(
            "/zones/{}/dns_records?type=TXT&name={}&content={}",
            encode(zone_id),
            encode(fqdn),
            encode(value)
        );
        let result = self
            .call(http, http::Method::GET, &path, None)
            .await
            .map_err(|e| e.in_step(&format!("listing TXT {fqdn}")))?;
        Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["content"].as_str() == Some(value))
            .and_then(result_id))
    }

    /// One API call; `Ok` is the `result` of a successful answer.
    async fn call(
        &self,
        http: &HttpClient,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CfFailure> {
        let mut auth =
            http::HeaderValue::from_str(&format!("Bearer {}", self.api_token)).map_err(|_| {
                CfFailure::Request("the API token holds characters a header cannot carry".into())
            })?;
        auth.set_sensitive(true);
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api_url))
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .map_err(|e| CfFailure::Request(format!("bad API URL {:?}: {e}", self.api_url)))?;
        let resp = http
            .fetch(req)
            .await
            .map_err(|e: FetchError| CfFailure::Request(e.to_string()))?;
        let status = resp.status().as_u16();
        let Ok(v) = serde_json::from_slice::<Value>(resp.body()) else {
            return Err(if resp.status().is_success() {
                CfFailure::Request(format!("HTTP {status} without a JSON body"))
            } else {
                CfFailure::Api {
                    status,
                    errors: vec![(0, "an answer without a JSON body".into())],
                }
            });
        };
        if resp.status().is_success() && v["success"].as_bool() == Some(true) {
            return Ok(v["result"].clone());
        }
        let errors = v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["code"].as_i64().unwrap_or(0),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Err(CfFailure::Api { status, errors })
    }
}

fn result_id(v: &Value) -> Option<String> {
    v["id"].as_str().map(str::to_string)
}

fn cf_zone(v: &Value) -> Option<CfZone> {
    Some(CfZone {
        id: result_id(v)?,
        name_servers: v["name_servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
    })
}

/// Percent-encodes all but the unreserved characters (RFC 3986 §2.3).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === the DNS wire format (RFC 1035 §4, RFC 2136 §2, RFC 8945 §4.2) ===

/// For the `dns_response` fuzz target: decodes `buf` as a DNS response
/// (names, compression pointers, TXT strings, a TSIG record) the way the
/// solvers read an answer from the network; checks that a message that
/// decodes encodes back to one that decodes the same. Never panics.
pub fn fuzz_decode(buf: &[u8]) {
    let Ok(msg) = wire::Message::decode(buf) else {
        return;
    };
    for rr in msg.answer.iter().chain(&msg.authority) {
        if rr.rtype == wire::TYPE_TXT {
            let _ = wire::txt_strings(&rr.rdata);
        }
    }
    // A TSIG record is stripped by `decode`; the rest must survive a
    // round trip through heim's own (uncompressed) encoding.
    let again = wire::Message::decode(&msg.encode());
    if msg.tsig.is_none() {
        assert_eq!(again.as_ref().ok(), Some(&msg), "round trip of {buf:?}");
    }
}

mod wire {
    use std::fmt;

    pub const TYPE_SOA: u16 = 6;
    pub const TYPE_TXT: u16 = 16;
    pub const TYPE_TSIG: u16 = 250;
    pub const CLASS_IN: u16 = 1;
    pub const CLASS_NONE: u16 = 254;
    pub const CLASS_ANY: u16 = 255;
    pub const OPCODE_UPDATE: u16 = 5;
    pub const RCODE_NOERROR: u16 = 0;
    pub const RCODE_NXDOMAIN: u16 = 3;
    pub const TSIG_BADSIG: u16 = 16;
    pub const TSIG_BADKEY: u16 = 17;
    pub const TSIG_BADTIME: u16 = 18;
    const FLAG_QR: u16 = 0x8000;
    const FLAG_RD: u16 = 0x0100;
    /// Longest name on the wire (RFC 1035 §2.3.4).
    const MAX_NAME: usize = 255;

    pub fn rcode(flags: u16) -> u16 {
        flags & 0x000f
    }

    pub fn opcode(flags: u16) -> u16 {
        (flags >> 11) & 0x0f
    }

    pub fn is_response(flags: u16) -> bool {
        flags & FLAG_QR != 0
    }

    pub fn rcode_name(rcode: u16) -> &'static str {
        match rcode {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            _ => "an unknown rcode",
        }
    }

    pub fn tsig_error_name(error: u16) -> &'static str {
        match error {
            TSIG_BADSIG => "BADSIG",
            TSIG_BADKEY => "BADKEY",
            TSIG_BADTIME => "BADTIME",
            22 => "BADTRUNC",
            _ => "(unknown)",
        }
    }

    pub fn put_u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_be_bytes());
    }

    pub fn put_u48(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_be_bytes()[2..]);
    }

    /// A domain name: its labels, ASCII lower-cased (DNS compares names
    /// case-insensitively, and TSIG signs them in lower case).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Name {
        labels: Vec<Vec<u8>>,
    }

    impl Name {
        /// A host name as written in config and ACME orders: letters,
        /// digits, `-` and `_`; a trailing dot is allowed.
        pub fn parse_host(s: &str) -> Result<Name, &'static str> {
            let name = Name::parse_any(s)?;
            let ok = name
                .labels
                .iter()
                .flatten()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if ok {
                Ok(name)
            } else {
                Err("only letters, digits, '-' and '_' may appear in a label")
            }
        }

        /// Any dotted name (TSIG key names may hold other characters).
        pub fn parse_any(s: &str) -> Result<Name, &'static str> {
            let s = s.strip_suffix('.').unwrap_or(s);
            if s.is_empty() {
                return Ok(Name { labels: Vec::new() });
            }
            let name = Name {
                labels: s
                    .split('.')
                    .map(|l| l.as_bytes().to_ascii_lowercase())
                    .collect(),
            };
            name.check()?;
            Ok(name)
        }

        fn check(&self) -> Result<(), &'static str> {
            if self.labels.iter().any(|l| l.is_empty()) {
                return Err("empty label");
            }
            if self.labels.iter().any(|l| l.len() > 63) {
                return Err("a label is longer than 63 bytes");
            }
            if self.wire_len() > MAX_NAME {
                return Err("the name is longer than 255 bytes");
            }
            Ok(())
        }

        /// `label.self`.
        pub fn child(&self, label: &str) -> Result<Name, &'static str> {
            let mut labels = vec![label.as_bytes().to_ascii_lowercase()];
            labels.extend(self.labels.iter().cloned());
            let name = Name { labels };
            name.check()?;
            Ok(name)
        }

        /// The name one label up; `None` for the root.
        pub fn parent(&self) -> Option<Name> {
            (!self.labels.is_empty()).then(|| Name {
                labels: self.labels[1..].to_vec(),
            })
        }

        pub fn label_count(&self) -> usize {
            self.labels.len()
        }

        /// Whether `self` is `zone` or below it.
        pub fn is_within(&self, zone: &Name) -> bool {
            self.labels.ends_with(&zone.labels)
        }

        fn wire_len(&self) -> usize {
            self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
        }

        /// Uncompressed, as every name heim writes.
        pub fn write(&self, out: &mut Vec<u8>) {
            for l in &self.labels {
                out.push(l.len() as u8);
                out.extend_from_slice(l);
            }
            out.push(0);
        }
    }

    /// With a trailing dot; bytes outside printable ASCII (and `.`, `\`) as `\DDD`.
    impl fmt::Display for Name {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.labels.is_empty() {
                return f.write_str(".");
            }
            for l in &self.labels {
                for &b in l {
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        write!(f, "{}", b as char)?;
                    } else {
                        write!(f, "\\{b:03}")?;
                    }
                }
                f.write_str(".")?;
            }
            Ok(())
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Question {
        pub name: Name,
        pub qtype: u16,
        pub qclass: u16,
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Record {
        pub name: Name,
        pub rtype: u16,
        pub class: u16,
        pub ttl: u32,
        /// As on the wire (names inside may be compression pointers into
        /// the message: heim reads no name out of rdata but TSIG's).
        pub rdata: Vec<u8>,
    }

    /// A TSIG RR as read from a message.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Tsig {
        /// Offset of the RR in the message: the MAC covers what is before.
        pub start: usize,
        pub key_name: Name,
        pub algorithm: Name,
        pub time_signed: u64,
        pub fudge: u16,
        pub mac: Vec<u8>,
        pub original_id: u16,
        pub error: u16,
        pub other: Vec<u8>,
    }

    /// A message. For an UPDATE (RFC 2136 §2) the sections are the zone,
    /// prerequisite, update and additional sections, in this order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Message {
        pub id: u16,
        pub flags: u16,
        pub question: Vec<Question>,
        pub answer: Vec<Record>,
        pub authority: Vec<Record>,
        pub additional: Vec<Record>,
        /// The TSIG RR, last of the additional section; not in `additional`.
        pub tsig: Option<Tsig>,
    }

    /// Why a message could not be read.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    pub enum WireError {
        #[error("the message ends early")]
        Truncated,
        #[error("a compression pointer does not point back before the labels it continues")]
        BadPointer,
        #[error("an unknown label type")]
        LabelType,
        #[error("a name longer than 255 bytes")]
        LongName,
        #[error("a TSIG record that is not the last one")]
        TsigNotLast,
        #[error("a TSIG record whose length does not match its fields")]
        TsigLength,
        #[error("not a response")]
        NotResponse,
    }

    impl Message {
        /// A query for `name`/`qtype` in class IN.
        pub fn query(id: u16, name: Name, qtype: u16, recursion_desired: bool) -> Message {
            Message {
                id,
                flags: if recursion_desired { FLAG_RD } else { 0 },
                question: vec![Question {
                    name,
                    qtype,
                    qclass: CLASS_IN,
                }],
                answer: Vec::new(),
                authority: Vec::new(),
                additional: Vec::new(),
                tsig: None,
            }
        }

        /// The message on the wire, without name compression and without
        /// `tsig` (signing appends it).
        pub fn encode(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(512);
            put_u16(&mut out, self.id);
            put_u16(&mut out, self.flags);
            for n in [
                self.question.len(),
                self.answer.len(),
                self.authority.len(),
                self.additional.len(),
            ] {
                put_u16(&mut out, n as u16);
            }
            for q in &self.question {
                q.name.write(&mut out);
                put_u16(&mut out, q.qtype);
                put_u16(&mut out, q.qclass);
            }
            for rr in self
                .answer
                .iter()
                .chain(&self.authority)
                .chain(&self.additional)
            {
                rr.name.write(&mut out);
                put_u16(&mut out, rr.rtype);
                put_u16(&mut out, rr.class);
                put_u32(&mut out, rr.ttl);
                put_u16(&mut out, rr.rdata.len() as u16);
                out.extend_from_slice(&rr.rdata);
            }
            out
        }

        /// Reads a response (compressed names welcome).
        pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
            let mut r = Reader { buf, pos: 0 };
            let id = r.u16()?;
            let flags = r.u16()?;
            if !is_response(flags) {
                return Err(WireError::NotResponse);
            }
            let counts = [r.u16()?, r.u16()?, r.u16()?, r.u16()?];
            // No allocation beyond what the message can hold.
            let cap = |n: u16| usize::from(n).min(buf.len() / 5);
            let mut question = Vec::with_capacity(cap(counts[0]));
            for _ in 0..counts[0] {
                question.push(Question {
                    name: r.name()?,
                    qtype: r.u16()?,
                    qclass: r.u16()?,
                });
            }
            let mut sections = [Vec::new(), Vec::new(), Vec::new()];
            let mut tsig = None;
            for (i, section) in sections.iter_mut().enumerate() {
                let n = counts[i + 1];
                section.reserve(cap(n));
                for k in 0..n {
                    let start = r.pos;
                    let rr = r.record()?;
                    if rr.rtype == TYPE_TSIG {
                        if i != 2 || k + 1 != n {
                            return Err(WireError::TsigNotLast);
                        }
                        tsig = Some(Tsig::read(buf, start, r.pos - rr.rdata.len(), &rr)?);
                    } else {
                        section.push(rr);
                    }
                }
            }
            let [answer, authority, additional] = sections;
            Ok(Message {
                id,
                flags,
                question,
                answer,
                authority,
                additional,
                tsig,
            })
        }
    }

    impl Tsig {
        fn read(buf: &[u8], start: usize, rdata_at: usize, rr: &Record) -> Result<Tsig, WireError> {
            let mut r = Reader { buf, pos: rdata_at };
            let algorithm = r.name()?;
            let time_signed = r.u48()?;
            let fudge = r.u16()?;
            let mac_len = r.u16()?;
            let mac = r.bytes(usize::from(mac_len))?.to_vec();
            let original_id = r.u16()?;
            let error = r.u16()?;
            let other_len = r.u16()?;
            let other = r.bytes(usize::from(other_len))?.to_vec();
            if r.pos != rdata_at + rr.rdata.len() {
                return Err(WireError::TsigLength);
            }
            Ok(Tsig {
                start,
                key_name: rr.name.clone(),
                algorithm,
                time_signed,
                fudge,
                mac,
                original_id,
                error,
                other,
            })
        }
    }

    /// The character-strings of TXT rdata; `None` if they overrun it.
    pub fn txt_strings(rdata: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut rest = rdata;
        while let Some((&len, tail)) = rest.split_first() {
            let s = tail.get(..usize::from(len))?;
            out.push(s.to_vec());
            rest = &tail[usize::from(len)..];
        }
        Some(out)
    }

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
            let b = self
                .buf
                .get(self.pos..self.pos + n)
                .ok_or(WireError::Truncated)?;
            self.pos += n;
            Ok(b)
        }

        fn u16(&mut self) -> Result<u16, WireError> {
            let b = self.bytes(2)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        }

        fn u32(&mut self) -> Result<u32, WireError> {
            let b = self.bytes(4)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }

        fn u48(&mut self) -> Result<u64, WireError> {
            let b = self.bytes(6)?;
            Ok(b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
        }

        fn record(&mut self) -> Result<Record, WireError> {
            let name = self.name()?;
            let rtype = self.u16()?;
            let class = self.u16()?;
            let ttl = self.u32()?;
            let len = self.u16()?;
            let rdata = self.bytes(usize::from(len))?.to_vec();
            Ok(Record {
                name,
                rtype,
                class,
                ttl,
                rdata,
            })
        }

        /// A name, following compression pointers. Every pointer must point
        /// before the start of the run of labels it ends, so each jump goes
        /// strictly backwards and no loop can form (RFC 1035 §4.1.4: a
        /// pointer names a prior occurrence).
        fn name(&mut self) -> Result<Name, WireError> {
            let mut labels = Vec::new();
            let mut len = 1;
            let mut pos = self.pos;
            let mut run_start = self.pos;
            let mut resume = None;
            loop {
                let b = *self.buf.get(pos).ok_or(WireError::Truncated)?;
                match b & 0xc0 {
                    0x00 if b == 0 => {
                        pos += 1;
                        break;
                    }
                    0x00 => {
                        let n = usize::from(b);
                        let label = self
                            .buf
                            .get(pos + 1..pos + 1 + n)
                            .ok_or(WireError::Truncated)?;
                        len += n + 1;
                        if len > MAX_NAME {
                            return Err(WireError::LongName);
                        }
                        labels.push(label.to_ascii_lowercase());
                        pos += n + 1;
                    }
                    0xc0 => {
                        let lo = *self.buf.get(pos + 1).ok_or(WireError::Truncated)?;
                        let target = usize::from(b & 0x3f) << 8 | usize::from(lo);
                        if target >= run_start {
                            return Err(WireError::BadPointer);
                        }
                        resume.get_or_insert(pos + 2);
                        pos = target;
                        run_start = target;
                    }
                    _ => return Err(WireError::LabelType),
                }
            }
            self.pos = resume.unwrap_or(pos);
            Ok(Name { labels })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{Message, Name, Question, Record, WireError};
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse_any(s).unwrap()
    }

    fn response(mut m: Message) -> Message {
        m.flags |= 0x8000;
        m
    }

    #[test]
    fn wire_roundtrip() {
        let m = response(Message {
            id: 0xbeef,
            flags: wire::OPCODE_UPDATE << 11 | 0x0400,
            question: vec![Question {
                name: name("example.test"),
                qtype: wire::TYPE_SOA,
                qclass: wire::CLASS_IN,
            }],
            answer: vec![txt_rr(&name("_acme-challenge.a.example.test"), 1, 60, "v1")],
            authority: vec![
                txt_rr(
                    &name("_acme-challenge.a.example.test"),
                    wire::CLASS_NONE,
                    0,
                    "v2",
                ),
                txt_rr(&name("b.example.test"), 1, 60, &"x".repeat(300)),
            ],
            additional: vec![Record {
                name: Name::parse_any(".").unwrap(),
                rtype: 41,
                class: 1232,
                ttl: 0,
                rdata: Vec::new(),
            }],
            tsig: None,
        });
        let bytes = m.encode();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
        // Header and the first question by hand.
        assert_eq!(
            &bytes[..12],
            &[0xbe, 0xef, 0xac, 0x00, 0, 1, 0, 1, 0, 2, 0, 1]
        );
        assert_eq!(&bytes[12..26], b"\x07example\x04test\x00");
        // The long value is split into character-strings of 255 and 45.
        let long = &m.authority[1].rdata;
        assert_eq!((long[0], long[256]), (255, 45));
        assert_eq!(
            wire::txt_strings(long).unwrap().concat(),
            "x".repeat(300).as_bytes()
        );
    }

    /// A response header with the given counts, then `body`.
    fn raw(counts: [u16; 4], body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x12, 0x34, 0x80, 0x00];
        for c in counts {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn compressed_names_are_followed() {
        // Question example.test (offset 12), an answer whose owner is
        // `_acme-challenge` + pointer to it, a second one pointing at the
        // first answer's name: chains of pointers, each one further back.
        let mut body = b"\x07example\x04test\x00\x00\x10\x00\x01".to_vec();
        let first = 12 + body.len();
        body.extend_from_slice(b"\x0f_acme-challenge\xc0\x0c");
        body.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 3, 2, b'h', b'i']);
        body.extend_from_slice(&[0xc0, first as u8]);
        body.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 60, 0, 1, 0]);
        let m = Message::decode(&raw([1, 2, 0, 0], &body)).unwrap();
        assert_eq!(m.question[0].name, name("example.test"));
        assert_eq!(m.answer[0].name, name("_acme-challenge.example.test"));
        assert_eq!(m.answer[1].name, name("_acme-challenge.example.test"));
        assert_eq!(m.answer[0].rdata, b"\x02hi");
        assert_eq!(m.answer[1].ttl, 60);
    }

    #[test]
    fn bad_names_are_rejected() {
        let q = |name: &[u8]| {
            let mut body = name.to_vec();
            body.extend_from_slice(&[0, 6, 0, 1]);
            Message::decode(&raw([1, 0, 0, 0], &body))
        };
        // A pointer to itself.
        assert_eq!(q(&[0xc0, 12]), Err(WireError::BadPointer));
        // A pointer forwards.
        assert_eq!(q(&[0xc0, 40]), Err(WireError::BadPointer));
        // A loop: label at 12, pointer at 14 back to 12 (before the pointer,
        // but not before the run of labels it continues).
        assert_eq!(q(&[1, b'a', 0xc0, 12]), Err(WireError::BadPointer));
        // A second name whose pointer leads back into its own labels.
        let mut body = vec![1, b'a', 0, 0, 6, 0, 1];
        body.extend_from_slice(&[1, b'b', 0xc0, 19, 0, 6, 0, 1]);
        assert_eq!(
            Message::decode(&raw([2, 0, 0, 0], &body)),
            Err(WireError::BadPointer)
        );
        // Cut short, an unknown label type, a name over 255 bytes.
        assert_eq!(q(&[5, b'a']), Err(WireError::Truncated));
        assert_eq!(q(&[0x40, 0]), Err(WireError::LabelType));
        let long: Vec<u8> = (0..5)
            .flat_map(|_| {
                let mut l = vec![63];
                l.extend([b'x'; 63]);
                l
            })
            .chain([0])
            .collect();
        assert_eq!(q(&long), Err(WireError::LongName));
        // A query is not an answer.
        let mut query = raw([0, 0, 0, 0], &[]);
        query[2] = 0;
        assert_eq!(Message::decode(&query), Err(WireError::NotResponse));
    }

    #[test]
    fn tsig_request_mac_is_hmac_of_message_and_variables() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = TsigKey::new("Heim.", TsigAlgorithm::HmacSha256, secret).unwrap();
        let msg = Message::query(0x0102, name("example.test"), wire::TYPE_SOA, false);
        let unsigned = msg.encode();
        let mut signed = unsigned.clone();
        let time = 0x0000_6543_2100u64;
        let mac = key.sign(&mut signed, time);

        // Independently: the message, then the variables written by hand.
        let mut data = unsigned.clone();
        data.extend_from_slice(b"\x04heim\x00"); // key name, lower case
        data.extend_from_slice(&[0, 255, 0, 0, 0, 0]); // class ANY, TTL 0
        data.extend_from_slice(b"\x0bhmac-sha256\x00");
        data.extend_from_slice(&[0x00, 0x00, 0x65, 0x43, 0x21, 0x00]); // time signed
        data.extend_from_slice(&[0x01, 0x2c, 0, 0, 0, 0]); // fudge 300, error, other len
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &data);
        assert_eq!(mac, expected.as_ref());

        // The RR appended, ARCOUNT 1, everything else untouched.
        assert_eq!(&signed[..10], &unsigned[..10]);
        assert_eq!(&signed[10..12], &[0, 1]);
        assert_eq!(&signed[12..unsigned.len()], &unsigned[12..]);
        let mut rr = b"\x04heim\x00\x00\xfa\x00\xff\x00\x00\x00\x00".to_vec();
        let mut rdata = b"\x0bhmac-sha256\x00\x00\x00\x65\x43\x21\x00\x01\x2c\x00\x20".to_vec();
        rdata.extend_from_slice(expected.as_ref());
        rdata.extend_from_slice(&[0x01, 0x02, 0, 0, 0, 0]);
        rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        rr.extend_from_slice(&rdata);
        assert_eq!(&signed[unsigned.len()..], &rr[..]);
    }

    /// An answer signed as RFC 8945 §5.3.1 says, written without `TsigKey`.
    fn signed_answer(secret: &[u8], request_mac: &[u8], time: u64) -> Vec<u8> {
        let m = response(Message::query(
            0x7777,
            name("example.test"),
            wire::TYPE_SOA,
            false,
        ));
        let unsigned = m.encode();
        let mut data = (request_mac.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(request_mac);
        data.extend_from_slice(&unsigned);
        data.extend_from_slice(b"\x04heim\x00\x00\xff\x00\x00\x00\x00\x0bhmac-sha512\x00");
        data.extend_from_slice(&time.to_be_bytes()[2..]);
        data.extend_from_slice(&[0x01, 0x2c, 0, 0, 0, 0]);
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, secret), &data);
        let mut out = unsigned;
        out[11] = 1;
        out.extend_from_slice(b"\x04heim\x00\x00\xfa\x00\xff\x00\x00\x00\x00");
        let mut rdata = b"\x0bhmac-sha512\x00".to_vec();
        rdata.extend_from_slice(&time.to_be_bytes()[2..]);
        rdata.extend_from_slice(&[0x01, 0x2c, 0x00, 0x40]);
        rdata.extend_from_slice(mac.as_ref());
        rdata.extend_from_slice(&[0x77, 0x77, 0, 0, 0, 0]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        out
    }

    #[test]
    fn tsig_answer_is_verified() {
        let secret = [9u8; 64];
        let key = TsigKey::new("heim", TsigAlgorithm::HmacSha512, &secret).unwrap();
        let request_mac = [1u8; 64];
        let now = 1_700_000_000;
        let answer = signed_answer(&secret, &request_mac, now);
        let m = Message::decode(&answer).unwrap();
        let t = m.tsig.as_ref().unwrap();
        assert_eq!(t.start, 30);
        assert_eq!(key.verify(&answer, t, &request_mac, now + 10), Ok(()));
        // Another request's MAC, an altered byte, another secret, a clock too far off.
        assert!(key.verify(&answer, t, &[2u8; 64], now).is_err());
        let mut altered = answer.clone();
        altered[3] ^= 0x04;
        let m2 = Message::decode(&altered).unwrap();
        assert!(key
            .verify(&altered, m2.tsig.as_ref().unwrap(), &request_mac, now)
            .unwrap_err()
            .contains("does not verify"));
        let other = TsigKey::new("heim", TsigAlgorithm::HmacSha512, &[8u8; 64]).unwrap();
        assert!(other.verify(&answer, t, &request_mac, now).is_err());
        assert!(key
            .verify(&answer, t, &request_mac, now + 301)
            .unwrap_err()
            .contains("BADTIME"));
        let sha256 = TsigKey::new("heim", TsigAlgorithm::HmacSha256, &secret).unwrap();
        assert!(sha256.verify(&answer, t, &request_mac, now).is_err());
    }

    #[test]
    fn tsig_record_must_be_last() {
        let mut answer = signed_answer(&[1; 32], &[], 5);
        // Claim one more additional record after the TSIG one.
        answer[11] = 2;
        answer.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Message::decode(&answer), Err(WireError::TsigNotLast));
    }

    #[test]
    fn tsig_secret_files() {
        // As `tsig-keygen -a hmac-sha256 heim.` writes it.
        let bind = "key \"heim.\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LWtleS1ieXRlcw==\";\n};\n";
        let plain = "c2VjcmV0LWtleS1ieXRlcw==\n";
        let cases: &[(&str, Result<&[u8], &str>)] = &[
            (bind, Ok(b"secret-key-bytes")),
            (plain, Ok(b"secret-key-bytes")),
            ("  c2VjcmV0LWtleS1ieXRlcw  \n\n", Ok(b"secret-key-bytes")),
            (
                "# made by hand\nkey heim { // the key\n algorithm hmac-sha512; /* \"no\" */ secret \"AAEC\"; };",
                Ok(&[0, 1, 2]),
            ),
            ("", Err("empty")),
            ("not base64!\n", Err("not valid base64")),
            ("AAEC\nAAEC\n", Err("one line")),
            ("key \"x\" { algorithm hmac-sha256; };", Err("without a `secret")),
            (
                "key a { secret \"AAEC\"; }; key b { secret \"AAEC\"; };",
                Err("2 keys"),
            ),
        ];
        for (text, want) in cases {
            match (parse_tsig_secret(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text:?}: {got}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
        let dir = std::env::temp_dir().join(format!("heim-tsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heim.key");
        std::fs::write(&path, bind).unwrap();
        assert_eq!(read_tsig_secret(&path).unwrap(), b"secret-key-bytes");
        let missing = read_tsig_secret(&dir.join("absent")).unwrap_err();
        assert!(
            missing.contains("cannot read") && missing.contains("absent"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn algorithms_parse() {
        for (s, want) in [
            ("hmac-sha256", Some(TsigAlgorithm::HmacSha256)),
            ("HMAC-SHA512.", Some(TsigAlgorithm::HmacSha512)),
            ("hmac-md5", None),
            ("", None),
        ] {
            assert_eq!(TsigAlgorithm::parse(s), want, "{s}");
        }
    }

    #[test]
    fn challenge_names() {
        for (domain, want) in [
            ("example.com", Some("_acme-challenge.example.com.")),
            (
                "*.Wild.Example.COM.",
                Some("_acme-challenge.wild.example.com."),
            ),
            ("a..b", None),
            ("", None),
            ("bad name.com", None),
            (&format!("{}.com", "x".repeat(64)), None),
        ] {
            let got = challenge_name(domain).ok().map(|(_, n)| n.to_string());
            assert_eq!(got.as_deref(), want, "{domain}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let providers = [
            DnsProvider::Rfc2136 {
                server: "127.0.0.1:53".parse().unwrap(),
                key_name: "heim.".into(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: b"sekrit-bytes".to_vec(),
            },
            DnsProvider::Cloudflare {
                api_token: "tok-sekrit".into(),
                zone_id: None,
                api_url: "https://api.cloudflare.com/client/v4".into(),
            },
        ];
        for p in providers {
            let s = format!("{p:?}");
            assert!(!s.contains("sekrit") && !s.contains("115, 101"), "{s}");
        }
    }

    #[test]
    fn cloudflare_errors_carry_its_messages() {
        let e = CfFailure::Api {
            status: 400,
            errors: vec![
                (81057, "Record already exists.".into()),
                (1004, "DNS Validation Error".into()),
            ],
        };
        assert!(e.has_code(CF_RECORD_EXISTS));
        assert_eq!(
            e.in_step("creating TXT x").to_string(),
            "Cloudflare API, creating TXT x: HTTP 400: Record already exists. (code 81057); DNS Validation Error (code 1004)"
        );
        assert_eq!(encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }

    #[tokio::test]
    async fn name_servers_resolve_to_one_address_each() {
        let got = resolve_name_servers("x", &["localhost".into(), "127.0.0.2".into()])
            .await
            .unwrap();
        assert_eq!(
            got,
            [
                "127.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:53".parse().unwrap()
            ]
        );
        let none = resolve_name_servers("_acme-challenge.x", &[])
            .await
            .unwrap_err();
        assert!(none.to_string().contains("no name servers"), "{none}");
    }

    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let spec = DnsSpec {
            provider: DnsProvider::Cloudflare {
                api_token: "t".into(),
                zone_id: None,
                api_url: "http://127.0.0.1:1".into(),
            },
            check_servers: Vec::new(),
            propagation_timeout: Duration::from_secs(1),
        };
        let solver = DnsSolver::new(spec, HttpClient::default());
        let present = solver.present("example.test", "v");
        send(&present);
        let record = TxtRecord {
            fqdn: "x".into(),
            name: name("x"),
            value: "v".into(),
            at: RecordAt::Rfc2136 { zone: name("x") },
        };
        send(&solver.wait_visible(&record));
        send(&solver.cleanup(&record));
    }
}
