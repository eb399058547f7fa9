//! Turning client errors into what the queue does next.

use std::time::{Duration, SystemTime};

use crmsync_queue::JobError;

fn later(wait: Option<Duration>, reason: String) -> JobError {
    match wait {
        Some(d) => JobError::retry_at(SystemTime::now() + d, reason),
        None => JobError::retry(reason),
    }
}

/// Nylas throttling (its own limit, or the provider's, which can last 20 minutes) is not the
/// job's fault: the job is deferred without using an attempt, to Nylas's `Retry-After` or a
/// jittered few seconds.
pub(crate) fn nylas(e: crmsync_nylas::NylasError) -> JobError {
    if let crmsync_nylas::NylasError::RateLimited { retry_after, .. } = &e {
        let wait = retry_after.unwrap_or_else(|| Duration::from_millis(rand::random_range(1_000..5_000)));
        return JobError::defer(SystemTime::now() + wait, format!("nylas: {e}"));
    }
    match e.next() {
        crmsync_nylas::Next::RetryLater(wait) => later(wait, format!("nylas: {e}")),
        crmsync_nylas::Next::FailJob => JobError::permanent(format!("nylas: {e}")),
    }
}

pub(crate) fn zoho(e: crmsync_zoho::ZohoError) -> JobError {
    match e.next() {
        crmsync_zoho::Next::RetryLater(wait) => later(wait, format!("zoho: {e}")),
        crmsync_zoho::Next::RefreshToken => JobError::retry(format!("zoho: {e}")),
        crmsync_zoho::Next::RejectRecord | crmsync_zoho::Next::FailJob => JobError::permanent(format!("zoho: {e}")),
    }
}

pub(crate) fn redis(e: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("redis: {e}"))
}
