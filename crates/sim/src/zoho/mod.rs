//! The fake Zoho CRM: per-DC accounts servers (OAuth tokens) and API domains (Contacts
//! upsert, update by id, delete, search, Get Records), with per-org records, credits,
//! concurrency limits and faults.
//!
//! Other integrations of an org spend its credits through [`Sim::spend_zoho_credits`]
//! (`POST /_sim/orgs/{org_id}/spend`); other users change its records by hand through
//! [`Sim::create_zoho_record`], [`Sim::edit_zoho_record`] and [`Sim::delete_zoho_record`]
//! (`/_sim/orgs/{org_id}/records[/{id}]`, see [`hand`]).
//!
//! Org state lives behind one mutex per org, never held across an `.await`; the token store
//! has its own mutex, so orgs never contend with each other.

pub mod accounts;
pub mod api;
pub mod credits;
pub mod hand;
pub mod list;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::derive_seed;
use crate::config::{SimConfig, ZohoConfig};
use crate::faults::Dice;
use crate::{Sim, SpendReport, lock};
use credits::CreditWindow;
use records::RecordStore;

/// Zoho's error object: `{"code","details","message","status":"error"}`.
pub fn error_body(code: &str, details: Value, message: &str) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

/// All orgs and the shared token store.
#[derive(Debug)]
pub struct ZohoState {
    pub orgs: HashMap<String, Arc<Org>>,
    pub accounts: accounts::Accounts,
}

impl ZohoState {
    pub fn new(cfg: &SimConfig) -> ZohoState {
        let mut orgs = HashMap::new();
        for t in &cfg.tenants {
            orgs.entry(t.zoho.org_id.clone())
                .or_insert_with(|| Arc::new(Org::new(t.zoho.clone(), cfg.seed)));
        }
        ZohoState {
            orgs,
            accounts: accounts::Accounts::new(cfg.seed),
        }
    }

    /// Orgs served by a DC.
    pub fn orgs_in(&self, dc: &str) -> impl Iterator<Item = &Arc<Org>> {
        self.orgs.values().filter(move |o| o.cfg.dc == dc)
    }
}

/// One Zoho org.
#[derive(Debug)]
pub struct Org {
    pub cfg: ZohoConfig,
    pub state: Mutex<OrgState>,
    pub faults: Dice,
    /// Seals the org's Get Records page tokens (another org's tokens are invalid here).
    pub page_token_key: u64,
}

impl Org {
    fn new(cfg: ZohoConfig, seed: u64) -> Org {
        Org {
            state: Mutex::new(OrgState {
                records: RecordStore::new(&cfg.org_id),
                credits: CreditWindow::default(),
                stats: OrgStats::default(),
                in_flight: 0,
                complex_in_flight: 0,
            }),
            faults: Dice::new(seed, &format!("faults/zoho/{}", cfg.org_id)),
            page_token_key: derive_seed(seed, &format!("page-tokens/zoho/{}", cfg.org_id)),
            cfg,
        }
    }
}

/// Mutable state of an org.
#[derive(Debug)]
pub struct OrgState {
    pub records: RecordStore,
    pub credits: CreditWindow,
    pub stats: OrgStats,
    pub in_flight: usize,
    pub complex_in_flight: usize,
}

/// Counters the inspection endpoint reports.
#[derive(Debug, Default)]
pub struct OrgStats {
    /// Served (charged) calls per operation.
    pub upsert: u64,
    pub update: u64,
    pub delete: u64,
    pub search: u64,
    /// Get Records (`GET Contacts`, 1 credit a page, 204s included).
    pub list: u64,
    /// Records served by Get Records.
    pub records_listed: u64,
    /// `GET /org` (1 credit, like any get).
    pub org: u64,
    /// Access tokens issued for this org.
    pub token: u64,
    /// All token-endpoint requests attributed to this org (issued, denied by the limit, or
    /// refused for a wrong secret).
    pub token_requests: u64,
    /// 429s for the credit or concurrency limits (not injected faults).
    pub rejected_429: u64,
    pub faults_injected: u64,
    /// Every API response attributed to this org (authenticated), by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Peak number of this org's API requests in flight at once (rejected ones included:
    /// it measures what the client sent).
    pub max_in_flight: usize,
    /// Upserts and updates sent without `trigger` (or with a non-empty one): each would run
    /// workflows.
    pub workflows_triggered: u64,
    /// Records sent in served upserts.
    pub records_upserted: u64,
    /// Records sent in served updates by id.
    pub records_updated: u64,
    /// Records created, edited and deleted by hand (another user, not the API).
    pub hand_created: u64,
    pub hand_edited: u64,
    pub hand_deleted: u64,
    /// Arrival times (real time) of the org's API requests in the last second, and the most
    /// seen within any one second: what a per-second rate limit would count.
    pub arrivals: std::collections::VecDeque<std::time::Instant>,
    pub max_per_second: usize,
}

impl OrgStats {
    /// Counts a request's arrival in its second.
    pub fn arrived(&mut self, at: std::time::Instant) {
        while let Some(first) = self.arrivals.front() {
            if at.duration_since(*first) >= std::time::Duration::from_secs(1) {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        self.arrivals.push_back(at);
        self.max_per_second = self.max_per_second.max(self.arrivals.len());
    }
}

impl OrgState {
    /// The inspection document of the org (without the `records` key unless `with_records`).
    pub fn inspect(&mut self, cfg: &ZohoConfig, now: f64, with_records: bool) -> Value {
        let by_status: serde_json::Map<String, Value> = self
            .stats
            .by_status
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let records = if with_records {
            Some(self.records.snapshot())
        } else {
            None
        };
        let s = &self.stats;
        let mut doc = json!({
            "org_id": cfg.org_id,
            "dc": cfg.dc,
            "record_count": self.records.len(),
            "credits_used_window": self.credits.used(now),
            "max_credits_used_window": self.credits.max_in_window(),
            "max_credits_at_our_charge": self.credits.max_at_our_charge(),
            "credits_used_total": self.credits.total(),
            "other_credits_window": self.credits.others_used(now),
            "other_credits_total": self.credits.others_total(),
            "daily_credits": cfg.daily_credits,
            "calls": {
                "upsert": s.upsert,
                "update": s.update,
                "delete": s.delete,
                "search": s.search,
                "list": s.list,
                "org": s.org,
                "token": s.token,
                "rejected_429": s.rejected_429,
                "faults_injected": s.faults_injected,
                "by_status": by_status,
            },
            "token_requests": s.token_requests,
            "max_in_flight": s.max_in_flight,
            "max_requests_per_second": s.max_per_second,
            "in_flight": self.in_flight,
            "workflows_triggered": s.workflows_triggered,
            "records_upserted": s.records_upserted,
            "records_updated": s.records_updated,
            "records_listed": s.records_listed,
            "by_hand": {
                "created": s.hand_created,
                "edited": s.hand_edited,
                "deleted": s.hand_deleted,
            },
        });
        if let (Some(records), Value::Object(m)) = (records, &mut doc) {
            m.insert("records".into(), Value::Array(records));
        }
        doc
    }
}

impl Sim {
    /// The inspection document of an org, if it exists; `with_records: false` leaves out the
    /// records (cheap to poll while a benchmark writes 100,000 of them).
    pub fn inspect_org(&self, org_id: &str, with_records: bool) -> Option<Value> {
        let org = self.zoho.orgs.get(org_id)?;
        let now = self.clock.now();
        Some(lock(&org.state).inspect(&org.cfg, now, with_records))
    }
}

impl Sim {
    /// Charges `credits` to the rolling window of `org_id` as if another integration of the
    /// org had made calls: the org's limit and `X-API-CREDITS-REMAINING` count them, crmsync's
    /// own totals and call counters do not. With `limits`, the charge stops at the daily
    /// allowance (the other integration's calls past it would be refused too).
    pub fn spend_zoho_credits(&self, org_id: &str, credits: u64) -> anyhow::Result<SpendReport> {
        let org = self
            .zoho
            .orgs
            .get(org_id)
            .ok_or_else(|| anyhow::anyhow!("Zoho org `{org_id}` is not configured"))?;
        let now = self.clock.now();
        let mut st = lock(&org.state);
        let used = st.credits.used(now);
        let charged = if org.cfg.limits {
            credits.min(org.cfg.daily_credits.saturating_sub(used))
        } else {
            credits
        };
        st.credits.charge_other(now, charged);
        Ok(SpendReport {
            org_id: org_id.to_string(),
            requested: credits,
            charged,
            used_window: st.credits.used(now),
            limit: org.cfg.daily_credits,
        })
    }
}

/// Routes of every DC: `/zoho/{dc}/accounts/...` and `/zoho/{dc}/api/crm/{version}/...`.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/zoho/{dc}/accounts/oauth/v2/token", post(accounts::token))
        .route("/zoho/{dc}/api/crm/{version}/{module}/upsert", post(api::upsert))
        .route("/zoho/{dc}/api/crm/{version}/{module}/search", get(api::search))
        .route(
            "/zoho/{dc}/api/crm/{version}/{module}",
            delete(api::delete).put(api::update).get(api::get_module),
        )
        .route("/_sim/orgs/{org_id}/spend", post(spend))
        .merge(hand::routes())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpendCredits {
    credits: u64,
}

/// `POST /_sim/orgs/{org_id}/spend` with `{"credits": N}` → the [`SpendReport`].
async fn spend(State(sim): State<Arc<Sim>>, path: Result<Path<String>, PathRejection>, body: Bytes) -> Response {
    let problem = |status: StatusCode, message: String| (status, Json(json!({"error": message}))).into_response();
    let Ok(Path(org_id)) = path else {
        return problem(StatusCode::NOT_FOUND, "org not found".into());
    };
    let ask = match serde_json::from_slice::<SpendCredits>(&body) {
        Ok(a) => a,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("expected {{\"credits\": N}}: {e}")),
    };
    match sim.spend_zoho_credits(&org_id, ask.credits) {
        Ok(report) => Json(report).into_response(),
        Err(e) => problem(StatusCode::NOT_FOUND, format!("{e:#}")),
    }
}
