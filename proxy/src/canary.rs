//! ingress-nginx's canaries: a second backend for a route, chosen per
//! request by a header, a cookie or a weight, in the order ingress-nginx's
//! balancer (`route_to_alternative_balancer`) decides:
//!
//! 1. header `by_header` present: with `header_value`, that exact value
//!    goes to the canary (any other value falls through); else with
//!    `header_pattern`, a match goes to the canary; else `always` goes to
//!    the canary and `never` to the mainline (decided), anything else
//!    falls through;
//! 2. cookie `by_cookie` present: `always` → canary, `never` → mainline;
//!    anything else falls through;
//! 3. the weight: canary when a draw from `1..=total` is at most `weight`,
//!    `total` being `weight_total` when above 100, else 100.
//!
//! ingress-nginx matches the pattern with PCRE, unanchored; heim with the
//! linear-time `regex` crate, unanchored: a pattern that does not compile
//! there is refused by the source, so none fails at request time. A
//! request whose affinity cookie names a mainline or canary endpoint goes
//! there first (`affinity-canary-behavior: sticky`, in `service::backend`).

use std::cell::Cell;

use http::HeaderMap;

use crate::upstream::UpstreamSpec;

/// A route's canary backend and when requests go to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub backend: UpstreamSpec,
    pub rule: CanaryRule,
}

impl Canary {
    /// Whether this request goes to the canary.
    pub fn chooses(&self, headers: &HeaderMap) -> bool {
        self.rule.decide(headers, || draw(self.rule.total()))
    }
}

/// When requests go to a canary (ingress-nginx's `canary-*` annotations).
#[derive(Clone, Debug)]
pub struct CanaryRule {
    pub by_header: Option<http::HeaderName>,
    /// Exact, case-sensitive.
    pub header_value: Option<String>,
    /// Searched anywhere in the value (ignored when `header_value` is set).
    pub header_pattern: Option<regex::Regex>,
    pub by_cookie: Option<String>,
    /// Out of `weight_total`.
    pub weight: u32,
    pub weight_total: u32,
}

impl Default for CanaryRule {
    /// No header, no cookie, weight 0 of 100: nothing goes to the canary.
    fn default() -> Self {
        CanaryRule {
            by_header: None,
            header_value: None,
            header_pattern: None,
            by_cookie: None,
            weight: 0,
            weight_total: 100,
        }
    }
}

impl PartialEq for CanaryRule {
    fn eq(&self, other: &Self) -> bool {
        self.by_header == other.by_header
            && self.header_value == other.header_value
            && self.header_pattern.as_ref().map(|r| r.as_str())
                == other.header_pattern.as_ref().map(|r| r.as_str())
            && self.by_cookie == other.by_cookie
            && self.weight == other.weight
            && self.weight_total == other.weight_total
    }
}

impl Eq for CanaryRule {}

impl CanaryRule {
    fn total(&self) -> u32 {
        if self.weight_total > 100 {
            self.weight_total
        } else {
            100
        }
    }

    /// The decision with the weight's draw (`1..=total`) given.
    fn decide(&self, headers: &HeaderMap, draw: impl FnOnce() -> u32) -> bool {
        if let Some(value) = self
            .by_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
        {
            if let Some(want) = &self.header_value {
                if want == value {
                    return true;
                }
            } else if let Some(pattern) = &self.header_pattern {
                if pattern.is_match(value) {
                    return true;
                }
            } else if value == "always" {
                return true;
            } else if value == "never" {
                return false;
            }
        }
        if let Some(value) = self.by_cookie.as_deref().and_then(|c| cookie(headers, c)) {
            match value {
                "always" => return true,
                "never" => return false,
                _ => {}
            }
        }
        self.weight > 0 && draw() <= self.weight
    }
}

/// A `canary-by-header-pattern`: searched unanchored and case-sensitive,
/// as `ngx.re.match` does, with the size bound of route patterns.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() {
        return Err("an empty pattern".into());
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(crate::route::REGEX_SIZE_LIMIT)
        .dfa_size_limit(crate::route::REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("{pattern:?} is not a regular expression heim reads: {e}"))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A uniform draw from `1..=n` (xorshift per thread, seeded randomly: a
/// traffic split, not a secret).
fn draw(n: u32) -> u32 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        ((x >> 32) % u64::from(n.max(1))) as u32 + 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> CanaryRule {
        CanaryRule::default()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// As ingress-nginx's e2e tests (test/e2e/annotations/canary.go):
    /// `always`/`never` by header, then by cookie, then the weight.
    #[test]
    fn header_then_cookie_then_weight() {
        let c = CanaryRule {
            by_header: Some(http::HeaderName::from_static("canaryheader")),
            by_cookie: Some("CanaryByCookie".into()),
            weight: 100,
            ..canary()
        };
        let never_drawn = || panic!("the weight is not consulted");
        assert!(c.decide(&headers(&[("CanaryHeader", "always")]), never_drawn));
        assert!(!c.decide(&headers(&[("CanaryHeader", "never")]), never_drawn));
        // `never` by header wins over `always` by cookie.
        assert!(!c.decide(
            &headers(&[
                ("CanaryHeader", "never"),
                ("cookie", "CanaryByCookie=always")
            ]),
            never_drawn
        ));
        // Another header value falls through to the cookie.
        assert!(!c.decide(
            &headers(&[
                ("CanaryHeader", "badvalue"),
                ("cookie", "a=b; CanaryByCookie=never")
            ]),
            never_drawn
        ));
        assert!(c.decide(
            &headers(&[("cookie", "CanaryByCookie=always")]),
            never_drawn
        ));
        // Neither decides: weight 100 of 100 always goes to the canary.
        assert!(c.decide(&headers(&[("cookie", "CanaryByCookie=maybe")]), || 100));
        let zero = CanaryRule { weight: 0, ..c };
        assert!(!zero.decide(&headers(&[]), || 1), "weight 0 never");
    }

    #[test]
    fn a_header_value_or_pattern_replaces_always() {
        let c = CanaryRule {
            by_header: Some(http::HeaderName::from_static("canary")),
            header_value: Some("DoCanary".into()),
            ..canary()
        };
        assert!(c.decide(&headers(&[("canary", "DoCanary")]), || 100));
        assert!(
            !c.decide(&headers(&[("canary", "docanary")]), || 100),
            "case-sensitive"
        );
        assert!(
            !c.decide(&headers(&[("canary", "always")]), || 100),
            "not with a value"
        );
        let p = CanaryRule {
            header_value: None,
            header_pattern: Some(regex::Regex::new("^Do(Canary|Test)$").unwrap()),
            ..c.clone()
        };
        assert!(p.decide(&headers(&[("canary", "DoTest")]), || 100));
        assert!(!p.decide(&headers(&[("canary", "DoNot")]), || 100));
        // The value wins over the pattern when both are set.
        let both = CanaryRule {
            header_value: Some("DoCanary".into()),
            ..p
        };
        assert!(!both.decide(&headers(&[("canary", "DoTest")]), || 100));
    }

    #[test]
    fn the_weight_is_out_of_100_or_a_larger_total() {
        let c = CanaryRule {
            weight: 30,
            weight_total: 50,
            ..canary()
        };
        assert_eq!(c.total(), 100, "a total below 100 is 100");
        assert!(c.decide(&headers(&[]), || 30));
        assert!(!c.decide(&headers(&[]), || 31));
        let big = CanaryRule {
            weight: 1,
            weight_total: 1000,
            ..canary()
        };
        assert_eq!(big.total(), 1000);
        // Draws stay within 1..=n and spread over it.
        let draws: Vec<u32> = (0..10_000).map(|_| draw(10)).collect();
        assert!(draws.iter().all(|d| (1..=10).contains(d)));
        for v in 1..=10 {
            let n = draws.iter().filter(|d| **d == v).count();
            assert!((700..1300).contains(&n), "{v} drawn {n} times of 10,000");
        }
    }
}
