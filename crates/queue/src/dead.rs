//! Reading the dead-letter stream.

use serde::Serialize;

use crate::conn::RedisConn;
use crate::error::QueueError;
use crate::keys::Keys;
use crate::reply;

/// One dead letter: the job's envelope as it was, why it died, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Id of the entry in the dead-letter stream.
    pub dead_id: String,
    /// Job id (absent for entries that were not jobs at all).
    pub job_id: Option<String>,
    /// Attempts used.
    pub attempts: Option<u32>,
    /// Why the job died: its last error, or the decode error of an undecodable entry.
    pub reason: String,
    /// The reason's code (`c`; absent in entries written before codes were recorded).
    pub code: Option<String>,
    /// The payload, lossily decoded as UTF-8 (JSON for every job this queue wrote).
    pub payload: Option<String>,
    /// The stream entry it was moved from.
    pub source_entry: Option<String>,
    pub dead_at_ms: Option<u64>,
    /// Every field of the entry, for entries in an unknown format.
    pub fields: Vec<(String, String)>,
}

pub(crate) async fn list(conn: &RedisConn, keys: &Keys, count: usize) -> Result<Vec<DeadLetter>, QueueError> {
    let mut conn = conn.clone();
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(&keys.dead)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?;
    Ok(reply::entries(&v).iter().map(from_entry).collect())
}

/// A dead letter from its entry in the dead-letter stream.
pub(crate) fn from_entry(e: &reply::Entry) -> DeadLetter {
    let fields: Vec<(String, String)> = e
        .fields
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    DeadLetter {
        dead_id: e.id.clone(),
        job_id: get("id"),
        attempts: get("a").and_then(|a| a.parse().ok()),
        reason: get("e").unwrap_or_default(),
        code: get("c"),
        payload: get("p"),
        source_entry: get("src"),
        dead_at_ms: get("dead_at").and_then(|a| a.parse().ok()),
        fields,
    }
}
