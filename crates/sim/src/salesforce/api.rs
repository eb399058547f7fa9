//! The Salesforce REST API of an org's instance, under `/services/data/vNN.N/` (any
//! `v<digits>.<digit>`):
//! - `PATCH composite/sobjects/{Contact|Lead}/{ExtIdField}`: upsert up to 200 records;
//! - `PATCH sobjects/{Contact|Lead}/{ExtIdField}/{value}`: upsert one record;
//! - `DELETE composite/sobjects?ids=a,b&allOrNone=false`: delete up to 200 records;
//! - `GET query?q=<SOQL>` and `GET query/<locator>-<offset>`: SOQL (see [`super::soql`]);
//! - `GET limits`: `DailyApiRequests {Max, Remaining}`.
//!
//! Every request goes through the same steps, in this order:
//! 1. draw the request's latency (applied to every answer);
//! 2. the org and the version must exist (else 404 `NOT_FOUND`);
//! 3. authenticate `Authorization: Bearer <token>`: a missing, unknown, expired or other
//!    org's token is 401 `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`;
//! 4. roll the org's fault dice: an injected fault (500 `UNKNOWN_EXCEPTION`, or a stall of
//!    `timeout_ms` then 503 `SERVER_UNAVAILABLE`) applies and counts nothing;
//! 5. enter the org's in-flight count: over `concurrency` is 403 `REQUEST_LIMIT_EXCEEDED`
//!    `ConcurrentPerOrgLongTxn Limit exceeded` (not counted). Salesforce limits only
//!    requests running 20 s or more this way; the simulator counts every request in flight,
//!    the stricter reading;
//! 6. wait out the latency while in flight;
//! 7. under the org lock: with the window's usage at `daily_requests`, 403
//!    `REQUEST_LIMIT_EXCEEDED` `TotalRequests Limit exceeded.` (not counted); otherwise count
//!    the request (whatever it answers: a 400 counts, as in Salesforce) and serve it.
//!
//! Every answer from step 4 on carries `Sforce-Limit-Info: api-usage=USED/MAX`, USED being
//! the org's requests in the rolling 24 h window (time_scale applies) after this one,
//! other integrations' included. Salesforce sends it on every answer, so it is sent with
//! `limits: false` too (which only lifts the two limits).
//!
//! Answers: errors of a whole request are 400 with an error array
//! `[{"message","errorCode","fields"}]`; collection upserts and deletes answer 200 with one
//! result per record even when every record fails.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::records::{SObject, SfError, UpsertCtx, UpsertOutcome, check_record, sf_datetime};
use super::{SfOrg, SfOrgState, error_array, soql};
use crate::faults::{self, SalesforceFault};
use crate::zoho::accounts::parse_urlencoded;
use crate::{Sim, lock};

/// At most 200 records per collection request.
pub const MAX_RECORDS: usize = 200;

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("sforce-limit-info");
pub const DUPLICATE_RULE_HEADER: &str = "sforce-duplicate-rule-header";

/// The API version from which the single-record upsert answers 200 (not 204) for an update.
const UPDATE_ANSWERS_200_FROM: u32 = 46;

type DataPath<T> = Result<Path<T>, PathRejection>;

fn respond(status: StatusCode, body: Option<Value>) -> Response {
    match body {
        Some(b) => (status, Json(b)).into_response(),
        None => status.into_response(),
    }
}

fn not_found(message: &str) -> Value {
    error_array("NOT_FOUND", message)
}

fn whole(e: &SfError) -> (StatusCode, Value) {
    (StatusCode::BAD_REQUEST, Value::Array(vec![e.error_json()]))
}

/// `v<digits>.<digit>`; the major version.
fn version_major(v: &str) -> Option<u32> {
    let (major, minor) = v.strip_prefix('v')?.split_once('.')?;
    let ok = !major.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.len() == 1
        && minor.bytes().all(|b| b.is_ascii_digit());
    if ok { major.parse().ok() } else { None }
}

/// Operations, as the inspection counts them.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Upsert,
    SingleUpsert,
    Delete,
    Query,
    Limits,
}

/// Records the answer in the org's counters and adds `Sforce-Limit-Info`.
fn finish(org: &SfOrg, st: &mut SfOrgState, now: f64, status: StatusCode, body: Option<Value>) -> Response {
    *st.stats.by_status.entry(status.as_u16()).or_default() += 1;
    let used = st.usage.used(now);
    let mut resp = respond(status, body);
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{}", org.cfg.daily_requests)) {
        resp.headers_mut().insert(LIMIT_HEADER, v);
    }
    resp
}

/// Counts a request in flight for as long as it lives (also when the client hangs up).
struct InFlight {
    org: Arc<SfOrg>,
}

impl InFlight {
    fn enter(org: &Arc<SfOrg>) -> (InFlight, bool) {
        let mut st = lock(&org.state);
        st.in_flight += 1;
        st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
        let allowed = !org.cfg.limits || st.in_flight <= org.cfg.concurrency;
        (InFlight { org: org.clone() }, allowed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.org.state);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

/// An authenticated request, in flight.
struct Call {
    sim: Arc<Sim>,
    org: Arc<SfOrg>,
    version: String,
    major: u32,
    _flight: InFlight,
}

impl Call {
    /// Step 7: the daily limit, then counts the request and runs `op` under the org lock.
    fn serve(&self, kind: Kind, op: impl FnOnce(&mut SfOrgState) -> (StatusCode, Option<Value>)) -> Response {
        let now = self.sim.clock.now();
        let mut st = lock(&self.org.state);
        let (status, body) = if self.org.cfg.limits && st.usage.used(now) >= self.org.cfg.daily_requests {
            st.stats.rejected_limit += 1;
            (
                StatusCode::FORBIDDEN,
                Some(error_array("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")),
            )
        } else {
            st.usage.charge(now, 1);
            let s = &mut st.stats;
            match kind {
                Kind::Upsert => s.upsert += 1,
                Kind::SingleUpsert => s.single_upsert += 1,
                Kind::Delete => s.delete += 1,
                Kind::Query => s.query += 1,
                Kind::Limits => s.limits += 1,
            }
            op(&mut st)
        };
        finish(&self.org, &mut st, now, status, body)
    }

    /// `CreatedDate` / `LastModifiedDate` of what this request saves.
    fn stamp(&self) -> String {
        sf_datetime(self.sim.clock.unix_now())
    }
}

/// Steps 1–6.
async fn begin(sim: Arc<Sim>, org_id: &str, version: &str, headers: &HeaderMap) -> Result<Call, Response> {
    let delay = sim.latency.draw();
    let org = sim.salesforce.orgs.get(org_id).cloned();
    let (Some(org), Some(major)) = (org, version_major(version)) else {
        faults::pause(delay).await;
        return Err(respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let now = sim.clock.now();
    if !token.is_some_and(|t| sim.salesforce.sessions.check(t, org_id, now)) {
        *lock(&org.state).stats.by_status.entry(401).or_default() += 1;
        faults::pause(delay).await;
        return Err(respond(
            StatusCode::UNAUTHORIZED,
            Some(error_array("INVALID_SESSION_ID", "Session expired or invalid")),
        ));
    }
    let roll = org.faults.roll();
    if let Some(fault) = faults::salesforce_fault(&sim.cfg.faults, roll) {
        lock(&org.state).stats.faults_injected += 1;
        let (status, body) = match fault {
            SalesforceFault::Internal => {
                faults::pause(delay).await;
                let error_id = (roll * 1e9) as u64;
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_array(
                        "UNKNOWN_EXCEPTION",
                        &format!(
                            "An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}-{} (-{error_id})",
                            error_id % 100_000
                        ),
                    ),
                )
            }
            SalesforceFault::Timeout => {
                faults::pause(Duration::from_millis(sim.cfg.faults.timeout_ms)).await;
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    error_array(
                        "SERVER_UNAVAILABLE",
                        "The server is temporarily unable to serve the request. Please try again later.",
                    ),
                )
            }
        };
        let now = sim.clock.now();
        let mut st = lock(&org.state);
        return Err(finish(&org, &mut st, now, status, Some(body)));
    }
    let (flight, allowed) = InFlight::enter(&org);
    if !allowed {
        drop(flight);
        lock(&org.state).stats.rejected_concurrency += 1;
        faults::pause(delay).await;
        let now = sim.clock.now();
        let mut st = lock(&org.state);
        return Err(finish(
            &org,
            &mut st,
            now,
            StatusCode::FORBIDDEN,
            Some(error_array(
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded",
            )),
        ));
    }
    faults::pause(delay).await;
    Ok(Call {
        sim,
        org,
        version: version.to_string(),
        major,
        _flight: flight,
    })
}

/// `Sforce-Duplicate-Rule-Header: allowSave=true` (directives separated by `;` or `,`).
fn allow_save(headers: &HeaderMap) -> bool {
    headers
        .get_all(DUPLICATE_RULE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([';', ',']))
        .filter_map(|d| d.split_once('='))
        .any(|(k, v)| k.trim().eq_ignore_ascii_case("allowSave") && v.trim().eq_ignore_ascii_case("true"))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    parse_urlencoded(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The object and external-id field of an upsert URL; 404 when either is not one.
fn upsert_target(org: &SfOrg, sobject: &str, field: &str) -> Result<SObject, (StatusCode, Value)> {
    let object = SObject::parse(sobject).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            not_found(&format!(
                "The requested resource does not exist: sObject type '{sobject}'"
            )),
        )
    })?;
    if !object.has_ext_id() || !field.eq_ignore_ascii_case(&org.cfg.ext_id_field) {
        return Err((
            StatusCode::NOT_FOUND,
            not_found(&format!(
                "Provided external ID field does not exist or is not accessible: {field}"
            )),
        ));
    }
    Ok(object)
}

/// A collection upsert body: `{"allOrNone": bool, "records": [...]}`.
struct Collection {
    object: SObject,
    records: Vec<Map<String, Value>>,
    all_or_none: bool,
}

fn parse_collection(org: &SfOrg, sobject: &str, field: &str, body: &[u8]) -> Result<Collection, (StatusCode, Value)> {
    let object = upsert_target(org, sobject, field)?;
    let parser_error = |m: String| whole(&SfError::new("JSON_PARSER_ERROR", m, &[]));
    let doc: Value = serde_json::from_slice(body).map_err(|e| parser_error(format!("Unexpected character: {e}")))?;
    let Some(map) = doc.as_object() else {
        return Err(parser_error(
            "Cannot deserialize the request body: expected an object".into(),
        ));
    };
    let all_or_none = match map.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(parser_error(format!("Cannot deserialize allOrNone from {other}"))),
    };
    let Some(Value::Array(records)) = map.get("records") else {
        return Err(parser_error("records must be an array of sObjects".into()));
    };
    if records.len() > MAX_RECORDS {
        return Err(whole(&SfError::new(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
            &[],
        )));
    }
    let records = records
        .iter()
        .map(|r| check_record(object, &org.cfg.ext_id_field, r, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| whole(&e))?;
    Ok(Collection {
        object,
        records,
        all_or_none,
    })
}

fn count_upserts(st: &mut SfOrgState, out: &UpsertOutcome, sent: usize) {
    let s = &mut st.stats;
    s.records_upserted += sent as u64;
    s.records_created += out.created;
    s.records_updated += out.updated;
    s.records_failed += out.failed;
    s.duplicates_blocked += out.duplicates_blocked;
}

/// `PATCH {instance}/services/data/vNN.N/composite/sobjects/{sobject}/{field}`
pub async fn upsert_collection(
    State(sim): State<Arc<Sim>>,
    path: DataPath<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path((org_id, version, sobject, field))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let parsed = parse_collection(&call.org, &sobject, &field, &body);
    let allow_save = allow_save(&headers);
    let now = call.stamp();
    call.serve(Kind::Upsert, |st| {
        let c = match parsed {
            Ok(c) => c,
            Err((status, body)) => return (status, Some(body)),
        };
        let ctx = UpsertCtx {
            object: c.object,
            rule: call.org.cfg.duplicate_rule,
            allow_save,
            all_or_none: c.all_or_none,
            now: &now,
            version: &call.version,
        };
        let out = st.store.upsert(&ctx, &c.records);
        count_upserts(st, &out, c.records.len());
        let results: Vec<Value> = out
            .results
            .iter()
            .map(|r| match r {
                Ok((id, created)) => json!({"id": id, "success": true, "errors": [], "created": created}),
                Err(e) => json!({"id": null, "success": false, "errors": [e.status_json()]}),
            })
            .collect();
        (StatusCode::OK, Some(Value::Array(results)))
    })
}

/// `PATCH {instance}/services/data/vNN.N/sobjects/{sobject}/{field}/{value}`: 201 created,
/// 200 updated (204 without a body before v46.0), 400 with an error array.
pub async fn upsert_single(
    State(sim): State<Arc<Sim>>,
    path: DataPath<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Path((org_id, version, sobject, field, value))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let ext_field = call.org.cfg.ext_id_field.clone();
    let parsed = upsert_target(&call.org, &sobject, &field).and_then(|object| {
        let doc: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                whole(&SfError::new(
                    "JSON_PARSER_ERROR",
                    format!("Unexpected character: {e}"),
                    &[],
                ))
            })?
        };
        let mut rec = check_record(object, &ext_field, &doc, false).map_err(|e| whole(&e))?;
        // The value in the URL is the external id, whatever the body says.
        rec.insert(ext_field.clone(), json!(value));
        Ok((object, rec))
    });
    let allow_save = allow_save(&headers);
    let now = call.stamp();
    call.serve(Kind::SingleUpsert, |st| {
        let (object, rec) = match parsed {
            Ok(p) => p,
            Err((status, body)) => return (status, Some(body)),
        };
        let ctx = UpsertCtx {
            object,
            rule: call.org.cfg.duplicate_rule,
            allow_save,
            all_or_none: false,
            now: &now,
            version: &call.version,
        };
        let out = st.store.upsert(&ctx, std::slice::from_ref(&rec));
        count_upserts(st, &out, 1);
        match out.results.into_iter().next() {
            Some(Ok((id, true))) => (
                StatusCode::CREATED,
                Some(json!({"id": id, "success": true, "errors": [], "created": true})),
            ),
            Some(Ok((_, false))) if call.major < UPDATE_ANSWERS_200_FROM => (StatusCode::NO_CONTENT, None),
            Some(Ok((id, false))) => (
                StatusCode::OK,
                Some(json!({"id": id, "success": true, "errors": [], "created": false})),
            ),
            Some(Err(e)) => {
                let (status, body) = whole(&e);
                (status, Some(body))
            }
            None => (StatusCode::INTERNAL_SERVER_ERROR, None),
        }
    })
}

/// `DELETE {instance}/services/data/vNN.N/composite/sobjects?ids=a,b&allOrNone=false`
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    path: DataPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path((org_id, version))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
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
    let all_or_none = query_param(query.as_deref(), "allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    call.serve(Kind::Delete, |st| {
        if ids.is_empty() {
            let (status, body) = whole(&SfError::new("MISSING_ARGUMENT", "ids parameter is required", &["ids"]));
            return (status, Some(body));
        }
        if ids.len() > MAX_RECORDS {
            let (status, body) = whole(&SfError::new(
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
                &[],
            ));
            return (status, Some(body));
        }
        let results: Vec<Value> = st
            .store
            .delete(&ids, all_or_none)
            .into_iter()
            .map(|r| match r {
                Ok(id) => json!({"id": id, "success": true, "errors": []}),
                Err((id, e)) => json!({"id": id, "success": false, "errors": [e.status_json()]}),
            })
            .collect();
        (StatusCode::OK, Some(Value::Array(results)))
    })
}

/// `GET {instance}/services/data/vNN.N/query?q=<SOQL>`
pub async fn query(
    State(sim): State<Arc<Sim>>,
    path: DataPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Ok(Path((org_id, version))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let parsed = match query_param(raw.as_deref(), "q").filter(|q| !q.trim().is_empty()) {
        Some(q) => soql::parse(&q, &call.org.cfg.ext_id_field),
        None => Err(SfError::new(
            "MALFORMED_QUERY",
            "A query string has to be specified",
            &[],
        )),
    };
    let now = call.sim.clock.now();
    let pod = call.org.pod();
    call.serve(Kind::Query, |st| match parsed {
        Err(e) => {
            let (status, body) = whole(&e);
            (status, Some(body))
        }
        Ok(q) => {
            let rows = q.run(&st.store, &call.version);
            let page = st
                .cursors
                .first_page(rows, call.org.cfg.query_page_size, &call.version, &pod, now);
            (StatusCode::OK, Some(page))
        }
    })
}

/// `GET {instance}/services/data/vNN.N/query/<locator>-<offset>` (a `nextRecordsUrl`).
pub async fn query_more(
    State(sim): State<Arc<Sim>>,
    path: DataPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((org_id, version, locator))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let now = call.sim.clock.now();
    call.serve(Kind::Query, |st| {
        match st
            .cursors
            .next_page(&locator, call.org.cfg.query_page_size, &call.version, now)
        {
            Ok(page) => (StatusCode::OK, Some(page)),
            Err(e) => {
                let (status, body) = whole(&e);
                (status, Some(body))
            }
        }
    })
}

/// `GET {instance}/services/data/vNN.N/limits`: `DailyApiRequests` from the window (this
/// request included), and a few fixed limits so the document looks like Salesforce's.
pub async fn limits(State(sim): State<Arc<Sim>>, path: DataPath<(String, String)>, headers: HeaderMap) -> Response {
    let Ok(Path((org_id, version))) = path else {
        return respond(
            StatusCode::NOT_FOUND,
            Some(not_found("The requested resource does not exist")),
        );
    };
    let call = match begin(sim, &org_id, &version, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let now = call.sim.clock.now();
    let max = call.org.cfg.daily_requests;
    call.serve(Kind::Limits, |st| {
        let used = st.usage.used(now);
        (
            StatusCode::OK,
            Some(json!({
                "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200},
                "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
                "DailyAsyncApexExecutions": {"Max": 250_000, "Remaining": 250_000},
                "DailyBulkApiBatches": {"Max": 15_000, "Remaining": 15_000},
                "DataStorageMB": {"Max": 5, "Remaining": 5},
            })),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_v_digits_dot_digit() {
        assert_eq!(version_major("v60.0"), Some(60));
        assert_eq!(version_major("v45.0"), Some(45));
        for bad in ["60.0", "v60", "v60.00", "vx.0", "v.0", "v60.0a"] {
            assert_eq!(version_major(bad), None, "{bad}");
        }
    }

    #[test]
    fn allow_save_reads_the_duplicate_rule_header() {
        let mut h = HeaderMap::new();
        assert!(!allow_save(&h));
        h.insert(
            DUPLICATE_RULE_HEADER,
            HeaderValue::from_static("allowSave = TRUE; runAsCurrentUser=true"),
        );
        assert!(allow_save(&h));
        h.insert(DUPLICATE_RULE_HEADER, HeaderValue::from_static("allowSave=false"));
        assert!(!allow_save(&h));
    }
}
