//! Inspection endpoints under `/_sim/` (no auth), for tests, the demo and benchmarks.
//!
//! - `GET /_sim/health` → `200 ok`
//! - `GET /_sim/config` → the effective configuration (defaults filled in)
//! - `GET /_sim/orgs/{org_id}` → records (sorted by Email), credits, call counters;
//!   `?records=false` leaves the records out
//! - `GET /_sim/nylas/{grant_id}` → the grant's counters (calls, live contacts, mutations by kind)
//! - `GET /_sim/nylas/{grant_id}/contacts` → the whole address book as it is now
//!
//! Elsewhere: `GET /_sim/salesforce/{org_id}` (see [`crate::salesforce`]), the hooks that
//! change state (`/_sim/nylas/{grant_id}/mutations` and `/contacts/{id}`, `/_sim/orgs/{org_id}/spend`,
//! `/_sim/salesforce/{org_id}/...`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::Sim;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/_sim/config", get(config))
        .route("/_sim/orgs/{org_id}", get(org))
        .route("/_sim/nylas/{grant_id}", get(grant))
        .route("/_sim/nylas/{grant_id}/contacts", get(contacts))
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("{what} not found")})),
    )
        .into_response()
}

async fn config(State(sim): State<Arc<Sim>>) -> Response {
    Json(serde_json::to_value(&sim.cfg).unwrap_or(Value::Null)).into_response()
}

async fn org(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(org_id)) = path else {
        return not_found("org");
    };
    let with_records = !query.unwrap_or_default().split('&').any(|p| p == "records=false");
    match sim.inspect_org(&org_id, with_records) {
        Some(doc) => Json(doc).into_response(),
        None => not_found(&format!("org `{org_id}`")),
    }
}

async fn grant(State(sim): State<Arc<Sim>>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(grant_id)) = path else {
        return not_found("grant");
    };
    match sim.nylas.grants.get(&grant_id) {
        Some(g) => Json(g.inspect()).into_response(),
        None => not_found(&format!("grant `{grant_id}`")),
    }
}

async fn contacts(State(sim): State<Arc<Sim>>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(grant_id)) = path else {
        return not_found("grant");
    };
    let Some(g) = sim.nylas.grants.get(&grant_id) else {
        return not_found(&format!("grant `{grant_id}`"));
    };
    let book = match g.book.read() {
        Ok(b) => b.contacts().cloned().collect(),
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "address book unavailable").into_response(),
    };
    Json(Value::Array(book)).into_response()
}
