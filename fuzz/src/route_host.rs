//! `normalize_host`: the `Host` (or `:authority`) value heim looks routes
//! and certificates up by.
//!
//! Properties, for any input string: no panic; a host that is accepted is
//! non-empty, at most 253 bytes, lowercase, without a port, with no
//! character that changes what a URL means (`/ ? # @ % \ [ ]`, space or
//! control), no empty label and no trailing dot; case never matters;
//! normalising the result again (bracketed when it is an IPv6 literal)
//! changes nothing, and neither does adding a port.

use heim_proxy::route::{normalize_host, wildcard_suffix};

/// Runs every property on one input.
pub fn check(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let Some(host) = normalize_host(&raw) else {
        return;
    };
    let h: &str = &host;
    assert!(
        !h.is_empty() && h.len() <= 253,
        "normalize_host({raw:?}) = {h:?}: length"
    );
    assert!(
        !h.bytes().any(|b| b.is_ascii_uppercase()),
        "normalize_host({raw:?}) = {h:?} is not lowercase"
    );
    assert!(
        !h.bytes()
            .any(|b| b.is_ascii_control() || b" /?#@%\\[]".contains(&b)),
        "normalize_host({raw:?}) = {h:?} holds a URL delimiter"
    );
    assert!(
        !h.starts_with('.') && !h.ends_with('.') && !h.contains(".."),
        "normalize_host({raw:?}) = {h:?} has an empty label"
    );
    for other in [raw.to_ascii_uppercase(), raw.to_ascii_lowercase()] {
        assert_eq!(
            normalize_host(&other).as_deref(),
            Some(h),
            "normalize_host({other:?}) differs from normalize_host({raw:?}) by case alone"
        );
    }
    // An unbracketed result with a ':' can only have come from an IPv6
    // literal (or a name heim will not know); it goes back in brackets.
    let (bare, with_port) = if h.contains(':') {
        (format!("[{h}]"), format!("[{h}]:8443"))
    } else {
        (h.to_string(), format!("{h}:8443"))
    };
    for again in [bare, with_port] {
        assert_eq!(
            normalize_host(&again).as_deref(),
            Some(h),
            "normalize_host is not idempotent: {raw:?} -> {h:?}, {again:?} -> other"
        );
    }
    if let Some(suffix) = wildcard_suffix(h) {
        assert!(
            h.ends_with(suffix) && suffix.len() < h.len(),
            "wildcard_suffix({h:?}) = {suffix:?}"
        );
    }
}
