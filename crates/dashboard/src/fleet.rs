//! The fleet's state in one value, read straight from Redis: per queue its depths and
//! last-minute counters, per tenant its pauses, credits, run and change feed and last error,
//! and the workers with their heartbeats.
//!
//! Every read goes out concurrently on the one multiplexed connection, so they travel to Redis
//! pipelined: a status costs about four round trips whatever the number of tenants (tenant
//! ids; then queue stats, dead letters and each tenant's settings; then each tenant's budget,
//! runs, buffer and rejections).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crmsync_limits::{Budget, BudgetKind, LimitSettings, Limiter};
use crmsync_producer::{Run, RunError, RunStore, WriteBuffer};
use crmsync_queue::{Counters, DeadLetter, JobQueue, QueueConfig, QueueError, QueueStats, RedisConn, WorkerStatus};
use crmsync_tenants::{CrmKind, DestKeys, TenantKeys};
use crmsync_tenants::{StoreError, TenantStore};
use futures_util::future::join_all;
use serde::Serialize;

/// Dead letters read per queue to find each tenant's newest one.
const DEAD_LETTERS_SCANNED: usize = 200;

/// The queues of the fleet, in display order.
pub const QUEUES: [&str; 3] = [
    crmsync_producer::BACKFILL_QUEUE,
    crmsync_producer::WRITES_QUEUE,
    crmsync_producer::MAINTENANCE_QUEUE,
];

/// Reading the fleet failed: Redis is unreachable or answered an error (try again), or stored
/// data is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("reading Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("reading a queue: {0}")]
    Queue(#[from] QueueError),
    #[error("reading tenants: {0}")]
    Tenants(#[from] StoreError),
    #[error("reading runs: {0}")]
    Runs(#[from] RunError),
    #[error("reading a write buffer: {0}")]
    Buffer(#[from] crmsync_producer::BufferError),
}

/// One queue's depths and counters (its workers are listed in [`FleetStatus::workers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    pub queue: String,
    /// Jobs not yet delivered to any worker.
    pub pending: u64,
    /// Jobs delivered to a worker and not yet settled.
    pub in_flight: u64,
    /// Jobs waiting for their run-at time (retries, deferrals).
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// When the next delayed job is due, ms.
    pub next_delayed_ms: Option<u64>,
    /// Counters over the last 60 seconds; `done` is the throughput.
    pub last_minute: Counters,
    /// Workers of the queue whose heartbeat is fresh.
    pub workers_alive: usize,
}

impl From<&QueueStats> for QueueStatus {
    fn from(s: &QueueStats) -> Self {
        Self {
            queue: s.queue.clone(),
            pending: s.pending,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead: s.dead,
            next_delayed_ms: s.next_delayed_ms,
            last_minute: s.last_minute.clone(),
            workers_alive: s.workers.iter().filter(|w| w.alive).count(),
        }
    }
}

/// A worker of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetWorker {
    pub queue: String,
    #[serde(flatten)]
    pub worker: WorkerStatus,
}

/// Why no Zoho call is made for a tenant now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pause {
    /// `crmsync pause`: until `crmsync resume`.
    Operator { reason: String, since_ms: u64 },
    /// The share of the org's daily allowance is used: by crmsync (`whose: ours`) or by the
    /// org's other integrations (`account`; `probe`: crmsync reads the org's usage again at
    /// `until_ms`); work resumes by itself.
    Budget {
        until_ms: u64,
        used: u64,
        others: u64,
        allowed: u64,
        whose: BudgetKind,
    },
    /// The CRM answered 429; every worker waits.
    Cooldown { until_ms: u64 },
    /// The tenant's writes wait for something else: Zoho's token-request window
    /// (`TOKEN_REQUESTS_EXHAUSTED`), a dead authorization (re-authorize), the CRM unreachable.
    Blocked {
        code: String,
        reason: String,
        until_ms: Option<u64>,
        since_ms: u64,
    },
}

impl Pause {
    /// A short label: `operator`, `budget`, `429`.
    pub fn label(&self) -> &'static str {
        match self {
            Pause::Operator { .. } => "operator",
            Pause::Budget { .. } => "budget",
            Pause::Cooldown { .. } => "429",
            Pause::Blocked { .. } => "blocked",
        }
    }

    /// Why, in words.
    pub fn why(&self) -> String {
        match self {
            Pause::Operator { reason, .. } => reason.clone(),
            Pause::Budget {
                used,
                others,
                allowed,
                whose: BudgetKind::Ours,
                ..
            } => format!("budget used: crmsync used {used} of {allowed} (others {others})"),
            Pause::Budget {
                used, others, allowed, ..
            } => {
                format!("the org's budget is used: its other integrations used {others}, crmsync {used}, of {allowed}")
            }
            Pause::Cooldown { .. } => "the CRM answered 429".into(),
            Pause::Blocked { code, reason, .. } => format!("{reason} ({code})"),
        }
    }

    /// When it ends by itself (an operator's pause never does).
    pub fn until_ms(&self) -> Option<u64> {
        match self {
            Pause::Operator { .. } => None,
            Pause::Budget { until_ms, .. } | Pause::Cooldown { until_ms } => Some(*until_ms),
            Pause::Blocked { until_ms, .. } => *until_ms,
        }
    }
}

/// Credits used and allowed in the rolling window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credits {
    /// Used by crmsync in the rolling window.
    pub used: u64,
    /// Used by the org's other integrations, as the CRM last reported (see `reading_ms`).
    pub others: u64,
    pub reading_ms: Option<u64>,
    /// share × daily credits.
    pub allowed: u64,
    pub daily_credits: u64,
    pub budget_share: f64,
    /// (used + others) / allowed, in percent.
    pub percent: f64,
    /// When the oldest credits in the window return, and how many.
    pub next_return_ms: Option<u64>,
    pub next_return_credits: u64,
    /// What the CRM counts: `credits` (Zoho) or `requests` (Salesforce).
    pub unit: &'static str,
}

/// A run with its progress, pages read and records written counted apart: a run whose every
/// page is read may still have most of its records to write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: Run,
    /// Pages done over pages known, 0 to 1 (once the last page is known).
    pub progress: Option<f64>,
    pub pages: Pages,
    pub records: Records,
}

/// A run's pages: read, and how many there are once the last one is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pages {
    pub done: u64,
    pub total: Option<u64>,
}

/// A run's records as the CRM sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Records {
    /// Inserted, updated or deleted in the CRM.
    pub written: u64,
    /// Read, equal to what crmsync last wrote: nothing to write.
    pub unchanged: u64,
    /// Read and waiting in the write buffer (or in a flush).
    pub waiting: u64,
    /// Refused by the CRM (see `crmsync rejected list`).
    pub rejected: u64,
}

impl Records {
    /// Written over written and waiting (what the records bar shows; refused records are
    /// neither, and are shown apart), 0 to 1; None when nothing is to be written.
    pub fn fraction(&self) -> Option<f64> {
        let all = self.written + self.waiting;
        (all > 0).then(|| self.written as f64 / all as f64)
    }
}

impl RunView {
    /// A run and how many of its records wait in the write buffer.
    pub fn new(run: Run, waiting: u64) -> Self {
        Self {
            progress: run.progress(),
            pages: Pages {
                done: run.pages_done,
                total: run.last_page.map(|l| l + 1),
            },
            records: Records {
                written: run.inserted + run.updated + run.deleted,
                unchanged: run.unchanged,
                waiting,
                rejected: run.failed_total(),
            },
            run,
        }
    }
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        Self::new(run, 0)
    }
}

/// What a tenant is doing now, in one word, with why and until when: what the State column
/// and `crmsync status` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantState {
    pub kind: StateKind,
    /// A short text for people (`paused`, `org budget`, `stalled`, ...).
    pub label: String,
    pub reason: Option<String>,
    pub since_ms: Option<u64>,
    /// When it ends by itself (None: it does not, or it is not known).
    pub until_ms: Option<u64>,
}

/// The kinds of [`TenantState`], most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Its stored settings cannot be read.
    Unreadable,
    /// Paused by an operator, until resumed.
    Paused,
    /// Its share of the org's budget is used; goes on by itself.
    Budget,
    /// The CRM answered 429; every worker waits a moment.
    Cooldown,
    /// Its writes wait for something else (token window, authorization, CRM unreachable).
    Waiting,
    /// A run is active but nothing moved for [`STALL_AFTER`].
    Stalled,
    /// A run is active, or records wait to be written.
    Running,
    /// Its last run failed (and none runs now).
    Failed,
    /// Nothing to do.
    Idle,
}

/// An active run that neither read a page nor wrote a record for this long, with nothing
/// pausing it, is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(300);

impl TenantState {
    fn of(pauses: &[Pause], run: Option<&RunView>, last_run: Option<&RunView>, waiting: u64, now: u64) -> Self {
        let state = |kind, label: &str, reason: Option<String>, since_ms, until_ms| TenantState {
            kind,
            label: label.to_owned(),
            reason,
            since_ms,
            until_ms,
        };
        if let Some(p) = pauses.first() {
            return match p {
                Pause::Operator { reason, since_ms } => {
                    state(StateKind::Paused, "paused", Some(reason.clone()), Some(*since_ms), None)
                }
                Pause::Budget { whose, until_ms, .. } => state(
                    StateKind::Budget,
                    if *whose == BudgetKind::Ours {
                        "budget used"
                    } else {
                        "org budget used"
                    },
                    Some(p.why()),
                    None,
                    Some(*until_ms),
                ),
                Pause::Cooldown { until_ms } => state(
                    StateKind::Cooldown,
                    "429 cooldown",
                    Some(p.why()),
                    None,
                    Some(*until_ms),
                ),
                Pause::Blocked { since_ms, until_ms, .. } => {
                    state(StateKind::Waiting, "waiting", Some(p.why()), Some(*since_ms), *until_ms)
                }
            };
        }
        if let Some(r) = run {
            let quiet = now.saturating_sub(r.run.updated_at_ms);
            if quiet >= STALL_AFTER.as_millis() as u64 {
                return state(
                    StateKind::Stalled,
                    "stalled",
                    Some(format!(
                        "no page read and no record written since {} (are workers running? see the Workers table)",
                        crmsync_redis::when::ago_text(r.run.updated_at_ms, now)
                    )),
                    Some(r.run.updated_at_ms),
                    None,
                );
            }
            let what = if r.run.status == crmsync_producer::RunStatus::Draining {
                "writing"
            } else {
                "running"
            };
            return state(StateKind::Running, what, None, Some(r.run.started_at_ms), None);
        }
        if waiting > 0 {
            return state(StateKind::Running, "writing", None, None, None);
        }
        if let Some(l) = last_run.filter(|l| l.run.status == crmsync_producer::RunStatus::Failed) {
            return state(
                StateKind::Failed,
                "last run failed",
                Some(l.run.error.clone().unwrap_or_else(|| "the run failed".into())),
                l.run.finished_at_ms,
                None,
            );
        }
        state(StateKind::Idle, "idle", None, None, None)
    }
}

/// The tenant's write buffer and change-feed counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feed {
    /// Buffered records waiting for a flush (backfill and change feed).
    pub waiting: u64,
    /// Of which change-feed records.
    pub changes_waiting: u64,
    /// Contacts to re-read from Nylas.
    pub refresh: u64,
    /// The change feed's counters (`changes`, `unchanged`, `inserted`, ...).
    pub stats: BTreeMap<String, u64>,
}

/// Where a tenant's last error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    /// A backfill run failed (a page failed for good).
    Run,
    /// A job of the tenant was dead-lettered.
    DeadLetter,
    /// Zoho rejected a record.
    Rejected,
}

/// The newest of: the newest run's error, the tenant's newest dead letter (among the newest
/// 200 of each queue) and its newest rejected record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub source: ErrorSource,
    pub at_ms: u64,
    pub message: String,
}

/// One tenant. Never holds a secret: only limits, counters and states are read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantStatus {
    pub id: String,
    /// The CRM it writes to (`zoho`, `salesforce`).
    pub crm: &'static str,
    /// What it does now, why, and until when.
    pub state: TenantState,
    /// Whatever stops its Zoho calls now: an operator's pause, a spent budget, a 429 cooldown
    /// (in that order). Empty when it runs.
    pub pauses: Vec<Pause>,
    pub credits: Credits,
    /// The AIMD factor on rate and concurrency after 429s (1 = full).
    pub rate_factor: f64,
    /// The run in progress.
    pub run: Option<RunView>,
    /// The newest run, when none is in progress.
    pub last_run: Option<RunView>,
    pub feed: Feed,
    pub last_error: Option<LastError>,
    /// The tenant could not be read (its stored settings are unreadable).
    pub problem: Option<String>,
}

impl TenantStatus {
    pub fn paused(&self) -> bool {
        !self.pauses.is_empty()
    }

    fn unreadable(id: String, problem: String) -> Self {
        Self {
            id,
            crm: "",
            state: TenantState {
                kind: StateKind::Unreadable,
                label: "unreadable".into(),
                reason: Some(problem.clone()),
                since_ms: None,
                until_ms: None,
            },
            pauses: Vec::new(),
            credits: Credits {
                used: 0,
                others: 0,
                reading_ms: None,
                allowed: 0,
                daily_credits: 0,
                budget_share: 0.0,
                percent: 0.0,
                next_return_ms: None,
                next_return_credits: 0,
                unit: "credits",
            },
            rate_factor: 1.0,
            run: None,
            last_run: None,
            feed: Feed {
                waiting: 0,
                changes_waiting: 0,
                refresh: 0,
                stats: BTreeMap::new(),
            },
            last_error: None,
            problem: Some(problem),
        }
    }
}

/// The whole fleet at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStatus {
    pub namespace: String,
    pub at_ms: u64,
    pub queues: Vec<QueueStatus>,
    pub tenants: Vec<TenantStatus>,
    pub workers: Vec<FleetWorker>,
    /// Worker processes alive (each runs one queue worker per queue it serves).
    pub worker_processes_alive: usize,
}

/// Reads the fleet. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    pub(crate) conn: RedisConn,
    pub(crate) namespace: String,
    pub(crate) queues: Vec<JobQueue<serde_json::Value>>,
    pub(crate) tenants: TenantStore,
    pub(crate) runs: RunStore,
    pub(crate) limiter: Limiter,
}

/// The settings of a queue by name: the fleet's own queues as the workers run them (their
/// visibility timeout decides which workers count as alive), others with the defaults.
fn queue_config(namespace: &str, name: &str) -> QueueConfig {
    match name {
        crmsync_producer::BACKFILL_QUEUE => crmsync_producer::backfill_queue(namespace),
        crmsync_producer::WRITES_QUEUE => crmsync_producer::writes_queue(namespace),
        crmsync_producer::MAINTENANCE_QUEUE => crmsync_producer::maintenance_queue(namespace),
        other => QueueConfig::new(other).namespace(namespace),
    }
}

/// `<ms>-<seq>` stream ids carry their time.
fn stream_id_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

impl Fleet {
    /// The fleet of `namespace`, with its `backfill` and `writes` queues and the limiter's
    /// 24-hour window.
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        let mut fleet = Self {
            queues: Vec::new(),
            tenants: TenantStore::new(conn.clone(), namespace, None),
            runs: RunStore::new(conn.clone(), namespace),
            limiter: Limiter::new(conn.clone(), namespace),
            namespace: namespace.to_owned(),
            conn,
        };
        fleet.set_queues(&QUEUES);
        fleet
    }

    fn set_queues(&mut self, names: &[&str]) {
        self.queues = names
            .iter()
            .map(|q| JobQueue::new(self.conn.clone(), queue_config(&self.namespace, q)))
            .collect();
    }

    /// Only these queues.
    pub fn with_queues(mut self, names: &[&str]) -> Self {
        self.set_queues(names);
        self
    }

    /// Another credit window (a simulator's compressed day), as the workers use.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.limiter = self.limiter.with_window(window);
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.config().name.clone()).collect()
    }

    /// Tenant ids, sorted.
    pub async fn tenant_ids(&self) -> Result<Vec<String>, FleetError> {
        Ok(self.tenants.ids().await?)
    }

    /// The tenant's limit settings and the keys of its destination, or None when it does not
    /// exist (or is unreadable).
    pub(crate) async fn limit_settings(&self, tenant: &str) -> Result<Option<(LimitSettings, DestKeys)>, FleetError> {
        match self.tenants.view(tenant).await {
            Ok(view) => Ok(Some((LimitSettings::of_view(&view), self.dest_keys(tenant, &view)))),
            Err(StoreError::Redis(e)) => Err(e.into()),
            Err(_) => Ok(None),
        }
    }

    fn dest_keys(&self, tenant: &str, view: &serde_json::Value) -> DestKeys {
        TenantKeys::new(&self.namespace, tenant).dest(view["dest"].as_str().unwrap_or_default())
    }

    /// The whole fleet, read now.
    pub async fn status(&self) -> Result<FleetStatus, FleetError> {
        let (stats, dead, tenants) = tokio::join!(
            join_all(self.queues.iter().map(|q| q.stats())),
            join_all(self.queues.iter().map(|q| q.dead_letters(DEAD_LETTERS_SCANNED))),
            async {
                let ids = self.tenants.ids().await?;
                let all = join_all(ids.into_iter().map(|id| self.tenant(id))).await;
                all.into_iter()
                    .filter_map(Result::transpose)
                    .collect::<Result<Vec<_>, FleetError>>()
            },
        );
        let stats = stats.into_iter().collect::<Result<Vec<_>, _>>()?;
        let dead = dead.into_iter().collect::<Result<Vec<_>, _>>()?;
        let mut tenants = tenants?;

        let newest_dead = newest_dead_letter_per_tenant(dead.iter().flatten());
        for t in &mut tenants {
            if let Some(d) = newest_dead.get(&t.id) {
                let newer = t.last_error.as_ref().is_none_or(|e| d.at_ms > e.at_ms);
                if newer {
                    t.last_error = Some(d.clone());
                }
            }
        }
        let workers = stats
            .iter()
            .flat_map(|s| {
                s.workers.iter().map(|w| FleetWorker {
                    queue: s.queue.clone(),
                    worker: w.clone(),
                })
            })
            .collect::<Vec<FleetWorker>>();
        let worker_processes_alive = workers
            .iter()
            .filter(|w| w.worker.alive)
            .map(|w| (w.worker.host.as_str(), w.worker.pid))
            .collect::<std::collections::HashSet<_>>()
            .len();
        Ok(FleetStatus {
            namespace: self.namespace.clone(),
            at_ms: crmsync_queue::now_ms(),
            queues: stats.iter().map(QueueStatus::from).collect(),
            tenants,
            workers,
            worker_processes_alive,
        })
    }

    /// One tenant (None when it was removed meanwhile); its dead letters are added by the caller.
    async fn tenant(&self, id: String) -> Result<Option<TenantStatus>, FleetError> {
        let view = match self.tenants.view(&id).await {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(StoreError::Redis(e)) => return Err(e.into()),
            Err(e) => return Ok(Some(TenantStatus::unreadable(id, e.to_string()))),
        };
        let s = LimitSettings::of_view(&view);
        let dest = self.dest_keys(&id, &view);
        let kind = view["crm"]["kind"]
            .as_str()
            .and_then(CrmKind::parse)
            .unwrap_or(CrmKind::Zoho);
        let profile = crmsync_sink::profile(kind);
        let buffer = WriteBuffer::new(
            self.conn.clone(),
            &self.namespace,
            &id,
            dest.dest(),
            profile.match_key,
            profile.max_take,
        );
        let (budget, blocked, active, newest, waiting, feed_stats, rejected) = tokio::join!(
            self.limiter.budget(&dest, &s),
            crmsync_producer::waits::blocked(&self.conn, &dest),
            self.runs.active(&id),
            self.runs.list(&id, 1),
            buffer.waiting(),
            buffer.feed_stats(),
            self.last_rejection(&dest, kind),
        );
        let budget: Budget = budget?;
        let w = waiting?;
        let (waiting, changes_waiting, refresh) = (w.entries, w.feed, w.refresh);
        let active = active?;
        let newest = newest?.into_iter().next();

        let mut pauses = Vec::new();
        if let Some(p) = &budget.paused {
            pauses.push(Pause::Operator {
                reason: p.reason.clone(),
                since_ms: p.since_ms,
            });
        }
        if let (Some(until_ms), Some(whose)) = (budget.budget_paused_until_ms, budget.budget_kind) {
            pauses.push(Pause::Budget {
                until_ms,
                used: budget.used,
                others: budget.others,
                allowed: budget.allowed,
                whose,
            });
        }
        if let Some(until_ms) = budget.cooldown_until_ms {
            pauses.push(Pause::Cooldown { until_ms });
        }
        // Other causes the last flush met (the budget, pauses and 429s show above).
        let now = crmsync_queue::now_ms();
        if let Some(b) = blocked?
            && !matches!(
                b.code.as_str(),
                "BUDGET" | "ORG_BUDGET" | "PAUSED" | "TOO_MANY_REQUESTS"
            )
            && b.until_ms.is_none_or(|u| u > now)
        {
            pauses.push(Pause::Blocked {
                code: b.code,
                reason: b.reason,
                until_ms: b.until_ms,
                since_ms: b.since_ms,
            });
        }

        // A cancelled run carries the operator's reason, not an error.
        let run_error = newest
            .as_ref()
            .filter(|r| r.status == crmsync_producer::RunStatus::Failed)
            .and_then(|r| {
                r.error.as_ref().map(|e| LastError {
                    source: ErrorSource::Run,
                    at_ms: r.finished_at_ms.unwrap_or(r.updated_at_ms),
                    message: e.clone(),
                })
            });
        let last_error = [run_error, rejected?].into_iter().flatten().max_by_key(|e| e.at_ms);
        let last_run = match &active {
            Some(_) => None,
            None => newest,
        };
        let run = match active {
            Some(r) => Some(self.run_view(&id, r).await?),
            None => None,
        };
        let last_run = match last_run {
            Some(r) => Some(self.run_view(&id, r).await?),
            None => None,
        };
        let state = TenantState::of(&pauses, run.as_ref(), last_run.as_ref(), waiting, now);
        Ok(Some(TenantStatus {
            crm: kind.as_str(),
            credits: Credits {
                used: budget.used,
                others: budget.others,
                reading_ms: budget.reading_ms,
                allowed: budget.allowed,
                daily_credits: budget.daily_credits,
                budget_share: budget.budget_share,
                percent: if budget.allowed > 0 {
                    (budget.used + budget.others) as f64 * 100.0 / budget.allowed as f64
                } else {
                    0.0
                },
                next_return_ms: budget.next_return_ms,
                next_return_credits: budget.next_return_credits,
                unit: kind.budget_unit(),
            },
            rate_factor: budget.rate_factor,
            id,
            state,
            pauses,
            run,
            last_run,
            feed: Feed {
                waiting,
                changes_waiting,
                refresh,
                stats: feed_stats?,
            },
            last_error,
            problem: None,
        }))
    }

    /// A run with the count of its records still waiting to be written.
    async fn run_view(&self, tenant: &str, run: Run) -> Result<RunView, FleetError> {
        let waiting: Option<i64> = redis::cmd("GET")
            .arg(TenantKeys::new(&self.namespace, tenant).run_buffered(&run.id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(RunView::new(run, waiting.unwrap_or(0).max(0) as u64))
    }

    /// The tenant's newest rejected record, as an error (without the contact's email).
    async fn last_rejection(&self, dest: &DestKeys, kind: CrmKind) -> Result<Option<LastError>, FleetError> {
        let mut conn = self.conn.clone();
        let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(dest.rejected())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(newest.into_iter().next().map(|(id, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            let field = match get("field") {
                "" => String::new(),
                f => format!(" ({f})"),
            };
            LastError {
                source: ErrorSource::Rejected,
                at_ms: stream_id_ms(&id),
                message: format!(
                    "{} rejected a record: {}{field}: {}",
                    crm_name(kind),
                    get("code"),
                    get("message")
                ),
            }
        }))
    }
}

/// A CRM's name for people.
fn crm_name(kind: CrmKind) -> &'static str {
    match kind {
        CrmKind::Zoho => "Zoho",
        CrmKind::Salesforce => "Salesforce",
    }
}

/// Each tenant's newest dead letter (jobs name their tenant in the payload's `tenant`).
fn newest_dead_letter_per_tenant<'a>(dead: impl Iterator<Item = &'a DeadLetter>) -> HashMap<String, LastError> {
    let mut out: HashMap<String, LastError> = HashMap::new();
    for d in dead {
        let Some(tenant) = d
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| v["tenant"].as_str().map(str::to_owned))
        else {
            continue;
        };
        let at_ms = d.dead_at_ms.unwrap_or_else(|| stream_id_ms(&d.dead_id));
        let e = LastError {
            source: ErrorSource::DeadLetter,
            at_ms,
            message: d.reason.clone(),
        };
        match out.get(&tenant) {
            Some(old) if old.at_ms >= at_ms => {}
            _ => {
                out.insert(tenant, e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_tenants::Edition;

    #[test]
    fn stream_ids_carry_their_time() {
        assert_eq!(stream_id_ms("1700000000123-4"), 1_700_000_000_123);
        assert_eq!(stream_id_ms("garbage"), 0);
    }

    #[test]
    fn settings_come_from_the_public_view() {
        let s = LimitSettings::of_view(&serde_json::json!({
            "daily_credits": 50_000, "budget_share": 0.5, "requests_per_second": 2.0,
            "edition": "enterprise", "concurrency": null,
        }));
        assert_eq!(s.allowed(), 25_000);
        assert_eq!(s.concurrency, Edition::Enterprise.concurrency());
    }
}
