//! A stand-in for the Cloudflare API v4 (which cannot be reached from
//! here), following its documented shapes for what a DNS-01 client uses:
//! `GET /zones?name=&status=`, `GET /zones/{id}`,
//! `GET|POST /zones/{id}/dns_records`, `DELETE /zones/{id}/dns_records/{rid}`,
//! all under `/client/v4` with `Authorization: Bearer`. Answers are
//! `{"success","errors":[{"code","message"}],"messages","result"}`.
//!
//! Records live in memory for the test to read. Cloudflare would publish
//! them on its name servers; here, given the management address of a
//! `pebble-challtestsrv` ([`ChallTestSrv`]), the double mirrors its TXT
//! records there, so a DNS-01 check (heim's, or Pebble's) sees them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const PREFIX: &str = "/client/v4";

/// A zone the double holds (always `active`).
#[derive(Clone, Debug)]
pub struct Zone {
    pub id: String,
    pub name: String,
    pub name_servers: Vec<String>,
}

impl Zone {
    pub fn new(id: &str, name: &str, name_servers: &[&str]) -> Zone {
        Zone {
            id: id.into(),
            name: name.into(),
            name_servers: name_servers.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A DNS record the double holds.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsRecord {
    pub id: String,
    pub zone_id: String,
    pub rtype: String,
    pub name: String,
    pub content: String,
    pub ttl: u64,
}

/// A request the double served.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Below `/client/v4`, with the query: `/zones?name=example.test&status=active`.
    pub path: String,
    /// The JSON body, `Null` if there was none.
    pub body: Value,
    /// Whether it carried the right token.
    pub authorized: bool,
}

impl Seen {
    /// `METHOD path`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct State {
    token: String,
    zones: Vec<Zone>,
    records: Vec<DnsRecord>,
    seen: Vec<Seen>,
    next_id: u64,
}

/// The running double; stops when dropped.
pub struct CloudflareDouble {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for CloudflareDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudflareDouble {
    /// Starts the double accepting API token `token`. With `challtestsrv`
    /// (a management address), TXT records are mirrored there.
    pub async fn start(
        token: &str,
        zones: Vec<Zone>,
        challtestsrv: Option<SocketAddr>,
    ) -> CloudflareDouble {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            zones,
            records: Vec::new(),
            seen: Vec::new(),
            next_id: 1,
        }));
        let st = state.clone();
        let (addr, task) = crate::serve_http1(move |req| {
            let st = st.clone();
            async move { answer(req, &st, challtestsrv).await }
        })
        .await;
        CloudflareDouble { addr, state, task }
    }

    /// The `api_url`: `http://ADDR/client/v4`.
    pub fn api_url(&self) -> String {
        format!("http://{}{PREFIX}", self.addr)
    }

    /// The records now held.
    pub fn records(&self) -> Vec<DnsRecord> {
        self.state.lock().unwrap().records.clone()
    }

    /// Requests served so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// `METHOD path` of the requests served so far.
    pub fn seen_lines(&self) -> Vec<String> {
        self.seen().iter().map(Seen::line).collect()
    }

    /// Puts a TXT record as if made earlier (not mirrored); returns its id.
    pub fn insert_txt(&self, zone_id: &str, name: &str, content: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let id = record_id(&mut s);
        s.records.push(DnsRecord {
            id: id.clone(),
            zone_id: zone_id.into(),
            rtype: "TXT".into(),
            name: name.into(),
            content: content.into(),
            ttl: 60,
        });
        id
    }
}

fn record_id(s: &mut State) -> String {
    let n = s.next_id;
    s.next_id += 1;
    // Cloudflare's ids are 32 hex digits.
    format!("{:024x}{n:08x}", 0x0c1d_f00d_u64)
}

fn reply(status: u16, result: Value) -> http::Response<Full<Bytes>> {
    let body = json!({ "success": true, "errors": [], "messages": [], "result": result });
    respond(status, body)
}

/// A failure as Cloudflare shapes it.
fn error(status: u16, code: u64, message: &str) -> http::Response<Full<Bytes>> {
    let body = json!({
        "success": false,
        "errors": [{ "code": code, "message": message }],
        "messages": [],
        "result": null,
    });
    respond(status, body)
}

fn respond(status: u16, body: Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

fn zone_json(z: &Zone) -> Value {
    json!({
        "id": z.id,
        "name": z.name,
        "status": "active",
        "paused": false,
        "type": "full",
        "name_servers": z.name_servers,
    })
}

fn record_json(r: &DnsRecord, zone_name: &str) -> Value {
    json!({
        "id": r.id,
        "zone_id": r.zone_id,
        "zone_name": zone_name,
        "name": r.name,
        "type": r.rtype,
        "content": r.content,
        "ttl": r.ttl,
        "proxiable": false,
        "proxied": false,
    })
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn answer(
    req: http::Request<Incoming>,
    st: &Mutex<State>,
    challtestsrv: Option<SocketAddr>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(path) = parts.uri.path().strip_prefix(PREFIX) else {
        return error(404, 7000, "No route for that URI");
    };
    let path = path.to_string();
    let params = query_params(parts.uri.query());
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let authorized = {
        let mut s = st.lock().unwrap();
        let want = format!("Bearer {}", s.token);
        let authorized = parts
            .headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == want.as_bytes());
        s.seen.push(Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or(String::new(), |p| p.as_str().to_string())
                .trim_start_matches(PREFIX)
                .to_string(),
            body: body.clone(),
            authorized,
        });
        authorized
    };
    if !authorized {
        return error(403, 10000, "Authentication error");
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = parts.method.as_str();
    // Mirroring to challtestsrv happens after the lock is let go.
    let mirror: Option<(String, Vec<String>)>;
    let response = {
        let mut s = st.lock().unwrap();
        let zone_of = |s: &State, id: &str| s.zones.iter().find(|z| z.id == id).cloned();
        match (method, segments.as_slice()) {
            ("GET", ["zones"]) => {
                let name = param("name");
                let status = param("status");
                let found: Vec<Value> = s
                    .zones
                    .iter()
                    .filter(|z| name.as_ref().is_none_or(|n| z.name.eq_ignore_ascii_case(n)))
                    .filter(|_| status.as_deref().is_none_or(|st| st == "active"))
                    .map(zone_json)
                    .collect();
                let count = found.len();
                let mut v =
                    json!({ "success": true, "errors": [], "messages": [], "result": found });
                v["result_info"] =
                    json!({ "page": 1, "per_page": 20, "count": count, "total_count": count });
                return respond(200, v);
            }
            ("GET", ["zones", id]) => {
                return match zone_of(&s, id) {
                    Some(z) => reply(200, zone_json(&z)),
                    None => invalid_zone(id),
                };
            }
            ("GET", ["zones", id, "dns_records"]) => {
                let Some(z) = zone_of(&s, id) else {
                    return invalid_zone(id);
                };
                let (t, n, c) = (param("type"), param("name"), param("content"));
                let found: Vec<Value> = s
                    .records
                    .iter()
                    .filter(|r| r.zone_id == z.id)
                    .filter(|r| t.as_ref().is_none_or(|t| &r.rtype == t))
                    .filter(|r| n.as_ref().is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
                    .filter(|r| c.as_ref().is_none_or(|c| &r.content == c))
                    .map(|r| record_json(r, &z.name))
                    .collect();
                return reply(200, Value::Array(found));
            }
            ("POST", ["zones", id, "dns_records"]) => {
                let Some(z) = zone_of(&s, id) else {
                    return invalid_zone(id);
                };
                let (Some(rtype), Some(name), Some(content)) = (
                    body["type"].as_str(),
                    body["name"].as_str(),
                    body["content"].as_str(),
                ) else {
                    return error(400, 1004, "DNS Validation Error");
                };
                let name = name.to_ascii_lowercase();
                let within = name == z.name || name.ends_with(&format!(".{}", z.name));
                if !within {
                    return error(400, 1004, "DNS Validation Error");
                }
                let ttl = body["ttl"].as_u64().unwrap_or(1);
                if ttl != 1 && !(60..=86400).contains(&ttl) {
                    return error(
                        400,
                        9021,
                        "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
                    );
                }
                let same = |r: &&DnsRecord| {
                    r.zone_id == z.id && r.rtype == rtype && r.name == name && r.content == content
                };
                if s.records.iter().any(|r| same(&r)) {
                    return error(400, 81057, "Record already exists.");
                }
                let record = DnsRecord {
                    id: record_id(&mut s),
                    zone_id: z.id.clone(),
                    rtype: rtype.to_string(),
                    name: name.clone(),
                    content: content.to_string(),
                    ttl,
                };
                s.records.push(record.clone());
                mirror = (rtype == "TXT").then(|| (name.clone(), txt_values(&s, &name)));
                reply(200, record_json(&record, &z.name))
            }
            ("DELETE", ["zones", id, "dns_records", rid]) => {
                if zone_of(&s, id).is_none() {
                    return invalid_zone(id);
                }
                let Some(i) = s
                    .records
                    .iter()
                    .position(|r| r.zone_id == *id && r.id == *rid)
                else {
                    return error(404, 81044, "Record does not exist.");
                };
                let gone = s.records.remove(i);
                mirror =
                    (gone.rtype == "TXT").then(|| (gone.name.clone(), txt_values(&s, &gone.name)));
                reply(200, json!({ "id": gone.id }))
            }
            _ => return error(404, 7000, "No route for that URI"),
        }
    };
    if let (Some(mgmt), Some((name, values))) = (challtestsrv, mirror) {
        if let Err(e) = mirror_txt(mgmt, &name, &values).await {
            return error(500, 0, &format!("test double: challtestsrv: {e:#}"));
        }
    }
    response
}

fn invalid_zone(id: &str) -> http::Response<Full<Bytes>> {
    error(
        400,
        7003,
        &format!("Could not route to /zones/{id}, perhaps your object identifier is invalid?"),
    )
}

fn txt_values(s: &State, name: &str) -> Vec<String> {
    s.records
        .iter()
        .filter(|r| r.rtype == "TXT" && r.name == name)
        .map(|r| r.content.clone())
        .collect()
}

/// Makes challtestsrv's TXT values at `name` exactly `values` (it can only
/// add one or clear all).
async fn mirror_txt(mgmt: SocketAddr, name: &str, values: &[String]) -> anyhow::Result<()> {
    let host = format!("{name}.");
    post_json(mgmt, "/clear-txt", &json!({ "host": host })).await?;
    for v in values {
        post_json(mgmt, "/set-txt", &json!({ "host": host, "value": v })).await?;
    }
    Ok(())
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("POST {path}: {}", resp.status());
    }
    Ok(())
}

/// A running `pebble-challtestsrv` with only its DNS server (every A query
/// answered 127.0.0.1, TXT records as set) and its management API; killed
/// on drop.
pub struct ChallTestSrv {
    /// DNS, UDP and TCP.
    pub dns: SocketAddr,
    /// The management API (`/set-txt`, `/clear-txt`, ...).
    pub management: SocketAddr,
    child: Child,
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChallTestSrv {
    /// Starts it on free ports and waits until both servers answer.
    pub fn start() -> anyhow::Result<ChallTestSrv> {
        let binary = "/usr/bin/pebble-challtestsrv";
        if !std::path::Path::new(binary).exists() {
            bail!("{binary} is missing: apt-get install pebble-challtestsrv");
        }
        let dns = SocketAddr::from(([127, 0, 0, 1], crate::named::free_port()?));
        let management = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(binary)
            .args(["-dns01", &dns.to_string()])
            .args(["-management", &management.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            // Every name is 127.0.0.1, and only that: Pebble validates
            // HTTP-01 and TLS-ALPN-01 against heim on IPv4 loopback.
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut srv = ChallTestSrv {
            dns,
            management,
            child,
        };
        let mut exited = None;
        let up = crate::poll_until(Duration::from_secs(20), || {
            exited = srv.child.try_wait().ok().flatten();
            exited.is_some()
                || (std::net::TcpStream::connect(management).is_ok()
                    && crate::named::query_answers(dns, "ready.test", 1).unwrap_or(false))
        });
        if let Some(status) = exited {
            bail!("pebble-challtestsrv exited ({status})");
        }
        if !up {
            bail!("pebble-challtestsrv did not answer within 20 s");
        }
        Ok(srv)
    }
}
