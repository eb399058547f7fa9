//! Zoho's answers, read by hand into the seam's types (private to this folder).

use serde_json::Value;

use super::retry::ZohoError;
use crate::{Outcome, clean};

/// The outcome of deleting one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeleteResult {
    Deleted { id: String },
    Rejected { id: String, code: String, message: String },
}

pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok()?["code"]
        .as_str()
        .map(str::to_owned)
}

fn items(status: u16, body: &[u8], expected: usize) -> Result<Vec<Value>, ZohoError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ZohoError::Decode(format!("{status}: {e}")))?;
    let data = v["data"]
        .as_array()
        .cloned()
        .ok_or_else(|| ZohoError::Decode(format!("{status}: no `data` array")))?;
    if data.len() != expected {
        return Err(ZohoError::Decode(format!(
            "{} results for {expected} records",
            data.len()
        )));
    }
    Ok(data)
}

/// Per-record results of an upsert or update, in request order.
pub(crate) fn parse_upsert(status: u16, body: &[u8], expected: usize) -> Result<Vec<Outcome>, ZohoError> {
    Ok(items(status, body, expected)?
        .iter()
        .map(|d| {
            let id = clean(d["details"]["id"].as_str().unwrap_or(""), 64);
            if d["status"] == "success" {
                Outcome::Written {
                    rid: id,
                    inserted: d["action"] != "update",
                }
            } else {
                Outcome::Rejected {
                    code: clean(d["code"].as_str().unwrap_or("UNKNOWN"), 64),
                    field: d["details"]["api_name"].as_str().map(|f| clean(f, 64)),
                    message: clean(d["message"].as_str().unwrap_or(""), 300),
                }
            }
        })
        .collect())
}

pub(crate) fn parse_delete(status: u16, body: &[u8], ids: &[String]) -> Result<Vec<DeleteResult>, ZohoError> {
    Ok(items(status, body, ids.len())?
        .iter()
        .zip(ids)
        .map(|(d, sent)| {
            let id = d["details"]["id"].as_str().unwrap_or(sent).to_owned();
            if d["status"] == "success" {
                DeleteResult::Deleted { id }
            } else {
                DeleteResult::Rejected {
                    id,
                    code: clean(d["code"].as_str().unwrap_or("UNKNOWN"), 64),
                    message: clean(d["message"].as_str().unwrap_or(""), 300),
                }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_upsert_results_in_request_order() {
        let body = br#"{"data":[
            {"code":"SUCCESS","duplicate_field":null,"action":"insert","details":{"id":"1"},"message":"record added","status":"success"},
            {"code":"MANDATORY_NOT_FOUND","details":{"api_name":"Last_Name","json_path":"$.data[1].Last_Name"},"message":"required field not found","status":"error"},
            {"code":"SUCCESS","duplicate_field":"Email","action":"update","details":{"id":"3"},"message":"record updated","status":"success"}]}"#;
        let r = parse_upsert(207, body, 3).expect("parsed");
        assert_eq!(
            r[0],
            Outcome::Written {
                rid: "1".into(),
                inserted: true
            }
        );
        assert_eq!(
            r[1],
            Outcome::Rejected {
                code: "MANDATORY_NOT_FOUND".into(),
                field: Some("Last_Name".into()),
                message: "required field not found".into()
            }
        );
        assert_eq!(
            r[2],
            Outcome::Written {
                rid: "3".into(),
                inserted: false
            }
        );
        assert!(
            parse_upsert(200, body, 2).is_err(),
            "a count mismatch is an error, never a silent skip"
        );
    }
}
