//! The write buffer: every record crmsync writes to a tenant's CRM waits here, one entry per
//! email, until a flush writes it in a batch of up to 100 (Zoho's largest upsert, and the
//! cheapest per record: 10 credits). Backfill pages and the change feed push; flush jobs
//! take, write and record.
//!
//! - **Coalescing**: a newer entry for an email replaces a waiting one, so a record written
//!   once carries the latest state; the contact with the smallest Nylas id owns an email.
//! - **Order**: an email whose earlier write is still in flight waits for it, so writes of
//!   one email land in push order; change-feed entries are taken before backfill entries.
//! - **Durability**: a flush's batch is kept under the flush's id until its outcome is
//!   recorded (`buffer_done.lua`, once); a flush that crashes resumes its own batch, and a
//!   batch whose flush is gone for good (lease expired) returns to the buffer.

use std::sync::LazyLock;

use crmsync_domain::ZohoContact;
use crmsync_queue::RedisConn;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::keys::TenantKeys;

static PUSH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/buffer_push.lua")));
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/buffer_take.lua")));
static DONE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/buffer_done.lua")));

/// Backfill entries sort after every change-feed entry (scores are ms plus this).
const BACKFILL_SCORE_BASE: u64 = 10_000_000_000_000;
/// How long a flush may hold a batch before it is presumed gone (a deferred flush renews it).
const FLUSH_LEASE_MS: u64 = 3_600_000;

/// Where a buffered record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A backfill run.
    Run(String),
    /// The change feed.
    Feed,
}

impl Source {
    fn encode(&self) -> String {
        match self {
            Source::Run(id) => format!("run:{id}"),
            Source::Feed => "feed".into(),
        }
    }

    fn decode(s: &str) -> Source {
        match s.strip_prefix("run:") {
            Some(id) => Source::Run(id.to_owned()),
            None => Source::Feed,
        }
    }
}

/// The stored form of an entry: a wire format (it waits in Redis across deploys), so fields
/// are only added, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Nylas contact id.
    c: String,
    /// When the state it carries was read or received, ms.
    at: u64,
    first: Option<String>,
    last: String,
    email: String,
    phone: Option<String>,
    account: Option<String>,
    title: Option<String>,
}

/// A buffered record as a flush takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    pub contact_id: String,
    pub at_ms: u64,
    pub record: ZohoContact,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    pub pushed: u64,
    /// Skipped: a contact with a smaller id owns the email.
    pub shared: u64,
    /// Entries waiting now.
    pub waiting: u64,
    /// Entries pushed ever (paces the flushes: one per 100).
    pub total: u64,
}

/// Counts of a flush for one source, recorded with its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushCount {
    pub source: Source,
    /// A run counter: `inserted`, `updated`, `failed:<code>`, `zoho_calls`, `credits`.
    pub field: String,
    pub n: u64,
}

/// Why a buffered entry could not be read (a format this version does not know).
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("buffered entry for {email} is unreadable: {error}")]
    Corrupt { email: String, error: String },
}

/// One tenant's write buffer. Cheap to clone.
#[derive(Clone)]
pub struct WriteBuffer {
    conn: RedisConn,
    keys: TenantKeys,
}

impl WriteBuffer {
    pub fn new(conn: RedisConn, namespace: &str, tenant: &str) -> Self {
        Self {
            conn,
            keys: TenantKeys::new(namespace, tenant),
        }
    }

    /// Pushes `(contact id, record)` pairs read or received at `at_ms`.
    pub async fn push(
        &self,
        source: &Source,
        at_ms: u64,
        items: &[(&str, &ZohoContact)],
    ) -> Result<Pushed, BufferError> {
        let k = &self.keys;
        let mut inv = PUSH.prepare_invoke();
        inv.key(k.buffer())
            .key(k.buffer_sources())
            .key(k.buffer_order())
            .key(k.email_owner())
            .key(k.buffer_pushed())
            .arg(crmsync_queue::now_ms())
            .arg(source.encode())
            .arg(if *source == Source::Feed {
                0
            } else {
                BACKFILL_SCORE_BASE
            })
            .arg(k.run_prefix())
            .arg(k.buffer_feed());
        for (contact, r) in items {
            let stored = Stored {
                c: (*contact).to_owned(),
                at: at_ms,
                first: r.first_name.clone(),
                last: r.last_name.clone(),
                email: r.email.clone(),
                phone: r.phone.clone(),
                account: r.account_name.clone(),
                title: r.title.clone(),
            };
            let json = serde_json::to_string(&stored).map_err(|e| BufferError::Corrupt {
                email: r.email.clone(),
                error: e.to_string(),
            })?;
            inv.arg(&r.email).arg(*contact).arg(json);
        }
        let mut conn = self.conn.clone();
        let (pushed, shared, waiting, total): (u64, u64, u64, u64) = inv.invoke_async(&mut conn).await?;
        Ok(Pushed {
            pushed,
            shared,
            waiting,
            total,
        })
    }

    /// Takes (or resumes) the batch of flush `flush_id`: at most `max` entries, and nothing
    /// unless at least `min` are available.
    pub async fn take(&self, flush_id: &str, max: usize, min: usize) -> Result<Vec<Entry>, BufferError> {
        let k = &self.keys;
        let mut conn = self.conn.clone();
        let flat: Vec<String> = TAKE
            .key(k.buffer())
            .key(k.buffer_sources())
            .key(k.buffer_order())
            .key(k.buffer_in_flight())
            .key(k.flush(flush_id))
            .key(k.flushes())
            .arg(flush_id)
            .arg(max)
            .arg(min)
            .arg(crmsync_queue::now_ms())
            .arg(FLUSH_LEASE_MS)
            .arg(k.flush_prefix())
            .arg(BACKFILL_SCORE_BASE)
            .arg(k.run_prefix())
            .arg(k.buffer_feed())
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let [email, value] = pair else { continue };
            let (src, json) = value.split_once('\n').unwrap_or(("feed", value));
            let s: Stored = serde_json::from_str(json).map_err(|e| BufferError::Corrupt {
                email: email.clone(),
                error: e.to_string(),
            })?;
            out.push(Entry {
                source: Source::decode(src),
                contact_id: s.c,
                at_ms: s.at,
                record: ZohoContact {
                    first_name: s.first,
                    last_name: s.last,
                    email: s.email,
                    phone: s.phone,
                    account_name: s.account,
                    title: s.title,
                },
            });
        }
        Ok(out)
    }

    /// Records a flush's outcome and releases its batch (once); returns the runs it completed.
    pub async fn done(
        &self,
        flush_id: &str,
        active_run_key: &str,
        counts: &[FlushCount],
    ) -> Result<Vec<String>, BufferError> {
        let k = &self.keys;
        let mut inv = DONE.prepare_invoke();
        inv.key(k.flush(flush_id))
            .key(k.buffer_in_flight())
            .key(k.flushes())
            .arg(flush_id)
            .arg(crmsync_queue::now_ms())
            .arg(k.run_prefix())
            .arg(k.buffer_feed())
            .arg(active_run_key)
            .arg(counts.len());
        for c in counts {
            inv.arg(c.source.encode()).arg(&c.field).arg(c.n);
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// Entries waiting (not in flight), and change-feed entries among them.
    pub async fn waiting(&self) -> Result<(u64, u64), BufferError> {
        let mut conn = self.conn.clone();
        let (n, feed): (u64, Option<u64>) = redis::pipe()
            .cmd("HLEN")
            .arg(self.keys.buffer())
            .cmd("GET")
            .arg(self.keys.buffer_feed())
            .query_async(&mut conn)
            .await?;
        Ok((n, feed.unwrap_or(0)))
    }
}
