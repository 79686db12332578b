//! ingress-nginx's sticky sessions (`affinity: cookie` and the
//! `session-cookie-*` annotations): which endpoint a request's affinity
//! cookie names, and the `Set-Cookie` that pins a client to the endpoint
//! that served it.
//!
//! The cookie's value is heim's own, not ingress-nginx's
//! `<hash>|<backend key>`: 16 hex digits, the first 64 bits of
//! HMAC-SHA256 under a process key of the endpoint's id ([`EndpointTokens`]).
//! It never reveals an address (an unkeyed hash of a pod IP is a brute
//! force of a few million guesses away), and it is looked up among the
//! serving group's endpoints only: a forged or stale value picks nothing,
//! and the request is balanced as if it had no cookie. The key is random per
//! process unless [`init_key`] is called first, so with several heim
//! replicas a cookie set by one is unknown to another (which then pins the
//! client anew).
//!
//! Choices where ingress-nginx's Lua balancer differs from heim's model:
//! both `affinity-mode`s keep a client on its endpoint while it exists and
//! is not ejected (ingress-nginx's `persistent`); on scale-up, clients that
//! have a cookie stay where they are and new clients are spread round-robin
//! over every endpoint. An ejected (or, on retry, failed) endpoint's
//! clients are served by another; the cookie is re-set to that one only
//! with `session-cookie-change-on-failure`, otherwise it is kept and the
//! client returns once its endpoint is back. This module owns no routing:
//! `service::backend` asks it and `forward` takes the preferred endpoint.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use http::{HeaderMap, HeaderValue};

use crate::upstream::Endpoint;

/// ingress-nginx's default cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "INGRESSCOOKIE";

/// A route's sticky-session cookie, as the annotations declare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// `session-cookie-name` (checked by [`valid_cookie_name`]).
    pub cookie_name: String,
    /// `session-cookie-path`, else the Ingress path as written.
    pub path: String,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-secure`; HTTPS requests get `Secure` regardless.
    pub secure: bool,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `session-cookie-conditional-samesite-none`: no `SameSite=None` for
    /// user agents known to reject such cookies.
    pub conditional_same_site_none: bool,
    /// `session-cookie-expires`: `Expires` = now + this many seconds.
    pub expires: Option<i64>,
    /// `session-cookie-max-age`.
    pub max_age: Option<i64>,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
    /// `affinity-mode` (both behave alike in heim: see the module docs).
    pub mode: AffinityMode,
}

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

/// ingress-nginx's `affinity-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AffinityMode {
    #[default]
    Balanced,
    Persistent,
}

impl SameSite {
    /// `none`, `lax`, `strict`, any case (as ingress-nginx validates it).
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" => Some(SameSite::None),
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

impl Affinity {
    /// ingress-nginx's defaults: `INGRESSCOOKIE`, a session cookie for `path`.
    pub fn new(path: &str) -> Self {
        Affinity {
            cookie_name: DEFAULT_COOKIE_NAME.into(),
            path: path.into(),
            domain: None,
            secure: false,
            same_site: None,
            conditional_same_site_none: false,
            expires: None,
            max_age: None,
            change_on_failure: false,
            mode: AffinityMode::Balanced,
        }
    }

    /// The token the request's affinity cookie carries, if it is well formed
    /// (the first cookie of that name counts, as a browser sends the most
    /// specific path first).
    pub fn token(&self, headers: &HeaderMap) -> Option<u64> {
        let value = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value.trim())?;
        parse_token(value)
    }

    /// Whether the response sets the cookie: the request named no endpoint
    /// of the group (`wanted`), or another one served it and the cookie is
    /// to follow (`change_on_failure`).
    pub fn sets_cookie(&self, wanted: Option<usize>, served: usize) -> bool {
        match wanted {
            None => true,
            Some(w) => w != served && self.change_on_failure,
        }
    }

    /// The `Set-Cookie` that pins the client to the endpoint with `token`;
    /// `https`: the request came over TLS. `None` if an attribute cannot be
    /// a header value (the source validates them, so it should not happen).
    pub fn set_cookie(
        &self,
        token: u64,
        https: bool,
        user_agent: Option<&str>,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        let mut c = format!("{}={token:016x}", self.cookie_name);
        if let Some(secs) = self.expires {
            let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
            let at = (now.as_secs() as i64).saturating_add(secs);
            c.push_str("; Expires=");
            c.push_str(&cookie_time(at));
        }
        if let Some(secs) = self.max_age {
            c.push_str(&format!("; Max-Age={secs}"));
        }
        if let Some(d) = &self.domain {
            c.push_str("; Domain=");
            c.push_str(d);
        }
        c.push_str("; Path=");
        c.push_str(&self.path);
        if self.secure || https {
            c.push_str("; Secure");
        }
        c.push_str("; HttpOnly");
        let same_site = self.same_site.filter(|s| {
            !(*s == SameSite::None
                && self.conditional_same_site_none
                && !same_site_none_compatible(user_agent))
        });
        if let Some(s) = same_site {
            c.push_str("; SameSite=");
            c.push_str(s.as_str());
        }
        HeaderValue::from_str(&c).ok()
    }
}

/// 16 hex digits, nothing else.
fn parse_token(v: &str) -> Option<u64> {
    if v.len() != 16 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(v, 16).ok()
}

/// ingress-nginx's `util/same_site.lua`: the user agents that reject a
/// cookie with `SameSite=None` (Chrome 51-66, iOS 12, macOS 10.14 Safari).
pub fn same_site_none_compatible(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent else {
        return true;
    };
    let old_chrome = ["Chrome/4", "Chrome/5", "Chrome/6"]
        .iter()
        .any(|p| ua.contains(p));
    let ios12 = ua.contains("CPU iPhone OS 12") || ua.contains("iPad; CPU OS 12");
    let mojave_safari = ua.contains("Macintosh")
        && ua.contains("Intel Mac OS X 10_14")
        && ua.contains("Safari")
        && !ua.contains("Chrome");
    !(old_chrome || ios12 || mojave_safari)
}

/// A cookie name: an RFC 6265 token (ingress-nginx's own check is looser).
pub fn valid_cookie_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A `Domain`: letters, digits, dots and dashes.
pub fn valid_domain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A `Path`: starts with `/`, printable, no `;` (it would end the attribute).
pub fn valid_path(v: &str) -> bool {
    v.starts_with('/') && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_graphic() && b != b';')
}

/// The cookie path of a regex route without `session-cookie-path`: its
/// literal prefix up to the last `/` before the first metacharacter
/// (`/foo/.*` → `/foo`), `/` when there is none. ingress-nginx sets the
/// pattern itself as the path, which no browser path matches.
pub fn regex_cookie_path(pattern: &str) -> String {
    let pattern = pattern.strip_prefix('^').unwrap_or(pattern);
    let literal_end = pattern
        .find(|c: char| "\\.+*?()|[]{}^$".contains(c))
        .unwrap_or(pattern.len());
    let literal = &pattern[..literal_end];
    if literal_end == pattern.len() && valid_path(literal) {
        return literal.to_string();
    }
    match literal.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => literal[..i].to_string(),
    }
}

/// `Expires` as nginx's `ngx.cookie_time` writes it
/// (`Thu, 18-Nov-10 11:27:35 GMT`).
fn cookie_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02}-{}-{:02} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        y.rem_euclid(100),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// (year, month 1-12, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

static KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Sets the key endpoint tokens are made with (replicas that share it
/// understand each other's cookies). Only before the first sticky request:
/// `false` if a key is already in use.
pub fn init_key(secret: &[u8]) -> bool {
    KEY.set(hmac::Key::new(hmac::HMAC_SHA256, secret)).is_ok()
}

fn key() -> &'static hmac::Key {
    KEY.get_or_init(|| {
        let mut b = [0u8; 32];
        // The system RNG failing is not something heim can serve through.
        if aws_lc_rs::rand::fill(&mut b).is_err() {
            panic!("system random number generator failed");
        }
        hmac::Key::new(hmac::HMAC_SHA256, &b)
    })
}

/// The opaque token of endpoint `id` in affinity cookies.
pub fn endpoint_token(id: u64) -> u64 {
    let tag = hmac::sign(key(), &id.to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag.as_ref()[..8]);
    u64::from_le_bytes(b)
}

/// A group's endpoint tokens, made once per group on its first sticky
/// request: by index, and sorted for the lookup.
#[derive(Debug)]
pub struct EndpointTokens {
    by_index: Box<[u64]>,
    sorted: Box<[(u64, usize)]>,
}

impl EndpointTokens {
    /// The tokens of `endpoints`.
    pub fn new(endpoints: &[Endpoint]) -> Self {
        let by_index: Box<[u64]> = endpoints.iter().map(|e| endpoint_token(e.id)).collect();
        let mut sorted: Vec<(u64, usize)> =
            by_index.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        sorted.sort_unstable();
        EndpointTokens {
            by_index,
            sorted: sorted.into(),
        }
    }

    /// The endpoint a token names, if it is one of these.
    pub fn index(&self, token: u64) -> Option<usize> {
        let at = self.sorted.binary_search_by_key(&token, |(t, _)| *t).ok()?;
        Some(self.sorted[at].1)
    }

    /// The token of endpoint `i`.
    pub fn token(&self, i: usize) -> Option<u64> {
        self.by_index.get(i).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{UpstreamAddr, UpstreamProtocol};

    fn endpoints(ports: &[u16]) -> Vec<Endpoint> {
        ports
            .iter()
            .map(|p| {
                Endpoint::new(
                    UpstreamAddr::Socket(([10, 0, 0, 1], *p).into()),
                    UpstreamProtocol::Http1,
                )
            })
            .collect()
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    fn cookie(a: &Affinity, https: bool) -> String {
        a.set_cookie(0xabc, https, None, UNIX_EPOCH)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    fn named(name: &str) -> Affinity {
        Affinity {
            cookie_name: name.into(),
            ..Affinity::new("/")
        }
    }

    #[test]
    fn should_set_sticky_cookie_serverid() {
        let c = cookie(&named("SERVERID"), false);
        assert!(c.starts_with("SERVERID=0000000000000abc;"), "{c}");
        assert!(c.contains("; HttpOnly"), "{c}");
        assert!(c.contains("; Path=/"), "{c}");
        let c = cookie(&Affinity::new("/"), false);
        assert!(c.starts_with("INGRESSCOOKIE="), "default name: {c}");
    }

    #[test]
    fn should_set_the_path_to_something_on_the_generated_cookie() {
        let c = cookie(&Affinity::new("/something"), false);
        assert!(c.contains("; Path=/something;"), "{c}");
    }

    #[test]
    fn should_set_cookie_with_expires() {
        let a = Affinity {
            expires: Some(172_800),
            max_age: Some(259_200),
            ..named("ExpiresCookie")
        };
        // 2026-12-03 16:00:00 UTC, a Thursday; +48h is Saturday the 5th.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_313_600);
        let c = a.set_cookie(1, false, None, now).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.contains("; Expires=Sat, 05-Dec-26 16:00:00 GMT"), "{c}");
        assert!(c.contains("; Max-Age=259200"), "{c}");
        let session = cookie(&named("S"), false);
        assert!(!session.contains("Expires") && !session.contains("Max-Age"));
    }

    #[test]
    fn cookie_time_is_nginx_cookie_time() {
        assert_eq!(cookie_time(0), "Thu, 01-Jan-70 00:00:00 GMT");
        assert_eq!(cookie_time(951_782_400), "Tue, 29-Feb-00 00:00:00 GMT");
        assert_eq!(cookie_time(1_290_079_655), "Thu, 18-Nov-10 11:27:35 GMT");
    }

    #[test]
    fn should_set_cookie_with_domain() {
        let a = Affinity {
            domain: Some("foo.bar".into()),
            ..named("DomainCookie")
        };
        assert!(cookie(&a, false).contains("; Domain=foo.bar"));
    }

    #[test]
    fn should_not_set_cookie_without_domain_annotation() {
        assert!(!cookie(&named("NoDomainCookie"), false).contains("; Domain"));
    }

    #[test]
    fn should_set_secure_in_cookie_with_provided_true_annotation_on_http() {
        let a = Affinity {
            secure: true,
            ..named("SERVERID")
        };
        assert!(cookie(&a, false).contains("; Secure"));
    }

    #[test]
    fn should_not_set_secure_in_cookie_with_provided_false_annotation_on_http() {
        assert!(!cookie(&named("SERVERID"), false).contains("; Secure"));
    }

    #[test]
    fn should_set_secure_in_cookie_with_provided_false_annotation_on_https() {
        assert!(cookie(&named("SERVERID"), true).contains("; Secure"));
    }

    #[test]
    fn same_site_only_if_set_and_conditional_none_spares_old_agents() {
        assert!(!cookie(&named("S"), false).contains("SameSite"));
        let lax = Affinity {
            same_site: SameSite::parse("lax"),
            ..named("S")
        };
        assert!(cookie(&lax, false).ends_with("; SameSite=Lax"));
        let none = Affinity {
            same_site: Some(SameSite::None),
            conditional_same_site_none: true,
            ..named("S")
        };
        let chrome_51 = "Mozilla/5.0 (X11; Linux x86_64) Chrome/51.0.2704.103 Safari/537.36";
        let chrome_120 = "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36";
        let set = |ua| {
            none.set_cookie(1, true, ua, UNIX_EPOCH)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert!(!set(Some(chrome_51)).contains("SameSite"));
        assert!(set(Some(chrome_120)).ends_with("; SameSite=None"));
        assert!(set(None).ends_with("; SameSite=None"));
        let unconditional = Affinity {
            conditional_same_site_none: false,
            ..none.clone()
        };
        let c = unconditional
            .set_cookie(1, true, Some(chrome_51), UNIX_EPOCH)
            .unwrap();
        assert!(c.to_str().unwrap().ends_with("; SameSite=None"));
        assert_eq!(SameSite::parse("Bogus"), None);
    }

    #[test]
    fn the_request_cookie_is_found_among_others() {
        let a = named("SERVERID");
        let h = headers(&["a=1; SERVERID=00000000000000ff; b=2"]);
        assert_eq!(a.token(&h), Some(0xff));
        let split = headers(&["a=1", "SERVERID=0000000000000001"]);
        assert_eq!(a.token(&split), Some(1), "HTTP/2 sends cookies apart");
        let first = headers(&["SERVERID=0000000000000002; SERVERID=0000000000000003"]);
        assert_eq!(a.token(&first), Some(2));
        assert_eq!(a.token(&headers(&["XSERVERID=0000000000000001"])), None);
        for bad in [
            "SERVERID=",
            "SERVERID=xyz",
            "SERVERID=10.0.0.1:80",
            "SERVERID=+00000000000000f",
        ] {
            assert_eq!(a.token(&headers(&[bad])), None, "{bad}");
        }
    }

    #[test]
    fn tokens_name_only_the_groups_endpoints_and_reveal_no_address() {
        let eps = endpoints(&[80, 81, 82]);
        let t = EndpointTokens::new(&eps);
        for (i, ep) in eps.iter().enumerate() {
            let token = t.token(i).unwrap();
            assert_eq!(t.index(token), Some(i));
            let value = format!("{token:016x}");
            assert!(!value.contains("10.0.0.1") && value.len() == 16);
            assert_ne!(token, ep.id, "the pool id is not the token");
        }
        // A forged value, or one of another group's endpoint, names nothing.
        assert_eq!(t.index(0xdead_beef), None);
        let other = EndpointTokens::new(&endpoints(&[90]));
        assert_eq!(t.index(other.token(0).unwrap()), None);
        assert_eq!(t.token(3), None);
        // Stable: the same endpoint in a rebuilt group has the same token.
        let again = EndpointTokens::new(&endpoints(&[82, 80]));
        assert_eq!(again.token(1), t.token(0));
    }

    #[test]
    fn the_cookie_is_set_when_missing_and_moves_only_with_change_on_failure() {
        let a = named("S");
        assert!(a.sets_cookie(None, 1), "no valid cookie");
        assert!(!a.sets_cookie(Some(1), 1), "served where it asked");
        assert!(!a.sets_cookie(Some(0), 1), "kept: the client returns");
        let moving = Affinity {
            change_on_failure: true,
            ..a
        };
        assert!(moving.sets_cookie(Some(0), 1));
    }

    #[test]
    fn should_work_with_use_regex_annotation_and_session_cookie_path() {
        // session-cookie-path is taken as it is; without it, the literal prefix.
        assert_eq!(regex_cookie_path("/foo/.*"), "/foo");
        assert_eq!(regex_cookie_path("/something"), "/something");
        assert_eq!(regex_cookie_path("^/api/v[0-9]+/"), "/api");
        assert_eq!(regex_cookie_path("/.*"), "/");
        assert_eq!(regex_cookie_path("(/a|/b)"), "/");
    }

    #[test]
    fn attribute_values_are_checked() {
        assert!(valid_cookie_name("SERVERID") && valid_cookie_name("my_cookie-1"));
        for bad in ["", "a b", "a;b", "a=b", "ä"] {
            assert!(!valid_cookie_name(bad), "{bad:?}");
        }
        assert!(valid_domain("foo.bar") && !valid_domain("foo.bar; Secure"));
        assert!(valid_path("/foo/bar") && !valid_path("foo") && !valid_path("/a; Domain=x"));
    }
}
