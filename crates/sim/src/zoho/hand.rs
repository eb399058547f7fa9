//! Changes to an org's Contacts made by hand: another user of the org creating, editing or
//! deleting records in Zoho's UI. They are test hooks, not API calls: no token, no credits,
//! no faults, no latency, and they do not count as crmsync's calls.
//!
//! - create: a record owned by, created and modified by another user ("Sim User"), which
//!   crmsync must never touch; `Last_Name` is required;
//! - edit: sets the given fields (absent ones keep their value, `null` or `""` clears;
//!   `Last_Name` cannot be cleared) and stamps `Modified_Time` now (second resolution, as
//!   Zoho: an edit within the second of the previous change keeps the same time) and
//!   `Modified_By` to that user;
//! - delete: the record is gone from the API (Get Records, search, updates by id).
//!
//! Fields follow the API's rules (lengths, plausible Email); system fields (`id`, `Owner`,
//! `Full_Name`, `Created_*`, `Modified_*`) cannot be set. Email uniqueness is not enforced
//! (as for updates by id): two records may hold one Email, and upsert and search then match
//! the older one (smallest id).
//!
//! HTTP: `POST /_sim/orgs/{org_id}/records` (body: the fields), `PATCH` and `DELETE
//! /_sim/orgs/{org_id}/records/{record_id}`; each answers the record as the inspection shows
//! it (after the create or edit, or as it was before the delete), 404 `{"error"}` for an
//! unknown org or record, 400 `{"error","details"}` for refused fields.

use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::records::{READ_ONLY_FIELDS, validate_fields};
use super::{Org, error_body};
use crate::{Sim, lock};

/// Why a change by hand was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum HandError {
    NoOrg(String),
    NoRecord {
        org_id: String,
        record_id: String,
    },
    /// A field was refused: Zoho's error object (`code`, `details.api_name`, ...).
    Invalid(Value),
}

impl fmt::Display for HandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandError::NoOrg(org_id) => write!(f, "Zoho org `{org_id}` is not configured"),
            HandError::NoRecord { org_id, record_id } => {
                write!(f, "Zoho org `{org_id}` has no record `{record_id}`")
            }
            HandError::Invalid(e) => write!(
                f,
                "{} on `{}`: {}",
                e["code"].as_str().unwrap_or("INVALID_DATA"),
                e["details"]["api_name"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("invalid data"),
            ),
        }
    }
}

impl std::error::Error for HandError {}

/// Checks fields set by hand; returns them or the refusal.
fn check_fields(fields: Map<String, Value>, creating: bool) -> Result<Map<String, Value>, HandError> {
    if let Some(name) = READ_ONLY_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(HandError::Invalid(error_body(
            "INVALID_DATA",
            json!({"api_name": name}),
            "the field is read-only",
        )));
    }
    validate_fields(0, &Value::Object(fields), creating).map_err(|mut e| {
        if let Some(d) = e.get_mut("details").and_then(Value::as_object_mut) {
            d.remove("json_path");
        }
        HandError::Invalid(e)
    })
}

impl Sim {
    fn zoho_org(&self, org_id: &str) -> Result<&Arc<Org>, HandError> {
        self.zoho
            .orgs
            .get(org_id)
            .ok_or_else(|| HandError::NoOrg(org_id.to_string()))
    }

    /// Creates a record by hand; returns it as the inspection shows it.
    pub fn hand_create_zoho_record(&self, org_id: &str, fields: Map<String, Value>) -> Result<Value, HandError> {
        let org = self.zoho_org(org_id)?;
        let fields = check_fields(fields, true)?;
        let mut st = lock(&org.state);
        let now = self.clock.rfc3339_now();
        let id = st.records.create_by_hand(fields, &now);
        st.stats.hand_created += 1;
        Ok(st.records.get(&id).map(|r| r.inspected()).unwrap_or(Value::Null))
    }

    /// Edits a record by hand; returns it as the inspection shows it after the edit.
    pub fn hand_edit_zoho_record(
        &self,
        org_id: &str,
        record_id: &str,
        fields: Map<String, Value>,
    ) -> Result<Value, HandError> {
        let org = self.zoho_org(org_id)?;
        let no_record = || HandError::NoRecord {
            org_id: org_id.to_string(),
            record_id: record_id.to_string(),
        };
        let mut st = lock(&org.state);
        if st.records.get(record_id).is_none() {
            return Err(no_record());
        }
        let fields = check_fields(fields, false)?;
        let now = self.clock.rfc3339_now();
        let rec = st
            .records
            .edit_by_hand(record_id, fields, &now)
            .map(|r| r.inspected())
            .ok_or_else(no_record)?;
        st.stats.hand_edited += 1;
        Ok(rec)
    }

    /// Deletes a record by hand; returns it as the inspection showed it.
    pub fn hand_delete_zoho_record(&self, org_id: &str, record_id: &str) -> Result<Value, HandError> {
        let org = self.zoho_org(org_id)?;
        let mut st = lock(&org.state);
        let rec = st
            .records
            .delete_by_hand(record_id)
            .ok_or_else(|| HandError::NoRecord {
                org_id: org_id.to_string(),
                record_id: record_id.to_string(),
            })?;
        st.stats.hand_deleted += 1;
        Ok(rec.inspected())
    }

    /// Creates a record in a Zoho org as another user would in Zoho's UI (not an API call: no
    /// credits); returns its id. crmsync must never touch it.
    pub fn create_zoho_record(&self, org_id: &str, fields: Map<String, Value>) -> anyhow::Result<String> {
        let rec = self.hand_create_zoho_record(org_id, fields)?;
        Ok(rec["id"].as_str().unwrap_or_default().to_string())
    }

    /// Edits a record of a Zoho org as a user would in Zoho's UI: sets `fields`, stamps
    /// `Modified_Time`; returns the record as the inspection shows it.
    pub fn edit_zoho_record(&self, org_id: &str, record_id: &str, fields: Map<String, Value>) -> anyhow::Result<Value> {
        Ok(self.hand_edit_zoho_record(org_id, record_id, fields)?)
    }

    /// Deletes a record of a Zoho org as a user would in Zoho's UI; returns the record as the
    /// inspection showed it.
    pub fn delete_zoho_record(&self, org_id: &str, record_id: &str) -> anyhow::Result<Value> {
        Ok(self.hand_delete_zoho_record(org_id, record_id)?)
    }
}

/// `/_sim/orgs/{org_id}/records[/{record_id}]`.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/orgs/{org_id}/records", axum::routing::post(create_handler))
        .route(
            "/_sim/orgs/{org_id}/records/{record_id}",
            axum::routing::patch(edit_handler).delete(delete_handler),
        )
}

fn respond(result: Result<Value, HandError>) -> Response {
    match result {
        Ok(rec) => Json(rec).into_response(),
        Err(e @ (HandError::NoOrg(_) | HandError::NoRecord { .. })) => {
            (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(HandError::Invalid(details)) => {
            let message = HandError::Invalid(details.clone()).to_string();
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": message, "details": details})),
            )
                .into_response()
        }
    }
}

/// The JSON object of a hook's body, or the 400 answer.
fn fields_of(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the fields must be a JSON object".into()),
        Err(e) => Err(format!("the fields are not valid JSON: {e}")),
    }
}

fn bad_body(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

fn path_not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "org not found"}))).into_response()
}

/// `POST /_sim/orgs/{org_id}/records` with the fields → the record.
async fn create_handler(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path(org_id)) = path else {
        return path_not_found();
    };
    match fields_of(&body) {
        Ok(fields) => respond(sim.hand_create_zoho_record(&org_id, fields)),
        Err(message) => bad_body(message),
    }
}

/// `PATCH /_sim/orgs/{org_id}/records/{record_id}` with the fields → the record.
async fn edit_handler(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Response {
    let Ok(Path((org_id, record_id))) = path else {
        return path_not_found();
    };
    match fields_of(&body) {
        Ok(fields) => respond(sim.hand_edit_zoho_record(&org_id, &record_id, fields)),
        Err(message) => bad_body(message),
    }
}

/// `DELETE /_sim/orgs/{org_id}/records/{record_id}` → the record as it was.
async fn delete_handler(State(sim): State<Arc<Sim>>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let Ok(Path((org_id, record_id))) = path else {
        return path_not_found();
    };
    respond(sim.hand_delete_zoho_record(&org_id, &record_id))
}
