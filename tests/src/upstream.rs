//! Real upstream servers for the tests, on loopback, port 0.
//!
//! The HTTP ones answer JSON describing the request they received (what
//! heim forwarded), plus a few behaviours a test can ask for by path:
//! `/slow?ms=N` (answer late), `/status/N` (answer with status N),
//! `/stream?chunks=N` (a chunked body of N pieces), `.../stall` (a body that
//! stops after 10 of its 100 bytes).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests (or WebSocket sessions) served so far.
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// `http://ADDR`, for heim's `upstream = [...]`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    name: &'static str,
    req: http::Request<Incoming>,
) -> Result<http::Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let query = parts.uri.query().unwrap_or("");
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let path = parts.uri.path().to_string();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(param("ms").unwrap_or(1000))).await;
    }
    if path == "/stream" {
        let n = param("chunks").unwrap_or(3);
        let chunks = futures_util::stream::iter(
            (0..n).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk{i}\n"))))),
        );
        let body = BodyExt::boxed(StreamBody::new(chunks));
        return Ok(http::Response::builder()
            .header("x-upstream", name)
            .body(body)
            .expect("response"));
    }
    if path.ends_with("/stall") {
        // Promises 100 bytes, sends 10, then nothing, ever.
        let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"0123456789"),
        ))])
        .chain(futures_util::stream::pending());
        let body = BodyExt::boxed(StreamBody::new(chunks));
        let resp = http::Response::builder()
            .header("content-length", "100")
            .body(body);
        return Ok(resp.expect("response"));
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::Array(a)) => a.push(v.into()),
            _ => {
                headers.insert(
                    k.as_str().to_string(),
                    serde_json::Value::Array(vec![v.into()]),
                );
            }
        }
    }
    let doc = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": path,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    });
    let resp = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=60")
        .body(BodyExt::boxed(Full::new(Bytes::from(doc.to_string()))))
        .expect("response");
    Ok(resp)
}

async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// Accepts connections on a fresh loopback port and hands each to `conn`
/// with the request counter; counts connections.
async fn serve<F, Fut>(conn: F) -> Upstream
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (l, _) = listen().await;
    serve_on(l, conn)
}

/// Like [`serve`], on a listener of the caller's (one in a test network
/// namespace, say).
fn serve_on<F, Fut>(l: TcpListener, conn: F) -> Upstream
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = l.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (h, c) = (hits.clone(), connections.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            c.fetch_add(1, SeqCst);
            tokio::spawn(conn(tcp, h.clone()));
        }
    });
    Upstream {
        addr,
        hits,
        connections,
        task,
    }
}

/// An HTTP/1.1 upstream named `name` (its answers carry `x-upstream: name`).
pub async fn http1(name: &'static str) -> Upstream {
    http1_closing_idle(name, None).await
}

/// An HTTP/1.1 upstream named `name` on `listener` (non-blocking; e.g.
/// [`crate::kube::Netns::listen`]).
pub fn http1_on(listener: std::net::TcpListener, name: &'static str) -> Upstream {
    let l = TcpListener::from_std(listener).expect("a non-blocking listener");
    serve_on(l, move |tcp, hits| async move {
        let svc = service_fn(move |req| {
            hits.fetch_add(1, SeqCst);
            answer(name, req)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
}

/// An HTTP/1.1 upstream that closes keep-alive connections idle for
/// `idle` (like many app servers do, often without saying so).
pub async fn http1_closing_idle(name: &'static str, idle: Option<Duration>) -> Upstream {
    serve(move |tcp, hits| async move {
        let svc = service_fn(move |req| {
            hits.fetch_add(1, SeqCst);
            answer(name, req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        if let Some(idle) = idle {
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle);
        }
        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
    })
    .await
}

/// An HTTP/2 upstream over cleartext (prior knowledge), named `name`.
pub async fn h2c(name: &'static str) -> Upstream {
    serve(move |tcp, hits| async move {
        let svc = service_fn(move |req| {
            hits.fetch_add(1, SeqCst);
            answer(name, req)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

/// An upstream that answers every request with the same raw bytes, then
/// closes the connection: for responses no well-behaved server would send
/// (conflicting framing and the like). It reads the request head first.
pub async fn raw_response(response: &'static [u8]) -> Upstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve(move |mut tcp, hits| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        hits.fetch_add(1, SeqCst);
        let _ = tcp.write_all(response).await;
        let _ = tcp.shutdown().await;
    })
    .await
}

/// A WebSocket server that echoes every message back.
pub async fn websocket_echo() -> Upstream {
    serve(|tcp, hits| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        hits.fetch_add(1, SeqCst);
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ws.send(msg).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// A real nginx (Debian's `nginx-light`) serving on loopback, stopped on drop.
pub struct Nginx {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Nginx {
    /// Starts nginx with `server_block` (the body of one `server { }`; it
    /// must not contain `listen`). Fails, saying how to get it, when nginx is
    /// not installed.
    pub fn start(dir: &std::path::Path, server_block: &str) -> anyhow::Result<Nginx> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| {
                anyhow::anyhow!("nginx is missing: apt-get install nginx-light (tests/run does)")
            })?;
        // nginx cannot listen on port 0 and report it: take a free port.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "master_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
                 fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n\
                 server {{\n    listen {addr};\n{server_block}\n  }}\n}}\n",
                dir = dir.display(),
            ),
        )?;
        let child = std::process::Command::new(nginx)
            .args(["-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            // One process (master_process off), no inherited pipes: killing
            // it leaves nothing behind holding the test runner's output.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let nginx = Nginx { addr, child };
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(nginx);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        anyhow::bail!("nginx did not start; see {}/nginx-error.log", dir.display())
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
