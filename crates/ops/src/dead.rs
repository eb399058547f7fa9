//! Dead letters of the fleet's queues: listed with filters (queue, tenant from the job's
//! payload, error code derived from the reason; see `crmsync_worker::codes`), put back into
//! their queue as fresh jobs after a fix, or purged.

use std::collections::BTreeMap;
use std::str::FromStr;

use crmsync_producer::{BackfillPage, FlushWrites, Maintenance, RunError, RunStore};
use crmsync_queue::{DeadLetter, JobQueue, RedisConn, RedriveReport};
use crmsync_worker::codes;
use serde::{Deserialize, Serialize};

use crate::{Actor, Audit, OpsError};

/// A queue of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    Backfill,
    Writes,
    Maintenance,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Backfill, QueueName::Writes, QueueName::Maintenance];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Backfill => crmsync_producer::BACKFILL_QUEUE,
            QueueName::Writes => crmsync_producer::WRITES_QUEUE,
            QueueName::Maintenance => crmsync_producer::MAINTENANCE_QUEUE,
        }
    }
}

impl FromStr for QueueName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        QueueName::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown queue `{}`; the queues are backfill, writes, maintenance",
                    crate::clean(s, 40)
                )
            })
    }
}

/// A dead letter as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadView {
    pub dead_id: String,
    pub queue: &'static str,
    /// From the payload's `tenant` (absent for entries that are not jobs).
    pub tenant: Option<String>,
    pub job_id: Option<String>,
    pub attempts: Option<u32>,
    pub max_attempts: Option<u32>,
    /// See `crmsync dead codes`.
    pub code: &'static str,
    /// What the code means.
    pub code_meaning: &'static str,
    pub dead_at_ms: Option<u64>,
    pub reason: String,
    /// The payload as JSON (a string when it is not JSON).
    pub payload: Option<serde_json::Value>,
    /// The queue entry the job was moved from.
    pub source_entry: Option<String>,
    /// Every field of the entry (for entries in an unknown format), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

/// What a code means (empty for an unknown one).
pub fn code_meaning(code: &str) -> &'static str {
    codes::all()
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, m)| m)
        .unwrap_or("")
}

impl DeadView {
    fn new(queue: QueueName, d: DeadLetter, with_fields: bool) -> Self {
        let payload = d
            .payload
            .as_deref()
            .map(|p| serde_json::from_str(p).unwrap_or_else(|_| serde_json::Value::String(p.to_owned())));
        let tenant = payload
            .as_ref()
            .and_then(|p| p.get("tenant"))
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        let max_attempts = d
            .fields
            .iter()
            .find(|(k, _)| k == "m")
            .and_then(|(_, v)| v.parse().ok());
        // Entries written before codes were recorded have none: OTHER.
        let code = d.code.as_deref().and_then(codes::parse).unwrap_or("OTHER");
        DeadView {
            code,
            code_meaning: code_meaning(code),
            queue: queue.as_str(),
            tenant,
            job_id: d.job_id,
            attempts: d.attempts,
            max_attempts,
            dead_at_ms: d.dead_at_ms,
            reason: d.reason,
            payload,
            source_entry: d.source_entry,
            fields: with_fields.then(|| d.fields.into_iter().collect()),
            dead_id: d.dead_id,
        }
    }

    pub fn queue_name(&self) -> QueueName {
        QueueName::ALL
            .into_iter()
            .find(|q| q.as_str() == self.queue)
            .unwrap_or(QueueName::Writes)
    }
}

/// Which dead letters: queues, a tenant, a code (checked against the vocabulary).
#[derive(Debug, Clone)]
pub struct DeadFilter {
    pub queues: Vec<QueueName>,
    pub tenant: Option<String>,
    pub code: Option<&'static str>,
}

impl DeadFilter {
    /// A filter; an unknown code is refused with the list of codes.
    pub fn new(queue: Option<QueueName>, tenant: Option<&str>, code: Option<&str>) -> Result<Self, OpsError> {
        let code = match code.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(codes::parse(c).ok_or_else(|| {
                OpsError::Invalid(format!(
                    "unknown error code `{}`; the codes are: {} (see `crmsync dead codes`)",
                    crate::clean(c, 40),
                    codes::all().iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                ))
            })?),
        };
        Ok(DeadFilter {
            queues: match queue {
                Some(q) => vec![q],
                None => QueueName::ALL.to_vec(),
            },
            tenant: tenant.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned),
            code,
        })
    }

    pub fn matches(&self, v: &DeadView) -> bool {
        self.tenant.as_ref().is_none_or(|t| v.tenant.as_ref() == Some(t)) && self.code.is_none_or(|c| v.code == c)
    }

    /// In words, for confirmations and the audit stream.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.queues.len() == 1 {
            parts.push(format!("queue {}", self.queues[0].as_str()));
        }
        if let Some(t) = &self.tenant {
            parts.push(format!("tenant {t}"));
        }
        if let Some(c) = self.code {
            parts.push(format!("code {c}"));
        }
        if parts.is_empty() {
            "all dead letters".into()
        } else {
            format!("dead letters of {}", parts.join(", "))
        }
    }
}

/// A dead letter named by id, in one queue or in whichever has it.
#[derive(Debug, Clone, Deserialize)]
pub struct DeadRef {
    pub queue: Option<QueueName>,
    pub dead_id: String,
}

/// What a retry or purge did: the dead letters acted on, and those not, with why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeadOutcome {
    /// How many were retried or purged.
    pub count: u64,
    /// The dead letters chosen and acted on.
    pub done: Vec<Done>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub dead_id: String,
    pub queue: &'static str,
    pub tenant: Option<String>,
    /// The job queued again (retries only).
    pub job_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub dead_id: String,
    pub why: String,
}

impl DeadOutcome {
    fn summary(&self, verb: &str) -> String {
        let mut s = format!("{} dead letter(s) {verb}", self.count);
        if !self.skipped.is_empty() {
            s.push_str(&format!("; {} not {verb}", self.skipped.len()));
            if let Some(first) = self.skipped.first() {
                s.push_str(&format!(" ({}: {})", first.dead_id, first.why));
            }
        }
        s
    }
}

/// Dead letters read per call while scanning a stream.
const SCAN_PAGE: usize = 500;

/// The dead letters of the fleet's queues (typed by their jobs: a retry checks that the
/// payload decodes as one).
pub struct DeadLetters {
    backfill: JobQueue<BackfillPage>,
    writes: JobQueue<FlushWrites>,
    maintenance: JobQueue<Maintenance>,
    runs: RunStore,
    audit: Audit,
}

/// Stream ids (`<ms>-<seq>`) in time order.
fn entry_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl DeadLetters {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        DeadLetters {
            backfill: JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(namespace)),
            writes: JobQueue::new(conn.clone(), crmsync_producer::writes_queue(namespace)),
            maintenance: JobQueue::new(conn.clone(), crmsync_producer::maintenance_queue(namespace)),
            runs: RunStore::new(conn.clone(), namespace),
            audit: Audit::new(conn, namespace),
        }
    }

    async fn page(&self, q: QueueName, before: Option<&str>) -> Result<Vec<DeadLetter>, OpsError> {
        Ok(match q {
            QueueName::Backfill => self.backfill.dead_letters_before(before, SCAN_PAGE).await?,
            QueueName::Writes => self.writes.dead_letters_before(before, SCAN_PAGE).await?,
            QueueName::Maintenance => self.maintenance.dead_letters_before(before, SCAN_PAGE).await?,
        })
    }

    async fn get(&self, q: QueueName, id: &str) -> Result<Option<DeadLetter>, OpsError> {
        Ok(match q {
            QueueName::Backfill => self.backfill.dead_letter(id).await?,
            QueueName::Writes => self.writes.dead_letter(id).await?,
            QueueName::Maintenance => self.maintenance.dead_letter(id).await?,
        })
    }

    /// Matching dead letters, newest first: at most `limit` (and whether more match), or all.
    pub async fn list(&self, f: &DeadFilter, limit: Option<usize>) -> Result<(Vec<DeadView>, bool), OpsError> {
        let mut all = Vec::new();
        // One more than asked tells whether there are more.
        let want = limit.map(|l| l + 1);
        for &q in &f.queues {
            let mut found = 0;
            let mut before: Option<String> = None;
            'pages: loop {
                let page = self.page(q, before.as_deref()).await?;
                let Some(last) = page.last() else { break };
                before = Some(last.dead_id.clone());
                for d in page {
                    let v = DeadView::new(q, d, false);
                    if f.matches(&v) {
                        all.push(v);
                        found += 1;
                        if want.is_some_and(|l| found >= l) {
                            break 'pages;
                        }
                    }
                }
            }
        }
        all.sort_by_key(|v| std::cmp::Reverse(entry_key(&v.dead_id)));
        let more = limit.is_some_and(|l| all.len() > l);
        if let Some(l) = limit {
            all.truncate(l);
        }
        Ok((all, more))
    }

    /// Finds dead letters by id. An id present in two queues without a queue named is an
    /// error (say which).
    pub async fn find(&self, refs: &[DeadRef], with_fields: bool) -> Result<(Vec<DeadView>, Vec<String>), OpsError> {
        // Every read at once (pipelined on the one connection), not one round trip per id.
        let lookups = refs.iter().map(|r| async move {
            let id = r.dead_id.trim();
            let queues = match r.queue {
                Some(q) => vec![q],
                None => QueueName::ALL.to_vec(),
            };
            let mut hits = Vec::new();
            if crmsync_queue::is_entry_id(id) {
                for q in queues {
                    if let Some(d) = self.get(q, id).await? {
                        hits.push(DeadView::new(q, d, with_fields));
                    }
                }
            }
            Ok::<_, OpsError>((id, hits))
        });
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for looked in futures_util::future::join_all(lookups).await {
            let (id, hits) = looked?;
            match hits.len() {
                0 => missing.push(crate::clean(id, 40)),
                1 => found.extend(hits),
                _ => {
                    return Err(OpsError::Invalid(format!(
                        "several queues have a dead letter `{id}`; say which with --queue"
                    )));
                }
            }
        }
        Ok((found, missing))
    }

    /// The dead letters a retry or purge acts on: the named ones that match the filter too, or
    /// (no names) all that match it. Returns them and the named ones left alone, with why.
    pub async fn select(&self, f: &DeadFilter, refs: &[DeadRef]) -> Result<(Vec<DeadView>, Vec<Skipped>), OpsError> {
        if refs.is_empty() {
            return Ok((self.list(f, None).await?.0, Vec::new()));
        }
        let refs: Vec<DeadRef> = refs
            .iter()
            .map(|r| DeadRef {
                queue: r.queue.or_else(|| (f.queues.len() == 1).then(|| f.queues[0])),
                dead_id: r.dead_id.clone(),
            })
            .collect();
        let (found, missing) = self.find(&refs, false).await?;
        let mut skipped: Vec<Skipped> = missing
            .into_iter()
            .map(|dead_id| Skipped {
                dead_id,
                why: "no such dead letter".into(),
            })
            .collect();
        let mut chosen = Vec::new();
        for v in found {
            if f.matches(&v) && f.queues.contains(&v.queue_name()) {
                chosen.push(v);
            } else {
                skipped.push(Skipped {
                    dead_id: v.dead_id,
                    why: "does not match the filters; left alone".into(),
                });
            }
        }
        Ok((chosen, skipped))
    }

    /// Why a backfill page should not be retried, if so: a page of a run that has ended
    /// finishes without reading, so retrying it would do nothing.
    /// `seen` keeps each run's answer, so the pages of one run cost one read.
    async fn ended_run(
        &self,
        v: &DeadView,
        seen: &mut BTreeMap<(String, String), Option<String>>,
    ) -> Result<Option<String>, OpsError> {
        let Some(p) = &v.payload else { return Ok(None) };
        let (Some(tenant), Some(run)) = (
            p.get("tenant").and_then(|t| t.as_str()),
            p.get("run_id").and_then(|r| r.as_str()),
        ) else {
            return Ok(None);
        };
        let run_key = (tenant.to_owned(), run.to_owned());
        if let Some(why) = seen.get(&run_key) {
            return Ok(why.clone());
        }
        let start_again =
            format!("start a new run with `crmsync backfill {tenant}` (unchanged contacts cost no credit)");
        let why = match self.runs.get(tenant, run).await {
            Ok(r) if r.status.is_active() => None,
            Ok(r) => Some(format!(
                "its run {run} is {}: pages of an ended run finish without reading; {start_again}",
                r.status.as_str()
            )),
            Err(RunError::NotFound(_)) => Some(format!("its run {run} no longer exists; {start_again}")),
            Err(e) => return Err(e.into()),
        };
        seen.insert(run_key, why.clone());
        Ok(why)
    }

    /// Puts dead letters back into their queues as fresh jobs (attempts reset), and records it.
    pub async fn retry(
        &self,
        actor: &Actor,
        what: &str,
        chosen: Vec<DeadView>,
        mut skipped: Vec<Skipped>,
    ) -> Result<DeadOutcome, OpsError> {
        let mut by_queue: BTreeMap<QueueName, Vec<String>> = BTreeMap::new();
        let mut tenants: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut runs_seen = BTreeMap::new();
        for v in &chosen {
            if v.queue_name() == QueueName::Backfill
                && let Some(why) = self.ended_run(v, &mut runs_seen).await?
            {
                skipped.push(Skipped {
                    dead_id: v.dead_id.clone(),
                    why,
                });
                continue;
            }
            by_queue.entry(v.queue_name()).or_default().push(v.dead_id.clone());
            tenants.insert(v.dead_id.clone(), v.tenant.clone());
        }
        let mut out = DeadOutcome::default();
        for (q, ids) in by_queue {
            let report: RedriveReport = match q {
                QueueName::Backfill => self.backfill.redrive(&ids).await?,
                QueueName::Writes => self.writes.redrive(&ids).await?,
                QueueName::Maintenance => self.maintenance.redrive(&ids).await?,
            };
            out.count += report.redriven.len() as u64;
            out.done.extend(report.redriven.into_iter().map(|r| Done {
                tenant: tenants.get(&r.dead_id).cloned().flatten(),
                queue: q.as_str(),
                job_id: Some(r.job_id),
                dead_id: r.dead_id,
            }));
            skipped.extend(report.refused.into_iter().map(|r| Skipped {
                dead_id: r.dead_id,
                why: r.reason,
            }));
            skipped.extend(report.missing.into_iter().map(|dead_id| Skipped {
                dead_id,
                why: "no longer a dead letter (retried or purged meanwhile)".into(),
            }));
        }
        out.skipped = skipped;
        if !out.done.is_empty() || !out.skipped.is_empty() {
            self.audit
                .record(actor, "dead.retry", what, "", &out.summary("retried"))
                .await?;
        }
        Ok(out)
    }

    /// Deletes dead letters, and records it with the operator's reason.
    pub async fn purge(
        &self,
        actor: &Actor,
        what: &str,
        reason: &str,
        chosen: Vec<DeadView>,
        skipped: Vec<Skipped>,
    ) -> Result<DeadOutcome, OpsError> {
        let mut by_queue: BTreeMap<QueueName, Vec<&DeadView>> = BTreeMap::new();
        for v in &chosen {
            by_queue.entry(v.queue_name()).or_default().push(v);
        }
        let mut out = DeadOutcome {
            skipped,
            ..Default::default()
        };
        for (q, views) in by_queue {
            let ids: Vec<String> = views.iter().map(|v| v.dead_id.clone()).collect();
            let n = match q {
                QueueName::Backfill => self.backfill.purge_dead(&ids).await?,
                QueueName::Writes => self.writes.purge_dead(&ids).await?,
                QueueName::Maintenance => self.maintenance.purge_dead(&ids).await?,
            };
            out.count += n;
            out.done.extend(views.iter().map(|v| Done {
                dead_id: v.dead_id.clone(),
                queue: q.as_str(),
                tenant: v.tenant.clone(),
                job_id: None,
            }));
            // Some were retried or purged by someone else between the read and the purge.
            let gone = (views.len() as u64).saturating_sub(n);
            if gone > 0 {
                out.skipped.push(Skipped {
                    dead_id: "-".into(),
                    why: format!(
                        "{gone} of the {} chosen in {} were gone already (retried or purged meanwhile)",
                        views.len(),
                        q.as_str()
                    ),
                });
            }
        }
        if !out.done.is_empty() || !out.skipped.is_empty() {
            self.audit
                .record(actor, "dead.purge", what, reason, &out.summary("purged"))
                .await?;
        }
        Ok(out)
    }
}
