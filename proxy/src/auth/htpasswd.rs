//! HTTP basic auth as ingress-nginx's `auth-type: basic` does it: the
//! user list from an `auth-file` Secret (an htpasswd file under key `auth`)
//! or an `auth-map` Secret (key = user, value = hash), the check of a
//! user's password against it, the `Authorization: Basic` parser and the
//! `WWW-Authenticate` challenge.
//!
//! It accepts the hash schemes nginx's `auth_basic` accepts on Linux:
//! nginx's own `$apr1$`, `{PLAIN}`, `{SHA}` and `{SSHA}`, and what libc's
//! crypt(3) knows: `$1$` (MD5-crypt), `$2a$`/`$2b$`/`$2y$` (bcrypt),
//! `$5$`/`$6$` (SHA-crypt) and 13-character DES crypt. Hashes are checked
//! when the Secret is read, so a typo is an error naming the line, not a
//! 401 at request time. The cryptography is the crates' (`bcrypt`,
//! `sha-crypt`, `crypt3_rs`, `aws-lc-rs`); this module only picks the
//! scheme and compares in constant time.
//!
//! It owns no I/O and no policy: which Secret, the 401/503 answers and the
//! removal of `Authorization` before proxying are the caller's. Checking a
//! password is slow on purpose for bcrypt and SHA-crypt: call
//! [`Htpasswd::verify`] off the event loop.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY, SHA1_OUTPUT_LEN, SHA256};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::HeaderValue;

/// The realm ingress-nginx sends when `auth-realm` is not set: it has no
/// default (`internal/ingress/annotations/auth/main.go` leaves `Realm`
/// empty and the template writes `auth_basic "";`), so the challenge is
/// `Basic realm=""`.
pub const DEFAULT_REALM: &str = "";

/// The highest bcrypt cost accepted. Each request with a password costs
/// one hash: past this, one request would hold a core for many seconds.
/// 17 is the most `htpasswd -C` writes; ingress-nginx's own e2e tests use 14.
pub const MAX_BCRYPT_COST: u32 = 17;

/// The most SHA-crypt rounds accepted, for the same reason (about as slow
/// as bcrypt at [`MAX_BCRYPT_COST`]); glibc's default is 5,000.
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 10_000_000;

/// Longer passwords are refused without hashing: MD5- and SHA-crypt cost
/// grows with the password's length times the rounds, and no real
/// password is this long.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The alphabet of crypt(3)'s own base64.
fn is_crypt64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// One user's stored password hash. Its `Debug` shows only the scheme.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    /// `$2a$`, `$2b$`, `$2y$`.
    Bcrypt(String),
    /// `$5$`, `$6$`.
    ShaCrypt(String),
    /// `$apr1$`, `$1$` and DES: computed with `crypt3_rs`, then compared.
    Crypt(String),
    /// `{SHA}`: base64 of the SHA-1 of the password.
    Sha1([u8; SHA1_OUTPUT_LEN]),
    /// `{SSHA}`: base64 of SHA-1(password ‖ salt) ‖ salt.
    Ssha {
        digest: [u8; SHA1_OUTPUT_LEN],
        salt: Vec<u8>,
    },
    /// `{PLAIN}`: the password itself.
    Plain(Vec<u8>),
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

impl Hash {
    /// Reads one stored hash; the error says what is wrong, never the hash.
    fn parse(s: &str) -> Result<Hash, String> {
        if let Some(rest) = s.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(rest.as_bytes().to_vec()));
        }
        if let Some(rest) = s.strip_prefix("{SSHA}") {
            let raw = STANDARD
                .decode(rest)
                .map_err(|_| "{SSHA} hash is not base64")?;
            if raw.len() < SHA1_OUTPUT_LEN {
                return Err("{SSHA} hash is too short".into());
            }
            let (d, salt) = raw.split_at(SHA1_OUTPUT_LEN);
            let mut digest = [0; SHA1_OUTPUT_LEN];
            digest.copy_from_slice(d);
            return Ok(Hash::Ssha {
                digest,
                salt: salt.to_vec(),
            });
        }
        if let Some(rest) = s.strip_prefix("{SHA}") {
            let raw = STANDARD
                .decode(rest)
                .map_err(|_| "{SHA} hash is not base64")?;
            let digest = <[u8; SHA1_OUTPUT_LEN]>::try_from(raw.as_slice())
                .map_err(|_| "{SHA} hash is not a SHA-1 digest")?;
            return Ok(Hash::Sha1(digest));
        }
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            // The crate's errors quote the hash: only their presence is used.
            let parts = s
                .parse::<bcrypt::HashParts>()
                .map_err(|_| "malformed bcrypt hash")?;
            let cost = parts.get_cost();
            if !(4..=MAX_BCRYPT_COST).contains(&cost) {
                return Err(format!(
                    "bcrypt cost {cost} is outside 4..={MAX_BCRYPT_COST}"
                ));
            }
            return Ok(Hash::Bcrypt(s.to_string()));
        }
        if let Some(rest) = s.strip_prefix("$5$") {
            return Self::parse_sha_crypt(s, rest, 43);
        }
        if let Some(rest) = s.strip_prefix("$6$") {
            return Self::parse_sha_crypt(s, rest, 86);
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = s.strip_prefix(magic) {
                let (salt, sum) = rest.split_once('$').ok_or("malformed MD5 hash")?;
                if salt.len() > 8 || !is_crypt64(salt) || sum.len() != 22 || !is_crypt64(sum) {
                    return Err("malformed MD5 hash".into());
                }
                return Ok(Hash::Crypt(s.to_string()));
            }
        }
        if s.len() == 13 && is_crypt64(s) {
            return Ok(Hash::Crypt(s.to_string()));
        }
        Err(
            "unknown password hash scheme (heim reads $apr1$, $1$, $2a$/$2b$/$2y$, \
             $5$, $6$, {SHA}, {SSHA}, {PLAIN} and 13-character DES crypt)"
                .into(),
        )
    }

    /// `$5$`/`$6$`: `[rounds=N$]salt$checksum`, checked here because the
    /// crate only says whether a password matches.
    fn parse_sha_crypt(s: &str, rest: &str, sum_len: usize) -> Result<Hash, String> {
        const BAD: &str = "malformed SHA-crypt hash";
        let fields: Vec<&str> = rest.split('$').collect();
        let (salt, sum) = match fields.as_slice() {
            [salt, sum] => (*salt, *sum),
            [rounds, salt, sum] => {
                let n: u32 = rounds
                    .strip_prefix("rounds=")
                    .and_then(|n| n.parse().ok())
                    .ok_or(BAD)?;
                if !(1000..=MAX_SHA_CRYPT_ROUNDS).contains(&n) {
                    return Err(format!(
                        "SHA-crypt rounds {n} are outside 1000..={MAX_SHA_CRYPT_ROUNDS}"
                    ));
                }
                (*salt, *sum)
            }
            _ => return Err(BAD.into()),
        };
        // glibc keeps at most 16 salt characters; the checksum is crypt64.
        if salt.is_empty() || salt.len() > 16 || salt.starts_with("rounds=") {
            return Err(BAD.into());
        }
        if sum.len() != sum_len || !is_crypt64(sum) {
            return Err(BAD.into());
        }
        sha_crypt::PasswordHashRef::new(s).map_err(|_| BAD)?;
        Ok(Hash::ShaCrypt(s.to_string()))
    }

    fn scheme(&self) -> &'static str {
        match self {
            Hash::Bcrypt(_) => "bcrypt",
            Hash::ShaCrypt(s) if s.starts_with("$5$") => "sha256-crypt",
            Hash::ShaCrypt(_) => "sha512-crypt",
            Hash::Crypt(s) if s.starts_with("$apr1$") => "apr1",
            Hash::Crypt(s) if s.starts_with("$1$") => "md5-crypt",
            Hash::Crypt(_) => "des-crypt",
            Hash::Sha1(_) => "sha1",
            Hash::Ssha { .. } => "ssha",
            Hash::Plain(_) => "plain",
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::ShaCrypt(h) => {
                use sha_crypt::PasswordVerifier;
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, h.as_str())
                    .is_ok()
            }
            Hash::Crypt(h) => crypt3_rs::unix::crypt(password, h)
                .is_ok_and(|computed| ct_eq(computed.as_bytes(), h.as_bytes())),
            Hash::Sha1(want) => {
                let got = digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, password);
                ct_eq(got.as_ref(), want)
            }
            Hash::Ssha { digest: want, salt } => {
                let mut ctx = digest::Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
                ctx.update(password);
                ctx.update(salt);
                ct_eq(ctx.finish().as_ref(), want)
            }
            Hash::Plain(want) => {
                // Compared as digests so that the time says nothing of the
                // stored password's length either.
                let got = digest::digest(&SHA256, password);
                let want = digest::digest(&SHA256, want);
                ct_eq(got.as_ref(), want.as_ref())
            }
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// The users of one basic-auth Secret and their password hashes.
#[derive(Clone)]
pub struct Htpasswd {
    users: BTreeMap<String, Hash>,
    /// Checked for unknown users so that they cost what a wrong password
    /// does: the first entry's hash, so its scheme and cost are the file's.
    decoy: Option<Hash>,
}

/// Equal when the same users have the same hashes: the decoy follows
/// entry order (an `auth-map`'s is arbitrary) and changes only timing.
impl PartialEq for Htpasswd {
    fn eq(&self, other: &Htpasswd) -> bool {
        self.users == other.users
    }
}

impl Eq for Htpasswd {}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.users.iter().map(|(user, hash)| (user, hash.scheme())))
            .finish()
    }
}

impl Htpasswd {
    /// Reads an htpasswd file (`auth-file`, key `auth`); errors name the line.
    pub fn parse_file(text: &str) -> Result<Htpasswd, String> {
        let mut list = Htpasswd::empty();
        for (i, line) in text.lines().enumerate() {
            // `lines` leaves nothing of "\n" but the "\r" of a lone CR.
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, field) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: not `user:hash`", i + 1))?;
            list.add(user, field)
                .map_err(|e| format!("line {}: {e}", i + 1))?;
        }
        Ok(list)
    }

    /// Reads an `auth-map` Secret's entries (key = user, value = hash);
    /// errors name the user.
    pub fn from_map<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Htpasswd, String> {
        let mut list = Htpasswd::empty();
        for (user, value) in entries {
            // A value written with `echo` or `--from-file` ends in a newline.
            let value = value.trim_end_matches(['\r', '\n']);
            // ingress-nginx writes `user:value` lines, so a newline inside
            // a value would add users of the value's choosing.
            if value.contains(['\r', '\n']) || user.contains([':', '\r', '\n']) {
                return Err(format!(
                    "user `{}`: a line break or `:` in the entry",
                    user.escape_debug()
                ));
            }
            list.add(user, value)
                .map_err(|e| format!("user `{}`: {e}", user.escape_debug()))?;
        }
        Ok(list)
    }

    fn empty() -> Htpasswd {
        Htpasswd {
            users: BTreeMap::new(),
            decoy: None,
        }
    }

    /// Adds `user` with the hash in `field`, unless the user is known.
    fn add(&mut self, user: &str, field: &str) -> Result<(), String> {
        if user.is_empty() {
            return Err("empty user name".into());
        }
        // nginx reads the hash up to the next `:` (Apache files may carry
        // a comment field after it).
        let hash = field.split(':').next().unwrap_or(field);
        let hash = Hash::parse(hash)?;
        self.decoy.get_or_insert_with(|| hash.clone());
        // The first entry wins, as nginx stops at the first match.
        self.users.entry(user.to_string()).or_insert(hash);
        Ok(())
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when no user is listed (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when `user` is listed and `password` matches their hash. Slow
    /// on purpose for bcrypt and SHA-crypt: call it off the event loop.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    std::hint::black_box(decoy.verify(password));
                }
                false
            }
        }
    }
}

/// Base64 as nginx decodes it: padding optional, stray low bits ignored.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The user and password of an `Authorization: Basic <base64>` value;
/// `None` for another scheme or anything malformed.
pub fn basic_credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let bytes = value.as_bytes();
    let space = bytes.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    if token.is_empty() || token.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let decoded = LENIENT_BASE64.decode(token).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// The `WWW-Authenticate` value of a 401: `Basic realm="<realm>"`, with
/// `"` and `\` escaped; a realm with control or non-ASCII characters is
/// replaced by [`DEFAULT_REALM`].
pub fn challenge(realm: &str) -> HeaderValue {
    let fallback = || HeaderValue::from_static("Basic realm=\"\"");
    if !realm.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return fallback();
    }
    let mut value = String::with_capacity(realm.len() + 16);
    value.push_str("Basic realm=\"");
    for c in realm.chars() {
        if c == '"' || c == '\\' {
            value.push('\\');
        }
        value.push(c);
    }
    value.push('"');
    HeaderValue::from_str(&value).unwrap_or_else(|_| fallback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cret pass";

    /// Hashes of [`PASSWORD`], each written by a real tool (command noted).
    const HASHES: &[(&str, &str)] = &[
        // openssl passwd -apr1
        ("apr1", "$apr1$q07XHF68$Ol6DjfSbDfh9hLxDU0blD1"),
        // htpasswd -nbm
        ("apr1", "$apr1$HlvTOozA$53383W.Un2kD6o5Rpnrr/1"),
        // openssl passwd -1
        ("md5-crypt", "$1$OnzUHaCt$0.njJDNVBfoHYyztG2bWL."),
        // htpasswd -nbB (cost 5)
        ("bcrypt", "$2y$05$SKQHhzzhxEhaOIQBiwK/rupd1jiP7xjkrtO5OsVHdYArCUe6iBmRW"),
        // htpasswd -nbBC 4
        ("bcrypt", "$2y$04$FCbHkgKRqQ27VO9ZbP9pnugmyXbs2fxN0UHqtOnKL/Il9wmpx/V/i"),
        // the same hash under the other prefixes: $2a$, $2b$ and $2y$ are one
        // algorithm for ASCII passwords, differing only in old bugs' labels
        ("bcrypt", "$2b$04$FCbHkgKRqQ27VO9ZbP9pnugmyXbs2fxN0UHqtOnKL/Il9wmpx/V/i"),
        ("bcrypt", "$2a$04$FCbHkgKRqQ27VO9ZbP9pnugmyXbs2fxN0UHqtOnKL/Il9wmpx/V/i"),
        // openssl passwd -5
        ("sha256-crypt", "$5$xgxYxp0YFGHzV/Ve$2Lg/8Kdbj6L1Hi4ME6tuy4tjvHqVWFhDmjCSFsSV8S8"),
        // openssl passwd -5 -salt 'rounds=12000$saltsalt'
        ("sha256-crypt", "$5$rounds=12000$saltsalt$66G0yi3HTkDeszAF7Hl3DD8HtIeKU.s1x1yTY5X5cI3"),
        // openssl passwd -6
        (
            "sha512-crypt",
            "$6$00JvcTSk6qFjybXj$y.pOC4vBZ83TRd0p.s9kGw38bVEsWCC9do2RRR0rj6NcfsEClaQTjIvnVsL6nB.2zIlpjq2SxJxUKQkvmDvN..",
        ),
        // perl -e 'print crypt("s3cret pass", q($6$rounds=1000$salty))' (glibc)
        (
            "sha512-crypt",
            "$6$rounds=1000$salty$jRCQGwb7QRoxCj4.MNyLYBlxQsiFns7p9nvgcM7MapmiIP/63GqpIGrXznLl5uQkedGoor0Q2Qzp5D4widg0T0",
        ),
        // htpasswd -nbs
        ("sha1", "{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M="),
        // python3: b64encode(sha1(pw + salt).digest() + salt), salt 9a174205
        ("ssha", "{SSHA}qTTaTF07LrwPqjZrlvVTktpRZ8SaF0IF"),
        // htpasswd -nbd (DES crypt; openssl 3 has no -crypt)
        ("des-crypt", "mMek/TcZkOOoA"),
        // perl -e 'print crypt("s3cret pass", "ab")' (glibc)
        ("des-crypt", "abTk71qDTQKMY"),
        // htpasswd -nbp writes the password as is; nginx wants {PLAIN}
        ("plain", "{PLAIN}s3cret pass"),
    ];

    #[test]
    fn every_scheme_checks_right_and_wrong_passwords() {
        for (scheme, hash) in HASHES {
            let list = Htpasswd::parse_file(&format!("alice:{hash}\n")).unwrap();
            assert_eq!(format!("{list:?}"), format!("{{\"alice\": \"{scheme}\"}}"));
            assert!(list.verify("alice", PASSWORD.as_bytes()), "{hash}");
            // DES crypt reads 8 bytes only, so each differs early on.
            for wrong in ["S3cret pass", "s3cret", "", "x"] {
                assert!(!list.verify("alice", wrong.as_bytes()), "{hash} {wrong:?}");
            }
            assert!(!list.verify("bob", PASSWORD.as_bytes()), "{hash}");
            assert!(!list.verify("Alice", PASSWORD.as_bytes()), "{hash}");
        }
    }

    #[test]
    fn des_crypt_reads_eight_characters_like_crypt3() {
        // crypt(3) DES uses the first 8 bytes only; nginx behaves the same.
        let list = Htpasswd::parse_file("alice:abTk71qDTQKMY").unwrap();
        assert!(list.verify("alice", b"s3cret pXYZ"));
        assert!(!list.verify("alice", b"s3cret "));
    }

    #[test]
    fn an_empty_password_can_match() {
        // openssl passwd -apr1 -salt abcdefgh ''
        let list =
            Htpasswd::parse_file("e:$apr1$abcdefgh$L.PT565ESX4Tp2bqNs7Ie.\np:{PLAIN}").unwrap();
        assert!(list.verify("e", b""));
        assert!(!list.verify("e", b"x"));
        assert!(list.verify("p", b""));
        assert!(!list.verify("p", b" "));
    }

    #[test]
    fn unknown_users_fail_even_with_the_decoys_password() {
        let list = Htpasswd::parse_file("alice:{PLAIN}first\nbob:{PLAIN}second").unwrap();
        assert_eq!(list.decoy, Some(Hash::Plain(b"first".to_vec())));
        assert!(!list.verify("carol", b"first"));
        assert!(!list.verify("", b"first"));
        let empty = Htpasswd::parse_file("# nobody yet\n\n").unwrap();
        assert!(empty.is_empty());
        assert!(!empty.verify("alice", b"first"));
    }

    #[test]
    fn over_long_passwords_are_refused() {
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        let list = Htpasswd::parse_file(&format!("a:{{PLAIN}}{long}")).unwrap();
        assert!(!list.verify("a", long.as_bytes()));
    }

    #[test]
    fn file_layout() {
        let text = "# users\r\n\r\n   \r\nalice:{PLAIN}one\r\nbob:{PLAIN}two:Bob's comment\r\n\
                    alice:{PLAIN}later\n#carol:{PLAIN}three\n";
        let list = Htpasswd::parse_file(text).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.verify("alice", b"one"), "first entry wins");
        assert!(!list.verify("alice", b"later"));
        assert!(list.verify("bob", b"two"), "hash ends at the next `:`");
        assert!(!list.verify("bob", b"two:Bob's comment"));
        assert!(!list.verify("carol", b"three"), "comment");
        assert!(!list.verify("#carol", b"three"));
    }

    #[test]
    fn malformed_lines_name_their_line_and_not_the_hash() {
        let cases = [
            ("alice:{PLAIN}x\nnocolon\n", "line 2: not `user:hash`"),
            ("foo:", "line 1: unknown password hash scheme"),
            ("\n\n:{PLAIN}x", "line 3: empty user name"),
            (
                "a:$apr1$toolongsalt$Ol6DjfSbDfh9hLxDU0blD1",
                "line 1: malformed MD5 hash",
            ),
            (
                "a:$1$OnzUHaCt$0.njJDNVBfoHYyztG2bWL",
                "line 1: malformed MD5 hash",
            ),
            (
                "a:$2y$05$SKQHhzzhxEhaOIQBiwK/rupd1jiP7xjkrtO5Os",
                "line 1: malformed bcrypt hash",
            ),
            (
                "a:$2y$31$SKQHhzzhxEhaOIQBiwK/rupd1jiP7xjkrtO5OsVHdYArCUe6iBmRW",
                "line 1: bcrypt cost 31 is outside",
            ),
            (
                "a:$5$rounds=999999999$saltsalt$66G0yi3HTkDeszAF7Hl3DD8HtIeKU.s1x1yTY5X5cI3",
                "line 1: SHA-crypt rounds 999999999 are outside",
            ),
            (
                "a:$5$rounds=12x$saltsalt$66G0yi3HTkDeszAF7Hl3DD8HtIeKU.s1x1yTY5X5cI3",
                "line 1: malformed SHA-crypt hash",
            ),
            (
                "a:$6$00JvcTSk6qFjybXj$y.pOC4vBZ83T",
                "line 1: malformed SHA-crypt hash",
            ),
            ("a:{SHA}not base64!", "line 1: {SHA} hash is not base64"),
            (
                "a:{SHA}c2hvcnQ=",
                "line 1: {SHA} hash is not a SHA-1 digest",
            ),
            ("a:{SSHA}c2hvcnQ=", "line 1: {SSHA} hash is too short"),
            ("a:mMek/TcZkOOo!", "line 1: unknown password hash scheme"),
            (
                "a:$2x$05$SKQHhzzhxEhaOIQBiwK/rupd1jiP7xjkrtO5OsVHdYArCUe6iBmRW",
                "line 1: unknown",
            ),
            (
                "a:$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                "line 1: unknown",
            ),
            (
                "a:{PLAIN}ok\r\nb:secretpassword",
                "line 2: unknown password hash scheme",
            ),
        ];
        for (text, want) in cases {
            let err = Htpasswd::parse_file(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
            let hash = text
                .lines()
                .last()
                .unwrap()
                .split_once(':')
                .map_or("", |(_, h)| h);
            assert!(
                hash.len() < 4 || !err.contains(hash),
                "{err} quotes the hash"
            );
        }
        assert!(!Htpasswd::parse_file("b:secretpassword")
            .unwrap_err()
            .contains("secret"));
    }

    #[test]
    fn map_entries() {
        let list = Htpasswd::from_map([
            ("alice", "$apr1$q07XHF68$Ol6DjfSbDfh9hLxDU0blD1"),
            ("bob", "{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M=\n"),
        ])
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.verify("alice", PASSWORD.as_bytes()));
        assert!(list.verify("bob", PASSWORD.as_bytes()), "trailing newline");
        assert!(!list.verify("bob", b"wrong"));

        let bad = [
            (
                ("bob", "hunter2"),
                "user `bob`: unknown password hash scheme",
            ),
            (("", "{PLAIN}x"), "user ``: empty user name"),
            (
                ("bob", "{PLAIN}x\nmallory:{PLAIN}y"),
                "user `bob`: a line break",
            ),
            (("a:b", "{PLAIN}x"), "user `a:b`: a line break or `:`"),
        ];
        for ((user, value), want) in bad {
            let err = Htpasswd::from_map([(user, value)]).unwrap_err();
            assert!(err.starts_with(want), "{err}");
            assert!(!err.contains(value), "{err}");
        }
    }

    #[test]
    fn equality_and_debug() {
        let a = Htpasswd::parse_file("alice:{PLAIN}one\nbob:{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M=")
            .unwrap();
        assert_eq!(a, a.clone());
        assert_eq!(
            a,
            Htpasswd::parse_file("alice:{PLAIN}one\r\nbob:{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M=\r\n")
                .unwrap()
        );
        let reordered = Htpasswd::from_map([
            ("bob", "{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M="),
            ("alice", "{PLAIN}one"),
        ])
        .unwrap();
        assert_eq!(a, reordered);
        assert_ne!(
            a,
            Htpasswd::parse_file("alice:{PLAIN}two\nbob:{SHA}ohgYgF2kkgMlRbH1HlEDczlOc+M=")
                .unwrap()
        );
        let debug = format!("{a:?}");
        assert_eq!(debug, r#"{"alice": "plain", "bob": "sha1"}"#);
        assert!(!debug.contains("one") && !debug.contains("ohgY"));
    }

    #[test]
    fn basic_header_parsing() {
        let parse = |v: &str| basic_credentials(&HeaderValue::from_str(v).unwrap());
        let user_pass = Some(("user".to_string(), b"pass".to_vec()));
        assert_eq!(parse("Basic dXNlcjpwYXNz"), user_pass);
        assert_eq!(parse("basic dXNlcjpwYXNz"), user_pass);
        assert_eq!(parse("BASIC   dXNlcjpwYXNz  "), user_pass);
        // "user:" without padding, as nginx also accepts
        assert_eq!(parse("Basic dXNlcjo="), Some(("user".into(), vec![])));
        assert_eq!(parse("Basic dXNlcjo"), Some(("user".into(), vec![])));
        // the user ends at the first colon; the password may hold more
        assert_eq!(
            parse("Basic dXNlcjpwYTpzcw=="),
            Some(("user".into(), b"pa:ss".to_vec()))
        );
        assert_eq!(
            parse("Basic OnBhc3M="),
            Some((String::new(), b"pass".to_vec()))
        );
        let none = [
            "Basic dXNlcnBhc3M=",  // "userpass": no colon
            "Basic dXNlcjpwYXNz!", // not base64
            "Basic dXNl cjpwYXNz", // two tokens
            "Basic ",              // nothing
            "Basic",               // no credentials at all
            "Basicdxnlcjpwyxnz",   // no space after the scheme
            "Bearer dXNlcjpwYXNz", // another scheme
            "Digest username=\"user\"",
            "Basic /zpwYXNz", // user 0xff: not UTF-8
        ];
        for v in none {
            assert_eq!(parse(v), None, "{v}");
        }
        // non-UTF-8 passwords are kept as bytes
        assert_eq!(parse("Basic dTr/"), Some(("u".into(), vec![0xff])));
    }

    #[test]
    fn challenge_escapes_and_falls_back() {
        let cases = [
            ("test auth", r#"Basic realm="test auth""#),
            (DEFAULT_REALM, r#"Basic realm="""#),
            (r#"say "hi" \o/"#, r#"Basic realm="say \"hi\" \\o/""#),
            ("line\nbreak", r#"Basic realm="""#),
            ("tab\there", r#"Basic realm="""#),
            ("café", r#"Basic realm="""#),
        ];
        for (realm, want) in cases {
            assert_eq!(challenge(realm), want, "{realm:?}");
        }
    }
}
