//! Secrets and the key that seals them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Environment variable holding the base64 of the 32-byte key.
pub const KEY_ENV: &str = "CRMSYNC_SECRET_KEY";
/// Environment variable naming a file that holds the key (for Kubernetes Secrets mounted as files).
pub const KEY_FILE_ENV: &str = "CRMSYNC_SECRET_KEY_FILE";
const PREFIX: &str = "v1:";

/// A secret value in memory. `Debug` redacts it; there is no `Display`, so it cannot end up in
/// a log line or a `println!` by accident. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `abc…xyz`-style hint for `crmsync tenant show`: at most the last 4 characters, and only
    /// for values long enough that this reveals little.
    pub fn masked(&self) -> String {
        let n = self.0.chars().count();
        if n >= 16 {
            let tail: String = self.0.chars().skip(n - 4).collect();
            format!("****{tail}")
        } else {
            "****".into()
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "no secret key: set {KEY_ENV} (base64 of 32 random bytes; generate one with `crmsync keygen`) or {KEY_FILE_ENV}"
    )]
    Missing,
    #[error("the secret key is malformed ({0}); expected base64 of exactly 32 bytes, as `crmsync keygen` prints")]
    Malformed(String),
    #[error("cannot read the key file {path}: {error}")]
    File { path: String, error: String },
    #[error(
        "a stored secret cannot be decrypted: {KEY_ENV} is not the key the tenants were stored with (or the value was tampered with)"
    )]
    WrongKey,
}

/// The key sealing secrets at rest.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A new random key, base64-encoded, for `crmsync keygen`.
    pub fn generate() -> String {
        B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// Parses a base64 key.
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|e| SecretError::Malformed(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(SecretError::Malformed(format!("{} bytes", bytes.len())));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|e| SecretError::Malformed(e.to_string()))?;
        Ok(Self { cipher })
    }

    /// Reads the key from `CRMSYNC_SECRET_KEY`, else from the file `CRMSYNC_SECRET_KEY_FILE`.
    pub fn from_env() -> Result<Self, SecretError> {
        if let Ok(k) = std::env::var(KEY_ENV)
            && !k.trim().is_empty()
        {
            return Self::from_base64(&k);
        }
        if let Ok(path) = std::env::var(KEY_FILE_ENV)
            && !path.trim().is_empty()
        {
            let k = std::fs::read_to_string(&path).map_err(|e| SecretError::File {
                path: path.clone(),
                error: e.to_string(),
            })?;
            return Self::from_base64(&k);
        }
        Err(SecretError::Missing)
    }

    /// Seals `plaintext`; `context` (e.g. `tenant:acme:zoho.client_secret`) is authenticated
    /// data, so a sealed value only opens in its own place.
    pub fn seal(&self, context: &str, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            // Encryption only fails for messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > 24)
            .ok_or(SecretError::WrongKey)?;
        let (nonce, ct) = raw.split_at(24);
        let pt = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(pt).map_err(|_| SecretError::WrongKey)
    }
}

/// Encrypts values at rest (the tenant store's key implements it; the sinks' token caches
/// take one). `context` binds a sealed value to its place, so it cannot be moved to another
/// tenant or field.
pub trait Sealer: Send + Sync {
    fn seal(&self, context: &str, plaintext: &str) -> String;
    fn open(&self, context: &str, sealed: &str) -> Result<String, String>;
}

impl Sealer for SecretKey {
    fn seal(&self, context: &str, plaintext: &str) -> String {
        SecretKey::seal(self, context, plaintext)
    }

    fn open(&self, context: &str, sealed: &str) -> Result<String, String> {
        SecretKey::open(self, context, sealed).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_bind_the_context_and_the_key() {
        let k = SecretKey::from_base64(&SecretKey::generate()).expect("key");
        let sealed = k.seal("tenant:a:nylas.api_key", "nyk_live_123");
        assert!(!sealed.contains("nyk_live_123"));
        assert_eq!(k.open("tenant:a:nylas.api_key", &sealed).as_deref(), Ok("nyk_live_123"));
        assert_eq!(k.open("tenant:b:nylas.api_key", &sealed), Err(SecretError::WrongKey));
        let other = SecretKey::from_base64(&SecretKey::generate()).expect("key");
        assert_eq!(
            other.open("tenant:a:nylas.api_key", &sealed),
            Err(SecretError::WrongKey)
        );
        assert_ne!(
            sealed,
            k.seal("tenant:a:nylas.api_key", "nyk_live_123"),
            "random nonce per seal"
        );
    }

    #[test]
    fn malformed_keys_are_refused_clearly() {
        assert!(matches!(
            SecretKey::from_base64("c2hvcnQ="),
            Err(SecretError::Malformed(_))
        ));
        assert!(matches!(
            SecretKey::from_base64("not base64!"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("rt_1000.abcdefghijklmnop");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.masked(), "****mnop");
        assert_eq!(Secret::new("short").masked(), "****");
    }
}
