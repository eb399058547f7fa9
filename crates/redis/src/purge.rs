//! Deleting every key under a prefix in bounded steps: a removed tenant's keys, a destination's
//! state after a tenant was re-pointed. `SCAN` walks the keyspace `COUNT` keys a call and the
//! keys found are deleted with `UNLINK` (Redis frees their memory in the background, so a big
//! hash never blocks the server) at most `batch` per command. On a Redis Cluster the walk goes
//! to the node that owns the prefix's hash tag: every key under a tag lives there.

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisResult, Value};

use crate::{Conn, RedisConn};

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Keys deleted.
    pub deleted: u64,
    /// `SCAN` calls made.
    pub scans: u64,
}

/// Escapes the glob characters of `SCAN ... MATCH` in a literal prefix.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisConn {
    /// Sends a command that names no key (`SCAN`) to the node owning `key`'s slot on a
    /// Cluster; to the one server otherwise.
    pub async fn query_at_key<T: redis::FromRedisValue>(&self, cmd: &Cmd, key: &str) -> RedisResult<T> {
        match &self.0 {
            Conn::Cluster(c) => {
                let mut c = c.clone();
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let v: Value = c
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(v)?)
            }
            _ => {
                let mut conn = self.clone();
                cmd.query_async(&mut conn).await
            }
        }
    }
}

/// Deletes every key starting with `prefix` (which must hold a hash tag, so the keys share a
/// node), `batch` keys per `UNLINK` and `SCAN ... COUNT batch` per walk step. Keys created
/// while the walk runs may survive it; callers make sure nothing writes under the prefix first.
pub async fn purge_matching(conn: &RedisConn, prefix: &str, batch: usize) -> RedisResult<PurgeReport> {
    let batch = batch.clamp(1, 10_000);
    let pattern = format!("{}*", glob_escape(prefix));
    let mut report = PurgeReport::default();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = conn
            .query_at_key(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(batch),
                prefix,
            )
            .await?;
        report.scans += 1;
        for chunk in keys.chunks(batch) {
            let mut c = conn.clone();
            let n: u64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut c).await?;
            report.deleted += n;
        }
        if next == 0 {
            return Ok(report);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(super::glob_escape("{ns:t:a}:d:1f:"), "{ns:t:a}:d:1f:");
        assert_eq!(super::glob_escape("{n*s?[x]\\}"), "{n\\*s\\?\\[x\\]\\\\}");
    }
}
