//! The audit stream: every operator action, who did it, through what, when, and what came of
//! it. One Redis stream per namespace, `<ns>:audit`, capped at about [`AUDIT_MAX`] entries
//! (the oldest go first), listed by `crmsync audit` and on the dashboard.
//!
//! Entry fields: `who`, `via` (`cli`, `dashboard`), `action` (`dead.retry`, `dead.purge`,
//! `rejected.retry`, `tenant.pause`, `tenant.resume`, `run.cancel`, `tenant.add`, `tenant.set`,
//! `tenant.remove`, `keys.rotate`),
//! `target` (what it acted on), `reason` (the operator's words, may be empty), `outcome`
//! (what happened). The entry id carries the time. Every field is one line, bounded.

use crmsync_queue::RedisConn;
use serde::Serialize;

use crate::{Actor, clean};

/// About how many entries the stream keeps.
pub const AUDIT_MAX: usize = 10_000;
/// Longest reason, target and outcome kept (characters).
const FIELD_MAX: usize = 500;

/// The stream's key.
pub fn audit_key(namespace: &str) -> String {
    format!("{namespace}:audit")
}

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// The stream entry id (`<ms>-<seq>`).
    pub id: String,
    pub at_ms: u64,
    pub who: String,
    pub via: String,
    pub action: String,
    pub target: String,
    pub reason: String,
    pub outcome: String,
}

/// The audit stream of a namespace.
#[derive(Clone)]
pub struct Audit {
    conn: RedisConn,
    key: String,
}

impl Audit {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self {
            conn,
            key: audit_key(namespace),
        }
    }

    /// Records an action done by `actor`.
    pub async fn record(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        reason: &str,
        outcome: &str,
    ) -> Result<String, redis::RedisError> {
        redis::cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_MAX)
            .arg("*")
            .arg("who")
            .arg(clean(&actor.who, 120))
            .arg("via")
            .arg(actor.via)
            .arg("action")
            .arg(clean(action, 40))
            .arg("target")
            .arg(clean(target, FIELD_MAX))
            .arg("reason")
            .arg(clean(reason, FIELD_MAX))
            .arg("outcome")
            .arg(clean(outcome, FIELD_MAX))
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Entries newest first: at most `limit`, older than `before` (an entry id) when given.
    pub async fn list(&self, limit: usize, before: Option<&str>) -> Result<Vec<AuditEntry>, redis::RedisError> {
        let end = match before {
            // Exclusive range: strictly older than `before`.
            Some(id) if crmsync_queue::is_entry_id(id) => format!("({id}"),
            Some(_) => return Ok(Vec::new()),
            None => "+".to_owned(),
        };
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(&self.key)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit.clamp(1, AUDIT_MAX))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, fields)| {
                let get = |k: &str| {
                    fields
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                AuditEntry {
                    at_ms: id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0),
                    who: get("who"),
                    via: get("via"),
                    action: get("action"),
                    target: get("target"),
                    reason: get("reason"),
                    outcome: get("outcome"),
                    id,
                }
            })
            .collect())
    }
}
