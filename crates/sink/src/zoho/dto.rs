//! Zoho's answers, read by hand into the seam's types (private to this folder).

use crmsync_domain::CrmRecord;
use serde_json::Value;

use super::retry::ZohoError;
use crate::{CrmSide, Outcome, clean, key_email, text_field};

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

/// Whether `token` can be a Zoho page token, as given and as taken back: 1 to 1,024 visible
/// ASCII characters (Zoho's are about 60 URL-safe ones).
pub(crate) fn is_page_token(token: &str) -> bool {
    (1..=1024).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// A record id as Zoho gives it (a string of digits; a number is taken too).
fn record_id(v: &Value) -> Option<String> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_u64()?.to_string(),
        _ => return None,
    };
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

/// One page of Get Records: the records crmsync keeps (those with an Email; crmsync never
/// writes one without) and the next page's token (when `info.more_records`). A 204 (nothing
/// there, or past the end) is an empty last page.
pub(crate) fn parse_list(status: u16, body: &[u8]) -> Result<(Vec<CrmSide>, Option<String>), ZohoError> {
    if status == 204 || body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), None));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| ZohoError::Decode(format!("{status}: {e}")))?;
    let data = v["data"]
        .as_array()
        .ok_or_else(|| ZohoError::Decode(format!("{status}: no `data` array")))?;
    let mut records = Vec::with_capacity(data.len());
    for d in data {
        let rid = record_id(&d["id"]).ok_or_else(|| ZohoError::Decode("a record without a readable id".into()))?;
        let Some(email) = d["Email"].as_str().map(key_email).filter(|e| !e.is_empty()) else {
            continue;
        };
        // A lookup field in Zoho's answers (`{"name","id"}`); text as crmsync writes it.
        let company = match &d["Account_Name"] {
            Value::Object(account) => account.get("name").and_then(text_field),
            other => text_field(other),
        };
        records.push(CrmSide {
            rid,
            key: email.clone(),
            record: CrmRecord {
                first_name: text_field(&d["First_Name"]),
                last_name: d["Last_Name"].as_str().unwrap_or_default().to_owned(),
                email,
                phone: text_field(&d["Phone"]),
                company,
                title: text_field(&d["Title"]),
            },
        });
    }
    let next = if v["info"]["more_records"] == true {
        let token = v["info"]["next_page_token"]
            .as_str()
            .filter(|t| is_page_token(t))
            .ok_or_else(|| ZohoError::Decode("more records without a usable next_page_token".into()))?;
        Some(token.to_owned())
    } else {
        None
    };
    Ok((records, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(first: Option<&str>, last: &str, email: &str, phone: Option<&str>, company: Option<&str>) -> CrmRecord {
        CrmRecord {
            first_name: first.map(str::to_owned),
            last_name: last.into(),
            email: email.into(),
            phone: phone.map(str::to_owned),
            company: company.map(str::to_owned),
            title: None,
        }
    }

    #[test]
    fn a_page_of_records_reads_as_the_crm_holds_them() {
        let body = br#"{"data":[
            {"Email":"Ada@Example.com ","First_Name":"Ada","Last_Name":"Lovelace","Phone":"+44 1","Account_Name":"Engines","Title":null,"id":"4150868000000001"},
            {"Email":"bob@example.com","First_Name":null,"Last_Name":"Byron","Phone":"","Account_Name":{"name":"Analytical Ltd","id":"4150868000000999"},"Title":"","id":"4150868000000002"},
            {"Email":"cy@example.com","Last_Name":null,"Account_Name":{"name":null,"id":"9"},"id":4150868000000003},
            {"Email":null,"Last_Name":"Someone Else's","id":"4150868000000004"},
            {"Email":"  ","Last_Name":"Blank","id":"4150868000000005"},
            {"Last_Name":"No Email Field","id":"4150868000000006"}],
            "info":{"per_page":200,"next_page_token":"c8582e7a","count":6,"page":1,"more_records":true}}"#;
        let (records, next) = parse_list(200, body).expect("page");
        assert_eq!(next.as_deref(), Some("c8582e7a"));
        assert_eq!(
            records,
            vec![
                CrmSide {
                    rid: "4150868000000001".into(),
                    key: "ada@example.com".into(),
                    record: rec(
                        Some("Ada"),
                        "Lovelace",
                        "ada@example.com",
                        Some("+44 1"),
                        Some("Engines")
                    ),
                },
                CrmSide {
                    rid: "4150868000000002".into(),
                    key: "bob@example.com".into(),
                    record: rec(None, "Byron", "bob@example.com", None, Some("Analytical Ltd")),
                },
                CrmSide {
                    rid: "4150868000000003".into(),
                    key: "cy@example.com".into(),
                    record: rec(None, "", "cy@example.com", None, None),
                },
            ],
            "records without an Email are not crmsync's: skipped"
        );
    }

    #[test]
    fn the_last_page_and_an_empty_module_end_the_read() {
        let last = br#"{"data":[{"Email":"a@b.co","Last_Name":"A","id":"1"}],"info":{"next_page_token":null,"more_records":false}}"#;
        let (records, next) = parse_list(200, last).expect("page");
        assert_eq!((records.len(), next), (1, None));
        assert_eq!(parse_list(204, b"").expect("204"), (vec![], None));
        assert_eq!(parse_list(200, b"").expect("empty body"), (vec![], None));
        for bad in [
            &br#"{"info":{}}"#[..],
            br#"{"data":[{"Email":"a@b.co","Last_Name":"A"}],"info":{}}"#,
            br#"{"data":[{"Email":"a@b.co","Last_Name":"A","id":"../1"}],"info":{}}"#,
            br#"{"data":[],"info":{"more_records":true,"next_page_token":null}}"#,
            br#"{"data":[],"info":{"more_records":true,"next_page_token":"a b"}}"#,
            b"<html>",
        ] {
            assert!(
                matches!(parse_list(200, bad), Err(ZohoError::Decode(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

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
