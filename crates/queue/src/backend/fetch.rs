//! The fetcher: blocking `XREADGROUP` reads on a dedicated connection, bounded by free slots.
//! Redis errors never end it: it logs, reconnects with backoff and resumes; a missing group
//! (Redis restarted without persistence, or a flushed key) is recreated.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Held, Inner, SettleMsg, Settlement};
use crate::conn::connect_blocking;
use crate::envelope::Envelope;
use crate::layer::JobInfo;
use crate::reply::{self, Entry};

pub(crate) async fn run<Args>(inner: Arc<Inner>, tx: mpsc::UnboundedSender<Task<Args>>, worker: WorkerContext)
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let mut conn: Option<crate::conn::RedisConn> = None;
    let mut failures: u32 = 0;
    let mut group_ready = false;
    let block_ms = inner.cfg.block.as_millis() as u64;
    loop {
        if inner.stop_fetching.is_cancelled() || worker.is_shutting_down() {
            break;
        }
        if !group_ready {
            match ensure_group(&inner).await {
                Ok(()) => group_ready = true,
                Err(error) => {
                    backoff(&inner, &mut failures, &error).await;
                    continue;
                }
            }
        }
        // Wait for a free slot, then take as many more as are free (up to the batch size).
        let first = tokio::select! {
            p = inner.slots.acquire() => p,
            _ = inner.stop_fetching.cancelled() => break,
        };
        let Ok(first) = first else { break };
        first.forget();
        let mut want = 1usize;
        let extra = inner
            .slots
            .available_permits()
            .min(inner.cfg.fetch_batch.saturating_sub(1));
        if extra > 0
            && let Ok(more) = inner.slots.try_acquire_many(extra as u32)
        {
            more.forget();
            want += extra;
        }
        if conn.is_none() {
            match connect_blocking(&inner.target, inner.cfg.block, inner.cfg.response_timeout).await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    inner.slots.add_permits(want);
                    backoff(&inner, &mut failures, &error).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let res: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&inner.cfg.group)
            .arg(inner.consumer())
            .arg("COUNT")
            .arg(want)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&inner.keys.stream)
            .arg(">")
            .query_async(c)
            .await;
        match res {
            Ok(value) => {
                if failures > 0 {
                    info!(queue = %inner.cfg.name, worker = %inner.consumer(), "Redis reachable again; fetching resumed");
                    failures = 0;
                }
                let entries = reply::read_group(&value);
                inner.slots.add_permits(want.saturating_sub(entries.len()));
                for entry in entries {
                    dispatch(&inner, &tx, entry);
                }
            }
            Err(error) => {
                inner.slots.add_permits(want);
                if error.code() == Some("NOGROUP") {
                    warn!(queue = %inner.cfg.name, "Consumer group missing; recreating it");
                    group_ready = false;
                    continue;
                }
                conn = None;
                backoff(&inner, &mut failures, &error).await;
            }
        }
    }
}

/// Decodes an entry and hands it to apalis; an entry that cannot be decoded goes to the
/// dead-letter stream with the decode error and never reaches a handler.
fn dispatch<Args>(inner: &Inner, tx: &mpsc::UnboundedSender<Task<Args>>, entry: Entry)
where
    Args: DeserializeOwned + Send + Sync + 'static,
{
    let decoded = Envelope::from_fields(&entry.fields)
        .map_err(|e| e.to_string())
        .and_then(|env| match serde_json::from_slice::<Args>(&env.payload) {
            Ok(args) => Ok((env, args)),
            Err(e) => Err(format!("payload of job {} does not decode: {e}", env.id)),
        });
    let held = match &decoded {
        Ok((env, _)) => Held {
            attempts_before: env.attempts,
            last_error: env.last_error.clone(),
            last_code: env.last_code.clone(),
        },
        Err(_) => Held {
            attempts_before: 0,
            last_error: None,
            last_code: None,
        },
    };
    if let Ok(mut h) = inner.held.lock() {
        h.insert(entry.id.clone(), held);
    }
    match decoded {
        Ok((env, args)) => {
            let attempt = env.attempts + 1;
            let info = JobInfo {
                queue: inner.cfg.name.clone(),
                entry_id: entry.id.clone(),
                job_id: env.id.clone(),
                attempt,
                policy: env.policy,
                enqueued_at_ms: env.enqueued_at_ms,
                ready_at_ms: entry_ms(&entry.id),
                last_error: env.last_error.clone(),
                last_code: env.last_code.clone(),
            };
            let task = TaskBuilder::new(args)
                .task_id(TaskId::from_string(env.id))
                .attempt(attempt as usize)
                .max_attempts(env.policy.max_attempts as usize)
                .data(info)
                .build();
            if let Err(returned) = tx.send(task) {
                // The worker is gone: hand the entry back untouched.
                let info = returned.0.ctx().data().get::<JobInfo>();
                let _ = inner.settle_tx.send(SettleMsg::Settle {
                    entry_id: entry.id,
                    outcome: Settlement::Requeue {
                        run_at_ms: 0,
                        attempts: attempt - 1,
                        error: info.and_then(|i| i.last_error.clone()),
                        code: info.and_then(|i| i.last_code.clone()),
                        counter: "released",
                    },
                    done: None,
                });
            }
        }
        Err(reason) => {
            warn!(queue = %inner.cfg.name, entry = %entry.id, %reason, "Undecodable entry sent to the dead-letter stream");
            let _ = inner.settle_tx.send(SettleMsg::Settle {
                entry_id: entry.id,
                outcome: Settlement::Dead {
                    attempts: None,
                    reason: format!("undecodable entry: {reason}"),
                    code: Some(crate::error::codes::UNDECODABLE.to_owned()),
                },
                done: None,
            });
        }
    }
}

/// The millisecond part of a stream id: when the entry was added (became due).
pub(crate) fn entry_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

pub(crate) async fn ensure_group(inner: &Inner) -> redis::RedisResult<()> {
    let mut conn = inner.conn.clone();
    crate::producer::create_group(&mut conn, &inner.keys.stream, &inner.cfg.group).await
}

/// Exponential backoff with full jitter, 100 ms up to 5 s, logging each failure.
async fn backoff(inner: &Inner, failures: &mut u32, error: &redis::RedisError) {
    *failures += 1;
    let ceiling = (100u64 << (*failures).min(6)).min(5_000);
    let wait = Duration::from_millis(rand::random_range(ceiling / 2..=ceiling));
    warn!(
        queue = %inner.cfg.name,
        worker = %inner.consumer(),
        %error,
        failures = *failures,
        retry_in_ms = wait.as_millis() as u64,
        "Redis unavailable; fetcher will reconnect"
    );
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = inner.stop_fetching.cancelled() => {}
    }
}
