//! Backfill runs: one per `crmsync backfill <tenant>`, with its progress counters.
//!
//! A run is `running` until every page up to the last one (the page without a cursor) is
//! counted, then `completed`; or `failed` (a page failed for good) or `cancelled`. Only one run
//! per tenant is active at a time: the tenant's `active_run` key, whose TTL each page renews,
//! so a run abandoned by a dead fleet frees the tenant after [`ACTIVE_TTL`].

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use crmsync_domain::SkipReason;
use crmsync_redis::RedisConn;
use crmsync_tenants::TenantKeys;
use redis::Script;
use serde::Serialize;

/// How long a run stays active without progress before another may start.
pub const ACTIVE_TTL: Duration = Duration::from_secs(3600);

static START: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/start_run.lua")));
static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/record_page.lua")));
static END: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/end_run.lua")));
/// Counts a reconcile's book page once. KEYS[1] run hash, KEYS[2] counted-steps hash; ARGV[1]
/// page, ARGV[2] has next (0/1), ARGV[3] now ms, then counter/increment pairs. Returns the last
/// page's number when every book page is counted (also when this page was counted before),
/// else -1.
static COUNT_BOOK_PAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], 'book:' .. ARGV[1], ARGV[3]) == 1 then
  for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', KEYS[1], 'book_done', 1)
  redis.call('HINCRBY', KEYS[1], 'pages_done', 1)
  if ARGV[2] == '0' then redis.call('HSET', KEYS[1], 'book_last', ARGV[1]) end
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
end
local last = tonumber(redis.call('HGET', KEYS[1], 'book_last') or '-1')
local done = tonumber(redis.call('HGET', KEYS[1], 'book_done') or '0')
if last >= 0 and done >= last + 1 then return last end
return -1",
    )
});
/// Adds a step's counts to a run once. KEYS[1] run hash, KEYS[2] counted-steps hash; ARGV[1]
/// step, ARGV[2] now ms, then counter/increment pairs. Returns 1 when counted.
static COUNT_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return 1",
    )
});

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no run `{0}`")]
    NotFound(String),
    #[error("no tenant `{0}`; list tenants with `crmsync tenant list`")]
    NoTenant(String),
    #[error("could not enqueue the run's first job: {0}")]
    Queue(#[from] crmsync_queue::QueueError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Every page is read; records still wait in the write buffer.
    Draining,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// Running or draining: not ended.
    pub fn is_active(&self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Draining)
    }

    fn parse(s: &str) -> Self {
        match s {
            "completed" => RunStatus::Completed,
            "draining" => RunStatus::Draining,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Draining => "draining",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// A run as read from Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: String,
    pub tenant: String,
    /// `backfill` or `reconcile`.
    pub kind: RunKind,
    /// A reconcile that only reports (changes nothing).
    pub dry_run: bool,
    pub status: RunStatus,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    pub force: bool,
    pub pages_done: u64,
    /// The last page's number, once read.
    pub last_page: Option<u64>,
    pub contacts_read: u64,
    /// Contacts that mapped to a record; those not skipped.
    pub mapped: u64,
    pub inserted: u64,
    pub updated: u64,
    /// Records deleted (a reconcile's orphans; a backfill deletes none).
    pub deleted: u64,
    /// Contacts with unchanged mapped fields, not written.
    pub unchanged: u64,
    /// Records whose fields were shortened to fit Zoho.
    pub adjusted: u64,
    pub skipped: BTreeMap<String, u64>,
    /// Records Zoho rejected, by Zoho's code.
    pub failed: BTreeMap<String, u64>,
    /// Calls made to the CRM.
    pub calls: u64,
    pub credits: u64,
    /// A reconcile's findings by kind (`missing`, `stale`, `crm_edited`, `orphaned`,
    /// `not_ours`, `in_sync`), and its CRM reads.
    pub drift: BTreeMap<String, u64>,
    pub error: Option<String>,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Reads the book and writes what changed since crmsync last wrote it.
    Backfill,
    /// Reads the CRM and the book and writes the differences (or, dry, reports them).
    Reconcile,
}

impl RunKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunKind::Backfill => "backfill",
            RunKind::Reconcile => "reconcile",
        }
    }
}

impl Run {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Pages done over pages known (the last page is known once read).
    pub fn progress(&self) -> Option<f64> {
        self.last_page.map(|l| self.pages_done as f64 / (l + 1) as f64)
    }
}

/// What one page contributes to its run (counted once per page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub contacts_read: u64,
    /// Contacts that mapped to a record (before shared emails are merged).
    pub mapped: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub adjusted: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
    pub failed: BTreeMap<String, u64>,
    /// A reconcile's findings (`drift:<kind>`) and other counters by name.
    pub drift: BTreeMap<String, u64>,
}

impl PageCounts {
    pub fn skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    fn pairs(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("contacts_read".to_owned(), self.contacts_read),
            ("mapped".to_owned(), self.mapped),
            ("inserted".to_owned(), self.inserted),
            ("updated".to_owned(), self.updated),
            ("unchanged".to_owned(), self.unchanged),
            ("adjusted".to_owned(), self.adjusted),
        ];
        v.extend(self.drift.iter().map(|(k, n)| (format!("drift:{k}"), *n)));
        v.extend(
            self.skipped
                .iter()
                .map(|(r, n)| (format!("skipped:{}", r.as_str()), *n)),
        );
        v.extend(self.failed.iter().map(|(c, n)| (format!("failed:{c}"), *n)));
        v.retain(|(_, n)| *n > 0);
        v
    }
}

/// The result of asking for a new run.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    Started(Run),
    /// A run of the tenant is already in progress.
    AlreadyRunning(Run),
}

/// Runs in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RunStore {
    conn: RedisConn,
    namespace: String,
}

fn now_ms() -> u64 {
    crmsync_redis::now_ms()
}

/// `YYYYMMDD-HHMMSS` (UTC) of a time in ms, for readable run ids.
fn stamp(ms: u64) -> String {
    let (y, m, d, rem) = crmsync_redis::when::civil(ms);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl RunStore {
    pub fn new(conn: RedisConn, namespace: impl Into<String>) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
        }
    }

    fn keys(&self, tenant: &str) -> TenantKeys {
        TenantKeys::new(&self.namespace, tenant)
    }

    fn index(&self) -> String {
        format!("{}:runs", self.namespace)
    }

    /// Starts a run for the tenant unless one is in progress.
    pub async fn start(&self, tenant: &str, force: bool) -> Result<StartOutcome, RunError> {
        self.start_kind(tenant, RunKind::Backfill, force, false).await
    }

    /// Starts a reconcile run unless a run of the tenant is active (a backfill or another
    /// reconcile: one run per tenant at a time).
    pub async fn start_reconcile(&self, tenant: &str, dry_run: bool) -> Result<StartOutcome, RunError> {
        self.start_kind(tenant, RunKind::Reconcile, false, dry_run).await
    }

    async fn start_kind(
        &self,
        tenant: &str,
        kind: RunKind,
        force: bool,
        dry_run: bool,
    ) -> Result<StartOutcome, RunError> {
        let now = now_ms();
        let id = match kind {
            RunKind::Backfill => format!("{tenant}-{}-{:04x}", stamp(now), rand::random::<u16>()),
            RunKind::Reconcile => format!("{tenant}-rc-{}-{:04x}", stamp(now), rand::random::<u16>()),
        };
        let k = self.keys(tenant);
        let mut conn = self.conn.clone();
        let (started, run_id): (i64, String) = START
            .key(k.active_run())
            .key(k.run(&id))
            .key(k.runs())
            .key(k.live())
            .arg(&id)
            .arg(now)
            .arg(ACTIVE_TTL.as_millis() as u64)
            .arg(tenant)
            .arg(if force { 1 } else { 0 })
            .arg(kind.as_str())
            .arg(if dry_run { 1 } else { 0 })
            .invoke_async(&mut conn)
            .await?;
        if started < 0 {
            return Err(RunError::NoTenant(tenant.to_owned()));
        }
        if started == 1 {
            let _: () = redis::cmd("HSET")
                .arg(self.index())
                .arg(&run_id)
                .arg(tenant)
                .query_async(&mut conn)
                .await?;
        }
        let run = self.get(tenant, &run_id).await?;
        Ok(if started == 1 {
            StartOutcome::Started(run)
        } else {
            StartOutcome::AlreadyRunning(run)
        })
    }

    /// A run by tenant and id.
    pub async fn get(&self, tenant: &str, run_id: &str) -> Result<Run, RunError> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys(tenant).run(run_id))
            .query_async(&mut conn)
            .await?;
        if fields.is_empty() {
            return Err(RunError::NotFound(run_id.to_owned()));
        }
        Ok(parse_run(fields))
    }

    /// A run by id alone.
    pub async fn find(&self, run_id: &str) -> Result<Run, RunError> {
        let mut conn = self.conn.clone();
        let tenant: Option<String> = redis::cmd("HGET")
            .arg(self.index())
            .arg(run_id)
            .query_async(&mut conn)
            .await?;
        let tenant = tenant.ok_or_else(|| RunError::NotFound(run_id.to_owned()))?;
        self.get(&tenant, run_id).await
    }

    /// The tenant's active run, if any.
    pub async fn active(&self, tenant: &str) -> Result<Option<Run>, RunError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = redis::cmd("GET")
            .arg(self.keys(tenant).active_run())
            .query_async(&mut conn)
            .await?;
        match id {
            Some(id) => Ok(Some(self.get(tenant, &id).await?)),
            None => Ok(None),
        }
    }

    /// The tenant's newest runs, newest first.
    pub async fn list(&self, tenant: &str, limit: usize) -> Result<Vec<Run>, RunError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(self.keys(tenant).runs())
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut conn)
            .await?;
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(r) = self.get(tenant, &id).await {
                runs.push(r);
            }
        }
        Ok(runs)
    }

    /// Counts a page (once) and completes the run after its last page.
    pub async fn record_page(
        &self,
        tenant: &str,
        run_id: &str,
        page: u32,
        has_next: bool,
        counts: &PageCounts,
    ) -> Result<RunStatus, RunError> {
        let k = self.keys(tenant);
        let mut conn = self.conn.clone();
        let mut inv = RECORD.prepare_invoke();
        inv.key(k.run(run_id))
            .key(k.run_pages(run_id))
            .key(k.active_run())
            .key(k.run_emails(run_id))
            .key(k.run_buffered(run_id))
            .arg(page)
            .arg(if has_next { 1 } else { 0 })
            .arg(now_ms())
            .arg(ACTIVE_TTL.as_millis() as u64)
            .arg(run_id);
        for (field, n) in counts.pairs() {
            inv.arg(field).arg(n);
        }
        let (_, status): (i64, String) = inv.invoke_async(&mut conn).await?;
        Ok(RunStatus::parse(&status))
    }

    /// Counts a page of a reconcile's book (once) without ending the run; returns the book's
    /// last page once every page is counted (then the sweep may start: it is the run's last
    /// page).
    /// Safe to call again for a page already counted.
    pub async fn count_book_page(
        &self,
        tenant: &str,
        run_id: &str,
        page: u32,
        has_next: bool,
        counts: &PageCounts,
    ) -> Result<Option<u32>, RunError> {
        let k = self.keys(tenant);
        let mut inv = COUNT_BOOK_PAGE.prepare_invoke();
        inv.key(k.run(run_id))
            .key(k.run_pages(run_id))
            .arg(page)
            .arg(if has_next { 1 } else { 0 })
            .arg(now_ms());
        for (field, n) in counts.pairs() {
            inv.arg(field).arg(n);
        }
        let last: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(u32::try_from(last).ok())
    }

    /// Adds the counts of a step that is not one of the run's pages (a reconcile's CRM read),
    /// once however often the step runs.
    pub async fn count_step(
        &self,
        tenant: &str,
        run_id: &str,
        step: &str,
        counts: &[(String, u64)],
    ) -> Result<bool, RunError> {
        let k = self.keys(tenant);
        let mut inv = COUNT_STEP.prepare_invoke();
        inv.key(k.run(run_id)).key(k.run_pages(run_id)).arg(step).arg(now_ms());
        for (field, n) in counts {
            inv.arg(field).arg(n);
        }
        let n: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(n == 1)
    }

    /// Ends a running run as failed or cancelled; returns whether it was running.
    pub async fn end(&self, tenant: &str, run_id: &str, status: RunStatus, reason: &str) -> Result<bool, RunError> {
        let k = self.keys(tenant);
        let mut conn = self.conn.clone();
        let n: i64 = END
            .key(k.run(run_id))
            .key(k.active_run())
            .arg(status.as_str())
            .arg(now_ms())
            .arg(run_id)
            .arg(reason)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }
}

impl RunStore {
    /// Forgets a removed tenant's runs in the fleet-wide run index (its own keys are purged
    /// with the tenant); returns how many.
    pub async fn forget_tenant(&self, tenant: &str) -> Result<u64, RunError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys(tenant).runs())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut n = 0;
        for chunk in ids.chunks(500) {
            let d: u64 = redis::cmd("HDEL")
                .arg(self.index())
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            n += d;
        }
        Ok(n)
    }
}

fn parse_run(fields: Vec<(String, String)>) -> Run {
    let mut run = Run {
        id: String::new(),
        tenant: String::new(),
        kind: RunKind::Backfill,
        dry_run: false,
        status: RunStatus::Running,
        started_at_ms: 0,
        finished_at_ms: None,
        updated_at_ms: 0,
        force: false,
        pages_done: 0,
        last_page: None,
        contacts_read: 0,
        mapped: 0,
        inserted: 0,
        updated: 0,
        deleted: 0,
        unchanged: 0,
        adjusted: 0,
        skipped: BTreeMap::new(),
        failed: BTreeMap::new(),
        calls: 0,
        credits: 0,
        drift: BTreeMap::new(),
        error: None,
    };
    for (k, v) in fields {
        let n = || v.parse::<u64>().unwrap_or(0);
        match k.as_str() {
            "id" => run.id = v.clone(),
            "tenant" => run.tenant = v.clone(),
            "kind" if v == "reconcile" => run.kind = RunKind::Reconcile,
            "dry_run" => run.dry_run = v == "1",
            "status" => run.status = RunStatus::parse(&v),
            "started_at" => run.started_at_ms = n(),
            "finished_at" => run.finished_at_ms = Some(n()),
            "updated_at" => run.updated_at_ms = n(),
            "force" => run.force = v == "1",
            "pages_done" => run.pages_done = n(),
            "last_page" => run.last_page = v.parse::<i64>().ok().filter(|l| *l >= 0).map(|l| l as u64),
            "contacts_read" => run.contacts_read = n(),
            "mapped" => run.mapped = n(),
            "inserted" => run.inserted = n(),
            "updated" => run.updated = n(),
            "deleted" => run.deleted = n(),
            "unchanged" => run.unchanged = n(),
            "adjusted" => run.adjusted = n(),
            // `zoho_calls`: the name before the sink seam.
            "calls" | "zoho_calls" => run.calls += n(),
            "credits" => run.credits += n(),
            // shared with other sources' records in the same calls, in thousandths
            "credits_milli" => run.credits += (n() + 500) / 1000,
            "error" if !v.is_empty() => run.error = Some(v.clone()),
            other => {
                if let Some(d) = other.strip_prefix("drift:") {
                    run.drift.insert(d.to_owned(), n());
                } else if let Some(r) = other.strip_prefix("skipped:") {
                    run.skipped.insert(r.to_owned(), n());
                } else if let Some(c) = other.strip_prefix("failed:") {
                    run.failed.insert(c.to_owned(), n());
                }
            }
        }
    }
    run
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(super::stamp(0), "19700101-000000");
        assert_eq!(super::stamp(1_795_405_971_000), "20261123-035251");
        assert_eq!(super::stamp(951_782_400_000), "20000229-000000");
    }
}
