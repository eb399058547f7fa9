//! Reads for reconcile ([`crate::CrmSink::read`]): the Contacts, then the unconverted Leads,
//! that hold an external id, each with SOQL in Id order, one page (up to 2,000 rows) per call,
//! following `nextRecordsUrl`.
//!
//! ```text
//! SELECT Id, FirstName, LastName, Email, Phone, Title, <ext> FROM Contact WHERE <ext> != null ORDER BY Id
//! SELECT Id, FirstName, LastName, Email, Phone, Title, <ext> FROM Lead WHERE <ext> != null AND IsConverted = false ORDER BY Id
//! ```
//!
//! A converted Lead is left out: its Contact holds the external id (the conversion copies it)
//! and is the record crmsync writes to. The cursor says the phase and the position:
//! `contact:<nextRecordsUrl>` (more Contacts), `lead:` (the Leads' first page),
//! `lead:<nextRecordsUrl>` (more Leads); a read starts with the Contacts' first page. A cursor
//! is checked before anything is sent: its URL must be a query path of the instance, as any
//! `nextRecordsUrl` crmsync follows. A query cursor Salesforce closed meanwhile (15 minutes
//! idle, or more than 10 open) is `INVALID_QUERY_LOCATOR`.

use serde_json::Value;

use super::request::{SfObject, is_next_records_url, is_record_id};
use super::retry::decode;
use crate::{CrmRecord, CrmSide, SinkError, bad_cursor, key_email, text_field};

/// Where a read is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    /// The first page of the object's query.
    Start(SfObject),
    /// A further page of the object's query, at its `nextRecordsUrl`.
    More(SfObject, String),
}

fn tag(object: SfObject) -> &'static str {
    match object {
        SfObject::Contact => "contact:",
        SfObject::Lead => "lead:",
    }
}

impl Cursor {
    /// The cursor a caller handed back; None is the start of a read.
    pub fn decode(cursor: Option<&str>) -> Result<Cursor, SinkError> {
        let Some(text) = cursor else {
            return Ok(Cursor::Start(SfObject::Contact));
        };
        let (object, url) = [SfObject::Contact, SfObject::Lead]
            .into_iter()
            .find_map(|o| text.strip_prefix(tag(o)).map(|rest| (o, rest)))
            .ok_or_else(|| bad_cursor(text))?;
        match url {
            "" => Ok(Cursor::Start(object)),
            url if is_next_records_url(url) => Ok(Cursor::More(object, url.to_owned())),
            _ => Err(bad_cursor(text)),
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Cursor::Start(o) => tag(*o).to_owned(),
            Cursor::More(o, url) => format!("{}{url}", tag(*o)),
        }
    }

    /// Where the read goes after a page of `object` whose `nextRecordsUrl` is `next`: on in
    /// the query, else to the Leads after the Contacts, else nowhere.
    pub fn after(object: SfObject, next: Option<String>) -> Option<Cursor> {
        match (next, object) {
            (Some(url), o) => Some(Cursor::More(o, url)),
            (None, SfObject::Contact) => Some(Cursor::Start(SfObject::Lead)),
            (None, SfObject::Lead) => None,
        }
    }
}

/// The query reading `object`'s records that hold the external-id field `ext`.
pub(crate) fn soql(object: SfObject, ext: &str) -> String {
    let fields = format!("SELECT Id, FirstName, LastName, Email, Phone, Title, {ext}");
    match object {
        SfObject::Contact => format!("{fields} FROM Contact WHERE {ext} != null ORDER BY Id"),
        SfObject::Lead => format!("{fields} FROM Lead WHERE {ext} != null AND IsConverted = false ORDER BY Id"),
    }
}

/// A field of a row by its API name (Salesforce answers with the canonical spelling; the org's
/// external-id field may be configured in another case).
fn field<'a>(row: &'a Value, name: &str) -> &'a Value {
    match row.get(name) {
        Some(v) => v,
        None => row
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
            .unwrap_or(&Value::Null),
    }
}

/// The rows of a page of `object` as CRM sides (keyed on the external id; no company: a
/// Lead's may be the email domain crmsync filled in, a Contact has none). A row without an
/// external id is not crmsync's and is left out; a row without a record id, or of another
/// object (a cursor of one phase given for the other), is an answer crmsync cannot read.
pub(crate) fn sides(rows: &[Value], object: SfObject, ext: &str) -> Result<Vec<CrmSide>, SinkError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(t) = row["attributes"]["type"].as_str()
            && t != object.name()
        {
            return Err(decode(format!("a {t} row in a read of {}", object.name())));
        }
        let rid = row["Id"]
            .as_str()
            .filter(|id| is_record_id(id))
            .ok_or_else(|| decode("a query row without a record id"))?;
        let Some(key) = text_field(field(row, ext)) else {
            continue;
        };
        out.push(CrmSide {
            rid: rid.to_owned(),
            key,
            record: CrmRecord {
                first_name: text_field(&row["FirstName"]),
                last_name: row["LastName"].as_str().unwrap_or_default().to_owned(),
                email: key_email(row["Email"].as_str().unwrap_or_default()),
                phone: text_field(&row["Phone"]),
                company: None,
                title: text_field(&row["Title"]),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NEXT: &str = "/services/data/v60.0/query/01gD0000002HU6KIAW-2000";

    #[test]
    fn cursors_say_the_phase_and_the_position_and_round_trip() {
        assert_eq!(Cursor::decode(None), Ok(Cursor::Start(SfObject::Contact)));
        for c in [
            Cursor::Start(SfObject::Contact),
            Cursor::More(SfObject::Contact, NEXT.into()),
            Cursor::Start(SfObject::Lead),
            Cursor::More(SfObject::Lead, NEXT.into()),
        ] {
            assert_eq!(Cursor::decode(Some(&c.encode())), Ok(c.clone()), "{}", c.encode());
        }
        assert_eq!(Cursor::Start(SfObject::Lead).encode(), "lead:");
        assert_eq!(
            Cursor::More(SfObject::Contact, NEXT.into()).encode(),
            format!("contact:{NEXT}")
        );
        assert_eq!(
            Cursor::after(SfObject::Contact, Some(NEXT.into())),
            Some(Cursor::More(SfObject::Contact, NEXT.into()))
        );
        assert_eq!(
            Cursor::after(SfObject::Contact, None),
            Some(Cursor::Start(SfObject::Lead)),
            "the Leads after the Contacts"
        );
        assert_eq!(Cursor::after(SfObject::Lead, None), None, "the end");
    }

    #[test]
    fn cursors_that_are_not_ours_are_refused_before_anything_is_sent() {
        for bad in [
            "",
            "account:",
            NEXT,
            "Lead:",
            "lead:https://evil.example.com/services/data/v60.0/query/x",
            "contact://evil.example.com/services/data/",
            "lead:/services/data/../../oauth2/token",
            "contact:/services/oauth2/token",
            "lead:/services/data/v60.0/query?q=SELECT Id FROM User",
            "contact:/services/data/v60.0/query/01g\n-2000",
        ] {
            let e = Cursor::decode(Some(bad)).expect_err(bad);
            assert_eq!(
                (e.next, e.code, e.not_sent),
                (crate::Next::FailJob, "BAD_CURSOR", true),
                "{bad}"
            );
        }
    }

    #[test]
    fn queries_read_contacts_and_unconverted_leads_holding_an_external_id() {
        assert_eq!(
            soql(SfObject::Contact, "Nylas_Contact_Id__c"),
            "SELECT Id, FirstName, LastName, Email, Phone, Title, Nylas_Contact_Id__c FROM Contact \
             WHERE Nylas_Contact_Id__c != null ORDER BY Id"
        );
        assert_eq!(
            soql(SfObject::Lead, "X__c"),
            "SELECT Id, FirstName, LastName, Email, Phone, Title, X__c FROM Lead \
             WHERE X__c != null AND IsConverted = false ORDER BY Id"
        );
    }

    #[test]
    fn rows_read_as_the_crm_holds_them_keyed_on_the_external_id() {
        let rows = vec![
            json!({"attributes":{"type":"Lead","url":"/x"},"Id":"00QAB0000000001AAA","FirstName":"Ada","LastName":"Lovelace",
                   "Email":" Ada@Example.com","Phone":"+44 1","Title":"","nylas_contact_id__c":"c-1"}),
            json!({"Id":"00QAB0000000002AAA","FirstName":null,"LastName":null,"Email":null,"Phone":null,"Title":"CTO",
                   "Nylas_Contact_Id__c":"c-2"}),
            json!({"Id":"00QAB0000000003AAA","LastName":"Not ours","Nylas_Contact_Id__c":null}),
        ];
        let got = sides(&rows, SfObject::Lead, "Nylas_Contact_Id__c").expect("rows");
        assert_eq!(
            got,
            vec![
                CrmSide {
                    rid: "00QAB0000000001AAA".into(),
                    key: "c-1".into(),
                    record: CrmRecord {
                        first_name: Some("Ada".into()),
                        last_name: "Lovelace".into(),
                        email: "ada@example.com".into(),
                        phone: Some("+44 1".into()),
                        company: None,
                        title: None,
                    },
                },
                CrmSide {
                    rid: "00QAB0000000002AAA".into(),
                    key: "c-2".into(),
                    record: CrmRecord {
                        first_name: None,
                        last_name: String::new(),
                        email: String::new(),
                        phone: None,
                        company: None,
                        title: Some("CTO".into()),
                    },
                },
            ]
        );
        let no_id = [json!({"Id": "../x", "Nylas_Contact_Id__c": "c"})];
        assert_eq!(
            sides(&no_id, SfObject::Lead, "Nylas_Contact_Id__c").map_err(|e| e.code),
            Err("SF_DECODE")
        );
        let other = [json!({"attributes":{"type":"Lead"},"Id":"00QAB0000000001AAA","Nylas_Contact_Id__c":"c"})];
        assert!(
            sides(&other, SfObject::Contact, "Nylas_Contact_Id__c").is_err(),
            "a Lead row in a read of Contacts"
        );
    }
}
