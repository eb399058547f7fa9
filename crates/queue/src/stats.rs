//! Queue statistics read straight from Redis: the one inspection call behind `crmsync status`
//! and the dashboard.

use serde::Serialize;

use crate::config::QueueConfig;
use crate::conn::RedisConn;
use crate::error::QueueError;
use crate::keys::Keys;
use crate::reply;

/// Counters summed over a time window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Jobs that succeeded.
    pub done: u64,
    /// Failed attempts put back for another try.
    pub retried: u64,
    /// Jobs put back for later without using an attempt (budget, pause).
    pub deferred: u64,
    /// Jobs handed back by a worker shutting down.
    pub released: u64,
    /// Jobs recovered from workers that stopped heartbeating.
    pub reclaimed: u64,
    /// Jobs moved to the dead-letter stream.
    pub dead: u64,
}

/// A worker known to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    pub name: String,
    pub last_heartbeat_ms: u64,
    /// Entries the worker holds (delivered, not yet settled).
    pub in_flight: u64,
    pub host: String,
    pub pid: u64,
    pub started_at_ms: u64,
    pub concurrency: u64,
    /// `running` or `stopped` as the worker last said; a running worker whose heartbeat is
    /// older than the visibility timeout is presumed dead (`alive == false`).
    pub state: String,
    pub alive: bool,
}

/// A snapshot of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Jobs in the stream not yet delivered to any worker.
    pub pending: u64,
    /// Jobs delivered to a worker and not yet settled.
    pub in_flight: u64,
    /// Jobs waiting for their run-at time.
    pub delayed: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
    /// Finished entries still kept in the stream (trimmed per the retention settings).
    pub retained: u64,
    /// When the next delayed job is due, ms.
    pub next_delayed_ms: Option<u64>,
    /// Counters over the last 60 seconds; `last_minute.done` is the throughput.
    pub last_minute: Counters,
    pub workers: Vec<WorkerStatus>,
}

pub(crate) async fn collect(conn: &RedisConn, cfg: &QueueConfig, keys: &Keys) -> Result<QueueStats, QueueError> {
    let mut conn = conn.clone();
    let now = crate::now_ms();
    let sec = now / 1000;
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS").arg(&keys.stream);
    pipe.cmd("XLEN").arg(&keys.stream);
    pipe.cmd("ZCARD").arg(&keys.delayed);
    pipe.cmd("ZRANGE").arg(&keys.delayed).arg(0).arg(0).arg("WITHSCORES");
    pipe.cmd("XLEN").arg(&keys.dead);
    pipe.cmd("ZRANGE").arg(&keys.workers).arg(0).arg(-1).arg("WITHSCORES");
    for s in (sec - 59)..=sec {
        pipe.cmd("HGETALL").arg(keys.stats(s));
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
    let int = |i: usize| replies.get(i).and_then(reply::as_i64).unwrap_or(0).max(0) as u64;
    let exists = int(0) == 1;
    let len = int(1);
    let delayed = int(2);
    let next_delayed_ms = replies
        .get(3)
        .map(reply::list)
        .and_then(|l| l.get(1))
        .and_then(reply::as_i64)
        .map(|v| v as u64);
    let dead = int(4);
    let worker_rows: Vec<(String, u64)> = replies
        .get(5)
        .map(reply::list)
        .unwrap_or(&[])
        .chunks(2)
        .filter_map(|kv| match kv {
            [name, score] => Some((reply::as_string(name)?, reply::as_i64(score)? as u64)),
            _ => None,
        })
        .collect();
    let mut last_minute = Counters::default();
    for r in replies.iter().skip(6) {
        for (k, v) in reply::pairs(r) {
            let v = reply::as_i64(&v).unwrap_or(0).max(0) as u64;
            match k.as_str() {
                "done" => last_minute.done += v,
                "retried" => last_minute.retried += v,
                "deferred" => last_minute.deferred += v,
                "released" => last_minute.released += v,
                "reclaimed" => last_minute.reclaimed += v,
                "dead" => last_minute.dead += v,
                _ => {}
            }
        }
    }

    // Group state: lag (not yet delivered) and the pending-entries summary.
    let (mut pending, mut in_flight, mut per_consumer) = (0u64, 0u64, Vec::<(String, u64)>::new());
    if exists {
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.stream)
            .query_async(&mut conn)
            .await?;
        let ours = reply::list(&groups).iter().map(reply::pairs).find(|g| {
            g.iter()
                .any(|(k, v)| k == "name" && reply::as_string(v).as_deref() == Some(cfg.group.as_str()))
        });
        match ours {
            Some(group) => {
                let summary: redis::Value = redis::cmd("XPENDING")
                    .arg(&keys.stream)
                    .arg(&cfg.group)
                    .query_async(&mut conn)
                    .await?;
                let s = reply::list(&summary);
                in_flight = s.first().and_then(reply::as_i64).unwrap_or(0).max(0) as u64;
                per_consumer = s
                    .get(3)
                    .map(reply::list)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|row| {
                        let row = reply::list(row);
                        Some((reply::as_string(row.first()?)?, reply::as_i64(row.get(1)?)? as u64))
                    })
                    .collect();
                // The group's lag is exact as long as nothing is deleted from the middle of the
                // stream, which the queue never does.
                let lag = group
                    .iter()
                    .find(|(k, _)| k == "lag")
                    .and_then(|(_, v)| reply::as_i64(v));
                pending = match lag {
                    Some(l) => l.max(0) as u64,
                    None => len.saturating_sub(in_flight),
                };
            }
            // No worker ever ran: everything in the stream is pending.
            None => pending = len,
        }
    }

    let mut workers = Vec::with_capacity(worker_rows.len());
    if !worker_rows.is_empty() {
        let mut pipe = redis::pipe();
        for (name, _) in &worker_rows {
            pipe.cmd("HGETALL").arg(keys.worker(name));
        }
        let infos: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let vt = cfg.visibility_timeout.as_millis() as u64;
        for ((name, hb), info) in worker_rows.into_iter().zip(infos) {
            let f = reply::pairs(&info);
            let s = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| reply::as_string(v))
                    .unwrap_or_default()
            };
            let n = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| reply::as_i64(v))
                    .unwrap_or(0)
                    .max(0) as u64
            };
            let state = s("state");
            let in_flight = per_consumer
                .iter()
                .find(|(c, _)| *c == name)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            workers.push(WorkerStatus {
                alive: state != "stopped" && now.saturating_sub(hb) <= vt,
                name,
                last_heartbeat_ms: hb,
                in_flight,
                host: s("host"),
                pid: n("pid"),
                started_at_ms: n("started_at"),
                concurrency: n("concurrency"),
                state,
            });
        }
    }

    Ok(QueueStats {
        queue: cfg.name.clone(),
        pending,
        in_flight,
        delayed,
        dead,
        retained: len.saturating_sub(pending + in_flight),
        next_delayed_ms,
        last_minute,
        workers,
    })
}
