//! Errors: [`JobError`] is what a job handler returns to decide what happens next;
//! [`QueueError`] is what the queue's own calls return.

use std::time::SystemTime;

/// A handler's failure, shaped by what the queue does next. Any other error type a handler
/// returns (and a panic) is treated as [`JobError::Retry`].
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A transient failure: retry after the job's backoff. Uses an attempt.
    #[error("{0}")]
    Retry(String),
    /// Retry no earlier than `at` (a 429's Retry-After, a cooldown). Uses an attempt.
    #[error("retry at {at_ms} ms: {reason}")]
    RetryAt { at_ms: u64, reason: String },
    /// Not run now for a reason that is not the job's fault (a spent credit budget, a paused
    /// tenant): run again at `until`. Does not use an attempt.
    #[error("deferred until {until_ms} ms: {reason}")]
    Defer { until_ms: u64, reason: String },
    /// Will never succeed as is: straight to the dead-letter stream with this reason.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }

    pub fn retry_at(at: SystemTime, reason: impl std::fmt::Display) -> Self {
        Self::RetryAt {
            at_ms: crate::system_time_ms(at),
            reason: reason.to_string(),
        }
    }

    pub fn defer(until: SystemTime, reason: impl std::fmt::Display) -> Self {
        Self::Defer {
            until_ms: crate::system_time_ms(until),
            reason: reason.to_string(),
        }
    }

    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        Self::Permanent(reason.to_string())
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
