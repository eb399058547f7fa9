//! What workers remember per tenant between jobs: which contact owns the CRM record of an
//! email, the Zoho record id of each contact, and the records Zoho rejected.
//!
//! Shared emails: two contacts of one address book with the same email must end as one CRM
//! record, and which contact's fields it holds must not depend on the order pages are
//! processed in. The contact with the smallest Nylas id owns the email. A worker claims
//! emails *before* writing (a smaller id takes over) and checks *after* writing whether a
//! smaller id claimed meanwhile; if so it writes the owner's fields again. Whichever write
//! lands last, the record ends with the owner's fields.

use std::sync::LazyLock;

use crmsync_queue::RedisConn;
use redis::Script;
use serde::Serialize;

use crate::keys::TenantKeys;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/claim_emails.lua")));

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

    /// Claims each email for its contact; returns, per pair, whether the contact owns it.
    pub async fn claim_emails(&self, pairs: &[(&str, &str)]) -> Result<Vec<bool>, redis::RedisError> {
        if pairs.is_empty() {
            return Ok(vec![]);
        }
        let mut inv = CLAIM.prepare_invoke();
        inv.key(self.keys.email_owner());
        for (email, id) in pairs {
            inv.arg(*email).arg(*id);
        }
        let mut conn = self.conn.clone();
        let owned: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(owned.into_iter().map(|o| o == 1).collect())
    }

    /// The current owners of these emails.
    pub async fn owners(&self, emails: &[&str]) -> Result<Vec<Option<String>>, redis::RedisError> {
        if emails.is_empty() {
            return Ok(vec![]);
        }
        let mut conn = self.conn.clone();
        redis::cmd("HMGET")
            .arg(self.keys.email_owner())
            .arg(emails)
            .query_async(&mut conn)
            .await
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
        let mut conn = self.conn.clone();
        let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.keys.rejected())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(v.into_iter()
            .map(|(_, f)| {
                let get = |k: &str| {
                    f.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                Rejection {
                    run_id: get("run"),
                    contact_id: get("contact"),
                    email: get("email"),
                    code: get("code"),
                    field: Some(get("field")).filter(|s| !s.is_empty()),
                    message: get("message"),
                }
            })
            .collect())
    }
}
