//! Regression tests for the holes an adversarial run found in the core
//! (issue 10): each shape is sent by hand over loopback, against the real
//! binary, and each would pass through or be misblamed without its fix.

use std::time::Duration;

use heim_e2e::{config, env, raw_status, route, up, upstream, Heim};

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
        let status = raw_status(&out);
        assert!(
            status == 400 || status == 413,
            "{:?}: {out}",
            &body[..body.len().min(40)]
        );
    }
    let (_, m) = heim.admin("/metrics");
    assert!(
        m.contains("heim_upstream_errors_total{kind=\"protocol\"} 0"),
        "a client's broken body is no upstream error:\n{m}"
    );
    let counted: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("heim_client_errors_total{kind=\"malformed_body\"}")
                || l.starts_with("heim_client_errors_total{kind=\"body_too_large\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 4, "{m}");
    // heim and the upstream still serve.
    let r = e.client.get(heim.https, "app.test", "/").await.unwrap();
    assert_eq!(r.status, 200);
}
