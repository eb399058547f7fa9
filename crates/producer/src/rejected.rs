//! Records the CRM refused, per destination (a stream capped at the newest 10,000, written by
//! the flush that met the refusal): listed for operators, forgotten once retried.

use crmsync_redis::RedisConn;
use crmsync_tenants::DestKeys;

use crate::buffer::Rejection;

/// A destination's rejected records. Cheap to clone.
#[derive(Clone)]
pub struct Rejected {
    conn: RedisConn,
    keys: DestKeys,
}

impl Rejected {
    pub fn new(conn: RedisConn, keys: DestKeys) -> Self {
        Self { conn, keys }
    }

    /// The newest rejected records, newest first.
    pub async fn newest(&self, count: usize) -> Result<Vec<Rejection>, redis::RedisError> {
        Ok(self.before(None, count).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Up to `count` rejected records older than the entry `before` (the newest when `None`),
    /// newest first, each with its entry id in the stream (`<ms>-<seq>`: when it was
    /// rejected). Pass the last id of a page to read the next one.
    pub async fn before(
        &self,
        before: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Rejection)>, redis::RedisError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let end = before.map(|id| format!("({id}")).unwrap_or_else(|| "+".into());
        let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.keys.rejected())
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(v.into_iter()
            .map(|(id, f)| {
                let get = |k: &str| {
                    f.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let r = Rejection {
                    run_id: get("run"),
                    contact_id: get("contact"),
                    email: get("email"),
                    code: get("code"),
                    field: Some(get("field")).filter(|s| !s.is_empty()),
                    message: get("message"),
                };
                (id, r)
            })
            .collect())
    }

    /// Forgets rejected records by entry id (once they are retried); returns how many there
    /// were.
    pub async fn remove(&self, ids: &[String]) -> Result<u64, redis::RedisError> {
        let mut conn = self.conn.clone();
        let mut removed = 0;
        // Bounded commands, like every multi-id call of the fleet.
        for chunk in ids.chunks(500) {
            let n: u64 = redis::cmd("XDEL")
                .arg(self.keys.rejected())
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            removed += n;
        }
        Ok(removed)
    }
}
