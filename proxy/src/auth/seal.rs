//! Sealed tokens: what heim hands a browser or a CLI and reads back.
//!
//! Session cookies, pre-auth state, the hand-off between hosts and CLI
//! tokens are all JSON sealed with AES-256-GCM under a key derived (HKDF)
//! from `cookie_secret_file`, with a random nonce and the token's purpose as
//! additional data, so a token made for one purpose never opens as
//! another. Any replica with the same secret opens them: there is no
//! server-side store. Old secrets (`previous_cookie_secret_files`) still
//! open, so a rotation signs nobody out.
//!
//! Anything that does not open (tampered, truncated, foreign, another
//! purpose) is simply absent to the caller.

use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a sealed token is for: bound into its AEAD additional data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Session,
    PreAuth,
    Handoff,
    CliCode,
    CliToken,
    CliRefresh,
    /// The logout form's token, bound to the session id.
    Csrf,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"heim/session/v1",
            Purpose::PreAuth => b"heim/pre-auth/v1",
            Purpose::Handoff => b"heim/handoff/v1",
            Purpose::CliCode => b"heim/cli-code/v1",
            Purpose::CliToken => b"heim/cli-token/v1",
            Purpose::CliRefresh => b"heim/cli-refresh/v1",
            Purpose::Csrf => b"heim/csrf/v1",
        }
    }
}

/// The sealing keys: the current one first, then those still accepted.
pub struct Sealer {
    keys: Vec<RandomizedNonceKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} keys)", self.keys.len())
    }
}

/// Secrets shorter than this are refused (the config says so).
pub const MIN_SECRET_LEN: usize = 32;

impl Sealer {
    /// Keys from secrets (current first). Each must hold at least 32 bytes.
    pub fn new(secrets: &[Vec<u8>]) -> Result<Self, String> {
        let mut keys = Vec::new();
        for s in secrets {
            if s.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "a cookie secret needs at least {MIN_SECRET_LEN} bytes (e.g. `head -c 32 /dev/urandom > secret`)"
                ));
            }
            let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"heim cookie secret");
            let mut key = [0u8; 32];
            salt.extract(s)
                .expand(&[b"heim aes-256-gcm"], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut key))
                .map_err(|_| "cannot derive the cookie key".to_string())?;
            keys.push(
                RandomizedNonceKey::new(&AES_256_GCM, &key)
                    .map_err(|_| "cannot make the cookie key".to_string())?,
            );
        }
        if keys.is_empty() {
            return Err("no cookie secret".into());
        }
        Ok(Self { keys })
    }

    /// Seals `value` for `purpose`: base64url, no padding.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> String {
        let mut data = serde_json::to_vec(value).unwrap_or_default();
        // Sealing with a valid key cannot fail; an empty token opens as nothing.
        match self.keys[0].seal_in_place_append_tag(Aad::from(purpose.aad()), &mut data) {
            Ok(nonce) => {
                let mut out = nonce.as_ref().to_vec();
                out.extend_from_slice(&data);
                URL_SAFE_NO_PAD.encode(out)
            }
            Err(_) => String::new(),
        }
    }

    /// Opens a token sealed for `purpose` by any accepted key.
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, token: &str) -> Option<T> {
        if token.len() > 8192 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        for key in &self.keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buf = sealed.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(purpose.aad()), &mut buf) {
                return serde_json::from_slice(plain).ok();
            }
        }
        None
    }
}

/// `n` random bytes as base64url: ids, states, nonces, PKCE verifiers.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    // The system RNG failing is not something heim can serve through.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        panic!("system random number generator failed");
    }
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_for_their_purpose_and_key() {
        let a = Sealer::new(&[vec![1u8; 32]]).unwrap();
        let t = a.seal(Purpose::Session, &("alice", 42));
        assert_eq!(
            a.open::<(String, u32)>(Purpose::Session, &t),
            Some(("alice".into(), 42))
        );
        assert_eq!(
            a.open::<(String, u32)>(Purpose::Handoff, &t),
            None,
            "another purpose"
        );
        let b = Sealer::new(&[vec![2u8; 32]]).unwrap();
        assert_eq!(
            b.open::<(String, u32)>(Purpose::Session, &t),
            None,
            "another key"
        );
        // Rotation: the new secret first, the old one still opens.
        let rotated = Sealer::new(&[vec![2u8; 32], vec![1u8; 32]]).unwrap();
        assert!(rotated
            .open::<(String, u32)>(Purpose::Session, &t)
            .is_some());
        // Tampered or truncated.
        let mut bytes = t.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(a.open::<(String, u32)>(Purpose::Session, &tampered), None);
        assert_eq!(
            a.open::<(String, u32)>(Purpose::Session, &t[..t.len() - 3]),
            None
        );
        assert_eq!(a.open::<(String, u32)>(Purpose::Session, ""), None);
        assert_eq!(a.open::<(String, u32)>(Purpose::Session, "!!!"), None);
        assert_ne!(
            a.seal(Purpose::Session, &1),
            a.seal(Purpose::Session, &1),
            "random nonces"
        );
        assert!(Sealer::new(&[vec![0u8; 31]]).is_err());
    }
}
