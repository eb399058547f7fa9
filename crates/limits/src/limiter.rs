//! The limiter itself.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crmsync_redis::when::until_text;
use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::{DestKeys, LIVE_GUARD, Tenant, TenantKeys, is_gone};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use redis::Script;
use serde::Serialize;
use tracing::{debug, info, warn};

pub use crmsync_sink::Priority;
use crmsync_sink::Usage;

/// The limiter's shared Lua (ledger, rate, leases, AIMD, retry budget), in front of each script.
const LIB: &str = include_str!("scripts/lib.lua");

/// A script that writes a destination's keys: it starts with the live-destination guard, so
/// its last key and argument must be the tenant's live key and the destination.
fn guarded(src: &str) -> Script {
    Script::new(&format!("{LIVE_GUARD}{LIB}\n{src}"))
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/acquire.lua")));
static LEASE: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/lease.lua")));
static RATE: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/rate.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/finish.lua")));
static RELEASE: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/release.lua")));
static PEEK: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/peek.lua")));
static RETRY_BUDGET: LazyLock<Script> = LazyLock::new(|| guarded(include_str!("scripts/retry_budget.lua")));
/// GCRA pacing of keys that belong to no tenant (Nylas grants): no guard.
static PACE: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{LIB}\n{}", include_str!("scripts/rate.lua"))));

/// Adds the guard's key and argument (last) to an invocation.
fn guard<'a>(inv: &'a mut redis::ScriptInvocation<'static>, d: &DestKeys) -> &'a mut redis::ScriptInvocation<'static> {
    inv.key(d.live()).arg(d.dest())
}

/// Room the fleet-wide rate leaves between a call and the one `rps` calls before it beyond the
/// second, for a send that leaves a little late: no second as the CRM counts ever holds more
/// than `rps` calls.
const RATE_MARGIN_MS: u64 = 50;
/// While change-feed records wait, a backfill call takes a rate slot only this far ahead (and
/// asks again when one is that close): the feed's calls, asking later, are not queued behind
/// every backfill call already holding a slot.
const BACKFILL_RATE_AHEAD_MS: u64 = 250;

/// A call waiting for its budget checks again at least this often.
const BUDGET_RECHECK_MS: u64 = 300_000;

/// The rolling window of Zoho's credit allowance.
pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// Buckets per window (per-minute buckets for a 24-hour window).
const BUCKETS: u64 = 1440;
/// Share of the allowed credits backfill leaves to change-feed work.
const CHANGE_FEED_HEADROOM: f64 = 0.10;
/// A cooldown this short is waited out in place; a longer one defers the job.
const INLINE_COOLDOWN: Duration = Duration::from_secs(2);
/// AIMD: the rate factor grows by this per success and halves per 429 (at most once a second),
/// never below the minimum.
const AIMD_STEP: f64 = 0.02;
const AIMD_MIN: f64 = 0.1;
/// 429 backoff without Retry-After: full jitter over 0.5 s · 2^streak, at most 60 s.
const BACKOFF_BASE_MS: u64 = 500;
const BACKOFF_CAP_MS: u64 = 60_000;
/// Retry budget: each success deposits a fifth of a retry; 1 retry a second refills; at most 50.
const RETRY_DEPOSIT: f64 = 0.2;
const RETRY_REFILL_PER_SEC: f64 = 1.0;
const RETRY_MAX: f64 = 50.0;
/// How long a minute's 429 counter is kept: the dashboard charts the last hour; a day and an
/// hour leave room for a longer chart.
const THROTTLED_TTL_SECS: u64 = 25 * 3600;
/// A minute, the resolution of the 429 counters.
const MINUTE_MS: u64 = 60_000;

/// What the limiter needs to know about a tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    pub daily_credits: u64,
    pub budget_share: f64,
    pub requests_per_second: f64,
    pub concurrency: u32,
}

impl LimitSettings {
    pub fn of(t: &Tenant) -> Self {
        Self {
            daily_credits: t.daily_credits,
            budget_share: t.budget_share,
            requests_per_second: t.requests_per_second,
            concurrency: t.effective_concurrency(),
        }
    }

    /// From a tenant's public view (`TenantStore::view`, no secret key needed).
    pub fn of_view(view: &serde_json::Value) -> Self {
        let edition = view["edition"].as_str().and_then(crmsync_tenants::Edition::parse);
        Self {
            daily_credits: view["daily_credits"].as_u64().unwrap_or(0),
            budget_share: view["budget_share"].as_f64().unwrap_or(0.8),
            requests_per_second: view["requests_per_second"]
                .as_f64()
                .unwrap_or(crmsync_tenants::DEFAULT_RPS),
            concurrency: view["concurrency"]
                .as_u64()
                .map(|c| c as u32)
                .or(edition.map(|e| e.concurrency()))
                .unwrap_or(crmsync_tenants::DEFAULT_CONCURRENCY),
        }
    }

    /// Credits crmsync may spend in any window.
    pub fn allowed(&self) -> u64 {
        (self.daily_credits as f64 * self.budget_share).floor() as u64
    }
}

/// Whose spend keeps a tenant out of its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// crmsync's own spend reached the share: it resumes when enough of it leaves the window.
    Ours,
    /// The org's other integrations filled the share: it resumes when enough credits leave
    /// the window (booked when seen: they may leave sooner).
    Account,
    /// The org's other integrations filled the share and nothing of ours leaves soon: a probe
    /// call reads the org's usage again at `until_ms`.
    Probe,
}

impl BudgetKind {
    fn parse(s: &str) -> BudgetKind {
        match s {
            "account" => BudgetKind::Account,
            "probe" => BudgetKind::Probe,
            _ => BudgetKind::Ours,
        }
    }
}

/// Why a call may not be made now.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// The share of the org's daily allowance is used until `until_ms`: `used` by crmsync,
    /// `others` by the org's other integrations.
    Budget {
        until_ms: u64,
        used: u64,
        others: u64,
        allowed: u64,
        kind: BudgetKind,
    },
    /// An operator paused the tenant.
    Paused { reason: String },
    /// The CRM answered 429; every worker waits until `until_ms`.
    Cooldown { until_ms: u64 },
    /// No concurrency slot came free in time.
    Busy,
    /// The call costs more than the whole allowance: it can never be made.
    TooLarge { cost: u64, allowed: u64 },
    /// The tenant was removed or pointed at another destination meanwhile.
    Gone,
    /// The org's other integrations fill the share: read its usage first with a probe call
    /// (see [`crmsync_sink::SinkRequest::probe`]), then ask again.
    Probe,
}

impl Wait {
    /// When to try again (a manual pause is re-checked every 15 s; a budget pause at least
    /// every 5 minutes, in case its settings changed while the call was on its way: a raise
    /// wakes the writes that wait, but not one still running then).
    pub fn retry_at_ms(&self) -> u64 {
        let now = now_ms();
        match self {
            Wait::Budget { until_ms, .. } => (*until_ms).clamp(now + 100, now + BUDGET_RECHECK_MS),
            Wait::Cooldown { until_ms } => (*until_ms).max(now + 100),
            Wait::Paused { .. } => now + 15_000,
            Wait::Busy | Wait::Gone | Wait::Probe => now + 1_000,
            Wait::TooLarge { .. } => now + 3_600_000,
        }
    }

    pub fn reason(&self) -> String {
        let now = now_ms();
        match self {
            Wait::Budget {
                until_ms,
                used,
                others,
                allowed,
                kind,
            } => {
                let until = until_text(*until_ms, now);
                match kind {
                    BudgetKind::Ours => {
                        format!("budget spent: crmsync used {used} of the {allowed} allowed; paused {until}")
                    }
                    BudgetKind::Account => format!(
                        "the org's budget is used: its other integrations used {others}, crmsync {used}, of the {allowed} allowed; paused {until}"
                    ),
                    BudgetKind::Probe => format!(
                        "the org's budget is used: its other integrations used {others}, crmsync {used}, of the {allowed} allowed; reading the org's usage again {}",
                        until.trim_start_matches("until ")
                    ),
                }
            }
            Wait::Paused { reason } => format!("tenant paused by an operator: {reason}"),
            Wait::Cooldown { until_ms } => format!("the CRM answered 429; cooling down {}", until_text(*until_ms, now)),
            Wait::Busy => "no concurrency slot free".into(),
            Wait::TooLarge { cost, allowed } => {
                format!("a call of {cost} credits exceeds the whole allowance of {allowed}")
            }
            Wait::Gone => "the tenant was removed or pointed at another destination".into(),
            Wait::Probe => "the org's other integrations fill the budget; reading its usage".into(),
        }
    }
}

/// What a call asks of the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Units of the daily allowance (credits, requests).
    pub cost: u64,
    /// A narrower concurrency limit of the call's class, if any.
    pub cap: Option<u32>,
    pub priority: Priority,
    /// The caller can make a probe call when told to ([`Wait::Probe`]).
    pub can_probe: bool,
    /// A probe: reserved whatever the cap (it is how the cap is learned again).
    pub force: bool,
}

impl Ask {
    pub fn new(cost: u64, cap: Option<u32>, priority: Priority) -> Self {
        Self {
            cost,
            cap,
            priority,
            can_probe: false,
            force: false,
        }
    }
}

/// The right to make one call. Give it back with [`Limiter::finish`]; a permit dropped
/// without it (a cancelled or panicking call) gives its leases and its reservation back by
/// itself, in the background.
pub struct Permit {
    keys: DestKeys,
    cost: u64,
    bucket: i64,
    /// The permit's id: its place among the calls in flight, and its lease's id.
    id: String,
    /// Whether it holds the destination's lease, and the capped class's lease.
    leased: bool,
    capped: Option<String>,
    waited: Waited,
    /// Set until finished: who to give everything back to if the permit is dropped.
    owner: Option<Limiter>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("dest", &self.keys.prefix())
            .field("cost", &self.cost)
            .field("bucket", &self.bucket)
            .field("leased", &self.leased)
            .field("capped", &self.capped)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(limiter) = self.owner.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime left: the leases expire by themselves
        };
        let permit = Permit {
            keys: self.keys.clone(),
            cost: self.cost,
            bucket: self.bucket,
            id: self.id.clone(),
            leased: std::mem::take(&mut self.leased),
            capped: self.capped.take(),
            waited: self.waited,
            owner: None,
        };
        rt.spawn(async move {
            if let Err(error) = limiter.give_back(permit).await {
                warn!(%error, "Could not give back a dropped permit; its leases expire by themselves");
            }
        });
    }
}

impl Permit {
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// What the acquisition waited for before it was granted.
    pub fn waited(&self) -> Waited {
        self.waited
    }
}

/// What an acquisition waited for (in place, without deferring the job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waited {
    /// A short shared 429 cooldown.
    pub cooldown: bool,
    /// The fleet-wide rate (GCRA) or the process's local smoother (governor).
    pub rate: bool,
    /// A concurrency lease (or a sub-concurrency lease for a complex call).
    pub concurrency: bool,
}

/// How a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The CRM answered (anything but 429), saying what it said of the org's usage.
    Answered { usage: Option<Usage> },
    /// 429 (the CRM does not charge it).
    Throttled {
        retry_after: Option<Duration>,
        usage: Option<Usage>,
    },
    /// The request was never sent: its credits go back.
    NotSent,
    /// Sent without an answer (timeout, 5xx): its credits stay spent, as the CRM may have
    /// charged.
    Failed,
}

/// An operator's pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub reason: String,
    pub since_ms: u64,
}

/// A tenant's budget as `crmsync budget` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    pub tenant: String,
    /// Credits crmsync used in the current window.
    pub used: u64,
    /// Credits the org's other integrations used in the window, as the CRM last reported.
    pub others: u64,
    /// When the CRM last reported the org's usage, and what it said (all integrations).
    pub reading_ms: Option<u64>,
    pub org_used: Option<u64>,
    /// Credits crmsync may use in a window: share × daily.
    pub allowed: u64,
    pub daily_credits: u64,
    pub budget_share: f64,
    /// When the oldest credits in the window return, and how many.
    pub next_return_ms: Option<u64>,
    pub next_return_credits: u64,
    /// Paused by an operator.
    pub paused: Option<Pause>,
    /// Paused for budget until then, and whose spend it is.
    pub budget_paused_until_ms: Option<u64>,
    pub budget_kind: Option<BudgetKind>,
    /// A 429 cooldown until then.
    pub cooldown_until_ms: Option<u64>,
    /// The AIMD factor on rate and concurrency (1 = full).
    pub rate_factor: f64,
    pub requests_per_second: f64,
    pub concurrency: u32,
}

/// A tenant's credit ledger as it stands, read without changing it (for charts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// Width of a bucket: the window / 1440 (a minute for a 24-hour window).
    pub bucket_ms: u64,
    pub window_ms: u64,
    /// Credits crmsync booked per bucket still in the window: (bucket start ms, credits),
    /// oldest first. Their sum is what [`Limiter::budget`] reports as used.
    pub buckets: Vec<(u64, u64)>,
    /// The org's other integrations' credits, as booked when the CRM reported them.
    pub others: Vec<(u64, u64)>,
}

impl Ledger {
    /// Credits used in the window.
    pub fn used(&self) -> u64 {
        self.buckets.iter().map(|(_, c)| c).sum()
    }
}

/// A lease's id: random, so two holders never share one.
fn lease_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Per-process smoothers by tenant, with the period they were built for.
type LocalLimiters = Arc<Mutex<HashMap<String, (u64, Arc<DefaultDirectRateLimiter>)>>>;

/// The fleet-wide limiter. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Limiter {
    conn: RedisConn,
    namespace: String,
    window: Duration,
    lease_ttl: Duration,
    max_lease_wait: Duration,
    local: LocalLimiters,
    org_max: OrgMax,
}

/// The daily allowance each destination's CRM last reported (Salesforce's `Sforce-Limit-Info`
/// MAX), with when this process last read it from Redis.
type OrgMax = Arc<Mutex<HashMap<String, (Option<u64>, Instant)>>>;
/// How long a process trusts its copy of the org's reported allowance.
const ORG_MAX_TTL: Duration = Duration::from_secs(60);

impl Limiter {
    pub fn new(conn: RedisConn, namespace: impl Into<String>) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
            window: DAY,
            lease_ttl: Duration::from_secs(60),
            max_lease_wait: Duration::from_secs(30),
            local: Arc::default(),
            org_max: Arc::default(),
        }
    }

    /// Another window length (tests against a simulator whose day is compressed).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(BUCKETS));
        self
    }

    /// How long a lease lives if its holder dies (longer than a Zoho request can take).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long a call waits for a concurrency slot before it is deferred.
    pub fn with_max_lease_wait(mut self, wait: Duration) -> Self {
        self.max_lease_wait = wait;
        self
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The keys of a tenant's destination.
    pub fn keys(&self, tenant: &str, dest: &str) -> DestKeys {
        TenantKeys::new(&self.namespace, tenant).dest(dest)
    }

    /// Width of a credit bucket (window / 1440).
    pub fn bucket_ms(&self) -> u64 {
        (self.window.as_millis() as u64 / BUCKETS).max(1)
    }

    /// Waits for everything needed to make one call of `cost` credits (and, for a call of a
    /// capped class, a lease among at most `cap`), or says why not.
    pub async fn acquire(
        &self,
        k: &DestKeys,
        s: &LimitSettings,
        cost: u64,
        cap: Option<u32>,
        priority: Priority,
    ) -> Result<Result<Permit, Wait>, redis::RedisError> {
        self.acquire_with(k, s, Ask::new(cost, cap, priority)).await
    }

    /// [`Limiter::acquire`] with every option ([`Ask`]).
    pub async fn acquire_with(
        &self,
        k: &DestKeys,
        s: &LimitSettings,
        ask: Ask,
    ) -> Result<Result<Permit, Wait>, redis::RedisError> {
        let s = match self.effective(k, s).await {
            Err(e) if is_gone(&e) => return Ok(Err(Wait::Gone)),
            other => other?,
        };
        match self.try_acquire(k, &s, ask).await {
            Err(e) if is_gone(&e) => Ok(Err(Wait::Gone)),
            other => other,
        }
    }

    /// The settings as the CRM counts them: a daily allowance the CRM reported (Salesforce sends
    /// it on every answer) replaces the configured one. Read from Redis at most once a minute
    /// per process; this process's own readings update it at once.
    pub async fn effective(&self, k: &DestKeys, s: &LimitSettings) -> Result<LimitSettings, redis::RedisError> {
        let known = {
            let m = self.org_max.lock().unwrap_or_else(|p| p.into_inner());
            m.get(k.prefix())
                .filter(|(_, at)| at.elapsed() < ORG_MAX_TTL)
                .map(|(max, _)| *max)
        };
        let max = match known {
            Some(max) => max,
            None => {
                let max: Option<u64> = redis::cmd("HGET")
                    .arg(k.account())
                    .arg("max")
                    .query_async(&mut self.conn.clone())
                    .await?;
                self.remember_max(k, max);
                max
            }
        };
        let mut s = *s;
        if let Some(max) = max.filter(|m| *m > 0) {
            s.daily_credits = max;
        }
        Ok(s)
    }

    fn remember_max(&self, k: &DestKeys, max: Option<u64>) {
        let mut m = self.org_max.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(k.prefix().to_owned(), (max, Instant::now()));
    }

    /// How often a tenant kept out by the org's other integrations may probe: probes spend at
    /// most 1% of the daily allowance a day, never more often than every 5 minutes nor less
    /// often than hourly (in this limiter's window: shorter against a compressed day).
    pub fn probe_interval(&self, s: &LimitSettings) -> Duration {
        let window = self.window.as_millis() as f64;
        let by_cost = window / (s.daily_credits as f64 * 0.01).max(1.0);
        Duration::from_millis(by_cost.clamp(window * 5.0 / 1440.0, window / 24.0) as u64)
    }

    async fn try_acquire(
        &self,
        k: &DestKeys,
        s: &LimitSettings,
        ask: Ask,
    ) -> Result<Result<Permit, Wait>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let mut waited = Waited::default();
        let allowed = s.allowed();
        let cost = ask.cost;
        let headroom = match ask.priority {
            Priority::Change => 0,
            Priority::Backfill => (allowed as f64 * CHANGE_FEED_HEADROOM).ceil() as u64,
        };
        let rate_ahead = match ask.priority {
            Priority::Change => 0,
            Priority::Backfill => BACKFILL_RATE_AHEAD_MS,
        };
        let mut later = 0u64;
        let ttl_ms = self.lease_ttl.as_millis() as u64;
        let probe_ms = if ask.can_probe {
            self.probe_interval(s).as_millis() as u64
        } else {
            0
        };
        // The local smoother first: a wait after the fleet's slot would bunch calls up.
        let local = self.local_limiter(k.prefix(), s.requests_per_second);
        if local.check().is_err() {
            waited.rate = true;
            local.until_ready().await;
        }
        // Everything at once (`acquire.lua`); a short 429 cooldown is waited out in place.
        let id = lease_id();
        let (mut permit, rate_wait) = loop {
            let capped = ask.cap.map(|_| lease_id());
            let mut inv = ACQUIRE.prepare_invoke();
            inv.key(k.tenant().pause())
                .key(k.cooldown())
                .key(k.ledger())
                .key(k.ledger_index())
                .key(k.feed_waiting())
                .key(k.budget_pause())
                .key(k.rate())
                .key(k.aimd())
                .key(k.leases())
                .key(k.complex_leases())
                .key(k.in_flight_credits())
                .key(k.account())
                .arg(now_ms())
                .arg(cost)
                .arg(allowed)
                .arg(self.window.as_millis() as u64)
                .arg(self.bucket_ms())
                .arg(headroom)
                .arg(s.requests_per_second)
                .arg(ttl_ms)
                .arg(s.concurrency)
                .arg(ask.cap.unwrap_or(0))
                .arg(&id)
                .arg(capped.as_deref().unwrap_or(""))
                .arg(if ask.force { 1 } else { 0 })
                .arg(probe_ms)
                .arg(RATE_MARGIN_MS)
                .arg(rate_ahead);
            let answer: Vec<redis::Value> = guard(&mut inv, k).invoke_async(&mut conn).await?;
            let field = |i: usize| {
                answer
                    .get(i)
                    .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            };
            let num = |i: usize| field(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0) as u64;
            match field(0).as_deref() {
                Some("paused") => {
                    return Ok(Err(Wait::Paused {
                        reason: field(1).unwrap_or_default(),
                    }));
                }
                Some("cooldown") => {
                    let until = num(1);
                    let left = Duration::from_millis(until.saturating_sub(now_ms()));
                    if left > INLINE_COOLDOWN {
                        return Ok(Err(Wait::Cooldown { until_ms: until }));
                    }
                    waited.cooldown = true;
                    tokio::time::sleep(left).await;
                }
                Some("too_large") => return Ok(Err(Wait::TooLarge { cost, allowed })),
                Some("probe") => return Ok(Err(Wait::Probe)),
                Some("budget") => {
                    let wait = Wait::Budget {
                        until_ms: num(1),
                        used: num(2),
                        others: num(3),
                        allowed,
                        kind: BudgetKind::parse(&field(4).unwrap_or_default()),
                    };
                    debug!(dest = %k.prefix(), cost, ?wait, "Budget used; pausing");
                    return Ok(Err(wait));
                }
                Some("ok") => {
                    let rate_wait = field(2).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
                    // -2: leased, but the feed's calls go first: ask the rate again later.
                    let leased = rate_wait >= 0 || rate_wait == -2;
                    if rate_wait == -2 {
                        later = num(3);
                    }
                    break (
                        Permit {
                            keys: k.clone(),
                            cost,
                            bucket: num(1) as i64,
                            id: id.clone(),
                            leased,
                            capped: if leased { capped } else { None },
                            waited,
                            owner: Some(self.clone()),
                        },
                        rate_wait,
                    );
                }
                other => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected answer of acquire.lua",
                        format!("{other:?}"),
                    )));
                }
            }
        };
        // No lease was free: the reservation stays; retry the leases alone, then take the
        // rate's slot.
        let rate_wait = if rate_wait >= 0 {
            rate_wait as u64
        } else if rate_wait == -2 {
            self.rate_slot(k, s, later, rate_ahead, &mut permit).await?
        } else {
            let started = now_ms();
            loop {
                if now_ms() - started > self.max_lease_wait.as_millis() as u64 {
                    self.finish(permit, s, CallOutcome::NotSent).await?;
                    return Ok(Err(Wait::Busy));
                }
                permit.waited.concurrency = true;
                tokio::time::sleep(Duration::from_millis(rand::random_range(10..40))).await;
                let capped = ask.cap.map(|_| lease_id());
                let mut inv = LEASE.prepare_invoke();
                inv.key(k.leases())
                    .key(k.complex_leases())
                    .key(k.aimd())
                    .arg(now_ms())
                    .arg(ttl_ms)
                    .arg(s.concurrency)
                    .arg(&permit.id)
                    .arg(ask.cap.unwrap_or(0))
                    .arg(capped.as_deref().unwrap_or(""));
                let got: i64 = guard(&mut inv, k).invoke_async(&mut conn).await?;
                if got == 1 {
                    permit.leased = true;
                    permit.capped = capped;
                    break;
                }
            }
            self.rate_slot(k, s, 0, rate_ahead, &mut permit).await?
        };
        if rate_wait > 0 {
            permit.waited.rate = true;
            tokio::time::sleep(Duration::from_millis(rate_wait)).await;
        }
        Ok(Ok(permit))
    }

    /// Takes the fleet's next rate slot (`rate.lua`), first waiting `later` ms; a backfill
    /// call (`ahead` > 0) that change-feed calls should precede is told to ask again.
    async fn rate_slot(
        &self,
        k: &DestKeys,
        s: &LimitSettings,
        mut later: u64,
        ahead: u64,
        permit: &mut Permit,
    ) -> Result<u64, redis::RedisError> {
        let mut conn = self.conn.clone();
        loop {
            if later > 0 {
                permit.waited.rate = true;
                tokio::time::sleep(Duration::from_millis(later.min(5_000))).await;
            }
            let mut inv = RATE.prepare_invoke();
            inv.key(k.rate())
                .key(k.aimd())
                .key(k.feed_waiting())
                .arg(s.requests_per_second)
                .arg(RATE_MARGIN_MS)
                .arg(ahead);
            let wait: i64 = guard(&mut inv, k).invoke_async(&mut conn).await?;
            if wait >= 0 {
                return Ok(wait as u64);
            }
            later = wait.unsigned_abs();
        }
    }

    fn local_limiter(&self, tenant: &str, rps: f64) -> Arc<DefaultDirectRateLimiter> {
        let period_ns = (1e9 / rps.max(0.001)) as u64;
        let mut map = match self.local.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((p, l)) = map.get(tenant)
            && *p == period_ns
        {
            return l.clone();
        }
        let quota = Quota::with_period(Duration::from_nanos(period_ns.max(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN.saturating_add(1));
        let l = Arc::new(RateLimiter::direct(quota));
        map.insert(tenant.to_owned(), (period_ns, l.clone()));
        l
    }

    /// Gives back everything a permit holds when its call was never sent: its leases and its
    /// reservation.
    async fn give_back(&self, mut permit: Permit) -> Result<(), redis::RedisError> {
        permit.owner = None;
        let k = permit.keys.clone();
        let mut inv = RELEASE.prepare_invoke();
        inv.key(k.ledger())
            .key(k.ledger_index())
            .key(k.leases())
            .key(k.complex_leases())
            .key(k.in_flight_credits())
            .arg(permit.bucket)
            .arg(permit.cost)
            .arg(&permit.id)
            .arg(if std::mem::take(&mut permit.leased) { 1 } else { 0 })
            .arg(permit.capped.take().unwrap_or_default());
        match guard(&mut inv, &k).invoke_async::<i64>(&mut self.conn.clone()).await {
            Err(e) if !is_gone(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Gives the permit back with how the call went. On a 429 returns when the shared
    /// cooldown ends.
    pub async fn finish(
        &self,
        mut permit: Permit,
        s: &LimitSettings,
        outcome: CallOutcome,
    ) -> Result<Option<u64>, redis::RedisError> {
        permit.owner = None;
        match self.record(&mut permit, s, outcome).await {
            // The tenant went away meanwhile: there is nothing left to account to.
            Err(e) if is_gone(&e) => Ok(None),
            other => other,
        }
    }

    async fn record(
        &self,
        permit: &mut Permit,
        s: &LimitSettings,
        outcome: CallOutcome,
    ) -> Result<Option<u64>, redis::RedisError> {
        let k = permit.keys.clone();
        let now = now_ms();
        let (name, usage, retry_after) = match outcome {
            CallOutcome::Answered { usage } => ("answered", usage, None),
            CallOutcome::Throttled { retry_after, usage } => ("throttled", usage, retry_after),
            CallOutcome::NotSent => ("not_sent", None, None),
            CallOutcome::Failed => ("failed", None, None),
        };
        // What the CRM said of the org's usage: exactly, or only that it is under half.
        let (used, below): (i64, i64) = match usage {
            Some(Usage::Remaining(r)) => (s.daily_credits.saturating_sub(r) as i64, -1),
            Some(Usage::BelowHalf) => (-1, s.daily_credits.div_ceil(2) as i64),
            Some(Usage::Used { used, .. }) => (used as i64, -1),
            None => (-1, -1),
        };
        let max = match usage {
            Some(Usage::Used { max, .. }) if max > 0 => {
                self.remember_max(&k, Some(max));
                max
            }
            _ => 0,
        };
        let mut inv = FINISH.prepare_invoke();
        inv.key(k.ledger())
            .key(k.ledger_index())
            .key(k.aimd())
            .key(k.cooldown())
            .key(k.throttled(now / MINUTE_MS))
            .key(k.retry_budget())
            .key(k.leases())
            .key(k.complex_leases())
            .key(k.in_flight_credits())
            .key(k.account())
            .arg(now)
            .arg(name)
            .arg(permit.bucket)
            .arg(permit.cost)
            .arg(self.window.as_millis() as u64)
            .arg(self.bucket_ms())
            .arg(&permit.id)
            .arg(if std::mem::take(&mut permit.leased) { 1 } else { 0 })
            .arg(permit.capped.take().unwrap_or_default())
            .arg(used)
            .arg(below)
            .arg(retry_after.map(|d| d.as_millis() as u64).unwrap_or(0))
            .arg(BACKOFF_BASE_MS)
            .arg(BACKOFF_CAP_MS)
            .arg(rand::random_range(0.5..=1.0))
            .arg(AIMD_STEP)
            .arg(AIMD_MIN)
            .arg(THROTTLED_TTL_SECS)
            .arg(RETRY_DEPOSIT)
            .arg(RETRY_REFILL_PER_SEC)
            .arg(RETRY_MAX)
            .arg(max);
        let (others, factor, until): (i64, i64, i64) = guard(&mut inv, &k).invoke_async(&mut self.conn.clone()).await?;
        if used >= 0 && others > 0 {
            debug!(
                dest = %k.prefix(),
                org_used = used,
                others,
                "The CRM reports the org's usage; its other integrations used {others}"
            );
        }
        if !matches!(outcome, CallOutcome::Throttled { .. }) {
            return Ok(None);
        }
        info!(
            dest = %k.prefix(),
            cooldown_until = %until_text(until.max(0) as u64, now),
            rate_factor = factor as f64 / 1000.0,
            "The CRM answered 429; the fleet backs off"
        );
        Ok(Some((until.max(0) as u64).max(now)))
    }

    /// Takes a retry from the destination's retry budget; false when it is spent (retry
    /// later).
    pub async fn retry_allowed(&self, k: &DestKeys) -> Result<bool, redis::RedisError> {
        let mut conn = self.conn.clone();
        let mut inv = RETRY_BUDGET.prepare_invoke();
        inv.key(k.retry_budget())
            .arg(now_ms())
            .arg("withdraw")
            .arg(RETRY_DEPOSIT)
            .arg(RETRY_REFILL_PER_SEC)
            .arg(RETRY_MAX);
        match guard(&mut inv, k).invoke_async::<i64>(&mut conn).await {
            Ok(ok) => Ok(ok == 1),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Paces calls to another API fleet-wide (GCRA at `rps`), e.g. Nylas's 200 requests per
    /// second per grant: takes the next slot and waits for it.
    pub async fn pace(&self, key: &str, rps: f64) -> Result<(), redis::RedisError> {
        let tag = format!("{{{}:pace:{key}}}", self.namespace);
        let mut conn = self.conn.clone();
        let wait: u64 = PACE
            .key(format!("{tag}:rate:log"))
            .key(format!("{tag}:aimd"))
            .arg(rps)
            .arg(RATE_MARGIN_MS)
            .invoke_async(&mut conn)
            .await?;
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        Ok(())
    }

    /// Pauses a tenant (all its CRM calls) until resumed.
    pub async fn pause(&self, tenant: &str, reason: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(TenantKeys::new(&self.namespace, tenant).pause())
            .arg("reason")
            .arg(reason)
            .arg("since")
            .arg(now_ms())
            .query_async(&mut conn)
            .await
    }

    /// Resumes a paused tenant; returns whether it was paused.
    pub async fn resume(&self, tenant: &str) -> Result<bool, redis::RedisError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::cmd("DEL")
            .arg(TenantKeys::new(&self.namespace, tenant).pause())
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// The budget and pause state of a tenant's destination.
    pub async fn budget(&self, k: &DestKeys, s: &LimitSettings) -> Result<Budget, redis::RedisError> {
        let s = &match self.effective(k, s).await {
            Err(e) if is_gone(&e) => *s,
            other => other?,
        };
        let mut conn = self.conn.clone();
        let mut inv = PEEK.prepare_invoke();
        inv.key(k.ledger())
            .key(k.ledger_index())
            .arg(now_ms())
            .arg(self.window.as_millis() as u64)
            .arg(self.bucket_ms());
        let (used, others, next, amount): (i64, i64, i64, i64) = match guard(&mut inv, k).invoke_async(&mut conn).await
        {
            Err(e) if is_gone(&e) => (0, 0, -1, 0),
            other => other?,
        };
        let tenant = k.tenant().id().to_owned();
        type State = (
            HashMap<String, String>,
            (Option<u64>, Option<String>),
            Option<u64>,
            Option<f64>,
            (Option<u64>, Option<u64>),
        );
        let (pause, (budget_until, budget_kind), cooldown, factor, (reading_ms, org_used)): State = redis::pipe()
            .cmd("HGETALL")
            .arg(k.tenant().pause())
            .cmd("HMGET")
            .arg(k.budget_pause())
            .arg("until")
            .arg("kind")
            .cmd("GET")
            .arg(k.cooldown())
            .cmd("HGET")
            .arg(k.aimd())
            .arg("f")
            .cmd("HMGET")
            .arg(k.account())
            .arg("at")
            .arg("org_used")
            .query_async(&mut conn)
            .await?;
        let now = now_ms();
        Ok(Budget {
            tenant,
            used: used.max(0) as u64,
            others: others.max(0) as u64,
            reading_ms,
            org_used,
            allowed: s.allowed(),
            daily_credits: s.daily_credits,
            budget_share: s.budget_share,
            next_return_ms: (next > 0).then_some(next as u64),
            next_return_credits: amount.max(0) as u64,
            paused: (!pause.is_empty()).then(|| Pause {
                reason: pause.get("reason").cloned().unwrap_or_default(),
                since_ms: pause.get("since").and_then(|v| v.parse().ok()).unwrap_or(0),
            }),
            budget_paused_until_ms: budget_until.filter(|u| *u > now),
            budget_kind: budget_until
                .filter(|u| *u > now)
                .and(budget_kind.as_deref().map(BudgetKind::parse)),
            cooldown_until_ms: cooldown.filter(|u| *u > now),
            rate_factor: factor.unwrap_or(1.0),
            requests_per_second: s.requests_per_second,
            concurrency: s.concurrency,
        })
    }

    /// The tenant's credit ledger: credits per bucket still in the rolling window. Read-only
    /// (unlike `budget`, which also drops buckets that left the window): a bucket is live
    /// while `bucket >= current - window / bucket_ms`, as in `reserve.lua`.
    pub async fn ledger(&self, k: &DestKeys) -> Result<Ledger, redis::RedisError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, i64> = redis::cmd("HGETALL").arg(k.ledger()).query_async(&mut conn).await?;
        let bms = self.bucket_ms();
        let window_ms = self.window.as_millis() as u64;
        let oldest_live = (now_ms() / bms).saturating_sub(window_ms / bms);
        let of = |prefix: &str| -> Vec<(u64, u64)> {
            let mut v: Vec<(u64, u64)> = fields
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.parse::<u64>().ok()?, *v)))
                .filter(|(b, v)| *b >= oldest_live && *v > 0)
                .map(|(b, v)| (b * bms, v as u64))
                .collect();
            v.sort_unstable();
            v
        };
        Ok(Ledger {
            bucket_ms: bms,
            window_ms,
            buckets: of("b:"),
            others: of("o:"),
        })
    }

    /// 429s Zoho answered the tenant per minute, for the minutes `from..=to` (epoch minutes,
    /// ms / 60,000); kept 25 hours.
    pub async fn throttled_per_minute(&self, k: &DestKeys, from: u64, to: u64) -> Result<Vec<u64>, redis::RedisError> {
        if to < from {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (from..=to).map(|m| k.throttled(m)).collect();
        let mut conn = self.conn.clone();
        // One MGET: the keys share the tenant's hash tag, hence one Cluster slot.
        let counts: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }
}
