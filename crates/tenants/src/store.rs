//! The tenant store in Redis.

use std::sync::LazyLock;

use crmsync_redis::{RedisConn, now_ms};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::crm::{Crm, Routing, SalesforceConnection, ZohoConnection};
use crate::secret::{Secret, SecretError, SecretKey};
use crate::tenant::{Edition, NylasSettings, Tenant, TenantError, new_dest_id, tenant_tag};

/// Writes a tenant's JSON and its live destination together; with ARGV[3] = `add` only when
/// absent, with `update` only when the stored JSON is still ARGV[4] (compare-and-set).
/// KEYS[1] tenant JSON, KEYS[2] live destination; ARGV[1] JSON, ARGV[2] destination,
/// ARGV[3] mode, ARGV[4] expected JSON. Returns 1 when written.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if ARGV[3] == 'add' then
  if cur then return 0 end
elseif cur ~= ARGV[4] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1",
    )
});
/// Removes a tenant's JSON and live destination; returns the JSON (nil when absent).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return cur",
    )
});

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
    #[error("tenant `{0}` was changed by someone else at the same time; run the command again")]
    Conflict(String),
}

/// The stored form: non-secret settings in clear, secrets sealed. A boundary: it is what sits
/// in Redis, so fields are only ever added (with defaults). Tenants stored before the `crm`
/// object keep their Zoho settings in the `zoho_*` fields; they are read as a Zoho connection.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    #[serde(default)]
    dest: String,
    #[serde(default)]
    crm_rev: u32,
    nylas_grant_id: String,
    nylas_api_key: String,
    nylas_api_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crm: Option<StoredCrm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zoho_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zoho_accounts_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zoho_api_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zoho_client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zoho_client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reconcile_every_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    keep_crm_edits: bool,
    #[serde(default)]
    created_at_ms: u64,
    #[serde(default)]
    updated_at_ms: u64,
}

/// A CRM connection as stored (secrets sealed).
#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredCrm {
    Zoho {
        region: Option<String>,
        accounts_url: Option<String>,
        api_domain: Option<String>,
        client_id: String,
        client_secret: String,
        refresh_token: Option<String>,
    },
    Salesforce {
        login_url: String,
        client_id: String,
        client_secret: String,
        refresh_token: Option<String>,
        api_version: String,
        ext_id_field: String,
        routing: String,
        #[serde(default)]
        allow_duplicates: bool,
    },
}

impl Stored {
    /// The CRM connection, from the `crm` object or the legacy `zoho_*` fields.
    fn crm(&self) -> Result<StoredCrm, StoreError> {
        if let Some(c) = &self.crm {
            return Ok(c.clone());
        }
        match (&self.zoho_client_id, &self.zoho_client_secret) {
            (Some(id), Some(secret)) => Ok(StoredCrm::Zoho {
                region: self.zoho_region.clone(),
                accounts_url: self.zoho_accounts_url.clone(),
                api_domain: self.zoho_api_domain.clone(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                refresh_token: self.zoho_refresh_token.clone(),
            }),
            _ => Err(StoreError::Corrupt(self.id.clone(), "no CRM connection".into())),
        }
    }
}

/// What an update changed beyond the stored settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The destination the tenant wrote to before, when it now writes elsewhere: its state is
    /// no longer read and should be deleted.
    pub old_dest: Option<String>,
    /// The destination now.
    pub dest: String,
    /// Some CRM setting changed (cached tokens are no longer used).
    pub connection_changed: bool,
}

/// How an update treats the CRM connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// A new grant of access was just made (a code exchange): cached tokens are dropped even
    /// if the CRM answered with the same refresh token.
    pub reauthorized: bool,
    /// The operator says the new credentials reach the same org (a re-authorization after a
    /// revoked grant): the destination and its state are kept, only cached tokens go. Refused
    /// when the connection points at another place ([`Crm::same_place`]).
    pub same_org: bool,
}

/// A removed tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: String,
    pub dest: String,
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

    /// String: a value sealed with the fleet's key, so a process can tell at start whether its
    /// key is the fleet's.
    fn keycheck_key(&self) -> String {
        format!("{}:keycheck", self.namespace)
    }

    /// Re-seals a tenant's secrets with the current key (a rotation); returns whether anything
    /// was sealed with another key. The tenant's settings are unchanged.
    pub async fn reseal(&self, id: &str) -> Result<bool, StoreError> {
        let k = self.key()?;
        let (raw, _) = self.stored(id).await?;
        let v: serde_json::Value =
            serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(id.to_owned(), e.to_string()))?;
        let mut stale = false;
        let mut check = |s: &serde_json::Value| {
            if let Some(s) = s.as_str()
                && (s.starts_with("v1:") || s.starts_with("v2:"))
                && !k.sealed_with_current(s)
            {
                stale = true;
            }
        };
        for field in ["nylas_api_key", "webhook_secret", "webhook_secret_next"] {
            check(&v[field]);
        }
        if let Some(crm) = v["crm"].as_object() {
            crm.values().for_each(&mut check);
        }
        if !stale {
            return Ok(false);
        }
        let t = self.get(id).await?;
        self.update_with(t, UpdateOptions::default()).await?;
        Ok(true)
    }

    /// Seals the fleet's key check with the current key (at the end of a rotation).
    pub async fn reseal_key_check(&self) -> Result<(), StoreError> {
        let k = self.key()?;
        let _: () = redis::cmd("SET")
            .arg(self.keycheck_key())
            .arg(k.seal("fleet:keycheck", "crmsync"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Checks that this process's secret key opens the fleet's sealed material: the fleet's
    /// key check, or — before there is one — a stored tenant's secrets (then the check is
    /// written). A process with another key (well-formed, but not the fleet's) must not take
    /// jobs: every one would fail on its tenant's secrets.
    pub async fn check_key(&self) -> Result<(), StoreError> {
        const CONTEXT: &str = "fleet:keycheck";
        let k = self.key()?;
        let mut conn = self.conn.clone();
        let sealed: Option<String> = redis::cmd("GET")
            .arg(self.keycheck_key())
            .query_async(&mut conn)
            .await?;
        if let Some(sealed) = sealed {
            return match k.open(CONTEXT, &sealed) {
                Ok(_) => Ok(()),
                Err(_) => Err(StoreError::Secret(SecretError::WrongKey)),
            };
        }
        if let Some(id) = self.ids().await?.first() {
            match self.get(id).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Secret(_)) => return Err(StoreError::Secret(SecretError::WrongKey)),
                Err(StoreError::Redis(e)) => return Err(StoreError::Redis(e)),
                // One unreadable tenant says nothing of the key: do not stop the fleet for it,
                // and do not write a check that was not verified.
                Err(_) => return Ok(()),
            }
        }
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keycheck_key())
            .arg(k.seal(CONTEXT, "crmsync"))
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Hash: Nylas grant id -> tenant id (webhooks name the grant).
    fn grants_key(&self) -> String {
        format!("{}:grants", self.namespace)
    }

    fn tenant_key(&self, id: &str) -> String {
        crate::TenantKeys::new(&self.namespace, id).tenant()
    }

    /// String: the tenant's live destination id. Every script that writes a tenant's state
    /// checks it first, so nothing is written for a removed tenant or an old destination.
    pub fn live_key(namespace: &str, id: &str) -> String {
        crate::TenantKeys::new(namespace, id).live()
    }

    fn ctx(id: &str, field: &str) -> String {
        format!("tenant:{id}:{field}")
    }

    fn seal(&self, t: &Tenant) -> Result<Stored, StoreError> {
        let k = self.key()?;
        let crm = match &t.crm {
            Crm::Zoho(z) => StoredCrm::Zoho {
                region: z.region.clone(),
                accounts_url: z.accounts_url.clone(),
                api_domain: z.api_domain.clone(),
                client_id: z.client_id.clone(),
                client_secret: k.seal(&Self::ctx(&t.id, "zoho.client_secret"), z.client_secret.expose()),
                refresh_token: z
                    .refresh_token
                    .as_ref()
                    .map(|r| k.seal(&Self::ctx(&t.id, "zoho.refresh_token"), r.expose())),
            },
            Crm::Salesforce(c) => StoredCrm::Salesforce {
                login_url: c.login_url.clone(),
                client_id: c.client_id.clone(),
                client_secret: k.seal(&Self::ctx(&t.id, "salesforce.client_secret"), c.client_secret.expose()),
                refresh_token: c
                    .refresh_token
                    .as_ref()
                    .map(|r| k.seal(&Self::ctx(&t.id, "salesforce.refresh_token"), r.expose())),
                api_version: c.api_version.clone(),
                ext_id_field: c.ext_id_field.clone(),
                routing: c.routing.as_str().to_owned(),
                allow_duplicates: c.allow_duplicates,
            },
        };
        Ok(Stored {
            id: t.id.clone(),
            dest: t.dest.clone(),
            crm_rev: t.crm_rev,
            nylas_grant_id: t.nylas.grant_id.clone(),
            nylas_api_key: k.seal(&Self::ctx(&t.id, "nylas.api_key"), t.nylas.api_key.expose()),
            nylas_api_uri: t.nylas.api_uri.clone(),
            crm: Some(crm),
            zoho_region: None,
            zoho_accounts_url: None,
            zoho_api_domain: None,
            zoho_client_id: None,
            zoho_client_secret: None,
            zoho_refresh_token: None,
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
            reconcile_every_secs: t.reconcile_every_secs,
            keep_crm_edits: t.keep_crm_edits,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
        })
    }

    fn open(&self, s: Stored) -> Result<Tenant, StoreError> {
        let k = self.key()?;
        let open = |field: &str, v: &str| k.open(&Self::ctx(&s.id, field), v).map(Secret::new);
        let crm = match s.crm()? {
            StoredCrm::Zoho {
                region,
                accounts_url,
                api_domain,
                client_id,
                client_secret,
                refresh_token,
            } => Crm::Zoho(ZohoConnection {
                region,
                accounts_url,
                api_domain,
                client_id,
                client_secret: open("zoho.client_secret", &client_secret)?,
                refresh_token: refresh_token
                    .as_deref()
                    .map(|r| open("zoho.refresh_token", r))
                    .transpose()?,
            }),
            StoredCrm::Salesforce {
                login_url,
                client_id,
                client_secret,
                refresh_token,
                api_version,
                ext_id_field,
                routing,
                allow_duplicates,
            } => Crm::Salesforce(SalesforceConnection {
                login_url,
                client_id,
                client_secret: open("salesforce.client_secret", &client_secret)?,
                refresh_token: refresh_token
                    .as_deref()
                    .map(|r| open("salesforce.refresh_token", r))
                    .transpose()?,
                api_version,
                ext_id_field,
                routing: Routing::parse(&routing)
                    .ok_or_else(|| StoreError::Corrupt(s.id.clone(), format!("unknown routing `{routing}`")))?,
                allow_duplicates,
            }),
        };
        Ok(Tenant {
            dest: s.dest.clone(),
            crm_rev: s.crm_rev,
            nylas: NylasSettings {
                grant_id: s.nylas_grant_id.clone(),
                api_key: open("nylas.api_key", &s.nylas_api_key)?,
                api_uri: s.nylas_api_uri.clone(),
            },
            crm,
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
            reconcile_every_secs: s.reconcile_every_secs,
            keep_crm_edits: s.keep_crm_edits,
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            id: s.id,
        })
    }

    fn to_json(t: &Stored) -> Result<String, StoreError> {
        serde_json::to_string(t).map_err(|e| StoreError::Corrupt(t.id.clone(), e.to_string()))
    }

    /// Adds a new tenant; refuses an existing id. The tenant gets a new destination, so a
    /// re-added id shares nothing with the tenant it once was.
    pub async fn add(&self, mut t: Tenant) -> Result<Tenant, StoreError> {
        t.validate()?;
        t.created_at_ms = now_ms();
        t.updated_at_ms = t.created_at_ms;
        t.dest = new_dest_id();
        t.crm_rev = 1;
        let json = Self::to_json(&self.seal(&t)?)?;
        let mut conn = self.conn.clone();
        let written: i64 = WRITE
            .key(self.tenant_key(&t.id))
            .key(Self::live_key(&self.namespace, &t.id))
            .arg(json)
            .arg(&t.dest)
            .arg("add")
            .arg("")
            .invoke_async(&mut conn)
            .await?;
        if written == 0 {
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
        Ok(t)
    }

    /// Replaces an existing tenant (after `get` and a change). The store keeps the destination
    /// unless the CRM connection now points elsewhere ([`Crm::same_destination`]); then the
    /// tenant gets a new one, and [`Updated::old_dest`] names the state to delete.
    pub async fn update(&self, t: Tenant) -> Result<Updated, StoreError> {
        self.update_with(t, UpdateOptions::default()).await
    }

    /// [`TenantStore::update`] with options (a re-authorization, an operator's word that the
    /// org is the same).
    pub async fn update_with(&self, mut t: Tenant, o: UpdateOptions) -> Result<Updated, StoreError> {
        t.validate()?;
        let (raw, old) = self.stored(&t.id).await?;
        let old_grant = old.nylas_grant_id.clone();
        let old = self.open(old)?;
        // `t` was read before: if the stored tenant changed since, this would undo that change.
        if t.updated_at_ms != old.updated_at_ms {
            return Err(StoreError::Conflict(t.id));
        }
        t.updated_at_ms = now_ms().max(old.updated_at_ms + 1);
        t.dest = old.dest.clone();
        t.crm_rev = old.crm_rev;
        t.created_at_ms = old.created_at_ms;
        let mut old_dest = None;
        if !old.crm.same_destination(&t.crm) {
            if o.same_org {
                if !old.crm.same_place(&t.crm) {
                    return Err(StoreError::Tenant(TenantError::Invalid {
                        tenant: t.id.clone(),
                        message: "the new settings point at another data center, server or client: they cannot be the \
                                  same org (leave out --same-org)"
                            .into(),
                    }));
                }
            } else {
                t.dest = new_dest_id();
                old_dest = Some(old.dest.clone());
            }
        }
        let connection_changed = o.reauthorized || !old.crm.same_connection(&t.crm);
        if connection_changed {
            t.crm_rev = old.crm_rev.wrapping_add(1);
        }
        let json = Self::to_json(&self.seal(&t)?)?;
        let mut conn = self.conn.clone();
        let written: i64 = WRITE
            .key(self.tenant_key(&t.id))
            .key(Self::live_key(&self.namespace, &t.id))
            .arg(json)
            .arg(&t.dest)
            .arg("update")
            .arg(&raw)
            .invoke_async(&mut conn)
            .await?;
        if written == 0 {
            return Err(StoreError::Conflict(t.id));
        }
        if old_grant != t.nylas.grant_id {
            let _: () = redis::pipe()
                .cmd("HDEL")
                .arg(self.grants_key())
                .arg(&old_grant)
                .ignore()
                .cmd("HSET")
                .arg(self.grants_key())
                .arg(&t.nylas.grant_id)
                .arg(&t.id)
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(Updated {
            old_dest,
            dest: t.dest,
            connection_changed,
        })
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

    /// The stored JSON and its parsed form. A tenant stored before destinations existed gets
    /// one now (written back with a compare-and-set, so every reader agrees on it).
    async fn stored(&self, id: &str) -> Result<(String, Stored), StoreError> {
        let mut conn = self.conn.clone();
        let json: Option<String> = redis::cmd("GET")
            .arg(self.tenant_key(id))
            .query_async(&mut conn)
            .await?;
        let json = json.ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let mut s: Stored =
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(id.to_owned(), e.to_string()))?;
        if !s.dest.is_empty() {
            return Ok((json, s));
        }
        s.crm = Some(s.crm()?);
        (s.zoho_region, s.zoho_accounts_url, s.zoho_api_domain) = (None, None, None);
        (s.zoho_client_id, s.zoho_client_secret, s.zoho_refresh_token) = (None, None, None);
        s.dest = new_dest_id();
        s.crm_rev = 1;
        let upgraded = Self::to_json(&s)?;
        let written: i64 = WRITE
            .key(self.tenant_key(id))
            .key(Self::live_key(&self.namespace, id))
            .arg(&upgraded)
            .arg(&s.dest)
            .arg("update")
            .arg(&json)
            .invoke_async(&mut conn)
            .await?;
        if written == 0 {
            // Another reader upgraded it first: read theirs.
            return Box::pin(self.stored(id)).await;
        }
        Ok((upgraded, s))
    }

    /// A tenant with its secrets opened (needs the key).
    pub async fn get(&self, id: &str) -> Result<Tenant, StoreError> {
        let (_, s) = self.stored(id).await?;
        self.open(s)
    }

    /// Removes a tenant: its settings and its live destination go in one step, so from then on
    /// no script writes any of its state. The rest of its keys are deleted by
    /// [`TenantStore::purge`]. Returns what was removed (None: no such tenant).
    pub async fn remove(&self, id: &str) -> Result<Option<Removed>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = REMOVE
            .key(self.tenant_key(id))
            .key(Self::live_key(&self.namespace, id))
            .invoke_async(&mut conn)
            .await?;
        let _: () = redis::cmd("SREM")
            .arg(self.index_key())
            .arg(id)
            .query_async(&mut conn)
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let s: Option<Stored> = serde_json::from_str(&raw).ok();
        if let Some(s) = &s {
            // Only if the grant still names this tenant (another may have taken it since).
            let owner: Option<String> = redis::cmd("HGET")
                .arg(self.grants_key())
                .arg(&s.nylas_grant_id)
                .query_async(&mut conn)
                .await?;
            if owner.as_deref() == Some(id) {
                let _: () = redis::cmd("HDEL")
                    .arg(self.grants_key())
                    .arg(&s.nylas_grant_id)
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(Some(Removed {
            id: id.to_owned(),
            dest: s.map(|s| s.dest).unwrap_or_default(),
        }))
    }

    /// Deletes every key under the tenant's hash tag, `batch` keys per `UNLINK`. Call it after
    /// [`TenantStore::remove`] (nothing writes a removed tenant's keys any more).
    pub async fn purge(&self, id: &str, batch: usize) -> Result<crmsync_redis::PurgeReport, StoreError> {
        Ok(crmsync_redis::purge_matching(&self.conn, &tenant_tag(&self.namespace, id), batch).await?)
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
        let (_, s) = self.stored(id).await?;
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
        let crm = match s.crm()? {
            StoredCrm::Zoho {
                region,
                accounts_url,
                api_domain,
                client_id,
                client_secret,
                refresh_token,
            } => serde_json::json!({
                "kind": "zoho",
                "region": region,
                "accounts_url": accounts_url,
                "api_domain": api_domain,
                "client_id": client_id,
                "client_secret": mask("zoho.client_secret", Some(&client_secret)),
                "refresh_token": mask("zoho.refresh_token", refresh_token.as_deref()),
            }),
            StoredCrm::Salesforce {
                login_url,
                client_id,
                client_secret,
                refresh_token,
                api_version,
                ext_id_field,
                routing,
                allow_duplicates,
            } => serde_json::json!({
                "kind": "salesforce",
                "login_url": login_url,
                "client_id": client_id,
                "client_secret": mask("salesforce.client_secret", Some(&client_secret)),
                "refresh_token": mask("salesforce.refresh_token", refresh_token.as_deref()),
                "api_version": api_version,
                "external_id_field": ext_id_field,
                "routing": routing,
                "allow_duplicates": allow_duplicates,
            }),
        };
        Ok(serde_json::json!({
            "id": s.id,
            "dest": s.dest,
            "nylas": {
                "grant_id": s.nylas_grant_id,
                "api_uri": s.nylas_api_uri,
                "api_key": mask("nylas.api_key", Some(&s.nylas_api_key)),
            },
            "crm": crm,
            "daily_credits": s.daily_credits,
            "budget_share": s.budget_share,
            "edition": s.edition,
            "users": s.users,
            "requests_per_second": s.requests_per_second,
            "concurrency": s.concurrency,
            "webhook_secret": mask("webhook.secret", s.webhook_secret.as_deref()),
            "webhook_secret_next": mask("webhook.secret_next", s.webhook_secret_next.as_deref()),
            "reconcile_every_secs": s.reconcile_every_secs,
            "keep_crm_edits": s.keep_crm_edits,
            "created_at_ms": s.created_at_ms,
            "updated_at_ms": s.updated_at_ms,
        }))
    }
}
