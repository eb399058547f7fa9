//! The backfill page job: read one Nylas page, enqueue the next page at once (pages
//! pipeline across workers), map the contacts with the CRM's field limits, push them into the
//! destination's write buffer (which flush jobs write in full batches), and count the page into
//! its run (once, however often the job runs).
//!
//! Re-running a page is safe: the next page's enqueue is idempotent, a buffered record for a
//! contact replaces the waiting one, writes match on the CRM's key, and the page's counts are
//! recorded once.

use crmsync_domain::{CrmRecord, MapOutcome, map_contact};
use crmsync_nylas::Grant;
use crmsync_producer::{BackfillPage, Change, FlushTrigger, PageCounts, PageMode, RunStatus, Source};
use crmsync_queue::{EnqueueOptions, JobError, JobInfo, now_ms};
use crmsync_tenants::{StoreError, Tenant};
use tracing::{debug, info, warn};

use crate::context::{Context, profile};
use crate::{errors, flush};

/// Runs one page; marks the run failed when the page fails for good.
pub async fn run_page(ctx: &Context, job: BackfillPage, info: &JobInfo) -> Result<(), JobError> {
    let res = match &job.mode {
        PageMode::Backfill => page(ctx, &job).await,
        PageMode::Crm => crate::reconcile::crm_page(ctx, &job).await,
        PageMode::Book => crate::reconcile::book_page(ctx, &job).await,
        PageMode::Sweep { bucket } => crate::reconcile::sweep(ctx, &job, *bucket).await,
    };
    if let Err(e) = &res {
        let final_attempt = match e {
            JobError::Permanent { .. } => true,
            JobError::Retry { .. } | JobError::RetryAt { .. } => info.attempt >= info.policy.max_attempts,
            JobError::Defer { .. } => false,
        };
        if final_attempt {
            let reason = format!("page {} failed: {e}", job.page);
            warn!(tenant = %job.tenant, run = %job.run_id, %reason, "Backfill run failed");
            if let Err(error) = ctx.runs.end(&job.tenant, &job.run_id, RunStatus::Failed, &reason).await {
                warn!(tenant = %job.tenant, run = %job.run_id, %error, "Could not mark the run failed; it ends when its lock expires");
            }
            // What the run already read still gets written.
            if let Err(error) =
                flush::enqueue(ctx, &job.tenant, FlushTrigger::RunEnded { run: &job.run_id }, None).await
            {
                warn!(tenant = %job.tenant, run = %job.run_id, %error, "Could not schedule the failed run's last writes; the next flush writes them");
            }
        }
    }
    res
}

/// The tenant, or None when it no longer exists (its jobs end quietly: it was removed).
pub(crate) async fn load_tenant(ctx: &Context, id: &str) -> Result<Option<Tenant>, JobError> {
    match ctx.tenants.get(id).await {
        Ok(t) => Ok(Some(t)),
        Err(StoreError::NotFound(_)) => {
            info!(tenant = %id, "The tenant no longer exists; its job is dropped");
            Ok(None)
        }
        Err(StoreError::Redis(e)) => Err(errors::redis(e)),
        Err(other) => Err(errors::tenant(other)),
    }
}

/// One page of the tenant's address book from Nylas (paced: Nylas allows 200 contact requests
/// per second per grant, fleet-wide).
pub(crate) async fn read_book(
    ctx: &Context,
    tenant: &Tenant,
    cursor: Option<&str>,
) -> Result<crmsync_nylas::ContactPage, JobError> {
    let grant = Grant {
        api_uri: &tenant.nylas.api_uri,
        grant_id: &tenant.nylas.grant_id,
        api_key: tenant.nylas.api_key.expose(),
    };
    ctx.limiter
        .pace(&format!("nylas:{}", tenant.nylas.grant_id), crmsync_nylas::GRANT_RPS)
        .await
        .map_err(errors::redis)?;
    ctx.nylas
        .list_contacts(&grant, cursor, ctx.opts.page_size)
        .await
        .map_err(errors::nylas)
}

async fn page(ctx: &Context, job: &BackfillPage) -> Result<(), JobError> {
    let run = ctx.runs.get(&job.tenant, &job.run_id).await.map_err(|e| match e {
        crmsync_producer::RunError::NotFound(r) => JobError::permanent("RUN_GONE", format!("run {r} no longer exists")),
        other => errors::redis(other),
    })?;
    if run.status != RunStatus::Running {
        debug!(run = %job.run_id, status = run.status.as_str(), "Run not running; page dropped");
        return Ok(());
    }
    let Some(tenant) = load_tenant(ctx, &job.tenant).await? else {
        return Ok(());
    };
    let nylas_page = read_book(ctx, &tenant, job.cursor.as_deref()).await?;
    if let Some(cursor) = &nylas_page.next_cursor {
        let next = BackfillPage {
            tenant: job.tenant.clone(),
            run_id: job.run_id.clone(),
            page: job.page + 1,
            cursor: Some(cursor.clone()),
            force: job.force,
            mode: job.mode.clone(),
        };
        ctx.backfill
            .enqueue_with(&next, EnqueueOptions::default().idempotency_key(next.idempotency_key()))
            .await
            .map_err(errors::redis)?;
    }

    let mut counts = PageCounts {
        contacts_read: nylas_page.contacts.len() as u64,
        ..PageCounts::default()
    };
    let limits = profile(&tenant).field_limits;
    let mut mapped: Vec<(String, CrmRecord)> = Vec::new();
    for c in &nylas_page.contacts {
        match map_contact(c, &limits) {
            MapOutcome::Mapped { record, adjustments } => {
                if !adjustments.is_empty() {
                    counts.adjusted += 1;
                }
                mapped.push((c.id.clone(), record));
            }
            MapOutcome::Skipped(reason) => counts.skip(reason),
        }
    }
    counts.mapped = mapped.len() as u64;
    // Shared emails are settled by the buffer: the contact with the smallest id owns an
    // email, whatever order pages run in. The run counts merged contacts when it completes.
    // Nylas stamps changes in whole seconds: a read is stamped at its second too, so a change
    // and a read within the same second are ordered by arrival.
    let read_at = now_ms() / 1000 * 1000;
    let changes: Vec<Change> = mapped
        .into_iter()
        .map(|(contact_id, record)| Change::Upsert {
            contact_id,
            at_ms: read_at,
            record,
        })
        .collect();
    let pushed = push_run(ctx, &ctx.buffer(&tenant), job, job.force, &changes).await?;
    counts.unchanged = pushed.unchanged;

    let status = ctx
        .runs
        .record_page(
            &job.tenant,
            &job.run_id,
            job.page,
            nylas_page.next_cursor.is_some(),
            &counts,
        )
        .await
        .map_err(errors::redis)?;
    after_page(ctx, job, status).await
}

/// Pushes a run's changes into the tenant's buffer and schedules one flush per full batch the
/// push completed (the cheapest per record).
pub(crate) async fn push_run(
    ctx: &Context,
    buffer: &crmsync_producer::WriteBuffer,
    job: &BackfillPage,
    force: bool,
    changes: &[Change],
) -> Result<crmsync_producer::Pushed, JobError> {
    let pushed = buffer
        .push(&Source::Run(job.run_id.clone()), force, changes)
        .await
        .map_err(errors::buffer)?;
    crmsync_producer::schedule_full_flushes(&ctx.writes, buffer, &job.tenant, pushed.schedule)
        .await
        .map_err(errors::buffer)?;
    Ok(pushed)
}

/// What follows a counted page: once every page is read, the run's records are written
/// whatever the batch size (a drain flush), unless it completed already.
pub(crate) async fn after_page(ctx: &Context, job: &BackfillPage, status: RunStatus) -> Result<(), JobError> {
    match status {
        RunStatus::Running => Ok(()),
        RunStatus::Completed => {
            info!(tenant = %job.tenant, run = %job.run_id, pages = job.page + 1, "Run completed");
            Ok(())
        }
        _ => {
            flush::enqueue(
                ctx,
                &job.tenant,
                FlushTrigger::Drain {
                    run: &job.run_id,
                    page: job.page,
                },
                None,
            )
            .await
        }
    }
}
