//! The settle layer the backend adds to every worker: after each job it turns the handler's
//! result into a [`Settlement`] (ack, retry with backoff, retry at a time, defer, dead letter)
//! and waits until the settler has recorded it, so a job counts as done only once Redis knows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::Task;
use apalis_core::task::from_request::FromRequest;
use tokio::sync::{mpsc, oneshot};
use tower_layer::Layer;
use tower_service::Service;
use tracing::warn;

use crate::backend::{SettleMsg, Settlement};
use crate::config::RetryPolicy;
use crate::error::JobError;

/// What a handler can know about the delivery it runs (take it as a handler argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub queue: String,
    /// Stream entry id of this delivery (changes when the job is requeued).
    pub entry_id: String,
    /// Job id, stable across retries.
    pub job_id: String,
    /// This attempt, from 1.
    pub attempt: u32,
    pub policy: RetryPolicy,
    /// When the job was first enqueued, ms.
    pub enqueued_at_ms: u64,
    /// When this delivery became due (entered the stream), ms.
    pub ready_at_ms: u64,
    /// The error of the previous attempt, if any, and its code.
    pub last_error: Option<String>,
    pub last_code: Option<String>,
}

/// Missing [`JobInfo`]: the task did not come from a [`crate::RedisStreamBackend`].
#[derive(Debug, thiserror::Error)]
#[error("this task carries no crmsync job info (not from a RedisStreamBackend)")]
pub struct MissingJobInfo;

impl<Args: Sync> FromRequest<Task<Args>> for JobInfo {
    type Error = MissingJobInfo;
    async fn from_request(task: &Task<Args>) -> Result<Self, Self::Error> {
        task.ctx().data().get::<JobInfo>().cloned().ok_or(MissingJobInfo)
    }
}

/// Decides what to record for a finished job.
pub(crate) fn decide(info: &JobInfo, error: Option<&BoxDynError>, now_ms: u64) -> Settlement {
    let Some(error) = error else {
        return Settlement::Ack;
    };
    let attempt = info.attempt;
    let max = info.policy.max_attempts;
    let exhausted = |code: &str, reason: String| Settlement::Dead {
        attempts: Some(attempt),
        reason: format!("{reason} (attempt {attempt} of {max})"),
        code: Some(code.to_owned()),
    };
    let retry = |run_at_ms: u64, code: &str, reason: String| {
        if attempt >= max {
            exhausted(code, reason)
        } else {
            Settlement::Requeue {
                run_at_ms,
                attempts: attempt,
                error: Some(reason),
                code: Some(code.to_owned()),
                counter: "retried",
            }
        }
    };
    match error.downcast_ref::<JobError>() {
        Some(JobError::Defer { until_ms, .. }) => Settlement::Requeue {
            run_at_ms: *until_ms,
            attempts: attempt.saturating_sub(1),
            error: info.last_error.clone(),
            code: info.last_code.clone(),
            counter: "deferred",
        },
        Some(JobError::RetryAt { at_ms, code, reason }) => retry(*at_ms, code, reason.clone()),
        Some(JobError::Permanent { code, reason }) => Settlement::Dead {
            attempts: Some(attempt),
            reason: reason.clone(),
            code: Some((*code).to_owned()),
        },
        Some(JobError::Retry { code, reason }) => retry(
            now_ms + info.policy.backoff(attempt).as_millis() as u64,
            code,
            reason.clone(),
        ),
        None if error.downcast_ref::<AbortError>().is_some() => Settlement::Dead {
            attempts: Some(attempt),
            reason: error.to_string(),
            code: Some(crate::error::codes::OTHER.to_owned()),
        },
        None => retry(
            now_ms + info.policy.backoff(attempt).as_millis() as u64,
            crate::error::codes::OTHER,
            error.to_string(),
        ),
    }
}

/// Adds settlement to a worker's service stack (the backend adds it by itself).
#[derive(Clone, Debug)]
pub struct SettleLayer {
    tx: mpsc::UnboundedSender<SettleMsg>,
    queue: String,
}

impl SettleLayer {
    pub(crate) fn new(tx: mpsc::UnboundedSender<SettleMsg>, queue: String) -> Self {
        Self { tx, queue }
    }
}

impl<S> Layer<S> for SettleLayer {
    type Service = SettleService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SettleService {
            inner,
            tx: self.tx.clone(),
            queue: self.queue.clone(),
        }
    }
}

/// See [`SettleLayer`].
#[derive(Clone, Debug)]
pub struct SettleService<S> {
    inner: S,
    tx: mpsc::UnboundedSender<SettleMsg>,
    queue: String,
}

impl<S, Args, Res> Service<Task<Args>> for SettleService<S>
where
    S: Service<Task<Args>, Response = Res>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    Res: Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Args>) -> Self::Future {
        let info = task.ctx().data().get::<JobInfo>().cloned();
        let fut = self.inner.call(task);
        let tx = self.tx.clone();
        let queue = self.queue.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let res = fut.await.map_err(Into::into);
            let ran = started.elapsed();
            if let Some(info) = info {
                let outcome = decide(&info, res.as_ref().err(), crate::now_ms());
                crmsync_metrics::job_ran(&queue, ran);
                match &outcome {
                    Settlement::Ack => {}
                    Settlement::Requeue {
                        run_at_ms,
                        counter,
                        error,
                        ..
                    } => {
                        if *counter == "retried" {
                            warn!(%queue, job = %info.job_id, attempt = info.attempt, error = error.as_deref().unwrap_or(""), retry = %crmsync_redis::when::in_text(*run_at_ms, crmsync_redis::now_ms()), "Job failed; will retry");
                        }
                    }
                    Settlement::Dead { reason, .. } => {
                        warn!(%queue, job = %info.job_id, attempt = info.attempt, %reason, "Job failed for good; sent to the dead-letter stream");
                    }
                }
                let (done_tx, done_rx) = oneshot::channel();
                let msg = SettleMsg::Settle {
                    entry_id: info.entry_id,
                    outcome,
                    done: Some(done_tx),
                };
                if tx.send(msg).is_ok() {
                    let _ = done_rx.await;
                }
            }
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn info(attempt: u32, max: u32) -> JobInfo {
        JobInfo {
            queue: "q".into(),
            entry_id: "1-0".into(),
            job_id: "j".into(),
            attempt,
            policy: RetryPolicy {
                max_attempts: max,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(10),
            },
            enqueued_at_ms: 0,
            ready_at_ms: 0,
            last_error: Some("earlier".into()),
            last_code: Some("EARLIER".into()),
        }
    }

    fn boxed(e: JobError) -> BoxDynError {
        Box::new(e)
    }

    #[test]
    fn success_is_acked() {
        assert_eq!(decide(&info(1, 3), None, 1_000), Settlement::Ack);
    }

    #[test]
    fn retry_uses_an_attempt_and_full_jitter_backoff() {
        for _ in 0..200 {
            match decide(&info(2, 3), Some(&boxed(JobError::retry("FLAKY", "flaky"))), 1_000) {
                Settlement::Requeue {
                    run_at_ms,
                    attempts,
                    error,
                    code,
                    counter,
                } => {
                    // Attempt 2 failed: backoff is uniform in [0, base * 2^1] = [0, 200] ms.
                    assert!((1_000..=1_200).contains(&run_at_ms), "{run_at_ms}");
                    assert_eq!(attempts, 2);
                    assert_eq!(error.as_deref(), Some("flaky"));
                    assert_eq!(code.as_deref(), Some("FLAKY"));
                    assert_eq!(counter, "retried");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn last_attempt_goes_to_dead_letter_with_its_error() {
        let s = decide(
            &info(3, 3),
            Some(&boxed(JobError::retry("FLAKY", "still flaky"))),
            1_000,
        );
        assert_eq!(
            s,
            Settlement::Dead {
                attempts: Some(3),
                reason: "still flaky (attempt 3 of 3)".into(),
                code: Some("FLAKY".into()),
            }
        );
    }

    #[test]
    fn deferral_keeps_the_attempt_and_the_time() {
        let s = decide(
            &info(1, 1),
            Some(&boxed(JobError::Defer {
                until_ms: 9_000,
                code: "BUDGET",
                reason: "budget".into(),
            })),
            1_000,
        );
        assert_eq!(
            s,
            Settlement::Requeue {
                run_at_ms: 9_000,
                attempts: 0,
                error: Some("earlier".into()),
                code: Some("EARLIER".into()),
                counter: "deferred"
            }
        );
    }

    #[test]
    fn retry_at_is_exact_and_permanent_is_dead() {
        let s = decide(
            &info(1, 5),
            Some(&boxed(JobError::RetryAt {
                at_ms: 5_000,
                code: "TOO_MANY_REQUESTS",
                reason: "429".into(),
            })),
            1_000,
        );
        assert!(matches!(
            s,
            Settlement::Requeue {
                run_at_ms: 5_000,
                attempts: 1,
                ..
            }
        ));
        let s = decide(
            &info(1, 5),
            Some(&boxed(JobError::permanent("INVALID_DATA", "refused"))),
            1_000,
        );
        assert_eq!(
            s,
            Settlement::Dead {
                attempts: Some(1),
                reason: "refused".into(),
                code: Some("INVALID_DATA".into()),
            }
        );
    }

    #[test]
    fn foreign_errors_are_retried() {
        let e: BoxDynError = "io error".into();
        assert!(matches!(
            decide(&info(1, 2), Some(&e), 0),
            Settlement::Requeue { counter: "retried", .. }
        ));
    }
}
