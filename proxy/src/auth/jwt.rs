//! The identity heim vouches for to backends: an ES256 JWT in `X-Heim-Jwt`
//! (`iss` heim's auth origin, `aud` the route's host, `sub`, `email`,
//! `groups`, `iat`, `exp` five minutes later, `jti`, `kid` in the header),
//! verifiable with the public key at `/.heim/jwks.json`.
//!
//! Signing costs tens of microseconds, so a signed token is kept per worker,
//! session and audience, and reused until a minute before it expires.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::json;

use super::policy::Session;
use super::unix_now;

/// Lifetime of a JWT.
pub const JWT_TTL_SECS: u64 = 300;
/// A cached JWT is replaced this long before it expires.
const REFRESH_BEFORE_SECS: u64 = 60;

/// heim's ES256 signing key.
pub struct SigningKey {
    key: EcdsaKeyPair,
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// Reads a PEM key (PKCS#8 or SEC1 P-256). A missing file is created
    /// (mode 0600) when `create`, as on heim's first start; without
    /// `create` (`heim-proxy check`) a throwaway key stands in for it.
    pub fn load(path: &Path, create: bool) -> Result<SigningKey, String> {
        if !path.exists() {
            let doc = Self::generate()?;
            if !create {
                return Self::from_der(doc.as_ref());
            }
            Self::create(path, doc.as_ref())?;
        }
        let der = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| format!("cannot read an ES256 (P-256) private key: {e}"))?;
        Self::from_der(der.secret_der())
    }

    fn from_der(der: &[u8]) -> Result<SigningKey, String> {
        let key = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a P-256 private key: {e}"))?;
        let hash = digest::digest(&digest::SHA256, key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&hash.as_ref()[..12]);
        Ok(SigningKey { key, kid })
    }

    fn generate() -> Result<aws_lc_rs::pkcs8::Document, String> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| "cannot generate a signing key".to_string())
    }

    fn create(path: &Path, pkcs8: &[u8]) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let doc = pkcs8;
        let b64 = STANDARD.encode(doc);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create the signing key: {e}"))?;
        f.write_all(pem.as_bytes())
            .map_err(|e| format!("cannot write the signing key: {e}"))?;
        tracing::info!(path = %path.display(), "created a new ES256 signing key");
        Ok(())
    }

    /// The JWKS document with this key's public half.
    pub fn jwks(&self) -> serde_json::Value {
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({ "keys": [{
            "kty": "EC",
            "crv": "P-256",
            "alg": "ES256",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    /// A signed JWT for `session` and audience `aud`, issued by `iss`.
    pub fn sign(&self, iss: &str, aud: &str, session: &Session, now: u64) -> Option<String> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let claims = json!({
            "iss": iss,
            "aud": aud,
            "sub": session.user,
            "email": session.email,
            "groups": session.groups,
            "provider": session.provider,
            "iat": now,
            "exp": now + JWT_TTL_SECS,
            "jti": super::seal::random_token(12),
        });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.key.sign(&SystemRandom::new(), token.as_bytes()).ok()?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Some(token)
    }
}

thread_local! {
    /// (session id, audience) -> (token, expiry), per worker.
    static CACHE: RefCell<HashMap<(String, String), (http::HeaderValue, u64)>> =
        RefCell::new(HashMap::new());
}

/// Entries kept per worker before the cache is swept.
const CACHE_MAX: usize = 4096;

/// The JWT for `session` at `aud`, signed at most once a few minutes per
/// worker.
pub fn for_request(
    key: &SigningKey,
    iss: &str,
    aud: &str,
    session: &Session,
) -> Option<http::HeaderValue> {
    let now = unix_now();
    let cache_key = (session.id.clone(), aud.to_string());
    let hit = CACHE.with_borrow(|c| {
        c.get(&cache_key)
            .filter(|(_, exp)| now + REFRESH_BEFORE_SECS < *exp)
            .map(|(t, _)| t.clone())
    });
    if hit.is_some() {
        return hit;
    }
    let token = http::HeaderValue::from_str(&key.sign(iss, aud, session, now)?).ok()?;
    CACHE.with_borrow_mut(|c| {
        if c.len() >= CACHE_MAX {
            c.retain(|_, (_, exp)| now + REFRESH_BEFORE_SECS < *exp);
            if c.len() >= CACHE_MAX {
                c.clear();
            }
        }
        c.insert(cache_key, (token.clone(), now + JWT_TTL_SECS));
    });
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn signs_a_verifiable_jwt_and_publishes_its_key() {
        let dir = std::env::temp_dir().join(format!("heim-jwt-{}", std::process::id()));
        let path = dir.join("k.pem");
        let _ = std::fs::remove_dir_all(&dir);
        let key = SigningKey::load(&path, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SigningKey::load(&path, false).unwrap();
        assert_eq!(key.kid, again.kid, "the key is kept, not replaced");
        let s = Session {
            user: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["ops".into()],
            orgs: vec![],
            teams: vec![],
            provider: "p".into(),
            expires: 0,
            id: "sid".into(),
            host: String::new(),
        };
        let jwt = key.sign("https://auth.test", "app.test", &s, 1000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "app.test");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"], 1300);
        let jwks = key.jwks();
        let k = &jwks["keys"][0];
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(k["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(k["y"].as_str().unwrap()).unwrap());
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed.as_bytes(), &sig)
            .expect("verifies with the JWKS key");
        let cached = for_request(&key, "https://auth.test", "app.test", &s).unwrap();
        assert_eq!(
            cached,
            for_request(&key, "https://auth.test", "app.test", &s).unwrap()
        );
        assert_ne!(
            cached,
            for_request(&key, "https://auth.test", "b.test", &s).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
