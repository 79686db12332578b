//! Where heim may send a browser after sign-in or sign-out: only an
//! absolute `https://` URL on a host heim serves. Everything else (relative
//! and protocol-relative forms, backslashes, userinfo, whitespace and
//! control bytes, other schemes) is refused outright rather than repaired:
//! browsers and servers disagree on how to repair them, which is how open
//! redirects happen.

use crate::route::normalize_host;

/// `rd` if it is safe to redirect to (`serves` says which hosts heim
/// serves), else `None`.
pub fn safe_return_url(rd: &str, serves: impl Fn(&str) -> bool) -> Option<&str> {
    if rd.len() > 2048 || rd.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return None;
    }
    let rest = rd.strip_prefix("https://")?;
    let uri: http::Uri = rd.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let authority = uri.authority()?.as_str();
    // The authority as written must be what the URL starts with: no
    // userinfo, and nothing a parser could read differently.
    if authority.contains(['@', '%']) || !rest.starts_with(authority) {
        return None;
    }
    let host = normalize_host(authority)?;
    serves(&host).then_some(rd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_on_served_hosts() {
        let serves = |h: &str| h == "app.test" || h == "auth.test";
        let ok = [
            "https://app.test/",
            "https://app.test/grafana/d?x=1&y=%2F",
            "https://APP.test:8443/x",
            "https://app.test//evil.com",
        ];
        for rd in ok {
            assert_eq!(safe_return_url(rd, serves), Some(rd), "{rd}");
        }
        let bad = [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https:evil.com",
            "https:/evil.com",
            "https:\\\\evil.com",
            "/%09/evil.com",
            "/\t/evil.com",
            "https://app.test@evil.com/",
            "https://evil.com\\@app.test/",
            "https://app.test%40evil.com/",
            "https://app.test%2f@evil.com",
            "https://evil.com/",
            "https://evil.com#https://app.test/",
            "https://app.test.evil.com/",
            "http://app.test/",
            "javascript:alert(1)",
            "JavaScript://app.test/%0aalert(1)",
            "data:text/html,<script>alert(1)</script>",
            " https://app.test/",
            "https://app.test/\r\nSet-Cookie: x=1",
            "/relative",
            "",
        ];
        for rd in bad {
            assert_eq!(safe_return_url(rd, serves), None, "{rd:?}");
        }
    }
}
