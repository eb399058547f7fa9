//! The token broker: one Zoho access token per tenant, shared by the whole fleet through Redis.
//!
//! Zoho allows 10 access-token requests per 10 minutes per refresh token (then blocks the rest
//! of the window) and 10 live access tokens per refresh token (the oldest dies). A fleet where
//! each worker refreshed on its own would hit both, so:
//! - the token is cached in Redis (sealed: encrypted at rest), with its expiry and the
//!   `api_domain` the token endpoint returned;
//! - it is refreshed before it expires, by one worker at a time (a `SET NX PX` lock); the
//!   others wait for the new token instead of asking Zoho themselves;
//! - every token request is logged in a 10-minute window, and the broker stops short of the
//!   limit instead of getting the refresh token blocked.
//!
//! - a token belongs to one destination and one connection revision: it is cached under the
//!   destination's keys and carries the revision, so a re-pointed tenant never uses the old
//!   org's token and changed credentials invalidate it at once, fleet-wide; a refresh finishing
//!   after the tenant moved on (or was removed) stores nothing (the write checks the tenant's
//!   live destination in the same script).
//!
//! - each process keeps the tokens it used in memory, under the same destination and revision
//!   (so the same invalidation holds), until they are due for refresh: most calls read no
//!   Redis for their token.
//!
//! Keys (per destination prefix `D` = `{<ns>:t:<tenant>}:d:<dest>`): `D:zoho:token` (hash:
//! `sealed`, `api_domain`, `expires_at`, `refresh_at`, `rev`), `D:zoho:lock`,
//! `D:zoho:token_requests` (zset of request times).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::Sealer;
use redis::Script;
use serde::Deserialize;
use tracing::{info, warn};

use super::retry::{ZohoError, redis_err};
use crate::guarded::{HeldToken, LocalTokens};

/// Counts a token request in the window unless the tenant moved on. KEYS[1] requests zset,
/// KEYS[2] live destination; ARGV[1] destination, ARGV[2] now, ARGV[3] member, ARGV[4] window
/// ms. Returns 1 when counted.
static COUNT_REQUEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1",
    )
});

/// Token requests we allow ourselves per window: Zoho's 10, less one kept for an operator's
/// manual `crmsync zoho exchange-code`.
const TOKEN_REQUESTS_PER_WINDOW: u64 = 9;
/// Zoho's token-request window.
const TOKEN_WINDOW: Duration = Duration::from_secs(600);
/// Refresh this long before expiry, or a twentieth of the lifetime if that is shorter: early
/// enough that no call meets an expired token, late enough that a token is asked for about
/// once per lifetime.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// When to refresh a token that lives `lifetime_ms` from `now`.
fn refresh_at(now: u64, lifetime_ms: u64) -> u64 {
    now + lifetime_ms - (REFRESH_MARGIN.as_millis() as u64).min(lifetime_ms / 20)
}
/// How long one refresh may hold the lock.
const LOCK_TTL: Duration = Duration::from_secs(15);
/// How long a worker waits for another worker's refresh.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(20);

/// One tenant's Zoho org, as the client needs it. Secrets are held in memory only.
#[derive(Clone)]
pub struct ZohoOrg {
    pub tenant: String,
    /// Prefix of the destination's keys, e.g. `{crmsync:t:acme}:d:0a1b2c3d4e5f`.
    pub dest_prefix: String,
    /// The tenant's live-destination key and the destination this org is: a token is only
    /// stored while they agree.
    pub live_key: String,
    pub dest: String,
    /// The connection revision: a cached token of another revision is not used.
    pub rev: u32,
    pub accounts_url: String,
    /// Use this API domain instead of the one the token endpoint returns.
    pub api_domain_override: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for ZohoOrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZohoOrg")
            .field("tenant", &self.tenant)
            .field("dest", &self.dest)
            .field("rev", &self.rev)
            .field("accounts_url", &self.accounts_url)
            .field("api_domain_override", &self.api_domain_override)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

impl ZohoOrg {
    /// The org of a tenant's Zoho connection; fails without a refresh token.
    pub fn of(namespace: &str, t: &crmsync_tenants::Tenant) -> Result<ZohoOrg, crmsync_tenants::TenantError> {
        let z = t.zoho()?;
        let refresh = z
            .refresh_token
            .as_ref()
            .ok_or_else(|| crmsync_tenants::TenantError::NoRefreshToken(t.id.clone()))?;
        Ok(ZohoOrg {
            tenant: t.id.clone(),
            dest_prefix: crmsync_tenants::TenantKeys::new(namespace, &t.id)
                .dest(&t.dest)
                .prefix()
                .to_owned(),
            live_key: crmsync_tenants::TenantStore::live_key(namespace, &t.id),
            dest: t.dest.clone(),
            rev: t.crm_rev,
            accounts_url: z.accounts_url().ok_or_else(|| crmsync_tenants::TenantError::Invalid {
                tenant: t.id.clone(),
                message: "no Zoho region or accounts URL".into(),
            })?,
            api_domain_override: z.api_domain.clone(),
            client_id: z.client_id.clone(),
            client_secret: z.client_secret.expose().to_owned(),
            refresh_token: refresh.expose().to_owned(),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}:zoho:{name}", self.dest_prefix)
    }
}

/// An access token and where to use it.
#[derive(Clone)]
pub struct AccessToken {
    value: String,
    pub api_domain: String,
    pub expires_at_ms: u64,
    /// When the broker refreshes it.
    pub refresh_at_ms: u64,
    /// The sealed form as cached: identifies this token for a compare-and-delete.
    sealed: String,
}

impl AccessToken {
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl HeldToken for AccessToken {
    fn refresh_at_ms(&self) -> u64 {
        self.refresh_at_ms
    }

    fn sealed(&self) -> &str {
        &self.sealed
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("api_domain", &self.api_domain)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
    api_domain: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The fleet-wide token cache. Cheap to clone.
#[derive(Clone)]
pub struct TokenBroker {
    conn: RedisConn,
    http: reqwest::Client,
    sealer: Arc<dyn Sealer>,
    /// Tokens this process used, by destination key and revision.
    local: LocalTokens<AccessToken>,
    /// Zoho seconds per real second: 1 against Zoho; more against a simulator whose day is
    /// compressed (token lifetimes and the token-request window shrink alike).
    time_scale: f64,
}

impl TokenBroker {
    pub fn new(conn: RedisConn, http: reqwest::Client, sealer: Arc<dyn Sealer>) -> Self {
        Self {
            conn,
            http,
            sealer,
            local: LocalTokens::default(),
            time_scale: 1.0,
        }
    }

    /// See `time_scale`; only for simulators.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
        self
    }

    fn token_window_ms(&self) -> u64 {
        (TOKEN_WINDOW.as_millis() as f64 / self.time_scale).ceil() as u64
    }

    fn local_key(org: &ZohoOrg) -> String {
        format!("{}#{}", org.key("token"), org.rev)
    }

    /// A valid token for the tenant: the cached one, or a fresh one when it is about to expire.
    pub async fn token(&self, org: &ZohoOrg) -> Result<AccessToken, ZohoError> {
        let local_key = Self::local_key(org);
        if let Some(t) = self.local.fresh(&local_key) {
            return Ok(t);
        }
        let t = self.shared_token(org).await?;
        self.local.keep(local_key, t.clone());
        Ok(t)
    }

    /// Whether this process holds the org's token, not yet due for refresh.
    pub fn is_fresh(&self, org: &ZohoOrg) -> bool {
        self.local.fresh(&Self::local_key(org)).is_some()
    }

    /// The fleet's token (from Redis), refreshed by one worker when due.
    async fn shared_token(&self, org: &ZohoOrg) -> Result<AccessToken, ZohoError> {
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
                .key(org.key("lock"))
                .key(&org.live_key)
                .arg(&org.dest)
                .arg(&lock_id)
                .arg(LOCK_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if got < 0 {
                return Err(ZohoError::Moved);
            }
            if got == 1 {
                let res = self.refresh_locked(org).await;
                let _: Result<i64, _> = crate::guarded::UNLOCK
                    .key(org.key("lock"))
                    .arg(&lock_id)
                    .invoke_async(&mut conn)
                    .await;
                return match (res, cached) {
                    (Ok(t), _) => Ok(t),
                    // The refresh failed but the old token still works for a while: use it.
                    (Err(e), Some(old)) if old.expires_at_ms > now_ms() + 10_000 => {
                        warn!(tenant = %org.tenant, error = %e, "Token refresh failed; using the current token until it expires");
                        Ok(old)
                    }
                    (Err(e), _) => Err(e),
                };
            }
            if now_ms() > deadline {
                return match cached {
                    Some(old) if old.expires_at_ms > now_ms() => Ok(old),
                    _ => Err(ZohoError::Unavailable {
                        status: None,
                        message: "timed out waiting for another worker's Zoho token refresh".into(),
                    }),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops the cached token if it is still `token` (another worker may have replaced it).
    pub async fn invalidate(&self, org: &ZohoOrg, token: &AccessToken) -> Result<(), ZohoError> {
        self.local.forget(&token.sealed);
        let mut conn = self.conn.clone();
        let _: i64 = crate::guarded::INVALIDATE
            .key(org.key("token"))
            .arg(&token.sealed)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn cached(&self, org: &ZohoOrg) -> Result<Option<AccessToken>, ZohoError> {
        let mut conn = self.conn.clone();
        type Cached = (Option<String>, Option<String>, Option<u64>, Option<u64>, Option<u32>);
        let (sealed, api_domain, expires_at, refresh_at, rev): Cached = redis::cmd("HMGET")
            .arg(org.key("token"))
            .arg("sealed")
            .arg("api_domain")
            .arg("expires_at")
            .arg("refresh_at")
            .arg("rev")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let (Some(sealed), Some(api_domain), Some(expires_at_ms)) = (sealed, api_domain, expires_at) else {
            return Ok(None);
        };
        if rev != Some(org.rev) {
            // Issued to credentials that have changed since: never used.
            return Ok(None);
        }
        match self.sealer.open(&org.key("token"), &sealed) {
            Ok(value) => Ok(Some(AccessToken {
                value,
                api_domain,
                expires_at_ms,
                refresh_at_ms: refresh_at.unwrap_or(expires_at_ms.saturating_sub(REFRESH_MARGIN.as_millis() as u64)),
                sealed,
            })),
            Err(e) => {
                // Sealed with another key (the key was rotated): treat as absent.
                warn!(tenant = %org.tenant, error = %e, "Cached Zoho token cannot be opened; refreshing");
                Ok(None)
            }
        }
    }

    /// Refreshes the token; the caller holds the lock.
    async fn refresh_locked(&self, org: &ZohoOrg) -> Result<AccessToken, ZohoError> {
        let now = now_ms();
        if let Some(t) = self.cached(org).await?
            && t.refresh_at_ms > now
        {
            return Ok(t); // refreshed by another worker while we waited for the lock
        }
        let mut conn = self.conn.clone();
        let window_start = now.saturating_sub(self.token_window_ms());
        let (_, used, oldest): ((), u64, Vec<(String, u64)>) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(org.key("token_requests"))
            .arg("-inf")
            .arg(window_start)
            .cmd("ZCARD")
            .arg(org.key("token_requests"))
            .cmd("ZRANGE")
            .arg(org.key("token_requests"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if used >= TOKEN_REQUESTS_PER_WINDOW {
            let first = oldest.first().map(|(_, t)| *t).unwrap_or(now);
            return Err(ZohoError::TokenRequestsExhausted {
                retry_at_ms: first + self.token_window_ms(),
            });
        }
        let counted: i64 = COUNT_REQUEST
            .key(org.key("token_requests"))
            .key(&org.live_key)
            .arg(&org.dest)
            .arg(now)
            .arg(format!("{now}-{:08x}", rand::random::<u32>()))
            .arg(self.token_window_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if counted == 0 {
            return Err(ZohoError::Moved);
        }

        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", org.client_id.as_str()),
            ("client_secret", org.client_secret.as_str()),
            ("refresh_token", org.refresh_token.as_str()),
        ];
        let resp = post_token(&self.http, &org.accounts_url, &form).await;
        crmsync_metrics::token_refresh(matches!(&resp, Ok(r) if r.access_token.is_some()));
        let resp = resp?;
        let (Some(value), Some(expires_in)) = (resp.access_token, resp.expires_in) else {
            return Err(ZohoError::Decode(
                "token response without access_token or expires_in".into(),
            ));
        };
        let api_domain = org
            .api_domain_override
            .clone()
            .or(resp.api_domain)
            .ok_or_else(|| ZohoError::Decode("token response without api_domain".into()))?
            .trim_end_matches('/')
            .to_owned();
        let issued = now_ms();
        let lifetime_ms = ((expires_in * 1000) as f64 / self.time_scale) as u64;
        let expires_at_ms = issued + lifetime_ms;
        let refresh_at_ms = refresh_at(issued, lifetime_ms);
        let sealed = self.sealer.seal(&org.key("token"), &value);
        let stored: i64 = crate::guarded::STORE
            .key(org.key("token"))
            .key(&org.live_key)
            .arg(&org.dest)
            .arg(expires_at_ms)
            .arg("sealed")
            .arg(&sealed)
            .arg("api_domain")
            .arg(&api_domain)
            .arg("expires_at")
            .arg(expires_at_ms)
            .arg("refresh_at")
            .arg(refresh_at_ms)
            .arg("rev")
            .arg(org.rev)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if stored == 0 {
            return Err(ZohoError::Moved);
        }
        info!(tenant = %org.tenant, dest = %org.dest, expires_in, %api_domain, "Zoho access token refreshed");
        Ok(AccessToken {
            value,
            api_domain,
            expires_at_ms,
            refresh_at_ms,
            sealed,
        })
    }
}

/// Posts to `{accounts}/oauth/v2/token` and reads Zoho's answer, whose errors come as HTTP
/// 200 with an `error` field (or 400 "Access Denied" once the request limit is hit).
async fn post_token(
    http: &reqwest::Client,
    accounts_url: &str,
    form: &[(&str, &str)],
) -> Result<TokenResponse, ZohoError> {
    let url = format!("{}/oauth/v2/token", accounts_url.trim_end_matches('/'));
    let res = http.post(&url).form(form).send().await.map_err(|e| {
        crmsync_metrics::zoho_call("token", None);
        ZohoError::Unavailable {
            status: None,
            message: format!("token endpoint: {e}"),
        }
    })?;
    let status = res.status().as_u16();
    crmsync_metrics::zoho_call("token", Some(status));
    let bytes = crate::read_capped(res, super::MAX_TOKEN_ANSWER)
        .await
        .map_err(|message| ZohoError::Unavailable {
            status: Some(status),
            message: format!("token endpoint: {message}"),
        })?;
    if status >= 500 {
        return Err(ZohoError::Unavailable {
            status: Some(status),
            message: "token endpoint".into(),
        });
    }
    let resp: TokenResponse =
        serde_json::from_slice(&bytes).map_err(|e| ZohoError::Decode(format!("token response ({status}): {e}")))?;
    if let Some(error) = &resp.error {
        if error == "Access Denied" || status == 400 {
            return Err(ZohoError::TokenRequestsExhausted {
                retry_at_ms: now_ms() + TOKEN_WINDOW.as_millis() as u64,
            });
        }
        return Err(ZohoError::Auth {
            code: error.clone(),
            message: format!(
                "Zoho refused the grant ({}); re-authorize the tenant with `crmsync zoho exchange-code`",
                resp.error_description.as_deref().unwrap_or(error)
            ),
        });
    }
    Ok(resp)
}

/// Exchanges a grant code (from Zoho's consent screen or a Self Client) for a refresh token.
pub async fn exchange_code(
    http: &reqwest::Client,
    accounts_url: &str,
    client_id: &str,
    client_secret: &str,
    code: &str,
    redirect_uri: Option<&str>,
) -> Result<String, ZohoError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("code", code),
    ];
    if let Some(r) = redirect_uri {
        form.push(("redirect_uri", r));
    }
    let resp = post_token(http, accounts_url, &form).await?;
    resp.refresh_token
        .ok_or_else(|| ZohoError::Decode("code exchange answered without a refresh_token".into()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refresh_happens_at_nineteen_twentieths_of_the_life_at_most_five_minutes_early() {
        assert_eq!(super::refresh_at(0, 3_600_000), 3_420_000);
        assert_eq!(super::refresh_at(0, 1_000), 950);
    }
}
