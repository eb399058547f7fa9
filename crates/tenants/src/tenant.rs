//! The tenant model and its validation.

pub use crmsync_redis::tenant_tag;

use crate::crm::Crm;
use crate::secret::Secret;

/// Where contacts come from: one Nylas grant.
#[derive(Debug, Clone, PartialEq)]
pub struct NylasSettings {
    pub grant_id: String,
    pub api_key: Secret,
    /// `https://api.us.nylas.com`, `https://api.eu.nylas.com`, or any URL.
    pub api_uri: String,
}

/// A Zoho CRM edition: it sets the org's default concurrency and, with the number of user
/// licences, its daily API credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    Free,
    Standard,
    Professional,
    Enterprise,
    Ultimate,
}

impl Edition {
    pub fn parse(s: &str) -> Option<Edition> {
        match s.trim().to_ascii_lowercase().as_str() {
            "free" => Some(Edition::Free),
            "standard" => Some(Edition::Standard),
            "professional" => Some(Edition::Professional),
            "enterprise" => Some(Edition::Enterprise),
            "ultimate" => Some(Edition::Ultimate),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Edition::Free => "free",
            Edition::Standard => "standard",
            Edition::Professional => "professional",
            Edition::Enterprise => "enterprise",
            Edition::Ultimate => "ultimate",
        }
    }

    /// Daily API credits by Zoho's documented table: Free 5,000; otherwise 50,000 plus a
    /// per-user amount (Standard 250, Professional 500, Enterprise 1,000, Ultimate 2,000),
    /// capped at 100,000 / 3,000,000 / 5,000,000 (Ultimate: no documented cap). Zoho's pages
    /// disagree (older ones use 5k/10k/15k bases), so `--daily-credits` overrides it.
    pub fn daily_credits(&self, users: u32) -> u64 {
        let users = u64::from(users);
        match self {
            Edition::Free => 5_000,
            Edition::Standard => (50_000 + 250 * users).min(100_000),
            Edition::Professional => (50_000 + 500 * users).min(3_000_000),
            Edition::Enterprise => (50_000 + 1_000 * users).min(5_000_000),
            Edition::Ultimate => 50_000 + 2_000 * users,
        }
    }

    /// Concurrent API calls per org per OAuth app.
    pub fn concurrency(&self) -> u32 {
        match self {
            Edition::Free => 5,
            Edition::Standard => 10,
            Edition::Professional => 15,
            Edition::Enterprise => 20,
            Edition::Ultimate => 25,
        }
    }
}

/// Requests per second per tenant unless set (as Sling uses for Zoho).
pub const DEFAULT_RPS: f64 = 5.0;
/// Concurrency when neither set nor implied by an edition (Standard's).
pub const DEFAULT_CONCURRENCY: u32 = 10;

/// A tenant: one address book synced into one CRM org.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    /// The destination: names the remote org the tenant writes to, as far as crmsync knows it.
    /// Every piece of sync state and every cached token is keyed by it, so it is new when the
    /// tenant is added and whenever it is pointed elsewhere ([`Crm::same_destination`]): state
    /// of one org is never used for another, and a re-added tenant starts from nothing. Set by
    /// the store.
    pub dest: String,
    /// The connection's revision: raised by the store whenever any CRM setting changes,
    /// secrets included; a cached access token of another revision is never used.
    pub crm_rev: u32,
    pub nylas: NylasSettings,
    pub crm: Crm,
    /// The org's daily API-credit allowance (rolling 24 h).
    pub daily_credits: u64,
    /// Share of `daily_credits` crmsync may spend (0.5–1.0).
    pub budget_share: f64,
    /// The org's Zoho edition, if known.
    pub edition: Option<Edition>,
    /// User licences of the org (with the edition, gives the daily credits).
    pub users: Option<u32>,
    /// Requests per second to Zoho, fleet-wide.
    pub requests_per_second: f64,
    /// Concurrent Zoho calls, fleet-wide; `None`: the edition's limit.
    pub concurrency: Option<u32>,
    /// The Nylas webhook destination's secret, and during a rotation the next one: a
    /// delivery signed with either is accepted.
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_next: Option<Secret>,
    /// Reconcile the CRM with the book this often, fleet-wide (None: only on demand).
    pub reconcile_every_secs: Option<u64>,
    /// A reconcile leaves records edited in the CRM since crmsync wrote them (default: the
    /// book wins).
    pub keep_crm_edits: bool,
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
        "tenant `{0}` has no refresh token; run `crmsync zoho exchange-code {0} --code <grant code>` (Zoho) or `crmsync salesforce exchange-code {0} --code <authorization code>` (Salesforce), or set one with `crmsync tenant set {0}`"
    )]
    NoRefreshToken(String),
    #[error("tenant `{tenant}` writes to {kind}, not {wanted}")]
    WrongCrm {
        tenant: String,
        kind: &'static str,
        wanted: &'static str,
    },
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

pub(crate) fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "http://".len() + 1
}

/// A new destination id: 12 hex digits (48 random bits), short because it is in every key of
/// the tenant's sync state.
pub fn new_dest_id() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

impl Tenant {
    /// A tenant with the default budget and limits (50,000 daily credits, a 0.8 share, 5
    /// requests per second, the edition's concurrency); the store sets its destination.
    pub fn new(id: impl Into<String>, nylas: NylasSettings, crm: Crm) -> Tenant {
        Tenant {
            id: id.into(),
            dest: String::new(),
            crm_rev: 0,
            nylas,
            crm,
            daily_credits: 50_000,
            budget_share: 0.8,
            edition: None,
            users: None,
            requests_per_second: DEFAULT_RPS,
            concurrency: None,
            webhook_secret: None,
            webhook_secret_next: None,
            reconcile_every_secs: None,
            keep_crm_edits: false,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

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
        self.crm.validate().map_err(bad)?;
        if self.daily_credits == 0 {
            return Err(bad("daily credits must be a positive number".into()));
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 100.0) {
            return Err(bad(format!(
                "requests per second {} is out of range (more than 0, at most 100)",
                self.requests_per_second
            )));
        }
        if let Some(c) = self.concurrency
            && !(1..=25).contains(&c)
        {
            return Err(bad(format!(
                "concurrency {c} is out of range: 1 to 25 concurrent calls (Zoho: Free 5 ... Ultimate 25; Salesforce: 25 long-running requests)"
            )));
        }
        if self.users == Some(0) {
            return Err(bad("users must be at least 1".into()));
        }
        if let Some(s) = self.reconcile_every_secs
            && !(3_600..=30 * 86_400).contains(&s)
        {
            return Err(bad(format!(
                "reconcile period {s} s is out of range: from 1 hour to 30 days (e.g. 24h)"
            )));
        }
        if !(0.5..=1.0).contains(&self.budget_share) {
            return Err(bad(format!(
                "budget share {} is out of range: crmsync may spend between 0.5 and 1.0 of the daily allowance",
                self.budget_share
            )));
        }
        Ok(())
    }

    /// Concurrent Zoho calls allowed: the setting, else the edition's, else 10.
    pub fn effective_concurrency(&self) -> u32 {
        self.concurrency
            .or(self.edition.map(|e| e.concurrency()))
            .unwrap_or(DEFAULT_CONCURRENCY)
    }

    /// Credits crmsync may spend in any rolling 24 hours: share × daily credits.
    pub fn allowed_credits(&self) -> u64 {
        (self.daily_credits as f64 * self.budget_share).floor() as u64
    }

    /// The tenant's Zoho connection, with its refresh token (required to write).
    pub fn zoho(&self) -> Result<&crate::crm::ZohoConnection, TenantError> {
        let z = self.crm.zoho().ok_or_else(|| TenantError::WrongCrm {
            tenant: self.id.clone(),
            kind: self.crm.kind().as_str(),
            wanted: "zoho",
        })?;
        if z.refresh_token.is_none() {
            return Err(TenantError::NoRefreshToken(self.id.clone()));
        }
        Ok(z)
    }

    /// The tenant's Salesforce connection, with its refresh token (required to write).
    pub fn salesforce(&self) -> Result<&crate::crm::SalesforceConnection, TenantError> {
        let c = self.crm.salesforce().ok_or_else(|| TenantError::WrongCrm {
            tenant: self.id.clone(),
            kind: self.crm.kind().as_str(),
            wanted: "salesforce",
        })?;
        if c.refresh_token.is_none() {
            return Err(TenantError::NoRefreshToken(self.id.clone()));
        }
        Ok(c)
    }
}
