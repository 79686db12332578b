//! Regression tests for the holes an adversarial run found in the core
//! (issue 10): each shape is sent by hand over loopback, against the real
//! binary, and each would pass through or be misblamed without its fix.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use heim_e2e::{
    config, connect_from, env, metric, raw_status, route, up, upstream, wait_until, Heim,
};

/// RFC 9112 §6.3: an upstream response with both `Content-Length` and
/// `Transfer-Encoding: chunked` is framed by its chunks, and the stale
/// length is not passed on (it truncated the body for HTTP/1.1 clients and
/// broke HTTP/2 streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_content_length_with_chunked_is_framed_by_the_chunks() {
    let e = env("cl-te");
    let u = upstream::raw_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&u)))).expect("start");

    let (out, _) = e
        .client
        .raw(
            heim.https,
            "app.test",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(raw_status(&out), 200, "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(!lower.contains("content-length: 3"), "{out}");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(
        body == "hello" || body.contains("\r\nhello\r\n"),
        "the whole body, by its chunks: {out:?}"
    );

    let r = e
        .client
        .request_h2(heim.https, heim_e2e::get("app.test", "/"))
        .await
        .expect("an HTTP/2 client gets a well-framed stream");
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello");
    assert!(r.headers.get("content-length").is_none_or(|v| v == "5"));
}

/// `\` and `%5C` are `/` to Node, IIS and some Java servers: the route is
/// chosen as if they were, so `/public\..\admin` meets `/admin`'s policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslashes_cannot_climb_out_of_a_public_route() {
    let e = env("backslash");
    let routes = format!(
        "{}[[route]]\nhost = \"app.test\"\npath = \"/admin\"\necho = true\n",
        route("app.test", "/", "echo = true")
    );
    let heim = Heim::start(&e.dir, &config("", &routes)).expect("start");
    for path in [
        "/public\\..\\admin",
        "/public\\..\\admin\\users",
        "/public%5C..%5Cadmin",
        "/public%5c%2e%2e%5cadmin",
        "/admin\\",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let (out, _) = e
            .client
            .raw(
                heim.https,
                "app.test",
                raw.as_bytes(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(raw_status(&out), 403, "{path}: {out}");
    }
    // Climbing above the root the same way is a 400.
    let (out, _) = e
        .client
        .raw(
            heim.https,
            "app.test",
            b"GET /a\\..\\..\\etc HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(raw_status(&out), 400, "{out}");
    let r = e
        .client
        .get(heim.https, "app.test", "/public")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// RFC 9113 §8.3.1: `:authority` and `host` that disagree make the request
/// malformed (nginx: 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let e = env("authority");
    let routes = format!(
        "{}{}",
        route("app.test", "/", "echo = true"),
        route("other.wild.test", "/", "echo = true")
    );
    let heim = Heim::start(&e.dir, &config("", &routes)).expect("start");
    let cases = [
        (Some("other.wild.test"), 400),
        (Some("App.Test"), 200),
        (Some("app.test"), 200),
        (None, 200),
    ];
    for (host, want) in cases {
        let (mut h2, _conn) = e.client.h2(heim.https, "app.test").await.unwrap();
        let mut req = http::Request::get("https://app.test/");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (resp, _) = h2.send_request(req.body(()).unwrap(), true).unwrap();
        let resp = resp.await.expect("a response");
        assert_eq!(resp.status().as_u16(), want, "host {host:?}");
    }
}

/// RFC 9112 §3.2: two `Host` lines, or a `Host` that disagrees with an
/// absolute-form target, get a 400; heim never picks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_host_must_be_single_and_agree_with_the_target() {
    let e = env("two-hosts");
    let routes = format!(
        "{}{}",
        route("app.test", "/", "echo = true"),
        route("b.wild.test", "/", "echo = true")
    );
    let heim = Heim::start(&e.dir, &config("", &routes)).expect("start");
    let cases: [(&[u8], u16); 5] = [
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: b.wild.test\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n",
            400,
        ),
        (
            b"GET http://b.wild.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
            400,
        ),
        (
            b"GET https://app.test/ HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            200,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
            200,
        ),
    ];
    for (raw, want) in cases {
        let (out, _) = e
            .client
            .raw(heim.https, "app.test", raw, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            raw_status(&out),
            want,
            "{:?}: {out}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// A request body that breaks its chunked framing is the client's fault:
/// 400, counted as a client error, never as an upstream protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_client_errors() {
    let e = env("bad-chunks");
    let u = upstream::http1("a").await;
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&u)))).expect("start");
    let head = "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(100 * 1024));
    let bodies: [&str; 4] = [
        "fffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\nhello\n0\n\n",
        &long_ext,
        "3\r\nhello\r\n0\r\n\r\n",
    ];
    for body in bodies {
        let raw = format!("{head}{body}");
        let (out, _) = e
            .client
            .raw(
                heim.https,
                "app.test",
                raw.as_bytes(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(
            raw_status(&out),
            400,
            "{:?}: {out}",
            &body[..body.len().min(40)]
        );
    }
    let (_, m) = heim.admin("/metrics");
    assert_eq!(
        metric(&m, "heim_upstream_errors_total{kind=\"protocol\"}"),
        Some(0),
        "a client's broken body is no upstream error:\n{m}"
    );
    assert_eq!(
        metric(&m, "heim_client_errors_total{kind=\"malformed_body\"}"),
        Some(4),
        "{m}"
    );
    // The upstream connections those requests used were closed, not
    // pooled: the next request needs a new one.
    let opened = u.connections.load(SeqCst);
    // heim and the upstream still serve.
    let r = e.client.get(heim.https, "app.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(u.connections.load(SeqCst), opened + 1);
}

/// Rapid reset after accept: waves of 100 streams to a slow route, each
/// reset once it has reached the backend. The h2 crate only counts resets
/// of streams not yet accepted; heim counts the rest and ends the
/// connection with GOAWAY `ENHANCE_YOUR_CALM` long before 5,000 streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_after_accept_ends_in_enhance_your_calm() {
    let e = env("rapid-reset");
    let u = upstream::http1("slow").await;
    let heim = Heim::start(
        &e.dir,
        &config("workers = 1", &route("app.test", "/", &up(&u))),
    )
    .expect("start");
    let (mut h2, conn) = e.client.h2(heim.https, "app.test").await.unwrap();
    let mut sent = 0;
    'waves: for _ in 0..50 {
        let before = u.hits.load(SeqCst);
        let mut wave = Vec::new();
        for _ in 0..100 {
            h2 = match h2.ready().await {
                Ok(h2) => h2,
                Err(_) => break 'waves,
            };
            let req = http::Request::get("https://app.test/slow?ms=10000")
                .body(())
                .unwrap();
            match h2.send_request(req, true) {
                Ok((_, stream)) => wave.push(stream),
                Err(_) => break 'waves,
            }
            sent += 1;
        }
        let n = wave.len();
        let reached = wait_until(Duration::from_secs(10), || {
            u.hits.load(SeqCst) >= before + n || conn.is_finished()
        })
        .await;
        assert!(reached, "the wave never reached the backend");
        for mut s in wave {
            s.send_reset(h2::Reason::CANCEL);
        }
        if conn.is_finished() {
            break;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("heim ends the connection")
        .unwrap();
    let err = ended.expect_err("a GOAWAY with an error code");
    // The client may still be writing resets when heim closes after its
    // GOAWAY; it then reports the broken pipe instead of the GOAWAY. heim's
    // own count (below) says the GOAWAY went out either way.
    if !err.is_io() {
        assert!(err.is_go_away(), "{err:?}");
        assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
    }
    assert!(sent <= 400, "{sent} streams before the GOAWAY");
    let hits = u.hits.load(SeqCst);
    assert!(hits <= 400, "{hits} requests reached the backend");
    let (_, m) = heim.admin("/metrics");
    assert_eq!(
        metric(&m, "heim_h2_enhance_your_calm_total"),
        Some(1),
        "{m}"
    );
    // Others are served as before.
    let r = e.client.get(heim.https, "app.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
}

/// `keepalive_requests`: after that many requests a connection is closed,
/// with `Connection: close` (HTTP/1.1) or a GOAWAY `NO_ERROR` (HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_end_after_keepalive_requests() {
    let e = env("keepalive-requests");
    let heim = Heim::start(
        &e.dir,
        &config(
            "keepalive_requests = 3",
            &route("app.test", "/", "echo = true"),
        ),
    )
    .expect("start");
    let mut h1 = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    for i in 1..=3 {
        let r = h1.send(heim_e2e::get("app.test", "/")).await.unwrap();
        assert_eq!(r.status, 200);
        let close = r.headers.get("connection").is_some_and(|v| v == "close");
        assert_eq!(close, i == 3, "request {i}");
    }
    assert!(h1.send(heim_e2e::get("app.test", "/")).await.is_err());

    let (mut h2, conn) = e.client.h2(heim.https, "app.test").await.unwrap();
    for _ in 0..3 {
        h2 = h2.ready().await.unwrap();
        let req = http::Request::get("https://app.test/").body(()).unwrap();
        let (resp, _) = h2.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 200);
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("heim ends the HTTP/2 connection")
        .unwrap();
    // A graceful GOAWAY; the client may still be writing its last acks
    // when heim closes, which it sees as a broken pipe.
    if let Err(e) = ended {
        assert!(
            e.is_io() || e.reason() == Some(h2::Reason::NO_ERROR),
            "{e:?}"
        );
    }
}

/// `upstream_max_connections` per endpoint and worker: a burst waits in
/// line for pooled connections instead of opening one each; past
/// `upstream_queue_size` a request gets 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_capped_and_requests_wait_in_line() {
    let e = env("upstream-cap");
    let u = upstream::http1("capped").await;
    let heim = Heim::start(
        &e.dir,
        &config(
            "workers = 1\nupstream_max_connections = 2\nupstream_queue_size = 3",
            &route("app.test", "/", &up(&u)),
        ),
    )
    .expect("start");
    let (mut h2, _conn) = e.client.h2(heim.https, "app.test").await.unwrap();
    let mut responses = Vec::new();
    for _ in 0..10 {
        h2 = h2.ready().await.unwrap();
        let req = http::Request::get("https://app.test/slow?ms=1000")
            .body(())
            .unwrap();
        responses.push(h2.send_request(req, true).unwrap().0);
    }
    let mut statuses = Vec::new();
    for r in responses {
        statuses.push(r.await.unwrap().status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503, 503, 503]);
    assert_eq!(
        u.connections.load(SeqCst),
        2,
        "two connections served all five"
    );
    let (_, m) = heim.admin("/metrics");
    assert_eq!(
        metric(&m, "heim_upstream_errors_total{kind=\"busy\"}"),
        Some(5),
        "{m}"
    );
}

const V1: &[u8] = b"PROXY TCP4 198.51.100.7 203.0.113.1 5000 443\r\n";

fn v2_header() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend([198, 51, 100, 9, 203, 0, 113, 1]);
    h.extend(5001u16.to_be_bytes());
    h.extend(443u16.to_be_bytes());
    h
}

/// PROXY protocol v1 and v2 from a trusted balancer give the client's
/// address to the logs, `X-Forwarded-For`/`X-Real-IP` and the echo; from
/// anyone else, or malformed, or missing, the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_from_trusted_balancers_only() {
    use tokio::io::AsyncWriteExt;
    let e = env("proxy-protocol");
    let heim = Heim::start(
        &e.dir,
        &config(
            "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.2/32\"]",
            &route("app.test", "/", "echo = true"),
        ),
    )
    .expect("start");
    let balancer: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let direct: std::net::IpAddr = "127.0.0.1".parse().unwrap();

    for (header, client) in [(V1.to_vec(), "198.51.100.7"), (v2_header(), "198.51.100.9")] {
        let mut tcp = connect_from(balancer, heim.https).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let r = e
            .client
            .request_on(tcp, heim_e2e::get("app.test", "/"))
            .await
            .expect("served after the header");
        let j = r.json();
        assert_eq!(j["remote_addr"], client);
        assert_eq!(j["headers"]["x-forwarded-for"], client);
        assert_eq!(j["headers"]["x-real-ip"], client);
    }
    assert!(heim.wait_log(r#""remote":"198.51.100.9""#, Duration::from_secs(5)));

    // A direct client (not a trusted proxy) is served as itself...
    let tcp = connect_from(direct, heim.https).await.unwrap();
    let r = e
        .client
        .request_on(tcp, heim_e2e::get("app.test", "/"))
        .await
        .unwrap();
    assert_eq!(r.json()["remote_addr"], "127.0.0.1");

    // ...but may not send a header; nor may a balancer send a broken one,
    // or none at all.
    let refused: [(std::net::IpAddr, Vec<u8>); 4] = [
        (direct, V1.to_vec()),
        (direct, v2_header()),
        (
            balancer,
            b"PROXY TCP4 198.51.100.7 203.0.113.1 99999 443\r\n".to_vec(),
        ),
        (balancer, Vec::new()),
    ];
    for (from, header) in &refused {
        let mut tcp = connect_from(*from, heim.https).await.unwrap();
        tcp.write_all(header).await.unwrap();
        let r = e
            .client
            .request_on(tcp, heim_e2e::get("app.test", "/"))
            .await;
        assert!(
            r.is_err(),
            "from {from} with {:?}",
            String::from_utf8_lossy(header)
        );
    }
    assert!(heim.wait_metric(
        "heim_client_errors_total{kind=\"proxy_protocol\"} 4",
        Duration::from_secs(5)
    ));
}

/// `X-Forwarded-For` and `-Proto` are believed from trusted proxies only:
/// the rightmost untrusted hop is the client, and a balancer that
/// terminated TLS is not redirected to https again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_from_trusted_proxies_only() {
    let e = env("trusted-xff");
    let heim = Heim::start(
        &e.dir,
        &config(
            "trusted_proxies = [\"127.0.0.2\"]",
            &route("app.test", "/", "echo = true"),
        ),
    )
    .expect("start");
    let req = || {
        http::Request::get("/")
            .header("host", "app.test")
            .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
            .header("x-forwarded-proto", "https")
            .body(heim_e2e::Body::default())
            .unwrap()
    };
    let from = |ip: &str| ip.parse::<std::net::IpAddr>().unwrap();

    let tcp = connect_from(from("127.0.0.2"), heim.https).await.unwrap();
    let j = e.client.request_on(tcp, req()).await.unwrap().json();
    assert_eq!(j["remote_addr"], "198.51.100.7");
    assert_eq!(j["headers"]["x-forwarded-for"], "198.51.100.7, 127.0.0.2");
    assert_eq!(j["headers"]["x-real-ip"], "198.51.100.7");

    let tcp = connect_from(from("127.0.0.1"), heim.https).await.unwrap();
    let j = e.client.request_on(tcp, req()).await.unwrap().json();
    assert_eq!(j["remote_addr"], "127.0.0.1");
    assert_eq!(j["headers"]["x-forwarded-for"], "127.0.0.1");

    // Plain HTTP: a trusted proxy's `X-Forwarded-Proto: https` (with or
    // without a chain) is served, anyone else's is redirected.
    let http = heim.http.expect("http listener");
    for (ip, xff, want) in [
        ("127.0.0.2", "X-Forwarded-For: 198.51.100.7\r\n", "200"),
        ("127.0.0.2", "", "200"),
        ("127.0.0.1", "X-Forwarded-For: 198.51.100.7\r\n", "308"),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = connect_from(from(ip), http).await.unwrap();
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-Proto: https\r\n{xff}Connection: close\r\n\r\n"
        );
        tcp.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert_eq!(&out[9..12], want, "from {ip} {xff:?}: {out}");
        if want == "200" {
            let body = out.split_once("\r\n\r\n").unwrap().1;
            assert!(body.contains("\"x-forwarded-port\": \"443\""), "{body}");
        }
    }
}

/// `websocket_idle_timeout` closes a spliced WebSocket that carries no
/// byte for that long, and only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_are_closed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let e = env("ws-idle");
    let ws = upstream::websocket_echo().await;
    let heim = Heim::start(
        &e.dir,
        &config(
            "websocket_idle_timeout = \"1s\"",
            &route("app.test", "/", &up(&ws)),
        ),
    )
    .expect("start");
    let (tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("wss://app.test/chat", tls)
        .await
        .expect("websocket handshake");
    // Busy for longer than the idle timeout: kept.
    let mut ticks = tokio::time::interval(Duration::from_millis(300));
    for i in 0..6 {
        ticks.tick().await;
        socket.send(Message::text(format!("m{i}"))).await.unwrap();
        let back = socket.next().await.expect("open").expect("a message");
        assert_eq!(back.into_text().unwrap().as_str(), format!("m{i}"));
    }
    // Then quiet: closed.
    let end = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("heim closes the idle WebSocket");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(heim.wait_metric("heim_connections_open 0\n", Duration::from_secs(5)));
}

/// A drain waits for spliced WebSockets up to `drain_timeout` (they keep
/// working meanwhile), then heim exits and they are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_websockets_then_closes_them() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let e = env("ws-drain");
    let ws = upstream::websocket_echo().await;
    let mut heim = Heim::start(
        &e.dir,
        &config("drain_timeout = \"2s\"", &route("app.test", "/", &up(&ws))),
    )
    .expect("start");
    let (tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("wss://app.test/chat", tls)
        .await
        .expect("websocket handshake");
    heim.signal("TERM");
    assert!(heim.wait_log("draining", Duration::from_secs(5)));
    assert_eq!(heim.admin("/readyz").0, 503);
    socket
        .send(Message::text("during the drain"))
        .await
        .unwrap();
    let back = socket.next().await.expect("open").expect("a message");
    assert_eq!(back.into_text().unwrap().as_str(), "during the drain");
    assert!(
        heim.child.try_wait().unwrap().is_none(),
        "heim waits for it"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("closed when the drain ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let exited = wait_until(Duration::from_secs(10), || {
        heim.child.try_wait().ok().flatten().is_some()
    })
    .await;
    assert!(exited, "heim exits after drain_timeout");
    assert!(
        heim.log_text().contains(r#""left":1"#),
        "{}",
        heim.log_text()
    );
}

/// A peer that says nothing on a PROXY protocol listener is not waited for
/// past `handshake_timeout`, trusted or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_on_a_proxy_protocol_listener_are_cut_off() {
    let e = env("pp-silent");
    let heim = Heim::start(
        &e.dir,
        &config(
            "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.2\"]\nhandshake_timeout = \"1s\"",
            &route("app.test", "/", "echo = true"),
        ),
    )
    .expect("start");
    let mut held = Vec::new();
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.1"] {
        held.push(
            connect_from(from.parse().unwrap(), heim.https)
                .await
                .unwrap(),
        );
    }
    held.push(
        connect_from("127.0.0.1".parse().unwrap(), heim.http.unwrap())
            .await
            .unwrap(),
    );
    assert!(heim.wait_metric("heim_connections_open 4\n", Duration::from_secs(5)));
    assert!(
        heim.wait_metric("heim_connections_open 0\n", Duration::from_secs(10)),
        "silent peers still held"
    );
    drop(held);
}

/// Idle upstream connections the pool has given up on hold no place in
/// `upstream_max_connections`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_idle_connections_free_their_place() {
    let e = env("cap-expired");
    let u = upstream::http1("capped").await;
    let heim = Heim::start(
        &e.dir,
        &config(
            "workers = 1\nupstream_max_connections = 2\nupstream_queue_size = 0\nupstream_idle_timeout = \"300ms\"",
            &route("app.test", "/", &up(&u)),
        ),
    )
    .expect("start");
    let burst = |path: &'static str| {
        let client = e.client.clone();
        let addr = heim.https;
        async move {
            let a = client.get(addr, "app.test", path);
            let b = client.get(addr, "app.test", path);
            let (a, b) = tokio::join!(a, b);
            [a.unwrap().status, b.unwrap().status]
        }
    };
    assert_eq!(burst("/slow?ms=200").await, [200, 200]);
    // Both connections idle past upstream_idle_timeout (the behaviour under
    // test is a timeout, so the test waits it out).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(burst("/slow?ms=200").await, [200, 200], "no false 503");
}

/// A WebSocket on a connection's last request (`keepalive_requests`) keeps
/// its `Connection: upgrade`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_the_last_request_still_upgrades() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let e = env("ws-last");
    let ws = upstream::websocket_echo().await;
    let heim = Heim::start(
        &e.dir,
        &config("keepalive_requests = 1", &route("app.test", "/", &up(&ws))),
    )
    .expect("start");
    let (tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    let (mut socket, resp) = tokio_tungstenite::client_async("wss://app.test/chat", tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    socket.send(Message::text("hi")).await.unwrap();
    let back = socket.next().await.expect("open").expect("a message");
    assert_eq!(back.into_text().unwrap().as_str(), "hi");
}

/// An idle HTTP/1 keep-alive connection parks without hyper's buffers
/// (issue 10's memory per idle connection) and serves its next request as
/// if nothing happened: plain, with a body, and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_keepalive_connections_serve_their_next_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = env("park");
    let u = upstream::http1("a").await;
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&u)))).expect("start");
    let mut c = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    for i in 0..3 {
        let r = c.send(heim_e2e::get("app.test", "/")).await.unwrap();
        assert_eq!(r.status, 200, "request {i}");
        // Longer than park::PARK_AFTER: the connection parks in between
        // (the behaviour under test is idleness, so the test idles).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let post = http::Request::post("/upload")
        .header("host", "app.test")
        .body(heim_e2e::Body::from("x".repeat(5000)))
        .unwrap();
    let r = c.send(post).await.unwrap();
    assert_eq!(r.json()["body_len"], 5000);
    // Two requests in one write after parking: both answered, in order.
    let (mut tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    tls.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    tls.write_all(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\nGET /b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("both answered, then closed")
        .ok();
    let text = String::from_utf8_lossy(&out);
    let a = text.find("\"path\":\"/a\"").expect("/a answered");
    let b = text.find("\"path\":\"/b\"").expect("/b answered");
    assert!(a < b, "{text}");
}
