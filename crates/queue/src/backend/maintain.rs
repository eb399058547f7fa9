//! Background upkeep of a worker: heartbeats, reclaiming entries of dead workers, trimming
//! finished entries, forgetting long-gone workers, and promoting due delayed jobs.
//! Every Redis call here is bounded; every failure is logged and retried on the next tick.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Inner;
use crate::reply;
use crate::scripts::SCRIPTS;

/// Pending entries whose lease is renewed per `XCLAIM` call.
const LEASE_CHUNK: usize = 500;
/// Most trim calls per tick (each trims at most `TRIM_LIMIT` entries).
const TRIM_CALLS: usize = 50;
/// Entries one `XTRIM ... LIMIT` call may remove; Redis's own default for `~` trimming.
const TRIM_LIMIT: u64 = 10_000;
/// Most reclaim calls per tick.
const RECLAIM_CALLS: usize = 50;
/// Prune every this many ticks.
const PRUNE_EVERY: u64 = 60;

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.stop_all.cancelled() => break,
        }
        if let Err(error) = heartbeat(&inner, n == 0).await {
            warn!(queue = %inner.cfg.name, %error, "Heartbeat failed");
            continue;
        }
        if let Err(error) = reclaim(&inner).await {
            warn!(queue = %inner.cfg.name, %error, "Reclaiming abandoned jobs failed");
        }
        if let Err(error) = trim(&inner).await {
            warn!(queue = %inner.cfg.name, %error, "Trimming finished jobs failed");
        }
        if n.is_multiple_of(PRUNE_EVERY)
            && let Err(error) = prune(&inner).await
        {
            warn!(queue = %inner.cfg.name, %error, "Pruning old workers failed");
        }
        n += 1;
    }
}

/// Registers the worker, refreshes its heartbeat and renews the lease of every entry it holds
/// (an `XCLAIM` to itself resets the entry's idle time without counting a delivery).
async fn heartbeat(inner: &Inner, first: bool) -> redis::RedisResult<()> {
    let mut conn = inner.conn.clone();
    let now = crate::now_ms();
    let name = inner.consumer();
    let info_key = inner.keys.worker(name);
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD").arg(&inner.keys.workers).arg(now).arg(name).ignore();
    if first {
        pipe.cmd("HSET")
            .arg(&info_key)
            .arg("host")
            .arg(name.split('@').nth(1).and_then(|h| h.split(':').next()).unwrap_or(""))
            .arg("pid")
            .arg(std::process::id())
            .arg("started_at")
            .arg(now)
            .arg("concurrency")
            .arg(inner.cfg.concurrency)
            .arg("version")
            .arg(env!("CARGO_PKG_VERSION"))
            .ignore();
    }
    pipe.cmd("HSET").arg(&info_key).arg("state").arg("running").ignore();
    pipe.cmd("PEXPIRE")
        .arg(&info_key)
        .arg((inner.cfg.worker_forget_after * 2).as_millis() as u64)
        .ignore();
    let held = inner.held_ids();
    for ids in held.chunks(LEASE_CHUNK) {
        pipe.cmd("XCLAIM")
            .arg(&inner.keys.stream)
            .arg(&inner.cfg.group)
            .arg(name)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await
}

/// Moves entries of workers silent for longer than the visibility timeout back into the
/// stream (or to the dead-letter stream), in bounded calls.
async fn reclaim(inner: &Inner) -> redis::RedisResult<()> {
    let mut conn = inner.conn.clone();
    for _ in 0..RECLAIM_CALLS {
        let now = crate::now_ms();
        let res: Vec<i64> = SCRIPTS
            .reclaim
            .key(&inner.keys.stream)
            .key(&inner.keys.dead)
            .key(inner.keys.stats(now / 1000))
            .arg(&inner.cfg.group)
            .arg(inner.cfg.visibility_timeout.as_millis() as u64)
            .arg(inner.cfg.reclaim_batch)
            .arg(now)
            .arg(inner.cfg.dead_letter_max)
            .arg(inner.cfg.stats_ttl.as_secs().max(60))
            .arg(&inner.cfg.name)
            .invoke_async(&mut conn)
            .await
            .or_else(|e| {
                if e.code() == Some("NOGROUP") {
                    Ok(vec![0, 0, 0])
                } else {
                    Err(e)
                }
            })?;
        let (examined, requeued, dead) = (
            res.first().copied().unwrap_or(0),
            res.get(1).copied().unwrap_or(0),
            res.get(2).copied().unwrap_or(0),
        );
        if requeued + dead > 0 {
            info!(queue = %inner.cfg.name, requeued, dead, "Reclaimed jobs of a worker that stopped heartbeating");
        }
        if (examined as usize) < inner.cfg.reclaim_batch {
            break;
        }
    }
    Ok(())
}

/// Trims finished entries per the retention settings, in bounded calls.
async fn trim(inner: &Inner) -> redis::RedisResult<()> {
    let r = inner.cfg.retention;
    if r.max_age.is_none() && r.max_count.is_none() {
        return Ok(());
    }
    let mut conn = inner.conn.clone();
    let mut total = 0i64;
    for _ in 0..TRIM_CALLS {
        let res: (i64, String) = SCRIPTS
            .trim
            .key(&inner.keys.stream)
            .arg(&inner.cfg.group)
            .arg(crate::now_ms())
            .arg(r.max_age.map(|d| d.as_millis() as u64).unwrap_or(0))
            .arg(r.max_count.unwrap_or(0))
            .arg(TRIM_LIMIT)
            .invoke_async(&mut conn)
            .await?;
        total += res.0;
        if res.0 == 0 {
            break;
        }
    }
    if total > 0 {
        debug!(queue = %inner.cfg.name, trimmed = total, "Trimmed finished jobs");
    }
    Ok(())
}

async fn prune(inner: &Inner) -> redis::RedisResult<()> {
    let mut conn = inner.conn.clone();
    let before = crate::now_ms().saturating_sub(inner.cfg.worker_forget_after.as_millis() as u64);
    let n: i64 = SCRIPTS
        .prune
        .key(&inner.keys.stream)
        .key(&inner.keys.workers)
        .arg(&inner.cfg.group)
        .arg(before)
        .arg(100)
        .arg(inner.keys.worker_prefix())
        .invoke_async(&mut conn)
        .await?;
    if n > 0 {
        info!(queue = %inner.cfg.name, forgotten = n, "Forgot workers silent since long ago");
    }
    Ok(())
}

/// Records that the worker stopped (it stays listed, with its last heartbeat, until pruned).
pub(crate) async fn mark_stopped(inner: &Inner) {
    let mut conn = inner.conn.clone();
    let res: redis::RedisResult<()> = redis::cmd("HSET")
        .arg(inner.keys.worker(inner.consumer()))
        .arg("state")
        .arg("stopped")
        .query_async(&mut conn)
        .await;
    if let Err(error) = res {
        debug!(%error, "Could not mark the worker stopped");
    }
}

/// Promotes due delayed jobs every `promote_interval`, in bounded batches.
pub(crate) async fn promote_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.cfg.promote_interval) => {}
            _ = inner.stop_all.cancelled() => break,
        }
        if let Err(error) = promote_due(&inner.conn, &inner.keys, inner.cfg.promote_batch).await {
            warn!(queue = %inner.cfg.name, %error, "Promoting delayed jobs failed");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = inner.stop_all.cancelled() => break,
            }
        }
    }
}

/// Moves every due delayed job into the stream, `batch` per script call.
pub(crate) async fn promote_due(
    conn: &crate::RedisConn,
    keys: &crate::Keys,
    batch: usize,
) -> redis::RedisResult<crate::PromoteReport> {
    let mut conn = conn.clone();
    let mut report = crate::PromoteReport::default();
    loop {
        let res: redis::Value = SCRIPTS
            .promote
            .key(&keys.delayed)
            .key(&keys.stream)
            .arg(crate::now_ms())
            .arg(batch)
            .arg(keys.job_prefix())
            .invoke_async(&mut conn)
            .await?;
        let moved = reply::list(&res).first().and_then(reply::as_i64).unwrap_or(0) as u64;
        report.moved += moved;
        report.calls += 1;
        if (moved as usize) < batch {
            return Ok(report);
        }
    }
}
