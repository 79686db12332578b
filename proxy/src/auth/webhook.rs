//! Webhook routes (`webhook = { provider = "github", secret_file = "..." }`):
//! no user signs in; the sender proves itself with GitHub's
//! `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the raw body
//! under the shared secret. heim reads the body (within the route's
//! `max_body_bytes`), checks the signature in constant time, and only
//! then forwards it: an unsigned or wrongly signed request gets 401 and
//! the backend never sees a byte of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::ProxyError;

/// GitHub's limit on a webhook payload; the bound when a route sets none.
const DEFAULT_LIMIT: u64 = 25 << 20;

/// A webhook route's sender and secret (its `Debug` hides the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub secret_file: PathBuf,
    /// Read when the config is compiled (empty until then).
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("secret_file", &self.secret_file)
            .field("secret", &format_args!("({} bytes)", self.secret.len()))
            .finish()
    }
}

/// Reads and checks a webhook's body; the body, when the signature holds.
pub async fn verify(
    headers: &HeaderMap,
    body: Incoming,
    spec: &WebhookSpec,
    limit: Option<u64>,
    read_timeout: Duration,
) -> Result<Bytes, ProxyError> {
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(decode_hex)
        .ok_or(ProxyError::WebhookUnsigned)?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT).min(usize::MAX as u64) as usize;
    let collected = tokio::time::timeout(
        read_timeout,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await
    .map_err(|_| ProxyError::ClientTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ProxyError::BodyTooLarge)
        }
        Err(_) => return Err(ProxyError::MalformedBody),
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &spec.secret);
    hmac::verify(&key, &bytes, &signature).map_err(|_| ProxyError::WebhookUnsigned)?;
    Ok(bytes)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_signatures() {
        assert_eq!(decode_hex(&"ab".repeat(32)), Some(vec![0xab; 32]));
        assert_eq!(decode_hex("ab"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
        assert_eq!(decode_hex(&"é".repeat(32)), None);
    }
}
