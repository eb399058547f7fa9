//! Signed webhook delivery, as Nylas does it: each change of an address book becomes one
//! notification (`contact.updated` for creates and updates, there is no `contact.created`;
//! `contact.deleted` with ids only), POSTed to the configured destination with
//! `x-nylas-signature` = lowercase hex HMAC-SHA256 of the exact body bytes under the
//! destination's secret. With `compressed`, the body is gzip (`Content-Encoding: gzip`) and
//! the signature covers the compressed bytes.
//!
//! - [`schedule`] decides, from a seed, which notifications are duplicated, held back
//!   (reordered) or shadowed by a forged POST, and the order of the sends;
//! - [`deliver`] sends them with bounded concurrency, optional pacing, per-attempt timeouts
//!   and retries (a failed attempt is re-sent with `webhook_delivery_attempt` raised and the
//!   body re-signed; the notification `id` stays the same).

pub mod deliver;
pub mod schedule;

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::clock::{derive_seed, splitmix64};
use crate::lock;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-nylas-signature";
/// `source` of contact notifications (Nylas's Google contacts sync).
pub const SOURCE: &str = "/google/contacts/incremental";
pub const CONTACT_UPDATED: &str = "contact.updated";
pub const CONTACT_DELETED: &str = "contact.deleted";

/// Lowercase hex HMAC-SHA256 of `body` keyed with `secret`: the `x-nylas-signature` value.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty signature would only
    // make the delivery fail verification, never crash the simulator.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    digest.iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// gzip of `bytes`.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 2 + 64), Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

/// One notification: a change of one contact at one (logical) second.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Unique per notification; the same for every attempt and duplicate.
    pub id: String,
    /// [`CONTACT_UPDATED`] or [`CONTACT_DELETED`].
    pub kind: &'static str,
    /// Unix seconds on the simulator's logical webhook clock (strictly increasing).
    pub time: i64,
    pub grant_id: String,
    pub contact_id: String,
    /// `data.object`: the whole contact after the change, or `{grant_id, id, object}`.
    pub object: Value,
}

#[derive(Serialize)]
struct Envelope<'a> {
    specversion: &'static str,
    #[serde(rename = "type")]
    kind: &'a str,
    source: &'static str,
    id: &'a str,
    time: i64,
    webhook_delivery_attempt: u32,
    data: EnvelopeData<'a>,
}

#[derive(Serialize)]
struct EnvelopeData<'a> {
    application_id: &'a str,
    object: &'a Value,
}

impl Notification {
    /// A `contact.updated` notification carrying the contact as list/get serve it.
    pub fn updated(id: String, time: i64, grant_id: &str, contact: Value) -> Notification {
        let contact_id = contact
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Notification {
            id,
            kind: CONTACT_UPDATED,
            time,
            grant_id: grant_id.to_string(),
            contact_id,
            object: contact,
        }
    }

    /// A `contact.deleted` notification: ids only.
    pub fn deleted(id: String, time: i64, grant_id: &str, contact_id: &str) -> Notification {
        Notification {
            id,
            kind: CONTACT_DELETED,
            time,
            grant_id: grant_id.to_string(),
            contact_id: contact_id.to_string(),
            object: json!({"grant_id": grant_id, "id": contact_id, "object": "contact"}),
        }
    }

    /// The JSON body of attempt `attempt` (keys in the order Nylas sends them).
    pub fn json_body(&self, application_id: &str, attempt: u32) -> Vec<u8> {
        self.json_body_with(self.kind, &self.object, application_id, attempt)
    }

    fn json_body_with(&self, kind: &str, object: &Value, application_id: &str, attempt: u32) -> Vec<u8> {
        let envelope = Envelope {
            specversion: "1.0",
            kind,
            source: SOURCE,
            id: &self.id,
            time: self.time,
            webhook_delivery_attempt: attempt,
            data: EnvelopeData { application_id, object },
        };
        // A struct of strings, integers and a `Value` always serializes.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The body of a forgery: the same notification id and time, but the opposite change (a
    /// delete of a live contact, or an update carrying an attacker's data).
    pub fn tampered_json_body(&self, application_id: &str) -> Vec<u8> {
        if self.kind == CONTACT_DELETED {
            let object = json!({
                "id": self.contact_id, "grant_id": self.grant_id, "object": "contact",
                "given_name": "Mallory", "surname": "Forged",
                "emails": [{"email": "mallory@forged.example", "type": "work"}],
            });
            self.json_body_with(CONTACT_UPDATED, &object, application_id, 1)
        } else {
            let object = json!({"grant_id": self.grant_id, "id": self.contact_id, "object": "contact"});
            self.json_body_with(CONTACT_DELETED, &object, application_id, 1)
        }
    }
}

/// The simulator-wide webhook machinery: the HTTP client, notification ids and the logical
/// clock of notification times.
#[derive(Debug)]
pub struct WebhookState {
    client: OnceLock<reqwest::Client>,
    seq: AtomicU64,
    salt: u64,
    /// The last `time` handed out.
    last_time: Mutex<i64>,
}

impl WebhookState {
    pub fn new(seed: u64) -> WebhookState {
        WebhookState {
            client: OnceLock::new(),
            seq: AtomicU64::new(0),
            salt: derive_seed(seed, "webhook-notification-id"),
            last_time: Mutex::new(0),
        }
    }

    /// A fresh notification id: 16 base62 characters, then a decimal sequence number that
    /// makes it unique (Nylas's look like `Kkx2QQB7TWjWM3KXRQQn562394`).
    pub fn notification_id(&self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut x = splitmix64(n ^ self.salt);
        let mut id = String::with_capacity(24);
        for k in 0..16 {
            if k == 8 {
                x = splitmix64(x);
            }
            id.push(char::from(ALPHABET[(x % 62) as usize]));
            x /= 62;
        }
        id.push_str(&format!("{:06}", n % 1_000_000));
        if n >= 1_000_000 {
            id.push_str(&(n / 1_000_000).to_string());
        }
        id
    }

    /// Reserves `count` consecutive seconds of the logical clock, starting at `now` or right
    /// after the last reserved second, whichever is later; returns the first.
    pub fn reserve_times(&self, now_unix: i64, count: usize) -> i64 {
        let mut last = lock(&self.last_time);
        let first = now_unix.max(*last + 1);
        if count > 0 {
            *last = first + count as i64 - 1;
        }
        first
    }

    /// The shared HTTP client (built on first use).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        // reqwest is built with `rustls-no-provider`: it cannot build any client, even for
        // plain http, until a crypto provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            // Webhook destinations are test receivers; an HTTP(S)_PROXY of the environment
            // must not capture them. Nylas does not follow redirects either.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(self.client.get_or_init(|| client).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_nylas_sdk_test_vector() {
        // From the official Kotlin SDK's WebhookRequestValidatorTest.
        let body = r#"{"specversion":"1.0","type":"grant.deleted","source":"/nylas/system","id":"Kkx2QQB7TWjWM3KXRQQn562394","time":1717162394,"webhook_delivery_attempt":1,"data":{"application_id":"a7966b5a-9bc2-44b7-9895-4e2b281ce6be","object":{"code":25013,"grant_id":"4c22c3c5-d163-48b6-ad95-45fedc879683","integration_id":"b7dd6e6e-af6a-463b-92fa-be35c2683f5c","metric":1934,"provider":"google"}}}"#;
        assert_eq!(
            sign(b"UfZWFrkjsbg5bxLbax-y", body.as_bytes()),
            "a4534f7e68dcd54f0621f7539ddd5a0d14a9a46ace9b68a4cfd9c99b4b6b89cc"
        );
    }

    #[test]
    fn body_is_the_nylas_envelope_in_nylas_key_order() {
        let n = Notification::deleted("sim-vector-1".into(), 1_723_821_985, "grant-acme", "abc123");
        let body = String::from_utf8(n.json_body("app-sim", 1)).expect("utf-8");
        assert_eq!(
            body,
            r#"{"specversion":"1.0","type":"contact.deleted","source":"/google/contacts/incremental","id":"sim-vector-1","time":1723821985,"webhook_delivery_attempt":1,"data":{"application_id":"app-sim","object":{"grant_id":"grant-acme","id":"abc123","object":"contact"}}}"#
        );
        // Computed independently: `printf %s "$body" | openssl dgst -sha256 -hmac UfZWFrkjsbg5bxLbax-y`.
        assert_eq!(
            sign(b"UfZWFrkjsbg5bxLbax-y", body.as_bytes()),
            "3b6d07a1b7af11511410b484db667f5d6b0dce4d32a7db3287c4710009810668"
        );
    }

    #[test]
    fn notification_ids_are_unique_and_times_strictly_increase() {
        let w = WebhookState::new(1);
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| w.notification_id()).collect();
        assert_eq!(ids.len(), 1000);
        let a = w.reserve_times(100, 5);
        assert_eq!(a, 100);
        assert_eq!(w.reserve_times(100, 1), 105, "never reuses a second");
        assert_eq!(w.reserve_times(200, 1), 200);
    }
}
