//! Tunnels end to end with real OpenSSH: `ssh` with
//! `ProxyCommand heim-tunnel proxy ...` through heim's `CONNECT` to a `tcp`
//! route in front of a real `sshd` on loopback; `scp` with checksums; a
//! half-close echo (`socat`); and each refusal with its exit code.
//!
//! Needs `sshd`, `ssh`, `scp`, `ssh-keygen` (Debian `openssh-server`,
//! `openssh-client`) and `socat`: `tests/run` installs them.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use heim_e2e::ssh::{echo, free_port, sha256_of, sshd, user, Killed};
use heim_e2e::{env, tunnel_binary, Heim};

struct Rig {
    ca: rustls::pki_types::CertificateDer<'static>,
    dir: PathBuf,
    heim: Heim,
    key: PathBuf,
    _sshd: Killed,
    _echo: Killed,
}

impl Rig {
    fn proxy_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.heim.https.port())
    }

    fn ssh(&self, program: &str) -> Command {
        heim_e2e::ssh::ssh_through(program, &self.proxy_url(), &self.dir, &self.key)
    }

    /// `heim-tunnel proxy TARGET` with `input` on stdin.
    fn tunnel(&self, target: &str, input: &[u8]) -> Output {
        heim_e2e::ssh::tunnel_proxy(&self.proxy_url(), &self.dir, target, "not-a-token", input)
    }
}

fn rig(name: &str) -> Rig {
    let e = env(name);
    // `--proxy https://127.0.0.1:PORT` sends no SNI: the first certificate
    // (the default) names the address too.
    e.pki.leaf("default", &["default.test", "127.0.0.1"]);
    std::fs::write(e.dir.join("ca.pem"), &e.pki.ca_pem).unwrap();
    let (sshd, ssh_addr, key) = sshd(&e.dir);
    let (echo, echo_addr) = echo();
    let offline = free_port();
    let routes = format!(
        r#"
[[route]]
host = "desk.ssh.wild.test"
tcp = "{ssh_addr}"
public = true

[[route]]
host = "echo.wild.test"
tcp = "{echo_addr}"
public = true

[[route]]
host = "offline.wild.test"
tcp = "127.0.0.1:{offline}"
public = true

# No policy: deny by default.
[[route]]
host = "closed.wild.test"
tcp = "{ssh_addr}"

[[route]]
host = "web.wild.test"
echo = true
public = true
"#
    );
    let heim = Heim::start(&e.dir, &heim_e2e::config("", &routes)).expect("heim starts");
    Rig {
        ca: e.pki.ca_der.clone(),
        dir: e.dir,
        heim,
        key,
        _sshd: sshd,
        _echo: echo,
    }
}

#[test]
fn ssh_scp_and_sftp_through_a_tcp_route() {
    let r = rig("tunnel-ssh");
    let target = format!("{}@desk.ssh.wild.test", user());
    let out = r
        .ssh("/usr/bin/ssh")
        .arg(&target)
        .arg("echo through-heim; exit 3")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through-heim\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3), "the remote command's exit code");

    // scp both ways, 32 MiB of random bytes, equal checksums.
    let src = r.dir.join("blob");
    let ok = Command::new("head")
        .args(["-c", "33554432", "/dev/urandom"])
        .stdout(std::fs::File::create(&src).unwrap())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let remote = r.dir.join("blob.remote");
    let back = r.dir.join("blob.back");
    let status = r
        .ssh("/usr/bin/scp")
        .arg("-q")
        .arg(&src)
        .arg(format!("{target}:{}", remote.display()))
        .status()
        .unwrap();
    assert!(status.success(), "scp up");
    let status = r
        .ssh("/usr/bin/scp")
        .arg("-q")
        .arg(format!("{target}:{}", remote.display()))
        .arg(&back)
        .status()
        .unwrap();
    assert!(status.success(), "scp down");
    assert_eq!(sha256_of(&src), sha256_of(&remote));
    assert_eq!(sha256_of(&src), sha256_of(&back));

    // sftp in batch mode.
    let batch = r.dir.join("sftp.batch");
    let sftp_copy = r.dir.join("blob.sftp");
    std::fs::write(
        &batch,
        format!("get {} {}\n", remote.display(), sftp_copy.display()),
    )
    .unwrap();
    let status = r
        .ssh("/usr/bin/sftp")
        .arg("-q")
        .arg("-b")
        .arg(&batch)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "sftp");
    assert_eq!(sha256_of(&src), sha256_of(&sftp_copy));

    // Several sessions at once.
    let sessions: Vec<_> = (0..8)
        .map(|i| {
            r.ssh("/usr/bin/ssh")
                .arg(&target)
                .arg(format!("echo session-{i}"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, s) in sessions.into_iter().enumerate() {
        let out = s.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("session-{i}\n")
        );
    }
    // Every session above (ssh, scp twice, sftp, 8 at once) was a stream.
    let (_, metrics) = r.heim.admin("/metrics");
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(value("heim_tunnel_streams_total") >= 12, "{metrics}");
    let bytes = value("heim_tunnel_bytes_total{direction=\"to_target\"}");
    assert!(bytes >= 33554432, "bytes to the target counted: {bytes}");
}

#[test]
fn half_close_and_every_refusal_has_its_exit_code() {
    let r = rig("tunnel-codes");
    // Half-close: our end of input reaches the echo, and all of it comes back.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = r.tunnel("echo.wild.test:7", &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the echo came back whole");

    let cases = [
        ("closed.wild.test", 4, "denied"),
        ("offline.wild.test", 5, "target offline"),
        ("nowhere.wild.test", 8, "no tunnel"),
        ("web.wild.test", 8, "no tunnel"),
    ];
    for (host, code, message) in cases {
        let out = r.tunnel(host, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{host}: {stderr}");
        assert!(stderr.contains(message), "{host}: {stderr}");
        assert!(out.stdout.is_empty(), "stdout carries only the stream");
    }
    // The proxy itself away: its own code.
    let out = Command::new(tunnel_binary())
        .args([
            "proxy",
            "--proxy",
            &format!("https://127.0.0.1:{}", free_port()),
        ])
        .arg("echo.wild.test")
        .env("HEIM_TOKEN", "x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A tunnel route serves nothing but CONNECT; ssh-config prints the block.
    let out = Command::new(tunnel_binary())
        .args(["ssh-config", "ssh.home.example.com"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Host *.ssh.home.example.com\n    ProxyCommand "),
        "{text}"
    );
    assert!(text.trim_end().ends_with("proxy %h:%p"), "{text}");
}

/// HTTP/2 clients open tunnels too: a plain `CONNECT` stream (RFC 9113
/// 8.5), and an extended `CONNECT` (RFC 8441) on names whose `/` is a
/// tunnel route; other names do not advertise extended CONNECT (browsers
/// would run WebSockets over it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connect_and_extended_connect() {
    let r = tokio::task::block_in_place(|| rig("tunnel-h2"));
    let h2_to = |sni: &'static str| {
        let config = heim_e2e::Client::config(&r.ca, &[b"h2"]);
        let addr = r.heim.https;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from(sni).unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .unwrap();
            let (send, conn) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(conn);
            send.ready().await.unwrap()
        }
    };
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let echo_through = |mut send: h2::client::SendRequest<bytes::Bytes>, req: http::Request<()>| {
        let data = data.clone();
        async move {
            let (resp, mut body) = send.send_request(req, false).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut from = resp.into_body();
            let sender = tokio::spawn(async move {
                for chunk in data.chunks(16_384) {
                    body.reserve_capacity(chunk.len());
                    body.send_data(bytes::Bytes::copy_from_slice(chunk), false)
                        .unwrap();
                }
                body.send_data(bytes::Bytes::new(), true).unwrap();
                body
            });
            let mut got = Vec::new();
            while let Some(chunk) = from.data().await {
                let chunk = chunk.unwrap();
                from.flow_control().release_capacity(chunk.len()).unwrap();
                got.extend_from_slice(&chunk);
            }
            drop(sender.await.unwrap());
            got
        }
    };
    // Plain CONNECT: :authority only.
    let send = h2_to("echo.wild.test").await;
    let plain = http::Request::connect("echo.wild.test:7").body(()).unwrap();
    assert!(
        echo_through(send.clone(), plain).await == data,
        "plain CONNECT echoed it all"
    );
    // (The server's SETTINGS have surely arrived by the first answer.)
    assert!(
        send.is_extended_connect_protocol_enabled(),
        "a tunnel name advertises it"
    );
    // Extended CONNECT: :protocol, :scheme and :path too.
    let mut ext = http::Request::connect("https://echo.wild.test/")
        .body(())
        .unwrap();
    ext.extensions_mut()
        .insert(h2::ext::Protocol::from_static("heim-tunnel"));
    assert!(
        echo_through(send, ext).await == data,
        "extended CONNECT echoed it all"
    );
    // A web name does not offer extended CONNECT.
    let web = h2_to("web.wild.test").await;
    let (resp, _) = web
        .clone()
        .send_request(
            http::Request::get("https://web.wild.test/")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert!(!web.is_extended_connect_protocol_enabled());
}
