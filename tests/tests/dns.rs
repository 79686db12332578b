//! The DNS-01 solvers against real peers: RFC 2136 + TSIG against BIND 9,
//! the Cloudflare provider against the API double, whose records
//! `pebble-challtestsrv` serves over DNS for the visibility check. What
//! DNS answers is also checked independently of heim, with `dig`.
//!
//! The solver's calls run in `tokio::spawn`ed tasks on a current-thread
//! runtime, as in heim's ACME task (which needs `Send` futures).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heim_e2e::cloudflare::{ChallTestSrv, CloudflareDouble, Zone};
use heim_e2e::named::Named;
use heim_proxy::acme::dns::{
    read_tsig_secret, DnsError, DnsProvider, DnsSolver, DnsSpec, TsigAlgorithm, TxtRecord,
};
use heim_proxy::http_client::HttpClient;

/// Two key authorizations' digests (43 characters of base64url, as ACME's).
const V1: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
const V2: &str = "Gb1sXqRvXkW8Fq0H0cG9mD3Zc8xJk4eTbN2aYpLqR7s";
const TOKEN: &str = "cf-token-for-tests";

/// Runs `f` as its own task, as heim does.
async fn task<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(f).await.expect("task")
}

fn rfc2136(named: &Named, secret: Vec<u8>, timeout: Duration) -> std::sync::Arc<DnsSolver> {
    let spec = DnsSpec {
        provider: DnsProvider::Rfc2136 {
            server: named.addr,
            key_name: named.key_name.clone(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret,
        },
        // Empty: the update server is checked.
        check_servers: Vec::new(),
        propagation_timeout: timeout,
    };
    std::sync::Arc::new(DnsSolver::new(spec, HttpClient::default()))
}

fn start_named() -> (Named, std::sync::Arc<DnsSolver>) {
    let named = Named::start().expect("named");
    // The key file as BIND writes it, read the way heim's config does.
    let secret = read_tsig_secret(&named.key_file).expect("key file");
    let solver = rfc2136(&named, secret, Duration::from_secs(10));
    (named, solver)
}

async fn present(
    s: &std::sync::Arc<DnsSolver>,
    domain: &str,
    v: &str,
) -> Result<TxtRecord, DnsError> {
    let (s, domain, v) = (s.clone(), domain.to_string(), v.to_string());
    task(async move { s.present(&domain, &v).await }).await
}

async fn visible(s: &std::sync::Arc<DnsSolver>, r: &TxtRecord) -> Result<(), DnsError> {
    let (s, r) = (s.clone(), r.clone());
    task(async move { s.wait_visible(&r).await }).await
}

async fn cleanup(s: &std::sync::Arc<DnsSolver>, r: &TxtRecord) -> Result<(), DnsError> {
    let (s, r) = (s.clone(), r.clone());
    task(async move { s.cleanup(&r).await }).await
}

#[tokio::test]
async fn rfc2136_present_check_cleanup() {
    let (named, solver) = start_named();
    let name = "_acme-challenge.www.example.test";
    let serial = named.serial().unwrap();
    assert!(named.txt(name).unwrap().is_empty());

    let record = present(&solver, "www.example.test", V1)
        .await
        .expect("present");
    assert_eq!(record.fqdn(), name);
    assert_eq!(record.value(), V1);
    assert_eq!(named.txt(name).unwrap(), [V1], "dig sees the record");
    // TTL 60, as put.
    let full = std::process::Command::new("dig")
        .args([
            &format!("@{}", named.addr.ip()),
            "-p",
            &named.addr.port().to_string(),
        ])
        .args(["+norecurse", "+noall", "+answer", name, "TXT"])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&full.stdout);
    let fields: Vec<&str> = answer.split_whitespace().collect();
    assert_eq!(fields.get(1..4), Some(&["60", "IN", "TXT"][..]), "{answer}");
    assert!(named.serial().unwrap() > serial, "the update was applied");

    visible(&solver, &record).await.expect("visible");

    cleanup(&solver, &record).await.expect("cleanup");
    assert!(named.txt(name).unwrap().is_empty(), "the record is gone");
    // Cleaning up again is harmless (the RR is not there to delete).
    cleanup(&solver, &record).await.expect("second cleanup");
}

#[tokio::test]
async fn rfc2136_cleanup_removes_only_its_own_value() {
    let (named, solver) = start_named();
    let name = "_acme-challenge.example.test";
    // A wildcard and its base name share the challenge name.
    let wild = present(&solver, "*.example.test", V1)
        .await
        .expect("wildcard");
    let base = present(&solver, "example.test", V2).await.expect("base");
    assert_eq!(wild.fqdn(), name);
    let mut both = vec![V1.to_string(), V2.to_string()];
    both.sort();
    assert_eq!(named.txt(name).unwrap(), both);
    visible(&solver, &wild).await.expect("wildcard visible");
    visible(&solver, &base).await.expect("base visible");

    cleanup(&solver, &wild).await.expect("cleanup wildcard");
    assert_eq!(named.txt(name).unwrap(), [V2], "the other value stays");
    visible(&solver, &base).await.expect("base still visible");
    cleanup(&solver, &base).await.expect("cleanup base");
    assert!(named.txt(name).unwrap().is_empty());
}

#[tokio::test]
async fn rfc2136_large_answer_is_read_over_tcp() {
    let (named, solver) = start_named();
    let name = "_acme-challenge.big.example.test";
    // One record over 512 bytes (three character-strings).
    let value = V1.repeat(14);
    let record = present(&solver, "big.example.test", &value)
        .await
        .expect("present");
    // A plain UDP answer is truncated with nothing in it...
    let udp = std::process::Command::new("dig")
        .args([
            &format!("@{}", named.addr.ip()),
            "-p",
            &named.addr.port().to_string(),
        ])
        .args(["+norecurse", "+noedns", "+ignore", "+notcp", name, "TXT"])
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&udp.stdout);
    let flags = header
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or("");
    assert!(
        flags.contains(" tc") && flags.contains("ANSWER: 0"),
        "{header}"
    );
    // ...so seeing the value means the solver asked again over TCP.
    visible(&solver, &record).await.expect("visible");
    assert_eq!(named.txt(name).unwrap(), [value]);
    cleanup(&solver, &record).await.expect("cleanup");
    assert!(named.txt(name).unwrap().is_empty());
}

#[tokio::test]
async fn rfc2136_wrong_secret_changes_nothing() {
    let named = Named::start().expect("named");
    let serial = named.serial().unwrap();
    let solver = rfc2136(&named, vec![7u8; 32], Duration::from_secs(10));
    let err = present(&solver, "www.example.test", V1).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DnsError::Tsig { .. }), "{err:?}");
    assert!(msg.contains("BADSIG") && msg.contains("NOTAUTH"), "{msg}");
    assert!(named
        .txt("_acme-challenge.www.example.test")
        .unwrap()
        .is_empty());
    assert_eq!(named.serial().unwrap(), serial, "the zone did not change");

    // An unknown key name: BADKEY, named by the error.
    let spec = DnsSpec {
        provider: DnsProvider::Rfc2136 {
            server: named.addr,
            key_name: "stranger.".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: read_tsig_secret(&named.key_file).unwrap(),
        },
        check_servers: Vec::new(),
        propagation_timeout: Duration::from_secs(10),
    };
    let stranger = std::sync::Arc::new(DnsSolver::new(spec, HttpClient::default()));
    let msg = present(&stranger, "www.example.test", V1)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("BADKEY"), "{msg}");
    assert_eq!(named.serial().unwrap(), serial, "the zone did not change");
}

#[tokio::test]
async fn rfc2136_outside_the_zone_is_refused() {
    let (named, solver) = start_named();
    let err = present(&solver, "www.other.test", V1).await.unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::Rcode {
                rcode: "REFUSED",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("REFUSED"), "{err}");
    drop(named);
}

#[tokio::test]
async fn rfc2136_wait_visible_says_what_it_saw() {
    let named = Named::start().expect("named");
    let secret = read_tsig_secret(&named.key_file).unwrap();
    let solver = rfc2136(&named, secret, Duration::from_secs(1));
    let record = present(&solver, "gone.example.test", V1)
        .await
        .expect("present");
    cleanup(&solver, &record).await.expect("cleanup");
    let started = Instant::now();
    let err = visible(&solver, &record).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, DnsError::NotVisible { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("NXDOMAIN") && msg.contains(&named.addr.to_string()),
        "{msg}"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

// === Cloudflare ===

fn cloudflare(
    api: &CloudflareDouble,
    token: &str,
    zone_id: Option<&str>,
    check: Vec<SocketAddr>,
) -> std::sync::Arc<DnsSolver> {
    let spec = DnsSpec {
        provider: DnsProvider::Cloudflare {
            api_token: token.into(),
            zone_id: zone_id.map(str::to_string),
            api_url: api.api_url(),
        },
        check_servers: check,
        propagation_timeout: Duration::from_secs(10),
    };
    std::sync::Arc::new(DnsSolver::new(spec, HttpClient::default()))
}

fn zones() -> Vec<Zone> {
    vec![
        Zone::new(
            "0123456789abcdef0123456789abcdef",
            "example.test",
            &["ns1.example.test"],
        ),
        Zone::new("fedcba9876543210fedcba9876543210", "other.test", &[]),
    ]
}
const ZONE: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn cloudflare_present_check_cleanup() {
    let dns = ChallTestSrv::start().expect("pebble-challtestsrv");
    let api = CloudflareDouble::start(TOKEN, zones(), Some(dns.management)).await;
    // The double mirrors its records to challtestsrv, which stands in for
    // Cloudflare's name servers.
    let solver = cloudflare(&api, TOKEN, None, vec![dns.dns]);
    let name = "_acme-challenge.a.b.example.test";

    let record = present(&solver, "a.b.example.test", V1)
        .await
        .expect("present");
    assert_eq!(record.fqdn(), name);
    // The zone is found by walking up the domain's labels.
    let seen = api.seen_lines();
    assert_eq!(
        seen,
        [
            "GET /zones?name=a.b.example.test&status=active",
            "GET /zones?name=b.example.test&status=active",
            "GET /zones?name=example.test&status=active",
            &format!("POST /zones/{ZONE}/dns_records"),
        ]
    );
    assert!(api.seen().iter().all(|s| s.authorized));
    assert_eq!(
        api.seen()[3].body,
        serde_json::json!({ "type": "TXT", "name": name, "content": V1, "ttl": 60 })
    );
    let records = api.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].name.as_str(), records[0].content.as_str()),
        (name, V1)
    );
    assert_eq!(heim_e2e::named::txt(dns.dns, name).unwrap(), [V1]);

    visible(&solver, &record).await.expect("visible");

    cleanup(&solver, &record).await.expect("cleanup");
    assert_eq!(
        api.seen_lines().last().unwrap(),
        &format!("DELETE /zones/{ZONE}/dns_records/{}", records[0].id)
    );
    assert!(api.records().is_empty());
    assert!(heim_e2e::named::txt(dns.dns, name).unwrap().is_empty());
}

#[tokio::test]
async fn cloudflare_cleanup_removes_only_its_own_value() {
    let dns = ChallTestSrv::start().expect("pebble-challtestsrv");
    let api = CloudflareDouble::start(TOKEN, zones(), Some(dns.management)).await;
    let solver = cloudflare(&api, TOKEN, Some(ZONE), vec![dns.dns]);
    let name = "_acme-challenge.example.test";
    let wild = present(&solver, "*.example.test", V1)
        .await
        .expect("wildcard");
    let base = present(&solver, "example.test", V2).await.expect("base");
    // With the zone id given, the zone is read, not searched.
    assert!(api
        .seen_lines()
        .iter()
        .all(|l| !l.starts_with("GET /zones?")));
    assert!(api.seen_lines().contains(&format!("GET /zones/{ZONE}")));
    visible(&solver, &wild).await.expect("wildcard visible");
    visible(&solver, &base).await.expect("base visible");

    cleanup(&solver, &wild).await.expect("cleanup wildcard");
    let left: Vec<String> = api.records().iter().map(|r| r.content.clone()).collect();
    assert_eq!(left, [V2]);
    assert_eq!(heim_e2e::named::txt(dns.dns, name).unwrap(), [V2]);
    cleanup(&solver, &base).await.expect("cleanup base");
    assert!(api.records().is_empty());
}

#[tokio::test]
async fn cloudflare_bad_token_carries_cloudflares_message() {
    let api = CloudflareDouble::start(TOKEN, zones(), None).await;
    let solver = cloudflare(&api, "wrong-token", None, Vec::new());
    let err = present(&solver, "www.example.test", V1).await.unwrap_err();
    assert!(
        matches!(err, DnsError::Cloudflare { status: 403, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("Authentication error") && msg.contains("10000"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-token"),
        "the token is not in errors: {msg}"
    );
    assert!(api.seen().iter().all(|s| !s.authorized));
    assert_eq!(api.seen().len(), 1, "no further calls after the refusal");
    assert!(api.records().is_empty());
}

#[tokio::test]
async fn cloudflare_errors_and_leftovers() {
    let api = CloudflareDouble::start(TOKEN, zones(), None).await;
    let solver = cloudflare(&api, TOKEN, None, Vec::new());

    // No zone holds the name: every candidate is named.
    let err = present(&solver, "x.nowhere.test", V1).await.unwrap_err();
    assert!(matches!(err, DnsError::CloudflareNoZone { .. }), "{err:?}");
    assert!(
        err.to_string().contains("x.nowhere.test, nowhere.test"),
        "{err}"
    );

    // A record left by an attempt that never cleaned up (same name and
    // value): Cloudflare says 81057, heim takes the record over.
    let name = "_acme-challenge.left.example.test";
    let old = api.insert_txt(ZONE, name, V1);
    let record = present(&solver, "left.example.test", V1)
        .await
        .expect("present");
    let seen = api.seen_lines();
    assert_eq!(
        &seen[seen.len() - 2..],
        [
            format!("POST /zones/{ZONE}/dns_records"),
            format!("GET /zones/{ZONE}/dns_records?type=TXT&name={name}&content={V1}"),
        ]
    );
    cleanup(&solver, &record).await.expect("cleanup");
    assert_eq!(
        api.seen_lines().last().unwrap(),
        &format!("DELETE /zones/{ZONE}/dns_records/{old}")
    );
    assert!(api.records().is_empty());
    // Already gone (81044) is no failure.
    cleanup(&solver, &record).await.expect("second cleanup");

    // A zone id Cloudflare does not know: its message is carried.
    let unknown = cloudflare(
        &api,
        TOKEN,
        Some("00000000000000000000000000000000"),
        Vec::new(),
    );
    let msg = present(&unknown, "www.example.test", V1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("perhaps your object identifier is invalid"),
        "{msg}"
    );
}
