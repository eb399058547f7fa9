//! Operating on the dead-letter stream: reading it page by page, redriving dead letters as
//! fresh jobs (an operator's retry after a fix) and purging them.
//!
//! A redrive moves each dead letter back into the queue's stream with its attempts reset, in
//! one script step per entry (`redrive.lua`), so no job is lost or duplicated between two
//! Redis calls. Only entries that decode as jobs of the queue's type are redriven: garbage
//! would only die again, so it is refused and left where it is for inspection or a purge.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conn::RedisConn;
use crate::dead::{self, DeadLetter};
use crate::envelope::Envelope;
use crate::error::QueueError;
use crate::keys::Keys;
use crate::reply;
use crate::scripts::SCRIPTS;

/// Dead letters handled per script call (the queue never handles an unbounded number of ids
/// in one call; a redrive of 100 entries keeps a script well under a millisecond of work per
/// entry's XRANGE + XADD + XDEL).
const REDRIVE_BATCH: usize = 100;
/// Ids per `XDEL` of a purge.
const PURGE_BATCH: usize = 500;

/// What a redrive did with each dead letter asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Back in the queue as fresh jobs.
    pub redriven: Vec<Redriven>,
    /// Not in the dead-letter stream (never there, already redriven or purged), or not an
    /// entry id at all.
    pub missing: Vec<String>,
    /// Left in the dead-letter stream: they are not jobs this queue can run.
    pub refused: Vec<Refused>,
}

/// A dead letter that went back into the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    pub dead_id: String,
    /// The job's id (kept: a flush's id names the batch it resumes).
    pub job_id: String,
    /// The job's new entry in the queue's stream.
    pub entry_id: String,
}

/// A dead letter that cannot be redriven, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub dead_id: String,
    pub reason: String,
}

/// Whether `id` has the shape of a stream entry id (`<ms>-<seq>`); anything else would make
/// Redis refuse the whole command.
pub fn is_entry_id(id: &str) -> bool {
    match id.split_once('-') {
        Some((ms, seq)) => {
            !ms.is_empty()
                && !seq.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && seq.bytes().all(|b| b.is_ascii_digit())
                && ms.parse::<u64>().is_ok()
                && seq.parse::<u64>().is_ok()
        }
        None => false,
    }
}

/// Up to `count` dead letters older than `before` (all when `None`), newest first.
pub(crate) async fn page(
    conn: &RedisConn,
    keys: &Keys,
    before: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let end = match before {
        Some(id) if is_entry_id(id) => format!("({id}"),
        Some(id) => return Err(QueueError::Reply(format!("`{id}` is not a stream entry id"))),
        None => "+".to_owned(),
    };
    let mut conn = conn.clone();
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(&keys.dead)
        .arg(end)
        .arg("-")
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await?;
    Ok(reply::entries(&v).iter().map(dead::from_entry).collect())
}

/// One dead letter by id.
pub(crate) async fn get(conn: &RedisConn, keys: &Keys, dead_id: &str) -> Result<Option<DeadLetter>, QueueError> {
    if !is_entry_id(dead_id) {
        return Ok(None);
    }
    let mut conn = conn.clone();
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.dead)
        .arg(dead_id)
        .arg(dead_id)
        .query_async(&mut conn)
        .await?;
    Ok(reply::entries(&v).first().map(dead::from_entry))
}

/// Why an entry is not a job of type `Args`, if it is not.
fn refusal<Args: DeserializeOwned>(entry: &reply::Entry) -> Option<String> {
    match Envelope::from_fields(&entry.fields) {
        Err(e) => Some(format!("not a job: {e}")),
        Ok(env) => serde_json::from_slice::<Args>(&env.payload)
            .err()
            .map(|e| format!("payload of job {} does not decode: {e}", env.id)),
    }
}

/// Redrives dead letters as fresh jobs of type `Args` (see the module docs).
pub(crate) async fn redrive<Args: DeserializeOwned>(
    conn: &RedisConn,
    keys: &Keys,
    dead_ids: &[String],
) -> Result<RedriveReport, QueueError> {
    let mut report = RedriveReport::default();
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for id in dead_ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        if is_entry_id(id) {
            ids.push(id.clone());
        } else {
            report.missing.push(id.clone());
        }
    }
    let mut conn = conn.clone();
    for chunk in ids.chunks(REDRIVE_BATCH) {
        // Read and decode first: only jobs this queue can run go back.
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("XRANGE").arg(&keys.dead).arg(id).arg(id);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut runnable: Vec<(&String, String)> = Vec::new();
        for (id, v) in chunk.iter().zip(&replies) {
            match reply::entries(v).first() {
                None => report.missing.push(id.clone()),
                Some(entry) => match refusal::<Args>(entry) {
                    Some(reason) => report.refused.push(Refused {
                        dead_id: id.clone(),
                        reason,
                    }),
                    None => {
                        let job_id = dead::from_entry(entry).job_id.unwrap_or_default();
                        runnable.push((id, job_id));
                    }
                },
            }
        }
        if runnable.is_empty() {
            continue;
        }
        let mut inv = SCRIPTS.redrive.prepare_invoke();
        inv.key(&keys.stream).key(&keys.dead).arg(crate::now_ms());
        for (id, _) in &runnable {
            inv.arg(*id);
        }
        let res: redis::Value = inv.invoke_async(&mut conn).await?;
        let items = reply::list(&res);
        if items.len() != runnable.len() {
            return Err(QueueError::Reply(format!("redrive returned {res:?}")));
        }
        for ((id, job_id), item) in runnable.into_iter().zip(items) {
            match reply::as_string(item).as_deref() {
                Some("missing") => report.missing.push(id.clone()),
                Some("not_a_job") | None => report.refused.push(Refused {
                    dead_id: id.clone(),
                    reason: "not a job: the entry lacks the envelope's fields".into(),
                }),
                Some(entry_id) => report.redriven.push(Redriven {
                    dead_id: id.clone(),
                    job_id,
                    entry_id: entry_id.to_owned(),
                }),
            }
        }
    }
    Ok(report)
}

/// Deletes dead letters; returns how many existed.
pub(crate) async fn purge(conn: &RedisConn, keys: &Keys, dead_ids: &[String]) -> Result<u64, QueueError> {
    let ids: Vec<&String> = dead_ids.iter().filter(|id| is_entry_id(id)).collect();
    let mut conn = conn.clone();
    let mut removed = 0;
    for chunk in ids.chunks(PURGE_BATCH) {
        let n: u64 = redis::cmd("XDEL")
            .arg(&keys.dead)
            .arg(chunk)
            .query_async(&mut conn)
            .await?;
        removed += n;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_ids_are_recognised() {
        for (id, ok) in [
            ("1700000000000-0", true),
            ("1-12", true),
            ("1700000000000", false),
            ("abc-0", false),
            ("-0", false),
            ("1-", false),
            ("(1-0", false),
            ("+", false),
            ("99999999999999999999999-0", false),
        ] {
            assert_eq!(super::is_entry_id(id), ok, "{id}");
        }
    }
}
