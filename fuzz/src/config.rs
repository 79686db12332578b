//! `Config::parse`: the config file, from any text.
//!
//! Two kinds of input. Anything not starting with `|` is the whole file (any
//! TOML, or not TOML at all). An input starting with `|` is split on `|` and
//! its pieces replace, in order, the values of [`TEMPLATE`], a valid config
//! (an empty piece keeps the template's value): the fuzzer then spends its
//! time in validation rather than in the TOML parser.
//!
//! Properties: no panic; an error list is never empty, and every error
//! names the file it was given, a line between 1 and one past the last, a
//! key and a message; a config that parses has a line for each route, and
//! its routes compile into a table (or are refused as duplicates) without
//! panicking.

use std::path::Path;

use heim_proxy::config::Config;
use heim_proxy::route::RouteTable;

/// A valid config with numbered holes; [`DEFAULTS`] fills them.
const TEMPLATE: &str = r#"[server]
https_listen = {0}
http_listen = {1}
workers = {2}
max_header_bytes = {3}
handshake_timeout = {4}
max_body_bytes = {5}

[[certificate]]
cert_file = "certs/local.pem"
key_file = "certs/local-key.pem"
hosts = {6}

[[route]]
host = {7}
path = {8}
path_type = {9}
upstream = {10}
upstream_protocol = {11}
public = true

[[route]]
host = "*.example.com"
path = "/api"
echo = {12}
connect_timeout = {13}
{14}
"#;

const DEFAULTS: [&str; 15] = [
    r#""127.0.0.1:8443""#,
    r#""127.0.0.1:8080""#,
    "1",
    r#""64k""#,
    r#""10s""#,
    r#""1m""#,
    r#"["app.example.com", "*.example.com"]"#,
    r#""App.Example.com""#,
    r#""/""#,
    r#""Prefix""#,
    r#"["http://127.0.0.1:3000", "http://backend.local:8080"]"#,
    r#""http1""#,
    "true",
    r#""5s""#,
    "public = true",
];

/// Runs every property on one input.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match text.strip_prefix('|') {
        Some(pieces) => parses_sanely(&fill(pieces)),
        None => parses_sanely(&text),
    }
}

fn fill(pieces: &str) -> String {
    let mut pieces = pieces.split('|');
    let mut text = TEMPLATE.to_string();
    for (i, default) in DEFAULTS.iter().enumerate() {
        let value = pieces.next().filter(|p| !p.is_empty()).unwrap_or(default);
        text = text.replacen(&format!("{{{i}}}"), value, 1);
    }
    text
}

fn parses_sanely(text: &str) {
    let path = Path::new("/etc/heim/heim.toml");
    let last_line = text.lines().count() + 1;
    match Config::parse(path, text) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an empty error list for {text:?}");
            for e in &errors.0 {
                assert_eq!(e.file, path, "{e:?} names another file");
                assert!(
                    (1..=last_line).contains(&e.line),
                    "{e:?}: line outside 1..={last_line} in {text:?}"
                );
                assert!(!e.key.trim().is_empty(), "{e:?} names no key, in {text:?}");
                assert!(!e.message.trim().is_empty(), "{e:?} says nothing");
            }
            let _ = errors.to_string();
        }
        Ok(config) => {
            assert_eq!(config.path, path);
            assert_eq!(config.route_lines.len(), config.routes.len());
            for line in &config.route_lines {
                assert!((1..=last_line).contains(line), "route line {line}");
            }
            for r in &config.routes {
                assert!(r.path.starts_with('/'), "route path {:?}", r.path);
            }
            let _ = RouteTable::build(config.routes, |_| Default::default());
        }
    }
}
