//! Errors: [`JobError`] is what a job handler returns to decide what happens next;
//! [`QueueError`] is what the queue's own calls return.

use std::time::SystemTime;

/// A dead-letter code: a short name from a closed vocabulary (the worker's `crmsync dead
/// codes`), carried by every failure from where it happens to the dead-letter stream (field
/// `c`), so operators filter on it without anyone parsing messages.
pub type Code = &'static str;

/// The codes the queue itself writes.
pub mod codes {
    use super::Code;
    /// Not a job of its queue (garbage, an older format).
    pub const UNDECODABLE: Code = "UNDECODABLE";
    /// The worker running the job's last attempt stopped (crash, kill, partition).
    pub const LEASE_EXPIRED: Code = "LEASE_EXPIRED";
    /// The handler failed with an error that is not a [`super::JobError`].
    pub const OTHER: Code = "OTHER";
}

/// A handler's failure, shaped by what the queue does next, with its code. Any other error
/// type a handler returns is treated as [`JobError::Retry`] with the code `OTHER`.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A transient failure: retry after the job's backoff. Uses an attempt.
    #[error("{reason}")]
    Retry { code: Code, reason: String },
    /// Retry no earlier than `at` (a 429's Retry-After, a cooldown). Uses an attempt.
    #[error("retry at {at_ms} ms: {reason}")]
    RetryAt { at_ms: u64, code: Code, reason: String },
    /// Not run now for a reason that is not the job's fault (a spent credit budget, a paused
    /// tenant): run again at `until`. Does not use an attempt.
    #[error("deferred until {until_ms} ms: {reason}")]
    Defer { until_ms: u64, code: Code, reason: String },
    /// Will never succeed as is: straight to the dead-letter stream with this reason.
    #[error("{reason}")]
    Permanent { code: Code, reason: String },
}

impl JobError {
    pub fn retry(code: Code, reason: impl std::fmt::Display) -> Self {
        Self::Retry {
            code,
            reason: reason.to_string(),
        }
    }

    pub fn retry_at(at: SystemTime, code: Code, reason: impl std::fmt::Display) -> Self {
        Self::RetryAt {
            at_ms: crate::system_time_ms(at),
            code,
            reason: reason.to_string(),
        }
    }

    pub fn defer(until: SystemTime, code: Code, reason: impl std::fmt::Display) -> Self {
        Self::Defer {
            until_ms: crate::system_time_ms(until),
            code,
            reason: reason.to_string(),
        }
    }

    pub fn permanent(code: Code, reason: impl std::fmt::Display) -> Self {
        Self::Permanent {
            code,
            reason: reason.to_string(),
        }
    }

    /// The failure's code.
    pub fn code(&self) -> Code {
        match self {
            Self::Retry { code, .. }
            | Self::RetryAt { code, .. }
            | Self::Defer { code, .. }
            | Self::Permanent { code, .. } => code,
        }
    }

    /// What happened, without the scheduling.
    pub fn reason(&self) -> &str {
        match self {
            Self::Retry { reason, .. }
            | Self::RetryAt { reason, .. }
            | Self::Defer { reason, .. }
            | Self::Permanent { reason, .. } => reason,
        }
    }
}

/// An error from the queue's own operations (enqueue, stats, dead-letter access).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("could not encode the job payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}
