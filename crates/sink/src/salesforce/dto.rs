//! Salesforce's answers, read by hand into the seam's types (private to this folder). A 2xx
//! that does not read as expected is [`super::retry::decode`]: never a silent skip.

use serde_json::Value;

use super::retry::decode;
use crate::{Outcome, SinkError, clean};

/// Salesforce's per-record error: `statusCode`, `message`, `fields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemError {
    pub code: String,
    pub field: Option<String>,
    pub message: String,
}

impl ItemError {
    pub fn into_outcome(self) -> Outcome {
        Outcome::Rejected {
            code: self.code,
            field: self.field,
            message: self.message,
        }
    }
}

fn results(body: &[u8], expected: usize) -> Result<Vec<Value>, SinkError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| decode(format!("results: {e}")))?;
    let Value::Array(items) = v else {
        return Err(decode("results are not an array"));
    };
    if items.len() != expected {
        return Err(decode(format!("{} results for {expected} records", items.len())));
    }
    Ok(items)
}

fn item_error(item: &Value) -> ItemError {
    let e = &item["errors"][0];
    ItemError {
        code: clean(e["statusCode"].as_str().unwrap_or("UNKNOWN_ERROR"), 64),
        field: e["fields"][0].as_str().map(|f| clean(f, 64)),
        message: clean(e["message"].as_str().unwrap_or(""), 300),
    }
}

/// One record's upsert result: its id and whether it was created, or its error.
pub(crate) type Upserted = Result<(String, bool), ItemError>;

/// Per-record results of a collection upsert, in request order.
pub(crate) fn parse_upsert(body: &[u8], expected: usize) -> Result<Vec<Upserted>, SinkError> {
    results(body, expected)?
        .iter()
        .map(|item| {
            if item["success"] == true {
                let id = item["id"]
                    .as_str()
                    .filter(|id| super::request::is_record_id(id))
                    .ok_or_else(|| decode("a successful upsert without a record id"))?;
                Ok(Ok((id.to_owned(), item["created"] == true)))
            } else {
                Ok(Err(item_error(item)))
            }
        })
        .collect()
}

/// Per-id results of a collection delete, in request order.
pub(crate) fn parse_delete(body: &[u8], expected: usize) -> Result<Vec<Result<(), ItemError>>, SinkError> {
    Ok(results(body, expected)?
        .iter()
        .map(|item| {
            if item["success"] == true {
                Ok(())
            } else {
                Err(item_error(item))
            }
        })
        .collect())
}

/// One page of a query: its rows and the next page's URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    pub records: Vec<Value>,
    pub next: Option<String>,
}

pub(crate) fn parse_page(body: &[u8]) -> Result<Page, SinkError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| decode(format!("query page: {e}")))?;
    let Some(records) = v["records"].as_array() else {
        return Err(decode("a query page without `records`"));
    };
    let next = if v["done"] == false {
        Some(
            v["nextRecordsUrl"]
                .as_str()
                .ok_or_else(|| decode("a query page not done without nextRecordsUrl"))?
                .to_owned(),
        )
    } else {
        None
    };
    Ok(Page {
        records: records.clone(),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_upsert_results_in_request_order() {
        let body = br#"[
            {"id":"003AB0000000001AAA","success":true,"errors":[],"created":true},
            {"id":null,"success":false,"errors":[{"statusCode":"STRING_TOO_LONG","message":"Last Name: data value too large","fields":["LastName"]}]},
            {"id":"00QAB0000000001AAA","success":true,"errors":[],"created":false}]"#;
        let r = parse_upsert(body, 3).expect("parsed");
        assert_eq!(r[0], Ok(("003AB0000000001AAA".into(), true)));
        assert_eq!(
            r[1],
            Err(ItemError {
                code: "STRING_TOO_LONG".into(),
                field: Some("LastName".into()),
                message: "Last Name: data value too large".into()
            })
        );
        assert_eq!(r[2], Ok(("00QAB0000000001AAA".into(), false)));
        let e = parse_upsert(body, 2).expect_err("a count mismatch is an error, never a silent skip");
        assert_eq!(e.code, "SF_DECODE");
        assert!(parse_upsert(br#"{"records":[]}"#, 0).is_err());
        assert!(parse_upsert(br#"[{"id":"../x","success":true}]"#, 1).is_err());
    }

    #[test]
    fn query_pages_say_where_the_next_one_is() {
        let p = parse_page(br#"{"totalSize":3,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01g-2","records":[{"Id":"a"},{"Id":"b"}]}"#)
            .expect("page");
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.next.as_deref(), Some("/services/data/v60.0/query/01g-2"));
        let last = parse_page(br#"{"totalSize":0,"done":true,"records":[]}"#).expect("page");
        assert_eq!(last.next, None);
        assert!(parse_page(br#"{"done":false,"records":[]}"#).is_err());
    }
}
