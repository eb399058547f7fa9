//! Secrets and the key that seals them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Environment variable holding the base64 of the 32-byte key.
pub const KEY_ENV: &str = "CRMSYNC_SECRET_KEY";
/// Environment variable naming a file that holds the key (for Kubernetes Secrets mounted as files).
pub const KEY_FILE_ENV: &str = "CRMSYNC_SECRET_KEY_FILE";
/// During a rotation, the previous key(s), comma-separated: sealed values are still opened with
/// them, new ones are sealed with `CRMSYNC_SECRET_KEY` (see `crmsync keys rotate`).
pub const OLD_KEYS_ENV: &str = "CRMSYNC_SECRET_KEY_OLD";
/// The first format: no key id (opened by trying every key).
const V1: &str = "v1:";
/// `v2:<key id>:<base64>`: the key id (8 hex digits of the key's SHA-256) names the key.
const V2: &str = "v2:";

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

/// The key sealing secrets at rest, and during a rotation the previous keys that still open
/// what they sealed.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
    id: String,
    old: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A new random key, base64-encoded, for `crmsync keygen`.
    /// A new random key as URL-safe base64 without padding (43 characters of `A-Z a-z 0-9 - _`),
    /// so the same `crmsync keygen` output also works as a dashboard token in a URL.
    pub fn generate() -> String {
        URL_SAFE_NO_PAD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// Parses a base64 key.
    pub fn from_base64(s: &str) -> Result<Self, SecretError> {
        // Standard base64 (keys made before keygen went URL-safe) or URL-safe, padded or not.
        let s = s.trim();
        let bytes = if s.contains(['-', '_']) {
            URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
        } else {
            B64.decode(s)
                .or_else(|_| STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        }
        .map_err(|e| SecretError::Malformed(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(SecretError::Malformed(format!("{} bytes", bytes.len())));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|e| SecretError::Malformed(e.to_string()))?;
        Ok(Self {
            cipher,
            id: key_id(&bytes),
            old: Vec::new(),
        })
    }

    /// This key's id: 8 hex digits of its SHA-256 (not secret: it only names the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds previous keys that still open what they sealed (a rotation in progress).
    pub fn with_old(mut self, old: &[SecretKey]) -> Self {
        for k in old {
            if k.id != self.id && !self.old.iter().any(|(id, _)| *id == k.id) {
                self.old.push((k.id.clone(), k.cipher.clone()));
            }
        }
        self
    }

    /// The ids of the previous keys this one still opens with.
    pub fn old_ids(&self) -> Vec<&str> {
        self.old.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Whether `sealed` was sealed with this key (not a previous one, nor the id-less format).
    pub fn sealed_with_current(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(V2)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == self.id)
    }

    /// Reads the key from `CRMSYNC_SECRET_KEY`, else from the file `CRMSYNC_SECRET_KEY_FILE`.
    pub fn from_env() -> Result<Self, SecretError> {
        let key = Self::current_from_env()?;
        let old = match std::env::var(OLD_KEYS_ENV) {
            Ok(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(Self::from_base64)
                .collect::<Result<Vec<_>, _>>()?,
            Err(_) => Vec::new(),
        };
        Ok(key.with_old(&old))
    }

    fn current_from_env() -> Result<Self, SecretError> {
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
        format!("{V2}{}:{}", self.id, B64.encode(out))
    }

    /// Opens a value sealed with this key or, during a rotation, a previous one: a `v2` value
    /// with the key its id names, a `v1` value (no id) with each key in turn.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let (ids, body): (Option<&str>, &str) = if let Some(r) = sealed.strip_prefix(V2) {
            let (id, b) = r.split_once(':').ok_or(SecretError::WrongKey)?;
            (Some(id), b)
        } else if let Some(b) = sealed.strip_prefix(V1) {
            (None, b)
        } else {
            return Err(SecretError::WrongKey);
        };
        let raw = B64
            .decode(body)
            .ok()
            .filter(|r| r.len() > 24)
            .ok_or(SecretError::WrongKey)?;
        let (nonce, ct) = raw.split_at(24);
        let keys =
            std::iter::once((self.id.as_str(), &self.cipher)).chain(self.old.iter().map(|(id, c)| (id.as_str(), c)));
        for (id, cipher) in keys {
            if ids.is_some_and(|want| want != id) {
                continue;
            }
            let opened = cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            );
            if let Ok(pt) = opened {
                return String::from_utf8(pt).map_err(|_| SecretError::WrongKey);
            }
        }
        Err(SecretError::WrongKey)
    }
}

/// A key's id: the first 8 hex digits of its SHA-256.
fn key_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
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
    fn generated_keys_are_url_safe_and_old_standard_keys_still_parse() {
        for _ in 0..200 {
            let k = SecretKey::generate();
            assert_eq!(k.len(), 43, "{k}");
            assert!(
                k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "URL-safe: {k}"
            );
            let parsed = SecretKey::from_base64(&k).expect("parses");
            let bytes = URL_SAFE_NO_PAD.decode(&k).expect("b64");
            // The same 32 bytes, written the old way (standard, padded), are the same key.
            let sealed = parsed.seal("c", "v");
            let old = SecretKey::from_base64(&B64.encode(&bytes)).expect("standard parses");
            assert_eq!(old.open("c", &sealed).as_deref(), Ok("v"));
        }
        assert!(SecretKey::from_base64("not a key").is_err());
        assert!(SecretKey::from_base64(&URL_SAFE_NO_PAD.encode([1u8; 31])).is_err());
    }

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
    fn sealed_values_name_their_key_and_a_rotation_reads_both() {
        let old = SecretKey::from_base64(&SecretKey::generate()).expect("key");
        let new = SecretKey::from_base64(&SecretKey::generate()).expect("key");
        let sealed_old = old.seal("ctx", "s3cret");
        assert!(sealed_old.starts_with(&format!("v2:{}:", old.id())), "{sealed_old}");
        assert_eq!(new.open("ctx", &sealed_old), Err(SecretError::WrongKey));
        let rotating = new.clone().with_old(std::slice::from_ref(&old));
        assert_eq!(rotating.open("ctx", &sealed_old).as_deref(), Ok("s3cret"));
        assert!(!rotating.sealed_with_current(&sealed_old));
        let resealed = rotating.seal("ctx", "s3cret");
        assert!(rotating.sealed_with_current(&resealed));
        assert_eq!(
            new.open("ctx", &resealed).as_deref(),
            Ok("s3cret"),
            "the old key can retire"
        );
        // The first format (no key id) still opens, with whichever key sealed it.
        let v1 = {
            let v2 = old.seal("ctx", "legacy");
            let body = v2.rsplit_once(':').expect("body").1.to_owned();
            format!("v1:{body}")
        };
        assert_eq!(rotating.open("ctx", &v1).as_deref(), Ok("legacy"));
        assert_eq!(rotating.old_ids(), vec![old.id()]);
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
