//! The flush job: write one batch (up to 100 changes of one kind: upserts, moves by id, or
//! deletions) from a tenant's write buffer to Zoho, under the tenant's limits, and record what
//! happened to each.
//!
//! A flush waits for a full batch of 100 while a backfill of the tenant is still reading
//! pages (more records are coming, and a full batch costs the fewest credits per record);
//! once no run is reading, or when change-feed records wait, it writes whatever is there.
//! Before taking a batch it re-reads from Nylas the contacts that took over a shared email.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crmsync_domain::{FieldLimits, MapOutcome, map_contact};
use crmsync_limits::Priority;
use crmsync_nylas::Grant;
use crmsync_producer::{
    Change, Entry, FlushCount, FlushWrites, Op, Rejection, RunStatus, Source, TenantKeys, WriteBuffer,
};
use crmsync_queue::{JobError, JobInfo, now_ms};
use crmsync_tenants::Tenant;
use crmsync_zoho::{DeleteResult, RecordResult, ZohoOrg};
use tracing::{debug, info};

use crate::context::Context;
use crate::{backfill, calls, errors};

/// Zoho's largest upsert, update or delete.
const BATCH: usize = crmsync_zoho::MAX_BATCH;
/// Contacts re-read from Nylas per flush.
const REFRESH_BATCH: usize = 50;
/// How long change-feed records may wait for a fuller batch (`--flush-window-ms` of the
/// webhook server; the flush job's own follow-ups use the same).
pub const FEED_WINDOW: Duration = Duration::from_secs(2);

/// Enqueues a flush of the tenant's buffer (once per `key`), now or after `delay`.
pub async fn enqueue(ctx: &Context, tenant: &str, key: &str, delay: Option<Duration>) -> Result<(), JobError> {
    crmsync_producer::schedule_flush(&ctx.writes, tenant, key, delay)
        .await
        .map_err(errors::redis)
}

/// The smallest batch worth writing now: a full one while a backfill is still reading pages
/// and no change-feed record waits; otherwise anything.
async fn min_batch(ctx: &Context, tenant: &str, feed_waiting: u64) -> Result<usize, JobError> {
    if feed_waiting > 0 {
        return Ok(1);
    }
    let reading =
        matches!(ctx.runs.active(tenant).await.map_err(errors::redis)?, Some(r) if r.status == RunStatus::Running);
    Ok(if reading { BATCH } else { 1 })
}

/// Re-reads contacts whose latest state is in doubt (they took over a shared email, or two
/// of their events fell in one second) and pushes their current state.
async fn refresh(ctx: &Context, tenant: &Tenant, buffer: &WriteBuffer) -> Result<(), JobError> {
    let ids = buffer.take_refresh(REFRESH_BATCH).await.map_err(errors::redis)?;
    if ids.is_empty() {
        return Ok(());
    }
    let grant = Grant {
        api_uri: &tenant.nylas.api_uri,
        grant_id: &tenant.nylas.grant_id,
        api_key: tenant.nylas.api_key.expose(),
    };
    let mut changes = Vec::with_capacity(ids.len());
    for id in ids {
        let at_ms = now_ms() / 1000 * 1000;
        let change = match ctx.nylas.get_contact(&grant, &id).await.map_err(errors::nylas)? {
            Some(c) => match map_contact(&c, &FieldLimits::ZOHO) {
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
    debug!(tenant = %tenant.id, n = changes.len(), "Re-read contacts that took over shared emails");
    // Forced: a fresh read is written even if it hashes as written before (the record may
    // hold another contact's fields), and is at least as new as any event recorded so far.
    buffer
        .push(&Source::Feed, true, &changes)
        .await
        .map_err(errors::redis)?;
    Ok(())
}

/// What happened to one entry.
enum Outcome {
    Written {
        zoho_id: String,
        inserted: bool,
    },
    /// Deleted; `known` when it was the contact's own known record (forget it then).
    Deleted {
        known: bool,
    },
    Rejected {
        code: String,
        field: Option<String>,
        message: String,
    },
}

pub async fn run_flush(ctx: &Context, job: FlushWrites, info: &JobInfo) -> Result<(), JobError> {
    // The job id names the flush: a retried or deferred flush resumes its own batch.
    let flush_id = info.job_id.clone();
    let buffer = ctx.buffer(&job.tenant);
    let tenant = backfill::load_tenant(ctx, &job.tenant).await?;
    refresh(ctx, &tenant, &buffer).await?;
    let (_, feed, _) = buffer.waiting().await.map_err(errors::redis)?;
    let min = min_batch(ctx, &job.tenant, feed).await?;
    let entries = buffer.take(&flush_id, BATCH, min).await.map_err(|e| match e {
        crmsync_producer::BufferError::Redis(e) => errors::redis(e),
        other => JobError::permanent(other),
    })?;
    if !entries.is_empty() {
        debug!(tenant = %job.tenant, flush = %flush_id, attempt = info.attempt, keys = ?entries.iter().map(|e| e.contact_id.as_str()).collect::<Vec<_>>(), "Took a batch");
        write_batch(ctx, &tenant, &buffer, &flush_id, &entries).await?;
    } else {
        debug!(tenant = %job.tenant, min, "Nothing to flush yet");
    }

    // Keep going while changes wait: at once for a full batch, contacts to re-read, or when
    // nothing more is coming; after the feed window for change-feed stragglers.
    let (waiting, feed, to_refresh) = buffer.waiting().await.map_err(errors::redis)?;
    if entries.is_empty() && to_refresh == 0 {
        return Ok(());
    }
    if waiting >= BATCH as u64 || to_refresh > 0 {
        enqueue(ctx, &job.tenant, &format!("after:{flush_id}"), None).await?;
    } else if waiting > 0 && min_batch(ctx, &job.tenant, feed).await? == 1 {
        let delay = (feed > 0).then_some(FEED_WINDOW);
        enqueue(ctx, &job.tenant, &format!("after:{flush_id}"), delay).await?;
    }
    Ok(())
}

async fn write_batch(
    ctx: &Context,
    tenant: &Tenant,
    buffer: &WriteBuffer,
    flush_id: &str,
    entries: &[Entry],
) -> Result<(), JobError> {
    let org = tenant.zoho_org(&ctx.opts.namespace).map_err(JobError::permanent)?;
    let priority = if entries.iter().any(|e| e.source == Source::Feed) {
        Priority::Change
    } else {
        Priority::Backfill
    };
    let state = ctx.tenant_state(&tenant.id);
    let kind = match &entries[0].op {
        Op::Upsert(_) => "upsert",
        Op::Move { .. } => "move",
        Op::Delete { .. } => "delete",
    };
    let (outcomes, calls, credits) = match &entries[0].op {
        Op::Upsert(_) => upsert_all(ctx, tenant, &org, entries, priority).await?,
        Op::Move { .. } => move_all(ctx, tenant, &org, entries, priority).await?,
        Op::Delete { .. } => delete_all(ctx, tenant, &org, entries, priority).await?,
    };

    let mut counts: BTreeMap<(Source, String), u64> = BTreeMap::new();
    let mut per_source: BTreeMap<Source, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut forget = Vec::new();
    let mut written: Vec<(&str, Option<(&str, &str)>)> = Vec::new();
    let mut rejected = Vec::new();
    for (entry, outcome) in entries.iter().zip(&outcomes) {
        *per_source.entry(entry.source.clone()).or_default() += 1;
        let field = match outcome {
            Outcome::Written { zoho_id, inserted } => {
                ids.push((entry.contact_id.as_str(), zoho_id.as_str()));
                let email = match &entry.op {
                    Op::Upsert(r) | Op::Move { record: r, .. } => r.email.as_str(),
                    Op::Delete { email } => email.as_str(),
                };
                written.push((entry.contact_id.as_str(), Some((entry.hash.as_str(), email))));
                if *inserted {
                    "inserted".to_owned()
                } else {
                    "updated".to_owned()
                }
            }
            Outcome::Deleted { known } => {
                if *known {
                    forget.push(entry.contact_id.as_str());
                    written.push((entry.contact_id.as_str(), None));
                }
                "deleted".to_owned()
            }
            Outcome::Rejected { code, field, message } => {
                rejected.push(Rejection {
                    run_id: match &entry.source {
                        Source::Run(r) => r.clone(),
                        Source::Feed => "feed".into(),
                    },
                    contact_id: entry.contact_id.clone(),
                    email: match &entry.op {
                        Op::Upsert(r) | Op::Move { record: r, .. } => r.email.clone(),
                        Op::Delete { email } => email.clone(),
                    },
                    code: code.clone(),
                    field: field.clone(),
                    message: message.clone(),
                });
                format!("failed:{code}")
            }
        };
        crmsync_metrics::records_written(
            match outcome {
                Outcome::Written { inserted: true, .. } => "inserted",
                Outcome::Written { inserted: false, .. } => "updated",
                Outcome::Deleted { .. } => "deleted",
                Outcome::Rejected { .. } => "rejected",
            },
            1,
        );
        *counts.entry((entry.source.clone(), field)).or_default() += 1;
    }
    // The calls and their credits count for the source with most entries in the batch.
    if let Some((main, _)) = per_source.iter().max_by_key(|(_, n)| **n) {
        *counts.entry((main.clone(), "zoho_calls".into())).or_default() += calls;
        *counts.entry((main.clone(), "credits".into())).or_default() += credits;
    }
    state.set_zoho_ids(&ids).await.map_err(errors::redis)?;
    state.forget_zoho_ids(&forget).await.map_err(errors::redis)?;
    buffer.set_written(&written).await.map_err(errors::redis)?;
    state.add_rejections(&rejected).await.map_err(errors::redis)?;
    let counts: Vec<FlushCount> = counts
        .into_iter()
        .map(|((source, field), n)| FlushCount { source, field, n })
        .collect();
    let active_key = TenantKeys::new(&ctx.opts.namespace, &tenant.id).active_run();
    let completed = buffer
        .done(flush_id, &active_key, &counts)
        .await
        .map_err(errors::redis)?;
    debug!(tenant = %tenant.id, flush = %flush_id, kind, changes = entries.len(), calls, credits, "Flushed a batch");
    debug!(
        tenant = %tenant.id,
        flush = %flush_id,
        batch = ?entries
            .iter()
            .map(|e| match &e.op {
                Op::Upsert(r) => format!("{} upsert {}", e.contact_id, r.email),
                Op::Move { from, record } => format!("{} move {from} -> {}", e.contact_id, record.email),
                Op::Delete { email } => format!("{} delete {email}", e.contact_id),
            })
            .collect::<Vec<_>>(),
        "Batch contents"
    );
    for run in completed {
        info!(tenant = %tenant.id, %run, "Backfill run completed");
    }
    Ok(())
}

fn record_outcome(r: &RecordResult) -> Outcome {
    match r {
        RecordResult::Inserted { id } => Outcome::Written {
            zoho_id: id.clone(),
            inserted: true,
        },
        RecordResult::Updated { id } => Outcome::Written {
            zoho_id: id.clone(),
            inserted: false,
        },
        RecordResult::Rejected { code, field, message } => Outcome::Rejected {
            code: code.clone(),
            field: field.clone(),
            message: message.clone(),
        },
    }
}

type Written = (Vec<Outcome>, u64, u64);

/// The record id of each contact, when the record it last wrote holds `emails[i]`: the only
/// record a move or a deletion may touch by id (otherwise it is found by email).
async fn known_ids(
    ctx: &Context,
    tenant: &str,
    cids: &[&str],
    emails: &[&str],
) -> Result<Vec<Option<String>>, JobError> {
    let ids = ctx.tenant_state(tenant).zoho_ids(cids).await.map_err(errors::redis)?;
    let written = ctx.buffer(tenant).written_emails(cids).await.map_err(errors::redis)?;
    Ok(ids
        .into_iter()
        .zip(written)
        .zip(emails)
        .map(|((id, w), want)| id.filter(|_| w.as_deref() == Some(*want)))
        .collect())
}

async fn upsert_all(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    entries: &[Entry],
    p: Priority,
) -> Result<Written, JobError> {
    let records: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.op {
            Op::Upsert(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let reply = calls::upsert(ctx, tenant, org, &records, p).await?;
    Ok((
        reply.results.iter().map(record_outcome).collect(),
        1,
        crmsync_zoho::upsert_cost(records.len()),
    ))
}

/// Moves records to their contacts' new emails, by id. A record whose id is unknown is found
/// by its former email; one that is nowhere is created.
async fn move_all(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    entries: &[Entry],
    p: Priority,
) -> Result<Written, JobError> {
    // The buffer hands out batches of one kind: every entry here is a move.
    let moves: Vec<(&str, &crmsync_domain::ZohoContact)> = entries
        .iter()
        .filter_map(|e| match &e.op {
            Op::Move { from, record } => Some((from.as_str(), record)),
            _ => None,
        })
        .collect();
    let cids: Vec<&str> = entries.iter().map(|e| e.contact_id.as_str()).collect();
    let froms: Vec<&str> = moves.iter().map(|(f, _)| *f).collect();
    let known = known_ids(ctx, &tenant.id, &cids, &froms).await?;
    let (mut calls_made, mut credits) = (0u64, 0u64);
    let mut by_id: Vec<(usize, String)> = Vec::new();
    let mut create: Vec<usize> = Vec::new();
    for (i, ((from, _), id)) in moves.iter().zip(known).enumerate() {
        match id {
            Some(id) => by_id.push((i, id)),
            None => {
                calls_made += 1;
                credits += 1;
                match calls::search(ctx, tenant, org, from, p).await?.into_iter().next() {
                    Some(id) => by_id.push((i, id)),
                    None => create.push(i),
                }
            }
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = moves.iter().map(|_| None).collect();
    if !by_id.is_empty() {
        let pairs: Vec<(String, crmsync_domain::ZohoContact)> =
            by_id.iter().map(|(i, id)| (id.clone(), moves[*i].1.clone())).collect();
        let reply = calls::update(ctx, tenant, org, &pairs, p).await?;
        calls_made += 1;
        credits += crmsync_zoho::upsert_cost(pairs.len());
        for ((i, _), r) in by_id.iter().zip(&reply.results) {
            outcomes[*i] = Some(record_outcome(r));
        }
    }
    if !create.is_empty() {
        let records: Vec<_> = create.iter().map(|i| moves[*i].1.clone()).collect();
        let reply = calls::upsert(ctx, tenant, org, &records, p).await?;
        calls_made += 1;
        credits += crmsync_zoho::upsert_cost(records.len());
        for (i, r) in create.iter().zip(&reply.results) {
            outcomes[*i] = Some(record_outcome(r));
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Rejected {
                code: "NO_RESULT".into(),
                field: None,
                message: "Zoho returned no result for this record".into(),
            })
        })
        .collect();
    Ok((outcomes, calls_made, credits))
}

/// Deletes the records of emails nobody has any more: by the id kept from the write, else
/// found by email; a record that is already gone counts as deleted.
async fn delete_all(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    entries: &[Entry],
    p: Priority,
) -> Result<Written, JobError> {
    let cids: Vec<&str> = entries.iter().map(|e| e.contact_id.as_str()).collect();
    let emails: Vec<&str> = entries
        .iter()
        .map(|e| match &e.op {
            Op::Delete { email } => email.as_str(),
            Op::Upsert(r) | Op::Move { record: r, .. } => r.email.as_str(),
        })
        .collect();
    let known = known_ids(ctx, &tenant.id, &cids, &emails).await?;
    let (mut calls_made, mut credits) = (0u64, 0u64);
    // (entry, record id, whether it is the contact's own known record)
    let mut ids: Vec<(usize, String, bool)> = Vec::new();
    for (i, id) in known.into_iter().enumerate() {
        match id {
            Some(id) => ids.push((i, id, true)),
            None => {
                calls_made += 1;
                credits += 1;
                for id in calls::search(ctx, tenant, org, emails[i], p).await? {
                    ids.push((i, id, false));
                }
            }
        }
    }
    let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
    if !ids.is_empty() {
        let list: Vec<String> = ids.iter().map(|(_, id, _)| id.clone()).collect();
        for chunk in list.chunks(BATCH) {
            let reply = calls::delete(ctx, tenant, org, chunk, p).await?;
            calls_made += 1;
            credits += 1;
            for r in &reply.results {
                let Some((i, _, known)) = ids.iter().find(|(_, x, _)| x == r.id()) else {
                    continue;
                };
                let outcome = match r {
                    DeleteResult::Deleted { .. } => Outcome::Deleted { known: *known },
                    // Already gone (deleted in the CRM by hand, or by an earlier attempt).
                    DeleteResult::Rejected { code, .. } if code == "INVALID_DATA" => Outcome::Deleted { known: *known },
                    DeleteResult::Rejected { code, message, .. } => Outcome::Rejected {
                        code: code.clone(),
                        field: None,
                        message: message.clone(),
                    },
                };
                outcomes.insert(*i, outcome);
            }
        }
    }
    Ok((
        (0..entries.len())
            .map(|i| outcomes.remove(&i).unwrap_or(Outcome::Deleted { known: false }))
            .collect(),
        calls_made,
        credits,
    ))
}
