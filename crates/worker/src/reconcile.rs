//! Reconcile: keep the CRM equal to the book when webhooks were missed or the CRM was edited.
//! A reconcile run is done by the fleet as jobs on the backfill queue, in three steps:
//!
//! 1. **CRM** (`PageMode::Crm`, one job per page, one after another): the sink reads the
//!    records crmsync keeps (Zoho: Get Records, 200 a credit; Salesforce: SOQL on the
//!    external-id field) into the run's copy (`R:crm`: match-key value -> `<record id> <hash of
//!    what the CRM holds>`, compared through the sink's `comparable`);
//! 2. **Book** (`PageMode::Book`, pages as a backfill's): each contact's mapped record is
//!    compared with the CRM's. Equal: nothing. No CRM record: *missing*. Different: *stale*
//!    when the book changed since crmsync wrote the record, *CRM-side edit* when the book did
//!    not (the record hashes as crmsync wrote it) — fixed unless the tenant keeps CRM-side
//!    edits. A contact whose email another contact owns is that contact's business. Every
//!    difference is pushed forced into the write buffer, so the buffer's rules (shared emails,
//!    email moves, order) apply as for any change; CRM records a contact maps to are claimed
//!    (`R:claimed`). The page counted last starts the sweep;
//! 3. **Sweep** (`PageMode::Sweep`, 64 state buckets per job): contacts crmsync knows that the
//!    book no longer maps (deleted, or without a usable email) are unmapped — the buffer
//!    deletes their records or hands a shared email to its next contact —; then CRM records
//!    nobody claimed are counted: *orphaned* when crmsync wrote them (the unmaps delete them),
//!    *not crmsync's* otherwise (never touched). The last sweep job counts as the run's last
//!    page: the run drains and completes as a backfill does.
//!
//! A dry run does steps 1–3 and pushes nothing. Findings are the run's `drift:<kind>` counters
//! with up to 5 examples per kind (`R:examples`).

use std::collections::BTreeMap;

use crmsync_domain::{CrmRecord, MapOutcome, MatchKey, map_contact};
use crmsync_producer::{
    BackfillPage, CONTACT_BUCKETS, Change, PageCounts, PageMode, Run, RunStatus, contact_key, email_key, record_hash,
};
use crmsync_queue::{EnqueueOptions, JobError};
use crmsync_sink::Priority;
use crmsync_tenants::Tenant;
use tracing::debug;

use crate::backfill::{after_page, load_tenant, push_run};
use crate::{Context, errors, profile};

/// State buckets per sweep job.
const SWEEP_BUCKETS: u16 = 64;
/// How long a run's copy of the CRM is kept if the run never finishes.
const COPY_TTL_MS: u64 = 24 * 3_600_000;
/// Examples kept per kind of drift.
const EXAMPLES: usize = 5;

/// The run's copy of one CRM record: its id and the hash of what the CRM holds.
fn copy_value(rid: &str, hash: &str) -> String {
    format!("{rid} {hash}")
}

fn copy_hash(v: &str) -> &str {
    v.split_once(' ').map(|(_, h)| h).unwrap_or("")
}

/// The match-key value of a record (what the CRM is keyed on): the email, or the contact.
fn match_value(mode: MatchKey, contact_id: &str, r: &CrmRecord) -> String {
    match mode {
        MatchKey::Email => r.email.clone(),
        MatchKey::ContactId => contact_id.to_owned(),
    }
}

/// The buffer's record key of a match-key value.
fn record_key(mode: MatchKey, value: &str) -> String {
    match mode {
        MatchKey::Email => email_key(value),
        MatchKey::ContactId => contact_key(value),
    }
}

async fn running(ctx: &Context, job: &BackfillPage) -> Result<Option<(Run, Tenant)>, JobError> {
    let run = ctx.runs.get(&job.tenant, &job.run_id).await.map_err(|e| match e {
        crmsync_producer::RunError::NotFound(r) => JobError::permanent("RUN_GONE", format!("run {r} no longer exists")),
        other => errors::redis(other),
    })?;
    if run.status != RunStatus::Running {
        debug!(run = %job.run_id, status = run.status.as_str(), "Run not running; reconcile step dropped");
        return Ok(None);
    }
    Ok(load_tenant(ctx, &job.tenant).await?.map(|t| (run, t)))
}

async fn enqueue(ctx: &Context, next: BackfillPage) -> Result<(), JobError> {
    ctx.backfill
        .enqueue_with(&next, EnqueueOptions::default().idempotency_key(next.idempotency_key()))
        .await
        .map_err(errors::redis)?;
    Ok(())
}

/// Keeps up to [`EXAMPLES`] examples of each kind (best effort: concurrent pages may race).
async fn examples(
    ctx: &Context,
    job: &BackfillPage,
    found: BTreeMap<&'static str, Vec<String>>,
) -> Result<(), JobError> {
    if found.is_empty() {
        return Ok(());
    }
    let key = crmsync_tenants::TenantKeys::new(&ctx.opts.namespace, &job.tenant).run_examples(&job.run_id);
    let mut conn = ctx.conn.clone();
    for (kind, mut new) in found {
        let old: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(kind)
            .query_async(&mut conn)
            .await
            .map_err(errors::redis)?;
        let mut list: Vec<String> = old.and_then(|o| serde_json::from_str(&o).ok()).unwrap_or_default();
        if list.len() >= EXAMPLES {
            continue;
        }
        new.truncate(EXAMPLES - list.len());
        list.extend(new);
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(kind)
            .arg(serde_json::to_string(&list).unwrap_or_default())
            .query_async(&mut conn)
            .await
            .map_err(errors::redis)?;
    }
    Ok(())
}

/// Step 1: one page of the CRM into the run's copy; then the next page, or the book.
pub async fn crm_page(ctx: &Context, job: &BackfillPage) -> Result<(), JobError> {
    let Some((_, tenant)) = running(ctx, job).await? else {
        return Ok(());
    };
    let sink = ctx.sink(&tenant).map_err(errors::tenant)?;
    let p = profile(&tenant);
    let page = sink
        .read(job.cursor.as_deref(), Priority::Backfill)
        .await
        .map_err(errors::sink)?;
    let keys = crmsync_tenants::TenantKeys::new(&ctx.opts.namespace, &job.tenant);
    let copy = keys.run_crm(&job.run_id);
    if !page.records.is_empty() {
        let mut pipe = redis::pipe();
        for r in &page.records {
            let hash = record_hash(&(p.comparable)(&r.record));
            pipe.cmd("HSET")
                .arg(&copy)
                .arg(&r.key)
                .arg(copy_value(&r.rid, &hash))
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&copy).arg(COPY_TTL_MS).ignore();
        let _: () = pipe.query_async(&mut ctx.conn.clone()).await.map_err(errors::redis)?;
    }
    ctx.runs
        .count_step(
            &job.tenant,
            &job.run_id,
            &format!("crm:{}", job.page),
            &[
                ("calls".to_owned(), page.calls),
                ("credits".to_owned(), page.cost),
                ("drift:crm_read".to_owned(), page.records.len() as u64),
            ],
        )
        .await
        .map_err(errors::redis)?;
    let next = match page.next {
        Some(cursor) => BackfillPage {
            tenant: job.tenant.clone(),
            run_id: job.run_id.clone(),
            page: job.page + 1,
            cursor: Some(cursor),
            force: false,
            mode: PageMode::Crm,
        },
        None => BackfillPage {
            tenant: job.tenant.clone(),
            run_id: job.run_id.clone(),
            page: 0,
            cursor: None,
            force: false,
            mode: PageMode::Book,
        },
    };
    enqueue(ctx, next).await
}

/// Step 2: one page of the book compared with the CRM's copy.
pub async fn book_page(ctx: &Context, job: &BackfillPage) -> Result<(), JobError> {
    let Some((run, tenant)) = running(ctx, job).await? else {
        return Ok(());
    };
    let nylas_page = crate::backfill::read_book(ctx, &tenant, job.cursor.as_deref()).await?;
    if let Some(cursor) = &nylas_page.next_cursor {
        let next = BackfillPage {
            tenant: job.tenant.clone(),
            run_id: job.run_id.clone(),
            page: job.page + 1,
            cursor: Some(cursor.clone()),
            force: false,
            mode: PageMode::Book,
        };
        enqueue(ctx, next).await?;
    }

    let p = profile(&tenant);
    let mut counts = PageCounts {
        contacts_read: nylas_page.contacts.len() as u64,
        ..PageCounts::default()
    };
    let mut mapped: Vec<(String, CrmRecord)> = Vec::new();
    for c in &nylas_page.contacts {
        match map_contact(c, &p.field_limits) {
            MapOutcome::Mapped { record, adjustments } => {
                if !adjustments.is_empty() {
                    counts.adjusted += 1;
                }
                mapped.push((c.id.clone(), record));
            }
            MapOutcome::Skipped(reason) => counts.skip(reason),
        }
    }
    let keys = crmsync_tenants::TenantKeys::new(&ctx.opts.namespace, &job.tenant);
    let copy = keys.run_crm(&job.run_id);
    let values: Vec<String> = mapped.iter().map(|(cid, r)| match_value(p.match_key, cid, r)).collect();
    let mut conn = ctx.conn.clone();
    let crm: Vec<Option<String>> = if values.is_empty() {
        Vec::new()
    } else {
        redis::cmd("HMGET")
            .arg(&copy)
            .arg(&values)
            .query_async(&mut conn)
            .await
            .map_err(errors::redis)?
    };
    let buffer = ctx.buffer(&tenant);
    let rks: Vec<String> = values.iter().map(|v| record_key(p.match_key, v)).collect();
    let states = buffer.record_states(&rks).await.map_err(errors::buffer)?;

    let read_at = crmsync_queue::now_ms() / 1000 * 1000;
    let mut changes = Vec::new();
    let mut found: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (i, (cid, record)) in mapped.iter().enumerate() {
        let book = record_hash(&(p.comparable)(record));
        let kind = match (&crm[i], &states[i]) {
            (Some(v), _) if copy_hash(v) == book => "in_sync",
            // Another contact owns the email's record: this one is not written there.
            (Some(_), Some(s)) if s.owner.as_deref().is_some_and(|o| o != cid) => "shared",
            (None, Some(s)) if s.owner.as_deref().is_some_and(|o| o != cid) => "shared",
            (None, _) => "missing",
            (Some(_), Some(s)) if s.hash.as_deref() == Some(record_hash(record).as_str()) => "crm_edited",
            (Some(_), _) => "stale",
        };
        *counts.drift.entry(kind.to_owned()).or_default() += 1;
        let fix = match kind {
            "missing" | "stale" => true,
            "crm_edited" => !tenant.keep_crm_edits,
            _ => false,
        };
        if kind != "in_sync" && kind != "shared" {
            found.entry(kind).or_default().push(values[i].clone());
        }
        if fix && !run.dry_run {
            changes.push(Change::Upsert {
                contact_id: cid.clone(),
                at_ms: read_at,
                record: record.clone(),
            });
        }
    }
    // Claimed: CRM records some contact maps to (the copy itself stays whole while pages
    // run in parallel: two contacts sharing an email may be on two pages).
    if !values.is_empty() {
        let mut pipe = redis::pipe();
        let claimed = keys.run_claimed(&job.run_id);
        pipe.cmd("SADD").arg(&claimed).arg(&values).ignore();
        pipe.cmd("PEXPIRE").arg(&claimed).arg(COPY_TTL_MS).ignore();
        let seen = keys.run_seen(&job.run_id);
        pipe.cmd("SADD")
            .arg(&seen)
            .arg(mapped.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>())
            .ignore();
        pipe.cmd("PEXPIRE").arg(&seen).arg(COPY_TTL_MS).ignore();
        let _: () = pipe.query_async(&mut conn).await.map_err(errors::redis)?;
    }
    examples(ctx, job, found).await?;
    if !changes.is_empty() {
        push_run(ctx, &buffer, job, true, &changes).await?;
    }
    // The sweep starts once every page of the book is counted (whichever page is counted
    // last enqueues it; the idempotency key makes that once). It is the run's last page.
    let book_last = ctx
        .runs
        .count_book_page(
            &job.tenant,
            &job.run_id,
            job.page,
            nylas_page.next_cursor.is_some(),
            &counts,
        )
        .await
        .map_err(errors::redis)?;
    if let Some(last) = book_last {
        enqueue(
            ctx,
            BackfillPage {
                tenant: job.tenant.clone(),
                run_id: job.run_id.clone(),
                page: last + 1,
                cursor: None,
                force: false,
                mode: PageMode::Sweep { bucket: 0 },
            },
        )
        .await?;
    }
    Ok(())
}

/// Step 3: a range of state buckets swept; the last one counts the unclaimed CRM records and
/// ends the book.
pub async fn sweep(ctx: &Context, job: &BackfillPage, bucket: u16) -> Result<(), JobError> {
    let Some((run, tenant)) = running(ctx, job).await? else {
        return Ok(());
    };
    let p = profile(&tenant);
    let buffer = ctx.buffer(&tenant);
    let keys = crmsync_tenants::TenantKeys::new(&ctx.opts.namespace, &job.tenant);
    let to = bucket.saturating_add(SWEEP_BUCKETS).min(CONTACT_BUCKETS);
    let known = buffer.contacts_in_buckets(bucket, to).await.map_err(errors::buffer)?;
    let with_record: Vec<&str> = known.iter().filter(|(_, m)| *m).map(|(c, _)| c.as_str()).collect();
    let mut conn = ctx.conn.clone();
    let seen: Vec<bool> = if with_record.is_empty() {
        Vec::new()
    } else {
        redis::cmd("SMISMEMBER")
            .arg(keys.run_seen(&job.run_id))
            .arg(&with_record)
            .query_async(&mut conn)
            .await
            .map_err(errors::redis)?
    };
    let gone: Vec<&str> = with_record
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(c, _)| *c)
        .collect();
    let mut counts = PageCounts::default();
    if !gone.is_empty() {
        *counts.drift.entry("orphaned".into()).or_default() += gone.len() as u64;
        examples(
            ctx,
            job,
            BTreeMap::from([("orphaned", gone.iter().take(EXAMPLES).map(|c| c.to_string()).collect())]),
        )
        .await?;
        if !run.dry_run {
            // As of the run's start: a change the fleet applied since is newer and wins.
            let at_ms = run.started_at_ms / 1000 * 1000;
            let changes: Vec<Change> = gone
                .iter()
                .map(|c| Change::Unmap {
                    contact_id: c.to_string(),
                    at_ms,
                })
                .collect();
            push_run(ctx, &buffer, job, true, &changes).await?;
        }
    }
    if to < CONTACT_BUCKETS {
        // Counted once per range, the next range next.
        let pairs: Vec<(String, u64)> = counts.drift.iter().map(|(k, n)| (format!("drift:{k}"), *n)).collect();
        ctx.runs
            .count_step(&job.tenant, &job.run_id, &format!("sweep:{bucket}"), &pairs)
            .await
            .map_err(errors::redis)?;
        return enqueue(
            ctx,
            BackfillPage {
                tenant: job.tenant.clone(),
                run_id: job.run_id.clone(),
                page: job.page,
                cursor: None,
                force: false,
                mode: PageMode::Sweep { bucket: to },
            },
        )
        .await;
    }
    // The CRM records no contact of the book claimed: crmsync's (the unmaps delete them) or
    // another user's (never touched).
    let copy = keys.run_crm(&job.run_id);
    let mut cursor = 0u64;
    let mut not_ours = Vec::new();
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(&copy)
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .map_err(errors::redis)?;
        let values: Vec<String> = page.into_iter().map(|(k, _)| k).collect();
        let claimed: Vec<bool> = if values.is_empty() {
            Vec::new()
        } else {
            redis::cmd("SMISMEMBER")
                .arg(keys.run_claimed(&job.run_id))
                .arg(&values)
                .query_async(&mut conn)
                .await
                .map_err(errors::redis)?
        };
        let values: Vec<String> = values
            .into_iter()
            .zip(claimed)
            .filter(|(_, c)| !*c)
            .map(|(v, _)| v)
            .collect();
        let rks: Vec<String> = values.iter().map(|v| record_key(p.match_key, v)).collect();
        let states = buffer.record_states(&rks).await.map_err(errors::buffer)?;
        for (v, s) in values.into_iter().zip(states) {
            if s.is_none() {
                not_ours.push(v);
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if !not_ours.is_empty() {
        *counts.drift.entry("not_ours".into()).or_default() += not_ours.len() as u64;
        not_ours.truncate(EXAMPLES);
        examples(ctx, job, BTreeMap::from([("not_ours", not_ours)])).await?;
    }
    // UNLINK: the copy holds the whole CRM; Redis frees it in the background.
    let _: () = redis::pipe()
        .cmd("UNLINK")
        .arg(&copy)
        .arg(keys.run_seen(&job.run_id))
        .arg(keys.run_claimed(&job.run_id))
        .query_async(&mut conn)
        .await
        .map_err(errors::redis)?;
    let status = ctx
        .runs
        .record_page(&job.tenant, &job.run_id, job.page, false, &counts)
        .await
        .map_err(errors::redis)?;
    after_page(ctx, job, status).await
}
