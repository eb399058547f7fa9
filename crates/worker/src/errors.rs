//! Turning failures into what the queue does next, each with its dead-letter code.

use std::time::{Duration, SystemTime};

use crmsync_queue::JobError;
use crmsync_sink::{Next, SinkError};

fn later(wait: Option<Duration>, code: &'static str, reason: String) -> JobError {
    match wait {
        Some(d) => JobError::retry_at(SystemTime::now() + d, code, reason),
        None => JobError::retry(code, reason),
    }
}

/// Nylas throttling (its own limit, or the provider's, which can last 20 minutes) is not the
/// job's fault: the job is deferred without using an attempt, to Nylas's `Retry-After` or a
/// jittered few seconds.
pub(crate) fn nylas(e: crmsync_nylas::NylasError) -> JobError {
    let code = e.code();
    if let crmsync_nylas::NylasError::RateLimited { retry_after, .. } = &e {
        let wait = retry_after.unwrap_or_else(|| Duration::from_millis(rand::random_range(1_000..5_000)));
        return JobError::defer(SystemTime::now() + wait, code, format!("nylas: {e}"));
    }
    match e.next() {
        crmsync_nylas::Next::RetryLater(wait) => later(wait, code, format!("nylas: {e}")),
        crmsync_nylas::Next::FailJob => JobError::permanent(code, format!("nylas: {e}")),
    }
}

/// A sink's failure, by its own decision.
pub(crate) fn sink(e: SinkError) -> JobError {
    let reason = format!("crm: {}", e.message);
    match e.next {
        Next::Retry => JobError::retry(e.code, reason),
        Next::RetryAfter(d) => later(Some(d), e.code, reason),
        Next::Throttled { retry_after } => later(retry_after, e.code, reason),
        Next::Wait { until_ms } => JobError::Defer {
            until_ms,
            code: e.code,
            reason,
        },
        Next::Reauthorize | Next::FailJob => JobError::permanent(e.code, reason),
    }
}

pub(crate) fn redis(e: impl std::fmt::Display) -> JobError {
    JobError::retry("REDIS", format!("redis: {e}"))
}

/// The write buffer's failures: a tenant that moved on meanwhile is retried (against its
/// current settings), an unreadable entry is not.
pub(crate) fn buffer(e: crmsync_producer::BufferError) -> JobError {
    match e {
        crmsync_producer::BufferError::Redis(e) => redis(e),
        crmsync_producer::BufferError::Schedule(e) => redis(e),
        crmsync_producer::BufferError::Gone => JobError::retry(
            "DEST_CHANGED",
            "the tenant was removed or pointed at another destination while the job ran",
        ),
        other @ crmsync_producer::BufferError::Corrupt { .. } => JobError::permanent("BUFFER_CORRUPT", other),
    }
}

/// The tenant's settings: unreadable or incomplete ones fail the job with how to fix them.
pub(crate) fn tenant(e: impl std::fmt::Display) -> JobError {
    JobError::permanent("TENANT", e)
}
