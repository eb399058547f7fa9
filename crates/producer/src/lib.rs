//! What crmsync puts in its queues and how it tracks the work: the job payloads, the queue
//! settings, backfill runs (creation, progress, completion) and the per-tenant records the
//! workers keep (shared-email owners, Zoho record ids, rejected records).
//!
//! **Boundary:** no HTTP here. Workers (`crates/worker`) call Nylas and Zoho and report to
//! this crate; the CLI reads from it.

mod buffer;
mod jobs;
mod keys;
mod runs;
mod tenant_state;

pub use buffer::{BufferError, Change, Entry, FlushCount, Op, Pushed, Source, WriteBuffer, record_hash};
pub use jobs::{BACKFILL_QUEUE, BackfillPage, FlushWrites, WRITES_QUEUE, backfill_queue, schedule_flush, writes_queue};
pub use keys::TenantKeys;
pub use runs::{PageCounts, Run, RunError, RunStatus, RunStore, StartOutcome};
pub use tenant_state::{Rejection, TenantState};
