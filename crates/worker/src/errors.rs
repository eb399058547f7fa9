//! Turning client errors into what the queue does next.

use std::time::{Duration, SystemTime};

use crmsync_queue::JobError;

fn later(wait: Option<Duration>, reason: String) -> JobError {
    match wait {
        Some(d) => JobError::retry_at(SystemTime::now() + d, reason),
        None => JobError::retry(reason),
    }
}

pub(crate) fn nylas(e: crmsync_nylas::NylasError) -> JobError {
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
