//! Zoho calls under the tenant's limits: credit reservation, fleet rate, concurrency lease,
//! local smoothing (see `crmsync-limits`), then the call, then its outcome recorded.

use std::future::Future;
use std::time::{Duration, SystemTime};

use crmsync_domain::ZohoContact;
use crmsync_limits::{CallOutcome, LimitSettings, Priority, Wait};
use crmsync_queue::{JobError, now_ms};
use crmsync_tenants::Tenant;
use crmsync_zoho::{DeleteResult, RecordResult, Reply, ZohoError, ZohoOrg};
use tracing::warn;

use crate::context::Context;
use crate::errors;

/// 429s retried in place (after a short shared cooldown) before the job is deferred.
const INLINE_429_RETRIES: u32 = 3;
/// When the retry budget is spent, a failing call is retried this much later.
const RETRY_BUDGET_SPENT_DELAY: Duration = Duration::from_secs(30);

fn wait_to_job_error(w: Wait) -> JobError {
    crmsync_metrics::limiter_wait(match &w {
        Wait::Budget { .. } | Wait::TooLarge { .. } => "budget",
        Wait::Paused { .. } => "pause",
        Wait::Cooldown { .. } => "cooldown",
        Wait::Busy => "concurrency",
    });
    match w {
        Wait::TooLarge { .. } => JobError::permanent(w.reason()),
        other => JobError::Defer {
            until_ms: other.retry_at_ms(),
            reason: other.reason(),
        },
    }
}

/// Makes one Zoho call of `cost` credits under the tenant's limits. Budget, pause and long
/// cooldowns defer the job (no attempt used); 5xx and timeouts are retried within the
/// tenant's retry budget; other errors fail the job with Zoho's code and message.
async fn limited<T, F, Fut>(
    ctx: &Context,
    tenant: &Tenant,
    cost: u64,
    complex: bool,
    priority: Priority,
    call: F,
) -> Result<T, JobError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(T, Option<u64>), ZohoError>>,
{
    let s = LimitSettings::of(tenant);
    for _ in 0..INLINE_429_RETRIES {
        let permit = match ctx
            .limiter
            .acquire(&tenant.id, &s, cost, complex, priority)
            .await
            .map_err(errors::redis)?
        {
            Ok(p) => p,
            Err(w) => return Err(wait_to_job_error(w)),
        };
        let waited = permit.waited();
        for (did, reason) in [
            (waited.cooldown, "cooldown"),
            (waited.rate, "rate"),
            (waited.concurrency, "concurrency"),
        ] {
            if did {
                crmsync_metrics::limiter_wait(reason);
            }
        }
        crmsync_metrics::zoho_credits("reserved", permit.cost());
        match call().await {
            Ok((value, credits_remaining)) => {
                crmsync_metrics::zoho_credits("spent", permit.cost());
                ctx.limiter
                    .finish(permit, &s, CallOutcome::Answered { credits_remaining })
                    .await
                    .map_err(errors::redis)?;
                return Ok(value);
            }
            Err(ZohoError::RateLimited {
                retry_after,
                credits_remaining,
            }) => {
                let until = ctx
                    .limiter
                    .finish(
                        permit,
                        &s,
                        CallOutcome::Throttled {
                            retry_after,
                            credits_remaining,
                        },
                    )
                    .await
                    .map_err(errors::redis)?
                    .unwrap_or_else(|| now_ms() + 1_000);
                let wait = until.saturating_sub(now_ms());
                if wait > 2_000 {
                    return Err(JobError::Defer {
                        until_ms: until,
                        reason: "Zoho answered 429; the tenant cools down".into(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            // Failing to get a token means nothing was sent.
            Err(e @ (ZohoError::TokenRequestsExhausted { .. } | ZohoError::Auth { .. })) => {
                ctx.limiter
                    .finish(permit, &s, CallOutcome::NotSent)
                    .await
                    .map_err(errors::redis)?;
                return Err(errors::zoho(e));
            }
            Err(e @ ZohoError::Unavailable { .. }) => {
                ctx.limiter
                    .finish(permit, &s, CallOutcome::Failed)
                    .await
                    .map_err(errors::redis)?;
                if ctx.limiter.retry_allowed(&tenant.id).await.map_err(errors::redis)? {
                    return Err(errors::zoho(e));
                }
                warn!(tenant = %tenant.id, error = %e, "Retry budget spent: Zoho keeps failing; backing off");
                return Err(JobError::retry_at(
                    SystemTime::now() + RETRY_BUDGET_SPENT_DELAY,
                    format!("zoho: {e} (retry budget spent)"),
                ));
            }
            Err(e) => {
                ctx.limiter
                    .finish(permit, &s, CallOutcome::Failed)
                    .await
                    .map_err(errors::redis)?;
                return Err(errors::zoho(e));
            }
        }
    }
    Err(JobError::Defer {
        until_ms: now_ms() + 1_000,
        reason: "Zoho keeps answering 429".into(),
    })
}

/// Upserts records (matched on Email) under the tenant's limits.
pub(crate) async fn upsert(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    records: &[ZohoContact],
    priority: Priority,
) -> Result<Reply<RecordResult>, JobError> {
    let cost = crmsync_zoho::upsert_cost(records.len());
    limited(ctx, tenant, cost, records.len() > 10, priority, || async {
        let r = ctx.zoho.upsert_contacts(org, records).await?;
        let c = r.credits_remaining;
        Ok((r, c))
    })
    .await
}

/// Updates records by id under the tenant's limits.
pub(crate) async fn update(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    records: &[(String, ZohoContact)],
    priority: Priority,
) -> Result<Reply<RecordResult>, JobError> {
    let cost = crmsync_zoho::upsert_cost(records.len());
    limited(ctx, tenant, cost, records.len() > 10, priority, || async {
        let r = ctx.zoho.update_contacts(org, records).await?;
        let c = r.credits_remaining;
        Ok((r, c))
    })
    .await
}

/// Deletes records by id under the tenant's limits (1 credit per call).
pub(crate) async fn delete(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    ids: &[String],
    priority: Priority,
) -> Result<Reply<DeleteResult>, JobError> {
    limited(ctx, tenant, 1, false, priority, || async {
        let r = ctx.zoho.delete_contacts(org, ids).await?;
        let c = r.credits_remaining;
        Ok((r, c))
    })
    .await
}

/// Finds record ids by email under the tenant's limits (1 credit; none: Zoho's 204).
pub(crate) async fn search(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    email: &str,
    priority: Priority,
) -> Result<Vec<String>, JobError> {
    limited(ctx, tenant, 1, false, priority, || async {
        Ok((ctx.zoho.search_by_email(org, email).await?, None))
    })
    .await
}
