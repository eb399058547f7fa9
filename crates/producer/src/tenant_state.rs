//! What workers remember per tenant between jobs: the Zoho record id of each contact, and the
//! records Zoho rejected. (Which contact owns an email is kept with the write buffer.)

use crmsync_queue::RedisConn;
use serde::Serialize;

use crate::keys::TenantKeys;

/// Most rejected records kept per tenant.
const REJECTED_MAX: u64 = 10_000;

/// A record Zoho rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub run_id: String,
    pub contact_id: String,
    pub email: String,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
}

/// A tenant's remembered state. Cheap to clone.
#[derive(Clone)]
pub struct TenantState {
    conn: RedisConn,
    keys: TenantKeys,
}

impl TenantState {
    pub fn new(conn: RedisConn, namespace: &str, tenant: &str) -> Self {
        Self {
            conn,
            keys: TenantKeys::new(namespace, tenant),
        }
    }

    /// Remembers the Zoho record id of contacts.
    pub async fn set_zoho_ids(&self, pairs: &[(&str, &str)]) -> Result<(), redis::RedisError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.zoho_ids());
        for (contact, id) in pairs {
            cmd.arg(*contact).arg(*id);
        }
        cmd.query_async(&mut conn).await
    }

    /// The Zoho record ids of contacts (None where unknown).
    pub async fn zoho_ids(&self, contacts: &[&str]) -> Result<Vec<Option<String>>, redis::RedisError> {
        if contacts.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn.clone();
        redis::cmd("HMGET")
            .arg(self.keys.zoho_ids())
            .arg(contacts)
            .query_async(&mut conn)
            .await
    }

    /// Forgets the record ids of contacts whose records were deleted.
    pub async fn forget_zoho_ids(&self, contacts: &[&str]) -> Result<(), redis::RedisError> {
        if contacts.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("HDEL")
            .arg(self.keys.zoho_ids())
            .arg(contacts)
            .query_async(&mut conn)
            .await
    }

    /// The Zoho record id of a contact, if known.
    pub async fn zoho_id(&self, contact: &str) -> Result<Option<String>, redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.keys.zoho_ids())
            .arg(contact)
            .query_async(&mut conn)
            .await
    }

    /// Records rejected records (capped at the newest 10,000 per tenant).
    pub async fn add_rejections(&self, rejected: &[Rejection]) -> Result<(), redis::RedisError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for r in rejected {
            pipe.cmd("XADD")
                .arg(self.keys.rejected())
                .arg("MAXLEN")
                .arg("~")
                .arg(REJECTED_MAX)
                .arg("*")
                .arg("run")
                .arg(&r.run_id)
                .arg("contact")
                .arg(&r.contact_id)
                .arg("email")
                .arg(&r.email)
                .arg("code")
                .arg(&r.code)
                .arg("field")
                .arg(r.field.as_deref().unwrap_or(""))
                .arg("message")
                .arg(&r.message)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// The newest rejected records, newest first.
    pub async fn rejections(&self, count: usize) -> Result<Vec<Rejection>, redis::RedisError> {
        Ok(self
            .rejections_before(None, count)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Up to `count` rejected records older than the entry `before` (the newest when `None`),
    /// newest first, each with its entry id in the rejected stream (`<ms>-<seq>`: when it was
    /// rejected). Pass the last id of a page to read the next one.
    pub async fn rejections_before(
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
    pub async fn remove_rejections(&self, ids: &[String]) -> Result<u64, redis::RedisError> {
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
