//! The limits as a tower layer on every sink call: [`LimitLayer`] wraps a sink's HTTP service,
//! takes each request's cost and concurrency class from the request itself
//! ([`SinkRequest::cost`]), holds a [`crate::Permit`] for the call, and records how the call
//! went ([`crate::CallOutcome`]): the org's usage when the answer reports it, a shared cooldown
//! on a 429 (short ones are waited out in place and the call is retried), a draw on the retry
//! budget for transient failures, and the reservation given back when nothing was sent.

use std::task::{Context, Poll};
use std::time::Duration;

use crmsync_redis::now_ms;
use crmsync_sink::{BoxFuture, Next, SinkError, SinkRequest, SinkResponse};
use crmsync_tenants::DestKeys;
use tower_layer::Layer;
use tower_service::Service;
use tracing::warn;

use crate::{Ask, BudgetKind, CallOutcome, LimitSettings, Limiter, Wait};

/// 429s waited out in place (after a short shared cooldown) before the job is deferred.
const INLINE_429_RETRIES: u32 = 3;
/// A cooldown longer than this defers the job instead of waiting in place.
const INLINE_COOLDOWN_MS: u64 = 2_000;
/// When the retry budget is spent, a failing call is retried this much later.
const RETRY_BUDGET_SPENT_DELAY: Duration = Duration::from_secs(30);

/// The limits of one tenant's destination, around a sink's calls.
#[derive(Clone)]
pub struct LimitLayer {
    limiter: Limiter,
    keys: DestKeys,
    settings: LimitSettings,
}

impl LimitLayer {
    pub fn new(limiter: Limiter, keys: DestKeys, settings: LimitSettings) -> Self {
        Self {
            limiter,
            keys,
            settings,
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = LimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            limits: self.clone(),
        }
    }
}

/// A sink service under the tenant's limits.
#[derive(Clone)]
pub struct LimitService<S> {
    inner: S,
    limits: LimitLayer,
}

/// Why a call may not be made now, as the sink's error: the job waits without using an
/// attempt (or, for a call that can never fit the budget, fails).
pub fn wait_error(w: Wait) -> SinkError {
    crmsync_metrics::limiter_wait(match &w {
        Wait::Budget {
            kind: BudgetKind::Ours, ..
        }
        | Wait::TooLarge { .. } => "budget",
        Wait::Budget { .. } | Wait::Probe => "org_budget",
        Wait::Paused { .. } => "pause",
        Wait::Cooldown { .. } => "cooldown",
        Wait::Busy | Wait::Gone => "concurrency",
    });
    let (next, code) = match &w {
        Wait::TooLarge { .. } => (Next::FailJob, "CALL_TOO_LARGE"),
        Wait::Gone => (Next::Retry, "DEST_CHANGED"),
        Wait::Budget {
            kind: BudgetKind::Ours, ..
        } => (
            Next::Wait {
                until_ms: w.retry_at_ms(),
            },
            "BUDGET",
        ),
        Wait::Budget { .. } | Wait::Probe => (
            Next::Wait {
                until_ms: w.retry_at_ms(),
            },
            "ORG_BUDGET",
        ),
        Wait::Paused { .. } => (
            Next::Wait {
                until_ms: w.retry_at_ms(),
            },
            "PAUSED",
        ),
        Wait::Cooldown { .. } => (
            Next::Wait {
                until_ms: w.retry_at_ms(),
            },
            "TOO_MANY_REQUESTS",
        ),
        Wait::Busy => (
            Next::Wait {
                until_ms: w.retry_at_ms(),
            },
            "BUSY",
        ),
    };
    SinkError::new(next, code, w.reason()).not_sent()
}

fn redis_error(e: redis::RedisError) -> SinkError {
    SinkError::new(Next::Retry, "REDIS", format!("redis: {e}")).not_sent()
}

impl<S> LimitService<S> {
    /// A probe call: reserved whatever the cap (it costs a unit, at most every few minutes),
    /// under the same leases and rate as any call; its answer's usage reading is recorded.
    async fn probe<R>(
        inner: &mut S,
        limiter: &Limiter,
        keys: &DestKeys,
        s: &LimitSettings,
        probe: R,
    ) -> Result<(), SinkError>
    where
        R: SinkRequest + Clone,
        S: Service<R, Error = SinkError>,
        S::Response: SinkResponse,
    {
        let cost = probe.cost();
        let mut ask = Ask::new(cost.units, cost.class.cap(), probe.priority());
        ask.force = true;
        std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
        let permit = match limiter.acquire_with(keys, s, ask).await.map_err(redis_error)? {
            Ok(p) => p,
            Err(w) => return Err(wait_error(w)),
        };
        let outcome = match inner.call(probe).await {
            Ok(resp) => CallOutcome::Answered { usage: resp.usage() },
            Err(e) if e.not_sent => CallOutcome::NotSent,
            Err(SinkError {
                next: Next::Throttled { retry_after },
                usage,
                ..
            }) => CallOutcome::Throttled { retry_after, usage },
            Err(e) => {
                warn!(dest = %keys.prefix(), error = %e, "A probe of the org's usage failed");
                CallOutcome::Failed
            }
        };
        limiter.finish(permit, s, outcome).await.map_err(redis_error)?;
        Ok(())
    }

    async fn run<R>(mut inner: S, limits: LimitLayer, req: R) -> Result<S::Response, SinkError>
    where
        R: SinkRequest + Clone,
        S: Service<R, Error = SinkError>,
        S::Response: SinkResponse,
    {
        let LimitLayer {
            limiter,
            keys,
            settings: s,
        } = limits;
        let cost = req.cost();
        let mut ask = Ask::new(cost.units, cost.class.cap(), req.priority());
        ask.can_probe = req.probe().is_some();
        for _ in 0..INLINE_429_RETRIES {
            // Ready first (a CRM client may fetch a token): nothing may delay the send once
            // the call holds its slot.
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let permit = match limiter.acquire_with(&keys, &s, ask).await.map_err(redis_error)? {
                Ok(p) => p,
                Err(Wait::Probe) => {
                    // The org's other integrations fill the share: read its usage, then ask
                    // again (once: the next probe is minutes away).
                    ask.can_probe = false;
                    if let Some(probe) = req.probe() {
                        Self::probe(&mut inner, &limiter, &keys, &s, probe).await?;
                    }
                    continue;
                }
                Err(w) => return Err(wait_error(w)),
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
            match inner.call(req.clone()).await {
                Ok(resp) => {
                    crmsync_metrics::zoho_credits("spent", permit.cost());
                    limiter
                        .finish(permit, &s, CallOutcome::Answered { usage: resp.usage() })
                        .await
                        .map_err(redis_error)?;
                    return Ok(resp);
                }
                Err(e) => match e.next {
                    Next::Throttled { retry_after } => {
                        let until = limiter
                            .finish(
                                permit,
                                &s,
                                CallOutcome::Throttled {
                                    retry_after,
                                    usage: e.usage,
                                },
                            )
                            .await
                            .map_err(redis_error)?
                            .unwrap_or_else(|| now_ms() + 1_000);
                        let wait = until.saturating_sub(now_ms());
                        if wait > INLINE_COOLDOWN_MS {
                            return Err(SinkError::new(
                                Next::Wait { until_ms: until },
                                "TOO_MANY_REQUESTS",
                                "the CRM answered 429; the tenant cools down",
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    _ if e.not_sent => {
                        limiter
                            .finish(permit, &s, CallOutcome::NotSent)
                            .await
                            .map_err(redis_error)?;
                        return Err(e);
                    }
                    Next::Retry | Next::RetryAfter(_) => {
                        limiter
                            .finish(permit, &s, CallOutcome::Failed)
                            .await
                            .map_err(redis_error)?;
                        if limiter.retry_allowed(&keys).await.map_err(redis_error)? {
                            return Err(e);
                        }
                        warn!(dest = %keys.prefix(), error = %e, "Retry budget spent: the CRM keeps failing; backing off");
                        let message = format!("{} (retry budget spent)", e.message);
                        return Err(SinkError {
                            next: Next::RetryAfter(RETRY_BUDGET_SPENT_DELAY),
                            message,
                            ..e
                        });
                    }
                    _ => {
                        limiter
                            .finish(permit, &s, CallOutcome::Failed)
                            .await
                            .map_err(redis_error)?;
                        return Err(e);
                    }
                },
            }
        }
        Err(SinkError::new(
            Next::Wait {
                until_ms: now_ms() + 1_000,
            },
            "TOO_MANY_REQUESTS",
            "the CRM keeps answering 429",
        ))
    }
}

impl<S, R> Service<R> for LimitService<S>
where
    R: SinkRequest + Clone + Send + 'static,
    S: Service<R, Error = SinkError> + Clone + Send + 'static,
    S::Response: SinkResponse + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = SinkError;
    type Future = BoxFuture<'static, Result<S::Response, SinkError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        // Readiness is the limits themselves, taken per call (a call may wait or be deferred).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let inner = self.inner.clone();
        let limits = self.limits.clone();
        Box::pin(Self::run(inner, limits, req))
    }
}
