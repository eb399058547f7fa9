//! The write buffer: every change crmsync makes to a tenant's CRM waits here until a flush
//! writes it in a batch of up to 100 (Zoho's largest call, and the cheapest per record: an
//! upsert of 100 costs 10 credits). Backfill pages and the change feed push; flush jobs take,
//! write and record.
//!
//! - **Coalescing**: one entry waits per contact; a newer change (by event time, then
//!   arrival) replaces it, an older one is dropped, and a deletion cancels a waiting update.
//!   An update older than a deletion already applied is dropped (tombstones outlive Nylas's
//!   72-hour retry horizon).
//! - **Shared emails**: Zoho matches records on Email, and the contact with the smallest Nylas
//!   id owns an email. When the owner leaves an email (deleted, or its email changed), the next
//!   contact with that email takes over (it is re-read from Nylas and written); when none is
//!   left, the record is deleted, or moved by id to the contact's new email so no orphan stays.
//! - **Skip unchanged**: the hash of the record last written per contact is kept; a change
//!   that maps to the same record costs nothing (unless forced).
//! - **Order**: a record (key or email) being written is not taken again until that write is
//!   recorded, so writes to one record land in order; change-feed entries go first.
//! - **Durability**: a flush's batch is kept under the flush's id until its outcome is
//!   recorded (`buffer_done.lua`, once); a flush that crashes resumes its own batch, and a
//!   batch whose flush is gone for good (lease expired) returns to the buffer.

use std::collections::BTreeMap;
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
/// How long a deletion is remembered: past Nylas's 72-hour retry horizon.
const TOMBSTONE_MS: u64 = 96 * 3_600_000;

/// Where a buffered change came from.
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

/// A change to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The contact's current state maps to this record.
    Upsert {
        contact_id: String,
        at_ms: u64,
        record: ZohoContact,
    },
    /// The contact was deleted.
    Delete { contact_id: String, at_ms: u64 },
    /// The contact still exists but no longer maps to a record (its email is gone).
    Unmap { contact_id: String, at_ms: u64 },
}

/// The stored record: a wire format (it waits in Redis across deploys), so fields are only
/// added, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Nylas contact id.
    c: String,
    #[serde(default)]
    at: u64,
    #[serde(default)]
    h: String,
    #[serde(default)]
    first: Option<String>,
    #[serde(default)]
    last: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

/// What a flush does with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Upsert the record, matched on its email.
    Upsert(ZohoContact),
    /// Update the contact's existing record (known by id, formerly under `from`) to this
    /// record, new email included.
    Move { from: String, record: ZohoContact },
    /// Delete the record of `email` (its last contact left it).
    Delete { email: String },
}

/// A buffered change as a flush takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    pub contact_id: String,
    pub at_ms: u64,
    /// Hash of the record (empty for deletions), recorded once it is written.
    pub hash: String,
    pub op: Op,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    pub pushed: u64,
    /// Skipped: a contact with a smaller id owns the email.
    pub shared: u64,
    /// Skipped: the record is already what was last written.
    pub unchanged: u64,
    /// Dropped: older than a change already applied.
    pub stale: u64,
    /// Entries waiting now.
    pub waiting: u64,
    /// Entries pushed ever (paces the flushes: one per 100).
    pub total: u64,
}

/// Counts of a flush for one source, recorded with its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushCount {
    pub source: Source,
    /// A run counter: `inserted`, `updated`, `deleted`, `failed:<code>`, `zoho_calls`, `credits`.
    pub field: String,
    pub n: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("buffered entry {key} is unreadable: {error}")]
    Corrupt { key: String, error: String },
}

/// A stable 64-bit FNV-1a hash of a record, hex: what "unchanged" compares.
pub fn record_hash(r: &ZohoContact) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let fields = [
        r.first_name.as_deref().unwrap_or("\u{0}"),
        &r.last_name,
        &r.email,
        r.phone.as_deref().unwrap_or("\u{0}"),
        r.account_name.as_deref().unwrap_or("\u{0}"),
        r.title.as_deref().unwrap_or("\u{0}"),
    ];
    for f in fields {
        for b in f.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
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

    /// Pushes changes; `force` writes upserts even when unchanged.
    pub async fn push(&self, source: &Source, force: bool, changes: &[Change]) -> Result<Pushed, BufferError> {
        if changes.is_empty() {
            return Ok(Pushed::default());
        }
        let k = &self.keys;
        let mut inv = PUSH.prepare_invoke();
        inv.key(k.buffer())
            .key(k.buffer_sources())
            .key(k.buffer_order())
            .key(k.email_owner())
            .key(k.buffer_pushed())
            .key(k.buffer_emails())
            .key(k.buffer_in_flight())
            .key(k.contacts())
            .key(k.tombstones())
            .key(k.written())
            .key(k.refresh())
            .key(k.feed_stats())
            .arg(crmsync_queue::now_ms())
            .arg(source.encode())
            .arg(if *source == Source::Feed {
                0
            } else {
                BACKFILL_SCORE_BASE
            })
            .arg(k.run_prefix())
            .arg(k.buffer_feed())
            .arg(k.members_prefix())
            .arg(if force { 1 } else { 0 })
            .arg(TOMBSTONE_MS);
        for c in changes {
            match c {
                Change::Upsert {
                    contact_id,
                    at_ms,
                    record,
                } => {
                    let hash = record_hash(record);
                    let stored = Stored {
                        c: contact_id.clone(),
                        at: *at_ms,
                        h: hash.clone(),
                        first: record.first_name.clone(),
                        last: record.last_name.clone(),
                        email: record.email.clone(),
                        phone: record.phone.clone(),
                        account: record.account_name.clone(),
                        title: record.title.clone(),
                    };
                    let json = serde_json::to_string(&stored).map_err(|e| BufferError::Corrupt {
                        key: contact_id.clone(),
                        error: e.to_string(),
                    })?;
                    inv.arg("upsert")
                        .arg(contact_id)
                        .arg(at_ms)
                        .arg(&record.email)
                        .arg(hash)
                        .arg(json);
                }
                Change::Delete { contact_id, at_ms } => {
                    inv.arg("delete").arg(contact_id).arg(at_ms).arg("").arg("").arg("");
                }
                Change::Unmap { contact_id, at_ms } => {
                    inv.arg("unmap").arg(contact_id).arg(at_ms).arg("").arg("").arg("");
                }
            }
        }
        let mut conn = self.conn.clone();
        let (pushed, shared, unchanged, stale, waiting, total): (u64, u64, u64, u64, u64, u64) =
            inv.invoke_async(&mut conn).await?;
        Ok(Pushed {
            pushed,
            shared,
            unchanged,
            stale,
            waiting,
            total,
        })
    }

    /// Takes (or resumes) the batch of flush `flush_id`: at most `max` entries of one kind,
    /// and nothing unless at least `min` are available.
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
            .key(k.buffer_emails())
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
            let [key, value] = pair else { continue };
            out.push(parse_entry(key, value)?);
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
            .key(k.feed_stats())
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

    /// Remembers what was written for contacts (`Some((hash, email))`), or forgets it
    /// (`None`: the record is gone), so an unchanged contact costs nothing next time and a
    /// record is known by the email it holds.
    pub async fn set_written(&self, written: &[(&str, Option<(&str, &str)>)]) -> Result<(), BufferError> {
        if written.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (cid, w) in written {
            match w {
                Some((hash, email)) => pipe
                    .cmd("HSET")
                    .arg(self.keys.written())
                    .arg(*cid)
                    .arg(format!("{hash} {email}"))
                    .ignore(),
                None => pipe.cmd("HDEL").arg(self.keys.written()).arg(*cid).ignore(),
            };
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// The email of the record last written for each contact (None where nothing is known).
    pub async fn written_emails(&self, cids: &[&str]) -> Result<Vec<Option<String>>, BufferError> {
        if cids.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.written())
            .arg(cids)
            .query_async(&mut conn)
            .await?;
        Ok(values
            .into_iter()
            .map(|v| v.and_then(|v| v.split_once(' ').map(|(_, e)| e.to_owned())))
            .collect())
    }

    /// Up to `n` contacts that must be re-read from Nylas (they took over a shared email).
    pub async fn take_refresh(&self, n: usize) -> Result<Vec<String>, BufferError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SPOP")
            .arg(self.keys.refresh())
            .arg(n)
            .query_async(&mut conn)
            .await?)
    }

    /// Asks for contacts to be re-read from Nylas and pushed forced at the start of the next
    /// flush (an operator's retry of rejected records); returns how many were not asked yet.
    /// Schedule a flush afterwards ([`crate::schedule_flush`]).
    pub async fn request_refresh(&self, cids: &[&str]) -> Result<u64, BufferError> {
        let mut conn = self.conn.clone();
        let mut added = 0;
        for chunk in cids.chunks(500) {
            let n: u64 = redis::cmd("SADD")
                .arg(self.keys.refresh())
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            added += n;
        }
        Ok(added)
    }

    /// The change feed's counters (see [`TenantKeys::feed_stats`]).
    pub async fn feed_stats(&self) -> Result<BTreeMap<String, u64>, BufferError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL")
            .arg(self.keys.feed_stats())
            .query_async(&mut conn)
            .await?)
    }

    /// Entries waiting (not in flight), change-feed entries waiting, contacts to re-read.
    pub async fn waiting(&self) -> Result<(u64, u64, u64), BufferError> {
        let mut conn = self.conn.clone();
        let (n, feed, refresh): (u64, Option<u64>, u64) = redis::pipe()
            .cmd("HLEN")
            .arg(self.keys.buffer())
            .cmd("GET")
            .arg(self.keys.buffer_feed())
            .cmd("SCARD")
            .arg(self.keys.refresh())
            .query_async(&mut conn)
            .await?;
        Ok((n, feed.unwrap_or(0), refresh))
    }
}

fn parse_entry(key: &str, value: &str) -> Result<Entry, BufferError> {
    let corrupt = |error: String| BufferError::Corrupt {
        key: key.to_owned(),
        error,
    };
    let (src, rest) = value.split_once('\n').ok_or_else(|| corrupt("no source".into()))?;
    let mut parts = rest.splitn(4, '\t');
    let (Some(op), Some(email), Some(from), Some(json)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt("not op/email/from/json".into()));
    };
    let s: Stored = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let record = || ZohoContact {
        first_name: s.first.clone(),
        last_name: s.last.clone(),
        email: s.email.clone(),
        phone: s.phone.clone(),
        account_name: s.account.clone(),
        title: s.title.clone(),
    };
    let op = match op {
        "upsert" => Op::Upsert(record()),
        "move" => Op::Move {
            from: from.to_owned(),
            record: record(),
        },
        "delete" => Op::Delete {
            email: email.to_owned(),
        },
        other => return Err(corrupt(format!("unknown op `{other}`"))),
    };
    Ok(Entry {
        source: Source::decode(src),
        contact_id: s.c,
        at_ms: s.at,
        hash: s.h,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_hash_sees_every_field_and_absent_differs_from_empty() {
        let r = ZohoContact {
            first_name: Some("Ada".into()),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            phone: None,
            account_name: None,
            title: None,
        };
        let mut other = r.clone();
        other.phone = Some(String::new());
        assert_ne!(record_hash(&r), record_hash(&other));
        assert_eq!(record_hash(&r), record_hash(&r.clone()));
        assert_eq!(record_hash(&r).len(), 16);
    }

    #[test]
    fn entries_parse_from_their_stored_form() {
        let v = "run:r1\nmove\tnew@x.io\told@x.io\t{\"c\":\"c1\",\"at\":5,\"h\":\"ab\",\"last\":\"L\",\"email\":\"new@x.io\"}";
        let e = parse_entry("c1", v).expect("parses");
        assert_eq!(e.source, Source::Run("r1".into()));
        assert!(matches!(e.op, Op::Move { ref from, .. } if from == "old@x.io"));
        let d = parse_entry("x:gone@x.io", "feed\ndelete\tgone@x.io\t\t{\"c\":\"c9\"}").expect("parses");
        assert_eq!(
            d.op,
            Op::Delete {
                email: "gone@x.io".into()
            }
        );
        assert_eq!(d.contact_id, "c9");
    }
}
