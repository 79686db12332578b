//! heim's ACME client against Pebble, Let's Encrypt's test CA (Debian
//! `pebble`), on loopback: HTTP-01, TLS-ALPN-01 and wildcard DNS-01 issuance
//! (through BIND 9 by RFC 2136, and through a Cloudflare API double), restarts that
//! reuse the stored certificate, reloads that keep it, an ACME server that
//! is down, and names with no certificate yet. Each issued chain is checked
//! against Pebble's root, as a browser would.

use std::time::Duration;

use heim_e2e::pebble::{free_port, Pebble};
use heim_e2e::{cert_names, metric, scratch, Client, Heim, Pki};
use rustls::pki_types::CertificateDer;

const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// heim's config: fixed listener ports (Pebble must know them first),
/// `[acme]` with `acme_extra`, and one public echo route per name.
fn acme_config(https: u16, http: u16, acme_extra: &str, names: &[&str]) -> String {
    let mut routes = String::new();
    for n in names {
        routes.push_str(&format!(
            "[[route]]\nhost = \"{n}\"\necho = true\npublic = true\nacme = true\n\n"
        ));
    }
    format!(
        r#"
[server]
https_listen = "127.0.0.1:{https}"
http_listen = "127.0.0.1:{http}"
admin_listen = "127.0.0.1:0"
workers = 2

[acme]
contact = ["mailto:ops@example.test"]
storage_dir = "acme"
ca_file = "ca.pem"
{acme_extra}

{routes}"#
    )
}

struct Setup {
    dir: std::path::PathBuf,
    pki: Pki,
    https: u16,
    http: u16,
}

fn setup(name: &str) -> Setup {
    let dir = scratch(name);
    let pki = Pki::new(&dir);
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).expect("ca.pem");
    Setup {
        dir,
        pki,
        https: free_port(),
        http: free_port(),
    }
}

fn metrics(heim: &Heim) -> String {
    heim.admin("/metrics").1
}

/// `heim_acme_orders_total{challenge}` now (None: no order yet).
fn orders(heim: &Heim, challenge: &str) -> Option<u64> {
    let m = metrics(heim);
    metric(
        &m,
        &format!("heim_acme_orders_total{{challenge=\"{challenge}\"}}"),
    )
}

async fn issued_and_verified(
    heim: &Heim,
    root: &CertificateDer<'static>,
    sni: &str,
) -> CertificateDer<'static> {
    assert!(
        heim.wait_log("certificate issued and serving", ISSUE_TIMEOUT),
        "no certificate issued:\n{}",
        heim.log_text()
    );
    // The served chain verifies against Pebble's root for the name.
    let (_, leaf) = Client::new(root)
        .tls(heim.https, sni, false)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{sni}: chain does not verify against Pebble's root: {e}\n{}",
                heim.log_text()
            )
        });
    leaf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_then_restart_and_sighup_keep_the_certificate() {
    let s = setup("acme-http01");
    let pebble = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let root = pebble.root(&s.pki).await.expect("pebble root");
    let config = acme_config(
        s.https,
        s.http,
        &format!(
            "directory = \"{}\"\nchallenge = \"http-01\"",
            pebble.directory
        ),
        &["app.acme.test"],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    let first = issued_and_verified(&heim, &root, "app.acme.test").await;
    assert_eq!(cert_names(&first), ["app.acme.test"]);
    assert_eq!(orders(&heim, "http-01"), Some(1), "{}", metrics(&heim));
    let m = metrics(&heim);
    assert!(
        m.contains("heim_certificate_expiry_seconds{name=\"app.acme.test\"}")
            && m.contains("heim_certificates{source=\"acme\"} 1"),
        "{m}"
    );
    // The account and certificate are private on disk.
    use std::os::unix::fs::PermissionsExt;
    let key = s
        .dir
        .join("acme/certificates/app.acme.test/certificate.pem");
    assert_eq!(
        std::fs::metadata(&key)
            .expect("stored key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A SIGHUP (the config file has no [[certificate]]) keeps serving it.
    heim.signal("HUP");
    assert!(heim.wait_metric(
        "heim_config_reloads_total{result=\"ok\"} 1",
        Duration::from_secs(10)
    ));
    let (_, after_hup) = Client::new(&root)
        .tls(heim.https, "app.acme.test", false)
        .await
        .expect("after SIGHUP");
    assert_eq!(after_hup, first);

    // A restart serves the stored certificate and orders nothing.
    drop(heim);
    let heim = Heim::start(&s.dir, &config).expect("restart");
    assert!(
        heim.wait_log("next renewal", Duration::from_secs(10)),
        "{}",
        heim.log_text()
    );
    assert!(heim.log_text().contains("certificate loaded from storage"));
    let (_, again) = Client::new(&root)
        .tls(heim.https, "app.acme.test", false)
        .await
        .expect("after restart");
    assert_eq!(again, first, "a restart must reuse the stored certificate");
    assert_eq!(orders(&heim, "http-01"), None, "{}", metrics(&heim));

    // A SIGHUP that adds a name to [acme] orders that name, and only it.
    let more = config.replace(
        "challenge = \"http-01\"",
        "challenge = \"http-01\"\ndomains = [\"more.acme.test\"]",
    );
    std::fs::write(&heim.config, more).expect("config");
    heim.signal("HUP");
    let second = issued_and_verified(&heim, &root, "more.acme.test").await;
    assert_eq!(cert_names(&second), ["more.acme.test"]);
    let (_, still) = Client::new(&root)
        .tls(heim.https, "app.acme.test", false)
        .await
        .expect("the first name still serves");
    assert_eq!(still, first);
    assert_eq!(orders(&heim, "http-01"), Some(1), "{}", metrics(&heim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_a_certificate() {
    let s = setup("acme-alpn");
    let pebble = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let root = pebble.root(&s.pki).await.expect("pebble root");
    let config = acme_config(
        s.https,
        s.http,
        &format!(
            "directory = \"{}\"\nchallenge = \"tls-alpn-01\"\ndomains = [\"alpn.acme.test\"]",
            pebble.directory
        ),
        &[],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    let leaf = issued_and_verified(&heim, &root, "alpn.acme.test").await;
    assert_eq!(cert_names(&leaf), ["alpn.acme.test"]);
    assert_eq!(orders(&heim, "tls-alpn-01"), Some(1), "{}", metrics(&heim));
}

/// Now plus `days` (negative: ago), since the Unix epoch.
fn since_epoch(days: i64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    Duration::from_secs((now.as_secs() as i64 + days * 86_400) as u64)
}

/// A certificate valid from 80 days ago for another 10: past two thirds of
/// its life, so due for renewal, and still valid.
fn write_due_certificate(s: &Setup, name: &str) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(-80);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(10);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let dir = s.dir.join("acme/certificates").join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
    cert.der().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_server_down_keeps_serving_the_stored_certificate() {
    let s = setup("acme-down");
    let stored = write_due_certificate(&s, "down.acme.test");
    // Nothing listens on this port.
    let directory = format!("https://localhost:{}/dir", free_port());
    let config = acme_config(
        s.https,
        s.http,
        &format!("directory = \"{directory}\""),
        &["down.acme.test"],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    assert!(
        heim.wait_metric(
            "heim_acme_failures_total{challenge=\"http-01\",reason=\"network\"} 1",
            Duration::from_secs(20)
        ),
        "{}\n{}",
        metrics(&heim),
        heim.log_text()
    );
    assert!(
        heim.log_text().contains("ACME: order failed"),
        "{}",
        heim.log_text()
    );
    assert!(
        heim.log_text().contains("renewal is due"),
        "{}",
        heim.log_text()
    );
    let (_, served) = Client::any_certificate()
        .tls(heim.https, "down.acme.test", false)
        .await
        .expect("the stored certificate still serves");
    assert_eq!(served, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_without_a_certificate_yet_fail_their_handshake_cleanly() {
    let s = setup("acme-none");
    let directory = format!("https://localhost:{}/dir", free_port());
    let config = acme_config(
        s.https,
        s.http,
        &format!("directory = \"{directory}\""),
        &["none.acme.test"],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    for _ in 0..2 {
        let r = Client::any_certificate()
            .tls(heim.https, "none.acme.test", false)
            .await;
        assert!(r.is_err(), "a handshake with no certificate must fail");
    }
    let m = metrics(&heim);
    assert_eq!(
        metric(&m, "heim_tls_handshakes_total{result=\"no_certificate\"}"),
        Some(2),
        "{m}"
    );
    assert_eq!(
        metric(&m, "heim_tls_handshakes_total{result=\"failed\"}"),
        Some(0),
        "{m}"
    );
    assert_eq!(heim.admin("/healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_certificate_is_renewed_and_swapped_in_live() {
    let s = setup("acme-renew");
    let stored = write_due_certificate(&s, "renew.acme.test");
    let pebble = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let root = pebble.root(&s.pki).await.expect("pebble root");
    let config = acme_config(
        s.https,
        s.http,
        &format!("directory = \"{}\"", pebble.directory),
        &["renew.acme.test"],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    let renewed = issued_and_verified(&heim, &root, "renew.acme.test").await;
    assert_ne!(renewed, stored);
    let log = heim.log_text();
    assert!(log.contains("certificate loaded from storage"), "{log}");
    assert!(log.contains("renewal is due"), "{log}");
    // The renewed certificate replaced the stored one on disk.
    let on_disk = std::fs::read(
        s.dir
            .join("acme/certificates/renew.acme.test/certificate.pem"),
    )
    .expect("stored");
    let leaf = rustls::pki_types::pem::PemObject::from_pem_slice(&on_disk).expect("pem");
    let leaf: CertificateDer = leaf;
    assert_eq!(leaf, renewed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_wildcard_through_bind_rfc2136() {
    let s = setup("acme-rfc2136");
    let named = heim_e2e::named::Named::start().expect("named");
    let pebble = Pebble::start(&s.dir, &s.pki, s.http, s.https, Some(named.addr)).expect("pebble");
    let root = pebble.root(&s.pki).await.expect("pebble root");
    let zone = &named.zone;
    let wildcard = format!("*.ssh.{zone}");
    let extra = format!(
        r#"directory = "{}"
challenge = "dns-01"
domains = ["{wildcard}"]
[acme.dns]
provider = "rfc2136"
server = "{}"
tsig_key_name = "{}"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "{}""#,
        pebble.directory,
        named.addr,
        named.key_name,
        named.key_file.display()
    );
    let heim = Heim::start(&s.dir, &acme_config(s.https, s.http, &extra, &[])).expect("start");
    let host = format!("laptop.ssh.{zone}");
    let leaf = issued_and_verified(&heim, &root, &host).await;
    assert_eq!(cert_names(&leaf), [wildcard.as_str()]);
    // The TXT record was removed after validation.
    let left = named
        .txt(&format!("_acme-challenge.ssh.{zone}"))
        .expect("dig");
    assert!(left.is_empty(), "TXT left behind: {left:?}");
    assert_eq!(orders(&heim, "dns-01"), Some(1), "{}", metrics(&heim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns01_wildcard_through_the_cloudflare_api() {
    use heim_e2e::cloudflare::{CloudflareDouble, Zone};
    let s = setup("acme-cloudflare");
    let pebble = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let chall = pebble.challtestsrv.as_ref().expect("challtestsrv");
    let root = pebble.root(&s.pki).await.expect("pebble root");
    let token = "cf-test-token-0123456789";
    let cf = CloudflareDouble::start(
        token,
        vec![Zone::new("zone-1", "home.test", &["ns1.cloudflare.test"])],
        Some(chall.management),
    )
    .await;
    std::fs::write(s.dir.join("cf-token"), format!("{token}\n")).expect("token");
    let extra = format!(
        r#"directory = "{}"
challenge = "dns-01"
domains = ["*.ssh.home.test"]
[acme.dns]
provider = "cloudflare"
api_token_file = "cf-token"
api_url = "{}"
check_servers = ["{}"]"#,
        pebble.directory,
        cf.api_url(),
        chall.dns
    );
    let heim = Heim::start(&s.dir, &acme_config(s.https, s.http, &extra, &[])).expect("start");
    let leaf = issued_and_verified(&heim, &root, "box.ssh.home.test").await;
    assert_eq!(cert_names(&leaf), ["*.ssh.home.test"]);
    // Zone found by name, the record created, then deleted.
    let seen = cf.seen_lines().join("\n");
    assert!(seen.contains("GET /zones?name=ssh.home.test"), "{seen}");
    assert!(seen.contains("POST /zones/zone-1/dns_records"), "{seen}");
    assert!(seen.contains("DELETE /zones/zone-1/dns_records/"), "{seen}");
    assert!(cf.records().is_empty(), "{:?}", cf.records());
    // The token never reaches the logs.
    assert!(!heim.log_text().contains(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_acme_directory_orders_anew() {
    let s = setup("acme-switch");
    let staging = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let staging_root = staging.root(&s.pki).await.expect("root");
    let config = |dir: &str| {
        acme_config(
            s.https,
            s.http,
            &format!("directory = \"{dir}\""),
            &["switch.acme.test"],
        )
    };
    let heim = Heim::start(&s.dir, &config(&staging.directory)).expect("start");
    issued_and_verified(&heim, &staging_root, "switch.acme.test").await;
    drop(heim);
    drop(staging);
    // "Production": another CA, whose root the first certificate does not
    // chain to. The stored certificate serves until the new one is issued.
    let production = Pebble::start(&s.dir, &s.pki, s.http, s.https, None).expect("pebble");
    let production_root = production.root(&s.pki).await.expect("root");
    assert_ne!(production_root, staging_root);
    let heim = Heim::start(&s.dir, &config(&production.directory)).expect("restart");
    issued_and_verified(&heim, &production_root, "switch.acme.test").await;
    assert!(
        heim.log_text().contains("from another ACME directory"),
        "{}",
        heim.log_text()
    );
}

/// A TLS client offering exactly `alpn`, trusting the test CA.
async fn handshake_with_alpn(
    pki: &Pki,
    addr: std::net::SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<(Option<Vec<u8>>, CertificateDer<'static>)> {
    let cfg = Client::config(&pki.ca_der, alpn);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    let session = tls.get_ref().1;
    let leaf = session.peer_certificates().expect("certificate")[0].clone();
    Ok((session.alpn_protocol().map(<[u8]>::to_vec), leaf))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_acme_tls_alpn_hello_alone_is_treated_as_validation() {
    let e = heim_e2e::env("acme-alpn-rule");
    let heim = Heim::start(
        &e.dir,
        &heim_e2e::config("", &heim_e2e::route("app.test", "/", "echo = true")),
    )
    .expect("start");
    let acme: &[u8] = b"acme-tls/1";
    // A client that also offers acme-tls/1 is a normal client: the normal
    // certificate, a normal protocol.
    for alpn in [&[b"h2" as &[u8], acme][..], &[b"foo", acme, b"http/1.1"]] {
        let (proto, leaf) = handshake_with_alpn(&e.pki, heim.https, "app.test", alpn)
            .await
            .expect("normal handshake");
        assert_eq!(cert_names(&leaf), ["app.test"], "{alpn:?}");
        assert_ne!(proto.as_deref(), Some(acme), "{alpn:?}");
    }
    // acme-tls/1 alone with no validation pending: no certificate at all.
    let r = handshake_with_alpn(&e.pki, heim.https, "app.test", &[acme]).await;
    assert!(
        r.is_err(),
        "acme-tls/1 alone must not get the site's certificate"
    );
    assert!(heim.wait_metric(
        "heim_tls_handshakes_total{result=\"no_certificate\"} 1",
        Duration::from_secs(5)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_is_logged_with_the_ca_problem_document() {
    let s = setup("acme-invalid");
    // Pebble validates HTTP-01 on a port where nothing answers.
    let pebble = Pebble::start(&s.dir, &s.pki, free_port(), s.https, None).expect("pebble");
    let config = acme_config(
        s.https,
        s.http,
        &format!("directory = \"{}\"", pebble.directory),
        &["invalid.acme.test"],
    );
    let heim = Heim::start(&s.dir, &config).expect("start");
    assert!(
        heim.wait_metric(
            "heim_acme_failures_total{challenge=\"http-01\",reason=\"connection\"} 1",
            ISSUE_TIMEOUT
        ),
        "{}\n{}",
        metrics(&heim),
        heim.log_text()
    );
    let log = heim.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ACME: order failed"))
        .expect("a failure line");
    // The CA's own words: the problem type and its detail.
    assert!(
        line.contains("urn:ietf:params:acme:error:connection"),
        "{line}"
    );
    assert!(line.contains("invalid.acme.test"), "{line}");
    assert!(line.contains("\"retry_in_s\":60"), "{line}");
    // Nothing to serve yet: the handshake fails cleanly.
    assert!(Client::any_certificate()
        .tls(heim.https, "invalid.acme.test", false)
        .await
        .is_err());
}
