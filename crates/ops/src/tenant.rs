//! A tenant's pause and resume, and a run's cancel: what operators do to stop and start work.

use crmsync_limits::{BudgetKind, LimitSettings, Limiter};
use crmsync_producer::{FlushTrigger, FlushWrites, RunStatus, RunStore};
use crmsync_queue::{JobQueue, RedisConn};
use crmsync_redis::num::thousands;
use crmsync_redis::when::{in_text, until_text, utc_text};
use crmsync_tenants::{CrmKind, TenantKeys};
use serde::Serialize;

use crate::{Actor, Audit, OpsError, Site, clean};

/// Longest reason kept (characters).
pub const REASON_MAX: usize = 500;

/// What an action did, in words for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Whether it changed anything (resuming a tenant nobody paused does not).
    pub changed: bool,
    pub message: String,
}

/// Tenant-level actions.
pub struct TenantOps {
    conn: RedisConn,
    namespace: String,
    limiter: Limiter,
    audit: Audit,
}

impl TenantOps {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self {
            limiter: Limiter::new(conn.clone(), namespace),
            audit: Audit::new(conn.clone(), namespace),
            conn,
            namespace: namespace.to_owned(),
        }
    }

    /// The same, with another credit window (a simulator's compressed day).
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Pauses a tenant: no CRM call is made for it until it is resumed.
    pub async fn pause(&self, actor: &Actor, tenant: &str, reason: &str) -> Result<Outcome, OpsError> {
        Site::of(&self.conn, &self.namespace, tenant).await?;
        let reason = match clean(reason, REASON_MAX) {
            r if r.is_empty() => format!("paused by {}", clean(&actor.who, 120)),
            r => r,
        };
        self.limiter.pause(tenant, &reason).await?;
        let message = format!("tenant `{tenant}` paused ({reason}); resume with `crmsync resume {tenant}`");
        self.audit
            .record(actor, "tenant.pause", &format!("tenant {tenant}"), &reason, "paused")
            .await?;
        Ok(Outcome { changed: true, message })
    }

    /// Lifts an operator's pause and runs the writes that waited for it now. A tenant waiting
    /// for its budget is not paused by anyone: says why it waits, until when, and how to lift
    /// it.
    pub async fn resume(&self, actor: &Actor, tenant: &str, reason: &str) -> Result<Outcome, OpsError> {
        let site = Site::of(&self.conn, &self.namespace, tenant).await?;
        let reason = clean(reason, REASON_MAX);
        let writes: JobQueue<FlushWrites> =
            JobQueue::new(self.conn.clone(), crmsync_producer::writes_queue(&self.namespace));
        if self.limiter.resume(tenant).await? {
            let woken = crmsync_producer::waits::wake(&self.conn, &writes, &site.keys).await?;
            let message = format!("tenant `{tenant}` resumed ({woken} waiting write(s) run now)");
            self.audit
                .record(actor, "tenant.resume", &format!("tenant {tenant}"), &reason, &message)
                .await?;
            return Ok(Outcome { changed: true, message });
        }
        let b = self
            .limiter
            .budget(&site.keys, &LimitSettings::of_view(&site.view))
            .await?;
        let message = match (b.budget_paused_until_ms, b.budget_kind) {
            (Some(until), Some(kind)) => {
                let now = crmsync_queue::now_ms();
                let unit = site.kind.budget_unit();
                let flag = match site.kind {
                    CrmKind::Zoho => "--daily-credits",
                    CrmKind::Salesforce => "--daily-requests",
                };
                let whose = match kind {
                    BudgetKind::Ours => format!(
                        "crmsync used {} of the {} {unit} allowed",
                        thousands(b.used),
                        thousands(b.allowed)
                    ),
                    BudgetKind::Account | BudgetKind::Probe => format!(
                        "the org's other integrations used {} and crmsync {} of the {} {unit} allowed",
                        thousands(b.others),
                        thousands(b.used),
                        thousands(b.allowed)
                    ),
                };
                let when = match kind {
                    BudgetKind::Probe => format!(
                        "crmsync reads the org's usage again at {} ({}) and goes on as soon as there is room",
                        utc_text(until, now),
                        in_text(until, now)
                    ),
                    _ => format!("it goes on by itself {}", until_text(until, now)),
                };
                format!(
                    "tenant `{tenant}` is not paused by an operator: it waits for its budget. {whose} \
                     (share {:.2} x {} {unit} a day); {when}.\n\
                     To lift it now, raise the budget: `crmsync tenant set {tenant} {flag} N` (the org's real \
                     allowance) or `--budget-share S` (up to 1.0); the fleet applies it within seconds.",
                    b.budget_share,
                    thousands(b.daily_credits)
                )
            }
            _ => format!("tenant `{tenant}` was not paused"),
        };
        Ok(Outcome {
            changed: false,
            message,
        })
    }

    /// Ends a running backfill or reconcile as cancelled and frees its tenant for a new run.
    /// Its page jobs still queued finish without reading; what it read is still written (those
    /// records are current contacts, and the writes are bounded by what was read). To stop
    /// every CRM call of a tenant at once, pause it.
    pub async fn cancel(&self, actor: &Actor, run_id: &str, reason: &str) -> Result<Outcome, OpsError> {
        let runs = RunStore::new(self.conn.clone(), &self.namespace);
        let run = runs.find(run_id.trim()).await?;
        let tenant = run.tenant.clone();
        if !run.status.is_active() {
            return Ok(Outcome {
                changed: false,
                message: format!(
                    "run {} of tenant `{tenant}` has already ended ({}); nothing to cancel",
                    run.id,
                    run.status.as_str()
                ),
            });
        }
        let reason = match clean(reason, REASON_MAX) {
            r if r.is_empty() => "cancelled by an operator".to_owned(),
            r => r,
        };
        if !runs.end(&tenant, &run.id, RunStatus::Cancelled, &reason).await? {
            let now = runs.get(&tenant, &run.id).await?;
            return Ok(Outcome {
                changed: false,
                message: format!(
                    "run {} of tenant `{tenant}` ended by itself meanwhile ({}); nothing to cancel",
                    run.id,
                    now.status.as_str()
                ),
            });
        }
        // Write what the run read without waiting for a full batch: with the run ended, a
        // flush takes whatever waits.
        let writes: JobQueue<FlushWrites> =
            JobQueue::new(self.conn.clone(), crmsync_producer::writes_queue(&self.namespace));
        crmsync_producer::schedule_flush(&writes, &tenant, FlushTrigger::RunEnded { run: &run.id }, None).await?;
        let buffered: Option<i64> = redis::cmd("GET")
            .arg(TenantKeys::new(&self.namespace, &tenant).run_buffered(&run.id))
            .query_async(&mut self.conn.clone())
            .await?;
        let run = runs.get(&tenant, &run.id).await?;
        let message = format!(
            "run {} of tenant `{tenant}` cancelled after {} page(s) and {} contacts read\n  \
             its remaining page jobs finish without reading\n  \
             the {} record(s) it read and not yet written are still written (to stop all CRM calls: `crmsync pause {tenant}`)\n  \
             tenant `{tenant}` can start a new run: `crmsync backfill {tenant}`",
            run.id,
            thousands(run.pages_done),
            thousands(run.contacts_read),
            thousands(buffered.unwrap_or(0).max(0) as u64)
        );
        self.audit
            .record(
                actor,
                "run.cancel",
                &format!("run {} of tenant {tenant}", run.id),
                &reason,
                "cancelled",
            )
            .await?;
        Ok(Outcome { changed: true, message })
    }
}
