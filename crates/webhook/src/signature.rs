//! Nylas webhook signatures: `x-nylas-signature` is the lowercase hex HMAC-SHA256 of the raw
//! body bytes (the gzip bytes with compressed delivery), keyed with the destination's secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Whether `signature` is the HMAC of `body` under `secret`, compared in constant time.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(expected) = hex_decode(signature) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature of `body` under `secret` (for tests and the simulator's counterpart).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_a_known_vector() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style.
        let sig = sign("key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(sig, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
        assert!(verify("key", b"The quick brown fox jumps over the lazy dog", &sig));
        assert!(verify(
            "key",
            b"The quick brown fox jumps over the lazy dog",
            &sig.to_uppercase()
        ));
        assert!(!verify("key", b"The quick brown fox jumps over the lazy cat", &sig));
        assert!(!verify("other", b"The quick brown fox jumps over the lazy dog", &sig));
        assert!(!verify("key", b"x", "not hex"));
        assert!(!verify("key", b"x", ""));
    }
}
