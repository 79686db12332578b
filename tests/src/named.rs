//! BIND 9 (`named`) as a real authoritative DNS server for the tests: one
//! zone on 127.0.0.1 at a free port, recursion off, dynamic updates
//! (RFC 2136) allowed for TXT records when signed with the TSIG key
//! `heim.` (hmac-sha256, a fresh secret per instance). Used by the DNS-01
//! solver tests and, with Pebble's `-dnsserver` pointed at it, by ACME
//! issuance tests.
//!
//! Also here: [`dig`], the independent look at what a DNS server answers
//! (bind9-dnsutils), and a tiny blocking query used to wait for readiness.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A running `named`, killed on drop.
pub struct Named {
    /// UDP and TCP, 127.0.0.1.
    pub addr: SocketAddr,
    /// Config, zone file, journal, log (`named.log`).
    pub dir: PathBuf,
    /// The zone it serves, e.g. `example.test` (no trailing dot).
    pub zone: String,
    /// `heim.`
    pub key_name: String,
    /// The key's secret, base64.
    pub secret_b64: String,
    /// The key as BIND writes it (`key "heim." { algorithm …; secret "…"; };`).
    pub key_file: PathBuf,
    child: Child,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `named` binary: `HEIM_NAMED_BIN` or Debian's path.
fn named_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("HEIM_NAMED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/named"));
    if !path.exists() {
        bail!(
            "BIND 9 is not installed ({} is missing): apt-get install bind9",
            path.display()
        );
    }
    Ok(path)
}

/// A port free for both UDP and TCP on 127.0.0.1 (named cannot report a
/// port 0 it was given, so one is picked and released).
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP")
}

impl Named {
    /// `named` serving `example.test` (SOA, NS `ns.example.test`, `ns` A 127.0.0.1).
    pub fn start() -> anyhow::Result<Named> {
        Named::start_zone("example.test", "")
    }

    /// `named` serving `zone`, with `records` (zone-file lines, names
    /// relative to the zone or absolute) besides the SOA, NS and `ns` A
    /// 127.0.0.1. Waits until it answers the zone's SOA.
    pub fn start_zone(zone: &str, records: &str) -> anyhow::Result<Named> {
        let binary = named_binary()?;
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let dir = crate::scratch("named");
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| anyhow::anyhow!("random secret"))?;
        let secret_b64 = STANDARD.encode(secret);
        let key_name = "heim.".to_string();
        let key_file = dir.join("heim.key");
        std::fs::write(&key_file, bind_key(&key_name, "hmac-sha256", &secret_b64))?;
        std::fs::write(
            dir.join("zone.db"),
            format!(
                "$ORIGIN {zone}.\n$TTL 60\n\
                 @ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n\
                 @ IN NS ns.{zone}.\n\
                 ns IN A 127.0.0.1\n\
                 {records}\n"
            ),
        )?;
        // A port picked and released can be taken meanwhile: try again then.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.join("named.conf");
            std::fs::write(&conf, named_conf(&dir, port, &zone, &key_file))?;
            let log = std::fs::File::create(dir.join("named.log"))?;
            // -g: foreground, log to stderr, no daemon; -4: IPv4 only;
            // -n 1: one worker (2 cores are shared with the build).
            // As the current user: the port is not privileged and every
            // file is in `dir`.
            let child = Command::new(&binary)
                .args(["-g", "-4", "-n", "1", "-c"])
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawn {}", binary.display()))?;
            let mut named = Named {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.clone(),
                zone: zone.clone(),
                key_name: key_name.clone(),
                secret_b64: secret_b64.clone(),
                key_file: key_file.clone(),
                child,
            };
            match named.wait_ready() {
                Ok(()) => return Ok(named),
                Err(e) => last = format!("{e:#}"),
            }
        }
        bail!("{last}")
    }

    /// Polls the zone's SOA until named answers it (bounded), failing early
    /// if named exits.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut exited = None;
        let answered = crate::poll_until(Duration::from_secs(20), || {
            exited = self.child.try_wait().ok().flatten();
            exited.is_some() || query_answers(self.addr, &self.zone, 6).unwrap_or(false)
        });
        if let Some(status) = exited {
            bail!("named exited ({status}); its log:\n{}", self.log_text());
        }
        if !answered {
            bail!(
                "named did not answer the SOA of {} within 20 s; its log:\n{}",
                self.zone,
                self.log_text()
            );
        }
        Ok(())
    }

    /// What named logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    /// `dig +short` at this server.
    pub fn dig(&self, name: &str, rtype: &str) -> anyhow::Result<Vec<String>> {
        dig(self.addr, name, rtype)
    }

    /// The zone's TXT values at `name`, unquoted (one string per record).
    pub fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        txt(self.addr, name)
    }

    /// The zone's SOA serial: it grows with every update applied.
    pub fn serial(&self) -> anyhow::Result<u32> {
        let soa = self.dig(&self.zone, "SOA")?;
        let line = soa.first().context("no SOA")?;
        line.split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("SOA {line:?}"))
    }
}

/// A BIND key statement, as `tsig-keygen` writes it.
pub fn bind_key(name: &str, algorithm: &str, secret_b64: &str) -> String {
    format!("key \"{name}\" {{\n\talgorithm {algorithm};\n\tsecret \"{secret_b64}\";\n}};\n")
}

fn named_conf(dir: &Path, port: u16, zone: &str, key_file: &Path) -> String {
    let d = dir.display();
    format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
// No rndc channel: instances side by side would fight over port 953.
controls {{ }};
include "{key}";
zone "{zone}" {{
    type primary;
    file "{d}/zone.db";
    // What a careful operator grants an ACME client: TXT records only.
    update-policy {{ grant heim. zonesub TXT; }};
}};
"#,
        key = key_file.display(),
    )
}

/// `dig @server +norecurse +short name rtype`, one line per record.
pub fn dig(server: SocketAddr, name: &str, rtype: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+norecurse", "+short", "+time=2", "+tries=2", name, rtype])
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("dig is not installed: apt-get install bind9-dnsutils")
        }
        r => r.context("run dig")?,
    };
    if !out.status.success() {
        bail!(
            "dig {name} {rtype} at {server}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

/// The TXT values dig sees at `name`, unquoted (strings of a record joined).
pub fn txt(server: SocketAddr, name: &str) -> anyhow::Result<Vec<String>> {
    let mut values: Vec<String> = dig(server, name, "TXT")?
        .iter()
        .map(|l| l.split('"').skip(1).step_by(2).collect::<String>())
        .collect();
    values.sort();
    Ok(values)
}

/// Whether `server` answers `name`/`qtype` (class IN) with NOERROR and at
/// least one answer record. Written here by hand, apart from heim's code.
pub fn query_answers(server: SocketAddr, name: &str, qtype: u16) -> anyhow::Result<bool> {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    socket.connect(server)?;
    socket.send(&q)?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf)?;
    let r = &buf[..n];
    Ok(n >= 12
        && r[..2] == id.to_be_bytes()
        && r[2] & 0x80 != 0
        && r[3] & 0x0f == 0
        && u16::from_be_bytes([r[6], r[7]]) > 0)
}
