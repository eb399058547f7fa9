//! Zoho calls under the tenant's limits: credit reservation, fleet rate, concurrency lease,
//! local smoothing (see `crmsync-limits`), then the call, then its outcome recorded.

use std::time::{Duration, SystemTime};

use crmsync_domain::ZohoContact;
use crmsync_limits::{CallOutcome, LimitSettings, Priority, Wait};
use crmsync_queue::{JobError, now_ms};
use crmsync_tenants::Tenant;
use crmsync_zoho::{RecordResult, Reply, ZohoError, ZohoOrg};
use tracing::warn;

use crate::context::Context;
use crate::errors;

/// 429s retried in place (after a short shared cooldown) before the job is deferred.
const INLINE_429_RETRIES: u32 = 3;
/// When the retry budget is spent, a failing call is retried this much later.
const RETRY_BUDGET_SPENT_DELAY: Duration = Duration::from_secs(30);

fn wait_to_job_error(w: Wait) -> JobError {
    match w {
        Wait::TooLarge { .. } => JobError::permanent(w.reason()),
        other => JobError::Defer {
            until_ms: other.retry_at_ms(),
            reason: other.reason(),
        },
    }
}

/// Upserts records under the tenant's limits. Budget, pause and long cooldowns defer the
/// job (no attempt used); 5xx and timeouts are retried within the tenant's retry budget.
pub(crate) async fn upsert(
    ctx: &Context,
    tenant: &Tenant,
    org: &ZohoOrg,
    records: &[ZohoContact],
    priority: Priority,
) -> Result<Reply<RecordResult>, JobError> {
    let s = LimitSettings::of(tenant);
    let cost = crmsync_zoho::upsert_cost(records.len());
    let complex = records.len() > 10;
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
        let res = ctx.zoho.upsert_contacts(org, records).await;
        match res {
            Ok(reply) => {
                ctx.limiter
                    .finish(
                        permit,
                        &s,
                        CallOutcome::Answered {
                            credits_remaining: reply.credits_remaining,
                        },
                    )
                    .await
                    .map_err(errors::redis)?;
                return Ok(reply);
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
