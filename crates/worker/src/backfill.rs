//! The backfill page job: read one Nylas page, enqueue the next page at once (pages
//! pipeline across workers), map the contacts, upsert them into Zoho in batches of at most
//! 100, and count the page into its run (once, however often the job runs).
//!
//! Re-running a page is safe: the next page's enqueue is idempotent, upserts match on Email,
//! and the page's counts are recorded once.

use std::collections::HashMap;

use crmsync_domain::{FieldLimits, MapOutcome, ZohoContact, dedupe_by_email, map_contact};
use crmsync_limits::Priority;
use crmsync_nylas::Grant;
use crmsync_producer::{BackfillPage, PageCounts, Rejection, RunStatus, TenantState};
use crmsync_queue::{EnqueueOptions, JobError, JobInfo};
use crmsync_tenants::{StoreError, Tenant};
use crmsync_zoho::{RecordResult, ZohoOrg};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::{calls, errors};

/// Runs one page; marks the run failed when the page fails for good.
pub async fn run_page(ctx: &Context, job: BackfillPage, info: &JobInfo) -> Result<(), JobError> {
    let res = page(ctx, &job).await;
    if let Err(e) = &res {
        let final_attempt = match e {
            JobError::Permanent(_) => true,
            JobError::Retry(_) | JobError::RetryAt { .. } => info.attempt >= info.policy.max_attempts,
            JobError::Defer { .. } => false,
        };
        if final_attempt {
            let reason = format!("page {} failed: {e}", job.page);
            warn!(tenant = %job.tenant, run = %job.run_id, %reason, "Backfill run failed");
            let _ = ctx.runs.end(&job.tenant, &job.run_id, RunStatus::Failed, &reason).await;
        }
    }
    res
}

async fn load_tenant(ctx: &Context, id: &str) -> Result<Tenant, JobError> {
    ctx.tenants.get(id).await.map_err(|e| match e {
        StoreError::Redis(e) => errors::redis(e),
        other => JobError::permanent(other),
    })
}

async fn page(ctx: &Context, job: &BackfillPage) -> Result<(), JobError> {
    let run = ctx.runs.get(&job.tenant, &job.run_id).await.map_err(|e| match e {
        crmsync_producer::RunError::NotFound(r) => JobError::permanent(format!("run {r} no longer exists")),
        other => errors::redis(other),
    })?;
    if run.status != RunStatus::Running {
        debug!(run = %job.run_id, status = run.status.as_str(), "Run not running; page dropped");
        return Ok(());
    }
    let tenant = load_tenant(ctx, &job.tenant).await?;
    let org = tenant.zoho_org(&ctx.opts.namespace).map_err(JobError::permanent)?;
    let grant = Grant {
        api_uri: &tenant.nylas.api_uri,
        grant_id: &tenant.nylas.grant_id,
        api_key: tenant.nylas.api_key.expose(),
    };

    let nylas_page = ctx
        .nylas
        .list_contacts(&grant, job.cursor.as_deref(), ctx.opts.page_size)
        .await
        .map_err(errors::nylas)?;
    if let Some(cursor) = &nylas_page.next_cursor {
        let next = BackfillPage {
            tenant: job.tenant.clone(),
            run_id: job.run_id.clone(),
            page: job.page + 1,
            cursor: Some(cursor.clone()),
            force: job.force,
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
    let mut mapped: Vec<(String, ZohoContact)> = Vec::new();
    for c in &nylas_page.contacts {
        match map_contact(c, &FieldLimits::ZOHO) {
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
    let emails: Vec<&str> = mapped.iter().map(|(_, r)| r.email.as_str()).collect();
    ctx.runs
        .add_emails(&job.tenant, &job.run_id, &emails)
        .await
        .map_err(errors::redis)?;
    // Shared emails: within the page the smallest id wins; across pages the tenant's
    // email owners decide. The run counts merged contacts exactly when it completes.
    let (kept, _merged) = dedupe_by_email(&mapped);

    let state = ctx.tenant_state(&job.tenant);
    let pairs: Vec<(&str, &str)> = kept.iter().map(|(id, r)| (r.email.as_str(), id.as_str())).collect();
    let owned = state.claim_emails(&pairs).await.map_err(errors::redis)?;
    let mut to_write: Vec<&(String, ZohoContact)> = Vec::with_capacity(kept.len());
    for (item, own) in kept.into_iter().zip(owned) {
        if own {
            to_write.push(item);
        }
    }

    write(ctx, job, &tenant, &org, &state, &to_write).await?;
    repair_shared_emails(ctx, job, &tenant, &org, &grant, &state, &to_write).await?;

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
    if status == RunStatus::Completed {
        info!(tenant = %job.tenant, run = %job.run_id, pages = job.page + 1, "Backfill run completed");
    }
    Ok(())
}

/// Upserts records in batches of at most 100, each under the tenant's limits, and counts the
/// per-record outcomes. Batches written by an earlier, interrupted run of this page (deferred
/// for budget, or crashed) are skipped, so resuming a page spends no credit twice.
async fn write(
    ctx: &Context,
    job: &BackfillPage,
    tenant: &Tenant,
    org: &ZohoOrg,
    state: &TenantState,
    items: &[&(String, ZohoContact)],
) -> Result<(), JobError> {
    let done = ctx
        .runs
        .page_batches_done(&job.tenant, &job.run_id, job.page)
        .await
        .map_err(errors::redis)?;
    for (i, chunk) in items.chunks(crmsync_zoho::MAX_BATCH).enumerate().skip(done) {
        let records: Vec<ZohoContact> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let reply = calls::upsert(ctx, tenant, org, &records, Priority::Backfill).await?;
        ctx.runs
            .add_spend(&job.tenant, &job.run_id, 1, crmsync_zoho::upsert_cost(records.len()))
            .await
            .map_err(errors::redis)?;
        let mut counts = PageCounts::default();
        let mut ids = Vec::new();
        let mut rejected = Vec::new();
        for ((contact_id, record), result) in chunk.iter().map(|i| (&i.0, &i.1)).zip(&reply.results) {
            match result {
                RecordResult::Inserted { id } => {
                    counts.inserted += 1;
                    ids.push((contact_id.as_str(), id.as_str()));
                }
                RecordResult::Updated { id } => {
                    counts.updated += 1;
                    ids.push((contact_id.as_str(), id.as_str()));
                }
                RecordResult::Rejected { code, field, message } => {
                    *counts.failed.entry(code.clone()).or_default() += 1;
                    rejected.push(Rejection {
                        run_id: job.run_id.clone(),
                        contact_id: contact_id.clone(),
                        email: record.email.clone(),
                        code: code.clone(),
                        field: field.clone(),
                        message: message.clone(),
                    });
                }
            }
        }
        state.set_zoho_ids(&ids).await.map_err(errors::redis)?;
        state.add_rejections(&rejected).await.map_err(errors::redis)?;
        ctx.runs
            .save_batch(&job.tenant, &job.run_id, job.page, i, &counts)
            .await
            .map_err(errors::redis)?;
    }
    Ok(())
}

/// After writing, a contact with a smaller id may have claimed one of the emails (its page
/// ran at the same time). Its write may have landed before ours, so write the owner's fields
/// again: whichever lands last, the record holds the owner's fields.
async fn repair_shared_emails(
    ctx: &Context,
    job: &BackfillPage,
    tenant: &Tenant,
    org: &ZohoOrg,
    grant: &Grant<'_>,
    state: &TenantState,
    written: &[&(String, ZohoContact)],
) -> Result<(), JobError> {
    let emails: Vec<&str> = written.iter().map(|(_, r)| r.email.as_str()).collect();
    let owners = state.owners(&emails).await.map_err(errors::redis)?;
    let mut repairs: HashMap<String, ZohoContact> = HashMap::new();
    for ((id, record), owner) in written.iter().map(|i| (&i.0, &i.1)).zip(owners) {
        let Some(owner) = owner.filter(|o| o != id) else {
            continue;
        };
        // Re-read the owner: its page may not even be in this process.
        match ctx.nylas.get_contact(grant, &owner).await.map_err(errors::nylas)? {
            Some(c) => {
                if let MapOutcome::Mapped { record: r, .. } = map_contact(&c, &FieldLimits::ZOHO)
                    && r.email == record.email
                {
                    repairs.insert(owner, r);
                }
            }
            None => debug!(contact = %owner, "Owner of a shared email is gone; keeping our write"),
        }
    }
    if repairs.is_empty() {
        return Ok(());
    }
    info!(tenant = %job.tenant, count = repairs.len(), "Rewriting records of shared emails for their owners");
    let records: Vec<ZohoContact> = repairs.into_values().collect();
    for chunk in records.chunks(crmsync_zoho::MAX_BATCH) {
        calls::upsert(ctx, tenant, org, chunk, Priority::Backfill).await?;
        ctx.runs
            .add_spend(&job.tenant, &job.run_id, 1, crmsync_zoho::upsert_cost(chunk.len()))
            .await
            .map_err(errors::redis)?;
    }
    Ok(())
}
