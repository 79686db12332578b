//! End-to-end tests of `heim-proxy`: the real binary, real TLS, real
//! upstream servers on loopback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use heim_e2e::{cert_names, config, env, get, header, route, up, upstream, Body, Client, Heim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_with_ingress_semantics() {
    let e = env("routing");
    let (a, b) = (upstream::http1("a").await, upstream::http1("b").await);
    let routes = [
        route("app.test", "/", &up(&a)),
        route("app.test", "/api", &up(&b)),
        route(
            "app.test",
            "/api/exact\"\npath_type = \"Exact",
            "echo = true",
        ),
        route("*.wild.test", "/", &up(&b)),
        format!(
            "[[route]]\nhost = \"app.test\"\npath = \"/private\"\n{}\n",
            up(&a)
        ),
    ]
    .concat();
    let heim = Heim::start(&e.dir, &config("", &routes)).expect("start");
    // Certificates are not under test here (see the SNI test): hosts
    // without one of their own get the default certificate.
    let client = Client::any_certificate();
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        ("app.test", "/", 200, Some("a")),
        ("app.test", "/api", 200, Some("b")),
        ("app.test", "/api/", 200, Some("b")),
        ("app.test", "/api/v1?x=1", 200, Some("b")),
        ("app.test", "/apix", 200, Some("a")),
        ("app.test", "/api/exact", 200, None),
        ("app.test", "/api/exact/more", 200, Some("b")),
        ("x.wild.test", "/anything", 200, Some("b")),
        ("a.b.wild.test", "/", 404, None),
        ("unknown.test", "/", 404, None),
        ("app.test", "/private", 403, None),
        ("app.test", "/private/x", 403, None),
        ("APP.test:443", "/api", 200, Some("b")),
    ];
    for (host, path, status, from) in cases {
        let r = client
            .request(heim.https, get(host, path))
            .await
            .unwrap_or_else(|err| panic!("{host}{path}: {err}"));
        assert_eq!(r.status, *status, "{host}{path}: {:?}", r.body);
        let got = r.headers.get("x-upstream").map(|v| v.to_str().unwrap());
        assert_eq!(got, *from, "{host}{path}");
    }
    // The echo route says which route it is.
    let r = e
        .client
        .get(heim.https, "app.test", "/api/exact")
        .await
        .unwrap();
    assert_eq!(r.json()["route"], "app.test/api/exact");

    // Dot segments are resolved before routing, and the upstream sees the
    // same path heim matched: no `/public/../private` bypass. Encoded
    // slashes are decoded for routing, as a backend may decode them.
    for raw in [
        "/x/../private",
        "/x/%2e%2e/private",
        "//private",
        "/private%2Fx",
        "/x%2F..%2Fprivate",
        "/%70rivate",
        "/%50rivate/../private",
        "/private;jsessionid=x",
        "/x/..;/private",
    ] {
        let r = e.client.get(heim.https, "app.test", raw).await.unwrap();
        assert_eq!(r.status, 403, "{raw}");
    }
    let r = e
        .client
        .get(heim.https, "app.test", "/x/%2E%2E/api/v2?q=1")
        .await
        .unwrap();
    assert_eq!(r.headers["x-upstream"], "b");
    assert_eq!(r.json()["uri"], "/api/v2?q=1");
    let (out, _) = e
        .client
        .raw(
            heim.https,
            "app.test",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_exact_then_wildcard_then_default() {
    let e = env("sni");
    let heim =
        Heim::start(&e.dir, &config("", &route("app.test", "/", "echo = true"))).expect("start");
    let any = Client::any_certificate();
    let cases = [
        ("app.test", "app.test"),
        ("foo.wild.test", "*.wild.test"),
        ("a.b.wild.test", "default.test"),
        ("unknown.test", "default.test"),
        ("APP.TEST", "app.test"),
    ];
    for (sni, want) in cases {
        let (_, cert) = any.tls(heim.https, sni, false).await.expect("handshake");
        assert_eq!(cert_names(&cert), vec![want.to_string()], "SNI {sni}");
    }
    // And a verifying client accepts heim's certificate for its names.
    let (_, cert) = e
        .client
        .tls(heim.https, "app.test", true)
        .await
        .expect("verified h2 handshake");
    assert_eq!(cert_names(&cert), vec!["app.test".to_string()]);
    // Without SNI (a client dialing an IP) heim still serves its default.
    let (_, cert) = any
        .tls(heim.https, "127.0.0.1", false)
        .await
        .expect("no-SNI handshake");
    assert_eq!(cert_names(&cert), vec!["default.test".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_forged_identity_is_stripped() {
    let e = env("headers");
    let a = upstream::http1("a").await;
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&a)))).expect("start");
    let req = http::Request::get("/who?x=1")
        .header("host", "app.test")
        .header("x-heim-user", "admin@example.com")
        .header("X-Heim-Groups", "admins")
        .header("x-forwarded-user", "admin")
        .header("x_heim_user", "admin@example.com")
        .header("x-original-url", "/admin")
        .header("upgrade", "h2c")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("x-keep-me", "2")
        .body(Body::default())
        .unwrap();
    let r = e.client.request(heim.https, req).await.unwrap();
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(header(&j, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(j["headers"]["x-forwarded-for"].as_array().unwrap().len(), 1);
    assert_eq!(header(&j, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&j, "x-forwarded-host"), Some("app.test"));
    assert_eq!(header(&j, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&j, "host"), Some("app.test"));
    assert_eq!(header(&j, "x-keep-me"), Some("2"));
    for gone in [
        "x_heim_user",
        "x-original-url",
        "upgrade",
        "x-heim-user",
        "x-heim-groups",
        "x-forwarded-user",
        "x-drop-me",
    ] {
        assert!(
            j["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {j}"
        );
    }
    let id = header(&j, "x-request-id").expect("request id");
    assert_eq!(id.len(), 32);
    assert_eq!(j["uri"], "/who?x=1");

    // A sane client request id is kept; a hostile one is replaced.
    let mut conn = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    let keep = http::Request::get("/")
        .header("host", "app.test")
        .header("x-request-id", "trace-123")
        .body(Body::default())
        .unwrap();
    assert_eq!(
        header(&conn.send(keep).await.unwrap().json(), "x-request-id"),
        Some("trace-123")
    );
    let evil = http::Request::get("/")
        .header("host", "app.test")
        .header("x-request-id", "a\"b<script>")
        .body(Body::default())
        .unwrap();
    assert_ne!(
        header(&conn.send(evil).await.unwrap().json(), "x-request-id"),
        Some("a\"b<script>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downstream_and_h2c_upstream() {
    let e = env("h2");
    let (a, h2) = (upstream::http1("a").await, upstream::h2c("h2").await);
    let routes = [
        route("app.test", "/", &up(&a)),
        route(
            "x.wild.test",
            "/",
            &format!("{}\nupstream_protocol = \"h2c\"", up(&h2)),
        ),
    ]
    .concat();
    let heim = Heim::start(&e.dir, &config("workers = 1", &routes)).expect("start");

    // h2 client -> HTTP/1.1 upstream: the upstream sees an HTTP/1.1 request with a Host.
    let req = http::Request::get("https://app.test/p?q=1")
        .body(Body::default())
        .unwrap();
    let r = e.client.request_h2(heim.https, req).await.unwrap();
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["uri"], "/p?q=1");
    assert_eq!(header(&j, "host"), Some("app.test"));
    assert_eq!(header(&j, "x-forwarded-proto"), Some("https"));

    // HTTP/1.1 client and h2 client -> h2c upstream.
    let r = e
        .client
        .get(heim.https, "x.wild.test", "/over-h2c")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["path"], "/over-h2c");
    let req = http::Request::post("https://x.wild.test/post")
        .body(Body::from("hello"))
        .unwrap();
    let r = e.client.request_h2(heim.https, req).await.unwrap();
    assert_eq!(r.json()["body_len"], 5);
    assert_eq!(r.json()["method"], "POST");
    // The h2c connection is reused: one upstream connection for both requests.
    assert_eq!(h2.connections.load(SeqCst), 1);

    // Cookies an h2 client split over several fields reach an HTTP/1.1
    // upstream as one header (RFC 9113 §8.2.3).
    let req = http::Request::get("https://app.test/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Body::default())
        .unwrap();
    let j = e.client.request_h2(heim.https, req).await.unwrap().json();
    assert_eq!(j["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed() {
    let e = env("h2idle");
    let extra = "request_head_timeout = \"1s\"";
    let heim = Heim::start(
        &e.dir,
        &config(extra, &route("app.test", "/", "echo = true")),
    )
    .expect("start");
    let (tls, _) = e.client.tls(heim.https, "app.test", true).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Body>(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("https://app.test/")
        .body(Body::default())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    // Then nothing: heim ends the connection (GOAWAY) on its own.
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let e = env("ws");
    let ws = upstream::websocket_echo().await;
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&ws)))).expect("start");
    let (tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    let (mut socket, resp) = tokio_tungstenite::client_async("wss://app.test/chat", tls)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        let msg = format!("hello {i}");
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let back = socket.next().await.expect("a reply").expect("a message");
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
    assert_eq!(ws.hits.load(SeqCst), 1);
    // The spliced connection still counts against max_connections.
    assert!(heim
        .admin("/metrics")
        .1
        .contains("heim_connections_open 1\n"));
    socket.close(None).await.unwrap();
    drop(socket);
    let closed = heim.wait_metric("heim_connections_open 0\n", Duration::from_secs(5));
    assert!(closed, "the WebSocket pair was not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_give_502_504_and_round_robin_skips_dead_endpoints() {
    let e = env("failures");
    let (a, b) = (upstream::http1("a").await, upstream::http1("b").await);
    let dead = upstream::dead_addr();
    let routes = [
        route("app.test", "/", &format!("upstream = [\"http://{dead}\"]")),
        route(
            "app.test",
            "/slow",
            &format!("{}\nresponse_timeout = \"300ms\"", up(&a)),
        ),
        route(
            "x.wild.test",
            "/",
            &format!("upstream = [\"http://{dead}\", \"{}\"]", a.url()),
        ),
        route(
            "y.wild.test",
            "/",
            &format!("upstream = [\"{}\", \"{}\"]", a.url(), b.url()),
        ),
    ]
    .concat();
    let heim = Heim::start(&e.dir, &config("", &routes)).expect("start");

    let r = e.client.get(heim.https, "app.test", "/").await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(&r.body[..], b"502 Bad Gateway\n");
    let r = e
        .client
        .get(heim.https, "app.test", "/slow?ms=3000")
        .await
        .unwrap();
    assert_eq!(r.status, 504);

    // A slow upload is not a slow upstream: the response timeout (300ms)
    // starts once the body is in, so this 900ms upload succeeds.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tls, _) = e.client.tls(heim.https, "app.test", false).await.unwrap();
        tls.write_all(b"POST /slow?ms=0 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 30\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..3 {
            // The client's pace is what is under test here.
            tokio::time::sleep(Duration::from_millis(300)).await;
            tls.write_all(b"0123456789").await.unwrap();
        }
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("\"body_len\":30"), "{out}");
    }

    // A dead endpoint next to a live one: every request still succeeds
    // (connect failures are retried elsewhere, and the dead one is ejected).
    let mut conn = e
        .client
        .connect_h1(heim.https, "x.wild.test")
        .await
        .unwrap();
    for i in 0..10 {
        let r = conn.send(get("x.wild.test", "/")).await.unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.headers["x-upstream"], "a");
    }
    // A POST too: nothing was sent to the dead endpoint, so nothing is replayed.
    let post = http::Request::post("/")
        .header("host", "x.wild.test")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(conn.send(post).await.unwrap().status, 200);

    // Two live endpoints share the load.
    let mut conn = e
        .client
        .connect_h1(heim.https, "y.wild.test")
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let r = conn.send(get("y.wild.test", "/")).await.unwrap();
        seen.insert(r.headers["x-upstream"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // A body that stalls is cut off after response_timeout: the client sees
    // the response fail, it does not hang.
    let stalled = tokio::time::timeout(
        Duration::from_secs(20),
        e.client.get(heim.https, "app.test", "/slow/stall"),
    )
    .await
    .expect("a stalled body must not hang the client");
    assert!(
        stalled.is_err(),
        "a truncated body passed as complete: {stalled:?}"
    );

    let m = heim.admin("/metrics").1;
    assert!(
        m.contains("heim_upstream_errors_total{kind=\"connect\"}"),
        "{m}"
    );
    assert!(
        m.contains("heim_upstream_errors_total{kind=\"response_timeout\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_connections_are_reused() {
    let e = env("pool");
    let a = upstream::http1("a").await;
    let heim = Heim::start(
        &e.dir,
        &config("workers = 1", &route("app.test", "/", &up(&a))),
    )
    .expect("start");
    let mut conn = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    for _ in 0..20 {
        assert_eq!(conn.send(get("app.test", "/")).await.unwrap().status, 200);
    }
    // Streamed (chunked) bodies also hand the connection back when done.
    for _ in 0..5 {
        let r = conn
            .send(get("app.test", "/stream?chunks=4"))
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"chunk0\nchunk1\nchunk2\nchunk3\n");
    }
    assert_eq!(a.hits.load(SeqCst), 25);
    assert_eq!(
        a.connections.load(SeqCst),
        1,
        "one pooled upstream connection serves them all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_idle_connections_costs_no_request() {
    let e = env("stale");
    let a = upstream::http1_closing_idle("a", Some(Duration::from_millis(100))).await;
    let heim = Heim::start(
        &e.dir,
        &config("workers = 1", &route("app.test", "/", &up(&a))),
    )
    .expect("start");
    let mut conn = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    for i in 0..5 {
        let r = conn.send(get("app.test", "/")).await.unwrap();
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        // Idle past the upstream's keep-alive timeout: the pooled
        // connection heim holds is closed by the time the next request comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let post = http::Request::post("/")
        .header("host", "app.test")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(conn.send(post).await.unwrap().status, 200);
    assert_eq!(a.hits.load(SeqCst), 6);
    assert!(
        a.connections.load(SeqCst) >= 5,
        "the upstream closed its idle connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_routes_without_dropping_requests() {
    let e = env("reload");
    let (a, b) = (upstream::http1("a").await, upstream::http1("b").await);
    let heim = Heim::start(&e.dir, &config("", &route("app.test", "/", &up(&a)))).expect("start");

    // Keep-alive load on 4 connections for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_by_b = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let mut conn = e.client.connect_h1(heim.https, "app.test").await.unwrap();
        let (stop, failures, served_by_b) = (stop.clone(), failures.clone(), served_by_b.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(SeqCst) && n < 20_000 {
                match conn.send(get("app.test", "/")).await {
                    Ok(r) if r.status == 200 => {
                        if r.headers["x-upstream"] == "b" {
                            served_by_b.fetch_add(1, SeqCst);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, SeqCst);
                    }
                }
                n += 1;
            }
            n
        }));
    }

    // A new config: app.test moves to b, a new echo route appears.
    let new_routes = [
        route("app.test", "/", &up(&b)),
        route("new.wild.test", "/", "echo = true"),
    ]
    .concat();
    std::fs::write(&heim.config, config("", &new_routes)).unwrap();
    let mut switched = false;
    for _ in 0..300 {
        if e.client
            .get(heim.https, "new.wild.test", "/")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        switched,
        "the changed file was not picked up:\n{}",
        heim.log_text()
    );
    // Wait until the load has been served by the new upstream, on its old connections.
    for _ in 0..300 {
        if served_by_b.load(SeqCst) > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served_by_b.load(SeqCst) > 10);

    // An invalid config is rejected; the running one keeps serving.
    std::fs::write(
        &heim.config,
        config("", "[[route]]\nhost = \"bad host\"\necho = true\n"),
    )
    .unwrap();
    heim.signal("HUP");
    assert!(
        heim.wait_log("config rejected", Duration::from_secs(10)),
        "{}",
        heim.log_text()
    );
    assert!(
        heim.log_text().contains("\"key\":\"route[0].host\""),
        "errors name the key"
    );
    let r = e
        .client
        .get(heim.https, "new.wild.test", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    stop.store(true, SeqCst);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert!(total > 100, "the load ran ({total} requests)");
    assert_eq!(failures.load(SeqCst), 0, "requests failed during reload");
    let m = heim.admin("/metrics").1;
    assert!(
        m.contains("heim_config_reloads_total{result=\"failed\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificate_files_are_served_without_restart() {
    let e = env("certreload");
    let heim =
        Heim::start(&e.dir, &config("", &route("app.test", "/", "echo = true"))).expect("start");
    let (_, before) = e.client.tls(heim.https, "app.test", false).await.unwrap();
    assert_eq!(cert_names(&before), ["app.test"]);
    // A keep-alive connection opened before the rotation.
    let mut old = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    assert_eq!(old.send(get("app.test", "/")).await.unwrap().status, 200);
    // Rotate: a new certificate for app.test that also names api.app.test.
    // New handshakes get it within 2 s (files are checked every second).
    e.pki.leaf("app", &["app.test", "api.app.test"]);
    let written = std::time::Instant::now();
    let mut rotated = None;
    while written.elapsed() < Duration::from_secs(2) {
        let (_, now) = e.client.tls(heim.https, "app.test", false).await.unwrap();
        if cert_names(&now).len() == 2 {
            rotated = Some(written.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        rotated.is_some(),
        "rotated certificate not served within 2 s:\n{}",
        heim.log_text()
    );
    let (_, cert) = e
        .client
        .tls(heim.https, "api.app.test", false)
        .await
        .expect("new name verifies");
    assert_eq!(cert_names(&cert), ["app.test", "api.app.test"]);
    // The connection from before goes on, on its old certificate.
    assert_eq!(old.send(get("app.test", "/")).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let e = env("drain");
    let a = upstream::http1("a").await;
    let mut heim = Heim::start(
        &e.dir,
        &config("drain_timeout = \"10s\"", &route("app.test", "/", &up(&a))),
    )
    .expect("start");
    let client = e.client.clone();
    let addr = heim.https;
    let in_flight =
        tokio::spawn(async move { client.get(addr, "app.test", "/slow?ms=1500").await });
    for _ in 0..500 {
        if a.hits.load(SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        a.hits.load(SeqCst),
        1,
        "the slow request reached the upstream"
    );
    heim.signal("TERM");
    assert!(heim.wait_log("draining", Duration::from_secs(5)));
    let r = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = heim.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "heim did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        e.client.get(heim.https, "app.test", "/").await.is_err(),
        "no new connections after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    let e = env("slowloris");
    let extra = "request_head_timeout = \"1s\"\nhandshake_timeout = \"1s\"";
    let a = upstream::http1("a").await;
    let routes = [
        route("app.test", "/", "echo = true"),
        route("x.wild.test", "/", &up(&a)),
    ]
    .concat();
    let heim = Heim::start(&e.dir, &config(extra, &routes)).expect("start");
    // A request head that never ends.
    let (_, closed) = e
        .client
        .raw(
            heim.https,
            "app.test",
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: ",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(closed, "a never-ending request head keeps its connection");
    // A request body that stops coming gets 408, not a held connection.
    let (out, closed) = e
        .client
        .raw(
            heim.https,
            "x.wild.test",
            b"POST / HTTP/1.1\r\nHost: x.wild.test\r\nContent-Length: 100\r\n\r\nonly-this",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(closed && out.starts_with("HTTP/1.1 408"), "{out}");
    // A TCP connection that never starts TLS.
    let mut tcp = tokio::net::TcpStream::connect(heim.https).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TCP connection stays open: {read:?}"
    );
    let counted = heim.wait_metric(
        "heim_tls_handshakes_total{result=\"failed\"} 1",
        Duration::from_secs(5),
    );
    assert!(counted, "{}", heim.admin("/metrics").1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_body_headers_and_connections() {
    let e = env("limits");
    let a = upstream::http1("a").await;
    let r = format!(
        "{}max_body_bytes = \"1k\"\n",
        route("app.test", "/", &up(&a))
    );
    let heim = Heim::start(
        &e.dir,
        &config("max_header_bytes = \"8k\"\nmax_connections = 3", &r),
    )
    .expect("start");

    let big = http::Request::post("/")
        .header("host", "app.test")
        .body(Body::from(vec![b'x'; 2048]))
        .unwrap();
    assert_eq!(e.client.request(heim.https, big).await.unwrap().status, 413);
    let small = http::Request::post("/")
        .header("host", "app.test")
        .body(Body::from(vec![b'x'; 512]))
        .unwrap();
    let r = e.client.request(heim.https, small).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 512);
    // A chunked body that grows past the limit.
    let chunked = format!("POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n", "y".repeat(2048));
    let (out, _) = e
        .client
        .raw(
            heim.https,
            "app.test",
            chunked.as_bytes(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Headers over 8k.
    let huge = http::Request::get("/")
        .header("host", "app.test")
        .header("x-big", "z".repeat(10_000))
        .body(Body::default())
        .unwrap();
    let status = e
        .client
        .request(heim.https, huge)
        .await
        .map(|r| r.status)
        .unwrap_or(0);
    assert!(
        status == 431 || status == 400,
        "oversized headers: {status}"
    );

    // max_connections = 3: the fourth concurrent connection is closed at once.
    // First let the connections above finish closing.
    let idle = heim.wait_metric("heim_connections_open 0\n", Duration::from_secs(5));
    assert!(idle, "connections did not close");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(e.client.connect_h1(heim.https, "app.test").await.unwrap());
    }
    for c in held.iter_mut() {
        assert_eq!(c.send(get("app.test", "/")).await.unwrap().status, 200);
    }
    assert!(
        e.client.get(heim.https, "app.test", "/").await.is_err(),
        "a fourth connection was served"
    );
    drop(held);
    let m = heim.admin("/metrics").1;
    assert!(m.contains("heim_connections_refused_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listener_redirects_known_hosts_and_serves_plain_routes() {
    let e = env("http");
    let routes = [
        route("app.test", "/", "echo = true"),
        format!(
            "{}https_redirect = false\n",
            route("plain.test", "/", "echo = true")
        ),
        // A catch-all route must not make heim redirect any Host it is sent.
        "[[route]]\npath = \"/\"\necho = true\npublic = true\n".to_string(),
    ]
    .concat();
    let heim = Heim::start(&e.dir, &config("https_port = 443", &routes)).expect("start");
    let http = heim.http.expect("http listener");
    let plain = |host: &str, path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let out = plain("app.test", "/x?y=1");
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("location: https://app.test/x?y=1\r\n"),
        "{out}"
    );
    let out = plain("plain.test", "/");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"x-forwarded-proto\": \"http\""), "{out}");
    // No redirect for hosts heim does not serve: no open redirect.
    let out = plain("evil.example", "/");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("location:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_heim_keeps_serving() {
    let e = env("malformed");
    let heim =
        Heim::start(&e.dir, &config("", &route("app.test", "/", "echo = true"))).expect("start");
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: app.test\r\n\r\n",
        b"BLAH\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"CONNECT app.test:22 HTTP/1.1\r\nHost: app.test:22\r\n\r\n",
    ];
    for raw in cases {
        let (out, _) = e
            .client
            .raw(heim.https, "app.test", raw, Duration::from_secs(5))
            .await
            .unwrap();
        let status: u16 = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(
            (400..500).contains(&status),
            "{:?} -> {out:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Content-Length with Transfer-Encoding (request smuggling): the body is
    // framed by Transfer-Encoding, as RFC 9112 §6.3 says, and the connection
    // is closed after the response so nothing can hide behind it.
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"[..],
    ] {
        let (out, closed) = e.client.raw(heim.https, "app.test", raw, Duration::from_secs(5)).await.unwrap();
        assert!(closed);
        assert!(out.contains("connection: close"), "{out}");
        assert!(!out.contains("/smuggled"), "{out}");
    }
    let r = e.client.get(heim.https, "app.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(heim.admin("/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_access_log() {
    let e = env("metrics");
    let heim =
        Heim::start(&e.dir, &config("", &route("app.test", "/", "echo = true"))).expect("start");
    assert_eq!(heim.admin("/healthz"), (200, "ok\n".into()));
    assert_eq!(heim.admin("/readyz").0, 200);
    let req = http::Request::get("/secret?token=abc")
        .header("host", "app.test")
        .header("cookie", "session=s3cr3t")
        .header("authorization", "Bearer t0k3n")
        .body(Body::default())
        .unwrap();
    assert_eq!(e.client.request(heim.https, req).await.unwrap().status, 200);
    assert_eq!(
        Client::any_certificate()
            .get(heim.https, "nope.test", "/")
            .await
            .unwrap()
            .status,
        404
    );
    let m = heim.admin("/metrics").1;
    assert!(
        m.contains("heim_requests_total{route=\"app.test/\",code=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("heim_requests_total{route=\"\",code=\"404\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("heim_request_duration_seconds_count{route=\"app.test/\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("heim_tls_handshakes_total{result=\"ok\"}"),
        "{m}"
    );
    assert!(heim.wait_log("\"status\":404", Duration::from_secs(5)));
    let logs = heim.log_text();
    assert!(logs.contains("\"path\":\"/secret\""), "{logs}");
    for secret in ["s3cr3t", "t0k3n", "token=abc"] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }
}

#[test]
fn check_names_file_line_and_key() {
    let e = env("check");
    let path = e.dir.join("bad.toml");
    let bad = config("", &route("app.test", "/", "echo = true"))
        .replace("workers = 2", "workers = 0")
        + "[[route]]\nhost = \"b.test\"\npath = \"nope\"\necho = true\n";
    std::fs::write(&path, &bad).unwrap();
    let out = std::process::Command::new(heim_e2e::heim_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "bad.toml:{}: server.workers:",
            line_of("workers = 0")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "bad.toml:{}: route[1].path:",
            line_of("path = \"nope\"")
        )),
        "{err}"
    );

    let good = e.dir.join("good.toml");
    std::fs::write(&good, config("", &route("app.test", "/", "echo = true"))).unwrap();
    let out = std::process::Command::new(heim_e2e::heim_binary())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The shipped examples stay valid.
    for example in ["quickstart.toml", "edge.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples")
            .join(example);
        let out = std::process::Command::new(heim_e2e::heim_binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}: {err}");
    }

    // A certificate that does not exist is caught by check, too.
    std::fs::remove_file(e.dir.join("app.pem")).unwrap();
    let out = std::process::Command::new(heim_e2e::heim_binary())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate[1].cert_file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let e = env("stream");
    let a = upstream::http1("a").await;
    let r = format!(
        "{}max_body_bytes = \"64m\"\n",
        route("app.test", "/", &up(&a))
    );
    let heim = Heim::start(&e.dir, &config("", &r)).expect("start");
    let body = Bytes::from(vec![7u8; 8 << 20]);
    let req = http::Request::put("/upload")
        .header("host", "app.test")
        .body(Body::from(body))
        .unwrap();
    let r = e.client.request(heim.https, req).await.unwrap();
    assert_eq!(r.json()["body_len"], 8 << 20);
    let req = http::Request::put("https://app.test/upload")
        .body(Body::from(vec![1u8; 3 << 20]))
        .unwrap();
    let r = e.client.request_h2(heim.https, req).await.unwrap();
    assert_eq!(r.json()["body_len"], 3 << 20);
    let r = e
        .client
        .get(heim.https, "app.test", "/stream?chunks=1000")
        .await
        .unwrap();
    assert_eq!(
        r.body.len(),
        (0..1000)
            .map(|i| format!("chunk{i}\n").len())
            .sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_a_real_nginx_that_recycles_keepalive_connections() {
    let e = env("nginx");
    // nginx closes each keep-alive connection after 3 requests and answers
    // with what it received.
    let nginx = upstream::Nginx::start(
        &e.dir,
        "    keepalive_requests 3;\n    location / {\n      default_type text/plain;\n      \
         return 200 \"$request_method $request_uri host=$host xff=$http_x_forwarded_for user=$http_x_heim_user\\n\";\n    }",
    )
    .expect("nginx");
    let heim = Heim::start(
        &e.dir,
        &config(
            "workers = 1",
            &route(
                "app.test",
                "/",
                &format!("upstream = [\"{}\"]", nginx.url()),
            ),
        ),
    )
    .expect("start");
    let mut conn = e.client.connect_h1(heim.https, "app.test").await.unwrap();
    for i in 0..20 {
        let req = http::Request::get(format!("/n/{i}?q=1"))
            .header("host", "app.test")
            .header("x-heim-user", "forged")
            .body(Body::default())
            .unwrap();
        let r = conn.send(req).await.unwrap();
        assert_eq!(r.status, 200, "request {i}");
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(
            body,
            format!("GET /n/{i}?q=1 host=app.test xff=127.0.0.1 user=\n")
        );
    }
    let m = heim.admin("/metrics").1;
    assert!(
        m.contains("heim_requests_total{route=\"app.test/\",code=\"200\"} 20"),
        "{m}"
    );
}
