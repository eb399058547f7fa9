//! The flush job: write one batch (up to the CRM's batch size, of one kind: upserts, moves or
//! deletions) from a tenant's write buffer through its sink, under the destination's limits,
//! and record what happened to each change. Knows nothing of any particular CRM: the sink
//! decides how a batch becomes calls.
//!
//! A flush waits for a full batch while a backfill of the tenant is still reading pages (more
//! records are coming, and a full batch costs the fewest credits per record); once no run is
//! reading, or when change-feed records wait, it writes whatever is there. Before taking a
//! batch it re-reads from Nylas the contacts whose latest state is in doubt.

use std::collections::BTreeMap;
use std::time::Duration;

use crmsync_domain::{MapOutcome, map_contact};
use crmsync_limits::LimitSettings;
use crmsync_nylas::Grant;
use crmsync_producer::{
    Change, Entry, FlushCount, FlushTrigger, FlushWrites, Op, Rejection, Source, Waiting, WriteBuffer, Written,
};
use crmsync_queue::{JobError, JobInfo, now_ms};
use crmsync_sink::{Next, Outcome, Priority, SinkError, Write};
use crmsync_tenants::Tenant;
use tracing::{debug, info, warn};

use crate::context::{Context, profile};
use crate::{backfill, errors};

/// Contacts re-read from Nylas per flush.
const REFRESH_BATCH: usize = 50;
/// How long change-feed records may wait for a fuller batch (`--flush-window-ms` of the
/// webhook server; the flush job's own follow-ups use the same).
pub const FEED_WINDOW: Duration = Duration::from_secs(2);

/// Enqueues a flush of the tenant's buffer, once per trigger, now or after `delay`.
pub async fn enqueue(
    ctx: &Context,
    tenant: &str,
    trigger: FlushTrigger<'_>,
    delay: Option<Duration>,
) -> Result<(), JobError> {
    crmsync_producer::schedule_flush(&ctx.writes, tenant, trigger, delay)
        .await
        .map_err(errors::redis)
}

/// The smallest batch worth writing now: a full one while a backfill is still reading pages
/// and no change-feed record waits; otherwise anything.
fn min_batch(w: &Waiting, full: usize) -> usize {
    if w.reading && w.feed == 0 { full } else { 1 }
}

/// Re-reads contacts whose latest state is in doubt (they took over a shared email, two of
/// their events fell in one second, or an operator retries them) and pushes their current
/// state.
async fn refresh(ctx: &Context, tenant: &Tenant, buffer: &WriteBuffer) -> Result<(), JobError> {
    let ids = buffer.take_refresh(REFRESH_BATCH).await.map_err(errors::buffer)?;
    if ids.is_empty() {
        return Ok(());
    }
    let grant = Grant {
        api_uri: &tenant.nylas.api_uri,
        grant_id: &tenant.nylas.grant_id,
        api_key: tenant.nylas.api_key.expose(),
    };
    let limits = profile(tenant).field_limits;
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        let at_ms = now_ms() / 1000 * 1000;
        let change = match ctx.nylas.get_contact(&grant, &id).await.map_err(errors::nylas)? {
            Some(c) => match map_contact(&c, &limits) {
                MapOutcome::Mapped { record, .. } => Change::Upsert {
                    contact_id: id,
                    at_ms,
                    record,
                },
                MapOutcome::Skipped(_) => Change::Unmap { contact_id: id, at_ms },
            },
            None => Change::Delete { contact_id: id, at_ms },
        };
        changes.push(change);
    }
    debug!(tenant = %tenant.id, n = changes.len(), "Re-read contacts whose latest state was in doubt");
    // Forced: a fresh read is written even if it hashes as written before (the record may
    // hold another contact's fields), and is at least as new as any event recorded so far.
    buffer
        .push(&Source::Feed, true, &changes)
        .await
        .map_err(errors::buffer)?;
    Ok(())
}

pub async fn run_flush(ctx: &Context, job: FlushWrites, info: &JobInfo) -> Result<(), JobError> {
    // The job id names the flush: a retried or deferred flush resumes its own batch.
    let flush_id = info.job_id.clone();
    let Some(tenant) = backfill::load_tenant(ctx, &job.tenant).await? else {
        return Ok(());
    };
    let buffer = ctx.buffer(&tenant);
    let batch = profile(&tenant).max_take;
    let before = buffer.waiting().await.map_err(errors::buffer)?;
    // Contacts re-read are pushed as change-feed records: anything is worth writing then.
    let min = if before.refresh > 0 {
        refresh(ctx, &tenant, &buffer).await?;
        1
    } else {
        min_batch(&before, batch)
    };
    let entries = buffer
        .take(&flush_id, batch, min, job.slot.as_deref())
        .await
        .map_err(errors::buffer)?;
    if !entries.is_empty() {
        crmsync_metrics::flush_take("batch");
        debug!(tenant = %tenant.id, flush = %flush_id, attempt = info.attempt, n = entries.len(), "Took a batch");
        write_batch(ctx, &tenant, &buffer, &flush_id, &entries).await?;
    }

    // Keep going while changes wait and no scheduled flush covers them: at once for contacts
    // to re-read, after the feed window for change-feed stragglers, and once nothing more is
    // coming, one scheduled flush per batch left (partial ones too) that none covers yet.
    // (While a backfill reads, full batches are scheduled by the pushes that fill them.)
    let w = buffer.waiting().await.map_err(errors::buffer)?;
    let (waiting, feed, to_refresh) = (w.entries, w.feed, w.refresh);
    if entries.is_empty() {
        crmsync_metrics::flush_take(if waiting > 0 { "blocked" } else { "idle" });
        debug!(tenant = %tenant.id, min, waiting, "Nothing to flush yet");
    }
    if entries.is_empty() && to_refresh == 0 {
        return Ok(());
    }
    let after = FlushTrigger::After { flush: &flush_id };
    if to_refresh > 0 {
        enqueue(ctx, &tenant.id, after, None).await?;
    } else if waiting > 0 && min_batch(&w, batch) == 1 {
        if feed > 0 {
            // One flush per window slot, however many flushes finish meanwhile: change-feed
            // records gather into full batches instead of leaving one call each.
            crmsync_producer::schedule_feed_flush(&ctx.writes, &tenant.id, FEED_WINDOW)
                .await
                .map_err(errors::redis)?;
        } else {
            let missing = buffer.cover().await.map_err(errors::buffer)?;
            crmsync_producer::schedule_full_flushes(&ctx.writes, &buffer, &tenant.id, missing)
                .await
                .map_err(errors::buffer)?;
        }
    }
    Ok(())
}

fn write_of(e: &Entry) -> Write {
    match &e.op {
        Op::Upsert(r) => Write::Upsert {
            contact_id: e.contact_id.clone(),
            record: r.clone(),
            rid: e.rid.clone(),
        },
        Op::Move(r) => Write::Move {
            contact_id: e.contact_id.clone(),
            record: r.clone(),
            rid: e.rid.clone(),
        },
        Op::Delete => Write::Delete {
            contact_id: e.contact_id.clone(),
            rid: e.rid.clone(),
        },
    }
}

/// Records why the destination's writes wait (shown by `crmsync status` and the dashboard),
/// and for the budget or a pause, this flush as one to wake when it is lifted. Transient
/// contention (no concurrency slot, a destination that changed meanwhile) is not recorded.
/// How the pause of a tenant whose grant died starts: `crmsync zoho|salesforce exchange-code`
/// and a new refresh token lift a pause with this reason.
pub const REAUTHORIZE: &str = "re-authorize:";

async fn note_wait(ctx: &Context, tenant: &Tenant, flush_id: &str, e: &SinkError) {
    if matches!(e.code, "BUSY" | "DEST_CHANGED") {
        return;
    }
    let now = now_ms();
    let until = match e.next {
        Next::Wait { until_ms } => Some(until_ms),
        Next::RetryAfter(d) | Next::Throttled { retry_after: Some(d) } => Some(now + d.as_millis() as u64),
        Next::Throttled { retry_after: None } | Next::Retry | Next::Reauthorize | Next::FailJob => None,
    };
    let waiter = matches!(e.code, "BUDGET" | "ORG_BUDGET" | "PAUSED").then_some(flush_id);
    let dest = ctx.dest_keys(tenant);
    if let Err(error) = crmsync_producer::waits::record(&ctx.conn, &dest, e.code, &e.message, until, waiter).await {
        warn!(tenant = %tenant.id, %error, "Could not record why the tenant's writes wait");
    }
}

async fn write_batch(
    ctx: &Context,
    tenant: &Tenant,
    buffer: &WriteBuffer,
    flush_id: &str,
    entries: &[Entry],
) -> Result<(), JobError> {
    let sink = ctx.sink(tenant).map_err(errors::tenant)?;
    let priority = if entries.iter().any(|e| e.source == Source::Feed) {
        Priority::Change
    } else {
        Priority::Backfill
    };
    let writes: Vec<Write> = entries.iter().map(write_of).collect();
    let written = match sink.write(&writes, priority).await {
        Ok(w) => w,
        Err(e) if e.next == Next::Reauthorize => {
            // Credentials changed since this job read them (a re-authorization): try again
            // with the new ones rather than pause the tenant for the old ones.
            if let Some(now) = backfill::load_tenant(ctx, &tenant.id).await?
                && now.crm_rev != tenant.crm_rev
            {
                return Err(JobError::Defer {
                    until_ms: now_ms() + 100,
                    code: e.code,
                    reason: "the tenant's credentials changed; writing again".into(),
                });
            }
            // The grant of access is dead: every call would fail the same way. The tenant is
            // paused with the reason (its writes wait, none is lost or dead-lettered) until
            // an operator re-authorizes it, which lifts the pause and runs them again.
            let reason = format!("{REAUTHORIZE} {}", e.message);
            ctx.limiter.pause(&tenant.id, &reason).await.map_err(errors::redis)?;
            warn!(tenant = %tenant.id, code = e.code, "The CRM refused the tenant's grant; tenant paused until re-authorized");
            let waiting = crmsync_limits::wait_error(crmsync_limits::Wait::Paused { reason });
            note_wait(ctx, tenant, flush_id, &waiting).await;
            return Err(errors::sink(waiting));
        }
        Err(e) => {
            note_wait(ctx, tenant, flush_id, &e).await;
            // The limits may have been raised since this job read them (a raise wakes the
            // writes that wait, not one still running): read them again before waiting.
            if matches!(e.code, "BUDGET" | "ORG_BUDGET")
                && let Some(now) = backfill::load_tenant(ctx, &tenant.id).await?
                && LimitSettings::of(&now) != LimitSettings::of(tenant)
            {
                return Err(JobError::Defer {
                    until_ms: now_ms() + 100,
                    code: e.code,
                    reason: "the tenant's limits changed; writing again".into(),
                });
            }
            return Err(errors::sink(e));
        }
    };
    if written.outcomes.len() != entries.len() {
        return Err(JobError::retry(
            "OTHER",
            format!(
                "the sink answered {} outcomes for {} writes",
                written.outcomes.len(),
                entries.len()
            ),
        ));
    }

    let mut counts: BTreeMap<(Source, String), u64> = BTreeMap::new();
    let mut per_source: BTreeMap<Source, u64> = BTreeMap::new();
    let mut results = Vec::with_capacity(entries.len());
    let mut rejected = Vec::new();
    for (entry, outcome) in entries.iter().zip(written.outcomes) {
        *per_source.entry(entry.source.clone()).or_default() += 1;
        let (result, field, metric) = match outcome {
            Outcome::Written { rid, inserted } => {
                let f = if inserted { "inserted" } else { "updated" };
                (Written::Record(rid), f.to_owned(), f)
            }
            Outcome::Deleted => (Written::Deleted, "deleted".to_owned(), "deleted"),
            Outcome::Rejected { code, field, message } => {
                let f = format!("failed:{code}");
                rejected.push((
                    entry.source.clone(),
                    Rejection {
                        run_id: entry.source.label().to_owned(),
                        contact_id: entry.contact_id.clone(),
                        email: entry.email().to_owned(),
                        code,
                        field,
                        message,
                    },
                ));
                (Written::Refused, f, "rejected")
            }
        };
        crmsync_metrics::records_written(metric, 1);
        *counts.entry((entry.source.clone(), field)).or_default() += 1;
        results.push((entry, result));
    }
    // The calls count for the source with most entries in the batch; their cost is shared by
    // entries (in thousandths of a credit): change-feed records riding in a backfill's batch
    // cost what they add to it.
    if let Some((main, _)) = per_source.iter().max_by_key(|(_, n)| **n) {
        *counts.entry((main.clone(), "calls".into())).or_default() += written.calls;
        let total = written.cost * 1000;
        let n = entries.len().max(1) as u64;
        let mut given = 0;
        for (source, k) in &per_source {
            let share = total * k / n;
            given += share;
            *counts.entry((source.clone(), "credits_milli".into())).or_default() += share;
        }
        *counts.entry((main.clone(), "credits_milli".into())).or_default() += total - given;
    }
    let counts: Vec<FlushCount> = counts
        .into_iter()
        .map(|((source, field), n)| FlushCount { source, field, n })
        .collect();
    let completed = buffer
        .done(flush_id, &results, &counts, &rejected)
        .await
        .map_err(errors::buffer)?;
    debug!(
        tenant = %tenant.id,
        flush = %flush_id,
        changes = entries.len(),
        calls = written.calls,
        cost = written.cost,
        "Flushed a batch"
    );
    for run in completed {
        info!(tenant = %tenant.id, %run, "Backfill run completed");
    }
    Ok(())
}
