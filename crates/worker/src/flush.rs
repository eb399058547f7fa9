//! The flush job: write one batch (up to 100 records) from a tenant's write buffer to Zoho,
//! under the tenant's limits, and record what happened to each record.
//!
//! A flush waits for a full batch of 100 while a backfill of the tenant is still reading
//! pages (more records are coming, and a full batch costs the fewest credits per record);
//! once no run is reading, or when change-feed records wait, it writes whatever is there.

use std::collections::BTreeMap;
use std::time::Duration;

use crmsync_limits::Priority;
use crmsync_producer::{FlushCount, FlushWrites, Rejection, RunStatus, Source, TenantKeys};
use crmsync_queue::{EnqueueOptions, JobError, JobInfo};
use crmsync_zoho::RecordResult;
use tracing::{debug, info};

use crate::context::Context;
use crate::{backfill, calls, errors};

/// Zoho's largest upsert.
const BATCH: usize = crmsync_zoho::MAX_BATCH;
/// How long change-feed records may wait for a fuller batch.
pub const FEED_WINDOW: Duration = Duration::from_secs(2);

/// Enqueues a flush of the tenant's buffer (once per `key`), now or after `delay`.
pub(crate) async fn enqueue(ctx: &Context, tenant: &str, key: &str, delay: Option<Duration>) -> Result<(), JobError> {
    let mut opts = EnqueueOptions::default().idempotency_key(format!("flush:{tenant}:{key}"));
    if let Some(d) = delay {
        opts = opts.delay(d);
    }
    ctx.writes
        .enqueue_with(
            &FlushWrites {
                tenant: tenant.to_owned(),
            },
            opts,
        )
        .await
        .map_err(errors::redis)?;
    Ok(())
}

/// The smallest batch worth writing now: a full one while a backfill is still reading pages
/// and no change-feed record waits; otherwise anything.
async fn min_batch(ctx: &Context, tenant: &str) -> Result<usize, JobError> {
    let (_, feed) = ctx.buffer(tenant).waiting().await.map_err(errors::redis)?;
    if feed > 0 {
        return Ok(1);
    }
    let reading =
        matches!(ctx.runs.active(tenant).await.map_err(errors::redis)?, Some(r) if r.status == RunStatus::Running);
    Ok(if reading { BATCH } else { 1 })
}

pub async fn run_flush(ctx: &Context, job: FlushWrites, info: &JobInfo) -> Result<(), JobError> {
    // The job id names the flush: a retried or deferred flush resumes its own batch.
    let flush_id = info.job_id.clone();
    let buffer = ctx.buffer(&job.tenant);
    let min = min_batch(ctx, &job.tenant).await?;
    let entries = buffer.take(&flush_id, BATCH, min).await.map_err(|e| match e {
        crmsync_producer::BufferError::Redis(e) => errors::redis(e),
        other => JobError::permanent(other),
    })?;
    if entries.is_empty() {
        debug!(tenant = %job.tenant, min, "Nothing to flush yet");
        return Ok(());
    }
    let tenant = backfill::load_tenant(ctx, &job.tenant).await?;
    let org = tenant.zoho_org(&ctx.opts.namespace).map_err(JobError::permanent)?;
    let priority = if entries.iter().any(|e| e.source == Source::Feed) {
        Priority::Change
    } else {
        Priority::Backfill
    };
    let records: Vec<_> = entries.iter().map(|e| e.record.clone()).collect();
    let reply = calls::upsert(ctx, &tenant, &org, &records, priority).await?;

    let mut counts: BTreeMap<(Source, String), u64> = BTreeMap::new();
    let mut per_source: BTreeMap<Source, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut rejected = Vec::new();
    for (entry, result) in entries.iter().zip(&reply.results) {
        *per_source.entry(entry.source.clone()).or_default() += 1;
        let field = match result {
            RecordResult::Inserted { id } => {
                ids.push((entry.contact_id.as_str(), id.as_str()));
                "inserted".to_owned()
            }
            RecordResult::Updated { id } => {
                ids.push((entry.contact_id.as_str(), id.as_str()));
                "updated".to_owned()
            }
            RecordResult::Rejected { code, field, message } => {
                rejected.push(Rejection {
                    run_id: match &entry.source {
                        Source::Run(r) => r.clone(),
                        Source::Feed => "feed".into(),
                    },
                    contact_id: entry.contact_id.clone(),
                    email: entry.record.email.clone(),
                    code: code.clone(),
                    field: field.clone(),
                    message: message.clone(),
                });
                format!("failed:{code}")
            }
        };
        *counts.entry((entry.source.clone(), field)).or_default() += 1;
    }
    // The call and its credits count for the source with most records in the batch.
    if let Some((main, _)) = per_source.iter().max_by_key(|(_, n)| **n) {
        *counts.entry((main.clone(), "zoho_calls".into())).or_default() += 1;
        *counts.entry((main.clone(), "credits".into())).or_default() += crmsync_zoho::upsert_cost(records.len());
    }
    let state = ctx.tenant_state(&job.tenant);
    state.set_zoho_ids(&ids).await.map_err(errors::redis)?;
    state.add_rejections(&rejected).await.map_err(errors::redis)?;
    let counts: Vec<FlushCount> = counts
        .into_iter()
        .map(|((source, field), n)| FlushCount { source, field, n })
        .collect();
    let active_key = TenantKeys::new(&ctx.opts.namespace, &job.tenant).active_run();
    let completed = buffer
        .done(&flush_id, &active_key, &counts)
        .await
        .map_err(errors::redis)?;
    for run in completed {
        info!(tenant = %job.tenant, %run, "Backfill run completed");
    }

    // Keep going while records wait: at once for a full batch or when nothing more is coming,
    // after the feed window for change-feed stragglers.
    let (waiting, feed) = buffer.waiting().await.map_err(errors::redis)?;
    if waiting >= BATCH as u64 {
        enqueue(ctx, &job.tenant, &format!("after:{flush_id}"), None).await?;
    } else if waiting > 0 {
        let min = min_batch(ctx, &job.tenant).await?;
        if min == 1 {
            let delay = (feed > 0).then_some(FEED_WINDOW);
            enqueue(ctx, &job.tenant, &format!("after:{flush_id}"), delay).await?;
        }
    }
    Ok(())
}
