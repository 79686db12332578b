//! The processes of a run: the shared backend, the two proxies under test, and what `/proc`
//! says about them.
//!
//! BENCH.md's rules this file implements:
//!
//! * **Same backend, same pool.** One cheap loopback backend for everyone — a separate nginx
//!   answering `return 200 "hello world\n"` — on core 0 next to the load generator. Both proxies
//!   keep the same upstream keep-alive pool (nginx `keepalive 64`, `proxy_http_version 1.1`,
//!   `Connection ""`; heim pools by default).
//! * **Same TLS.** TLS 1.3 (1.2 allowed), X25519, session tickets on, one ECDSA P-256
//!   certificate (RSA-2048 for `handshake-rsa`), h2 and http/1.1 by ALPN, logging off.
//! * **Pin.** The proxy under test runs on core 1 with one worker (`taskset -c 1`); the 2-worker
//!   profile leaves it unpinned.
//! * **Count CPU, not only requests.** Δ(utime+stime) from `/proc/PID/stat` over every process
//!   of the proxy (nginx: master and workers), and peak RSS (`VmHWM` from `/proc/PID/status`; for
//!   nginx the workers', which hold the connections).
//!
//! Every child sits in a [`Proc`] guard whose `Drop` stops it (SIGTERM, a bounded wait, then
//! SIGKILL, and SIGKILL to any nginx worker left behind), so an error anywhere leaves no process
//! behind; each is also started under `setpriv --pdeathsig TERM`, so even a `kill -9` of
//! heim-bench takes them down.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::load::tail;

/// The body the backend answers with (12 bytes).
pub const BODY: &str = "hello world\n";

/// PEM files of one certificate.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a self-signed certificate for `bench.test` and IP 127.0.0.1 into `dir`, as
/// `{stem}.pem` and `{stem}-key.pem`: ECDSA P-256, or RSA-2048 when `rsa`.
pub fn write_cert(dir: &Path, stem: &str, rsa: bool) -> Result<CertFiles> {
    let mut params =
        rcgen::CertificateParams::new(vec!["bench.test".to_string(), "127.0.0.1".to_string()])
            .context("certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench.test");
    let alg = if rsa {
        &rcgen::PKCS_RSA_SHA256
    } else {
        &rcgen::PKCS_ECDSA_P256_SHA256
    };
    let key = rcgen::KeyPair::generate_for(alg).context("generate the key pair")?;
    let cert = params
        .self_signed(&key)
        .context("self-sign the certificate")?;
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    fs::write(&files.cert, cert.pem())
        .with_context(|| format!("write {}", files.cert.display()))?;
    fs::write(&files.key, key.serialize_pem())
        .with_context(|| format!("write {}", files.key.display()))?;
    Ok(files)
}

/// The host name of the bench certificate, and the one heim's ACME layer keeps.
pub const HOST: &str = "bench.test";

/// Where heim gets its certificate from.
#[derive(Clone, Copy, Debug)]
pub enum HeimCerts<'a> {
    /// A `[[certificate]]` with these files (the first one is the default certificate).
    File(&'a CertFiles),
    /// An `[acme]` section whose `storage_dir` already holds the certificate for [`HOST`] (see
    /// [`write_acme_store`]), no `[[certificate]]`, and `default_certificate = HOST`.
    Acme(&'a Path),
}

/// Makes `storage_dir` an ACME store that holds `cert` (chain and key, the same bytes the file
/// scenario serves) for [`HOST`], as heim's `acme::storage` reads a certificate imported by hand:
/// `certificates/<name>/cert.pem` and `key.pem`, no `ca` file. heim loads it at start and serves
/// it from its ACME layer; it would contact the ACME directory only at 2/3 of the certificate's
/// lifetime (rcgen's default validity, 1975–4096, puts that centuries away).
pub fn write_acme_store(storage_dir: &Path, cert: &CertFiles) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = storage_dir.join("certificates").join(HOST);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    fs::copy(&cert.cert, dir.join("cert.pem"))
        .with_context(|| format!("copy {} into the ACME store", cert.cert.display()))?;
    let key = dir.join("key.pem");
    fs::copy(&cert.key, &key)
        .with_context(|| format!("copy {} into the ACME store", cert.key.display()))?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).context("chmod key.pem")?;
    Ok(())
}

/// `n` distinct free loopback ports (all bound at once, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("local_addr")?.port()))
        .collect()
}

/// A nginx version triple from `nginx -v`'s "nginx version: nginx/1.22.1".
pub fn nginx_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split("nginx/").nth(1)?.split_whitespace().next()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// Settings shared by both nginx configs: temp paths inside the prefix, no access log.
fn nginx_common(prefix: &Path, workers: u32) -> String {
    let p = prefix.display();
    format!(
        "worker_processes {workers};\n\
         worker_rlimit_nofile 20000;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n"
    ) + &format!(
        "http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {p}/client_body;\n\
         \x20 proxy_temp_path {p}/proxy;\n\
         \x20 fastcgi_temp_path {p}/fastcgi;\n\
         \x20 uwsgi_temp_path {p}/uwsgi;\n\
         \x20 scgi_temp_path {p}/scgi;\n\
         \x20 # Long-lived client connections for both peers: nginx's default of 1000 requests per\n\
         \x20 # connection would make h2load -D stop streams and wrk reconnect mid-run.\n\
         \x20 keepalive_requests 1000000;\n\
         \x20 keepalive_timeout 300s;\n\
         \x20 # The idle scenario holds connections that have sent no request yet: the same 300 s\n\
         \x20 # as heim's request_head_timeout below (nginx's default is 60 s).\n\
         \x20 client_header_timeout 300s;\n"
    )
}

/// The backend: one nginx worker answering 200 with [`BODY`].
pub fn backend_conf(prefix: &Path, port: u16) -> String {
    nginx_common(prefix, 1)
        + &format!(
            "  server {{\n\
             \x20   listen 127.0.0.1:{port} backlog=4096;\n\
             \x20   location / {{ return 200 \"hello world\\n\"; }}\n\
             \x20   location = /auth {{ add_header X-Auth-Request-User alice; add_header X-Auth-Request-Email alice@example.com; return 202; }}\n\
             \x20 }}\n\
             }}\n"
        )
}

/// nginx as the proxy under test, configured the way an ingress would be.
/// `http2_directive`: nginx ≥ 1.25.1 spells h2 `http2 on;`, older ones `listen … http2`.
#[allow(clippy::too_many_arguments)]
pub fn nginx_proxy_conf(
    prefix: &Path,
    workers: u32,
    plain_port: u16,
    tls_port: u16,
    backend_port: u16,
    cert: &CertFiles,
    http2_directive: bool,
    auth_request: bool,
) -> String {
    // `auth`: every request first asks the backend's `/auth` (an oauth2-proxy stand-in that
    // answers 202 with the user), as ingress-nginx's `auth-url` does.
    let (auth_location, auth_check) = if auth_request {
        (
            "    location = /_heim_auth {\n\
             \x20     internal;\n\
             \x20     proxy_pass http://backend/auth;\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_pass_request_body off;\n\
             \x20     proxy_set_header Content-Length \"\";\n\
             \x20     proxy_set_header X-Original-URI $request_uri;\n\
             \x20     proxy_set_header Cookie $http_cookie;\n\
             \x20   }\n",
            "      auth_request /_heim_auth;\n\
             \x20     auth_request_set $auth_user $upstream_http_x_auth_request_user;\n\
             \x20     auth_request_set $auth_email $upstream_http_x_auth_request_email;\n\
             \x20     proxy_set_header X-Forwarded-User $auth_user;\n\
             \x20     proxy_set_header X-Forwarded-Email $auth_email;\n",
        )
    } else {
        ("", "")
    };
    let (listen_h2, h2_on) = if http2_directive {
        ("", "    http2 on;\n")
    } else {
        (" http2", "")
    };
    nginx_common(prefix, workers)
        + &format!(
            "  upstream backend {{\n\
             \x20   server 127.0.0.1:{backend_port};\n\
             \x20   keepalive 64;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20 }}\n\
             \x20 server {{\n\
             \x20   listen 127.0.0.1:{plain_port} backlog=4096;\n\
             \x20   listen 127.0.0.1:{tls_port} ssl{listen_h2} backlog=4096;\n\
             {h2_on}\
             \x20   server_name bench.test;\n\
             \x20   ssl_certificate {cert};\n\
             \x20   ssl_certificate_key {key};\n\
             \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
             \x20   ssl_ecdh_curve X25519;\n\
             \x20   ssl_session_tickets on;\n\
             \x20   ssl_session_cache shared:SSL:10m;\n\
             {auth_location}\
             \x20   location / {{\n\
             {auth_check}\
             \x20     proxy_pass http://backend;\n\
             \x20     proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n\
             \x20     proxy_set_header Host $host;\n\
             \x20     proxy_set_header X-Real-IP $remote_addr;\n\
             \x20     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20     proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20     proxy_set_header X-Forwarded-Host $host;\n\
             \x20     proxy_set_header X-Forwarded-Port $server_port;\n\
             \x20     proxy_set_header X-Request-ID $request_id;\n\
             \x20   }}\n\
             \x20 }}\n\
             }}\n",
            cert = cert.cert.display(),
            key = cert.key.display(),
        )
}

/// The equivalent heim-proxy config. `request_head_timeout` also bounds keep-alive idleness in
/// heim: 300 s, like nginx's `keepalive_timeout` and `client_header_timeout` above.
pub fn heim_conf(
    workers: u32,
    https_port: u16,
    http_port: u16,
    admin_port: u16,
    backend_port: u16,
    certs: HeimCerts<'_>,
    auth: Option<&AuthFiles>,
) -> String {
    let (default_cert, cert_table) = match certs {
        HeimCerts::File(c) => (
            String::new(),
            format!(
                "[[certificate]]\n\
                 cert_file = {cert:?}\n\
                 key_file = {key:?}\n\
                 \n",
                cert = c.cert.display().to_string(),
                key = c.key.display().to_string(),
            ),
        ),
        // The directory is never contacted (the stored certificate is not due), and is a
        // loopback port nothing listens on, should it ever be.
        HeimCerts::Acme(storage) => (
            format!("default_certificate = \"{HOST}\"\n"),
            format!(
                "[acme]\n\
                 directory = \"https://127.0.0.1:1/directory\"\n\
                 contact = [\"mailto:bench@example.test\"]\n\
                 storage_dir = {storage:?}\n\
                 challenge = \"http-01\"\n\
                 domains = [\"{HOST}\"]\n\
                 \n",
                storage = storage.display().to_string(),
            ),
        ),
    };
    // `auth`: the route admits signed-in users only and passes identity headers and a JWT on.
    let (auth_table, policy) = match auth {
        Some(a) => (
            format!(
                "[auth]\n\
                 auth_host = \"127.0.0.1\"\n\
                 cookie_secret_file = {secret:?}\n\
                 signing_key_file = {key:?}\n\
                 \n\
                 [[auth.provider]]\n\
                 name = \"local\"\n\
                 kind = \"local\"\n\
                 users_file = {users:?}\n\
                 \n",
                secret = a.secret.display().to_string(),
                key = a.signing_key.display().to_string(),
                users = a.users.display().to_string(),
            ),
            "allow_any_authenticated = true\nidentity_headers = { \"X-WEBAUTH-USER\" = \"email\" }\n",
        ),
        None => (String::new(), "public = true\n"),
    };
    format!(
        "[server]\n\
         https_listen = \"127.0.0.1:{https_port}\"\n\
         http_listen = \"127.0.0.1:{http_port}\"\n\
         admin_listen = \"127.0.0.1:{admin_port}\"\n\
         workers = {workers}\n\
         access_log = false\n\
         request_head_timeout = \"300s\"\n\
         drain_timeout = \"1s\"\n\
         {default_cert}\
         \n\
         {cert_table}\
         {auth_table}\
         [[route]]\n\
         path = \"/\"\n\
         upstream = [\"http://127.0.0.1:{backend_port}\"]\n\
         {policy}\
         https_redirect = false\n"
    )
}

/// The files heim's `auth` scenario signs in with, and the session cookie the load generator
/// sends: sealed by heim's own code with the same secret, as a browser holds it after signing in.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    pub secret: PathBuf,
    pub signing_key: PathBuf,
    pub users: PathBuf,
    pub cookie: &'static str,
}

/// Writes the `auth` scenario's files into `dir` and mints the session cookie.
pub fn write_auth(dir: &Path) -> Result<AuthFiles> {
    use heim_proxy::auth::policy::Session;
    use heim_proxy::auth::seal::{Purpose, Sealer};
    let secret_bytes = b"heim-bench cookie secret, 32+ bytes long".to_vec();
    let secret = dir.join("cookie.secret");
    fs::write(&secret, &secret_bytes).context("write the cookie secret")?;
    let users = dir.join("users.txt");
    // A bcrypt line (its password is never checked: the cookie is minted below).
    fs::write(
        &users,
        "alice@example.com:$2b$10$0.zwmmvnBbtTtJmj1Hy/.eIkOuzkY.JUuz/Q3RZgD.uhvzGnO7XV6\n",
    )
    .context("write the users file")?;
    let sealer = Sealer::new(&[secret_bytes]).map_err(anyhow::Error::msg)?;
    let session = Session {
        user: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        groups: Vec::new(),
        orgs: Vec::new(),
        teams: Vec::new(),
        provider: "local".into(),
        expires: heim_proxy::auth::unix_now() + 24 * 3600,
        id: "heim-bench-session".into(),
        // wrk sends `Host: 127.0.0.1:PORT`: the cookie is that host's.
        host: "127.0.0.1".into(),
    };
    let cookie = format!(
        "{}={}",
        heim_proxy::auth::SESSION_COOKIE,
        sealer.seal(Purpose::Session, &session)
    );
    Ok(AuthFiles {
        secret,
        signing_key: dir.join("jwt.pem"),
        users,
        cookie: Box::leak(cookie.into_boxed_str()),
    })
}

/// A child process that is stopped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    /// Where its stdout and stderr go, for error messages.
    log: PathBuf,
    /// Children seen so far (nginx workers), to stop them even if the master is gone.
    kids: Vec<u32>,
}

impl Proc {
    /// Spawns `argv` (optionally under `taskset -c CPUS`) with stdout+stderr to `log`; its pid
    /// is the program's (setpriv and taskset exec it).
    pub fn spawn(
        name: &str,
        cpus: Option<&str>,
        argv: &[String],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Proc> {
        let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("dup log file")?;
        // setpriv --pdeathsig: if heim-bench dies, even by SIGKILL, the kernel sends the child
        // SIGTERM, so no proxy or backend outlives the run (std has no prctl, and unsafe is
        // forbidden here). It survives the exec into taskset and the program.
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "TERM"]);
        if let Some(c) = cpus {
            cmd.args(["taskset", "-c", c]);
        }
        cmd.args(argv);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {name}: {}", argv.join(" ")))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
            kids: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its whole output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("wait for {}", self.name))?
        {
            bail!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Its pid and its children's (nginx's workers).
    pub fn pids(&mut self) -> Vec<u32> {
        let kids = children(self.pid());
        for k in &kids {
            if !self.kids.contains(k) {
                self.kids.push(*k);
            }
        }
        let mut v = vec![self.pid()];
        v.extend(kids);
        v
    }

    /// Waits (bounded: 200 × 25 ms) until `GET path` on `addr` answers 200.
    pub fn wait_ready(&mut self, addr: SocketAddr, path: &str) -> Result<()> {
        let mut last = String::new();
        for _ in 0..200 {
            self.check_alive()?;
            match http_get(addr, path) {
                Ok((200, _)) => return Ok(()),
                Ok((status, _)) => last = format!("status {status}"),
                Err(e) => last = format!("{e:#}"),
            }
            sleep(Duration::from_millis(25));
        }
        bail!(
            "{} not ready: GET http://{addr}{path} still fails after 5 s ({last}); its output:\n{}",
            self.name,
            self.log_tail()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        let mut kids = children(pid);
        kids.extend(
            self.kids
                .iter()
                .filter(|k| !kids.contains(k))
                .collect::<Vec<_>>(),
        );
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            // SIGTERM: nginx stops fast, heim drains (drain_timeout = 1 s). std has only
            // SIGKILL, and SIGKILL on nginx's master would orphan its workers.
            signal("-TERM", pid);
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                sleep(Duration::from_millis(50));
            }
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                eprintln!(
                    "heim-bench: {} ignored SIGTERM for 5 s; killing it",
                    self.name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Workers left behind (the master crashed, or ignored SIGTERM). A known pid is only
        // killed while it still looks like nginx, in case the pid was reused.
        for k in kids {
            let cmdline = fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("nginx") {
                signal("-KILL", k);
            }
        }
    }
}

/// `kill SIG PID`, ignoring the outcome (std can only SIGKILL its own children).
fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The pids whose parent is `pid` (found by scanning `/proc`; the kernel here has no
/// `/proc/PID/task/TID/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s).ok())
                .is_some_and(|st| st.ppid == pid)
        })
        .collect();
    out.sort_unstable();
    out
}

/// The fields of `/proc/PID/stat` we use.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime, in clock ticks (fields 14 and 15).
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Result<Stat> {
    let rest = &text[text.rfind(')').context("no ')' in /proc/PID/stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field n is f[n - 3].
    if f.len() < 13 {
        bail!("short /proc/PID/stat: {text:?}");
    }
    let n = |i: usize| -> Result<u64> {
        f[i - 3]
            .parse()
            .with_context(|| format!("stat field {i}: {:?}", f[i - 3]))
    };
    Ok(Stat {
        ppid: u32::try_from(n(4)?).context("ppid")?,
        cpu_ticks: n(14)? + n(15)?,
    })
}

/// Σ utime+stime (clock ticks) over `pids`; fails if one is gone.
pub fn cpu_ticks(pids: &[u32]) -> Result<u64> {
    pids.iter()
        .map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/stat"))
                .with_context(|| format!("read /proc/{p}/stat (did it exit?)"))?;
            Ok(parse_stat(&s)?.cpu_ticks)
        })
        .sum()
}

/// (busy, total) clock ticks of CPU `cpu` from `/proc/stat`'s `cpuN` line: busy = user + nice +
/// system + irq + softirq; total adds idle, iowait and steal.
pub fn core_ticks(text: &str, cpu: usize) -> Option<(u64, u64)> {
    let name = format!("cpu{cpu}");
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix(name.as_str())?.strip_prefix(' '))?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 8 {
        return None;
    }
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    Some((busy, busy + f[3] + f[4] + f[7]))
}

/// [`core_ticks`] of the live `/proc/stat`.
pub fn read_core_ticks(cpu: usize) -> Option<(u64, u64)> {
    core_ticks(&fs::read_to_string("/proc/stat").ok()?, cpu)
}

/// A `kB` field (`VmHWM`, `VmRSS`) of `/proc/PID/status`.
pub fn status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Σ `VmHWM` (KiB) over `pids`.
pub fn peak_rss_kib(pids: &[u32]) -> Result<u64> {
    sum_status_kib(pids, "VmHWM")
}

/// Σ `VmRSS` (KiB) over `pids`: the resident set now.
pub fn rss_kib(pids: &[u32]) -> Result<u64> {
    sum_status_kib(pids, "VmRSS")
}

fn sum_status_kib(pids: &[u32], field: &str) -> Result<u64> {
    pids.iter()
        .map(|p| {
            let s = fs::read_to_string(format!("/proc/{p}/status"))
                .with_context(|| format!("read /proc/{p}/status"))?;
            status_kib(&s, field).with_context(|| format!("no {field} in /proc/{p}/status"))
        })
        .sum()
}

/// A minimal HTTP/1.1 GET with 1 s timeouts: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .context("set timeout")?;
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .context("set timeout")?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n"
    )
    .context("send request")?;
    let mut buf = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .context("read response")?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3)?.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        // A real line (nginx worker), with a name holding a space and ')' for good measure.
        let line = "10392 (nginx) S 10199 10199 10155 0 -1 4194624 3172 0 0 0 117 65 0 0 20 0 1 0 \
                    1167493 12345 1234 18446744073709551615 1 1 0 0 0 0 0 1 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line).unwrap(),
            Stat {
                ppid: 10199,
                cpu_ticks: 182
            }
        );
        let odd = line.replace("(nginx)", "(a b) c)");
        assert_eq!(
            parse_stat(&odd).unwrap(),
            Stat {
                ppid: 10199,
                cpu_ticks: 182
            }
        );
        assert!(parse_stat("1 (x) S 2 3").is_err());
    }

    #[test]
    fn proc_stat_cores() {
        let s = "cpu  116914 0 20947 178254 1923 0 824 39 0 0\n\
                 cpu0 51021 1 9673 98111 398 2 243 19 0 0\n\
                 cpu1 65892 0 11274 80143 1524 0 580 20 0 0\n\
                 intr 1\n";
        assert_eq!(
            core_ticks(s, 0),
            Some((
                51021 + 1 + 9673 + 2 + 243,
                51021 + 1 + 9673 + 2 + 243 + 98111 + 398 + 19
            ))
        );
        assert_eq!(core_ticks(s, 1).map(|(b, _)| b), Some(65892 + 11274 + 580));
        assert_eq!(core_ticks(s, 2), None);
        assert_eq!(core_ticks("cpu0 1 2 3\n", 0), None);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tnginx\nVmPeak:\t   20000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), Some(5120));
        assert_eq!(status_kib(s, "VmRSS"), Some(4096));
        assert_eq!(status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn versions() {
        assert_eq!(
            nginx_version("nginx version: nginx/1.22.1\n"),
            Some((1, 22, 1))
        );
        assert_eq!(
            nginx_version("nginx version: nginx/1.25 (x)"),
            Some((1, 25, 0))
        );
        assert_eq!(nginx_version("nope"), None);
    }

    #[test]
    fn ports_are_distinct() {
        let p = free_ports(5).unwrap();
        let mut d = p.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn heim_config_shape() {
        let c = CertFiles {
            cert: "/t/c.pem".into(),
            key: "/t/k.pem".into(),
        };
        let t = heim_conf(1, 1, 2, 3, 4, HeimCerts::File(&c), None);
        assert!(t.contains("https_listen = \"127.0.0.1:1\""));
        assert!(t.contains("cert_file = \"/t/c.pem\""));
        assert!(t.contains("upstream = [\"http://127.0.0.1:4\"]"));
        assert!(t.contains("https_redirect = false"));
        assert!(t.contains("public = true"));
        assert!(!t.contains("[acme]"));
        assert!(!t.contains("default_certificate"));
    }

    /// The `handshake-acme` config is one heim accepts: ACME only, no `[[certificate]]`, and
    /// the store holds the certificate where heim's ACME storage looks for it.
    #[test]
    fn acme_config_is_valid() {
        let dir = std::env::temp_dir().join(format!("heim-bench-acme-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let c = write_cert(&dir, "ecdsa", false).unwrap();
        let store = dir.join("acme");
        write_acme_store(&store, &c).unwrap();
        assert_eq!(
            fs::read(store.join("certificates/bench.test/cert.pem")).unwrap(),
            fs::read(&c.cert).unwrap()
        );
        assert!(store.join("certificates/bench.test/key.pem").is_file());
        let t = heim_conf(1, 1, 2, 3, 4, HeimCerts::Acme(&store), None);
        let config = heim_proxy::config::Config::parse(&dir.join("heim.toml"), &t)
            .unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert!(config.certificates.is_empty(), "{t}");
        let acme = config.acme.expect("an [acme] section");
        assert_eq!(acme.domains, vec![HOST.to_string()]);
        assert_eq!(acme.storage_dir, store);
        assert_eq!(
            config.default_certificate.map(|(h, _)| h).as_deref(),
            Some(HOST)
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// The `auth` scenario's heim config is one heim accepts, and its cookie opens.
    #[test]
    fn auth_config_is_valid() {
        let dir = std::env::temp_dir().join(format!("heim-bench-auth-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let c = CertFiles {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
        };
        let a = write_auth(&dir).unwrap();
        let t = heim_conf(1, 1, 2, 3, 4, HeimCerts::File(&c), Some(&a));
        let config = heim_proxy::config::Config::parse(&dir.join("heim.toml"), &t)
            .unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert!(config.auth.is_some());
        assert!(!t.contains("public = true"));
        let secret = fs::read(&a.secret).unwrap();
        let sealer = heim_proxy::auth::seal::Sealer::new(&[secret]).unwrap();
        let value = a.cookie.split_once('=').unwrap().1;
        let s: heim_proxy::auth::policy::Session = sealer
            .open(heim_proxy::auth::seal::Purpose::Session, value)
            .expect("the cookie opens");
        assert_eq!(s.host, "127.0.0.1");
        let _ = fs::remove_dir_all(&dir);
    }
}
