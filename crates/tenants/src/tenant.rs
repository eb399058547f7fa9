//! The tenant model and its validation.

use crmsync_zoho::ZohoOrg;

use crate::secret::Secret;

/// The Redis hash tag of a tenant's keys: `{<namespace>:t:<id>}`.
pub fn tenant_tag(namespace: &str, id: &str) -> String {
    format!("{{{namespace}:t:{id}}}")
}

/// Where contacts come from: one Nylas grant.
#[derive(Debug, Clone, PartialEq)]
pub struct NylasSettings {
    pub grant_id: String,
    pub api_key: Secret,
    /// `https://api.us.nylas.com`, `https://api.eu.nylas.com`, or any URL.
    pub api_uri: String,
}

/// Where contacts go: one Zoho CRM org.
#[derive(Debug, Clone, PartialEq)]
pub struct ZohoSettings {
    /// Data center code (`us`, `eu`, `in`, `au`, `jp`, `cn`, `ca`, `sa`, `uk`).
    pub region: Option<String>,
    /// Overrides the region's accounts server.
    pub accounts_url: Option<String>,
    /// Overrides the API domain the token endpoint returns.
    pub api_domain: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    /// Set with `crmsync tenant set --zoho-refresh-token` or `crmsync zoho exchange-code`.
    pub refresh_token: Option<Secret>,
}

/// A tenant: one address book synced into one CRM org.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub nylas: NylasSettings,
    pub zoho: ZohoSettings,
    /// The org's daily API-credit allowance (rolling 24 h).
    pub daily_credits: u64,
    /// Share of `daily_credits` crmsync may spend (0.5–1.0).
    pub budget_share: f64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("invalid tenant id `{0}`: use 1–64 lowercase letters, digits, `-` or `_`")]
    BadId(String),
    #[error("tenant `{tenant}`: {message}")]
    Invalid { tenant: String, message: String },
    #[error(
        "tenant `{0}` has no Zoho refresh token; run `crmsync zoho exchange-code {0} --code <grant code>` or `crmsync tenant set {0} --zoho-refresh-token ...`"
    )]
    NoRefreshToken(String),
}

/// Checks a tenant id: it becomes part of Redis keys and hash tags.
pub fn validate_id(id: &str) -> Result<(), TenantError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TenantError::BadId(id.to_owned()))
    }
}

fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "http://".len() + 1
}

impl Tenant {
    pub fn validate(&self) -> Result<(), TenantError> {
        validate_id(&self.id)?;
        let bad = |message: String| TenantError::Invalid {
            tenant: self.id.clone(),
            message,
        };
        if self.nylas.grant_id.trim().is_empty() {
            return Err(bad("the Nylas grant id is empty (--nylas-grant-id)".into()));
        }
        if self.nylas.api_key.expose().trim().is_empty() {
            return Err(bad("the Nylas API key is empty (--nylas-api-key)".into()));
        }
        if !is_url(&self.nylas.api_uri) {
            return Err(bad(format!(
                "the Nylas API URI `{}` is not a URL (use `us`, `eu` or an https:// URL)",
                self.nylas.api_uri
            )));
        }
        if self.zoho.client_id.trim().is_empty() || self.zoho.client_secret.expose().trim().is_empty() {
            return Err(bad("the Zoho client id and client secret are required".into()));
        }
        match (&self.zoho.region, &self.zoho.accounts_url) {
            (_, Some(u)) if !is_url(u) => return Err(bad(format!("the Zoho accounts URL `{u}` is not a URL"))),
            (Some(r), None) if crmsync_zoho::dc::data_center(r).is_none() => {
                return Err(bad(format!(
                    "unknown Zoho region `{r}` (one of: {})",
                    crmsync_zoho::dc::codes()
                )));
            }
            (None, None) => {
                return Err(bad(
                    "set a Zoho region (--zoho-region) or accounts URL (--zoho-accounts-url)".into(),
                ));
            }
            _ => {}
        }
        if let Some(d) = &self.zoho.api_domain
            && !is_url(d)
        {
            return Err(bad(format!("the Zoho API domain `{d}` is not a URL")));
        }
        if self.daily_credits == 0 {
            return Err(bad("daily credits must be a positive number".into()));
        }
        if !(0.5..=1.0).contains(&self.budget_share) {
            return Err(bad(format!(
                "budget share {} is out of range: crmsync may spend between 0.5 and 1.0 of the daily credits",
                self.budget_share
            )));
        }
        Ok(())
    }

    /// The accounts server: the override, else the region's.
    pub fn accounts_url(&self) -> Option<String> {
        self.zoho.accounts_url.clone().or_else(|| {
            self.zoho
                .region
                .as_deref()
                .and_then(crmsync_zoho::dc::data_center)
                .map(|d| d.accounts_url.to_owned())
        })
    }

    /// The Zoho org as the client needs it.
    pub fn zoho_org(&self, namespace: &str) -> Result<ZohoOrg, TenantError> {
        let refresh = self
            .zoho
            .refresh_token
            .as_ref()
            .ok_or_else(|| TenantError::NoRefreshToken(self.id.clone()))?;
        Ok(ZohoOrg {
            tenant: self.id.clone(),
            key_tag: tenant_tag(namespace, &self.id),
            accounts_url: self.accounts_url().ok_or_else(|| TenantError::Invalid {
                tenant: self.id.clone(),
                message: "no Zoho region or accounts URL".into(),
            })?,
            api_domain_override: self.zoho.api_domain.clone(),
            client_id: self.zoho.client_id.clone(),
            client_secret: self.zoho.client_secret.expose().to_owned(),
            refresh_token: refresh.expose().to_owned(),
        })
    }
}
