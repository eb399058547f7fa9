//! Job payloads and queue settings. A payload is a wire format: it sits in Redis while
//! workers of another version may read it, so fields are only added, with defaults.

use std::time::Duration;

use crmsync_queue::{EnqueueOptions, JobQueue, QueueConfig, QueueError, RetryPolicy};
use serde::{Deserialize, Serialize};

use crate::{BufferError, WriteBuffer};

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
    /// What the page does: a backfill's (the default) or one of a reconcile run's steps.
    #[serde(default, skip_serializing_if = "PageMode::is_backfill")]
    pub mode: PageMode,
}

/// A step of a run. A reconcile reads the CRM (`Crm`, one page per job, `cursor` the CRM's),
/// then the book (`Book`, pages numbered from 0 as a backfill's, `cursor` Nylas's), then sweeps
/// the contacts crmsync knows that the book no longer has (`Sweep`, a range of state buckets
/// per job; its last job counts as the run's last page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum PageMode {
    #[default]
    Backfill,
    Crm,
    Book,
    Sweep {
        bucket: u16,
    },
}

impl PageMode {
    pub fn is_backfill(&self) -> bool {
        *self == PageMode::Backfill
    }
}

impl BackfillPage {
    /// Idempotency key of the job: a page is enqueued once per run even when the job that
    /// enqueues it runs twice.
    pub fn idempotency_key(&self) -> String {
        match &self.mode {
            PageMode::Backfill | PageMode::Book => format!("bf:{}:{}", self.run_id, self.page),
            PageMode::Crm => format!("rc:{}:crm:{}", self.run_id, self.page),
            PageMode::Sweep { bucket } => format!("rc:{}:sweep:{bucket}", self.run_id),
        }
    }
}

/// Settings of the backfill queue. A page job makes a Nylas read and pushes into the write
/// buffer, so transient failures are retried for about half an hour (8 attempts, backoff from
/// 2 s doubling to a 5-minute cap) before the page is dead-lettered and the run marked failed.
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
    /// Scheduled by a push for a full batch (counted until it starts).
    #[serde(default)]
    pub full: bool,
    /// The slot it is counted under in the destination's scheduled flushes (see
    /// [`crate::WriteBuffer::scheduled`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
}

/// A fresh slot for a scheduled flush.
pub fn new_slot() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Settings of the writes queue: a flush makes a CRM call or two, so transient failures are
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

/// Why a flush is enqueued: each trigger names its idempotency key here, and only here, so
/// one cause never enqueues two flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushTrigger<'a> {
    /// A batch is waiting that no scheduled flush covers: a flush counted under `slot` (see
    /// [`schedule_full_flushes`]).
    Full { slot: &'a str },
    /// A run read its last page: write what waits, whatever the batch size.
    Drain { run: &'a str, page: u32 },
    /// A run failed or was cancelled: what it read is still written, without waiting for a
    /// full batch.
    RunEnded { run: &'a str },
    /// Change-feed records wait; one flush per window slot.
    FeedWindow { slot: u64 },
    /// A flush left work behind (records to re-read, change-feed records).
    After { flush: &'a str },
    /// An operator asked for rejected records to be re-read and written.
    Operator { nonce: &'a str },
}

impl FlushTrigger<'_> {
    fn key(&self, tenant: &str) -> Option<String> {
        let k = match self {
            FlushTrigger::Full { slot } => format!("full:{slot}"),
            FlushTrigger::Drain { run, page } => format!("drain:{run}:{page}"),
            FlushTrigger::RunEnded { run } => format!("ended:{run}"),
            FlushTrigger::FeedWindow { slot } => format!("feed:{slot}"),
            FlushTrigger::After { flush } => format!("after:{flush}"),
            FlushTrigger::Operator { nonce } => format!("retry:{nonce}"),
        };
        Some(format!("flush:{tenant}:{k}"))
    }
}

/// Schedules the flush of change-feed records pushed now: one per window of `window`, named by
/// the window the records arrived in and run one window later. A flush keyed by window X thus
/// always runs after window X ends, so no record pushed in window X can find X's flush already
/// done (its schedule would be a duplicate, and the record would wait for the next push).
pub async fn schedule_feed_flush(
    writes: &JobQueue<FlushWrites>,
    tenant: &str,
    window: Duration,
) -> Result<(), QueueError> {
    let window_ms = window.as_millis().max(1) as u64;
    let slot = crmsync_redis::now_ms() / window_ms;
    schedule_flush(writes, tenant, FlushTrigger::FeedWindow { slot }, Some(window)).await
}

/// Schedules a flush of a tenant's write buffer, once per trigger, now or after `delay`.
pub async fn schedule_flush(
    writes: &JobQueue<FlushWrites>,
    tenant: &str,
    trigger: FlushTrigger<'_>,
    delay: Option<Duration>,
) -> Result<(), QueueError> {
    let mut opts = EnqueueOptions::default();
    if let Some(k) = trigger.key(tenant) {
        opts = opts.idempotency_key(k);
    }
    if let Some(d) = delay {
        opts = opts.delay(d);
    }
    writes
        .enqueue_with(
            &FlushWrites {
                tenant: tenant.to_owned(),
                full: matches!(trigger, FlushTrigger::Full { .. }),
                slot: match trigger {
                    FlushTrigger::Full { slot } => Some(slot.to_owned()),
                    _ => None,
                },
            },
            opts,
        )
        .await?;
    Ok(())
}

/// The queue of maintenance jobs.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// Work that keeps Redis tidy, done by the fleet in the background.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Maintenance {
    /// Delete the state of a destination a tenant no longer writes to (it was re-pointed),
    /// in bounded steps.
    PurgeDestination { tenant: String, dest: String },
}

/// Settings of the maintenance queue.
pub fn maintenance_queue(namespace: &str) -> QueueConfig {
    QueueConfig::new(MAINTENANCE_QUEUE)
        .namespace(namespace)
        .default_policy(RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
        })
}

/// Schedules `n` flushes for batches that no scheduled flush covers yet (as a push or
/// [`WriteBuffer::cover`] counted them), each under a fresh slot, and then counts the slots
/// as scheduled: counted only once enqueued, a scheduler that dies in between leaves flushes
/// uncounted (more flushes chain, none is missing), and a flush that starts before it is
/// counted is never counted.
pub async fn schedule_full_flushes(
    writes: &JobQueue<FlushWrites>,
    buffer: &WriteBuffer,
    tenant: &str,
    n: u64,
) -> Result<(), BufferError> {
    if n == 0 {
        return Ok(());
    }
    let slots: Vec<String> = (0..n).map(|_| new_slot()).collect();
    for slot in &slots {
        schedule_flush(writes, tenant, FlushTrigger::Full { slot }, None)
            .await
            .map_err(BufferError::Schedule)?;
    }
    buffer.scheduled(&slots).await
}
