//! The tenant store in Redis.

use crmsync_redis::RedisConn;
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretError, SecretKey};
use crate::tenant::{Edition, NylasSettings, Tenant, TenantError, ZohoSettings, tenant_tag};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error("tenant `{0}` already exists; change it with `crmsync tenant set {0} ...`")]
    Exists(String),
    #[error("no tenant `{0}`; list tenants with `crmsync tenant list`")]
    NotFound(String),
    #[error("stored tenant `{0}` is unreadable: {1}")]
    Corrupt(String, String),
}

/// The stored form: non-secret settings in clear, secrets sealed. A boundary: it is what sits
/// in Redis, so fields are only ever added (with defaults).
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    nylas_grant_id: String,
    nylas_api_key: String,
    nylas_api_uri: String,
    zoho_region: Option<String>,
    zoho_accounts_url: Option<String>,
    zoho_api_domain: Option<String>,
    zoho_client_id: String,
    zoho_client_secret: String,
    zoho_refresh_token: Option<String>,
    daily_credits: u64,
    budget_share: f64,
    #[serde(default)]
    edition: Option<String>,
    #[serde(default)]
    users: Option<u32>,
    #[serde(default = "default_rps")]
    requests_per_second: f64,
    #[serde(default)]
    concurrency: Option<u32>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    webhook_secret_next: Option<String>,
    #[serde(default)]
    created_at_ms: u64,
    #[serde(default)]
    updated_at_ms: u64,
}

fn default_rps() -> f64 {
    crate::tenant::DEFAULT_RPS
}

/// Tenants in Redis. Cheap to clone.
#[derive(Clone)]
pub struct TenantStore {
    conn: RedisConn,
    namespace: String,
    key: Option<SecretKey>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TenantStore {
    /// A store; without a key, tenants can be listed but not read or written.
    pub fn new(conn: RedisConn, namespace: impl Into<String>, key: Option<SecretKey>) -> Self {
        Self {
            conn,
            namespace: namespace.into(),
            key,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn key(&self) -> Result<&SecretKey, StoreError> {
        self.key.as_ref().ok_or(StoreError::Secret(SecretError::Missing))
    }

    fn index_key(&self) -> String {
        format!("{}:tenants", self.namespace)
    }

    /// Hash: Nylas grant id -> tenant id (webhooks name the grant).
    fn grants_key(&self) -> String {
        format!("{}:grants", self.namespace)
    }

    fn tenant_key(&self, id: &str) -> String {
        format!("{}:tenant", tenant_tag(&self.namespace, id))
    }

    fn ctx(id: &str, field: &str) -> String {
        format!("tenant:{id}:{field}")
    }

    fn seal(&self, t: &Tenant) -> Result<Stored, StoreError> {
        let k = self.key()?;
        Ok(Stored {
            id: t.id.clone(),
            nylas_grant_id: t.nylas.grant_id.clone(),
            nylas_api_key: k.seal(&Self::ctx(&t.id, "nylas.api_key"), t.nylas.api_key.expose()),
            nylas_api_uri: t.nylas.api_uri.clone(),
            zoho_region: t.zoho.region.clone(),
            zoho_accounts_url: t.zoho.accounts_url.clone(),
            zoho_api_domain: t.zoho.api_domain.clone(),
            zoho_client_id: t.zoho.client_id.clone(),
            zoho_client_secret: k.seal(&Self::ctx(&t.id, "zoho.client_secret"), t.zoho.client_secret.expose()),
            zoho_refresh_token: t
                .zoho
                .refresh_token
                .as_ref()
                .map(|r| k.seal(&Self::ctx(&t.id, "zoho.refresh_token"), r.expose())),
            daily_credits: t.daily_credits,
            budget_share: t.budget_share,
            edition: t.edition.map(|e| e.as_str().to_owned()),
            users: t.users,
            requests_per_second: t.requests_per_second,
            concurrency: t.concurrency,
            webhook_secret: t
                .webhook_secret
                .as_ref()
                .map(|w| k.seal(&Self::ctx(&t.id, "webhook.secret"), w.expose())),
            webhook_secret_next: t
                .webhook_secret_next
                .as_ref()
                .map(|w| k.seal(&Self::ctx(&t.id, "webhook.secret_next"), w.expose())),
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
        })
    }

    fn open(&self, s: Stored) -> Result<Tenant, StoreError> {
        let k = self.key()?;
        let open = |field: &str, v: &str| k.open(&Self::ctx(&s.id, field), v).map(Secret::new);
        Ok(Tenant {
            nylas: NylasSettings {
                grant_id: s.nylas_grant_id.clone(),
                api_key: open("nylas.api_key", &s.nylas_api_key)?,
                api_uri: s.nylas_api_uri.clone(),
            },
            zoho: ZohoSettings {
                region: s.zoho_region.clone(),
                accounts_url: s.zoho_accounts_url.clone(),
                api_domain: s.zoho_api_domain.clone(),
                client_id: s.zoho_client_id.clone(),
                client_secret: open("zoho.client_secret", &s.zoho_client_secret)?,
                refresh_token: s
                    .zoho_refresh_token
                    .as_deref()
                    .map(|r| open("zoho.refresh_token", r))
                    .transpose()?,
            },
            daily_credits: s.daily_credits,
            budget_share: s.budget_share,
            edition: s.edition.as_deref().and_then(Edition::parse),
            users: s.users,
            requests_per_second: s.requests_per_second,
            concurrency: s.concurrency,
            webhook_secret: s
                .webhook_secret
                .as_deref()
                .map(|w| open("webhook.secret", w))
                .transpose()?,
            webhook_secret_next: s
                .webhook_secret_next
                .as_deref()
                .map(|w| open("webhook.secret_next", w))
                .transpose()?,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            id: s.id,
        })
    }

    /// Adds a new tenant; refuses an existing id.
    pub async fn add(&self, mut t: Tenant) -> Result<(), StoreError> {
        t.validate()?;
        t.created_at_ms = now_ms();
        t.updated_at_ms = t.created_at_ms;
        let json =
            serde_json::to_string(&self.seal(&t)?).map_err(|e| StoreError::Corrupt(t.id.clone(), e.to_string()))?;
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.tenant_key(&t.id))
            .arg(json)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        if set.is_none() {
            return Err(StoreError::Exists(t.id));
        }
        let _: () = redis::pipe()
            .cmd("SADD")
            .arg(self.index_key())
            .arg(&t.id)
            .ignore()
            .cmd("HSET")
            .arg(self.grants_key())
            .arg(&t.nylas.grant_id)
            .arg(&t.id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Replaces an existing tenant (after `get` and a change).
    pub async fn update(&self, mut t: Tenant) -> Result<(), StoreError> {
        t.validate()?;
        t.updated_at_ms = now_ms();
        let json =
            serde_json::to_string(&self.seal(&t)?).map_err(|e| StoreError::Corrupt(t.id.clone(), e.to_string()))?;
        let old = self.stored(&t.id).await?;
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.tenant_key(&t.id))
            .arg(json)
            .arg("XX")
            .query_async(&mut conn)
            .await?;
        if set.is_none() {
            return Err(StoreError::NotFound(t.id));
        }
        if old.nylas_grant_id != t.nylas.grant_id {
            let _: () = redis::pipe()
                .cmd("HDEL")
                .arg(self.grants_key())
                .arg(&old.nylas_grant_id)
                .ignore()
                .cmd("HSET")
                .arg(self.grants_key())
                .arg(&t.nylas.grant_id)
                .arg(&t.id)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// The tenant a Nylas grant belongs to.
    pub async fn tenant_of_grant(&self, grant_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGET")
            .arg(self.grants_key())
            .arg(grant_id)
            .query_async(&mut conn)
            .await?)
    }

    async fn stored(&self, id: &str) -> Result<Stored, StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(self.tenant_key(id))
            .query_async(&mut conn)
            .await?;
        let json = json.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(id.to_owned(), e.to_string()))
    }

    /// A tenant with its secrets opened (needs the key).
    pub async fn get(&self, id: &str) -> Result<Tenant, StoreError> {
        let s = self.stored(id).await?;
        self.open(s)
    }

    /// Removes a tenant. Returns whether it existed.
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        if let Ok(old) = self.stored(id).await {
            let mut conn = self.conn.clone();
            let _: () = redis::cmd("HDEL")
                .arg(self.grants_key())
                .arg(&old.nylas_grant_id)
                .query_async(&mut conn)
                .await?;
        }
        let mut conn = self.conn.clone();
        let (n, _): (i64, i64) = redis::pipe()
            .cmd("DEL")
            .arg(self.tenant_key(id))
            .cmd("SREM")
            .arg(self.index_key())
            .arg(id)
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Tenant ids, sorted.
    pub async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.index_key())
            .query_async(&mut conn)
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// A tenant for display: non-secret settings, and secrets masked (`****abcd` when the key
    /// opens them, `(sealed)` without a key). Never the secrets themselves.
    pub async fn view(&self, id: &str) -> Result<serde_json::Value, StoreError> {
        let s = self.stored(id).await?;
        let mask = |field: &str, v: Option<&str>| -> serde_json::Value {
            match (v, &self.key) {
                (None, _) => serde_json::Value::Null,
                (Some(v), Some(k)) => match k.open(&Self::ctx(&s.id, field), v) {
                    Ok(p) => Secret::new(p).masked().into(),
                    Err(_) => "(sealed with another key)".into(),
                },
                (Some(_), None) => "(sealed)".into(),
            }
        };
        Ok(serde_json::json!({
            "id": s.id,
            "nylas": {
                "grant_id": s.nylas_grant_id,
                "api_uri": s.nylas_api_uri,
                "api_key": mask("nylas.api_key", Some(&s.nylas_api_key)),
            },
            "zoho": {
                "region": s.zoho_region,
                "accounts_url": s.zoho_accounts_url,
                "api_domain": s.zoho_api_domain,
                "client_id": s.zoho_client_id,
                "client_secret": mask("zoho.client_secret", Some(&s.zoho_client_secret)),
                "refresh_token": mask("zoho.refresh_token", s.zoho_refresh_token.as_deref()),
            },
            "daily_credits": s.daily_credits,
            "budget_share": s.budget_share,
            "edition": s.edition,
            "users": s.users,
            "requests_per_second": s.requests_per_second,
            "concurrency": s.concurrency,
            "webhook_secret": mask("webhook.secret", s.webhook_secret.as_deref()),
            "webhook_secret_next": mask("webhook.secret_next", s.webhook_secret_next.as_deref()),
            "created_at_ms": s.created_at_ms,
            "updated_at_ms": s.updated_at_ms,
        }))
    }
}
