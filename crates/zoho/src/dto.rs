//! Zoho's JSON, private to this crate.

use crmsync_domain::ZohoContact;
use serde_json::{Value, json};

use crate::error::ZohoError;
use crate::{DeleteResult, RecordResult};

/// The JSON of one Contacts record as crmsync writes it. Absent optional fields are sent as
/// `null`, so the CRM mirrors the address book (a removed phone number is cleared).
pub fn record_json(r: &ZohoContact) -> Value {
    json!({
        "First_Name": r.first_name,
        "Last_Name": r.last_name,
        "Email": r.email,
        "Phone": r.phone,
        "Account_Name": r.account_name,
        "Title": r.title,
    })
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

pub(crate) fn parse_upsert(status: u16, body: &[u8], expected: usize) -> Result<Vec<RecordResult>, ZohoError> {
    Ok(items(status, body, expected)?
        .iter()
        .map(|d| {
            let id = d["details"]["id"].as_str().unwrap_or("").to_owned();
            if d["status"] == "success" {
                if d["action"] == "update" {
                    RecordResult::Updated { id }
                } else {
                    RecordResult::Inserted { id }
                }
            } else {
                RecordResult::Rejected {
                    code: d["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                    field: d["details"]["api_name"].as_str().map(str::to_owned),
                    message: d["message"].as_str().unwrap_or("").to_owned(),
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
                    code: d["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                    message: d["message"].as_str().unwrap_or("").to_owned(),
                }
            }
        })
        .collect())
}

pub(crate) fn parse_search(body: &[u8]) -> Result<Vec<String>, ZohoError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ZohoError::Decode(format!("search: {e}")))?;
    Ok(v["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
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
        assert_eq!(r[0], RecordResult::Inserted { id: "1".into() });
        assert_eq!(
            r[1],
            RecordResult::Rejected {
                code: "MANDATORY_NOT_FOUND".into(),
                field: Some("Last_Name".into()),
                message: "required field not found".into()
            }
        );
        assert_eq!(r[2], RecordResult::Updated { id: "3".into() });
        assert!(
            parse_upsert(200, body, 2).is_err(),
            "a count mismatch is an error, never a silent skip"
        );
    }
}
