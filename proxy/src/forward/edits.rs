//! Response header edits a route asks for (ingress-nginx snippets read as
//! data: `more_set_headers`, `more_clear_headers`, `add_header`), applied
//! to every answer of the route, heim's own included, in the order given.
//! Headers heim keeps to itself (hop-by-hop, `Content-Length`, `X-Heim-*`)
//! are never touched.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The statuses `add_header` applies to without `always` (nginx's list).
const ADD_HEADER_STATUSES: &[u16] = &[200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// One edit of a route's responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseEdit {
    /// Set `name`: `replace` removes the backend's copies first; without
    /// `always`, only on nginx's `add_header` statuses.
    Set {
        name: HeaderName,
        value: HeaderValue,
        always: bool,
        replace: bool,
    },
    /// Remove every header the pattern names.
    Clear(NamePattern),
}

/// Header names a clear applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Name(HeaderName),
    /// Every name starting with this lowercase prefix (`X-Debug-*`).
    Prefix(String),
}

impl NamePattern {
    fn matches(&self, name: &HeaderName) -> bool {
        match self {
            NamePattern::Name(n) => n == name,
            NamePattern::Prefix(p) => name.as_str().starts_with(p.as_str()),
        }
    }
}

/// A header no edit may touch.
fn protected(name: &HeaderName) -> bool {
    super::headers::is_hop_by_hop(name)
        || *name == http::header::CONTENT_LENGTH
        || name.as_str().starts_with("x-heim-")
}

/// Applies `edits` to a response of `status`.
pub fn apply(edits: &[ResponseEdit], status: StatusCode, headers: &mut HeaderMap) {
    for edit in edits {
        match edit {
            ResponseEdit::Set {
                name,
                value,
                always,
                replace,
            } => {
                if protected(name) || !(*always || ADD_HEADER_STATUSES.contains(&status.as_u16())) {
                    continue;
                }
                if *replace {
                    headers.insert(name.clone(), value.clone());
                } else {
                    headers.append(name.clone(), value.clone());
                }
            }
            ResponseEdit::Clear(pattern) => {
                let names: Vec<HeaderName> = headers
                    .keys()
                    .filter(|n| pattern.matches(n) && !protected(n))
                    .cloned()
                    .collect();
                for n in names {
                    headers.remove(&n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &'static str, value: &'static str, always: bool, replace: bool) -> ResponseEdit {
        ResponseEdit::Set {
            name: HeaderName::from_static(name),
            value: HeaderValue::from_static(value),
            always,
            replace,
        }
    }

    #[test]
    fn set_add_and_clear_as_nginx() {
        let mut h = HeaderMap::new();
        h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        h.insert("x-debug-a", HeaderValue::from_static("1"));
        h.insert("x-debug-b", HeaderValue::from_static("2"));
        h.insert("x-heim-user", HeaderValue::from_static("kept"));
        h.insert("content-length", HeaderValue::from_static("0"));
        let edits = [
            set("x-frame-options", "DENY", true, true),
            set("cache-control", "no-store", false, false),
            ResponseEdit::Clear(NamePattern::Prefix("x-debug-".into())),
            ResponseEdit::Clear(NamePattern::Prefix("".into())),
            set("x-heim-user", "forged", true, true),
        ];
        let mut ok = h.clone();
        apply(&edits[..3], StatusCode::OK, &mut ok);
        assert_eq!(ok["x-frame-options"], "DENY");
        assert_eq!(ok["cache-control"], "no-store");
        assert!(ok.get("x-debug-a").is_none() && ok.get("x-debug-b").is_none());
        // add_header without `always` skips a 404; more_set_headers does not.
        let mut missing = h.clone();
        apply(&edits[..2], StatusCode::NOT_FOUND, &mut missing);
        assert_eq!(missing["x-frame-options"], "DENY");
        assert!(missing.get("cache-control").is_none());
        // Clearing everything and setting heim's own leave heim's alone.
        let mut all = h.clone();
        apply(&edits[3..], StatusCode::OK, &mut all);
        assert_eq!(all["x-heim-user"], "kept");
        assert_eq!(all["content-length"], "0");
        assert!(all.get("x-frame-options").is_none());
    }
}
