//! Reverse tunnels end to end: `heim-tunnel agent` dials heim and serves
//! a real `sshd` (and socat services) on loopback; users reach them with
//! `ssh -o ProxyCommand='heim-tunnel proxy ...'` through heim. Transfers
//! end with equal checksums; restarts, drains, reloads, sign-outs and the
//! agent protocol's attacks each have a test.
//!
//! Needs OpenSSH (client and server), socat and rsync: `tests/run`
//! installs them.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heim_e2e::ssh::{echo, free_port, sha256_of, sshd, tool, user, Killed};
use heim_e2e::{env, metric, poll_until, tunnel_binary, Heim};

const DESK_TOKEN: &str = "desk-7f1c0e9a4b2d48e6a3f5c1b0d9e8a7f6";
const LAB_TOKEN: &str = "lab-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";

fn hex_sha256(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A running `heim-tunnel agent`, its stderr kept.
struct Agent {
    child: Killed,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn start(dir: &Path, name: &str, token: &str, proxies: &[String], services: &str) -> Agent {
        let token_file = dir.join(format!("{name}-{}.token", free_port()));
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let proxies: Vec<String> = proxies.iter().map(|p| format!("{p:?}")).collect();
        let config = dir.join(format!("agent-{name}-{}.toml", free_port()));
        std::fs::write(
            &config,
            format!(
                "proxies = [{}]\nname = \"{name}\"\ntoken_file = {:?}\nca_file = \"ca.pem\"\nconnections = 2\n\n[services]\n{services}",
                proxies.join(", "),
                token_file.display().to_string(),
            ),
        )
        .unwrap();
        let mut child = Command::new(tunnel_binary())
            .args(["agent", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("heim-tunnel agent");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Agent {
            child: Killed(child),
            log,
        }
    }

    fn wait_log(&self, needle: &str) -> bool {
        poll_until(Duration::from_secs(20), || {
            self.log.lock().unwrap().contains(needle)
        })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.0.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

struct Rig {
    e: heim_e2e::Env,
    dir: PathBuf,
    heim: Heim,
    key: PathBuf,
    ssh_addr: SocketAddr,
    echo_addr: SocketAddr,
    _sshd: Killed,
    _echo: Killed,
}

/// heim's config: agents `desk` (token_sha256) and `lab` (token_file);
/// sign-in with local users; routes to each agent's services.
fn heim_config(dir: &Path, https_listen: &str, desk_public: bool) -> String {
    std::fs::write(dir.join("lab.token"), format!("{LAB_TOKEN}\n")).unwrap();
    let hash = bcrypt::hash(heim_e2e::web::ALICE_PASSWORD, 4).unwrap();
    std::fs::write(
        dir.join("users.txt"),
        format!("alice@example.com:{hash}\nbob@example.com:{hash}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("cookie.secret"), [7u8; 32]).unwrap();
    let desk_policy = if desk_public {
        "public = true"
    } else {
        "allow_emails = [\"nobody@example.com\"]"
    };
    let routes = format!(
        r#"
[auth]
auth_host = "auth.wild.test"
cookie_secret_file = "cookie.secret"
signing_key_file = "jwt.pem"
session_ttl = "1h"

[[auth.provider]]
name = "local"
kind = "local"
users_file = "users.txt"

[[agent]]
name = "desk"
token_sha256 = "{desk}"

[[agent]]
name = "lab"
token_file = "lab.token"

[[route]]
host = "desk.ssh.wild.test"
agent = "desk"
service = "ssh"
{desk_policy}

[[route]]
host = "echo.wild.test"
agent = "desk"
service = "echo"
public = true

[[route]]
host = "db.wild.test"
agent = "desk"
service = "db"
public = true

[[route]]
host = "lab.wild.test"
agent = "lab"
service = "ssh"
public = true

[[route]]
host = "alice.ssh.wild.test"
agent = "desk"
service = "ssh"
allow_emails = ["alice@example.com"]

# No policy: deny by default.
[[route]]
host = "closed.wild.test"
agent = "desk"
service = "ssh"
"#,
        desk = hex_sha256(DESK_TOKEN),
    );
    heim_e2e::config("", &routes).replace("https_listen = \"127.0.0.1:0\"", https_listen)
}

fn rig(name: &str) -> Rig {
    rig_with_ttl(name, "1h")
}

/// The rig, with sign-in sessions that last `ttl`.
fn rig_with_ttl(name: &str, ttl: &str) -> Rig {
    let e = env(name);
    // `--proxy https://127.0.0.1:PORT` sends no SNI: the default
    // certificate names the address too.
    e.pki.leaf("default", &["default.test", "127.0.0.1"]);
    std::fs::write(e.dir.join("ca.pem"), &e.pki.ca_pem).unwrap();
    let (sshd, ssh_addr, key) = sshd(&e.dir);
    let (echo, echo_addr) = echo();
    let config = heim_config(&e.dir, "https_listen = \"127.0.0.1:0\"", true)
        .replace("session_ttl = \"1h\"", &format!("session_ttl = \"{ttl}\""));
    let heim = Heim::start(&e.dir, &config).expect("heim starts");
    Rig {
        dir: e.dir.clone(),
        e,
        heim,
        key,
        ssh_addr,
        echo_addr,
        _sshd: sshd,
        _echo: echo,
    }
}

impl Rig {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.heim.https.port())
    }

    fn desk(&self) -> Agent {
        let services = format!(
            "ssh = \"{}\"\necho = \"{}\"\n",
            self.ssh_addr, self.echo_addr
        );
        let a = Agent::start(&self.dir, "desk", DESK_TOKEN, &[self.url()], &services);
        self.wait_agents(&self.heim, 2);
        a
    }

    /// Waits until `heim` counts `n` agent connections.
    fn wait_agents(&self, heim: &Heim, n: u64) {
        let ok = poll_until(Duration::from_secs(30), || {
            let (_, m) = heim.admin("/metrics");
            metric(&m, "heim_tunnel_agents_connected") == Some(n)
        });
        assert!(ok, "{n} agent connections; heim: {}", heim.log_text());
    }

    fn ssh(&self, program: &str, proxy_url: &str) -> Command {
        heim_e2e::ssh::ssh_through(program, proxy_url, &self.dir, &self.key)
    }

    /// `heim-tunnel proxy TARGET` with `input` on stdin and `token`.
    fn tunnel(&self, target: &str, token: &str, input: &[u8]) -> Output {
        heim_e2e::ssh::tunnel_proxy(&self.url(), &self.dir, target, token, input)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn random_file(path: &Path, bytes: u64) {
    let ok = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap()
        .success();
    assert!(ok, "head /dev/urandom");
}

#[test]
fn ssh_scp_sftp_rsync_and_ssh_w_through_an_agent() {
    let r = rig("agent-ssh");
    let _desk = r.desk();
    let url = r.url();
    let target = format!("{}@desk.ssh.wild.test", user());

    let out = r
        .ssh("/usr/bin/ssh", &url)
        .arg(&target)
        .arg("echo through-the-agent; exit 3")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "through-the-agent\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "the remote command's exit code");

    // scp of 100 MB both ways.
    let src = r.dir.join("blob");
    random_file(&src, 100_000_000);
    let remote = r.dir.join("blob.remote");
    let back = r.dir.join("blob.back");
    let up = r
        .ssh("/usr/bin/scp", &url)
        .arg("-q")
        .arg(&src)
        .arg(format!("{target}:{}", remote.display()))
        .status()
        .unwrap();
    assert!(up.success(), "scp up");
    let down = r
        .ssh("/usr/bin/scp", &url)
        .arg("-q")
        .arg(format!("{target}:{}", remote.display()))
        .arg(&back)
        .status()
        .unwrap();
    assert!(down.success(), "scp down");
    let want = sha256_of(&src);
    assert_eq!(want, sha256_of(&remote));
    assert_eq!(want, sha256_of(&back));

    // sftp.
    let batch = r.dir.join("sftp.batch");
    let sftp_copy = r.dir.join("blob.sftp");
    std::fs::write(
        &batch,
        format!("get {} {}\n", remote.display(), sftp_copy.display()),
    )
    .unwrap();
    let ok = r
        .ssh("/usr/bin/sftp", &url)
        .args(["-q", "-b"])
        .arg(&batch)
        .arg(&target)
        .status()
        .unwrap();
    assert!(ok.success(), "sftp");
    assert_eq!(want, sha256_of(&sftp_copy));

    // rsync -e ssh, a tree of files.
    let tree = r.dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for i in 0..20 {
        random_file(&tree.join("sub").join(format!("f{i}")), 50_000 + i * 1000);
    }
    let rsync = tool("/usr/bin/rsync", "rsync");
    let ssh_cmd = format!(
        "ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i {} -o ProxyCommand='{} proxy --proxy {url} --ca-file {} %h:%p'",
        r.key.display(),
        tunnel_binary().display(),
        r.dir.join("ca.pem").display()
    );
    let copy = r.dir.join("tree.copy");
    let out = Command::new(rsync)
        .arg("-a")
        .arg("-e")
        .arg(&ssh_cmd)
        .arg(format!("{}/", tree.display()))
        .arg(format!("{target}:{}/", copy.display()))
        .env("XDG_CONFIG_HOME", r.dir.join("xdg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "rsync: {}", text(&out.stderr));
    for i in 0..20 {
        let f = Path::new("sub").join(format!("f{i}"));
        assert_eq!(sha256_of(&tree.join(&f)), sha256_of(&copy.join(&f)));
    }

    // ssh -W: sshd forwards to the echo; half-closed at the end.
    let mut w = r
        .ssh("/usr/bin/ssh", &url)
        .arg("-W")
        .arg(r.echo_addr.to_string())
        .arg(&target)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = w.stdin.take().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&sent));
    let out = w.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.stdout == data,
        "ssh -W echoed {} of {} bytes",
        out.stdout.len(),
        data.len()
    );

    // The agent's own echo service, half-close through heim and the agent.
    let out = r.tunnel("echo.wild.test:7", "", &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout == data, "echo came back whole");

    // Many sessions at once over the agent's two connections.
    let sessions: Vec<_> = (0..16)
        .map(|i| {
            r.ssh("/usr/bin/ssh", &url)
                .arg(&target)
                .arg(format!("echo session-{i}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, s) in sessions.into_iter().enumerate() {
        let out = s.wait_with_output().unwrap();
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }
    let (_, m) = r.heim.admin("/metrics");
    assert!(
        metric(&m, "heim_tunnel_streams_total").unwrap_or(0) >= 22,
        "{m}"
    );
    assert!(
        metric(&m, "heim_tunnel_connect_seconds_count").unwrap_or(0) >= 22,
        "{m}"
    );
    assert!(
        metric(&m, "heim_tunnel_bytes_total{direction=\"to_target\"}").unwrap_or(0) >= 100_000_000
    );
    assert!(r.heim.log_text().contains("agent connected"));
}

#[test]
fn refusals_say_why_and_agents_prove_their_name() {
    let r = rig("agent-refusals");
    let desk = r.desk();
    // The agent says which services it has; heim says what is missing.
    let cases = [
        ("db.wild.test", 5, "does not expose service db"),
        ("lab.wild.test", 5, "agent lab is not connected"),
        ("closed.wild.test", 4, "denied"),
        ("alice.ssh.wild.test", 3, "not signed in"),
    ];
    for (host, code, message) in cases {
        let out = r.tunnel(host, "not-a-token", b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{host}: {stderr}");
        assert!(stderr.contains(message), "{host}: {stderr}");
        assert!(out.stdout.is_empty(), "stdout carries only the stream");
    }

    // A wrong token, and another agent's token, are refused; the agent
    // says so, and never gets a stream.
    let before = metric(
        &r.heim.admin("/metrics").1,
        "heim_tunnel_agent_refused_total",
    )
    .unwrap();
    let services = format!("ssh = \"{}\"\n", r.ssh_addr);
    let wrong = Agent::start(
        &r.dir,
        "lab",
        "guessed-token-0123456789",
        &[r.url()],
        &services,
    );
    let stolen = Agent::start(&r.dir, "lab", DESK_TOKEN, &[r.url()], &services);
    for a in [&wrong, &stolen] {
        assert!(a.wait_log("refused agent \"lab\""), "{}", a.log());
    }
    let ok = poll_until(Duration::from_secs(10), || {
        metric(
            &r.heim.admin("/metrics").1,
            "heim_tunnel_agent_refused_total",
        )
        .is_some_and(|n| n >= before + 2)
    });
    assert!(ok, "refusals counted");
    assert!(r.heim.wait_log("agent refused", Duration::from_secs(5)));
    let out = r.tunnel("lab.wild.test", "", b"");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("agent lab is not connected"));
    drop((wrong, stolen));

    // Two agents at once never see each other's streams: lab answers with
    // its own banner, desk with sshd's, every time, in parallel.
    let (_lab_banner, lab_addr) = banner("lab-here");
    let _lab = Agent::start(
        &r.dir,
        "lab",
        LAB_TOKEN,
        &[r.url()],
        &format!("ssh = \"{lab_addr}\"\n"),
    );
    r.wait_agents(&r.heim, 4);
    let runs: Vec<_> = (0..16)
        .map(|i| {
            let host = if i % 2 == 0 {
                "lab.wild.test"
            } else {
                "desk.ssh.wild.test"
            };
            let mut c = Command::new(tunnel_binary());
            c.args(["proxy", "--proxy", &r.url(), "--ca-file"])
                .arg(r.dir.join("ca.pem"))
                .arg(host)
                .env("HEIM_TOKEN", "")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (host, c.spawn().unwrap())
        })
        .collect();
    for (host, mut child) in runs {
        // sshd speaks first; the banner service too. Read a line, hang up.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        drop(child.stdin.take());
        let _ = child.kill();
        let _ = child.wait();
        match host {
            "lab.wild.test" => assert_eq!(line, "lab-here\n"),
            _ => assert!(line.starts_with("SSH-2.0-"), "{host}: {line:?}"),
        }
    }
    drop(desk);
}

/// A TCP service that writes `what` and a newline to each connection.
fn banner(what: &str) -> (Killed, SocketAddr) {
    let socat = tool("/usr/bin/socat", "socat");
    let port = free_port();
    let child = Command::new(socat)
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg(format!("SYSTEM:echo {what}; cat >/dev/null"))
        .spawn()
        .expect("socat");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    heim_e2e::ssh::wait_listening(addr);
    (Killed(child), addr)
}

/// An ssh session printing a counter every 200 ms, its lines and stderr
/// gathered as they come.
struct Loop {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Loop {
    fn start(r: &Rig, host: &str, token: Option<&str>) -> Loop {
        let mut cmd = r.ssh("/usr/bin/ssh", &r.url());
        if let Some(t) = token {
            cmd.env("HEIM_TOKEN", t);
        }
        let mut child = cmd
            .arg(format!("{}@{host}", user()))
            .arg("i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let lp = Loop {
            child,
            lines,
            stderr,
        };
        assert!(lp.wait_lines(3), "the loop runs: {}", lp.stderr());
        lp
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits for `more` lines beyond those seen so far.
    fn wait_lines(&self, more: usize) -> bool {
        let want = self.count() + more;
        poll_until(Duration::from_secs(10), || self.count() >= want)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded by `within`) for the session to end; whether it did.
    fn ended_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The counter went up by one each line, from 1: nothing was lost.
    fn unbroken(&self) -> bool {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| l.trim() == (i + 1).to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reloads `heim` and waits for the reload's log line.
fn reload(heim: &Heim, n: usize) {
    heim.signal("HUP");
    let ok = poll_until(Duration::from_secs(10), || {
        heim.log_text().matches("config reloaded").count() >= n
    });
    assert!(ok, "reload {n}: {}", heim.log_text());
}

#[test]
fn reloads_keep_streams_and_policy_changes_cut_them() {
    let r = rig("agent-reload");
    let _desk = r.desk();
    let mut lp = Loop::start(&r, "desk.ssh.wild.test", None);
    // A reload that changes nothing for the stream never touches it.
    reload(&r.heim, 1);
    assert!(
        lp.wait_lines(5),
        "still running after SIGHUP: {}",
        lp.stderr()
    );
    assert!(lp.unbroken(), "no line lost");
    // The desk route stops being public: the stream is cut within 2 s, and
    // heim-tunnel says why.
    let config = heim_config(&r.dir, "https_listen = \"127.0.0.1:0\"", false);
    std::fs::write(r.heim.dir.join("heim.toml"), config).unwrap();
    reload(&r.heim, 2);
    assert!(
        lp.ended_within(Duration::from_secs(3)),
        "cut after the policy change"
    );
    let stderr = lp.stderr();
    assert!(
        stderr.contains("cut by heim: the route's policy no longer admits you"),
        "{stderr}"
    );
}

/// A reload that changes an agent's token (it leaked, say) ends that
/// agent's links and every stream on them at once; the agent, dialing back
/// with the old token, is refused.
#[test]
fn a_reload_withdrawing_an_agent_ends_its_links_and_streams() {
    let r = rig("agent-withdrawn");
    let desk = r.desk();
    let mut lp = Loop::start(&r, "desk.ssh.wild.test", None);
    let config = heim_config(&r.dir, "https_listen = \"127.0.0.1:0\"", true).replace(
        &hex_sha256(DESK_TOKEN),
        &hex_sha256("a-new-token-for-desk-0123456789"),
    );
    std::fs::write(r.heim.dir.join("heim.toml"), config).unwrap();
    reload(&r.heim, 1);
    assert!(
        lp.ended_within(Duration::from_secs(5)),
        "the stream ended with the link"
    );
    r.wait_agents(&r.heim, 0);
    assert!(r
        .heim
        .wait_log("withdrawn by a reload", Duration::from_secs(5)));
    assert!(desk.wait_log("refused agent \"desk\""), "{}", desk.log());
    let out = r.tunnel("echo.wild.test", "", b"ping");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_users_and_sign_out_cutting_their_streams() {
    let r = rig("agent-signin");
    let _desk = r.desk();
    let mut alice = heim_e2e::web::Browser::new(&r.e, &r.heim);
    let token = heim_e2e::web::cli_token(&mut alice, "auth.wild.test", "alice@example.com").await;
    let mut bob_browser = heim_e2e::web::Browser::new(&r.e, &r.heim);
    let bob = heim_e2e::web::cli_token(&mut bob_browser, "auth.wild.test", "bob@example.com").await;

    // bob is signed in but not admitted; alice is.
    let out = tokio::task::block_in_place(|| r.tunnel("alice.ssh.wild.test", &bob, b""));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let mut lp =
        tokio::task::block_in_place(|| Loop::start(&r, "alice.ssh.wild.test", Some(&token)));

    // alice signs out in the browser: her tunnel is cut within 2 s.
    let page = alice
        .get(&alice.url("auth.wild.test", "/.heim/logout"))
        .await;
    let csrf = heim_e2e::web::hidden(&page.body, "csrf");
    let url = alice.url("auth.wild.test", "/.heim/logout");
    alice.go("POST", &url, Some(&format!("csrf={csrf}"))).await;
    let ended = tokio::task::block_in_place(|| lp.ended_within(Duration::from_secs(3)));
    assert!(ended, "cut after sign-out");
    assert!(
        lp.stderr().contains("cut by heim: signed out"),
        "{}",
        lp.stderr()
    );
    // And the token no longer opens one.
    let out = tokio::task::block_in_place(|| r.tunnel("alice.ssh.wild.test", &token, b""));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // `heim-tunnel logout` ends the session at heim: the kept token's
    // stream is cut too, and the token is gone.
    let mut again = heim_e2e::web::Browser::new(&r.e, &r.heim);
    let t = heim_e2e::web::cli_tokens(&mut again, "auth.wild.test", "alice@example.com").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let kept = serde_json::json!({
        "origin": r.url(),
        "user": t["user"],
        "access_token": t["access_token"],
        "expires_at": now + t["expires_in"].as_u64().unwrap(),
        "refresh_token": t["refresh_token"],
        "refresh_expires_at": now + t["refresh_expires_in"].as_u64().unwrap(),
    });
    let tokens = r.dir.join("xdg/heim/tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let file = tokens.join(format!("127.0.0.1_{}.json", r.heim.https.port()));
    std::fs::write(&file, kept.to_string()).unwrap();
    let mut lp = tokio::task::block_in_place(|| Loop::start(&r, "alice.ssh.wild.test", None));
    let out = Command::new(tunnel_binary())
        .args(["logout", "--proxy", &r.url(), "--ca-file"])
        .arg(r.dir.join("ca.pem"))
        .env("XDG_CONFIG_HOME", r.dir.join("xdg"))
        .env_remove("HEIM_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!file.exists(), "the token is forgotten");
    let ended = tokio::task::block_in_place(|| lp.ended_within(Duration::from_secs(3)));
    assert!(ended, "cut after heim-tunnel logout");
    assert!(
        lp.stderr().contains("cut by heim: signed out"),
        "{}",
        lp.stderr()
    );
    assert!(r.heim.log_text().contains("signed out (CLI)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_session_cuts_its_stream() {
    let r = rig_with_ttl("agent-expiry", "4s");
    let _desk = r.desk();
    let mut alice = heim_e2e::web::Browser::new(&r.e, &r.heim);
    let token = heim_e2e::web::cli_token(&mut alice, "auth.wild.test", "alice@example.com").await;
    let mut lp =
        tokio::task::block_in_place(|| Loop::start(&r, "alice.ssh.wild.test", Some(&token)));
    let ended = tokio::task::block_in_place(|| lp.ended_within(Duration::from_secs(8)));
    assert!(ended, "cut when the session expired");
    assert!(
        lp.stderr().contains("cut by heim: the session expired"),
        "{}",
        lp.stderr()
    );
    // The expired token is no token.
    let out = tokio::task::block_in_place(|| r.tunnel("alice.ssh.wild.test", &token, b""));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not signed in"));
}

#[test]
fn agent_and_proxy_restarts_and_the_agent_drain() {
    let e = env("agent-restarts");
    e.pki.leaf("default", &["default.test", "127.0.0.1"]);
    std::fs::write(e.dir.join("ca.pem"), &e.pki.ca_pem).unwrap();
    let (sshd, ssh_addr, key) = sshd(&e.dir);
    let (echo, echo_addr) = echo();
    let port = free_port();
    let config = heim_config(
        &e.dir,
        &format!("https_listen = \"127.0.0.1:{port}\""),
        true,
    );
    let heim = Heim::start(&e.dir, &config).expect("heim starts");
    let dir = e.dir.clone();
    let mut r = Rig {
        e,
        dir: dir.clone(),
        heim,
        key,
        ssh_addr,
        echo_addr,
        _sshd: sshd,
        _echo: echo,
    };
    let echo_once = |r: &Rig| {
        let out = r.tunnel("echo.wild.test", "", b"ping");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    // The agent killed: heim says it is offline; restarted: it serves.
    let desk = r.desk();
    assert_eq!(echo_once(&r).1, "ping");
    drop(desk);
    r.wait_agents(&r.heim, 0);
    let (code, _, stderr) = echo_once(&r);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("agent desk is not connected"), "{stderr}");
    let desk = r.desk();
    assert_eq!(echo_once(&r).1, "ping");

    // heim restarted on the same port: the agent comes back by itself.
    drop(std::mem::replace(
        &mut r.heim,
        Heim::start(&dir, &config).expect("heim restarts"),
    ));
    r.wait_agents(&r.heim, 2);
    assert!(desk.wait_log("reconnecting to"), "{}", desk.log());
    assert_eq!(echo_once(&r).1, "ping");

    // SIGTERM drains: a running session finishes, new ones are refused,
    // then the agent exits 0.
    let running = r
        .ssh("/usr/bin/ssh", &r.url())
        .arg(format!("{}@desk.ssh.wild.test", user()))
        .arg("sleep 2; echo finished")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let open = poll_until(Duration::from_secs(10), || {
        metric(&r.heim.admin("/metrics").1, "heim_tunnel_streams_open") == Some(1)
    });
    assert!(open, "the session's stream is open");
    desk.signal("TERM");
    assert!(desk.wait_log("draining"), "{}", desk.log());
    let (code, _, stderr) = echo_once(&r);
    assert_eq!(code, Some(5), "no new stream while draining: {stderr}");
    let out = running.wait_with_output().unwrap();
    assert_eq!(
        text(&out.stdout),
        "finished\n",
        "the open session ran to its end"
    );
    let mut child = desk;
    let exited = poll_until(Duration::from_secs(10), || {
        child.child.0.try_wait().unwrap().is_some()
    });
    assert!(exited, "the agent exits once drained: {}", child.log());
    assert_eq!(child.child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn one_agent_serves_two_heims() {
    let r = rig("agent-two-heims");
    let config = std::fs::read_to_string(r.heim.dir.join("heim.toml")).unwrap();
    let other = Heim::start(&r.dir, &config).expect("second heim");
    let other_url = format!("https://127.0.0.1:{}", other.https.port());
    let services = format!("ssh = \"{}\"\necho = \"{}\"\n", r.ssh_addr, r.echo_addr);
    let _desk = Agent::start(
        &r.dir,
        "desk",
        DESK_TOKEN,
        &[r.url(), other_url.clone()],
        &services,
    );
    r.wait_agents(&r.heim, 2);
    r.wait_agents(&other, 2);
    for url in [r.url(), other_url] {
        let out = r
            .ssh("/usr/bin/ssh", &url)
            .arg(format!("{}@desk.ssh.wild.test", user()))
            .arg("echo via-$0")
            .output()
            .unwrap();
        assert!(
            text(&out.stdout).starts_with("via-"),
            "{url}: {}",
            text(&out.stderr)
        );
    }
}

/// A proxy that is not heim: it accepts the agent's connect (whatever the
/// token) and then asks the agent for what it must never reach. The agent
/// dials only the addresses its own config lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reaches_only_what_its_config_lists() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let e = env("agent-listed-only");
    e.pki.leaf("default", &["default.test", "127.0.0.1"]);
    std::fs::write(e.dir.join("ca.pem"), &e.pki.ca_pem).unwrap();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(e.dir.join("default.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(e.dir.join("default-key.pem")).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("https://127.0.0.1:{}", fake.local_addr().unwrap().port());

    // Listed: `web`. Not listed: `secret`, which must never see a connection.
    let listed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listed_addr = listed.local_addr().unwrap();
    let secret = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    secret.set_nonblocking(true).unwrap();
    let secret_addr = secret.local_addr().unwrap();
    let agent = tokio::task::block_in_place(|| {
        Agent::start(
            &e.dir,
            "desk",
            DESK_TOKEN,
            &[fake_url],
            &format!("web = \"{listed_addr}\"\n"),
        )
    });

    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), fake.accept())
        .await
        .expect("the agent dials")
        .unwrap();
    let mut io = acceptor.accept(tcp).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            io.read(&mut b).await.unwrap(),
            1,
            "the agent's request head"
        );
        head.push(b[0]);
        assert!(head.len() < 8192);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(
        head.starts_with("get /.heim/agent/connect http/1.1"),
        "{head}"
    );
    assert!(head.contains("upgrade: heim-agent/1"), "{head}");
    assert!(head.contains("heim-agent-name: desk"), "{head}");
    io.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: heim-agent/1\r\n\r\n",
    )
    .await
    .unwrap();
    let (h2, conn) = h2::client::handshake(io).await.expect("h2 to the agent");
    tokio::spawn(conn);
    let ask = |method: http::Method, authority: String| {
        let h2 = h2.clone();
        async move {
            let mut h2 = h2.ready().await.unwrap();
            let req = http::Request::builder()
                .method(method)
                .uri(authority)
                .body(())
                .unwrap();
            let (resp, _send) = h2.send_request(req, false).unwrap();
            let resp = resp.await.unwrap();
            let reason = resp
                .headers()
                .get("heim-reason")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (resp.status().as_u16(), reason)
        }
    };
    for authority in [
        format!("{secret_addr}"),
        format!("localhost:{}", secret_addr.port()),
        "secret:0".to_string(),
        "web:22".to_string(),
        "web.secret:0".to_string(),
        "WEB:0".to_string(),
    ] {
        let (status, reason) = ask(http::Method::CONNECT, authority.clone()).await;
        assert_eq!(status, 404, "{authority}: {reason}");
        assert!(reason.contains("does not expose"), "{authority}: {reason}");
    }
    let (status, _) = ask(http::Method::GET, "https://web:0/".to_string()).await;
    assert_eq!(status, 405, "streams are CONNECT only");
    // The listed service is reached.
    let (status, _) = ask(http::Method::CONNECT, "web:0".to_string()).await;
    assert_eq!(status, 200);
    let accepted = tokio::time::timeout(Duration::from_secs(5), listed.accept()).await;
    assert!(accepted.is_ok(), "the listed service got its connection");
    assert!(
        matches!(secret.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing reached the address the agent does not list"
    );
    drop(agent);
}

/// The café: in a network namespace where only TCP 443 towards heim is
/// let out (iptables), `ssh -F <heim-tunnel ssh-config>` reaches the
/// machine behind the agent, and a direct `ssh` to that machine's sshd
/// (which worked before the firewall went up) does not.
#[test]
fn from_a_cafe_where_only_443_is_open() {
    let cafe = heim_e2e::kube::Netns::new().expect("a test network namespace (root, iproute2)");
    let host = cafe.host_addr;
    let e = env("agent-cafe");
    e.pki.leaf("default", &["default.test", &host.to_string()]);
    std::fs::write(e.dir.join("ca.pem"), &e.pki.ca_pem).unwrap();
    let (_sshd, ssh_addr, key) = heim_e2e::ssh::sshd_on(&e.dir, host);
    let config = heim_config(&e.dir, &format!("https_listen = \"{host}:443\""), true);
    let heim = Heim::start(&e.dir, &config).expect("heim on 443");
    let proxy = format!("https://{host}");
    let _desk = Agent::start(
        &e.dir,
        "desk",
        DESK_TOKEN,
        std::slice::from_ref(&proxy),
        &format!("ssh = \"{ssh_addr}\"\n"),
    );
    let ok = poll_until(Duration::from_secs(30), || {
        metric(&heim.admin("/metrics").1, "heim_tunnel_agents_connected") == Some(2)
    });
    assert!(ok, "the agent connected: {}", heim.log_text());

    let block = Command::new(tunnel_binary())
        .args(["ssh-config", "--proxy", &proxy, "--ca-file"])
        .arg(e.dir.join("ca.pem"))
        .arg("ssh.wild.test")
        .output()
        .unwrap();
    assert!(block.status.success());
    let options = format!(
        "    User {}\n    IdentityFile {}\n    BatchMode yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n    ConnectTimeout 3\n",
        user(),
        key.display()
    );
    let ssh_config = e.dir.join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "{}{options}\nHost direct\n    HostName {host}\n    Port {}\n{options}",
            text(&block.stdout),
            ssh_addr.port()
        ),
    )
    .unwrap();
    let ssh = |to: &str| {
        cafe.command("/usr/bin/ssh")
            .arg("-F")
            .arg(&ssh_config)
            .arg(to)
            .arg("echo from-the-cafe")
            .env("XDG_CONFIG_HOME", e.dir.join("xdg"))
            .env_remove("HEIM_TOKEN")
            .output()
            .unwrap()
    };
    let before = ssh("direct");
    assert_eq!(
        text(&before.stdout),
        "from-the-cafe\n",
        "direct ssh works before the firewall: {}",
        text(&before.stderr)
    );

    // The café's firewall: out only to heim's 443 (and replies).
    let rules: [&[&str]; 4] = [
        &["-P", "OUTPUT", "DROP"],
        &["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
        &[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &host.to_string(),
            "--dport",
            "443",
            "-j",
            "ACCEPT",
        ],
        &[
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
    ];
    for rule in rules {
        let iptables = tool("/usr/sbin/iptables", "iptables");
        let out = cafe.command(iptables).args(rule).output().unwrap();
        assert!(
            out.status.success(),
            "iptables {rule:?}: {}",
            text(&out.stderr)
        );
    }
    let blocked = ssh("direct");
    assert_ne!(
        blocked.status.code(),
        Some(0),
        "direct ssh is blocked in the café"
    );
    assert!(blocked.stdout.is_empty());
    let through = ssh("desk.ssh.wild.test");
    assert_eq!(
        text(&through.stdout),
        "from-the-cafe\n",
        "through heim on 443: {}",
        text(&through.stderr)
    );
    assert_eq!(through.status.code(), Some(0));
}
