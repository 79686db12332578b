//! `normalize_path` and `routing_path`: the path heim forwards and the path
//! it picks the route by.
//!
//! Properties, for any input string:
//! * neither function panics;
//! * `normalize_path` output starts with `/`, holds no `//` and no `.` or
//!   `..` segment (also spelled `%2e`), never grows, and is a fixpoint
//!   (normalising twice changes nothing); a path that starts with `/` and
//!   holds no dot at all is never refused, and one with nothing to resolve
//!   comes back unchanged;
//! * `routing_path` output is rooted, holds no `//`, no `.` or `..`
//!   segment and no `;`, and is a fixpoint of `normalize_path` unless it
//!   keeps a literal `%2e` (sent as `%252e`: decoded once, it is no dot);
//!   a path with no `%`, `;` or `\` routes as itself;
//! * the forwarded path, received again, routes the same (what a second
//!   heim, or heim's own retry, would choose);
//! * the routing path is what a backend sees: decode the escapes once, read
//!   `\` as `/`, cut `;` parameters, resolve dot segments ([`backend_view`]);
//! * spelling a plain path with escapes (`/%61dmin`, `/a%2Fb`) never changes
//!   its route.

use std::borrow::Cow;

use heim_proxy::route::{normalize_path, routing_path};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Longer inputs are skipped: nothing here depends on length, and a few
/// KiB of path make a run many times slower.
const MAX_LEN: usize = 1024;

/// Runs every property on one input.
pub fn check(data: &[u8]) {
    if data.len() > MAX_LEN {
        return;
    }
    let raw = String::from_utf8_lossy(data);
    normalized(&raw);
    if !raw.contains('\0') {
        // hyper never hands heim a raw NUL (it is no URI character).
        agrees_with_backend(&raw);
    }
    escapes_route_alike(&raw, data);
}

fn normalized(p: &str) {
    let Some(n) = normalize_path(p) else {
        assert!(
            !p.starts_with('/') || has_dot(p),
            "normalize_path refused {p:?}, which starts with '/' and has no dot segment"
        );
        return;
    };
    well_formed("normalize_path", p, &n);
    assert!(n.len() <= p.len(), "normalize_path({p:?}) grew to {n:?}");
    assert_eq!(
        normalize_path(&n).as_deref(),
        Some(&*n),
        "normalize_path is not idempotent on {p:?}"
    );
    if !["//", "/.", "%", "\\"].iter().any(|s| p.contains(s)) {
        assert_eq!(
            &*n, p,
            "normalize_path changed {p:?}, which had nothing to resolve"
        );
    }

    let r = routing_path(&n);
    if let Some(r) = &r {
        // Decoded once: a `%2e` left is a literal (`%252e` on the wire),
        // so only a plain `.` counts as a dot here.
        assert!(
            r.starts_with('/'),
            "routing path {r:?} of {p:?} is not rooted"
        );
        assert!(!r.contains("//"), "routing path {r:?} of {p:?} holds '//'");
        assert!(
            r.split('/').all(|seg| seg != "." && seg != ".."),
            "routing path {r:?} of {p:?} holds a dot segment"
        );
        if !r.to_ascii_lowercase().contains("%2e") {
            assert_eq!(
                normalize_path(r).as_deref(),
                Some(&**r),
                "routing path {r:?} of {p:?} is not normalised"
            );
        }
        assert!(
            !r.contains(';'),
            "routing path {r:?} of {p:?} kept a ';' parameter"
        );
    }
    if !n.contains(['%', ';', '\\']) {
        assert_eq!(r.as_deref(), Some(&*n), "plain path {n:?} routes elsewhere");
    }
    // The backend gets `n`; if `n` reaches heim again it must route alike.
    let again = normalize_path(&n).and_then(|n2| routing_path(&n2).map(Cow::into_owned));
    assert_eq!(
        again.as_deref(),
        r.as_deref(),
        "forwarded path {n:?} routes differently from {p:?}"
    );
}

fn agrees_with_backend(p: &str) {
    let Some(n) = normalize_path(p) else { return };
    let Some(decoded) = decode_once(&n) else {
        assert_eq!(
            routing_path(&n),
            None,
            "{n:?} decodes to NUL or non-UTF-8, yet routes"
        );
        return;
    };
    assert_eq!(
        routing_path(&n).as_deref(),
        backend_view(&decoded).as_deref(),
        "{n:?} (from {p:?}) routes unlike what a backend sees"
    );
}

fn escapes_route_alike(raw: &str, data: &[u8]) {
    // A plain path: nothing that escapes, cuts or turns into a slash.
    let mut q: String = raw.chars().filter(|c| !"%;\\\0".contains(*c)).collect();
    if !q.starts_with('/') {
        q.insert(0, '/');
    }
    let Some(q) = normalize_path(&q).map(Cow::into_owned) else {
        return;
    };
    // Which characters to escape, and in which case: bits of the input.
    let bit = |i: usize| data.is_empty() || data[i / 8 % data.len()] >> (i % 8) & 1 == 1;
    let mut spelled = String::with_capacity(q.len() * 3);
    for (i, c) in q.char_indices() {
        if i == 0 || !bit(2 * i) {
            spelled.push(c);
            continue;
        }
        let mut buf = [0; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            let hex = if bit(2 * i + 1) { HEX_UPPER } else { HEX_LOWER };
            spelled.push('%');
            spelled.push(hex[usize::from(b >> 4)] as char);
            spelled.push(hex[usize::from(b & 15)] as char);
        }
    }
    let routed = normalize_path(&spelled).and_then(|n| routing_path(&n).map(Cow::into_owned));
    assert_eq!(
        routed.as_deref(),
        Some(q.as_str()),
        "{spelled:?} is {q:?} spelled with escapes, yet routes elsewhere"
    );
}

/// A path heim may forward: rooted, no empty segment but a trailing one,
/// no dot segment in any spelling.
fn well_formed(what: &str, input: &str, out: &str) {
    assert!(
        out.starts_with('/'),
        "{what}({input:?}) = {out:?} is not rooted"
    );
    assert!(
        !out.contains("//"),
        "{what}({input:?}) = {out:?} holds '//'"
    );
    for seg in out.split('/').skip(1) {
        let seg = decode_dots(seg);
        assert!(
            seg != "." && seg != "..",
            "{what}({input:?}) = {out:?} holds a dot segment"
        );
    }
}

/// True when `p` may hold a `.` or `..` segment, in any spelling.
fn has_dot(p: &str) -> bool {
    decode_dots(p).contains('.')
}

fn decode_dots(s: &str) -> String {
    s.replace("%2e", ".").replace("%2E", ".")
}

/// Every `%XX` escape decoded once; `None` for a NUL or bytes that are not
/// UTF-8 (heim's 400).
fn decode_once(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The path a backend that decodes once acts on, from the decoded path:
/// `\` is `/`, `;` parameters cut from each segment, runs of `/` merged and
/// dot segments resolved (RFC 3986 §5.2.4); `None` when it climbs above `/`.
fn backend_view(decoded: &str) -> Option<String> {
    let decoded = decoded.replace('\\', "/");
    let segments: Vec<&str> = decoded
        .split('/')
        .skip(1)
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => trailing_slash = i == last,
            ".." => {
                out.pop()?;
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut view = String::new();
    for s in out {
        view.push('/');
        view.push_str(s);
    }
    if trailing_slash || view.is_empty() {
        view.push('/');
    }
    Some(view)
}
