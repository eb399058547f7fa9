//! A durable job queue for [apalis] on Redis Streams consumer groups.
//!
//! Jobs are stream entries (`XADD`), fetched in batches by blocking `XREADGROUP` reads and
//! acknowledged with `XACK` once their outcome is recorded. Delayed jobs (scheduled retries,
//! "run again at" times, budget deferrals) wait in a sorted set and are promoted in bounded
//! batches. A worker that dies leaves its entries in the group's pending list; after the
//! visibility timeout another worker moves them back into the stream, counting the lost
//! delivery as an attempt, or into the dead-letter stream once the job has used its attempts.
//!
//! The pieces:
//! - [`JobQueue`]: the producer side (enqueue, idempotent enqueue, delayed enqueue) and
//!   [`JobQueue::stats`], the one inspection call the CLI and the dashboard use; dead letters
//!   are read, redriven ([`JobQueue::redrive`]) and purged through it too.
//! - [`RedisStreamBackend`]: the apalis [`Backend`](apalis_core::backend::Backend) a
//!   `WorkerBuilder` consumes; it adds its own settle layer to every worker, so a job's
//!   outcome is always recorded the same way.
//! - [`JobError`]: what a handler returns to say what happens next (retry with backoff, retry
//!   at a given time, defer without spending an attempt, or give up).
//! - [`runtime`]: running workers until SIGTERM/SIGINT with a drain deadline.
//!
//! See ARCHITECTURE.md at the repository root for the Redis key layout.

mod backend;
mod config;
mod conn;
mod dead;
mod envelope;
mod error;
mod identity;
mod keys;
mod layer;
mod producer;
mod redrive;
mod reply;
pub mod runtime;
mod scripts;
mod stats;

pub use backend::{BackendHandle, RedisStreamBackend};
pub use config::{QueueConfig, Retention, RetryPolicy};
pub use conn::{RedisConn, RedisTarget, connect};
pub use dead::DeadLetter;
pub use envelope::JobId;
pub use error::{Code, JobError, QueueError, codes};
pub use identity::worker_identity;
pub use keys::Keys;
pub use layer::{JobInfo, SettleLayer, SettleService};
pub use producer::{EnqueueOptions, Enqueued, JobQueue, PromoteReport};
pub use redrive::{RedriveReport, Redriven, Refused, is_entry_id};
pub use stats::{Counters, QueueStats, WorkerStatus};

pub use crmsync_redis::{now_ms, system_time_ms};
