//! Queue configuration: names, limits, timeouts, retention and the default retry policy.

use std::time::Duration;

/// How a job is retried when its handler fails: at most `max_attempts` runs in all, with
/// exponential backoff and full jitter between them (AWS's "full jitter": a uniformly random
/// delay between zero and `min(cap, base * 2^(attempt-1))`), which spreads a burst of failures
/// instead of retrying them in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total runs allowed, the first one included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt.
    pub base: Duration,
    /// Upper bound of any backoff.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff after the given failed attempt (1-based).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp);
        ceiling.min(self.cap)
    }

    /// A full-jitter backoff after the given failed attempt (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::random_range(0..=ceiling))
    }
}

/// How long finished entries stay in the stream before they are trimmed. An entry is trimmed
/// once it is older than `max_age` or no longer among the newest `max_count` delivered
/// entries, whichever comes first; `None` disables that limit. Unfinished entries are never
/// trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_count: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(3600)),
            max_count: Some(100_000),
        }
    }
}

/// Everything a producer or a worker needs to know about one queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Key namespace, so several deployments can share one Redis.
    pub namespace: String,
    /// Queue name; with the namespace it forms the hash tag of every key of the queue.
    pub name: String,
    /// Consumer group name.
    pub group: String,
    /// Jobs a worker runs at once.
    pub concurrency: usize,
    /// Most entries fetched by one `XREADGROUP` (also bounded by free concurrency).
    pub fetch_batch: usize,
    /// How long an idle fetch blocks in `XREADGROUP` before looping.
    pub block: Duration,
    /// A delivered entry whose worker has not heartbeated for this long is redelivered.
    pub visibility_timeout: Duration,
    /// How often a worker refreshes its registry entry and the leases of its running jobs.
    pub heartbeat_interval: Duration,
    /// How often due delayed jobs are promoted into the stream.
    pub promote_interval: Duration,
    /// Delayed jobs moved per promotion call.
    pub promote_batch: usize,
    /// Pending entries examined per reclaim call.
    pub reclaim_batch: usize,
    /// Retention of finished entries.
    pub retention: Retention,
    /// Approximate cap of the dead-letter stream.
    pub dead_letter_max: u64,
    /// How long an idempotency key prevents a second enqueue.
    pub idempotency_ttl: Duration,
    /// Retry policy of jobs enqueued without their own.
    pub default_policy: RetryPolicy,
    /// A worker silent for this long is dropped from the registry (once it holds nothing).
    pub worker_forget_after: Duration,
    /// How long per-second counters are kept (for "completed in the last minute" and charts).
    pub stats_ttl: Duration,
    /// Per-request timeout of non-blocking Redis calls; a frozen Redis surfaces as an error
    /// (and a reconnect) instead of a hung worker.
    pub response_timeout: Duration,
}

impl QueueConfig {
    /// A queue with production defaults: 30 s visibility timeout, 16 concurrent jobs.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            namespace: "crmsync".into(),
            name: name.into(),
            group: "workers".into(),
            concurrency: 16,
            fetch_batch: 256,
            block: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            promote_interval: Duration::from_millis(250),
            promote_batch: 500,
            reclaim_batch: 100,
            retention: Retention::default(),
            dead_letter_max: 1_000_000,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            default_policy: RetryPolicy::default(),
            worker_forget_after: Duration::from_secs(3600),
            stats_ttl: Duration::from_secs(3600),
            response_timeout: Duration::from_secs(5),
        }
    }

    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the visibility timeout and keeps the heartbeat at a third of it (at most 5 s), so
    /// a live worker renews its leases well before they can expire.
    pub fn visibility_timeout(mut self, vt: Duration) -> Self {
        self.visibility_timeout = vt;
        self.heartbeat_interval = (vt / 3).clamp(Duration::from_millis(100), Duration::from_secs(5));
        self
    }

    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    pub fn default_policy(mut self, policy: RetryPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    pub fn fetch_batch(mut self, n: usize) -> Self {
        self.fetch_batch = n.max(1);
        self
    }
}
