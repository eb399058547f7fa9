//! Salesforce calls as requests: what each one sends and what it costs, known before it is
//! sent. Every REST API request counts 1 against the org's daily request allowance, whatever
//! it carries (a 200-record upsert, a query page, `limits`), so every call costs 1 unit.

use serde_json::{Value, json};

use super::MAX_BATCH;
use crate::{Class, Cost, Priority, SinkRequest};

/// The objects crmsync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SfObject {
    Contact,
    Lead,
}

impl SfObject {
    /// The API name.
    pub fn name(self) -> &'static str {
        match self {
            SfObject::Contact => "Contact",
            SfObject::Lead => "Lead",
        }
    }

    /// The object of a record id, by its key prefix (`003` Contact, `00Q` Lead).
    pub fn of_id(id: &str) -> Option<SfObject> {
        if !is_record_id(id) {
            return None;
        }
        match &id[..3] {
            "003" => Some(SfObject::Contact),
            "00Q" => Some(SfObject::Lead),
            _ => None,
        }
    }
}

/// Whether `id` has the form of a Salesforce record id: 15 or 18 letters and digits.
pub fn is_record_id(id: &str) -> bool {
    matches!(id.len(), 15 | 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// What a call does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfOp {
    /// `PATCH /services/data/{v}/composite/sobjects/{Object}/{ExtField}` with
    /// `{"allOrNone": false, "records": [...]}`: up to 200 records (JSON objects without
    /// `attributes`; the call adds them), matched on the external-id field.
    Upsert { object: SfObject, records: Vec<Value> },
    /// `DELETE /services/data/{v}/composite/sobjects?ids=a,b&allOrNone=false`: up to 200 ids.
    Delete { ids: Vec<String> },
    /// `GET /services/data/{v}/query?q=...`.
    Query { soql: String },
    /// `GET {instance}{nextRecordsUrl}`: the next page of a query.
    QueryMore { url: String },
    /// `GET /services/data/{v}/limits`: the org's allowances, for the usage header it answers
    /// with (the limit layer's probe).
    Limits,
}

/// One Salesforce call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfCall {
    pub op: SfOp,
    pub priority: Priority,
}

/// Where and how a call goes, relative to the instance.
pub(crate) struct Http {
    pub method: reqwest::Method,
    /// Either relative to `/services/data/{v}/` (no leading slash) or, for a query's next
    /// page, the absolute path Salesforce gave.
    pub path: Path,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

pub(crate) enum Path {
    Data(String),
    Absolute(String),
}

impl SfCall {
    /// The operation's name, for logs.
    pub fn name(&self) -> &'static str {
        match self.op {
            SfOp::Upsert { .. } => "upsert",
            SfOp::Delete { .. } => "delete",
            SfOp::Query { .. } => "query",
            SfOp::QueryMore { .. } => "query_more",
            SfOp::Limits => "limits",
        }
    }

    /// Records (or ids) in the call: a call of more than [`MAX_BATCH`] is never sent.
    pub fn len(&self) -> usize {
        match &self.op {
            SfOp::Upsert { records, .. } => records.len(),
            SfOp::Delete { ids } => ids.len(),
            SfOp::Query { .. } | SfOp::QueryMore { .. } | SfOp::Limits => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why the call must not be sent, if so: too many records, an id or a next-page URL of
    /// the wrong form (they go into the URL).
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.len() > MAX_BATCH {
            return Err(format!(
                "{} records in one call; Salesforce takes at most {MAX_BATCH}",
                self.len()
            ));
        }
        match &self.op {
            SfOp::Delete { ids } => match ids.iter().find(|id| !is_record_id(id)) {
                Some(bad) => Err(format!("`{}` is not a Salesforce id", crate::clean(bad, 40))),
                None => Ok(()),
            },
            SfOp::QueryMore { url } if !is_next_records_url(url) => Err(format!(
                "nextRecordsUrl `{}` is not a query path",
                crate::clean(url, 120)
            )),
            _ => Ok(()),
        }
    }

    /// Method, path, query and JSON body; `ext_field` is the org's external-id field.
    pub(crate) fn http(&self, ext_field: &str) -> Http {
        let (method, path, query, body) = match &self.op {
            SfOp::Upsert { object, records } => {
                let typed: Vec<Value> = records
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        if let Value::Object(m) = &mut r {
                            m.insert("attributes".into(), json!({"type": object.name()}));
                        }
                        r
                    })
                    .collect();
                (
                    reqwest::Method::PATCH,
                    Path::Data(format!("composite/sobjects/{}/{ext_field}", object.name())),
                    vec![],
                    Some(json!({"allOrNone": false, "records": typed})),
                )
            }
            SfOp::Delete { ids } => (
                reqwest::Method::DELETE,
                Path::Data("composite/sobjects".into()),
                vec![("ids", ids.join(",")), ("allOrNone", "false".into())],
                None,
            ),
            SfOp::Query { soql } => (
                reqwest::Method::GET,
                Path::Data("query".into()),
                vec![("q", soql.clone())],
                None,
            ),
            SfOp::QueryMore { url } => (reqwest::Method::GET, Path::Absolute(url.clone()), vec![], None),
            SfOp::Limits => (reqwest::Method::GET, Path::Data("limits".into()), vec![], None),
        };
        Http {
            method,
            path,
            query,
            body,
        }
    }
}

/// A `nextRecordsUrl` as Salesforce gives it: `/services/data/vNN.N/query/<locator>` (the
/// locator `01g…-2000`), nothing that could leave the instance, climb out of the path or reach
/// another resource. Read cursors carry one too, so this is also what keeps a cursor from
/// naming an arbitrary URL.
pub(crate) fn is_next_records_url(url: &str) -> bool {
    let Some((version, locator)) = url
        .strip_prefix("/services/data/v")
        .and_then(|rest| rest.split_once("/query/"))
    else {
        return false;
    };
    !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !locator.is_empty()
        && locator
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl SinkRequest for SfCall {
    fn cost(&self) -> Cost {
        Cost {
            units: 1,
            class: Class::Plain,
        }
    }

    fn priority(&self) -> Priority {
        self.priority
    }

    fn probe(&self) -> Option<Self> {
        Some(SfCall {
            op: SfOp::Limits,
            priority: self.priority,
        })
    }
}

/// A SOQL string literal: backslashes and single quotes escaped.
pub fn soql_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: SfOp) -> SfCall {
        SfCall {
            op,
            priority: Priority::Backfill,
        }
    }

    #[test]
    fn every_request_costs_one_and_the_probe_reads_limits() {
        let one = Cost {
            units: 1,
            class: Class::Plain,
        };
        for op in [
            SfOp::Upsert {
                object: SfObject::Lead,
                records: vec![json!({}); 200],
            },
            SfOp::Delete {
                ids: vec!["003000000000001AAA".into(); 200],
            },
            SfOp::Query {
                soql: "SELECT Id FROM Account".into(),
            },
            SfOp::Limits,
        ] {
            assert_eq!(call(op).cost(), one);
        }
        let probe = call(SfOp::Query { soql: "x".into() }).probe().expect("probe");
        assert_eq!(probe.op, SfOp::Limits);
        assert_eq!(probe.priority, Priority::Backfill);
    }

    #[test]
    fn calls_are_checked_before_they_are_sent() {
        let upsert = |n| {
            call(SfOp::Upsert {
                object: SfObject::Contact,
                records: vec![json!({}); n],
            })
        };
        assert!(upsert(200).check().is_ok());
        assert!(upsert(201).check().is_err());
        assert!(
            call(SfOp::Delete {
                ids: vec!["003000000000001AAA".into(), "003000000000001,x".into()]
            })
            .check()
            .is_err()
        );
        let next = "/services/data/v60.0/query/01gD0000002HU6KIAW-2000";
        assert!(call(SfOp::QueryMore { url: next.into() }).check().is_ok());
        for bad in [
            "https://evil.example.com/services/data/v60.0/query/x",
            "//evil.example.com/services/data/",
            "/services/data/../../oauth2/token",
            "/services/oauth2/token",
            "/services/data/v60.0/query?q=x",
            "/services/data/v60.0/sobjects/User",
            "/services/data/v60.0/query/",
            "/services/data/v60.0/query/01g/../../limits",
            "/services/data/vx/query/01g-2",
        ] {
            assert!(call(SfOp::QueryMore { url: bad.into() }).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_tell_the_object_and_soql_literals_are_escaped() {
        assert_eq!(SfObject::of_id("003AB0000000001AAA"), Some(SfObject::Contact));
        assert_eq!(SfObject::of_id("00QAB0000000001"), Some(SfObject::Lead));
        assert_eq!(SfObject::of_id("001AB0000000001AAA"), None);
        assert_eq!(SfObject::of_id("003-not-an-id"), None);
        assert_eq!(soql_literal(r"it's a \ test"), r"'it\'s a \\ test'");
        assert_eq!(
            soql_literal("x' OR Id != null OR Id = 'y"),
            r"'x\' OR Id != null OR Id = \'y'"
        );
    }

    #[test]
    fn upserts_are_typed_and_keyed_on_the_external_id() {
        let h = call(SfOp::Upsert {
            object: SfObject::Lead,
            records: vec![json!({"LastName": "L"})],
        })
        .http("Nylas_Contact_Id__c");
        assert_eq!(h.method, reqwest::Method::PATCH);
        assert!(matches!(&h.path, Path::Data(p) if p == "composite/sobjects/Lead/Nylas_Contact_Id__c"));
        let body = h.body.expect("body");
        assert_eq!(body["allOrNone"], false);
        assert_eq!(body["records"][0]["attributes"]["type"], "Lead");
        assert_eq!(body["records"][0]["LastName"], "L");
        let d = call(SfOp::Delete {
            ids: vec!["a".into(), "b".into()],
        })
        .http("X__c");
        assert_eq!(
            d.query,
            vec![("ids", "a,b".to_owned()), ("allOrNone", "false".to_owned())]
        );
    }
}
