//! The Redis key layout of one queue. Every key carries the hash tag `{<namespace>:<queue>}`,
//! so all keys of a queue live in one Redis Cluster slot and every script stays single-slot.

/// Key names of one queue (see the "Redis key layout" section of ARCHITECTURE.md).
#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
    /// Stream of jobs waiting or running; consumer group `workers`.
    pub stream: String,
    /// Sorted set of delayed job ids, scored by their run-at time in ms.
    pub delayed: String,
    /// Dead-letter stream.
    pub dead: String,
    /// Sorted set of worker names, scored by their last heartbeat in ms.
    pub workers: String,
}

impl Keys {
    pub fn new(namespace: &str, queue: &str) -> Self {
        let tag = format!("{{{namespace}:{queue}}}");
        Self {
            stream: format!("{tag}:stream"),
            delayed: format!("{tag}:delayed"),
            dead: format!("{tag}:dead"),
            workers: format!("{tag}:workers"),
            tag,
        }
    }

    /// Prefix of the hashes holding delayed jobs' envelopes (`<prefix><job id>`).
    pub fn job_prefix(&self) -> String {
        format!("{}:job:", self.tag)
    }

    /// Hash holding a delayed job's envelope.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.tag)
    }

    /// Idempotency key of an enqueue.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.tag)
    }

    /// Per-second counters (done, retried, deferred, released, reclaimed, dead).
    pub fn stats(&self, epoch_sec: u64) -> String {
        format!("{}:stats:{epoch_sec}", self.tag)
    }

    /// Prefix of worker info hashes (`<prefix><worker name>`).
    pub fn worker_prefix(&self) -> String {
        format!("{}:worker:", self.tag)
    }

    /// A worker's info hash (host, pid, started, concurrency, state).
    pub fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.tag)
    }
}
