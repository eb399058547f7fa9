//! The producer side: [`JobQueue`] enqueues jobs (now, delayed, idempotent, in bulk) and
//! reads the queue's state, dead letters included (reading, redriving, purging).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{QueueConfig, RetryPolicy};
use crate::conn::RedisConn;
use crate::dead::{self, DeadLetter};
use crate::envelope::{Envelope, JobId};
use crate::error::QueueError;
use crate::keys::Keys;
use crate::redrive::{self, RedriveReport};
use crate::reply;
use crate::scripts::SCRIPTS;
use crate::stats::{self, QueueStats};

/// Options of one enqueue.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Run no earlier than this.
    pub run_at: Option<SystemTime>,
    /// A second enqueue with the same key within the queue's idempotency TTL is a no-op.
    pub idempotency_key: Option<String>,
    /// Retry policy; the queue's default when `None`.
    pub policy: Option<RetryPolicy>,
}

impl EnqueueOptions {
    pub fn run_at(mut self, t: SystemTime) -> Self {
        self.run_at = Some(t);
        self
    }

    pub fn delay(self, d: Duration) -> Self {
        self.run_at(SystemTime::now() + d)
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn policy(mut self, p: RetryPolicy) -> Self {
        self.policy = Some(p);
        self
    }
}

/// What a promotion pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromoteReport {
    /// Jobs moved into the stream.
    pub moved: u64,
    /// Script calls made (each moves at most the queue's `promote_batch`).
    pub calls: u64,
}

/// The result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job.
    New(JobId),
    /// The idempotency key was already used within its TTL; this is the job it created.
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(&self) -> &JobId {
        match self {
            Enqueued::New(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// A handle for enqueueing jobs of type `Args` and inspecting the queue. Cheap to clone.
pub struct JobQueue<Args> {
    conn: RedisConn,
    cfg: Arc<QueueConfig>,
    keys: Arc<Keys>,
    _args: PhantomData<fn(Args)>,
}

impl<Args> Clone for JobQueue<Args> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            cfg: self.cfg.clone(),
            keys: self.keys.clone(),
            _args: PhantomData,
        }
    }
}

/// Most entries written per pipeline by [`JobQueue::enqueue_many`].
const BULK_CHUNK: usize = 1_000;

impl<Args: Serialize> JobQueue<Args> {
    pub fn new(conn: RedisConn, cfg: QueueConfig) -> Self {
        let keys = Keys::new(&cfg.namespace, &cfg.name);
        Self {
            conn,
            cfg: Arc::new(cfg),
            keys: Arc::new(keys),
            _args: PhantomData,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Creates the stream and its consumer group if they do not exist yet (workers do this by
    /// themselves; call it to make `stats` meaningful before any worker ran).
    pub async fn ensure_group(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        Ok(create_group(&mut conn, &self.keys.stream, &self.cfg.group).await?)
    }

    fn envelope(&self, args: &Args, opts: &EnqueueOptions) -> Result<Envelope, QueueError> {
        let payload = serde_json::to_vec(args)?;
        Ok(Envelope::new(
            payload,
            opts.policy.unwrap_or(self.cfg.default_policy),
            opts.idempotency_key.clone(),
        ))
    }

    /// Enqueues a job to run now.
    pub async fn enqueue(&self, args: &Args) -> Result<JobId, QueueError> {
        let env = self.envelope(args, &EnqueueOptions::default())?;
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.stream).arg("*");
        for (k, v) in env.to_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await?;
        Ok(JobId(env.id))
    }

    /// Enqueues a job with options: a run-at time, an idempotency key, a retry policy.
    pub async fn enqueue_with(&self, args: &Args, opts: EnqueueOptions) -> Result<Enqueued, QueueError> {
        let env = self.envelope(args, &opts)?;
        let now = crate::now_ms();
        let run_at = opts.run_at.map(crate::system_time_ms).unwrap_or(0);
        let mut inv = SCRIPTS.enqueue.prepare_invoke();
        inv.key(&self.keys.stream)
            .key(&self.keys.delayed)
            .key(self.keys.job(&env.id));
        if let Some(k) = &opts.idempotency_key {
            inv.key(self.keys.idempotency(k));
        }
        inv.arg(run_at)
            .arg(now)
            .arg(self.cfg.idempotency_ttl.as_millis() as u64)
            .arg(&env.id);
        for (k, v) in env.to_fields() {
            inv.arg(k).arg(v);
        }
        let mut conn = self.conn.clone();
        let res: redis::Value = inv.invoke_async(&mut conn).await?;
        let items = reply::list(&res);
        let fresh = items.first().and_then(reply::as_i64).unwrap_or(0) == 1;
        let id = items
            .get(1)
            .and_then(reply::as_string)
            .ok_or_else(|| QueueError::Reply(format!("enqueue returned {res:?}")))?;
        Ok(if fresh {
            Enqueued::New(JobId(id))
        } else {
            Enqueued::Duplicate(JobId(id))
        })
    }

    /// Enqueues many jobs to run now, pipelined in chunks (the fast path for bulk producers).
    pub async fn enqueue_many<'a>(&self, jobs: impl IntoIterator<Item = &'a Args>) -> Result<Vec<JobId>, QueueError>
    where
        Args: 'a,
    {
        let mut ids = Vec::new();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        let mut in_pipe = 0;
        for args in jobs {
            let env = self.envelope(args, &EnqueueOptions::default())?;
            let cmd = pipe.cmd("XADD").arg(&self.keys.stream).arg("*");
            for (k, v) in env.to_fields() {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
            ids.push(JobId(env.id));
            in_pipe += 1;
            if in_pipe == BULK_CHUNK {
                pipe.query_async::<()>(&mut conn).await?;
                pipe = redis::pipe();
                in_pipe = 0;
            }
        }
        if in_pipe > 0 {
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(ids)
    }

    /// The queue's state, read straight from Redis.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        stats::collect(&self.conn, &self.cfg, &self.keys).await
    }

    /// The newest `count` dead letters, newest first.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.conn, &self.keys, count).await
    }

    /// Up to `count` dead letters older than the dead letter `before` (the newest when
    /// `None`), newest first: pass the last id of a page to read the next one.
    pub async fn dead_letters_before(&self, before: Option<&str>, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
        redrive::page(&self.conn, &self.keys, before, count).await
    }

    /// One dead letter by its id in the dead-letter stream.
    pub async fn dead_letter(&self, dead_id: &str) -> Result<Option<DeadLetter>, QueueError> {
        redrive::get(&self.conn, &self.keys, dead_id).await
    }

    /// Deletes dead letters by id; returns how many there were.
    pub async fn purge_dead(&self, dead_ids: &[String]) -> Result<u64, QueueError> {
        redrive::purge(&self.conn, &self.keys, dead_ids).await
    }

    /// Makes delayed jobs due now (those still delayed among `ids`; others are left alone) and
    /// moves them into the stream: for work that waited on something that has changed (a
    /// raised budget, a resumed tenant). Returns how many were delayed.
    pub async fn run_now(&self, ids: &[String]) -> Result<u64, QueueError> {
        let mut moved = 0;
        for chunk in ids.chunks(500) {
            let mut conn = self.conn.clone();
            let n: u64 = redis::Script::new(
                "local n = 0 \
                 for i = 2, #ARGV do \
                   if redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i]) == 1 then n = n + 1 end \
                 end return n",
            )
            .key(&self.keys.delayed)
            .arg(crmsync_redis::now_ms())
            .arg(chunk)
            .invoke_async(&mut conn)
            .await?;
            moved += n;
        }
        if moved > 0 {
            self.promote_due().await?;
        }
        Ok(moved)
    }

    /// Moves every due delayed job into the stream now, in bounded script calls (workers do
    /// this continuously).
    pub async fn promote_due(&self) -> Result<PromoteReport, QueueError> {
        Ok(crate::backend::promote_due(&self.conn, &self.keys, self.cfg.promote_batch).await?)
    }
}

impl<Args: Serialize + DeserializeOwned> JobQueue<Args> {
    /// Puts dead letters back into the queue as fresh jobs (attempts reset, same job id and
    /// payload), each atomically with its removal from the dead-letter stream. Entries that
    /// do not decode as `Args` are refused and stay.
    pub async fn redrive(&self, dead_ids: &[String]) -> Result<RedriveReport, QueueError> {
        redrive::redrive::<Args>(&self.conn, &self.keys, dead_ids).await
    }
}

/// `XGROUP CREATE ... 0 MKSTREAM`, tolerating an existing group. Starting at id 0 delivers jobs
/// enqueued before the first worker ever ran.
pub(crate) async fn create_group(conn: &mut RedisConn, stream: &str, group: &str) -> redis::RedisResult<()> {
    let res: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match res {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}
