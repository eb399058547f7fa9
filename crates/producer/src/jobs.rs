//! Job payloads and queue settings. A payload is a wire format: it sits in Redis while
//! workers of another version may read it, so fields are only added, with defaults.

use std::time::Duration;

use crmsync_queue::{EnqueueOptions, JobQueue, QueueConfig, QueueError, RetryPolicy};
use serde::{Deserialize, Serialize};

/// The queue of backfill page jobs.
pub const BACKFILL_QUEUE: &str = "backfill";

/// Read one page of a tenant's address book and upsert it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillPage {
    pub tenant: String,
    pub run_id: String,
    /// Page number in the run, from 0.
    pub page: u32,
    /// Nylas `page_token` (none for the first page).
    pub cursor: Option<String>,
    /// Write every contact even when unchanged since the last write.
    #[serde(default)]
    pub force: bool,
}

impl BackfillPage {
    /// Idempotency key of the job: a page is enqueued once per run even when the job that
    /// enqueues it runs twice.
    pub fn idempotency_key(&self) -> String {
        format!("bf:{}:{}", self.run_id, self.page)
    }
}

/// Settings of the backfill queue. A page job makes a Nylas read and up to two Zoho upserts,
/// so transient failures are retried for about half an hour (8 attempts, backoff from 2 s
/// doubling to a 5-minute cap) before the page is dead-lettered and the run marked failed.
pub fn backfill_queue(namespace: &str) -> QueueConfig {
    QueueConfig::new(BACKFILL_QUEUE)
        .namespace(namespace)
        .default_policy(RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        })
}

/// The queue of write flushes.
pub const WRITES_QUEUE: &str = "writes";

/// Write a batch from a tenant's write buffer (the job's id names the flush, so a retried or
/// deferred flush resumes its own batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushWrites {
    pub tenant: String,
}

/// Settings of the writes queue: a flush makes one Zoho call, so transient failures are
/// retried for about half an hour (budget and throttling defer without using attempts).
pub fn writes_queue(namespace: &str) -> QueueConfig {
    QueueConfig::new(WRITES_QUEUE)
        .namespace(namespace)
        .default_policy(RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        })
}

/// Schedules a flush of a tenant's write buffer, once per `key` (idempotent enqueue), now or
/// after `delay`.
pub async fn schedule_flush(
    writes: &JobQueue<FlushWrites>,
    tenant: &str,
    key: &str,
    delay: Option<Duration>,
) -> Result<(), QueueError> {
    let mut opts = EnqueueOptions::default().idempotency_key(format!("flush:{tenant}:{key}"));
    if let Some(d) = delay {
        opts = opts.delay(d);
    }
    writes
        .enqueue_with(
            &FlushWrites {
                tenant: tenant.to_owned(),
            },
            opts,
        )
        .await?;
    Ok(())
}
