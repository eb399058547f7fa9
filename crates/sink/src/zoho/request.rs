//! Zoho calls as requests: what each one sends and what it costs, known before it is sent.

use crmsync_domain::CrmRecord;
use serde_json::{Value, json};

use super::mapping::record_json;
use crate::{Class, Cost, Priority, SinkRequest};

/// Most records per upsert, update or delete (Zoho's limit).
pub const MAX_BATCH: usize = 100;
/// Upserts of more than this many records are "complex"...
pub const COMPLEX_RECORDS: usize = 10;
/// ...and at most this many complex calls run at once per org, on every edition.
pub const COMPLEX_CONCURRENCY: u32 = 10;
/// The fields a read asks for: the six crmsync writes (`id` always comes).
pub const LIST_FIELDS: &str = "Email,First_Name,Last_Name,Phone,Account_Name,Title";
/// Records per page of a read (Zoho's most).
pub const LIST_PAGE: usize = 200;

fn class(records: usize) -> Class {
    if records > COMPLEX_RECORDS {
        Class::Capped {
            limit: COMPLEX_CONCURRENCY,
        }
    } else {
        Class::Plain
    }
}

/// What a call does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZohoOp {
    /// `POST /crm/v6/Contacts/upsert`, matched on Email, no workflows (`trigger: []`).
    Upsert(Vec<CrmRecord>),
    /// `PUT /crm/v6/Contacts`: update records by id (a contact's record follows its new email).
    Update(Vec<(String, CrmRecord)>),
    /// `DELETE /crm/v6/Contacts?ids=...`.
    Delete(Vec<String>),
    /// `GET /crm/v8/org`: the org (1 credit), for the usage header it answers with.
    Probe,
    /// `GET /crm/v6/Contacts?fields=`[`LIST_FIELDS`]`&per_page=200&sort_by=id&sort_order=asc`
    /// (Get Records, 1 credit, 204 when there is nothing), from the start or from a page token
    /// (`info.next_page_token` of the page before: the only way past 2,000 records). Every
    /// parameter but the token stays the same across a walk: Zoho binds tokens to them.
    List { page_token: Option<String> },
}

/// One Zoho call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZohoCall {
    pub op: ZohoOp,
    pub priority: Priority,
}

/// Credits an insert, update or upsert of `records` records costs: 1 per 10 records, at
/// least 1.
pub fn write_cost(records: usize) -> u64 {
    records.div_ceil(10).max(1) as u64
}

impl ZohoCall {
    /// The operation's name, for metrics.
    pub fn name(&self) -> &'static str {
        match self.op {
            ZohoOp::Upsert(_) => "upsert",
            ZohoOp::Update(_) => "update",
            ZohoOp::Delete(_) => "delete",
            ZohoOp::Probe => "org",
            ZohoOp::List { .. } => "list",
        }
    }

    /// Records (or ids) in the call: a call of more than [`MAX_BATCH`] is never sent.
    pub fn len(&self) -> usize {
        match &self.op {
            ZohoOp::Upsert(r) => r.len(),
            ZohoOp::Update(r) => r.len(),
            ZohoOp::Delete(ids) => ids.len(),
            ZohoOp::Probe | ZohoOp::List { .. } => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Method, path, query and JSON body.
    pub(crate) fn http(
        &self,
    ) -> (
        reqwest::Method,
        &'static str,
        Vec<(&'static str, String)>,
        Option<Value>,
    ) {
        match &self.op {
            ZohoOp::Upsert(records) => (
                reqwest::Method::POST,
                "/crm/v6/Contacts/upsert",
                vec![],
                Some(json!({
                    "data": records.iter().map(record_json).collect::<Vec<_>>(),
                    "duplicate_check_fields": ["Email"],
                    "trigger": [],
                })),
            ),
            ZohoOp::Update(records) => {
                let data: Vec<Value> = records
                    .iter()
                    .map(|(id, r)| {
                        let mut v = record_json(r);
                        if let Value::Object(m) = &mut v {
                            m.insert("id".into(), Value::String(id.clone()));
                        }
                        v
                    })
                    .collect();
                (
                    reqwest::Method::PUT,
                    "/crm/v6/Contacts",
                    vec![],
                    Some(json!({ "data": data, "trigger": [] })),
                )
            }
            ZohoOp::Delete(ids) => (
                reqwest::Method::DELETE,
                "/crm/v6/Contacts",
                vec![("ids", ids.join(","))],
                None,
            ),
            ZohoOp::Probe => (reqwest::Method::GET, "/crm/v8/org", vec![], None),
            ZohoOp::List { page_token } => {
                let mut query = vec![
                    ("fields", LIST_FIELDS.to_owned()),
                    ("per_page", LIST_PAGE.to_string()),
                    ("sort_by", "id".to_owned()),
                    ("sort_order", "asc".to_owned()),
                ];
                if let Some(t) = page_token {
                    query.push(("page_token", t.clone()));
                }
                (reqwest::Method::GET, "/crm/v6/Contacts", query, None)
            }
        }
    }
}

impl SinkRequest for ZohoCall {
    fn cost(&self) -> Cost {
        match &self.op {
            ZohoOp::Upsert(r) => Cost {
                units: write_cost(r.len()),
                class: class(r.len()),
            },
            ZohoOp::Update(r) => Cost {
                units: write_cost(r.len()),
                class: class(r.len()),
            },
            // Delete (up to 100 ids), like get (a page of up to 200 records, or a 204) and
            // search: 1 credit.
            ZohoOp::Delete(_) | ZohoOp::Probe | ZohoOp::List { .. } => Cost {
                units: 1,
                class: Class::Plain,
            },
        }
    }

    fn priority(&self) -> Priority {
        self.priority
    }

    fn probe(&self) -> Option<Self> {
        Some(ZohoCall {
            op: ZohoOp::Probe,
            priority: self.priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_zohos_table() {
        assert_eq!(write_cost(1), 1);
        assert_eq!(write_cost(10), 1);
        assert_eq!(write_cost(11), 2);
        assert_eq!(write_cost(100), 10);
        let r = CrmRecord {
            first_name: None,
            last_name: "L".into(),
            email: "a@b.co".into(),
            phone: None,
            company: None,
            title: None,
        };
        let call = |op| ZohoCall {
            op,
            priority: Priority::Backfill,
        };
        assert_eq!(
            call(ZohoOp::Upsert(vec![r.clone(); 11])).cost(),
            Cost {
                units: 2,
                class: Class::Capped { limit: 10 }
            }
        );
        assert_eq!(call(ZohoOp::Upsert(vec![r; 10])).cost().class, Class::Plain);
        assert_eq!(call(ZohoOp::Delete(vec!["1".into(); 100])).cost().units, 1);
        for page_token in [None, Some("tok".to_owned())] {
            assert_eq!(
                call(ZohoOp::List { page_token }).cost(),
                Cost {
                    units: 1,
                    class: Class::Plain
                }
            );
        }
    }

    #[test]
    fn a_read_asks_for_the_six_fields_in_id_order_from_its_page_token() {
        let list = |page_token: Option<&str>| {
            ZohoCall {
                op: ZohoOp::List {
                    page_token: page_token.map(str::to_owned),
                },
                priority: Priority::Backfill,
            }
            .http()
        };
        let (method, path, query, body) = list(None);
        assert_eq!((method, path, body), (reqwest::Method::GET, "/crm/v6/Contacts", None));
        let want = |token: Option<&str>| {
            let mut q: Vec<(&str, String)> = vec![
                ("fields", "Email,First_Name,Last_Name,Phone,Account_Name,Title".into()),
                ("per_page", "200".into()),
                ("sort_by", "id".into()),
                ("sort_order", "asc".into()),
            ];
            q.extend(token.map(|t| ("page_token", t.to_owned())));
            q
        };
        assert_eq!(query, want(None));
        assert_eq!(list(Some("abc")).2, want(Some("abc")), "only the token changes");
    }
}
