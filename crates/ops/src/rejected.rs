//! Records the CRM rejected, per tenant's destination: listed with the contact and the CRM's
//! reason, and retried after a fix: the contacts are re-read from Nylas and written again
//! (forced) by the next flush, and their rejections are forgotten (a record the CRM rejects
//! again is listed again).

use std::collections::{BTreeSet, HashSet};

use crmsync_producer::{FlushTrigger, FlushWrites, Rejected, Rejection};
use crmsync_queue::{JobQueue, RedisConn};
use serde::Serialize;

use crmsync_redis::num::thousands;

use crate::{Actor, Audit, OpsError, Site};

/// A rejected record as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedView {
    /// Entry id in the tenant's rejected stream (`<ms>-<seq>`).
    pub id: String,
    pub tenant: String,
    pub rejected_at_ms: u64,
    #[serde(flatten)]
    pub rejection: Rejection,
}

/// Rejected records read per call.
const PAGE: usize = 500;

/// Which rejected records a retry takes.
pub enum Pick<'a> {
    /// Those of these Nylas contact ids.
    Contacts(&'a [String]),
    /// Those with this CRM code (any case).
    Code(&'a str),
    /// Every one of the tenant.
    All,
}

/// What a retry did.
#[derive(Debug, Clone, Serialize)]
pub struct RetryOutcome {
    /// Contacts to be re-read and written by the flush scheduled now.
    pub contacts: Vec<String>,
    /// Rejections forgotten.
    pub forgotten: u64,
    /// Contact ids asked for that have no rejected record.
    pub unknown: Vec<String>,
    pub message: String,
}

/// One tenant's rejected records.
pub struct RejectedRecords {
    conn: RedisConn,
    namespace: String,
    site: Site,
    state: Rejected,
}

impl RejectedRecords {
    /// The tenant's; [`OpsError::NotFound`] when it does not exist.
    pub async fn of(conn: RedisConn, namespace: &str, tenant: &str) -> Result<Self, OpsError> {
        let site = Site::of(&conn, namespace, tenant).await?;
        Ok(Self {
            state: Rejected::new(conn.clone(), site.keys.clone()),
            conn,
            namespace: namespace.to_owned(),
            site,
        })
    }

    /// Newest first, those `keep` accepts: at most `limit` (and whether more match), or all.
    pub async fn list(
        &self,
        limit: Option<usize>,
        keep: impl Fn(&Rejection) -> bool,
    ) -> Result<(Vec<RejectedView>, bool), OpsError> {
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let page = self.state.before(before.as_deref(), PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            before = Some(last.clone());
            for (id, r) in page {
                if !keep(&r) {
                    continue;
                }
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok((out, true));
                }
                let rejected_at_ms = id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
                out.push(RejectedView {
                    id,
                    tenant: self.site.tenant.clone(),
                    rejected_at_ms,
                    rejection: r,
                });
            }
        }
        Ok((out, false))
    }

    /// Re-reads the picked contacts from Nylas and writes them again, forgets their
    /// rejections, and records it.
    pub async fn retry(&self, actor: &Actor, pick: Pick<'_>) -> Result<RetryOutcome, OpsError> {
        let tenant = self.site.tenant.as_str();
        let wanted: HashSet<&str> = match &pick {
            Pick::Contacts(c) => c.iter().map(String::as_str).collect(),
            _ => HashSet::new(),
        };
        let (chosen, _) = self
            .list(None, |r| match &pick {
                Pick::All => true,
                Pick::Contacts(_) => wanted.contains(r.contact_id.as_str()),
                Pick::Code(c) => r.code.eq_ignore_ascii_case(c),
            })
            .await?;
        let contacts: BTreeSet<&str> = chosen.iter().map(|v| v.rejection.contact_id.as_str()).collect();
        let unknown: Vec<String> = match &pick {
            Pick::Contacts(c) => c
                .iter()
                .filter(|c| !contacts.contains(c.as_str()))
                .map(|c| crate::clean(c, 80))
                .collect(),
            _ => Vec::new(),
        };
        let mut forgotten = 0;
        if !contacts.is_empty() {
            // Ask for the re-read first, then schedule the flush that does it, then forget the
            // rejections: a failure in between leaves a rejection listed for a contact that is
            // re-read anyway (harmless, and retried again if asked), never a forgotten one
            // that nobody re-reads.
            let ids: Vec<&str> = contacts.iter().copied().collect();
            self.site
                .buffer(&self.conn, &self.namespace)
                .request_refresh(&ids)
                .await?;
            let writes: JobQueue<FlushWrites> =
                JobQueue::new(self.conn.clone(), crmsync_producer::writes_queue(&self.namespace));
            let nonce = crmsync_queue::now_ms().to_string();
            crmsync_producer::schedule_flush(&writes, tenant, FlushTrigger::Operator { nonce: &nonce }, None).await?;
            let entries: Vec<String> = chosen.iter().map(|v| v.id.clone()).collect();
            forgotten = self.state.remove(&entries).await?;
        }
        let message = if contacts.is_empty() {
            "no rejected record matches; nothing to retry".to_owned()
        } else {
            format!(
                "{} contact(s) of tenant `{tenant}` will be re-read from Nylas and written by the next flush (scheduled now); \
                 {} rejection(s) forgotten (a record the CRM rejects again is listed again)",
                thousands(contacts.len() as u64),
                thousands(forgotten)
            )
        };
        let what = match &pick {
            Pick::All => format!("tenant {tenant}: every rejected record"),
            Pick::Code(c) => format!("tenant {tenant}: rejected records with code {c}"),
            Pick::Contacts(c) => format!("tenant {tenant}: contacts {}", c.join(", ")),
        };
        let outcome = RetryOutcome {
            contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
            forgotten,
            unknown,
            message,
        };
        if !outcome.contacts.is_empty() {
            Audit::new(self.conn.clone(), &self.namespace)
                .record(actor, "rejected.retry", &what, "", &outcome.message)
                .await?;
        }
        Ok(outcome)
    }
}
