//! The session broker: one Salesforce access token per tenant destination, shared by the whole
//! fleet through Redis.
//!
//! Salesforce's token answer (`access_token`, `instance_url`, `issued_at`) has no `expires_in`:
//! a session ends after the org's timeout (2 hours by default, counted from the last use, or
//! earlier when an admin or a policy revokes it), and a client learns it from a 401
//! `INVALID_SESSION_ID`. So:
//! - the token is cached in Redis (sealed: encrypted at rest) with the `instance_url` the token
//!   endpoint named, and in each process's memory;
//! - a 401 `INVALID_SESSION_ID` drops the cached token only if it is still the one that was
//!   refused (another worker may have replaced it already), then one worker at a time
//!   refreshes (a `SET NX PX` lock) while the others wait for the new token; the refused call
//!   is retried once ([`super::SalesforceHttp`]);
//! - a token is also refreshed once it is [`MAX_AGE`] old (1 h 50 min), before the default
//!   2-hour timeout could end it on a busy worker: a conservative bound, since Salesforce does
//!   not say when the session ends. Time scales with `time_scale` (a simulator's compressed day).
//!
//! Salesforce documents no token-request limit comparable to Zoho's, so none is kept here; the
//! single-flight lock is what keeps a fleet from asking for a token per worker.
//!
//! A token belongs to one destination and one connection revision: it is cached under the
//! destination's keys and carries the revision, so a re-pointed tenant never uses the old org's
//! token and changed credentials invalidate it at once, fleet-wide; a refresh finishing after
//! the tenant moved on (or was removed) stores nothing (the write checks the tenant's live
//! destination in the same script).
//!
//! Keys (per destination prefix `D` = `{<ns>:t:<tenant>}:d:<dest>`): `D:sf:token` (hash:
//! `sealed`, `instance_url`, `issued_at`, `refresh_at`, `expires_at`, `rev`; expires at
//! `expires_at`, 2 h after the refresh), `D:sf:lock` (string, 15 s).

use std::sync::Arc;
use std::time::Duration;

use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::{Routing, SalesforceConnection, Sealer, Secret, TenantError};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::retry::{self, Grant};
use crate::guarded::{HeldToken, LocalTokens};
use crate::{Next, SinkError};

/// Refresh a token this old even if Salesforce has not refused it: Salesforce's default session
/// timeout is 2 hours and its answer does not say the org's, so 10 minutes short of it.
pub const MAX_AGE: Duration = Duration::from_secs(110 * 60);
/// How long a token is kept (and, when a refresh fails, still used): the default session
/// timeout.
const SESSION: Duration = Duration::from_secs(120 * 60);
/// How long one refresh may hold the lock.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a worker waits for another worker's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(20);

/// One tenant's Salesforce org, as the client needs it. Secrets are held in memory only (and
/// redacted from `Debug`).
#[derive(Clone)]
pub struct SfOrg {
    pub tenant: String,
    /// Prefix of the destination's keys, e.g. `{crmsync:t:acme}:d:0a1b2c3d4e5f`.
    pub dest_prefix: String,
    /// The tenant's live-destination key and the destination this org is: a token (or the
    /// Accounts) is only stored while they agree.
    pub live_key: String,
    pub dest: String,
    /// The connection revision: a cached token of another revision is not used.
    pub rev: u32,
    /// The login server, without a trailing slash.
    pub login_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// `vNN.N`.
    pub api_version: String,
    /// The external-id field holding the Nylas contact id, on both Contact and Lead.
    pub ext_id_field: String,
    pub routing: Routing,
    /// Send `Sforce-Duplicate-Rule-Header: allowSave=true` with upserts.
    pub allow_duplicates: bool,
}

impl std::fmt::Debug for SfOrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfOrg")
            .field("tenant", &self.tenant)
            .field("dest", &self.dest)
            .field("rev", &self.rev)
            .field("login_url", &self.login_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("api_version", &self.api_version)
            .field("ext_id_field", &self.ext_id_field)
            .field("routing", &self.routing)
            .field("allow_duplicates", &self.allow_duplicates)
            .finish()
    }
}

impl SfOrg {
    /// The org of a tenant's Salesforce connection. Fails for another CRM, without a refresh
    /// token, or with settings that must not reach URLs and queries (a checked API version and
    /// external-id field).
    pub fn of(namespace: &str, t: &crmsync_tenants::Tenant) -> Result<SfOrg, TenantError> {
        let s = t.crm.salesforce().ok_or_else(|| TenantError::WrongCrm {
            tenant: t.id.clone(),
            kind: t.crm.kind().as_str(),
            wanted: "salesforce",
        })?;
        let invalid = |message: String| TenantError::Invalid {
            tenant: t.id.clone(),
            message,
        };
        s.validate().map_err(invalid)?;
        let refresh = s.refresh_token.as_ref().ok_or_else(|| {
            invalid(format!(
                "no Salesforce refresh token; run `crmsync salesforce exchange-code {0} --code <code>` or `crmsync tenant set {0} --sf-refresh-token ...`",
                t.id
            ))
        })?;
        let keys = crmsync_tenants::TenantKeys::new(namespace, &t.id).dest(&t.dest);
        Ok(SfOrg {
            tenant: t.id.clone(),
            dest_prefix: keys.prefix().to_owned(),
            live_key: keys.live(),
            dest: t.dest.clone(),
            rev: t.crm_rev,
            login_url: s.login().to_owned(),
            client_id: s.client_id.clone(),
            client_secret: s.client_secret.expose().to_owned(),
            refresh_token: refresh.expose().to_owned(),
            api_version: s.api_version.clone(),
            ext_id_field: s.ext_id_field.clone(),
            routing: s.routing,
            allow_duplicates: s.allow_duplicates,
        })
    }

    /// A key of the client's own under the destination (`sf:token`, `sf:lock`, ...), as
    /// [`crmsync_tenants::DestKeys::crm`] names it.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.dest_prefix)
    }
}

/// An access token and the instance to use it on.
#[derive(Clone)]
pub struct SfToken {
    value: String,
    /// `https://<my domain>.my.salesforce.com`, without a trailing slash.
    pub instance_url: String,
    /// When the broker refreshes it (ms).
    pub refresh_at_ms: u64,
    /// Until when it is used if a refresh fails (ms).
    pub expires_at_ms: u64,
    /// The sealed form as cached: identifies this token for a compare-and-delete.
    sealed: String,
}

impl SfToken {
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl HeldToken for SfToken {
    fn refresh_at_ms(&self) -> u64 {
        self.refresh_at_ms
    }

    fn sealed(&self) -> &str {
        &self.sealed
    }
}

impl std::fmt::Debug for SfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfToken")
            .field("value", &"<redacted>")
            .field("instance_url", &self.instance_url)
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    instance_url: Option<String>,
    issued_at: Option<String>,
    refresh_token: Option<String>,
}

/// The fleet-wide session cache. Cheap to clone; one per process.
#[derive(Clone)]
pub struct SfTokens {
    conn: RedisConn,
    http: reqwest::Client,
    sealer: Arc<dyn Sealer>,
    /// Tokens this process used, by token key and revision.
    local: LocalTokens<SfToken>,
    /// Salesforce seconds per real second: 1 against Salesforce; more against a simulator whose
    /// day is compressed (the token's age limit shrinks alike; locks and waits do not).
    time_scale: f64,
}

impl SfTokens {
    /// `key` seals the cached tokens (the tenant store's key: `Arc::new(secret_key)`).
    pub fn new(conn: RedisConn, http: reqwest::Client, key: Arc<dyn Sealer>) -> Self {
        Self {
            conn,
            http,
            sealer: key,
            local: LocalTokens::default(),
            time_scale: 1.0,
        }
    }

    /// See `time_scale`; only for simulators.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
        self
    }

    fn scaled(&self, d: Duration) -> u64 {
        (d.as_millis() as f64 / self.time_scale).ceil() as u64
    }

    fn local_key(org: &SfOrg) -> String {
        format!("{}#{}", org.key("sf:token"), org.rev)
    }

    /// A token for the org: this process's, the fleet's, or a fresh one.
    pub async fn token(&self, org: &SfOrg) -> Result<SfToken, SinkError> {
        let local_key = Self::local_key(org);
        if let Some(t) = self.local.fresh(&local_key) {
            return Ok(t);
        }
        let t = self.shared_token(org).await?;
        self.local.keep(local_key, t.clone());
        Ok(t)
    }

    /// Whether this process holds the org's token, not yet due for refresh.
    pub fn is_fresh(&self, org: &SfOrg) -> bool {
        self.local.fresh(&Self::local_key(org)).is_some()
    }

    /// Drops `token` (refused by Salesforce) here and in Redis, unless another worker already
    /// replaced it there.
    pub async fn invalidate(&self, org: &SfOrg, token: &SfToken) -> Result<(), SinkError> {
        self.local.forget(&token.sealed);
        let mut conn = self.conn.clone();
        let _: i64 = crate::guarded::INVALIDATE
            .key(org.key("sf:token"))
            .arg(&token.sealed)
            .invoke_async(&mut conn)
            .await
            .map_err(retry::redis)?;
        Ok(())
    }

    /// The fleet's token (from Redis), refreshed by one worker when missing or due.
    async fn shared_token(&self, org: &SfOrg) -> Result<SfToken, SinkError> {
        let deadline = now_ms() + WAIT_FOR_OTHERS.as_millis() as u64;
        loop {
            let cached = self.cached(org).await?;
            let now = now_ms();
            if let Some(t) = &cached
                && t.refresh_at_ms > now
            {
                return Ok(t.clone());
            }
            let lock_id = format!("{:016x}", rand::random::<u64>());
            let mut conn = self.conn.clone();
            let got: i64 = crate::guarded::LOCK
                .key(org.key("sf:lock"))
                .key(&org.live_key)
                .arg(&org.dest)
                .arg(&lock_id)
                .arg(LOCK_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(retry::redis)?;
            if got < 0 {
                return Err(retry::moved());
            }
            if got == 1 {
                let res = self.refresh_locked(org).await;
                let _: Result<i64, _> = crate::guarded::UNLOCK
                    .key(org.key("sf:lock"))
                    .arg(&lock_id)
                    .invoke_async(&mut conn)
                    .await;
                return match (res, cached) {
                    (Ok(t), _) => Ok(t),
                    // Salesforce is unreachable but the current session has not been refused
                    // and is younger than the default timeout: use it.
                    (Err(e), Some(old)) if e.next == Next::Retry && old.expires_at_ms > now_ms() + 10_000 => {
                        warn!(tenant = %org.tenant, error = %e, "Salesforce token refresh failed; using the current session");
                        Ok(old)
                    }
                    (Err(e), _) => Err(e),
                };
            }
            if now_ms() > deadline {
                return match cached {
                    Some(old) if old.expires_at_ms > now_ms() => Ok(old),
                    _ => Err(SinkError::new(
                        Next::Retry,
                        "SF_UNAVAILABLE",
                        "timed out waiting for another worker's Salesforce token refresh",
                    )
                    .not_sent()),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn cached(&self, org: &SfOrg) -> Result<Option<SfToken>, SinkError> {
        let mut conn = self.conn.clone();
        type Cached = (Option<String>, Option<String>, Option<u64>, Option<u64>, Option<u32>);
        let (sealed, instance_url, refresh_at, expires_at, rev): Cached = redis::cmd("HMGET")
            .arg(org.key("sf:token"))
            .arg("sealed")
            .arg("instance_url")
            .arg("refresh_at")
            .arg("expires_at")
            .arg("rev")
            .query_async(&mut conn)
            .await
            .map_err(retry::redis)?;
        let (Some(sealed), Some(instance_url), Some(refresh_at_ms), Some(expires_at_ms)) =
            (sealed, instance_url, refresh_at, expires_at)
        else {
            return Ok(None);
        };
        if rev != Some(org.rev) {
            // Issued to credentials that have changed since: never used.
            return Ok(None);
        }
        match self.sealer.open(&org.key("sf:token"), &sealed) {
            Ok(value) => Ok(Some(SfToken {
                value,
                instance_url,
                refresh_at_ms,
                expires_at_ms,
                sealed,
            })),
            Err(e) => {
                // Sealed with another key (the key was rotated): treat as absent.
                warn!(tenant = %org.tenant, error = %e, "Cached Salesforce token cannot be opened; refreshing");
                Ok(None)
            }
        }
    }

    /// Refreshes the token; the caller holds the lock.
    async fn refresh_locked(&self, org: &SfOrg) -> Result<SfToken, SinkError> {
        if let Some(t) = self.cached(org).await?
            && t.refresh_at_ms > now_ms()
        {
            return Ok(t); // refreshed by another worker while we waited for the lock
        }
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", org.client_id.as_str()),
            ("client_secret", org.client_secret.as_str()),
            ("refresh_token", org.refresh_token.as_str()),
        ];
        let answer = post_token(
            &self.http,
            &org.login_url,
            &form,
            Grant::Refresh { tenant: &org.tenant },
        )
        .await;
        crmsync_metrics::token_refresh(answer.is_ok());
        let answer = answer?;
        let (Some(value), Some(instance_url)) = (answer.access_token, answer.instance_url) else {
            return Err(retry::decode("token answer without access_token or instance_url").not_sent());
        };
        let instance_url = instance_url.trim().trim_end_matches('/').to_owned();
        if !(instance_url.starts_with("https://") || instance_url.starts_with("http://"))
            || instance_url.contains(char::is_whitespace)
        {
            return Err(retry::decode("token answer with an instance_url that is not a URL").not_sent());
        }
        let issued = now_ms();
        let refresh_at_ms = issued + self.scaled(MAX_AGE);
        let expires_at_ms = issued + self.scaled(SESSION);
        let sealed = self.sealer.seal(&org.key("sf:token"), &value);
        let mut conn = self.conn.clone();
        let stored: i64 = crate::guarded::STORE
            .key(org.key("sf:token"))
            .key(&org.live_key)
            .arg(&org.dest)
            .arg(expires_at_ms)
            .arg("sealed")
            .arg(&sealed)
            .arg("instance_url")
            .arg(&instance_url)
            .arg("issued_at")
            .arg(
                answer
                    .issued_at
                    .as_deref()
                    .map(|s| crate::clean(s, 20))
                    .unwrap_or_default(),
            )
            .arg("refresh_at")
            .arg(refresh_at_ms)
            .arg("expires_at")
            .arg(expires_at_ms)
            .arg("rev")
            .arg(org.rev)
            .invoke_async(&mut conn)
            .await
            .map_err(retry::redis)?;
        if stored == 0 {
            return Err(retry::moved());
        }
        info!(tenant = %org.tenant, dest = %org.dest, %instance_url, "Salesforce access token refreshed");
        Ok(SfToken {
            value,
            instance_url,
            refresh_at_ms,
            expires_at_ms,
            sealed,
        })
    }
}

/// Posts to `{login}/services/oauth2/token` and reads the answer: 200 with the token, else
/// (400 mostly) `{"error","error_description"}`. Every error is not sent (no API request was
/// made).
async fn post_token(
    http: &reqwest::Client,
    login_url: &str,
    form: &[(&str, &str)],
    grant: Grant<'_>,
) -> Result<TokenAnswer, SinkError> {
    let url = format!("{}/services/oauth2/token", login_url.trim_end_matches('/'));
    let res = http
        .post(&url)
        .form(form)
        .send()
        .await
        .map_err(|e| retry::transport("token endpoint", &e).not_sent())?;
    let status = res.status().as_u16();
    let bytes = crate::read_capped(res, super::MAX_TOKEN_ANSWER)
        .await
        .map_err(|m| SinkError::new(Next::Retry, "SF_UNAVAILABLE", format!("token endpoint: {m}")).not_sent())?;
    if status != 200 {
        let e = retry::from_token_answer(status, &bytes, grant);
        debug!(status, code = e.code, "Salesforce token endpoint refused");
        return Err(e);
    }
    serde_json::from_slice(&bytes).map_err(|e| retry::decode(format!("token answer: {e}")).not_sent())
}

/// Exchanges an authorization code (from the connected app's consent screen) for the refresh
/// token crmsync keeps (`grant_type=authorization_code`). The access token that comes with it
/// is not kept.
pub async fn exchange_code(
    http: &reqwest::Client,
    conn: &SalesforceConnection,
    code: &str,
    redirect_uri: Option<&str>,
) -> Result<Secret, SinkError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", conn.client_id.as_str()),
        ("client_secret", conn.client_secret.expose()),
        ("code", code),
    ];
    if let Some(r) = redirect_uri {
        form.push(("redirect_uri", r));
    }
    let answer = post_token(http, conn.login(), &form, Grant::Code).await?;
    answer
        .refresh_token
        .filter(|r| !r.is_empty())
        .map(Secret::new)
        .ok_or_else(|| {
            retry::decode("the code exchange answered without a refresh_token (does the connected app have the refresh_token scope?)")
                .not_sent()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let org = SfOrg {
            tenant: "acme".into(),
            dest_prefix: "{crmsync:t:acme}:d:0a".into(),
            live_key: "{crmsync:t:acme}:live".into(),
            dest: "0a".into(),
            rev: 1,
            login_url: "https://login.salesforce.com".into(),
            client_id: "3MVG9".into(),
            client_secret: "CLIENT-SECRET-VALUE".into(),
            refresh_token: "REFRESH-TOKEN-VALUE".into(),
            api_version: "v60.0".into(),
            ext_id_field: "Nylas_Contact_Id__c".into(),
            routing: Routing::ContactOrLead,
            allow_duplicates: false,
        };
        let text = format!("{org:?}");
        assert!(
            !text.contains("CLIENT-SECRET-VALUE") && !text.contains("REFRESH-TOKEN-VALUE"),
            "{text}"
        );
        assert_eq!(org.key("sf:token"), "{crmsync:t:acme}:d:0a:sf:token");
        let t = SfToken {
            value: "00D!SESSION".into(),
            instance_url: "https://x.my.salesforce.com".into(),
            refresh_at_ms: 0,
            expires_at_ms: 0,
            sealed: "s".into(),
        };
        assert!(!format!("{t:?}").contains("SESSION"));
    }
}
