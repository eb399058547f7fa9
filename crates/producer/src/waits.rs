//! Why a destination's writes wait, for people, and waking the work that waited once the cause
//! is lifted.
//!
//! A flush that cannot write (the budget, an operator's pause, a 429 cooldown, Zoho's
//! token-request window, a dead authorization, the CRM unreachable) records why and until when
//! (`D:blocked`); the next write that goes clears it. `crmsync status` and the dashboard show
//! it. A flush deferred for the budget or a pause also leaves its job id (`D:waiters`), so a
//! raised budget or a resume runs it at once instead of at the time computed before.

use std::collections::HashMap;

use crmsync_queue::{JobQueue, QueueError};
use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::{DestKeys, LIVE_GUARD};
use redis::Script;
use serde::Serialize;

use crate::FlushWrites;

/// How long a waiter is remembered (a deferred flush runs again well before).
const WAITERS_TTL_MS: u64 = 25 * 3_600_000;

/// Why a destination's writes wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The dead-letter vocabulary's code (`BUDGET`, `ORG_BUDGET`, `PAUSED`,
    /// `TOO_MANY_REQUESTS`, `TOKEN_REQUESTS_EXHAUSTED`, `REAUTHORIZE`, `ZOHO_UNAVAILABLE`, ...).
    pub code: String,
    pub reason: String,
    /// When it ends by itself, if it does.
    pub until_ms: Option<u64>,
    /// Since when the writes wait for it.
    pub since_ms: u64,
}

/// Records why the destination's writes wait; `waiter`: the flush job to wake when the cause
/// is lifted (budget, pause). Keeps `since` while the cause stays the same.
pub async fn record(
    conn: &RedisConn,
    dest: &DestKeys,
    code: &str,
    reason: &str,
    until_ms: Option<u64>,
    waiter: Option<&str>,
) -> redis::RedisResult<()> {
    static RECORD: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::new(&format!(
            "{LIVE_GUARD}
local now = tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'code') ~= ARGV[2] then redis.call('HSET', KEYS[1], 'since', now) end
redis.call('HSET', KEYS[1], 'code', ARGV[2], 'reason', ARGV[3], 'until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], {WAITERS_TTL_MS})
if ARGV[5] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], {WAITERS_TTL_MS})
end
return 1"
        ))
    });
    let mut conn = conn.clone();
    let _: i64 = RECORD
        .key(dest.blocked())
        .key(dest.waiters())
        .key(dest.live())
        .arg(now_ms())
        .arg(code)
        .arg(one_line(reason))
        .arg(until_ms.map(|u| u.to_string()).unwrap_or_default())
        .arg(waiter.unwrap_or(""))
        .arg(dest.dest())
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// A reason as stored: one line, at most 300 characters.
fn one_line(s: &str) -> String {
    let line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    line.chars().take(300).collect()
}

/// The writes went: nothing waits any more.
pub async fn clear(conn: &RedisConn, dest: &DestKeys) -> redis::RedisResult<()> {
    let mut conn = conn.clone();
    redis::cmd("DEL").arg(dest.blocked()).query_async(&mut conn).await
}

/// Why the destination's writes wait, if they do.
pub async fn blocked(conn: &RedisConn, dest: &DestKeys) -> redis::RedisResult<Option<Blocked>> {
    let mut conn = conn.clone();
    let f: HashMap<String, String> = redis::cmd("HGETALL").arg(dest.blocked()).query_async(&mut conn).await?;
    let Some(code) = f.get("code") else { return Ok(None) };
    Ok(Some(Blocked {
        code: code.clone(),
        reason: f.get("reason").cloned().unwrap_or_default(),
        until_ms: f.get("until").and_then(|u| u.parse().ok()),
        since_ms: f.get("since").and_then(|u| u.parse().ok()).unwrap_or(0),
    }))
}

/// Runs the destination's flushes that wait for the budget or a pause now (they check again
/// against the current settings), and forgets the last budget pause. Returns how many were
/// woken.
pub async fn wake(conn: &RedisConn, writes: &JobQueue<FlushWrites>, dest: &DestKeys) -> Result<u64, QueueError> {
    let mut c = conn.clone();
    let (ids,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("SMEMBERS")
        .arg(dest.waiters())
        .cmd("DEL")
        .arg(dest.waiters())
        .ignore()
        .cmd("DEL")
        .arg(dest.budget_pause())
        .ignore()
        .query_async(&mut c)
        .await?;
    writes.run_now(&ids).await
}
