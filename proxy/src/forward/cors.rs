//! CORS as ingress-nginx's `enable-cors` / `cors-*` annotations do it.
//!
//! This module owns three things: reading the raw annotation values with
//! ingress-nginx's parser rules (`internal/ingress/annotations/cors/main.go`:
//! the same validation patterns, the same per-value fallbacks to its
//! defaults), matching a request's `Origin` against the allowed list
//! (`template.go: buildCorsOriginRegex`), and the headers of the template's
//! `CORS` block (`nginx.tmpl`). It does no I/O and keeps no state per
//! request; where in the request path it runs is the caller's business:
//!
//! 1. [`Cors::preflight`] first, before authentication and IP lists (nginx
//!    answers it with `return 204` in the rewrite phase, ahead of the access
//!    phase where `auth_request`, basic auth and `allow`/`deny` run). Any
//!    `OPTIONS` whose origin is allowed is answered there, whether or not it
//!    carries `Access-Control-Request-Method`; with the origin list `*` that
//!    is every `OPTIONS`, even one without an `Origin`. Otherwise (`None`)
//!    the request goes on to auth and the backend unchanged.
//! 2. [`Cors::apply`] on every other response of the route: the backend's,
//!    and heim's own (401/403 from auth or IP lists, 5xx), since nginx's
//!    `more_set_headers` has no status filter.
//!
//! Headers the backend set itself: heim does what `more_set_headers` does.
//! Each header heim sends replaces every value the backend gave under that
//! name; a header heim does not send on this response is left as the
//! backend set it. So a backend's own `Access-Control-Allow-Credentials`
//! survives `cors-allow-credentials: "false"`, its `Access-Control-Expose-
//! Headers` survives an empty `cors-expose-headers`, and on a request whose
//! origin is not allowed every backend CORS header passes through untouched.
//! Like nginx, heim adds no `Vary: Origin`.
//!
//! Origin matching. nginx emits `if ($http_origin ~* ((e1)|(e2)...)$)`: each
//! entry quoted, its one `*` turned into `[A-Za-z0-9\-]+` (one DNS label),
//! compared case-insensitively and anchored **only at the end**. heim
//! compares the **whole** origin instead. The parser keeps only entries
//! that start with `[a-z]+://` (or are `null`, or `*`), and a serialized
//! origin is `scheme://host[:port]` whose host and port hold no `://`, so
//! an entry's `://` must line up with the origin's: the two anchorings then
//! differ only where the origin's scheme merely *ends with* the entry's
//! (`xhttps://app.example.com` passes nginx for `https://app.example.com`),
//! where the entry is `null` (nginx takes any origin ending in `null`), and
//! where a client repeats `Origin` (nginx ≥ 1.23 joins repeats with `, `,
//! so an allowed last one let the whole joined string through and be
//! echoed). No web page chooses its own scheme, so this is a narrow gap,
//! but closing it costs nothing: heim anchors both ends, and a request with
//! more than one `Origin` matches nothing.
//!
//! Quirks kept on purpose because clients and tests rely on them: the list
//! `*` sends `Access-Control-Allow-Origin: *` on every response, with
//! `Access-Control-Allow-Credentials: true` by default (browsers refuse that
//! pair for credentialed requests; nginx sends it anyway); credentials
//! `false` omits the header rather than sending `false`; an allowed list
//! whose every entry was dropped (say, entries without a scheme) never
//! matches, so no CORS headers are sent at all; and the preflight answer
//! carries `Content-Type: text/plain charset=UTF-8` (no `;`) and
//! `Content-Length: 0`, as the template writes them.

use std::sync::LazyLock;

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
};
use http::{Method, Response, StatusCode};
use regex::Regex;

/// ingress-nginx's `defaultCorsMethods`.
const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// ingress-nginx's `defaultCorsHeaders`.
const DEFAULT_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
/// ingress-nginx's `defaultCorsMaxAge`, in seconds.
const DEFAULT_MAX_AGE: i64 = 1_728_000;

// The validation patterns of `cors/main.go` and `parser/validators.go`,
// written for the `regex` crate with Go's meaning: Go's `\d` is `[0-9]` and
// its `\s` is `[\t\n\f\r ]` (ASCII only, no `\v`), where the `regex` crate's
// are Unicode classes. `$` without `(?m)` is the end of the text in both.

/// `corsOriginRegexValidator`: the whole `cors-allow-origin` value.
static ORIGIN_LIST: LazyLock<Regex> = LazyLock::new(|| {
    literal_regex(r"^((((([a-z]+://)?(\*\.)?[A-Za-z0-9\-.]*(:[0-9]+)?,?)|null)+)|\*)?$")
});
/// `corsOriginRegex`: one entry of the list.
static ORIGIN_ENTRY: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^([a-z]+://(\*\.)?[A-Za-z0-9\-.]*(:[0-9]+)?|\*|null)?$"));
/// `corsMethodsRegex`.
static METHODS: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^([A-Za-z]+,?[\t\n\x0C\r ]?)+$"));
/// `corsExposeHeadersRegex`.
static EXPOSE_HEADERS: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^(([A-Za-z0-9\-_]+|\*),?[\t\n\x0C\r ]?)+$"));
/// `parser.HeadersVariable`, the validator of `cors-allow-headers`.
static HEADERS: LazyLock<Regex> = LazyLock::new(|| literal_regex(r"^[A-Za-z0-9\-_, ]*$"));

fn literal_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("invariant: the CORS validation patterns are literals that compile")
}

/// The raw `cors-*` annotation values of an Ingress whose `enable-cors` is true.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorsAnnotations<'a> {
    pub allow_origin: Option<&'a str>,
    pub allow_methods: Option<&'a str>,
    pub allow_headers: Option<&'a str>,
    pub allow_credentials: Option<&'a str>,
    pub expose_headers: Option<&'a str>,
    pub max_age: Option<&'a str>,
}

/// A route's compiled CORS policy: which origins, and the headers they get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    origins: AllowedOrigins,
    allow_credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    /// `None` when empty: nginx then sends no `Access-Control-Expose-Headers`.
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// Which request origins get CORS headers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AllowedOrigins {
    /// The list `*`: every request, answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// These entries, the request's `Origin` echoed; empty matches nothing.
    List(Vec<OriginPattern>),
}

/// One allowed origin, compared ASCII-case-insensitively against the whole `Origin`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OriginPattern {
    /// `scheme://host[:port]` or `null`, as written.
    Exact(String),
    /// `scheme://*.rest`: `prefix`, one label of `[A-Za-z0-9-]`, then `suffix`.
    OneLabel { prefix: String, suffix: String },
}

// === impl Cors ===

impl Cors {
    /// Compiles the annotations as ingress-nginx does; also lists each
    /// value (by annotation suffix) that was invalid, and why, with what
    /// ingress-nginx then used instead.
    pub fn from_nginx(a: &CorsAnnotations) -> (Cors, Vec<(&'static str, String)>) {
        let mut notes = Vec::new();
        let origins = parse_origins(a.allow_origin, &mut notes);

        let allow_methods = text_value(
            "cors-allow-methods",
            a.allow_methods,
            &METHODS,
            DEFAULT_METHODS,
            &mut notes,
        );
        let allow_headers = text_value(
            "cors-allow-headers",
            a.allow_headers,
            &HEADERS,
            DEFAULT_HEADERS,
            &mut notes,
        );
        let expose_headers = text_value(
            "cors-expose-headers",
            a.expose_headers,
            &EXPOSE_HEADERS,
            "",
            &mut notes,
        );

        let allow_credentials = match read_scalar(a.allow_credentials, parse_go_bool) {
            Read::Missing => true,
            Read::Value(b) => b,
            Read::Invalid(why) => {
                notes.push((
                    "cors-allow-credentials",
                    format!("{why} (not a Go boolean); ingress-nginx uses \"true\""),
                ));
                true
            }
        };

        // Go's `strconv.Atoi` on a 64-bit build: optional sign, ASCII
        // digits, i64 range, nothing else — exactly `i64::from_str`.
        let max_age = match read_scalar(a.max_age, |v| v.parse::<i64>().ok()) {
            Read::Missing => DEFAULT_MAX_AGE,
            Read::Value(n) => n,
            Read::Invalid(why) => {
                notes.push((
                    "cors-max-age",
                    format!("{why} (not an integer); ingress-nginx uses {DEFAULT_MAX_AGE}"),
                ));
                DEFAULT_MAX_AGE
            }
        };

        let cors = Cors {
            origins,
            allow_credentials,
            allow_methods,
            allow_headers,
            expose_headers: (!expose_headers.is_empty()).then_some(expose_headers),
            max_age: HeaderValue::from(max_age),
        };
        (cors, notes)
    }

    /// The 204 nginx answers a preflight with: an `OPTIONS` whose origin is
    /// allowed. `None` for any other request, which then goes on as usual.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<()>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = self.allowed_origin(headers)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        self.set_headers(origin, out);
        out.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain charset=UTF-8"),
        );
        out.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        Some(response)
    }

    /// Sets the CORS headers on a response to a request whose origin is
    /// allowed, replacing the backend's under the same names; does nothing
    /// for any other origin.
    pub fn apply(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        if let Some(origin) = self.allowed_origin(request_headers) {
            self.set_headers(origin, response_headers);
        }
    }

    /// The `Access-Control-Allow-Origin` value for this request, if it gets one.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let patterns = match &self.origins {
            // nginx: `set $http_origin *;` — whatever the request sent.
            AllowedOrigins::Any => return Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(patterns) => patterns,
        };
        let mut values = headers.get_all(ORIGIN).iter();
        let origin = values.next()?;
        if values.next().is_some() {
            return None;
        }
        // Entries are ASCII; an origin that is not visible ASCII matches none.
        let text = origin.to_str().ok()?;
        patterns
            .iter()
            .any(|p| p.matches(text))
            .then(|| origin.clone())
    }

    /// The template's `more_set_headers` lines, in its order.
    fn set_headers(&self, origin: HeaderValue, out: &mut HeaderMap) {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        if let Some(expose) = &self.expose_headers {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
    }
}

// === impl OriginPattern ===

impl OriginPattern {
    /// Compiles one entry the parser kept (`scheme://…`, or `null`).
    fn compile(entry: &str) -> OriginPattern {
        // The entry pattern allows `*` only as `scheme://*.`; nginx replaces
        // the first one, and there is never a second.
        match entry.split_once('*') {
            Some((prefix, suffix)) => OriginPattern::OneLabel {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            },
            None => OriginPattern::Exact(entry.to_owned()),
        }
    }

    /// Whether the whole `origin` matches; one pass over it, no allocation.
    fn matches(&self, origin: &str) -> bool {
        let origin = origin.as_bytes();
        match self {
            OriginPattern::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
            OriginPattern::OneLabel { prefix, suffix } => {
                let (prefix, suffix) = (prefix.as_bytes(), suffix.as_bytes());
                if origin.len() <= prefix.len() + suffix.len() {
                    return false;
                }
                let (head, rest) = origin.split_at(prefix.len());
                let (label, tail) = rest.split_at(rest.len() - suffix.len());
                head.eq_ignore_ascii_case(prefix)
                    && tail.eq_ignore_ascii_case(suffix)
                    && label
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
        }
    }
}

// === the parser's rules ===

/// One annotation read as `parser.GetStringAnnotation` & co. read it.
enum Read<T> {
    /// Not set: the default, silently.
    Missing,
    /// Set but refused: the default, and a note saying why.
    Invalid(String),
    Value(T),
}

/// `GetStringAnnotation` with a `ValidateRegex(pattern, true)` validator:
/// the raw value, spaces removed, must match and hold no CR/LF; the value
/// handed on is then trimmed line by line (`normalizeString`) and must not
/// be empty.
fn read_string(raw: Option<&str>, pattern: &Regex) -> Read<String> {
    let Some(raw) = raw else {
        return Read::Missing;
    };
    if !raw.is_empty() {
        let compact = raw.replace(' ', "");
        if !pattern.is_match(&compact) || compact.contains(['\r', '\n']) {
            return Read::Invalid(format!("{raw:?} fails ingress-nginx's validation"));
        }
    }
    let normalized = raw
        .split('\n')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    if normalized.is_empty() {
        return Read::Invalid(format!("{raw:?} is empty"));
    }
    Read::Value(normalized)
}

/// `GetBoolAnnotation` / `GetIntAnnotation`: the raw value, untrimmed, is
/// both validated and parsed by the same Go function.
fn read_scalar<T>(raw: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Read<T> {
    match raw {
        None => Read::Missing,
        Some(raw) => match parse(raw) {
            Some(v) => Read::Value(v),
            None => Read::Invalid(format!("{raw:?} is invalid")),
        },
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Methods, allow-headers and expose-headers: read with `pattern`, then
/// (as `Parse` does) the normalized value checked against it once more;
/// either failure gives `default`. A value no HTTP header can carry (a form
/// feed slips through Go's `\s`) also gives `default` in heim.
fn text_value(
    name: &'static str,
    raw: Option<&str>,
    pattern: &Regex,
    default: &'static str,
    notes: &mut Vec<(&'static str, String)>,
) -> HeaderValue {
    let shown = if default.is_empty() {
        "no header".to_owned()
    } else {
        format!("{default:?}")
    };
    let why = match read_string(raw, pattern) {
        Read::Missing => return HeaderValue::from_static(default),
        Read::Invalid(why) => why,
        Read::Value(v) if !pattern.is_match(&v) => {
            format!("{v:?} fails ingress-nginx's validation once trimmed")
        }
        Read::Value(v) => match HeaderValue::from_str(&v) {
            Ok(value) => return value,
            Err(_) => format!("{v:?} holds a byte no header value may carry"),
        },
    };
    notes.push((name, format!("{why}; ingress-nginx uses {shown}")));
    HeaderValue::from_static(default)
}

/// `cors-allow-origin`: missing or refused means `*`; otherwise the comma
/// list, entries trimmed, blanks skipped, a `*` entry meaning `*`, entries
/// the entry pattern refuses (no scheme, say) dropped one by one.
fn parse_origins(raw: Option<&str>, notes: &mut Vec<(&'static str, String)>) -> AllowedOrigins {
    const NAME: &str = "cors-allow-origin";
    let value = match read_string(raw, &ORIGIN_LIST) {
        Read::Missing => return AllowedOrigins::Any,
        Read::Invalid(why) => {
            notes.push((
                NAME,
                format!("{why}; ingress-nginx allows every origin (\"*\")"),
            ));
            return AllowedOrigins::Any;
        }
        Read::Value(v) => v,
    };
    let mut patterns = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return AllowedOrigins::Any;
        }
        if !ORIGIN_ENTRY.is_match(entry) {
            notes.push((
                NAME,
                format!("entry {entry:?} dropped: not scheme://host[:port], *, or null"),
            ));
            continue;
        }
        patterns.push(OriginPattern::compile(entry));
    }
    if patterns.is_empty() {
        notes.push((
            NAME,
            format!("no valid entry in {value:?}: ingress-nginx sends no CORS headers at all"),
        ));
    }
    AllowedOrigins::List(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn cors(a: CorsAnnotations) -> Cors {
        Cors::from_nginx(&a).0
    }

    fn origins(list: &str) -> Cors {
        cors(CorsAnnotations {
            allow_origin: Some(list),
            ..Default::default()
        })
    }

    fn request(origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    /// The response headers `apply` leaves on an empty response.
    fn applied(c: &Cors, origin: Option<&str>) -> HeaderMap {
        let mut out = HeaderMap::new();
        c.apply(&request(origin), &mut out);
        out
    }

    fn allow_origin(c: &Cors, origin: Option<&str>) -> Option<String> {
        applied(c, origin)
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn header(h: &HeaderMap, name: HeaderName) -> Option<&str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    /// The tests of ingress-nginx's `test/e2e/annotations/cors.go`, one per
    /// `ginkgo.It`, named after it. Where the e2e test greps the generated
    /// nginx.conf for a `more_set_headers` line, the test here checks the
    /// header that line sends.
    mod e2e {
        use super::*;

        const ORIGIN_HOST: &str = "http://origin.com:8080";

        #[test]
        fn should_enable_cors() {
            let (c, notes) = Cors::from_nginx(&CorsAnnotations::default());
            assert!(notes.is_empty());
            let h = applied(&c, None);
            assert_eq!(
                header(&h, ACCESS_CONTROL_ALLOW_METHODS),
                Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
            );
            assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
            assert_eq!(
                header(&h, ACCESS_CONTROL_ALLOW_HEADERS),
                Some("DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization")
            );
            assert_eq!(header(&h, ACCESS_CONTROL_MAX_AGE), Some("1728000"));
            assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
            assert_eq!(header(&h, ACCESS_CONTROL_EXPOSE_HEADERS), None);
        }

        #[test]
        fn should_set_cors_methods_to_only_allow_post_get() {
            let c = cors(CorsAnnotations {
                allow_methods: Some("POST, GET"),
                ..Default::default()
            });
            assert_eq!(
                header(&applied(&c, None), ACCESS_CONTROL_ALLOW_METHODS),
                Some("POST, GET")
            );
        }

        #[test]
        fn should_set_cors_max_age() {
            let c = cors(CorsAnnotations {
                max_age: Some("200"),
                ..Default::default()
            });
            assert_eq!(
                header(&applied(&c, None), ACCESS_CONTROL_MAX_AGE),
                Some("200")
            );
        }

        #[test]
        fn should_disable_cors_allow_credentials() {
            let c = cors(CorsAnnotations {
                allow_credentials: Some("false"),
                ..Default::default()
            });
            let h = applied(&c, None);
            assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
            assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        }

        #[test]
        fn should_allow_origin_for_cors() {
            let origin = "https://origin.cors.com:8080";
            let c = origins("https://origin.cors.com:8080");
            assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
        }

        #[test]
        fn should_allow_headers_for_cors() {
            let c = cors(CorsAnnotations {
                allow_headers: Some("DNT, User-Agent"),
                ..Default::default()
            });
            assert_eq!(
                header(&applied(&c, None), ACCESS_CONTROL_ALLOW_HEADERS),
                Some("DNT, User-Agent")
            );
        }

        #[test]
        fn should_expose_headers_for_cors() {
            let c = cors(CorsAnnotations {
                expose_headers: Some("X-CustomResponseHeader, X-CustomSecondHeader"),
                ..Default::default()
            });
            assert_eq!(
                header(&applied(&c, None), ACCESS_CONTROL_EXPOSE_HEADERS),
                Some("X-CustomResponseHeader, X-CustomSecondHeader")
            );
        }

        #[test]
        fn should_allow_single_origin_for_multiple_cors_values() {
            let origin = "https://origin.cors.com:8080";
            let c = origins("https://origin.cors.com:8080, https://origin2.cors.com");
            assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
        }

        #[test]
        fn should_not_allow_single_origin_for_multiple_cors_values() {
            let c = origins("http://origin2.cors.com, https://origin.com");
            assert_eq!(allow_origin(&c, Some("http://no.origin.com")), None);
        }

        #[test]
        fn should_allow_correct_origins_single_origin_for_multiple_cors_values() {
            let (c, notes) = Cors::from_nginx(&CorsAnnotations {
                allow_origin: Some(
                    "origin.cors.com:8080, https://origin2.cors.com, https://origin.com",
                ),
                ..Default::default()
            });
            assert_eq!(allow_origin(&c, Some("origin.cors.com:8080")), None);
            for origin in ["https://origin2.cors.com", "https://origin.com"] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
            }
            // The schemeless entry was dropped, and said so.
            assert_eq!(notes.len(), 1);
            assert_eq!(notes[0].0, "cors-allow-origin");
            assert!(notes[0].1.contains("origin.cors.com:8080"), "{notes:?}");
        }

        #[test]
        fn should_not_break_functionality() {
            let c = origins("*");
            assert_eq!(allow_origin(&c, None).as_deref(), Some("*"));
        }

        #[test]
        fn should_not_break_functionality_without_star() {
            let c = cors(CorsAnnotations::default());
            assert_eq!(allow_origin(&c, None).as_deref(), Some("*"));
        }

        #[test]
        fn should_not_break_functionality_with_extra_domain() {
            let (c, notes) = Cors::from_nginx(&CorsAnnotations {
                allow_origin: Some("*, foo.bar.com"),
                ..Default::default()
            });
            assert_eq!(allow_origin(&c, None).as_deref(), Some("*"));
            // ingress-nginx gets there by refusing the whole value.
            assert_eq!(notes.len(), 1);
            assert_eq!(notes[0].0, "cors-allow-origin");
        }

        #[test]
        fn should_not_match() {
            let c = origins("https://foo.bar.com");
            assert_eq!(allow_origin(&c, Some("https://fooxbar.com")), None);
        }

        #[test]
        fn should_allow_single_origin_with_required_port() {
            let c = origins("http://origin.cors.com:8080, http://origin.com:8080");
            assert_eq!(
                allow_origin(&c, Some(ORIGIN_HOST)).as_deref(),
                Some(ORIGIN_HOST)
            );
        }

        #[test]
        fn should_not_allow_single_origin_with_port_and_origin_without_port() {
            let c = origins("https://origin2.cors.com, http://origin.com");
            assert_eq!(allow_origin(&c, Some(ORIGIN_HOST)), None);
        }

        #[test]
        fn should_not_allow_single_origin_without_port_and_origin_with_required_port() {
            let c = origins("http://origin.cors.com:8080, http://origin.com:8080");
            assert_eq!(allow_origin(&c, Some("http://origin.com")), None);
        }

        #[test]
        fn should_allow_matching_origin_with_wildcard_origin_2_subdomains() {
            let c = origins("http://*.origin.cors.com, http://*.origin.com:8080");
            for origin in [
                "http://foo.origin.cors.com",
                "http://bar-foo.origin.cors.com",
            ] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
            }
        }

        #[test]
        fn should_not_allow_unmatching_origin_with_wildcard_origin_2_subdomains() {
            let c = origins("http://*.origin.cors.com, http://*.origin.com:8080");
            assert_eq!(
                allow_origin(&c, Some("http://bar.foo.origin.cors.com")),
                None
            );
        }

        #[test]
        fn should_allow_matching_origin_port_with_wildcard_origin() {
            let origin = "http://abc.origin.com:8080";
            let c = origins("http://origin.cors.com:8080, http://*.origin.com:8080");
            assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
        }

        #[test]
        fn should_not_allow_portless_origin_with_wildcard_origin() {
            let c = origins("http://origin.cors.com:8080, http://*.origin.com:8080");
            assert_eq!(allow_origin(&c, Some("http://abc.origin.com")), None);
        }

        #[test]
        fn should_allow_correct_origins_missing_subdomain_origin_with_wildcard_origin_and_correct_origin(
        ) {
            let c = origins("http://origin.cors.com:8080, http://*.origin.com:8080");
            assert_eq!(allow_origin(&c, Some(ORIGIN_HOST)), None);
            let origin = "http://bar.origin.com:8080";
            assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
        }

        #[test]
        fn should_allow_missing_origins_should_allow_all_origins() {
            let c = origins("      ");
            for origin in [
                "http://origin.com",
                "http://book.origin.com",
                "test.origin.com",
            ] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some("*"));
            }
        }

        #[test]
        fn should_allow_correct_origin_but_not_others_cors_allow_origin_annotations_contain_trailing_comma(
        ) {
            let c =
                origins("https://origin-123.cors.com:8080,   ,https://origin-321.cors.com:8080,");
            for origin in [
                "https://origin-123.cors.com:8080",
                "https://origin-321.cors.com:8080",
            ] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
            }
            assert_eq!(
                allow_origin(&c, Some("https://unknown.cors.com:8080")),
                None
            );
        }

        #[test]
        fn should_allow_origins_with_non_http_s_protocols() {
            let c = origins("test://localhost, tauri://localhost:3000");
            for origin in ["test://localhost", "tauri://localhost:3000"] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
            }
        }
    }

    #[test]
    fn preflight_answers_an_allowed_origin_with_the_templates_204() {
        let c = cors(CorsAnnotations {
            allow_origin: Some("https://app.example.com"),
            expose_headers: Some("X-Total"),
            ..Default::default()
        });
        let origin = "https://app.example.com";
        let r = c
            .preflight(&Method::OPTIONS, &request(Some(origin)))
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let mut got: Vec<(&str, &str)> = r
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        got.sort_unstable();
        let mut want = [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", DEFAULT_METHODS),
            ("access-control-allow-headers", DEFAULT_HEADERS),
            ("access-control-expose-headers", "X-Total"),
            ("access-control-max-age", "1728000"),
            ("content-type", "text/plain charset=UTF-8"),
            ("content-length", "0"),
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn preflight_for_a_disallowed_origin_goes_on_to_the_backend() {
        let c = origins("https://app.example.com");
        for origin in [Some("https://evil.example.com"), None] {
            assert!(c.preflight(&Method::OPTIONS, &request(origin)).is_none());
            assert!(applied(&c, origin).is_empty());
        }
    }

    #[test]
    fn preflight_only_for_options() {
        let c = origins("https://app.example.com");
        let h = request(Some("https://app.example.com"));
        for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            assert!(c.preflight(&m, &h).is_none(), "{m}");
        }
        assert!(c.preflight(&Method::OPTIONS, &h).is_some());
    }

    #[test]
    fn star_answers_every_options_even_without_origin() {
        let c = cors(CorsAnnotations::default());
        let r = c.preflight(&Method::OPTIONS, &HeaderMap::new()).unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(r.headers(), ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
    }

    #[test]
    fn star_with_credentials_sends_star_and_true_like_nginx() {
        let c = origins("*");
        let h = applied(&c, Some("https://anyone.example"));
        assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_ORIGIN), Some("*"));
        assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
    }

    #[test]
    fn origin_match_is_case_insensitive_and_echoes_as_sent() {
        let c = origins("https://*.example.com:8443");
        let origin = "HTTPS://Api.EXAMPLE.com:8443";
        assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some(origin));
    }

    #[test]
    fn wildcard_is_exactly_one_label() {
        let c = origins("https://*.example.com");
        let table = [
            ("https://a.example.com", true),
            ("https://a-b-9.example.com", true),
            ("https://example.com", false),
            ("https://.example.com", false),
            ("https://a.b.example.com", false),
            ("https://a_b.example.com", false),
            ("https://a.example.com:443", false),
            ("https://a.example.com.evil.net", false),
            ("https://aexample.com", false),
            ("http://a.example.com", false),
        ];
        for (origin, allowed) in table {
            assert_eq!(
                allow_origin(&c, Some(origin)).is_some(),
                allowed,
                "{origin}"
            );
        }
    }

    #[test]
    fn port_must_be_exact() {
        let c = origins("https://a.com:8443");
        assert!(allow_origin(&c, Some("https://a.com:8443")).is_some());
        assert!(allow_origin(&c, Some("https://a.com")).is_none());
        assert!(allow_origin(&c, Some("https://a.com:84433")).is_none());
        assert!(allow_origin(&c, Some("https://a.com:443")).is_none());
    }

    #[test]
    fn whole_origin_is_anchored_where_nginx_anchors_only_the_end() {
        // Each of these passes nginx's `(...)$` and is refused by heim.
        let c = origins("https://app.example.com, https://*.example.org, null");
        for origin in [
            "xhttps://app.example.com",
            "xhttps://a.example.org",
            "https://evil.net,https://app.example.com",
            "http://anull",
        ] {
            assert_eq!(allow_origin(&c, Some(origin)), None, "{origin}");
        }
        assert_eq!(allow_origin(&c, Some("null")).as_deref(), Some("null"));
    }

    #[test]
    fn repeated_origin_headers_match_nothing() {
        let c = origins("https://app.example.com");
        let mut h = HeaderMap::new();
        h.append(ORIGIN, HeaderValue::from_static("https://evil.net"));
        h.append(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert!(c.preflight(&Method::OPTIONS, &h).is_none());
        let mut out = HeaderMap::new();
        c.apply(&h, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_list_with_no_valid_entry_sends_nothing() {
        let (c, notes) = Cors::from_nginx(&CorsAnnotations {
            allow_origin: Some("foo.com, bar.com"),
            ..Default::default()
        });
        assert_eq!(allow_origin(&c, Some("foo.com")), None);
        assert_eq!(allow_origin(&c, Some("https://foo.com")), None);
        assert!(c
            .preflight(&Method::OPTIONS, &request(Some("foo.com")))
            .is_none());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[2].1.contains("no CORS headers"), "{notes:?}");
        // A `*` not right after the scheme passes the list validator but
        // not the entry pattern; only commas leave nothing either.
        assert_eq!(
            allow_origin(&origins("https://a.*.com"), Some("https://a.b.com")),
            None
        );
        assert_eq!(allow_origin(&origins(", ,"), None), None);
    }

    #[test]
    fn a_star_inside_a_list_or_an_invalid_list_means_star() {
        for list in [
            "https://a.com, *",
            "HTTPS://A.COM",
            "https://a.com/path",
            "https://a.com,\thttps://b.com",
            "https://a.com\n",
        ] {
            let (c, notes) = Cors::from_nginx(&CorsAnnotations {
                allow_origin: Some(list),
                ..Default::default()
            });
            assert_eq!(
                allow_origin(&c, Some("https://x.net")).as_deref(),
                Some("*"),
                "{list:?}"
            );
            assert_eq!(notes.len(), 1, "{list:?}: {notes:?}");
            assert_eq!(notes[0].0, "cors-allow-origin");
        }
        // An empty value: `*`, noted; absent: `*`, silently.
        let (c, notes) = Cors::from_nginx(&CorsAnnotations {
            allow_origin: Some(""),
            ..Default::default()
        });
        assert_eq!(allow_origin(&c, None).as_deref(), Some("*"));
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn invalid_values_fall_back_to_ingress_nginx_defaults() {
        struct Case {
            a: CorsAnnotations<'static>,
            name: &'static str,
            header: HeaderName,
            sent: Option<&'static str>,
        }
        let case = |a, name, header, sent| Case {
            a,
            name,
            header,
            sent,
        };
        let d = CorsAnnotations::default;
        let cases = [
            case(
                CorsAnnotations {
                    allow_credentials: Some("yes"),
                    ..d()
                },
                "cors-allow-credentials",
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                Some("true"),
            ),
            // Go's ParseBool sees the raw value: no trimming.
            case(
                CorsAnnotations {
                    allow_credentials: Some(" false"),
                    ..d()
                },
                "cors-allow-credentials",
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                Some("true"),
            ),
            case(
                CorsAnnotations {
                    allow_credentials: Some(""),
                    ..d()
                },
                "cors-allow-credentials",
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                Some("true"),
            ),
            case(
                CorsAnnotations {
                    max_age: Some("20k"),
                    ..d()
                },
                "cors-max-age",
                ACCESS_CONTROL_MAX_AGE,
                Some("1728000"),
            ),
            case(
                CorsAnnotations {
                    max_age: Some(" 200"),
                    ..d()
                },
                "cors-max-age",
                ACCESS_CONTROL_MAX_AGE,
                Some("1728000"),
            ),
            case(
                CorsAnnotations {
                    max_age: Some("99999999999999999999"),
                    ..d()
                },
                "cors-max-age",
                ACCESS_CONTROL_MAX_AGE,
                Some("1728000"),
            ),
            case(
                CorsAnnotations {
                    allow_methods: Some("GET;POST"),
                    ..d()
                },
                "cors-allow-methods",
                ACCESS_CONTROL_ALLOW_METHODS,
                Some(DEFAULT_METHODS),
            ),
            // Passes the validator (spaces removed), fails Parse's recheck.
            case(
                CorsAnnotations {
                    allow_methods: Some("GET,  POST"),
                    ..d()
                },
                "cors-allow-methods",
                ACCESS_CONTROL_ALLOW_METHODS,
                Some(DEFAULT_METHODS),
            ),
            case(
                CorsAnnotations {
                    allow_methods: Some("GET,\nPOST"),
                    ..d()
                },
                "cors-allow-methods",
                ACCESS_CONTROL_ALLOW_METHODS,
                Some(DEFAULT_METHODS),
            ),
            // Go's `\s` takes a form feed; no header value can.
            case(
                CorsAnnotations {
                    allow_methods: Some("GET,\x0cPOST"),
                    ..d()
                },
                "cors-allow-methods",
                ACCESS_CONTROL_ALLOW_METHODS,
                Some(DEFAULT_METHODS),
            ),
            case(
                CorsAnnotations {
                    allow_headers: Some("X-Foo: $pid"),
                    ..d()
                },
                "cors-allow-headers",
                ACCESS_CONTROL_ALLOW_HEADERS,
                Some(DEFAULT_HEADERS),
            ),
            case(
                CorsAnnotations {
                    allow_headers: Some("   "),
                    ..d()
                },
                "cors-allow-headers",
                ACCESS_CONTROL_ALLOW_HEADERS,
                Some(DEFAULT_HEADERS),
            ),
            case(
                CorsAnnotations {
                    expose_headers: Some("X-A; X-B"),
                    ..d()
                },
                "cors-expose-headers",
                ACCESS_CONTROL_EXPOSE_HEADERS,
                None,
            ),
            case(
                CorsAnnotations {
                    expose_headers: Some("X-A,  X-B"),
                    ..d()
                },
                "cors-expose-headers",
                ACCESS_CONTROL_EXPOSE_HEADERS,
                None,
            ),
        ];
        for c in cases {
            let (cors, notes) = Cors::from_nginx(&c.a);
            assert_eq!(notes.len(), 1, "{:?}: {notes:?}", c.a);
            assert_eq!(notes[0].0, c.name, "{:?}", c.a);
            assert_eq!(header(&applied(&cors, None), c.header), c.sent, "{:?}", c.a);
        }
    }

    #[test]
    fn valid_values_are_sent_as_ingress_nginx_reads_them() {
        let (c, notes) = Cors::from_nginx(&CorsAnnotations {
            allow_origin: Some(" https://a.com "),
            allow_methods: Some("  PUT GET  "),
            allow_headers: Some("X-Custom_1, Content-Type"),
            allow_credentials: Some("F"),
            expose_headers: Some("*, X-Total-Count"),
            max_age: Some("+60"),
        });
        assert!(notes.is_empty(), "{notes:?}");
        let h = applied(&c, Some("https://a.com"));
        assert_eq!(
            header(&h, ACCESS_CONTROL_ALLOW_ORIGIN),
            Some("https://a.com")
        );
        assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_METHODS), Some("PUT GET"));
        assert_eq!(
            header(&h, ACCESS_CONTROL_ALLOW_HEADERS),
            Some("X-Custom_1, Content-Type")
        );
        assert_eq!(header(&h, ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
        assert_eq!(
            header(&h, ACCESS_CONTROL_EXPOSE_HEADERS),
            Some("*, X-Total-Count")
        );
        assert_eq!(header(&h, ACCESS_CONTROL_MAX_AGE), Some("60"));
        // Atoi takes a sign; nginx then sends the number as Go prints it.
        let c = cors(CorsAnnotations {
            max_age: Some("-5"),
            ..Default::default()
        });
        assert_eq!(
            header(&applied(&c, None), ACCESS_CONTROL_MAX_AGE),
            Some("-5")
        );
    }

    #[test]
    fn apply_overwrites_the_backends_cors_headers_and_keeps_the_rest() {
        let c = cors(CorsAnnotations {
            allow_origin: Some("https://app.example.com"),
            allow_credentials: Some("false"),
            ..Default::default()
        });
        let backend = || {
            let mut h = HeaderMap::new();
            h.append(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            h.append(
                ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("https://x"),
            );
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET"),
            );
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h
        };

        let mut out = backend();
        c.apply(&request(Some("https://app.example.com")), &mut out);
        let acao: Vec<_> = out.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().collect();
        assert_eq!(acao, ["https://app.example.com"]);
        assert_eq!(
            header(&out, ACCESS_CONTROL_ALLOW_METHODS),
            Some(DEFAULT_METHODS)
        );
        // nginx sends no credentials header here, so the backend's stays.
        assert_eq!(header(&out, ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(header(&out, CONTENT_TYPE), Some("application/json"));

        // An origin that does not match: the backend's headers, untouched.
        let mut out = backend();
        c.apply(&request(Some("https://evil.example.com")), &mut out);
        assert_eq!(out, backend());
    }

    #[test]
    fn non_ascii_origin_matches_nothing() {
        let c = origins("https://*.example.com");
        let mut h = HeaderMap::new();
        h.insert(
            ORIGIN,
            HeaderValue::from_bytes(b"https://\xc3\xa9.example.com").unwrap(),
        );
        let mut out = HeaderMap::new();
        c.apply(&h, &mut out);
        assert!(out.is_empty());
    }
}
