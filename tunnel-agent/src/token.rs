//! CLI tokens: signing in through the browser (PKCE, a one-time code to a
//! loopback port), keeping the token per proxy origin, refreshing it.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Failure, Proxy, EXIT_NOT_SIGNED_IN, EXIT_USAGE};

/// What is kept for one proxy origin (mode 0600).
#[derive(Serialize, Deserialize)]
struct Kept {
    origin: String,
    user: String,
    access_token: String,
    expires_at: u64,
    refresh_token: String,
    refresh_expires_at: u64,
}

/// What `/.heim/cli/token` answers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
    user: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `$XDG_CONFIG_HOME/heim` (else `~/.config/heim`).
fn dir() -> Result<PathBuf, Failure> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| Failure::new(EXIT_USAGE, "neither XDG_CONFIG_HOME nor HOME is set"))?;
    Ok(base.join("heim"))
}

/// The file for `origin`: `tokens/<host>_<port>.json`.
fn path(p: &Proxy) -> Result<PathBuf, Failure> {
    Ok(dir()?
        .join("tokens")
        .join(format!("{}_{}.json", p.host, p.port)))
}

fn load(p: &Proxy) -> Option<Kept> {
    let text = std::fs::read_to_string(path(p).ok()?).ok()?;
    serde_json::from_str::<Kept>(&text)
        .ok()
        .filter(|k| k.origin == p.origin)
}

fn store(p: &Proxy, kept: &Kept) -> Result<(), Failure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let file = path(p)?;
    let io = |e: std::io::Error| Failure::new(EXIT_USAGE, format!("{}: {e}", file.display()));
    let parent = file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io)?;
    for d in [parent.to_path_buf(), dir()?] {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(
        serde_json::to_string_pretty(kept)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(io)?;
    std::fs::rename(&tmp, &file).map_err(io)
}

/// A bearer token for `p`: `HEIM_TOKEN`, else the kept one (refreshed when
/// it has expired and the session has not).
pub async fn bearer(p: &Proxy) -> Option<String> {
    if let Some(t) = std::env::var("HEIM_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Some(t);
    }
    kept_bearer(p).await
}

/// The kept token (refreshed when it is about to expire), never HEIM_TOKEN.
async fn kept_bearer(p: &Proxy) -> Option<String> {
    let kept = load(p)?;
    let t = now();
    if kept.expires_at > t + 30 {
        return Some(kept.access_token);
    }
    if kept.refresh_expires_at <= t {
        return None;
    }
    let form = format!(
        "grant_type=refresh_token&refresh_token={}",
        kept.refresh_token
    );
    exchange(p, form).await.ok()
}

/// Posts a grant to `/.heim/cli/token` and keeps what it gives.
async fn exchange(p: &Proxy, form: String) -> Result<String, Failure> {
    let req = Request::post("/.heim/cli/token")
        .header(http::header::HOST, p.host.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
    let (status, body) = p.request(req).await?;
    if status != StatusCode::OK {
        return Err(Failure::new(
            EXIT_NOT_SIGNED_IN,
            format!(
                "heim refused the sign-in ({status}): {}",
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| Failure::new(EXIT_NOT_SIGNED_IN, format!("heim's token answer: {e}")))?;
    let n = now();
    store(
        p,
        &Kept {
            origin: p.origin.clone(),
            user: t.user,
            access_token: t.access_token.clone(),
            expires_at: n + t.expires_in,
            refresh_token: t.refresh_token,
            refresh_expires_at: n + t.refresh_expires_in,
        },
    )?;
    Ok(t.access_token)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How long the browser sign-in may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Signs in through the browser; returns (and keeps) the access token.
pub async fn login(p: &Proxy, no_browser: bool) -> Result<String, Failure> {
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw)
        .map_err(|_| Failure::new(EXIT_USAGE, "the system random generator failed"))?;
    let verifier = b64(&raw);
    let challenge =
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(EXIT_USAGE, format!("cannot listen on loopback: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?
        .port();
    let url = format!(
        "{}/.heim/cli/login?port={port}&challenge={challenge}",
        p.origin
    );
    eprintln!("heim-tunnel: sign in at {url}");
    if !no_browser {
        let opened = ["xdg-open", "open"].iter().any(|cmd| {
            std::process::Command::new(cmd)
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .is_ok()
        });
        if !opened {
            eprintln!("heim-tunnel: no browser could be opened: open the URL above");
        }
    }
    let code = tokio::time::timeout(LOGIN_TIMEOUT, callback(&listener))
        .await
        .map_err(|_| Failure::new(EXIT_NOT_SIGNED_IN, "no sign-in within 5 minutes"))??;
    let token = exchange(
        p,
        format!("grant_type=authorization_code&code={code}&code_verifier={verifier}"),
    )
    .await?;
    eprintln!("heim-tunnel: signed in to {}", p.origin);
    Ok(token)
}

/// Waits for `GET /callback?code=...` on the loopback listener.
async fn callback(listener: &tokio::net::TcpListener) -> Result<String, Failure> {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            continue;
        };
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf[n..])).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(k)) => n += k,
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let code = target
            .strip_prefix("/callback?")
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("code=")))
            .filter(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        let (status, text) = match code {
            Some(_) => (
                "200 OK",
                "Signed in: heim-tunnel has its token. You can close this tab.",
            ),
            None => ("404 Not Found", "Not heim's sign-in callback."),
        };
        let _ = tcp
            .write_all(
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
                .as_bytes(),
            )
            .await;
        if let Some(code) = code {
            return Ok(code.to_owned());
        }
    }
}

/// Forgets the kept token.
pub async fn logout(p: &Proxy) -> Result<(), Failure> {
    let file = path(p)?;
    // End the session at heim first (its open tunnels are cut), then forget
    // the token; heim being away does not keep the token here.
    if load(p).is_some() {
        if let Some(token) = kept_bearer(p).await {
            let req = Request::post("/.heim/cli/logout")
                .header(http::header::HOST, p.host_header())
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .map_err(|e| Failure::new(EXIT_USAGE, e.to_string()))?;
            match p.request(req).await {
                Ok((status, _)) if status.is_success() => {}
                Ok((status, _)) => eprintln!(
                    "heim-tunnel: {} answered {status} to the sign-out; the token is forgotten here",
                    p.origin
                ),
                Err(f) => eprintln!(
                    "heim-tunnel: {} (the session stays open at heim until it expires)",
                    f.message
                ),
            }
        }
    }
    match std::fs::remove_file(&file) {
        Ok(()) => {
            eprintln!("heim-tunnel: signed out of {} (token removed)", p.origin);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("heim-tunnel: not signed in to {}", p.origin);
            Ok(())
        }
        Err(e) => Err(Failure::new(EXIT_USAGE, format!("{}: {e}", file.display()))),
    }
}

/// Who the kept token is for, and until when.
pub fn status(p: &Proxy) -> Result<(), Failure> {
    match load(p) {
        Some(k) if k.refresh_expires_at > now() => {
            println!(
                "{}: signed in as {} (session ends in {} s)",
                p.origin,
                k.user,
                k.refresh_expires_at - now()
            );
            Ok(())
        }
        _ => Err(Failure::new(
            EXIT_NOT_SIGNED_IN,
            format!("not signed in to {}", p.origin),
        )),
    }
}
