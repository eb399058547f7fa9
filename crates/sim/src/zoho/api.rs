//! The Zoho CRM API domain: `Contacts/upsert`, `Contacts` (update by id with `PUT`, delete
//! with `DELETE`, Get Records with `GET`), `Contacts/search` and `org` under `/crm/v6/` and
//! `/crm/v8/`.
//!
//! Every request goes through the same steps, in this order:
//! 1. draw the request's latency (applied to every answer);
//! 2. route and authenticate (`401 AUTHENTICATION_FAILURE` / `INVALID_TOKEN`, not attributed
//!    to any org);
//! 3. roll the org's fault dice: an injected fault answers at once (or after `timeout_ms`
//!    for a timeout) and applies nothing, charges nothing;
//! 4. parse the request: top-level errors (`INVALID_DATA`, `LIMIT_EXCEEDED`,
//!    `REQUIRED_PARAM_MISSING`, and Get Records' parameter and page-token errors) are not
//!    charged;
//! 5. enter the org's in-flight count: over `concurrency`, or over 10 concurrent upserts of
//!    more than 10 records, is `429 TOO_MANY_REQUESTS` (not charged);
//! 6. wait out the latency while in flight;
//! 7. under the org lock: if used-in-window + cost > daily credits, `429 TOO_MANY_REQUESTS`
//!    (not charged); otherwise charge and apply.
//!
//! Every answer attributed to an org carries `X-API-CREDITS-REMAINING: <daily - used>` once
//! the credits used in the window (after this request's charge) reach half the daily
//! allowance; orgs with `limits: false` never get the header.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::accounts::{TokenError, parse_urlencoded};
use super::credits::{DELETE_COST, GET_RECORDS_COST, SEARCH_COST, upsert_cost};
use super::list::{self, TokenClock};
use super::records::ItemResult;
use super::{Org, OrgState, error_body};
use crate::clock::rfc3339;
use crate::config::ZOHO_DCS;
use crate::faults::{self, ZohoFault};
use crate::{Sim, lock};

/// At most 100 records per upsert and 100 ids per delete.
pub const MAX_RECORDS: usize = 100;
/// Zoho's sub-concurrency limit: at most 10 parallel "complex" calls, which include
/// upserts of more than 10 records.
pub const MAX_COMPLEX: usize = 10;
pub const COMPLEX_RECORDS: usize = 10;

pub const CREDITS_HEADER: HeaderName = HeaderName::from_static("x-api-credits-remaining");

type ApiPath = Result<Path<(String, String, String)>, PathRejection>;

fn respond(status: StatusCode, body: Option<Value>) -> Response {
    match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    }
}

fn too_many_requests() -> Value {
    error_body(
        "TOO_MANY_REQUESTS",
        json!({}),
        "You have made too many requests. Please try again after some time.",
    )
}

/// An authenticated request to an org.
struct Call {
    sim: Arc<Sim>,
    org: Arc<Org>,
    delay: Duration,
}

impl Call {
    /// Records the answer in the org's counters and adds the credits header.
    fn finish(&self, status: StatusCode, body: Option<Value>) -> Response {
        let now = self.sim.clock.now();
        let remaining = {
            let mut st = lock(&self.org.state);
            *st.stats.by_status.entry(status.as_u16()).or_default() += 1;
            credits_remaining(&self.org, &mut st, now)
        };
        let mut resp = respond(status, body);
        if let Some(r) = remaining {
            resp.headers_mut().insert(CREDITS_HEADER, HeaderValue::from(r));
        }
        resp
    }

    /// Answers a request that is not served (a top-level error), after the latency.
    async fn reject(&self, status: StatusCode, body: Value) -> Response {
        faults::pause(self.delay).await;
        self.finish(status, Some(body))
    }

    /// Runs an operation under the concurrency and credit limits.
    async fn limited(
        &self,
        cost: u64,
        complex: bool,
        op: impl FnOnce(&mut OrgState, &str) -> (StatusCode, Option<Value>),
    ) -> Response {
        let (guard, allowed) = InFlight::enter(&self.org, complex);
        if !allowed {
            drop(guard);
            lock(&self.org.state).stats.rejected_429 += 1;
            faults::pause(self.delay).await;
            return self.finish(StatusCode::TOO_MANY_REQUESTS, Some(too_many_requests()));
        }
        faults::pause(self.delay).await;
        let (status, body) = {
            let now = self.sim.clock.now();
            let mut st = lock(&self.org.state);
            let used = st.credits.used(now);
            if self.org.cfg.limits && used + cost > self.org.cfg.daily_credits {
                st.stats.rejected_429 += 1;
                (StatusCode::TOO_MANY_REQUESTS, Some(too_many_requests()))
            } else {
                st.credits.charge(now, cost);
                let stamp = self.sim.clock.rfc3339_now();
                op(&mut st, &stamp)
            }
        };
        let resp = self.finish(status, body);
        drop(guard);
        resp
    }
}

fn credits_remaining(org: &Org, st: &mut OrgState, now: f64) -> Option<u64> {
    if !org.cfg.limits {
        return None;
    }
    let daily = org.cfg.daily_credits;
    let used = st.credits.used(now);
    (used.saturating_mul(2) >= daily).then(|| daily.saturating_sub(used))
}

/// Counts a request in flight for as long as it lives (also when the client hangs up).
struct InFlight {
    org: Arc<Org>,
    complex: bool,
}

impl InFlight {
    fn enter(org: &Arc<Org>, complex: bool) -> (InFlight, bool) {
        let mut st = lock(&org.state);
        st.in_flight += 1;
        st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
        if complex {
            st.complex_in_flight += 1;
        }
        let allowed = !org.cfg.limits
            || (st.in_flight <= org.cfg.concurrency && (!complex || st.complex_in_flight <= MAX_COMPLEX));
        let guard = InFlight {
            org: org.clone(),
            complex,
        };
        (guard, allowed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.org.state);
        st.in_flight = st.in_flight.saturating_sub(1);
        if self.complex {
            st.complex_in_flight = st.complex_in_flight.saturating_sub(1);
        }
    }
}

/// Steps 1–3: latency draw, routing, authentication, faults.
async fn begin(sim: Arc<Sim>, path: ApiPath, headers: &HeaderMap, module_wanted: &str) -> Result<Call, Response> {
    let delay = sim.latency.draw();
    let unrouted = || {
        respond(
            StatusCode::NOT_FOUND,
            Some(error_body(
                "INVALID_URL_PATTERN",
                json!({}),
                "Please check if the URL trying to access is a correct one",
            )),
        )
    };
    let Ok(Path((dc, version, module))) = path else {
        faults::pause(delay).await;
        return Err(unrouted());
    };
    if !ZOHO_DCS.contains(&dc.as_str()) || !matches!(version.as_str(), "v6" | "v8") {
        faults::pause(delay).await;
        return Err(unrouted());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        faults::pause(delay).await;
        return Err(respond(
            StatusCode::UNAUTHORIZED,
            Some(error_body("AUTHENTICATION_FAILURE", json!({}), "Authentication failed")),
        ));
    };
    let checked = sim.zoho.accounts.check(token, &dc, sim.clock.now());
    let org = checked
        .as_ref()
        .ok()
        .and_then(|org_id| sim.zoho.orgs.get(org_id).cloned());
    let Some(org) = org else {
        // A token issued to a known org (expired, invalidated, another DC's) counts the 401
        // in that org's statistics, so tests can see refusals.
        if let Err(TokenError::Invalid { org_id: Some(org_id) }) = &checked
            && let Some(o) = sim.zoho.orgs.get(org_id)
        {
            *lock(&o.state).stats.by_status.entry(401).or_default() += 1;
        }
        faults::pause(delay).await;
        return Err(respond(
            StatusCode::UNAUTHORIZED,
            Some(error_body("INVALID_TOKEN", json!({}), "invalid oauth token")),
        ));
    };
    lock(&org.state).stats.arrived(std::time::Instant::now());
    let call = Call { sim, org, delay };
    if !module.eq_ignore_ascii_case(module_wanted) {
        return Err(call
            .reject(
                StatusCode::BAD_REQUEST,
                error_body(
                    "INVALID_MODULE",
                    json!({"resource_path_index": 0}),
                    "the module name given seems to be invalid",
                ),
            )
            .await);
    }
    let roll = call.org.faults.roll();
    if let Some(fault) = faults::zoho_fault(&call.sim.cfg.faults, roll) {
        lock(&call.org.state).stats.faults_injected += 1;
        let (status, body) = match fault {
            ZohoFault::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, too_many_requests()),
            ZohoFault::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body("INTERNAL_ERROR", json!({}), "Internal server error occurred."),
            ),
            ZohoFault::Timeout => {
                faults::pause(Duration::from_millis(call.sim.cfg.faults.timeout_ms)).await;
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    error_body(
                        "GATEWAY_TIMEOUT",
                        json!({}),
                        "The upstream server did not answer in time.",
                    ),
                )
            }
        };
        return Err(call.reject(status, body).await);
    }
    Ok(call)
}

/// HTTP status of a batch: 200 all succeeded, 400 all failed, 207 mixed.
fn batch_status(items: &[ItemResult]) -> StatusCode {
    let ok = items.iter().filter(|r| r.is_ok()).count();
    if ok == items.len() {
        StatusCode::OK
    } else if ok == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::MULTI_STATUS
    }
}

fn batch_body(items: Vec<ItemResult>) -> Value {
    let data: Vec<Value> = items.into_iter().map(|r| r.unwrap_or_else(|e| e)).collect();
    json!({ "data": data })
}

fn limit_exceeded() -> Value {
    error_body("LIMIT_EXCEEDED", json!({"limit": MAX_RECORDS}), "Record count exceeded")
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    parse_urlencoded(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The parts of an upsert or update body the simulator uses.
struct WriteBody {
    data: Vec<Value>,
    doc: Value,
    /// `trigger: []` runs no workflows; without it (or with any trigger) they all run.
    runs_workflows: bool,
}

/// Parses the `{"data":[...],"trigger":[]}` body of an upsert or update; a top-level error
/// (not JSON, no or empty `data`, more than 100 records) is answered, uncharged.
async fn write_body(call: &Call, body: &[u8]) -> Result<WriteBody, Response> {
    let invalid_body = |details: Value, message: &str| error_body("INVALID_DATA", details, message);
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return Err(call
            .reject(
                StatusCode::BAD_REQUEST,
                invalid_body(json!({}), "the request body is not valid JSON"),
            )
            .await);
    };
    let data = match doc.get("data") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        _ => {
            return Err(call
                .reject(
                    StatusCode::BAD_REQUEST,
                    invalid_body(
                        json!({"api_name": "data", "expected_data_type": "jsonarray"}),
                        "invalid data",
                    ),
                )
                .await);
        }
    };
    if data.len() > MAX_RECORDS {
        return Err(call.reject(StatusCode::BAD_REQUEST, limit_exceeded()).await);
    }
    let runs_workflows = !matches!(doc.get("trigger"), Some(Value::Array(a)) if a.is_empty());
    Ok(WriteBody {
        data,
        doc,
        runs_workflows,
    })
}

/// `POST {api}/crm/{v6|v8}/Contacts/upsert`
pub async fn upsert(State(sim): State<Arc<Sim>>, path: ApiPath, headers: HeaderMap, body: Bytes) -> Response {
    let call = match begin(sim, path, &headers, "Contacts").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let WriteBody {
        data,
        doc,
        runs_workflows,
    } = match write_body(&call, &body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let duplicate_check_fields: Vec<String> = match doc.get("duplicate_check_fields") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(|v| v.as_str().map(String::from)).collect()
        }
        Some(_) => {
            return call
                .reject(
                    StatusCode::BAD_REQUEST,
                    error_body(
                        "INVALID_DATA",
                        json!({"api_name": "duplicate_check_fields", "expected_data_type": "jsonarray"}),
                        "invalid data",
                    ),
                )
                .await;
        }
    };
    let n = data.len();
    call.limited(upsert_cost(n), n > COMPLEX_RECORDS, |st, now| {
        let items = st.records.upsert(&data, &duplicate_check_fields, now);
        st.stats.upsert += 1;
        st.stats.records_upserted += n as u64;
        if runs_workflows {
            st.stats.workflows_triggered += 1;
        }
        (batch_status(&items), Some(batch_body(items)))
    })
    .await
}

/// `PUT {api}/crm/{v6|v8}/Contacts` — update records by id. Same limits, costs and statuses
/// as upsert.
pub async fn update(State(sim): State<Arc<Sim>>, path: ApiPath, headers: HeaderMap, body: Bytes) -> Response {
    let call = match begin(sim, path, &headers, "Contacts").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let WriteBody {
        data, runs_workflows, ..
    } = match write_body(&call, &body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let n = data.len();
    call.limited(upsert_cost(n), n > COMPLEX_RECORDS, |st, now| {
        let items = st.records.update(&data, now);
        st.stats.update += 1;
        st.stats.records_updated += n as u64;
        if runs_workflows {
            st.stats.workflows_triggered += 1;
        }
        (batch_status(&items), Some(batch_body(items)))
    })
    .await
}

/// `DELETE {api}/crm/{v6|v8}/Contacts?ids=a,b,c`
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    path: ApiPath,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let call = match begin(sim, path, &headers, "Contacts").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let ids: Vec<String> = query_param(query.as_deref(), "ids")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return call
            .reject(
                StatusCode::BAD_REQUEST,
                error_body(
                    "REQUIRED_PARAM_MISSING",
                    json!({"param": "ids"}),
                    "One of the expected parameter is missing",
                ),
            )
            .await;
    }
    if ids.len() > MAX_RECORDS {
        return call.reject(StatusCode::BAD_REQUEST, limit_exceeded()).await;
    }
    call.limited(DELETE_COST, false, |st, _now| {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let items = st.records.delete(&refs);
        st.stats.delete += 1;
        (batch_status(&items), Some(batch_body(items)))
    })
    .await
}

/// `GET {api}/crm/{v6|v8}/Contacts/search?email=x`
pub async fn search(
    State(sim): State<Arc<Sim>>,
    path: ApiPath,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let call = match begin(sim, path, &headers, "Contacts").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Some(email) = query_param(query.as_deref(), "email").filter(|e| !e.is_empty()) else {
        return call
            .reject(
                StatusCode::BAD_REQUEST,
                error_body(
                    "REQUIRED_PARAM_MISSING",
                    json!({"param": "email"}),
                    "One of the expected parameter is missing",
                ),
            )
            .await;
    };
    call.limited(SEARCH_COST, false, |st, _now| {
        st.stats.search += 1;
        match st.records.find_by_email(&email) {
            Some(rec) => (
                StatusCode::OK,
                Some(json!({
                    "data": [rec.to_json()],
                    "info": {"per_page": 200, "count": 1, "page": 1, "more_records": false},
                })),
            ),
            None => (StatusCode::NO_CONTENT, None),
        }
    })
    .await
}

/// `GET {api}/crm/{v6|v8}/{module}`: `org` is the org probe ([`org`]); any other module is
/// Get Records ([`get_records`]; only `Contacts` exists, others are `INVALID_MODULE`).
pub async fn get_module(
    State(sim): State<Arc<Sim>>,
    path: ApiPath,
    headers: HeaderMap,
    raw_query: RawQuery,
) -> Response {
    let is_org = matches!(&path, Ok(Path((_, _, module))) if module.eq_ignore_ascii_case("org"));
    if is_org {
        org(State(sim), path, headers).await
    } else {
        get_records(State(sim), path, headers, raw_query).await
    }
}

/// `GET {api}/crm/{v6|v8}/Contacts?fields=..[&per_page=&page=|&page_token=][&sort_by=&sort_order=][&ids=]`:
/// Get Records, 1 credit per call (see [`list`] for the parameters and errors). An empty
/// page is 204 No Content (charged too).
pub async fn get_records(
    State(sim): State<Arc<Sim>>,
    path: ApiPath,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let call = match begin(sim, path, &headers, "Contacts").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let params = parse_urlencoded(query.as_deref().unwrap_or(""));
    let req = match list::parse_request("Contacts", &params) {
        Ok(r) => r,
        Err(body) => return call.reject(StatusCode::BAD_REQUEST, body).await,
    };
    let key = call.org.page_token_key;
    let token = match &req.page_token {
        None => None,
        Some(text) => match list::check_token(&req, text, key, sim_ms(&call.sim)) {
            Ok(t) => Some(t),
            Err(body) => return call.reject(StatusCode::BAD_REQUEST, body).await,
        },
    };
    let sim = call.sim.clone();
    call.limited(GET_RECORDS_COST, false, move |st, _now| {
        st.stats.list += 1;
        let clock = TokenClock {
            now_ms: sim_ms(&sim),
            expiry: rfc3339(sim.clock.unix_now() as i64 + list::PAGE_TOKEN_LIFETIME_SECS as i64),
        };
        let (body, served) = list::answer(&st.records, &req, token, key, &clock);
        st.stats.records_listed += served as u64;
        match body {
            Some(b) => (StatusCode::OK, Some(b)),
            None => (StatusCode::NO_CONTENT, None),
        }
    })
    .await
}

/// Simulated milliseconds since the simulator started.
fn sim_ms(sim: &Sim) -> u64 {
    (sim.clock.now() * 1000.0) as u64
}

/// `GET /crm/v{6,8}/org`: the organization (1 credit, like any get). crmsync reads it only for
/// the usage header it answers with.
pub async fn org(State(sim): State<Arc<Sim>>, path: ApiPath, headers: HeaderMap) -> Response {
    let call = match begin(sim, path, &headers, "org").await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let org_id = call.org.cfg.org_id.clone();
    call.limited(SEARCH_COST, false, move |st, _now| {
        st.stats.org += 1;
        (
            StatusCode::OK,
            Some(json!({"org": [{
                "id": org_id,
                "zgid": org_id,
                "company_name": format!("{org_id} Inc."),
                "license_details": {"paid": true, "paid_type": "enterprise", "users_license_purchased": 10},
            }]})),
        )
    })
    .await
}
