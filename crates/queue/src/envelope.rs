//! The wire format of a job: the fields of its stream entry. Short field names keep entries
//! small; `p` holds the JSON of the job's arguments. This is a boundary: changing a field name
//! or meaning changes what sits in Redis (an entry that no longer decodes is dead-lettered
//! with the decode error, never retried blindly).
//!
//! | field | meaning |
//! |---|---|
//! | `id` | job id, stable across retries |
//! | `a`  | attempts already used |
//! | `m`  | max attempts |
//! | `bb`, `bc` | backoff base and cap, ms |
//! | `t`  | first enqueue time, ms |
//! | `k`  | idempotency key, if any |
//! | `e`  | last error, if any |
//! | `p`  | payload (JSON) |

use std::fmt;

use crate::config::RetryPolicy;

/// A job's id: 12 hex digits of milliseconds then 10 random hex digits, so ids sort by
/// creation time and are unique without coordination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl JobId {
    pub fn generate() -> Self {
        let ms = crate::now_ms();
        let rnd: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
        JobId(format!("{ms:012x}{rnd:010x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A decoded stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub id: String,
    pub attempts: u32,
    pub policy: RetryPolicy,
    pub enqueued_at_ms: u64,
    pub idempotency_key: Option<String>,
    pub last_error: Option<String>,
    /// Its code (`c`).
    pub last_code: Option<String>,
    pub payload: Vec<u8>,
}

/// Why an entry could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("entry has no `{0}` field (not a crmsync job, or an older format)")]
    Missing(&'static str),
    #[error("field `{field}` is not a valid number: {value:?}")]
    BadNumber { field: &'static str, value: String },
}

impl Envelope {
    pub fn new(payload: Vec<u8>, policy: RetryPolicy, idempotency_key: Option<String>) -> Self {
        Self {
            id: JobId::generate().0,
            attempts: 0,
            policy,
            enqueued_at_ms: crate::now_ms(),
            idempotency_key,
            last_error: None,
            last_code: None,
            payload,
        }
    }

    /// Field/value pairs in the order they are written.
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut f = vec![
            ("id", self.id.clone().into_bytes()),
            ("a", self.attempts.to_string().into_bytes()),
            ("m", self.policy.max_attempts.to_string().into_bytes()),
            ("bb", (self.policy.base.as_millis() as u64).to_string().into_bytes()),
            ("bc", (self.policy.cap.as_millis() as u64).to_string().into_bytes()),
            ("t", self.enqueued_at_ms.to_string().into_bytes()),
        ];
        if let Some(k) = &self.idempotency_key {
            f.push(("k", k.clone().into_bytes()));
        }
        if let Some(e) = &self.last_error {
            f.push(("e", e.clone().into_bytes()));
        }
        if let Some(c) = &self.last_code {
            f.push(("c", c.clone().into_bytes()));
        }
        f.push(("p", self.payload.clone()));
        f
    }

    /// Decodes the fields of a stream entry.
    pub fn from_fields(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, DecodeError> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
                .map(|(_, v)| v.as_slice())
        };
        let text = |name: &'static str| -> Result<Option<String>, DecodeError> {
            Ok(get(name).map(|v| String::from_utf8_lossy(v).into_owned()))
        };
        let num = |name: &'static str| -> Result<Option<u64>, DecodeError> {
            match get(name) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Some)
                    .ok_or_else(|| DecodeError::BadNumber {
                        field: name,
                        value: String::from_utf8_lossy(v).chars().take(40).collect(),
                    }),
            }
        };
        let id = text("id")?.ok_or(DecodeError::Missing("id"))?;
        let payload = get("p").ok_or(DecodeError::Missing("p"))?.to_vec();
        let attempts = num("a")?.ok_or(DecodeError::Missing("a"))? as u32;
        let max_attempts = num("m")?.ok_or(DecodeError::Missing("m"))?.max(1) as u32;
        let defaults = RetryPolicy::default();
        let base = num("bb")?
            .map(std::time::Duration::from_millis)
            .unwrap_or(defaults.base);
        let cap = num("bc")?.map(std::time::Duration::from_millis).unwrap_or(defaults.cap);
        Ok(Self {
            id,
            attempts,
            policy: RetryPolicy {
                max_attempts,
                base,
                cap,
            },
            enqueued_at_ms: num("t")?.unwrap_or(0),
            idempotency_key: text("k")?,
            last_error: text("e")?,
            last_code: text("c")?,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(f: Vec<(&'static str, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        f.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect()
    }

    #[test]
    fn envelope_round_trips_through_fields() {
        let mut e = Envelope::new(b"{\"x\":1}".to_vec(), RetryPolicy::default(), Some("k1".into()));
        e.attempts = 2;
        e.last_error = Some("boom".into());
        let back = Envelope::from_fields(&owned(e.to_fields())).expect("decodes");
        assert_eq!(back, e);
    }

    #[test]
    fn entry_without_job_fields_is_a_decode_error() {
        let garbage = vec![(b"data".to_vec(), vec![0xff, 0x00, 0x13])];
        assert_eq!(Envelope::from_fields(&garbage), Err(DecodeError::Missing("id")));
        let bad_num = owned(vec![
            ("id", b"x".to_vec()),
            ("p", b"{}".to_vec()),
            ("a", b"one".to_vec()),
            ("m", b"3".to_vec()),
        ]);
        assert!(matches!(
            Envelope::from_fields(&bad_num),
            Err(DecodeError::BadNumber { field: "a", .. })
        ));
    }

    #[test]
    fn job_ids_sort_by_creation_time_and_differ() {
        let a = JobId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = JobId::generate();
        assert!(a < b);
        assert_eq!(a.0.len(), 22);
    }
}
