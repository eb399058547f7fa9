//! The write buffer of one tenant's destination: every change crmsync makes to a CRM waits
//! here until a flush writes it in a batch (the CRM's largest call is the cheapest per
//! record: a 100-record Zoho upsert costs 10 credits). Backfill pages and the change feed
//! push; flush jobs take, write and record.
//!
//! - **Coalescing**: one entry waits per contact; a newer change (by event time, then
//!   arrival) replaces it, an older one is dropped, and a deletion cancels a waiting update.
//!   An update older than a deletion already applied is dropped (tombstones outlive Nylas's
//!   72-hour retry horizon).
//! - **Shared emails** (a CRM matching on email): the contact with the smallest Nylas id owns
//!   an email's record. When the owner leaves an email (deleted, or its email changed), the
//!   next contact with that email takes over (it is re-read from Nylas and written); when none
//!   is left, the record is deleted, or moved by id to the contact's new email.
//! - **Skip unchanged**: the hash of what was last written to each record is kept; a change
//!   that maps to the same record costs nothing (unless forced).
//! - **Order**: a record being written is not taken again until that write is recorded, so
//!   writes to one record land in order; change-feed entries go first.
//! - **Durability**: a flush's batch is kept under the flush's id until its outcome is
//!   recorded (`done.lua`, once); a flush that crashes resumes its own batch, and a batch
//!   whose flush is gone for good (lease expired) returns to the buffer.
//!
//! **State** (per destination, in bucketed hashes that Redis keeps in its compact encoding):
//! per contact `<at s> <record key>` (the latest change applied), per record `<hash> <record
//! id> <owner>` (what crmsync wrote there and which contact owns it). A record key is a
//! 64-bit hash of the email (matching on email) or the contact id (matching on contact):
//! the email itself is not kept.
//!
//! **Entries** are `op \t src \t record key \t former record key \t at \t JSON`: the scripts
//! decide on the tab-separated fields (none can hold a tab) and never touch the JSON (contact
//! id, record hash, record), which is built here with serde.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use crmsync_domain::{CrmRecord, MatchKey};
use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::{DestKeys, TenantKeys, is_gone};
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The scripts, each with the shared prelude (guard, entry and state formats) in front.
fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("scripts/lib.lua")))
}
static PUSH: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/push.lua")));
static TAKE: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/take.lua")));
static DONE: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/done.lua")));
/// Read-only, of the buffer and the run: no guard, no prelude.
static WAITING: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/waiting.lua")));
static COVER: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/cover.lua")));
static SCHEDULED: LazyLock<Script> = LazyLock::new(|| script(include_str!("scripts/scheduled.lua")));

/// How long a flush may hold a batch before it is presumed gone (a deferred flush renews it).
const FLUSH_LEASE_MS: u64 = 3_600_000;
/// How long a deletion is remembered: past Nylas's 72-hour retry horizon.
const TOMBSTONE_MS: u64 = 96 * 3_600_000;
/// How long a webhook notification id is remembered (Nylas retries for up to 72 hours).
pub const SEEN_MS: u64 = 96 * 3_600_000;
/// Most rejected records kept per destination.
const REJECTED_MAX: u64 = 10_000;

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

    /// The run id, or `feed`.
    pub fn label(&self) -> &str {
        match self {
            Source::Run(id) => id,
            Source::Feed => "feed",
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
        record: CrmRecord,
    },
    /// The contact was deleted.
    Delete { contact_id: String, at_ms: u64 },
    /// The contact still exists but no longer maps to a record (its email is gone).
    Unmap { contact_id: String, at_ms: u64 },
}

/// What an entry carries for the flush, as JSON: the contact, the record's hash, the record.
/// A wire format (entries wait across deploys): fields are only added, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    c: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    h: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<Stored>,
}

/// The record as it waits in Redis: a wire format (it waits across deploys), so fields are
/// only added, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    first: Option<String>,
    #[serde(default)]
    last: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

impl Stored {
    fn of(r: &CrmRecord) -> Self {
        Stored {
            first: r.first_name.clone(),
            last: r.last_name.clone(),
            email: r.email.clone(),
            phone: r.phone.clone(),
            company: r.company.clone(),
            title: r.title.clone(),
        }
    }

    fn record(self) -> CrmRecord {
        CrmRecord {
            first_name: self.first,
            last_name: self.last,
            email: self.email,
            phone: self.phone,
            company: self.company,
            title: self.title,
        }
    }
}

/// What a flush does with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write the record, found by the CRM's match key.
    Upsert(CrmRecord),
    /// The contact's email changed and its record (id in [`Entry::rid`], when known) follows
    /// it: update it to this record, new email included.
    Move(CrmRecord),
    /// Delete the record (id in [`Entry::rid`], when known): its last contact left it.
    Delete,
}

/// A buffered change as a flush takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The buffer key (`c:<contact id>` or `x:<record key>`).
    pub key: String,
    pub source: Source,
    pub contact_id: String,
    /// The record key the entry writes, and for a move the one its record leaves.
    pub rk: String,
    pub from: String,
    /// Hash of the record (empty for deletions), recorded once it is written.
    pub hash: String,
    /// The record id a move or a deletion acts on, when crmsync knows it.
    pub rid: Option<String>,
    pub op: Op,
}

impl Entry {
    /// The email the entry is about (empty for a deletion, whose email crmsync does not keep).
    pub fn email(&self) -> &str {
        match &self.op {
            Op::Upsert(r) | Op::Move(r) => &r.email,
            Op::Delete => "",
        }
    }
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
    /// Flushes for full batches to schedule now (no scheduled flush covers them yet): enqueue
    /// them, then count them with [`WriteBuffer::scheduled`].
    pub schedule: u64,
}

/// A push of a webhook notification: recorded, or a duplicate of one already recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushing {
    Pushed(Pushed),
    Duplicate,
}

/// How one entry of a batch ended, for [`WriteBuffer::done`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The record holds the entry now, under this id.
    Record(String),
    /// The record is gone.
    Deleted,
    /// The CRM refused it (see the rejections passed alongside).
    Refused,
}

/// Counts of a flush for one source, recorded with its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushCount {
    pub source: Source,
    /// A run counter: `inserted`, `updated`, `deleted`, `failed:<code>`, `calls`, `credits`.
    pub field: String,
    pub n: u64,
}

/// A record the CRM refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub run_id: String,
    pub contact_id: String,
    pub email: String,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// The tenant was removed or pointed at another destination meanwhile.
    #[error("the tenant was removed or pointed at another destination")]
    Gone,
    #[error("buffered entry {key} is unreadable: {error}")]
    Corrupt { key: String, error: String },
    #[error("could not schedule a flush: {0}")]
    Schedule(crmsync_queue::QueueError),
}

impl From<redis::RedisError> for BufferError {
    fn from(e: redis::RedisError) -> Self {
        if is_gone(&e) {
            BufferError::Gone
        } else {
            BufferError::Redis(e)
        }
    }
}

fn hash_b64(bytes: &[u8], n: usize) -> String {
    let digest = Sha256::digest(bytes);
    B64.encode(&digest[..n])
}

/// The record key of an email (for a CRM matching on email): 64 bits of its SHA-256, so the
/// email itself is not stored and two emails practically never share a key.
pub fn email_key(email: &str) -> String {
    hash_b64(email.as_bytes(), 8)
}

/// The record key of a contact (for a CRM matching on the contact's id).
pub fn contact_key(contact_id: &str) -> String {
    let mut b = Vec::with_capacity(contact_id.len() + 2);
    b.extend_from_slice(b"c\0");
    b.extend_from_slice(contact_id.as_bytes());
    hash_b64(&b, 8)
}

/// A record id as the state keeps it: a decimal id that fits 64 bits (Zoho's 19 digits) as
/// `~` and 11 characters of base64url, any other as it is (`-` for one with a space: the
/// state's separator).
fn pack_rid(rid: &str) -> String {
    if rid.is_empty() || rid.contains(' ') || rid.starts_with('~') || rid == "-" {
        return "-".into();
    }
    match rid.parse::<u64>() {
        Ok(n) if n.to_string() == rid => format!("~{}", B64.encode(n.to_be_bytes())),
        _ => rid.to_owned(),
    }
}

/// The record id of [`pack_rid`]'s form.
fn unpack_rid(packed: &str) -> Option<String> {
    if packed.is_empty() || packed == "-" {
        return None;
    }
    match packed.strip_prefix('~') {
        Some(b) => {
            let bytes: [u8; 8] = B64.decode(b).ok()?.try_into().ok()?;
            Some(u64::from_be_bytes(bytes).to_string())
        }
        None => Some(packed.to_owned()),
    }
}

/// The bucket of a contact's state (0..1024, from its id's SHA-256).
fn contact_bucket(contact_id: &str) -> u16 {
    let d = Sha256::digest(contact_id.as_bytes());
    u16::from_be_bytes([d[0], d[1]]) % 1024
}

/// Contact-state buckets (`0..CONTACT_BUCKETS`), for a sweep over every contact crmsync knows.
pub const CONTACT_BUCKETS: u16 = 1024;

/// The bucket of a record key, as `lib.lua`'s `rbucket`: its first character and the low 4
/// bits of its second character's base64url value, in hex.
fn record_bucket(rk: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const HEX: &[u8] = b"0123456789abcdef";
    let b = rk.as_bytes();
    let first = b.first().map(|c| *c as char).unwrap_or('A');
    let second = b
        .get(1)
        .and_then(|c| ALPHABET.iter().position(|a| a == c))
        .map(|i| HEX[i % 16] as char)
        .unwrap_or('0');
    format!("{first}{second}")
}

/// What crmsync last wrote to a record (read for a reconcile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordState {
    /// Hash of the record as written ([`record_hash`]); None: nothing, or not its owner's.
    pub hash: Option<String>,
    pub rid: Option<String>,
    /// The contact owning the record; None: nobody (its deletion waits).
    pub owner: Option<String>,
}

/// A 48-bit hash of a record (8 characters): what "unchanged" compares.
pub fn record_hash(r: &CrmRecord) -> String {
    let mut buf = Vec::with_capacity(128);
    for f in [
        r.first_name.as_deref(),
        Some(r.last_name.as_str()),
        Some(r.email.as_str()),
        r.phone.as_deref(),
        r.company.as_deref(),
        r.title.as_deref(),
    ] {
        match f {
            Some(v) => {
                buf.push(1);
                buf.extend_from_slice(v.as_bytes());
            }
            None => buf.push(0),
        }
        buf.push(0x1f);
    }
    hash_b64(&buf, 6)
}

/// One destination's write buffer. Cheap to clone.
#[derive(Clone)]
pub struct WriteBuffer {
    conn: RedisConn,
    tenant: TenantKeys,
    dest: DestKeys,
    mode: MatchKey,
    batch: usize,
}

impl WriteBuffer {
    /// The buffer of a tenant's destination, for a CRM matching on `mode`, written in
    /// batches of `batch`.
    pub fn new(conn: RedisConn, namespace: &str, tenant: &str, dest: &str, mode: MatchKey, batch: usize) -> Self {
        let tenant = TenantKeys::new(namespace, tenant);
        Self {
            conn,
            dest: tenant.dest(dest),
            tenant,
            mode,
            batch: batch.max(1),
        }
    }

    pub fn keys(&self) -> &DestKeys {
        &self.dest
    }

    /// The record key a change of this record writes.
    pub fn record_key(&self, contact_id: &str, r: &CrmRecord) -> String {
        match self.mode {
            MatchKey::Email => email_key(&r.email),
            MatchKey::ContactId => contact_key(contact_id),
        }
    }

    /// Pushes changes; `force` writes upserts even when unchanged.
    pub async fn push(&self, source: &Source, force: bool, changes: &[Change]) -> Result<Pushed, BufferError> {
        match self.push_notification(source, force, changes, None).await? {
            Pushing::Pushed(p) => Ok(p),
            Pushing::Duplicate => Ok(Pushed::default()),
        }
    }

    /// Pushes the changes of a webhook notification, unless its id was recorded already
    /// (checked and recorded in the same atomic step as the push).
    pub async fn push_notification(
        &self,
        source: &Source,
        force: bool,
        changes: &[Change],
        notification: Option<&str>,
    ) -> Result<Pushing, BufferError> {
        if changes.is_empty() && notification.is_none() {
            return Ok(Pushing::Pushed(Pushed::default()));
        }
        let (t, d) = (&self.tenant, &self.dest);
        let mut inv = PUSH.prepare_invoke();
        inv.key(d.queue())
            .key(d.queue_feed())
            .key(d.queue_backfill())
            .key(d.in_flight())
            .key(d.tombstones())
            .key(d.refresh())
            .key(d.feed_waiting())
            .key(d.scheduled())
            .key(t.feed_stats())
            .key(t.seen())
            .key(d.live())
            .arg(now_ms())
            .arg(source.encode())
            .arg(if force { 1 } else { 0 })
            .arg(match self.mode {
                MatchKey::Email => "email",
                MatchKey::ContactId => "contact",
            })
            .arg(d.contacts_prefix())
            .arg(d.records_prefix())
            .arg(d.members_prefix())
            .arg(t.run_prefix())
            .arg(self.batch)
            .arg(TOMBSTONE_MS)
            .arg(notification.unwrap_or(""))
            .arg(SEEN_MS);
        let json = |cid: &str, body: &Body| {
            serde_json::to_string(body).map_err(|e| BufferError::Corrupt {
                key: cid.to_owned(),
                error: e.to_string(),
            })
        };
        for c in changes {
            match c {
                Change::Upsert {
                    contact_id,
                    at_ms,
                    record,
                } => {
                    let hash = record_hash(record);
                    let body = Body {
                        c: contact_id.clone(),
                        h: hash.clone(),
                        r: Some(Stored::of(record)),
                    };
                    inv.arg("upsert")
                        .arg(contact_id)
                        .arg(base36(at_ms / 1000))
                        .arg(contact_bucket(contact_id))
                        .arg(self.record_key(contact_id, record))
                        .arg(hash)
                        .arg(json(contact_id, &body)?);
                }
                Change::Delete { contact_id, at_ms } | Change::Unmap { contact_id, at_ms } => {
                    let op = if matches!(c, Change::Delete { .. }) {
                        "delete"
                    } else {
                        "unmap"
                    };
                    let body = Body {
                        c: contact_id.clone(),
                        h: String::new(),
                        r: None,
                    };
                    inv.arg(op)
                        .arg(contact_id)
                        .arg(base36(at_ms / 1000))
                        .arg(contact_bucket(contact_id))
                        .arg("")
                        .arg("")
                        .arg(json(contact_id, &body)?);
                }
            }
        }
        inv.arg(d.dest());
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        let n = |i: usize| -> u64 {
            reply
                .get(i)
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                .unwrap_or(0)
        };
        let status: String = reply
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .unwrap_or_default();
        if status == "duplicate" {
            return Ok(Pushing::Duplicate);
        }
        Ok(Pushing::Pushed(Pushed {
            pushed: n(1),
            shared: n(2),
            unchanged: n(3),
            stale: n(4),
            waiting: n(5),
            schedule: n(6),
        }))
    }

    /// Takes (or resumes) the batch of flush `flush_id`: at most `max` entries of one kind,
    /// and nothing unless at least `min` are available. `slot`: the slot the flush is counted
    /// under among the scheduled ones (it stops counting).
    pub async fn take(
        &self,
        flush_id: &str,
        max: usize,
        min: usize,
        slot: Option<&str>,
    ) -> Result<Vec<Entry>, BufferError> {
        let d = &self.dest;
        let mut conn = self.conn.clone();
        let flat: Vec<String> = TAKE
            .key(d.queue())
            .key(d.queue_feed())
            .key(d.queue_backfill())
            .key(d.in_flight())
            .key(d.flush(flush_id))
            .key(d.flushes())
            .key(d.feed_waiting())
            .key(d.scheduled())
            .key(d.started_early())
            .key(self.tenant.feed_stats())
            .key(d.live())
            .arg(flush_id)
            .arg(max)
            .arg(min)
            .arg(now_ms())
            .arg(FLUSH_LEASE_MS)
            .arg(d.flush_prefix())
            .arg(self.tenant.run_prefix())
            .arg(d.records_prefix())
            .arg(slot.unwrap_or(""))
            .arg(if self.mode == MatchKey::ContactId { "1" } else { "0" })
            .arg(d.dest())
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for t in flat.chunks(3) {
            let [key, value, rid] = t else { continue };
            out.push(parse_entry(key, value, rid)?);
        }
        Ok(out)
    }

    /// Records a flush's outcome (once): what each entry's record holds now, what the CRM
    /// refused, the counts; releases the batch. Returns the runs it completed.
    pub async fn done(
        &self,
        flush_id: &str,
        results: &[(&Entry, Written)],
        counts: &[FlushCount],
        rejections: &[(Source, Rejection)],
    ) -> Result<Vec<String>, BufferError> {
        let (t, d) = (&self.tenant, &self.dest);
        let mut inv = DONE.prepare_invoke();
        inv.key(d.flush(flush_id))
            .key(d.in_flight())
            .key(d.flushes())
            .key(t.feed_stats())
            .key(d.feed_waiting())
            .key(t.active_run())
            .key(d.rejected())
            .key(d.blocked())
            .key(d.live())
            .arg(flush_id)
            .arg(now_ms())
            .arg(t.run_prefix())
            .arg(d.records_prefix())
            .arg(REJECTED_MAX)
            .arg(results.len())
            .arg(counts.len())
            .arg(rejections.len());
        for (e, w) in results {
            // what happened: a record written (`w`; `m` when it moved from `from`), deleted
            // (`d`) or refused (`r`)
            let (result, rid) = match w {
                Written::Record(id) if matches!(e.op, Op::Move(_)) => ("m", pack_rid(id)),
                Written::Record(id) => ("w", pack_rid(id)),
                Written::Deleted => ("d", "-".to_owned()),
                Written::Refused => ("r", "-".to_owned()),
            };
            inv.arg(e.source.encode())
                .arg(&e.contact_id)
                .arg(result)
                .arg(&e.rk)
                .arg(&e.from)
                .arg(rid)
                .arg(&e.hash);
        }
        for c in counts {
            inv.arg(c.source.encode()).arg(&c.field).arg(c.n);
        }
        for (source, r) in rejections {
            inv.arg(source.label())
                .arg(&r.contact_id)
                .arg(&r.email)
                .arg(&r.code)
                .arg(r.field.as_deref().unwrap_or(""))
                .arg(&r.message);
        }
        inv.arg(d.dest());
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// The flushes needed to write every waiting entry, partial batches included, that no
    /// scheduled flush covers yet: the caller enqueues that many
    /// ([`crate::FlushTrigger::Full`]) and then counts them ([`WriteBuffer::scheduled`]). For
    /// when nothing more is coming.
    pub async fn cover(&self) -> Result<u64, BufferError> {
        let d = &self.dest;
        let mut inv = COVER.prepare_invoke();
        inv.key(d.queue())
            .key(d.scheduled())
            .key(d.live())
            .arg(self.batch)
            .arg(d.dest());
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// Counts flushes as scheduled, by their slots, once they are enqueued (see
    /// [`crate::schedule_full_flushes`]).
    pub async fn scheduled(&self, slots: &[String]) -> Result<(), BufferError> {
        if slots.is_empty() {
            return Ok(());
        }
        let d = &self.dest;
        let mut inv = SCHEDULED.prepare_invoke();
        inv.key(d.scheduled())
            .key(d.started_early())
            .key(d.live())
            .arg(slots)
            .arg(d.dest());
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Up to `n` contacts that must be re-read from Nylas (they took over a shared email).
    pub async fn take_refresh(&self, n: usize) -> Result<Vec<String>, BufferError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SPOP")
            .arg(self.dest.refresh())
            .arg(n)
            .query_async(&mut conn)
            .await?)
    }

    /// Asks for contacts to be re-read from Nylas and pushed forced at the start of the next
    /// flush (an operator's retry of rejected records); returns how many were not asked yet.
    /// Schedule a flush afterwards.
    pub async fn request_refresh(&self, cids: &[&str]) -> Result<u64, BufferError> {
        let mut conn = self.conn.clone();
        let mut added = 0;
        for chunk in cids.chunks(500) {
            let n: u64 = redis::Script::new(&format!(
                "{}return redis.call('SADD', KEYS[1], unpack(ARGV, 1, #ARGV - 1))",
                crmsync_tenants::LIVE_GUARD
            ))
            .key(self.dest.refresh())
            .key(self.dest.live())
            .arg(chunk)
            .arg(self.dest.dest())
            .invoke_async(&mut conn)
            .await?;
            added += n;
        }
        Ok(added)
    }

    /// The change feed's counters (see [`TenantKeys::feed_stats`]); `credits` includes the
    /// feed's share of calls it shared with a backfill (kept in thousandths, `credits_milli`).
    pub async fn feed_stats(&self) -> Result<BTreeMap<String, u64>, BufferError> {
        let mut conn = self.conn.clone();
        let mut stats: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(self.tenant.feed_stats())
            .query_async(&mut conn)
            .await?;
        if let Some(milli) = stats.get("credits_milli").copied() {
            *stats.entry("credits".into()).or_default() += (milli + 500) / 1000;
        }
        Ok(stats)
    }

    /// What crmsync last wrote to each record (by record key), None where it wrote nothing.
    pub async fn record_states(&self, rks: &[String]) -> Result<Vec<Option<RecordState>>, BufferError> {
        if rks.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = self.dest.records_prefix();
        let mut pipe = redis::pipe();
        for rk in rks {
            pipe.cmd("HGET").arg(format!("{prefix}{}", record_bucket(rk))).arg(rk);
        }
        let vals: Vec<Option<String>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(vals
            .into_iter()
            .map(|v| {
                let v = v?;
                let mut it = v.splitn(3, ' ');
                let (hash, rid, owner) = (it.next()?, it.next()?, it.next().unwrap_or(""));
                Some(RecordState {
                    hash: (hash != "-").then(|| hash.to_owned()),
                    rid: unpack_rid(rid),
                    owner: (!owner.is_empty()).then(|| owner.to_owned()),
                })
            })
            .collect())
    }

    /// The contacts crmsync keeps state for in contact buckets `from..to` (at most
    /// [`CONTACT_BUCKETS`]), with whether each maps to a record now.
    pub async fn contacts_in_buckets(&self, from: u16, to: u16) -> Result<Vec<(String, bool)>, BufferError> {
        let prefix = self.dest.contacts_prefix();
        let mut pipe = redis::pipe();
        for b in from..to.min(CONTACT_BUCKETS) {
            pipe.cmd("HGETALL").arg(format!("{prefix}{b}"));
        }
        let buckets: Vec<Vec<(String, String)>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(buckets
            .into_iter()
            .flatten()
            .map(|(cid, v)| {
                let mapped = v.split_once(' ').is_some_and(|(_, rk)| rk != "-");
                (cid, mapped)
            })
            .collect())
    }

    /// What waits (see [`Waiting`]), in one read.
    pub async fn waiting(&self) -> Result<Waiting, BufferError> {
        let mut conn = self.conn.clone();
        let (entries, feed, refresh, reading): (u64, u64, u64, u8) = WAITING
            .key(self.dest.queue())
            .key(self.dest.feed_waiting())
            .key(self.dest.refresh())
            .key(self.tenant.active_run())
            .arg(self.tenant.run_prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(Waiting {
            entries,
            feed,
            refresh,
            reading: reading == 1,
        })
    }
}

/// What waits in a destination's write buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Entries waiting (not in flight).
    pub entries: u64,
    /// Change-feed entries waiting (in flight included).
    pub feed: u64,
    /// Contacts to re-read.
    pub refresh: u64,
    /// The tenant's backfill is still reading pages (more full batches are coming).
    pub reading: bool,
}

/// A number in base 36 (event times in the contact state: six characters instead of ten).
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(8);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn parse_entry(key: &str, value: &str, rid: &str) -> Result<Entry, BufferError> {
    let corrupt = |error: String| BufferError::Corrupt {
        key: key.to_owned(),
        error,
    };
    let mut parts = value.splitn(6, '\t');
    let (Some(op), Some(src), Some(rk), Some(from), Some(_at), Some(json)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(corrupt("not `op src rk from at JSON`".into()));
    };
    let body: Body = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let record = |r: Option<Stored>| -> Result<CrmRecord, BufferError> {
        Ok(r.ok_or_else(|| corrupt("a write without its record".into()))?.record())
    };
    let op = match op {
        "upsert" => Op::Upsert(record(body.r)?),
        "move" => Op::Move(record(body.r)?),
        "delete" => Op::Delete,
        other => return Err(corrupt(format!("unknown op `{other}`"))),
    };
    Ok(Entry {
        key: key.to_owned(),
        source: Source::decode(src),
        contact_id: body.c,
        rk: rk.to_owned(),
        from: from.to_owned(),
        hash: body.h,
        rid: unpack_rid(rid),
        op,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn base36_is_short_and_exact() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(1_700_000_000), "s44we8");
    }

    use super::*;

    #[test]
    fn record_ids_are_kept_short_and_come_back_the_same() {
        for id in [
            "3652397000000649013",
            "18446744073709551615",
            "0034x00000ABCdEAAX",
            "12",
            "007",
        ] {
            assert_eq!(unpack_rid(&pack_rid(id)).as_deref(), Some(id), "{id}");
        }
        assert_eq!(pack_rid("3652397000000649013").len(), 12);
        assert_eq!(pack_rid("a b"), "-", "a space would break the state's format");
        assert_eq!(unpack_rid(&pack_rid("")), None);
    }

    #[test]
    fn record_hash_sees_every_field_and_absent_differs_from_empty() {
        let r = CrmRecord {
            first_name: Some("Ada".into()),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            phone: None,
            company: None,
            title: None,
        };
        let mut other = r.clone();
        other.phone = Some(String::new());
        assert_ne!(record_hash(&r), record_hash(&other));
        let mut moved = r.clone();
        moved.first_name = None;
        moved.last_name = "AdaLovelace".into();
        assert_ne!(record_hash(&r), record_hash(&moved), "field boundaries count");
        assert_eq!(record_hash(&r), record_hash(&r.clone()));
        assert_eq!(record_hash(&r).len(), 8);
        assert_eq!(email_key("ada@example.com").len(), 11);
        assert_ne!(email_key("ada@example.com"), email_key("ada@example.co"));
    }

    #[test]
    fn entries_parse_from_their_stored_form_whatever_the_ids_hold() {
        let cid = "c\"1\t\n\\é";
        let body = serde_json::to_string(&Body {
            c: cid.into(),
            h: "h1".into(),
            r: Some(Stored::of(&CrmRecord {
                first_name: None,
                last_name: "L".into(),
                email: "new@x.io".into(),
                phone: None,
                company: None,
                title: None,
            })),
        })
        .expect("json");
        let v = format!("move\trun:r1\trkNEW\trkOLD\t5\t{body}");
        let e = parse_entry(&format!("c:{cid}"), &v, "3652397").expect("parses");
        assert_eq!(e.source, Source::Run("r1".into()));
        assert_eq!(e.contact_id, cid);
        assert_eq!(
            (e.rk.as_str(), e.from.as_str(), e.hash.as_str()),
            ("rkNEW", "rkOLD", "h1")
        );
        assert_eq!(e.rid.as_deref(), Some("3652397"));
        assert!(matches!(e.op, Op::Move(ref r) if r.email == "new@x.io"));
        let d = parse_entry("x:rk", "delete\tfeed\trk\t\t7\t{\"c\":\"c9\"}", "-").expect("parses");
        assert_eq!((d.op, d.rid, d.contact_id.as_str()), (Op::Delete, None, "c9"));
        assert!(parse_entry("c:x", "upsert\tbroken", "-").is_err());
        assert!(
            parse_entry("c:x", "upsert\tfeed\trk\t\t1\t{\"c\":\"x\"}", "-").is_err(),
            "no record"
        );
    }
}
