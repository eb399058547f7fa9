//! The CRM side of crmsync: one seam, [`CrmSink`], and one folder per CRM behind it (as
//! vector's `src/sinks/*`). The flush job hands a sink a batch of [`Write`]s of one kind and
//! gets one [`Outcome`] per write back; everything CRM-specific stays in the CRM's folder:
//! how records are matched ([`MatchKey`]), how many go in one call, what a call costs, the
//! field limits of the mapping, the wire format, and what each answer means for the caller
//! ([`SinkError::next`], computed once from the response).
//!
//! Every HTTP call of a sink is a [`tower_service::Service`] call whose request says, before it
//! is sent, what it costs and how it counts against the CRM's concurrency
//! ([`SinkRequest::cost`]) and whose answer reports the org's usage when the CRM tells it
//! ([`SinkResponse::usage`]): `crmsync-limits` wraps that service in its limit layer, so the
//! budget, the fleet-wide rate and the concurrency leases sit on the call path of every sink.
//!
//! To add a CRM: a folder here with its profile ([`SinkProfile`]), its calls and its
//! strategies, a variant in [`profile`] and [`crmsync_tenants::Crm`], and its flags in the CLI.
//!
//! **Boundary:** no Redis state of the sync here (the write buffer and the per-contact state
//! live in `crmsync-producer`); the Redis uses are a CRM client's own fleet-wide caches: its
//! OAuth tokens, and Salesforce's Accounts for routing. **Invariant:** every cached token is
//! keyed by the tenant's destination and used only for the connection revision it was issued
//! to.

mod guarded;
pub mod salesforce;
pub mod zoho;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crmsync_domain::{CrmRecord, FieldLimits, MatchKey};
pub use crmsync_tenants::CrmKind;

/// A boxed future, so sinks can sit behind `dyn CrmSink`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every user of a CRM needs to know before any call: the webhook receiver and the
/// page job map contacts with its limits, the buffer keys state by its match key, the flush
/// takes batches of its size.
#[derive(Debug, Clone, Copy)]
pub struct SinkProfile {
    pub kind: CrmKind,
    pub match_key: MatchKey,
    /// Most records per write call.
    pub max_batch: usize,
    /// Most writes a flush takes and hands to the sink at once (a multiple of `max_batch` when
    /// one batch may need calls of several kinds, e.g. Salesforce Contacts and Leads).
    pub max_take: usize,
    pub field_limits: FieldLimits,
    /// What the daily allowance counts (`credits`, `requests`).
    pub unit: &'static str,
    /// A record reduced to what the CRM keeps of it comparably, so a reconcile can compare a
    /// record of the address book with the [`CrmSide`] the CRM holds: both sides go through
    /// it. Zoho keeps all six fields (identity); Salesforce has no comparable company (a
    /// Lead's Company may be the email domain crmsync filled in, a Contact has none).
    pub comparable: fn(&CrmRecord) -> CrmRecord,
}

/// Profiles compare by their data; `comparable` is left out (function addresses are not
/// meaningful to compare, and each CRM has one profile with one `comparable`).
impl PartialEq for SinkProfile {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            kind,
            match_key,
            max_batch,
            max_take,
            field_limits,
            unit,
            comparable: _,
        } = self;
        *kind == other.kind
            && *match_key == other.match_key
            && *max_batch == other.max_batch
            && *max_take == other.max_take
            && *field_limits == other.field_limits
            && *unit == other.unit
    }
}

impl Eq for SinkProfile {}

/// The profile of a CRM.
pub fn profile(kind: CrmKind) -> &'static SinkProfile {
    match kind {
        CrmKind::Zoho => &zoho::PROFILE,
        CrmKind::Salesforce => &salesforce::PROFILE,
    }
}

/// Whose work a call is: near the budget's end, backfill leaves the last part of it to the
/// change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Change,
    Backfill,
}

/// How a call counts against the CRM's concurrency limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Only the tenant's concurrency limit.
    Plain,
    /// Also a narrower limit of its own kind of call, e.g. Zoho's "complex" calls (upserts of
    /// more than 10 records): at most 10 at once per org, on every edition.
    Capped { limit: u32 },
}

impl Class {
    /// The narrower limit, if any.
    pub fn cap(&self) -> Option<u32> {
        match self {
            Class::Plain => None,
            Class::Capped { limit } => Some(*limit),
        }
    }
}

/// What a call costs, known before it is sent: units of the daily allowance, and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub units: u64,
    pub class: Class,
}

/// What the CRM said about the org's use of its daily allowance (all integrations, not only
/// crmsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// What is left of the daily allowance (Zoho's `X-API-CREDITS-REMAINING`, sent once half
    /// the day's credits are used).
    Remaining(u64),
    /// Less than half the daily allowance is used (a Zoho answer without the header).
    BelowHalf,
    /// What the org used of its allowance in the rolling window, and the allowance itself
    /// (Salesforce's `Sforce-Limit-Info: api-usage=USED/MAX`): the org's own count wins over the
    /// configured daily allowance.
    Used { used: u64, max: u64 },
}

/// A sink call: what it costs and whose work it is.
pub trait SinkRequest {
    fn cost(&self) -> Cost;
    fn priority(&self) -> Priority;

    /// The cheapest call that reads the org's usage (Zoho: `GET /org`, 1 credit), for when the
    /// org's other integrations keep the tenant waiting and only a fresh reading tells when
    /// there is room again. None: the CRM has none.
    fn probe(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }
}

/// A sink answer: the org's usage, when the CRM reported it.
pub trait SinkResponse {
    fn usage(&self) -> Option<Usage>;
}

/// What the caller does about a failed call, decided once from the response (vector's
/// `RetryLogic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Transient (5xx, timeout, connection): retry later with backoff.
    Retry,
    /// Transient with a known wait.
    RetryAfter(Duration),
    /// The CRM throttled the org (429): every worker of the tenant backs off, then retries.
    Throttled { retry_after: Option<Duration> },
    /// The grant of access is dead (revoked refresh token): nothing works until an operator
    /// re-authorizes the tenant.
    Reauthorize,
    /// The job cannot succeed as it is (a missing scope, a request the CRM refuses).
    FailJob,
    /// Not the job's fault (the budget is spent, the tenant is paused or cooling down): run it
    /// again at `until_ms` without using an attempt.
    Wait { until_ms: u64 },
}

/// A failed sink call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub next: Next,
    /// A short code from the closed vocabulary of dead-letter codes (`crmsync dead codes`).
    pub code: &'static str,
    /// What happened, for people: never a secret, never a whole upstream body.
    pub message: String,
    /// The org's usage, when the failed answer reported it (a 429 may).
    pub usage: Option<Usage>,
    /// The request never reached the CRM (no token could be had): its cost is given back.
    pub not_sent: bool,
}

impl SinkError {
    pub fn new(next: Next, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            next,
            code,
            message: message.into(),
            usage: None,
            not_sent: false,
        }
    }

    pub fn with_usage(mut self, usage: Option<Usage>) -> Self {
        self.usage = usage;
        self
    }

    pub fn not_sent(mut self) -> Self {
        self.not_sent = true;
        self
    }
}

/// One buffered change, as a flush hands it to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or update the contact's record, found by the sink's match key. `rid`: the record
    /// crmsync last wrote for the contact, when the sink matches on the contact (a Salesforce
    /// sink keeps writing the object it wrote, Contact or Lead); None otherwise.
    Upsert {
        contact_id: String,
        record: CrmRecord,
        rid: Option<String>,
    },
    /// The contact's email changed and its record follows it: `rid` is the record crmsync
    /// last wrote for it under the former email (None: none known, so it is created where
    /// the new email is).
    Move {
        contact_id: String,
        record: CrmRecord,
        rid: Option<String>,
    },
    /// The record is no longer anybody's: delete `rid` (None: crmsync knows no record to
    /// delete).
    Delete { contact_id: String, rid: Option<String> },
}

impl Write {
    pub fn contact_id(&self) -> &str {
        match self {
            Write::Upsert { contact_id, .. } | Write::Move { contact_id, .. } | Write::Delete { contact_id, .. } => {
                contact_id
            }
        }
    }
}

/// What happened to one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The record now holds the write; `rid` is its id in the CRM.
    Written { rid: String, inserted: bool },
    /// The record is gone (deleted now, or already).
    Deleted,
    /// The CRM refused this record; the others of the call are unaffected.
    Rejected {
        code: String,
        field: Option<String>,
        message: String,
    },
}

/// The result of a batch: one outcome per write, in order, and what the calls cost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    pub outcomes: Vec<Outcome>,
    pub calls: u64,
    pub cost: u64,
}

/// A record as the CRM holds it (for reconcile): its id, the value of the sink's match key
/// (Zoho: the Email, trimmed and lowercased; Salesforce: the external id = the Nylas contact
/// id), and its fields as a [`CrmRecord`] (empty or null text → None, a null last name → "";
/// the email trimmed and lowercased; other text as the CRM holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSide {
    pub rid: String,
    pub key: String,
    pub record: CrmRecord,
}

/// One page of a CRM read ([`CrmSink::read`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrmPage {
    pub records: Vec<CrmSide>,
    /// Where the next page starts (None: this was the last). Opaque: hand it back to the same
    /// sink's `read`, as it is.
    pub next: Option<String>,
    /// Calls made (one per page) and what they cost, in the profile's `unit`.
    pub calls: u64,
    pub cost: u64,
}

/// A CRM a tenant writes to.
pub trait CrmSink: Send + Sync {
    fn profile(&self) -> &'static SinkProfile;

    /// Writes a batch of one kind of write (at most `max_take`, as the buffer hands them out);
    /// an error fails the whole batch (it is retried as a whole), per-record refusals are
    /// [`Outcome::Rejected`].
    fn write<'a>(&'a self, batch: &'a [Write], priority: Priority) -> BoxFuture<'a, Result<Written, SinkError>>;

    /// Reads the next page of the records crmsync keeps in the CRM, starting at the beginning
    /// when `cursor` is None, else where [`CrmPage::next`] of the previous page said. One call
    /// per page, through the same service as writes (so the budget, the rate and the
    /// concurrency limits apply). A walk sees every record that stays in the CRM throughout
    /// once; records created or deleted during the walk may or may not be seen.
    ///
    /// Errors are classified as for writes, plus: a cursor this sink did not make is
    /// `BAD_CURSOR` ([`Next::FailJob`], nothing sent); a cursor the CRM no longer accepts
    /// (Zoho `PAGE_TOKEN_EXPIRED`: page tokens live 24 h; Salesforce `INVALID_QUERY_LOCATOR`:
    /// query cursors close after about 15 idle minutes) cannot be retried as it is: whether to
    /// start again from None is the caller's decision.
    fn read<'a>(&'a self, cursor: Option<&'a str>, priority: Priority) -> BoxFuture<'a, Result<CrmPage, SinkError>>;
}

/// The code of a read cursor the sink did not make (shared by every CRM's `CODES`).
pub(crate) const BAD_CURSOR: &str = "BAD_CURSOR";
/// What [`BAD_CURSOR`] means, the same in every CRM's `CODES`.
pub(crate) const BAD_CURSOR_MEANING: &str =
    "a read was given a cursor its sink did not make (garbled, or another CRM's): nothing was sent";

/// The error for a read cursor the sink did not make.
pub(crate) fn bad_cursor(cursor: &str) -> SinkError {
    SinkError::new(
        Next::FailJob,
        BAD_CURSOR,
        format!("`{}` is not a read cursor of this sink", clean(cursor, 80)),
    )
    .not_sent()
}

/// A text field of a CRM answer: null, absent, non-text or empty → None.
pub(crate) fn text_field(v: &serde_json::Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// An email as the match key and the record hold it: trimmed, lowercased.
pub(crate) fn key_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Reads an answer's body up to `max` bytes: an upstream answer is never trusted to be small.
pub(crate) async fn read_capped(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if let Some(len) = res.content_length()
        && len as usize > max
    {
        return Err(format!("answer of {len} bytes is over the {max}-byte limit"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > max {
            return Err(format!("answer is over the {max}-byte limit"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Text from a stranger (an upstream message or code) made safe to keep and log: control
/// characters escaped, at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
