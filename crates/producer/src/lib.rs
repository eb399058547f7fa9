//! What crmsync puts in its queues and how it tracks the work: the job payloads, the queue
//! settings, backfill runs (creation, progress, completion), and each destination's write
//! buffer with the sync state it keeps (what was written where, who owns a shared email).
//!
//! **Boundary:** no HTTP here. Workers (`crates/worker`) call Nylas and the CRMs and report to
//! this crate; the CLI reads from it. Key names come from `crmsync_tenants::{TenantKeys,
//! DestKeys}`.

mod buffer;
mod jobs;
mod rejected;
mod runs;
pub mod schedule;
pub mod waits;

pub use buffer::{
    BufferError, CONTACT_BUCKETS, Change, Entry, FlushCount, Op, Pushed, Pushing, RecordState, Rejection, SEEN_MS,
    Source, Waiting, WriteBuffer, Written, contact_key, email_key, record_hash,
};
pub use jobs::{
    BACKFILL_QUEUE, BackfillPage, FlushTrigger, FlushWrites, MAINTENANCE_QUEUE, Maintenance, PageMode, WRITES_QUEUE,
    backfill_queue, maintenance_queue, schedule_feed_flush, schedule_flush, schedule_full_flushes, writes_queue,
};
pub use rejected::Rejected;
pub use runs::{PageCounts, Run, RunError, RunKind, RunStatus, RunStore, StartOutcome};
