//! The simulator's configuration: a JSON document where every field is optional.
//!
//! A tenant's identifiers default from its `name` (default `acme`): grant `grant-<name>`,
//! Nylas key `nyk-<name>`, org `org-<name>`, client `cid-<name>` / `cs-<name>`, refresh token
//! `rt-<name>`, authorization code `code-<name>`. So `{}` is a working config with one tenant,
//! and `{"tenants":[{"name":"acme"},{"name":"globex"}]}` is a working config with two.
//!
//! A tenant may also have a Salesforce org (`"salesforce": {}` gives one with every default):
//! org `sforg-<name>`, client `sfcid-<name>` / `sfcs-<name>`, refresh token `sfrt-<name>`,
//! authorization code `sfcode-<name>`. Without the key (or with `null`) the tenant has none.

use std::collections::{HashMap, HashSet};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

/// Nylas regions the simulator serves (`{base}/nylas/<region>`).
pub const NYLAS_REGIONS: &[&str] = &["us", "eu"];

/// The Salesforce external-id field by default (on both Contact and Lead).
pub const DEFAULT_EXT_ID_FIELD: &str = "Nylas_Contact_Id__c";

/// Zoho data centers the simulator serves (`{base}/zoho/<dc>/accounts` and `/api`).
pub const ZOHO_DCS: &[&str] = &["us", "eu", "in", "au", "jp", "cn", "ca", "sa", "uk"];

/// The whole simulator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seeds everything random: address books (unless a tenant sets `contact_seed`), faults,
    /// generated ids and tokens.
    pub seed: u64,
    /// Simulated seconds per real second. Applies to the Zoho rolling 24 h credit window, the
    /// access-token lifetime (3600 s) and the token-request window (10 min), and to the
    /// Salesforce rolling 24 h request window, session lifetime and query-cursor idle time;
    /// 1440 makes a simulated day last a real minute.
    pub time_scale: f64,
    pub faults: FaultConfig,
    pub tenants: Vec<TenantConfig>,
    /// The base URL clients reach the simulator at, when it differs from the bound address
    /// (e.g. behind a container network). Used for `api_domain` in Zoho token responses.
    pub public_url: Option<String>,
    /// Where mutations of the address books are delivered as signed Nylas webhooks; `None`
    /// (the default): mutations change the books silently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhookConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            time_scale: 1.0,
            faults: FaultConfig::default(),
            tenants: vec![TenantConfig::named("acme")],
            public_url: None,
            webhooks: None,
        }
    }
}

/// Seeded, reproducible faults. Rates are probabilities per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    pub zoho_429_rate: f64,
    pub zoho_5xx_rate: f64,
    pub zoho_timeout_rate: f64,
    pub nylas_429_rate: f64,
    pub nylas_5xx_rate: f64,
    /// Salesforce API requests (never the token endpoint): 500 `UNKNOWN_EXCEPTION`.
    pub sf_5xx_rate: f64,
    /// Salesforce API requests: stall `timeout_ms`, then 503 `SERVER_UNAVAILABLE`.
    pub sf_timeout_rate: f64,
    /// Uniform extra latency per request, `[min, max]` milliseconds (every API).
    pub latency_ms: [u64; 2],
    /// How long a "timeout" fault stalls (real milliseconds) before answering (Zoho 504,
    /// Salesforce 503).
    pub timeout_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            zoho_429_rate: 0.0,
            zoho_5xx_rate: 0.0,
            zoho_timeout_rate: 0.0,
            nylas_429_rate: 0.0,
            nylas_5xx_rate: 0.0,
            sf_5xx_rate: 0.0,
            sf_timeout_rate: 0.0,
            latency_ms: [0, 0],
            timeout_ms: 30_000,
        }
    }
}

/// The webhook destination every grant's notifications go to (Nylas's `webhook_url`,
/// `webhook_secret` and `compressed_delivery`, plus the sender's retry settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http(s)://host:port/path` the notifications are POSTed to.
    pub url: String,
    /// The destination's `webhook_secret`: the HMAC-SHA256 key of `x-nylas-signature`.
    pub secret: String,
    /// gzip the body (`Content-Encoding: gzip`); the signature then covers the gzip bytes.
    #[serde(default)]
    pub compressed: bool,
    #[serde(default = "default_application_id")]
    pub application_id: String,
    /// Further attempts after a failed one (non-200 or no answer in `timeout_ms`).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled before each later one (real milliseconds).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// How long an attempt may take before it counts as failed (Nylas waits 10 s).
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_application_id() -> String {
    "app-sim".to_string()
}

fn default_retries() -> u32 {
    3
}

fn default_retry_backoff_ms() -> u64 {
    200
}

fn default_webhook_timeout_ms() -> u64 {
    10_000
}

impl WebhookConfig {
    /// A destination with the default settings.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            compressed: false,
            application_id: default_application_id(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            timeout_ms: default_webhook_timeout_ms(),
        }
    }
}

/// One tenant: a Nylas grant (its address book) and the Zoho org it syncs into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawTenant")]
pub struct TenantConfig {
    pub name: String,
    pub grant_id: String,
    pub nylas_api_key: String,
    pub nylas_region: String,
    /// Size of the generated address book.
    pub contacts: usize,
    /// Seed of the address book; by default derived from the simulator seed and `grant_id`.
    pub contact_seed: Option<u64>,
    pub zoho: ZohoConfig,
    /// The tenant's Salesforce org, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce: Option<SalesforceConfig>,
}

impl TenantConfig {
    /// A tenant whose identifiers all derive from `name` (see the module docs).
    pub fn named(name: &str) -> TenantConfig {
        RawTenant {
            name: Some(name.to_string()),
            ..RawTenant::default()
        }
        .into()
    }
}

/// A tenant's Zoho org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZohoConfig {
    pub dc: String,
    pub org_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Authorization codes that exchange for `refresh_token`, each usable once.
    pub grant_codes: Vec<String>,
    pub daily_credits: u64,
    pub concurrency: usize,
    /// `false`: no credit limit and no concurrency limit (both still counted), for benchmarks.
    pub limits: bool,
}

/// A tenant's Salesforce org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SalesforceConfig {
    /// The simulator's name for the org (in URLs: `{base}/salesforce/{org_id}/...`).
    pub org_id: String,
    /// The connected app's consumer key and secret.
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Authorization codes that exchange for `refresh_token`, each usable once.
    pub grant_codes: Vec<String>,
    /// `DailyApiRequests.Max`: API requests allowed in a rolling 24 h window (Developer
    /// Edition: 15,000).
    pub daily_requests: u64,
    /// Access-token lifetime in simulated seconds (Salesforce's default session timeout is
    /// 2 hours).
    pub session_secs: u64,
    /// The active duplicate rule: matching on Email (case-insensitive) across Contact and Lead.
    pub duplicate_rule: DuplicateRule,
    /// The external-id field on both Contact and Lead (unique, case-sensitive text, 255).
    pub ext_id_field: String,
    /// The org's Accounts; `None`: three generated from the tenant's address book (see
    /// `salesforce::accounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<AccountConfig>>,
    /// Most API requests in flight at once.
    pub concurrency: usize,
    /// Records per query page (Salesforce: 2000 by default, 200 at least).
    pub query_page_size: usize,
    /// `false`: no daily-request limit and no concurrency limit (both still counted).
    pub limits: bool,
}

/// What a duplicate rule does with a record whose Email matches another Contact or Lead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateRule {
    /// No active duplicate rule.
    #[default]
    None,
    /// Refuse the save unless the request sends `Sforce-Duplicate-Rule-Header: allowSave=true`.
    Alert,
    /// Refuse the save, whatever the request says.
    Block,
}

/// One Account of a Salesforce org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    #[serde(default)]
    pub website: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: Option<String>,
    grant_id: Option<String>,
    nylas_api_key: Option<String>,
    nylas_region: Option<String>,
    contacts: Option<usize>,
    contact_seed: Option<u64>,
    #[serde(default)]
    zoho: RawZoho,
    #[serde(default)]
    salesforce: Option<RawSalesforce>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalesforce {
    org_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    grant_codes: Option<Vec<String>>,
    daily_requests: Option<u64>,
    session_secs: Option<u64>,
    duplicate_rule: Option<DuplicateRule>,
    ext_id_field: Option<String>,
    accounts: Option<Vec<AccountConfig>>,
    concurrency: Option<usize>,
    query_page_size: Option<usize>,
    limits: Option<bool>,
}

impl RawSalesforce {
    fn resolve(self, name: &str) -> SalesforceConfig {
        SalesforceConfig {
            org_id: self.org_id.unwrap_or_else(|| format!("sforg-{name}")),
            client_id: self.client_id.unwrap_or_else(|| format!("sfcid-{name}")),
            client_secret: self.client_secret.unwrap_or_else(|| format!("sfcs-{name}")),
            refresh_token: self.refresh_token.unwrap_or_else(|| format!("sfrt-{name}")),
            grant_codes: self.grant_codes.unwrap_or_else(|| vec![format!("sfcode-{name}")]),
            daily_requests: self.daily_requests.unwrap_or(15_000),
            session_secs: self.session_secs.unwrap_or(7_200),
            duplicate_rule: self.duplicate_rule.unwrap_or_default(),
            ext_id_field: self.ext_id_field.unwrap_or_else(|| DEFAULT_EXT_ID_FIELD.to_string()),
            accounts: self.accounts,
            concurrency: self.concurrency.unwrap_or(25),
            query_page_size: self.query_page_size.unwrap_or(2_000),
            limits: self.limits.unwrap_or(true),
        }
    }
}

impl SalesforceConfig {
    /// An org with every default for tenant `name`.
    pub fn named(name: &str) -> SalesforceConfig {
        RawSalesforce::default().resolve(name)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZoho {
    dc: Option<String>,
    org_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    grant_codes: Option<Vec<String>>,
    daily_credits: Option<u64>,
    concurrency: Option<usize>,
    limits: Option<bool>,
}

impl From<RawTenant> for TenantConfig {
    fn from(raw: RawTenant) -> Self {
        let name = raw.name.unwrap_or_else(|| {
            // A tenant given only a grant id `grant-x` is named `x`.
            raw.grant_id
                .as_deref()
                .map(|g| g.strip_prefix("grant-").unwrap_or(g).to_string())
                .unwrap_or_else(|| "acme".to_string())
        });
        let z = raw.zoho;
        let salesforce = raw.salesforce.map(|sf| sf.resolve(&name));
        TenantConfig {
            salesforce,
            grant_id: raw.grant_id.unwrap_or_else(|| format!("grant-{name}")),
            nylas_api_key: raw.nylas_api_key.unwrap_or_else(|| format!("nyk-{name}")),
            nylas_region: raw.nylas_region.unwrap_or_else(|| "us".to_string()),
            contacts: raw.contacts.unwrap_or(3000),
            contact_seed: raw.contact_seed,
            zoho: ZohoConfig {
                dc: z.dc.unwrap_or_else(|| "us".to_string()),
                org_id: z.org_id.unwrap_or_else(|| format!("org-{name}")),
                client_id: z.client_id.unwrap_or_else(|| format!("cid-{name}")),
                client_secret: z.client_secret.unwrap_or_else(|| format!("cs-{name}")),
                refresh_token: z.refresh_token.unwrap_or_else(|| format!("rt-{name}")),
                grant_codes: z.grant_codes.unwrap_or_else(|| vec![format!("code-{name}")]),
                daily_credits: z.daily_credits.unwrap_or(50_000),
                concurrency: z.concurrency.unwrap_or(20),
                limits: z.limits.unwrap_or(true),
            },
            name,
        }
    }
}

impl SimConfig {
    /// Parses a JSON config document.
    pub fn from_json(text: &str) -> anyhow::Result<SimConfig> {
        let cfg: SimConfig =
            serde_json::from_str(text).context("the simulator config is not valid JSON for SimConfig")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a JSON config file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<SimConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        SimConfig::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks what serde cannot: ranges, known regions and DCs, unique identifiers.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.time_scale.is_finite() && self.time_scale > 0.0,
            "time_scale must be a positive number, got {}",
            self.time_scale
        );
        let f = &self.faults;
        for (name, rate) in [
            ("zoho_429_rate", f.zoho_429_rate),
            ("zoho_5xx_rate", f.zoho_5xx_rate),
            ("zoho_timeout_rate", f.zoho_timeout_rate),
            ("nylas_429_rate", f.nylas_429_rate),
            ("nylas_5xx_rate", f.nylas_5xx_rate),
            ("sf_5xx_rate", f.sf_5xx_rate),
            ("sf_timeout_rate", f.sf_timeout_rate),
        ] {
            ensure!(
                (0.0..=1.0).contains(&rate),
                "faults.{name} must be within 0..=1, got {rate}"
            );
        }
        ensure!(
            f.zoho_429_rate + f.zoho_5xx_rate + f.zoho_timeout_rate <= 1.0 + 1e-9,
            "the Zoho fault rates add up to more than 1"
        );
        ensure!(
            f.nylas_429_rate + f.nylas_5xx_rate <= 1.0 + 1e-9,
            "the Nylas fault rates add up to more than 1"
        );
        ensure!(
            f.sf_5xx_rate + f.sf_timeout_rate <= 1.0 + 1e-9,
            "the Salesforce fault rates add up to more than 1"
        );
        ensure!(
            f.latency_ms[0] <= f.latency_ms[1],
            "faults.latency_ms must be [min, max] with min <= max"
        );
        if let Some(w) = &self.webhooks {
            ensure!(
                w.url.starts_with("http://") || w.url.starts_with("https://"),
                "webhooks.url must be an http:// or https:// URL, got `{}`",
                w.url
            );
            ensure!(!w.secret.is_empty(), "webhooks.secret must not be empty");
            ensure!(w.timeout_ms > 0, "webhooks.timeout_ms must be at least 1");
            ensure!(
                w.retries <= 20,
                "webhooks.retries must be at most 20, got {}",
                w.retries
            );
        }
        let mut grants = HashSet::new();
        let mut orgs: HashMap<&str, &ZohoConfig> = HashMap::new();
        let mut refresh_tokens: HashMap<&str, &str> = HashMap::new();
        let mut codes: HashMap<&str, &str> = HashMap::new();
        self.validate_salesforce()?;
        for t in &self.tenants {
            ensure!(!t.grant_id.is_empty(), "tenant `{}` has an empty grant_id", t.name);
            ensure!(
                grants.insert(t.grant_id.as_str()),
                "grant_id `{}` appears twice",
                t.grant_id
            );
            ensure!(
                NYLAS_REGIONS.contains(&t.nylas_region.as_str()),
                "tenant `{}`: nylas_region `{}` is not one of {NYLAS_REGIONS:?}",
                t.name,
                t.nylas_region
            );
            let z = &t.zoho;
            ensure!(
                ZOHO_DCS.contains(&z.dc.as_str()),
                "tenant `{}`: zoho.dc `{}` is not one of {ZOHO_DCS:?}",
                t.name,
                z.dc
            );
            ensure!(
                z.concurrency > 0,
                "tenant `{}`: zoho.concurrency must be at least 1",
                t.name
            );
            match orgs.get(z.org_id.as_str()) {
                // Several grants may sync into one org; they must then describe it identically.
                Some(other) if *other != z => bail!(
                    "org `{}` is configured twice with different settings (tenant `{}`)",
                    z.org_id,
                    t.name
                ),
                Some(_) => continue,
                None => {
                    orgs.insert(&z.org_id, z);
                }
            }
            if let Some(org) = refresh_tokens.insert(&z.refresh_token, &z.org_id) {
                bail!(
                    "refresh token `{}` belongs to both `{org}` and `{}`",
                    z.refresh_token,
                    z.org_id
                );
            }
            for code in &z.grant_codes {
                if let Some(org) = codes.insert(code, &z.org_id) {
                    bail!("grant code `{code}` belongs to both `{org}` and `{}`", z.org_id);
                }
            }
        }
        Ok(())
    }

    /// Checks the Salesforce orgs: sane settings, and ids, refresh tokens and codes that
    /// belong to one org only.
    fn validate_salesforce(&self) -> anyhow::Result<()> {
        let mut orgs: HashMap<&str, &SalesforceConfig> = HashMap::new();
        let mut refresh_tokens: HashMap<&str, &str> = HashMap::new();
        let mut codes: HashMap<&str, &str> = HashMap::new();
        for t in &self.tenants {
            let Some(sf) = &t.salesforce else {
                continue;
            };
            let who = format!("tenant `{}`: salesforce", t.name);
            ensure!(
                !sf.org_id.is_empty() && !sf.org_id.contains('/'),
                "{who}.org_id must be non-empty and without `/`"
            );
            ensure!(sf.concurrency > 0, "{who}.concurrency must be at least 1");
            ensure!(sf.session_secs > 0, "{who}.session_secs must be at least 1");
            ensure!(
                (1..=2_000).contains(&sf.query_page_size),
                "{who}.query_page_size must be within 1..=2000, got {}",
                sf.query_page_size
            );
            let ext = &sf.ext_id_field;
            ensure!(
                ext.len() > 3
                    && ext.ends_with("__c")
                    && ext.starts_with(|c: char| c.is_ascii_alphabetic())
                    && ext.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{who}.ext_id_field must be a custom field name like `Nylas_Contact_Id__c`, got `{ext}`"
            );
            if let Some(accounts) = &sf.accounts {
                ensure!(
                    accounts.iter().all(|a| !a.name.trim().is_empty()),
                    "{who}.accounts: every account needs a name"
                );
            }
            match orgs.get(sf.org_id.as_str()) {
                Some(other) if *other != sf => bail!(
                    "Salesforce org `{}` is configured twice with different settings (tenant `{}`)",
                    sf.org_id,
                    t.name
                ),
                Some(_) => continue,
                None => {
                    orgs.insert(&sf.org_id, sf);
                }
            }
            if let Some(org) = refresh_tokens.insert(&sf.refresh_token, &sf.org_id) {
                bail!(
                    "Salesforce refresh token `{}` belongs to both `{org}` and `{}`",
                    sf.refresh_token,
                    sf.org_id
                );
            }
            for code in &sf.grant_codes {
                if let Some(org) = codes.insert(code, &sf.org_id) {
                    bail!(
                        "Salesforce grant code `{code}` belongs to both `{org}` and `{}`",
                        sf.org_id
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default_acme_tenant() {
        let cfg = SimConfig::from_json("{}").expect("valid");
        assert_eq!(cfg, SimConfig::default());
        let t = &cfg.tenants[0];
        assert_eq!(t.grant_id, "grant-acme");
        assert_eq!(t.nylas_api_key, "nyk-acme");
        assert_eq!(t.zoho.org_id, "org-acme");
        assert_eq!(t.zoho.grant_codes, vec!["code-acme".to_string()]);
        assert_eq!(t.zoho.daily_credits, 50_000);
        assert!(t.zoho.limits);
    }

    #[test]
    fn tenant_ids_derive_from_grant_id_when_no_name() {
        let cfg =
            SimConfig::from_json(r#"{"tenants":[{"grant_id":"grant-globex","zoho":{"dc":"eu"}}]}"#).expect("valid");
        let t = &cfg.tenants[0];
        assert_eq!(t.name, "globex");
        assert_eq!(t.zoho.refresh_token, "rt-globex");
        assert_eq!(t.zoho.dc, "eu");
    }

    #[test]
    fn bad_configs_are_rejected_with_a_reason() {
        for bad in [
            r#"{"time_scale":0}"#,
            r#"{"faults":{"zoho_429_rate":1.5}}"#,
            r#"{"faults":{"latency_ms":[10,5]}}"#,
            r#"{"tenants":[{"name":"a"},{"name":"a"}]}"#,
            r#"{"tenants":[{"nylas_region":"mars"}]}"#,
            r#"{"tenants":[{"zoho":{"dc":"xx"}}]}"#,
            r#"{"unknown":1}"#,
            r#"{"webhooks":{"url":"ftp://x","secret":"s"}}"#,
            r#"{"webhooks":{"url":"http://x","secret":""}}"#,
            r#"{"webhooks":{"url":"http://x"}}"#,
            r#"{"webhooks":{"url":"http://x","secret":"s","extra":1}}"#,
            r#"{"faults":{"sf_5xx_rate":0.6,"sf_timeout_rate":0.6}}"#,
            r#"{"tenants":[{"salesforce":{"duplicate_rule":"warn"}}]}"#,
            r#"{"tenants":[{"salesforce":{"ext_id_field":"Nylas_Id"}}]}"#,
            r#"{"tenants":[{"salesforce":{"query_page_size":0}}]}"#,
            r#"{"tenants":[{"salesforce":{"concurrency":0}}]}"#,
            r#"{"tenants":[{"salesforce":{"extra":1}}]}"#,
            r#"{"tenants":[{"name":"a","salesforce":{}},{"name":"b","salesforce":{"refresh_token":"sfrt-a"}}]}"#,
        ] {
            assert!(SimConfig::from_json(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn webhooks_default_off_and_fill_in_defaults() {
        assert_eq!(SimConfig::default().webhooks, None);
        let cfg =
            SimConfig::from_json(r#"{"webhooks":{"url":"http://127.0.0.1:9/hook","secret":"whsec"}}"#).expect("valid");
        assert_eq!(
            cfg.webhooks,
            Some(WebhookConfig::new("http://127.0.0.1:9/hook", "whsec"))
        );
        let w = WebhookConfig::new("u", "s");
        assert_eq!(
            (
                w.compressed,
                w.application_id.as_str(),
                w.retries,
                w.retry_backoff_ms,
                w.timeout_ms
            ),
            (false, "app-sim", 3, 200, 10_000)
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        for cfg in [
            SimConfig::default(),
            SimConfig::from_json(
                r#"{"tenants":[{"name":"a","salesforce":{"duplicate_rule":"block","accounts":[{"name":"X","website":"x.example"}]}}]}"#,
            )
            .expect("valid"),
        ] {
            let text = serde_json::to_string(&cfg).expect("serializes");
            assert_eq!(SimConfig::from_json(&text).expect("parses"), cfg);
        }
    }

    #[test]
    fn salesforce_is_absent_by_default_and_its_ids_derive_from_the_name() {
        assert_eq!(SimConfig::default().tenants[0].salesforce, None);
        let cfg = SimConfig::from_json(r#"{"tenants":[{"name":"globex","salesforce":{}}]}"#).expect("valid");
        let sf = cfg.tenants[0].salesforce.clone().expect("salesforce");
        assert_eq!(sf, SalesforceConfig::named("globex"));
        assert_eq!(
            (
                sf.org_id.as_str(),
                sf.client_id.as_str(),
                sf.client_secret.as_str(),
                sf.refresh_token.as_str()
            ),
            ("sforg-globex", "sfcid-globex", "sfcs-globex", "sfrt-globex")
        );
        assert_eq!(sf.grant_codes, vec!["sfcode-globex".to_string()]);
        assert_eq!(
            (sf.daily_requests, sf.session_secs, sf.concurrency),
            (15_000, 7_200, 25)
        );
        assert_eq!((sf.query_page_size, sf.limits), (2_000, true));
        assert_eq!(sf.duplicate_rule, DuplicateRule::None);
        assert_eq!(sf.ext_id_field, "Nylas_Contact_Id__c");
        assert_eq!(sf.accounts, None);
    }
}
