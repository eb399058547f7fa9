//! The fake Salesforce org (crmsync's second sink): a login server per org (OAuth tokens) and
//! an instance serving the REST API subset crmsync uses (sObject Collections upsert by
//! external id and delete, the single-record upsert, SOQL queries, limits), with Contacts,
//! Leads and Accounts, duplicate rules, lead conversion, the daily API request limit,
//! concurrency limits and seeded faults.
//!
//! URLs, per org (`{org}` is the configured `org_id`):
//! - login server `{base}/salesforce/{org}/login` → `POST /services/oauth2/token`
//!   (see [`oauth`]);
//! - instance `{base}/salesforce/{org}/instance` → `/services/data/vNN.N/...` (see [`api`]).
//!
//! Test hooks (also under `/_sim/salesforce/{org}`): inspection, another integration's API
//! usage, lead conversion, session expiry.
//!
//! Org state lives behind one mutex per org, never held across an `.await`; sessions have
//! their own mutex.

pub mod accounts;
pub mod api;
pub mod ids;
pub mod oauth;
pub mod records;
pub mod soql;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::hash_str;
use crate::config::{SalesforceConfig, SimConfig};
use crate::faults::Dice;
use crate::nylas::NylasState;
use crate::zoho::credits::CreditWindow;
use crate::{Sim, SpendReport, lock};
use records::{SObject, Store, sf_datetime};
use soql::Cursors;

/// Salesforce's error array with one error: `[{"message","errorCode"}]`.
pub fn error_array(code: &str, message: &str) -> Value {
    json!([{"message": message, "errorCode": code}])
}

/// Every org and the sessions.
#[derive(Debug)]
pub struct SalesforceState {
    pub orgs: HashMap<String, Arc<SfOrg>>,
    pub sessions: oauth::Sessions,
}

impl SalesforceState {
    /// Builds every configured org with its Accounts (configured, or generated from the
    /// tenant's address book).
    pub fn new(cfg: &SimConfig, nylas: &NylasState, unix_now: f64) -> SalesforceState {
        let mut orgs = HashMap::new();
        let now = sf_datetime(unix_now);
        for t in &cfg.tenants {
            let Some(sf) = &t.salesforce else {
                continue;
            };
            orgs.entry(sf.org_id.clone()).or_insert_with(|| {
                let accounts = match &sf.accounts {
                    Some(a) => a.clone(),
                    None => {
                        let book = nylas.grants.get(&t.grant_id).and_then(|g| g.book.read().ok());
                        match book {
                            Some(book) => accounts::generated_accounts(&sf.org_id, cfg.seed, book.contacts()),
                            None => accounts::generated_accounts(&sf.org_id, cfg.seed, &[] as &[Value]),
                        }
                    }
                };
                Arc::new(SfOrg::new(sf.clone(), cfg.seed, &accounts, &now))
            });
        }
        SalesforceState {
            orgs,
            sessions: oauth::Sessions::new(cfg.seed),
        }
    }
}

/// One Salesforce org.
#[derive(Debug)]
pub struct SfOrg {
    pub cfg: SalesforceConfig,
    /// The 18-character Organization id (`00D...`), in token ids and access tokens.
    pub organization_id: String,
    /// The integration user's id (`005...`), in token ids.
    pub user_id: String,
    pub state: Mutex<SfOrgState>,
    pub faults: Dice,
}

impl SfOrg {
    fn new(cfg: SalesforceConfig, seed: u64, accounts: &[crate::config::AccountConfig], now: &str) -> SfOrg {
        let pod = ids::pod(&cfg.org_id);
        let mut store = Store::new(&cfg.org_id, &cfg.ext_id_field);
        for a in accounts {
            store.add_account(&a.name, a.website.as_deref(), now);
        }
        SfOrg {
            organization_id: ids::make(ids::ORG_PREFIX, &pod, hash_str(&cfg.org_id) % 1_000_000),
            user_id: ids::make(ids::USER_PREFIX, &pod, hash_str(&cfg.client_id) % 1_000_000),
            state: Mutex::new(SfOrgState {
                store,
                usage: CreditWindow::default(),
                stats: SfStats::default(),
                in_flight: 0,
                cursors: Cursors::default(),
            }),
            faults: Dice::new(seed, &format!("faults/salesforce/{}", cfg.org_id)),
            cfg,
        }
    }

    /// The two characters of the org's ids after the key prefix.
    pub fn pod(&self) -> String {
        ids::pod(&self.cfg.org_id)
    }
}

/// Mutable state of an org.
#[derive(Debug)]
pub struct SfOrgState {
    pub store: Store,
    /// API requests in the rolling 24 h window (one unit each), ours and other integrations'.
    pub usage: CreditWindow,
    pub stats: SfStats,
    pub in_flight: usize,
    pub cursors: Cursors,
}

/// Counters the inspection reports.
#[derive(Debug, Default)]
pub struct SfStats {
    /// Served (counted) API requests per operation.
    pub upsert: u64,
    pub single_upsert: u64,
    pub delete: u64,
    pub query: u64,
    pub limits: u64,
    /// Access tokens issued.
    pub token: u64,
    /// Every token-endpoint request for this org (issued or refused).
    pub token_requests: u64,
    /// 403 `REQUEST_LIMIT_EXCEEDED` for the daily limit (`TotalRequests`).
    pub rejected_limit: u64,
    /// 403 `REQUEST_LIMIT_EXCEEDED` for concurrency (`ConcurrentPerOrgLongTxn`).
    pub rejected_concurrency: u64,
    pub faults_injected: u64,
    /// Every API answer of this org by HTTP status (401s included).
    pub by_status: BTreeMap<u16, u64>,
    /// Peak requests in flight (refused ones included: it measures what the client sent).
    pub max_in_flight: usize,
    /// Records sent in served upserts (collection and single).
    pub records_upserted: u64,
    pub records_created: u64,
    pub records_updated: u64,
    pub records_failed: u64,
    /// Records refused by the duplicate rule.
    pub duplicates_blocked: u64,
}

impl SfOrgState {
    /// The inspection document (records left out unless `with_records`).
    pub fn inspect(&mut self, org: &SfOrg, now: f64, with_records: bool) -> Value {
        let s = &self.stats;
        let by_status: serde_json::Map<String, Value> =
            s.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let mut doc = json!({
            "org_id": org.cfg.org_id,
            "organization_id": org.organization_id,
            "counts": {
                "contacts": self.store.count(SObject::Contact),
                "leads": self.store.count(SObject::Lead),
                "accounts": self.store.count(SObject::Account),
            },
            "api_usage": {
                "used": self.usage.used(now),
                "max": org.cfg.daily_requests,
                "other": self.usage.others_used(now),
                "other_total": self.usage.others_total(),
                "total": self.usage.total(),
            },
            "max_usage_window": self.usage.max_in_window(),
            "max_usage_at_our_request": self.usage.max_at_our_charge(),
            "calls": {
                "upsert": s.upsert,
                "single_upsert": s.single_upsert,
                "delete": s.delete,
                "query": s.query,
                "limits": s.limits,
                "token": s.token,
                "rejected_limit": s.rejected_limit,
                "rejected_concurrency": s.rejected_concurrency,
                "by_status": by_status,
            },
            "max_in_flight": s.max_in_flight,
            "in_flight": self.in_flight,
            "token_requests": s.token_requests,
            "faults_injected": s.faults_injected,
            "records_upserted": s.records_upserted,
            "records_created": s.records_created,
            "records_updated": s.records_updated,
            "records_failed": s.records_failed,
            "duplicates_blocked": s.duplicates_blocked,
            "open_query_cursors": self.cursors.len(),
        });
        if with_records && let Value::Object(m) = &mut doc {
            m.insert("contacts".into(), json!(self.store.snapshot(SObject::Contact)));
            m.insert("leads".into(), json!(self.store.snapshot(SObject::Lead)));
            m.insert("accounts".into(), json!(self.store.snapshot(SObject::Account)));
        }
        doc
    }
}

impl Sim {
    fn sf_org(&self, org_id: &str) -> anyhow::Result<&Arc<SfOrg>> {
        self.salesforce
            .orgs
            .get(org_id)
            .ok_or_else(|| anyhow!("Salesforce org `{org_id}` is not configured"))
    }

    /// The login URL clients are told about (`public_url`, else the bound address).
    pub fn salesforce_login_url(&self, org_id: &str) -> String {
        format!("{}/salesforce/{org_id}/login", self.public_base())
    }

    /// The `instance_url` the token endpoint returns.
    pub fn salesforce_instance_url(&self, org_id: &str) -> String {
        format!("{}/salesforce/{org_id}/instance", self.public_base())
    }

    /// The inspection document of a Salesforce org: records (`contacts`, `leads`,
    /// `accounts`, unless `with_records` is false), `api_usage`, `calls`, counters.
    pub fn inspect_salesforce(&self, org_id: &str, with_records: bool) -> Option<Value> {
        let org = self.salesforce.orgs.get(org_id)?;
        let now = self.clock.now();
        Some(lock(&org.state).inspect(org, now, with_records))
    }

    /// Ends every live session (access token) of the org: their next use is 401
    /// `INVALID_SESSION_ID`. Returns how many were live.
    pub fn expire_salesforce_sessions(&self, org_id: &str) -> anyhow::Result<usize> {
        self.sf_org(org_id)?;
        Ok(self.salesforce.sessions.expire_org(org_id, self.clock.now()))
    }

    /// Counts `requests` API requests of another integration in the org's rolling window:
    /// `Sforce-Limit-Info`, `/limits` and the daily limit include them, crmsync's counters do
    /// not. With `limits`, the count stops at `daily_requests` (the other integration's
    /// requests past it would be refused too).
    pub fn spend_salesforce_requests(&self, org_id: &str, requests: u64) -> anyhow::Result<SpendReport> {
        let org = self.sf_org(org_id)?;
        let now = self.clock.now();
        let mut st = lock(&org.state);
        let used = st.usage.used(now);
        let charged = if org.cfg.limits {
            requests.min(org.cfg.daily_requests.saturating_sub(used))
        } else {
            requests
        };
        st.usage.charge_other(now, charged);
        Ok(SpendReport {
            org_id: org_id.to_string(),
            requested: requests,
            charged,
            used_window: st.usage.used(now),
            limit: org.cfg.daily_requests,
        })
    }

    /// Converts a Lead as a user would in Salesforce (see [`records::Store::convert_lead`]);
    /// returns the new Contact's id. Not an API request.
    pub fn convert_salesforce_lead(&self, org_id: &str, lead_id: &str) -> anyhow::Result<String> {
        let org = self.sf_org(org_id)?;
        let now = sf_datetime(self.clock.unix_now());
        let mut st = lock(&org.state);
        match st.store.convert_lead(lead_id, &now) {
            Ok((contact, _account)) => Ok(contact),
            Err(e) => bail!("cannot convert in `{org_id}`: {e}"),
        }
    }
}

/// Routes of every org's login server and instance, and the `/_sim/salesforce/` hooks.
pub fn routes() -> Router<Arc<Sim>> {
    const DATA: &str = "/salesforce/{org_id}/instance/services/data/{version}";
    Router::new()
        .route("/salesforce/{org_id}/login/services/oauth2/token", post(oauth::token))
        .route(&format!("{DATA}/composite/sobjects"), delete(api::delete))
        .route(
            &format!("{DATA}/composite/sobjects/{{sobject}}/{{field}}"),
            patch(api::upsert_collection),
        )
        .route(
            &format!("{DATA}/sobjects/{{sobject}}/{{field}}/{{value}}"),
            patch(api::upsert_single),
        )
        .route(&format!("{DATA}/query"), get(api::query))
        .route(&format!("{DATA}/query/{{locator}}"), get(api::query_more))
        .route(&format!("{DATA}/limits"), get(api::limits))
        .route("/_sim/salesforce/{org_id}", get(inspect_handler))
        .route("/_sim/salesforce/{org_id}/spend", post(spend_handler))
        .route("/_sim/salesforce/{org_id}/convert/{lead_id}", post(convert_handler))
        .route("/_sim/salesforce/{org_id}/expire_sessions", post(expire_handler))
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `GET /_sim/salesforce/{org_id}[?records=false]`
async fn inspect_handler(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(org_id)) = path else {
        return problem(StatusCode::NOT_FOUND, "org not found".into());
    };
    let with_records = !query.unwrap_or_default().split('&').any(|p| p == "records=false");
    match sim.inspect_salesforce(&org_id, with_records) {
        Some(doc) => Json(doc).into_response(),
        None => problem(StatusCode::NOT_FOUND, format!("Salesforce org `{org_id}` not found")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendRequests {
    requests: u64,
}

/// `POST /_sim/salesforce/{org_id}/spend` with `{"requests": N}` → the [`SpendReport`].
async fn spend_handler(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path(org_id)) = path else {
        return problem(StatusCode::NOT_FOUND, "org not found".into());
    };
    if !sim.salesforce.orgs.contains_key(&org_id) {
        return problem(StatusCode::NOT_FOUND, format!("Salesforce org `{org_id}` not found"));
    }
    match serde_json::from_slice::<SpendRequests>(&body) {
        Ok(ask) => match sim.spend_salesforce_requests(&org_id, ask.requests) {
            Ok(report) => Json(report).into_response(),
            Err(e) => problem(StatusCode::NOT_FOUND, format!("{e:#}")),
        },
        Err(e) => problem(StatusCode::BAD_REQUEST, format!("expected {{\"requests\": N}}: {e}")),
    }
}

/// `POST /_sim/salesforce/{org_id}/convert/{lead_id}` → `{"contact_id"}`.
async fn convert_handler(State(sim): State<Arc<Sim>>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let Ok(Path((org_id, lead_id))) = path else {
        return problem(StatusCode::NOT_FOUND, "org not found".into());
    };
    if !sim.salesforce.orgs.contains_key(&org_id) {
        return problem(StatusCode::NOT_FOUND, format!("Salesforce org `{org_id}` not found"));
    }
    match sim.convert_salesforce_lead(&org_id, &lead_id) {
        Ok(contact_id) => Json(json!({"contact_id": contact_id})).into_response(),
        Err(e) => problem(StatusCode::CONFLICT, format!("{e:#}")),
    }
}

/// `POST /_sim/salesforce/{org_id}/expire_sessions` → `{"expired": n}`.
async fn expire_handler(State(sim): State<Arc<Sim>>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(org_id)) = path else {
        return problem(StatusCode::NOT_FOUND, "org not found".into());
    };
    match sim.expire_salesforce_sessions(&org_id) {
        Ok(n) => Json(json!({"expired": n})).into_response(),
        Err(e) => problem(StatusCode::NOT_FOUND, format!("{e:#}")),
    }
}
