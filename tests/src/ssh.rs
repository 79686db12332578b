//! Real OpenSSH and socat for the tunnel tests: an `sshd` on a loopback
//! port for the current user, a half-close echo, checksums.
//!
//! Needs `sshd`, `ssh`, `scp`, `ssh-keygen` (Debian `openssh-server`,
//! `openssh-client`), `socat` and `rsync`: `tests/run` installs them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::poll_until;

pub fn tool(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: apt-get install {package} (tests/run does)"
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child that is killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_listening(addr: SocketAddr) {
    assert!(
        poll_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "{addr} never listened"
    );
}

/// A real sshd on a loopback port, for the current user, with a key of
/// its own; returns it and the client's key.
pub fn sshd(dir: &Path) -> (Killed, SocketAddr, PathBuf) {
    sshd_on(dir, "127.0.0.1".parse().unwrap())
}

/// Like [`sshd`], listening on `ip` (a test namespace's host address).
pub fn sshd_on(dir: &Path, ip: std::net::IpAddr) -> (Killed, SocketAddr, PathBuf) {
    let keygen = tool("/usr/bin/ssh-keygen", "openssh-client");
    let sshd = tool("/usr/sbin/sshd", "openssh-server");
    let gen = |name: &str| {
        let path = dir.join(name);
        let ok = Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen");
        path
    };
    let host_key = gen("host_key");
    let client_key = gen("client_key");
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    // sshd's privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress {ip}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxStartups 200\n",
            host_key.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display(),
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd");
    let addr = SocketAddr::new(ip, port);
    wait_listening(addr);
    (Killed(child), addr, client_key)
}

/// `socat` echoing each connection back (`cat`): it ends its side when it
/// has read the client's end, so only a relay with half-close returns it all.
pub fn echo() -> (Killed, SocketAddr) {
    let socat = tool("/usr/bin/socat", "socat");
    let port = free_port();
    let child = Command::new(socat)
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("EXEC:cat")
        .spawn()
        .expect("socat");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    (Killed(child), addr)
}

pub fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

pub fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// `program` (ssh, scp, sftp) for tests: no user config, no host-key
/// prompts, `key`, tokens under `dir/xdg`, and heim as the ProxyCommand
/// (`heim-tunnel proxy --proxy PROXY --ca-file dir/ca.pem %h:%p`).
pub fn ssh_through(program: &str, proxy: &str, dir: &Path, key: &Path) -> Command {
    let mut c = Command::new(tool(program, "openssh-client"));
    c.args(["-F", "none", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!(
            "ProxyCommand={} proxy --proxy {proxy} --ca-file {} %h:%p",
            crate::tunnel_binary().display(),
            dir.join("ca.pem").display()
        ))
        .arg("-i")
        .arg(key)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env_remove("HEIM_TOKEN");
    c
}

/// `heim-tunnel proxy --proxy PROXY TARGET` with `input` on stdin and
/// `HEIM_TOKEN=token`: its exit code, stdout and stderr.
pub fn tunnel_proxy(
    proxy: &str,
    dir: &Path,
    target: &str,
    token: &str,
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(crate::tunnel_binary())
        .args(["proxy", "--proxy", proxy, "--ca-file"])
        .arg(dir.join("ca.pem"))
        .arg(target)
        .env("HEIM_TOKEN", token)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
