//! The settler: records job outcomes in Redis, in batches, and frees the job slots.
//! Recording is idempotent (an entry that is no longer ours is skipped by the scripts), so a
//! batch that failed half-way is simply retried until Redis answers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::Inner;
use crate::scripts::SCRIPTS;

/// What to record for a delivered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Succeeded: acknowledge.
    Ack,
    /// Put back into the queue (now, or delayed when `run_at_ms` is in the future) with
    /// `attempts` used; `counter` names the per-second statistic to bump.
    Requeue {
        run_at_ms: u64,
        attempts: u32,
        error: Option<String>,
        /// The error's code.
        code: Option<String>,
        counter: &'static str,
    },
    /// Move to the dead-letter stream.
    Dead {
        attempts: Option<u32>,
        reason: String,
        code: Option<String>,
    },
}

pub(crate) enum SettleMsg {
    Settle {
        entry_id: String,
        outcome: Settlement,
        /// Told once the outcome is recorded.
        done: Option<oneshot::Sender<()>>,
    },
    /// Answered once everything sent before it is recorded.
    Flush(oneshot::Sender<()>),
}

/// Most ids acknowledged by one script call.
const ACK_CHUNK: usize = 500;
/// Most messages recorded per round.
const ROUND: usize = 2_000;

pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<SettleMsg>) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = inner.stop_all.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < ROUND {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut failures = 0u32;
        loop {
            match record(&inner, &batch).await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    let wait = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                    warn!(queue = %inner.cfg.name, %error, failures, "Could not record job outcomes; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        for m in batch {
            match m {
                SettleMsg::Settle { entry_id, done, .. } => {
                    if let Ok(mut h) = inner.held.lock() {
                        h.remove(&entry_id);
                    }
                    inner.slots.add_permits(1);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                SettleMsg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }
}

async fn record(inner: &Inner, batch: &[SettleMsg]) -> redis::RedisResult<()> {
    let mut acks: Vec<&str> = Vec::new();
    let mut others: Vec<(&str, &Settlement)> = Vec::new();
    for m in batch {
        if let SettleMsg::Settle { entry_id, outcome, .. } = m {
            match outcome {
                Settlement::Ack => acks.push(entry_id),
                other => others.push((entry_id, other)),
            }
        }
    }
    let now = crate::now_ms();
    let stats_key = inner.keys.stats(now / 1000);
    let ttl = inner.cfg.stats_ttl.as_secs().max(60);
    let ack_calls = acks.chunks(ACK_CHUNK).map(|ids| {
        let mut conn = inner.conn.clone();
        let stats_key = stats_key.clone();
        async move {
            let mut inv = SCRIPTS.ack.prepare_invoke();
            inv.key(&inner.keys.stream)
                .key(&stats_key)
                .arg(&inner.cfg.group)
                .arg(ttl);
            for id in ids {
                inv.arg(*id);
            }
            let acked: i64 = inv.invoke_async(&mut conn).await?;
            crmsync_metrics::jobs_settled(&inner.cfg.name, "done", acked.max(0) as u64);
            if acked < ids.len() as i64 {
                debug!(
                    lost = ids.len() as i64 - acked,
                    "Some finished jobs had been reclaimed by other workers"
                );
            }
            Ok::<_, redis::RedisError>(())
        }
    });
    let other_calls = others
        .into_iter()
        .map(|(id, outcome)| async move { settle_one(inner, id, outcome).await.map(|_| ()) });
    let (a, b) = futures_util::join!(join_all(ack_calls), join_all(other_calls));
    a.into_iter().chain(b).collect::<Result<Vec<()>, _>>().map(|_| ())
}

/// Records one non-success outcome. Returns false when the entry was no longer ours.
pub(crate) async fn settle_one(inner: &Inner, entry_id: &str, outcome: &Settlement) -> redis::RedisResult<bool> {
    let now = crate::now_ms();
    let (mode, run_at, attempts, text, code, counter) = match outcome {
        Settlement::Ack => return Ok(true),
        Settlement::Requeue {
            run_at_ms,
            attempts,
            error,
            code,
            counter,
        } => (
            "requeue",
            *run_at_ms,
            attempts.to_string(),
            error.clone().unwrap_or_default(),
            code.clone().unwrap_or_default(),
            *counter,
        ),
        Settlement::Dead { attempts, reason, code } => (
            "dead",
            0,
            attempts.map(|a| a.to_string()).unwrap_or_default(),
            reason.clone(),
            code.clone().unwrap_or_default(),
            "dead",
        ),
    };
    let mut conn = inner.conn.clone();
    let settled: i64 = SCRIPTS
        .settle
        .key(&inner.keys.stream)
        .key(&inner.keys.delayed)
        .key(&inner.keys.dead)
        .key(inner.keys.stats(now / 1000))
        .arg(&inner.cfg.group)
        .arg(entry_id)
        .arg(mode)
        .arg(run_at)
        .arg(now)
        .arg(attempts)
        .arg(text)
        .arg(inner.cfg.dead_letter_max)
        .arg(inner.cfg.stats_ttl.as_secs().max(60))
        .arg(counter)
        .arg(inner.keys.job_prefix())
        .arg(&inner.cfg.name)
        .arg(code)
        .invoke_async(&mut conn)
        .await?;
    // Counted once: a retried recording finds the entry no longer ours.
    if settled == 1 {
        crmsync_metrics::jobs_settled(&inner.cfg.name, counter, 1);
    }
    Ok(settled == 1)
}
