//! An org's Contacts records and the per-record rules of upsert, delete and search.
//!
//! Field rules (Zoho's Contacts layout as crmsync uses it): `Last_Name` is mandatory;
//! lengths are counted in characters: `First_Name` 40, `Last_Name` 80, `Email` 100,
//! `Phone` 30, `Title` 100, `Account_Name` 200 (a string, or a lookup object whose `name` is
//! checked); a non-empty `Email` must be plausible: exactly one `@`, non-empty local and
//! domain parts, a `.` in the domain, no whitespace. `""` or `null` clears a field.
//!
//! Matching: upsert looks records up by the fields of `duplicate_check_fields`, in order,
//! case-insensitively; without `duplicate_check_fields` it matches on `Email`, as Zoho does
//! for Contacts, whose system-defined unique field is `Email`.
//!
//! Update by id (`PUT Contacts`) changes the given fields of the record with that id: absent
//! fields keep their value, `null` clears; `Last_Name` may be absent but not blank. It does
//! **not** enforce Email uniqueness: an update may give a record the Email of another, and
//! then both hold it (upsert and search then match the older record, the smallest id).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use super::error_body;
use crate::clock::hash_str;

/// Maximum lengths in characters of the fields the simulator checks.
pub const FIELD_LIMITS: &[(&str, usize)] = &[
    ("First_Name", 40),
    ("Last_Name", 80),
    ("Email", 100),
    ("Phone", 30),
    ("Title", 100),
    ("Account_Name", 200),
];

/// The fields the inspection endpoint shows for each record.
pub const INSPECTED_FIELDS: &[&str] = &["First_Name", "Last_Name", "Email", "Phone", "Account_Name", "Title"];

#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub fields: Map<String, Value>,
    pub created: String,
    pub modified: String,
}

impl Record {
    /// The record as search returns it: `id`, its fields, and the times.
    pub fn to_json(&self) -> Value {
        let mut m = self.fields.clone();
        m.insert("id".into(), json!(self.id));
        m.insert("Created_Time".into(), json!(self.created));
        m.insert("Modified_Time".into(), json!(self.modified));
        Value::Object(m)
    }

    fn email_key(&self) -> Option<String> {
        email_key(self.fields.get("Email"))
    }
}

/// The index key of an Email value: lowercased, `None` when blank.
fn email_key(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase())
}

/// What a per-record operation answered: a success or an error item, both as Zoho's JSON.
pub type ItemResult = Result<Value, Value>;

/// Contacts of one org.
#[derive(Debug)]
pub struct RecordStore {
    records: HashMap<String, Record>,
    /// Lowercased Email → ids of the records holding it (several only after updates by id,
    /// which do not enforce uniqueness); the smallest id (the oldest record) is the match.
    by_email: HashMap<String, BTreeSet<String>>,
    id_prefix: u64,
    next_id: u64,
    user: Value,
}

impl RecordStore {
    pub fn new(org_id: &str) -> RecordStore {
        // Zoho ids are 19-digit numbers; ours are a 7-digit org prefix and a 12-digit counter.
        let id_prefix = 1_000_000 + hash_str(org_id) % 9_000_000;
        RecordStore {
            records: HashMap::new(),
            by_email: HashMap::new(),
            id_prefix,
            next_id: 1_000_001,
            user: json!({"id": format!("{id_prefix}{:012}", 1), "name": "Sim Admin"}),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn index_email(&mut self, key: Option<String>, id: &str) {
        if let Some(k) = key {
            self.by_email.entry(k).or_default().insert(id.to_string());
        }
    }

    fn unindex_email(&mut self, key: Option<String>, id: &str) {
        if let Some(k) = key
            && let Some(ids) = self.by_email.get_mut(&k)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.by_email.remove(&k);
            }
        }
    }

    /// The id of the record matched by a (lowercased) Email key.
    fn by_email_key(&self, key: &str) -> Option<&String> {
        self.by_email.get(key).and_then(|ids| ids.first())
    }

    fn new_id(&mut self) -> String {
        let id = format!("{}{:012}", self.id_prefix, self.next_id);
        self.next_id += 1;
        id
    }

    /// Upserts `data` in order; item `i` answers record `i`.
    pub fn upsert(&mut self, data: &[Value], duplicate_check_fields: &[String], now: &str) -> Vec<ItemResult> {
        data.iter()
            .enumerate()
            .map(|(i, rec)| {
                let fields = validate(i, rec)?;
                Ok(self.apply(fields, duplicate_check_fields, now))
            })
            .collect()
    }

    fn find(&self, field: &str, fields: &Map<String, Value>) -> Option<String> {
        let wanted = fields.get(field)?;
        if field == "Email" {
            let key = email_key(Some(wanted))?;
            return self.by_email_key(&key).cloned();
        }
        let wanted = match wanted {
            Value::String(s) if s.is_empty() => return None,
            Value::String(s) => Value::String(s.to_lowercase()),
            Value::Null => return None,
            other => other.clone(),
        };
        self.records
            .values()
            .find(|r| {
                r.fields.get(field).map(|v| match v {
                    Value::String(s) => Value::String(s.to_lowercase()),
                    other => other.clone(),
                }) == Some(wanted.clone())
            })
            .map(|r| r.id.clone())
    }

    fn apply(&mut self, fields: Map<String, Value>, duplicate_check_fields: &[String], now: &str) -> Value {
        let default_fields = ["Email".to_string()];
        let check = if duplicate_check_fields.is_empty() {
            &default_fields[..]
        } else {
            duplicate_check_fields
        };
        let matched = check
            .iter()
            .find_map(|f| self.find(f, &fields).map(|id| (f.clone(), id)));
        let (id, created, action, duplicate_field) = match matched {
            Some((field, id)) => {
                let Some(rec) = self.records.get_mut(&id) else {
                    // The index and the records disagree: cannot happen, but answer as an insert.
                    return self.insert(fields, now);
                };
                let old_key = rec.email_key();
                for (k, v) in fields {
                    rec.fields.insert(k, v);
                }
                rec.modified = now.to_string();
                let new_key = rec.email_key();
                let created = rec.created.clone();
                if old_key != new_key {
                    self.unindex_email(old_key, &id);
                    self.index_email(new_key, &id);
                }
                (id, created, "update", Value::String(field))
            }
            None => return self.insert(fields, now),
        };
        self.success(&id, &created, now, action, duplicate_field)
    }

    fn insert(&mut self, fields: Map<String, Value>, now: &str) -> Value {
        let id = self.new_id();
        let rec = Record {
            id: id.clone(),
            fields,
            created: now.to_string(),
            modified: now.to_string(),
        };
        self.index_email(rec.email_key(), &id);
        self.records.insert(id.clone(), rec);
        self.success(&id, now, now, "insert", Value::Null)
    }

    fn success(&self, id: &str, created: &str, modified: &str, action: &str, duplicate_field: Value) -> Value {
        json!({
            "code": "SUCCESS",
            "duplicate_field": duplicate_field,
            "action": action,
            "details": {
                "id": id,
                "Modified_Time": modified,
                "Created_Time": created,
                "Modified_By": self.user,
                "Created_By": self.user,
            },
            "message": if action == "insert" { "record added" } else { "record updated" },
            "status": "success",
        })
    }

    /// Updates records by id, in order; item `i` answers record `i`. A missing or unknown
    /// `id` is `INVALID_DATA` on `id`; then the fields are checked as for upsert, except that
    /// `Last_Name` may be absent.
    pub fn update(&mut self, data: &[Value], now: &str) -> Vec<ItemResult> {
        data.iter()
            .enumerate()
            .map(|(i, rec)| {
                let id = match rec.get("id") {
                    Some(Value::String(s)) => s.trim().to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ if !rec.is_object() => return Err(not_an_object(i)),
                    _ => String::new(),
                };
                if !self.records.contains_key(&id) {
                    return Err(invalid_id(i));
                }
                let fields = validate_fields(i, rec, false)?;
                self.update_one(i, &id, fields, now)
            })
            .collect()
    }

    fn update_one(&mut self, i: usize, id: &str, fields: Map<String, Value>, now: &str) -> ItemResult {
        let Some(rec) = self.records.get_mut(id) else {
            return Err(invalid_id(i));
        };
        let old_key = rec.email_key();
        for (k, v) in fields {
            rec.fields.insert(k, v);
        }
        rec.modified = now.to_string();
        let new_key = rec.email_key();
        let created = rec.created.clone();
        if old_key != new_key {
            self.unindex_email(old_key, id);
            self.index_email(new_key, id);
        }
        Ok(self.success(id, &created, now, "update", Value::Null))
    }

    /// Deletes the given ids; an unknown id (or one already deleted earlier in the list) is
    /// `INVALID_DATA`.
    pub fn delete(&mut self, ids: &[&str]) -> Vec<ItemResult> {
        ids.iter()
            .map(|&id| match self.records.remove(id) {
                Some(rec) => {
                    self.unindex_email(rec.email_key(), id);
                    Ok(json!({"code": "SUCCESS", "details": {"id": id}, "message": "record deleted", "status": "success"}))
                }
                None => Err(json!({
                    "code": "INVALID_DATA",
                    "details": {"id": id},
                    "message": "the id given seems to be invalid",
                    "status": "error",
                })),
            })
            .collect()
    }

    /// The record whose Email equals `email`, ignoring case.
    pub fn find_by_email(&self, email: &str) -> Option<&Record> {
        let id = self.by_email_key(&email.to_lowercase())?;
        self.records.get(id)
    }

    /// Every record as the inspection endpoint shows it, sorted by Email (then id).
    pub fn snapshot(&self) -> Vec<Value> {
        let mut recs: Vec<&Record> = self.records.values().collect();
        recs.sort_by(|a, b| {
            let ea = a.fields.get("Email").and_then(Value::as_str).unwrap_or("");
            let eb = b.fields.get("Email").and_then(Value::as_str).unwrap_or("");
            ea.cmp(eb).then_with(|| a.id.cmp(&b.id))
        });
        recs.into_iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("id".into(), json!(r.id));
                for f in INSPECTED_FIELDS {
                    m.insert((*f).into(), r.fields.get(*f).cloned().unwrap_or(Value::Null));
                }
                m.insert("Created_Time".into(), json!(r.created));
                m.insert("Modified_Time".into(), json!(r.modified));
                Value::Object(m)
            })
            .collect()
    }
}

/// Whether Zoho would take `s` as an email address (see the module docs).
pub fn plausible_email(s: &str) -> bool {
    if s.chars().any(char::is_whitespace) {
        return false;
    }
    let mut parts = s.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => !local.is_empty() && !domain.is_empty() && domain.contains('.'),
        _ => false,
    }
}

fn invalid(i: usize, field: &str, details: Value) -> Value {
    let mut d = Map::new();
    d.insert("api_name".into(), json!(field));
    d.insert("json_path".into(), json!(format!("$.data[{i}].{field}")));
    if let Value::Object(extra) = details {
        d.extend(extra);
    }
    error_body("INVALID_DATA", Value::Object(d), "invalid data")
}

fn invalid_id(i: usize) -> Value {
    error_body(
        "INVALID_DATA",
        json!({"api_name": "id", "json_path": format!("$.data[{i}].id")}),
        "the id given seems to be invalid",
    )
}

fn not_an_object(i: usize) -> Value {
    error_body(
        "INVALID_DATA",
        json!({"expected_data_type": "jsonobject", "json_path": format!("$.data[{i}]")}),
        "invalid data",
    )
}

/// Checks record `i` of an upsert; returns its fields (without any `id`) or the error item.
pub fn validate(i: usize, rec: &Value) -> Result<Map<String, Value>, Value> {
    validate_fields(i, rec, true)
}

/// Checks record `i` of an upsert (`Last_Name` required) or an update (`Last_Name` may be
/// absent, but not `null` or blank: it cannot be cleared).
pub fn validate_fields(i: usize, rec: &Value, require_last_name: bool) -> Result<Map<String, Value>, Value> {
    let Value::Object(fields) = rec else {
        return Err(not_an_object(i));
    };
    let last_name_ok = match fields.get("Last_Name") {
        None => !require_last_name,
        Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(_) => true,
    };
    if !last_name_ok {
        return Err(error_body(
            "MANDATORY_NOT_FOUND",
            json!({"api_name": "Last_Name", "json_path": format!("$.data[{i}].Last_Name")}),
            "required field not found",
        ));
    }
    for &(field, max) in FIELD_LIMITS {
        let text = match fields.get(field) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) if field == "Account_Name" => match o.get("name") {
                Some(Value::String(s)) => s.as_str(),
                _ => continue,
            },
            Some(_) => {
                let expected = if field == "Email" { "email" } else { "text" };
                return Err(invalid(i, field, json!({"expected_data_type": expected})));
            }
        };
        if text.chars().count() > max {
            return Err(invalid(i, field, json!({"maximum_length": max})));
        }
        if field == "Email" && !text.is_empty() && !plausible_email(text) {
            return Err(invalid(i, field, json!({"expected_data_type": "email"})));
        }
    }
    let mut fields = fields.clone();
    fields.remove("id");
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_email(s: &str, ok: bool) {
        assert_eq!(plausible_email(s), ok, "{s:?}");
    }

    #[test]
    fn plausible_emails() {
        check_email("a@b.co", true);
        check_email("Leyah.Miller@Example.COM", true);
        check_email("a.b.example.com", false);
        check_email("a b@example.com", false);
        check_email(" a@example.com", false);
        check_email("a@@example.com", false);
        check_email("a@b@example.com", false);
        check_email("@example.com", false);
        check_email("a@", false);
        check_email("a@localhost", false);
    }

    fn code_of(r: &ItemResult) -> &str {
        match r {
            Ok(v) | Err(v) => v["code"].as_str().unwrap_or(""),
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        let ok = json!({"Last_Name": "é".repeat(80)});
        assert!(validate(0, &ok).is_ok());
        let too_long = json!({"Last_Name": "é".repeat(81)});
        let err = validate(3, &too_long).expect_err("too long");
        assert_eq!(err["details"]["maximum_length"], 80);
        assert_eq!(err["details"]["json_path"], "$.data[3].Last_Name");
    }

    #[test]
    fn upsert_matches_email_case_insensitively_and_keeps_absent_fields() {
        let mut store = RecordStore::new("org");
        let first = store.upsert(
            &[json!({"Last_Name": "Miller", "Email": "Leyah@Example.com", "Title": "CEO"})],
            &[],
            "t1",
        );
        assert_eq!(
            first[0].as_ref().ok().map(|v| v["action"].clone()),
            Some(json!("insert"))
        );
        let second = store.upsert(
            &[json!({"Last_Name": "Miller-Jones", "Email": "leyah@example.COM"})],
            &["Email".into()],
            "t2",
        );
        let item = second[0].as_ref().expect("updated").clone();
        assert_eq!(item["action"], "update");
        assert_eq!(item["duplicate_field"], "Email");
        assert_eq!(item["details"]["Created_Time"], "t1");
        assert_eq!(store.len(), 1);
        let rec = store
            .find_by_email("LEYAH@example.com")
            .map(Record::to_json)
            .expect("found");
        assert_eq!(rec["Title"], "CEO");
        assert_eq!(rec["Last_Name"], "Miller-Jones");
        assert_eq!(rec["Email"], "leyah@example.COM");
    }

    #[test]
    fn per_record_errors_do_not_block_the_others() {
        let mut store = RecordStore::new("org");
        let items = store.upsert(
            &[
                json!({"First_Name": "x"}),
                json!({"Last_Name": "ok", "Email": "not-an-email"}),
                json!({"Last_Name": "ok", "Phone": "1".repeat(31)}),
                json!({"Last_Name": "ok", "Email": "ok@example.com"}),
                json!("not an object"),
            ],
            &[],
            "t",
        );
        let codes: Vec<&str> = items.iter().map(code_of).collect();
        assert_eq!(
            codes,
            [
                "MANDATORY_NOT_FOUND",
                "INVALID_DATA",
                "INVALID_DATA",
                "SUCCESS",
                "INVALID_DATA"
            ]
        );
        assert_eq!(
            items[1]
                .as_ref()
                .err()
                .map(|e| e["details"]["expected_data_type"].clone()),
            Some(json!("email"))
        );
    }

    #[test]
    fn update_by_id_changes_given_fields_and_allows_shared_emails() {
        let mut store = RecordStore::new("org");
        let items = store.upsert(
            &[
                json!({"Last_Name": "a", "Email": "a@x.io", "Title": "T"}),
                json!({"Last_Name": "b", "Email": "b@x.io"}),
            ],
            &[],
            "t1",
        );
        let id = |k: usize| {
            items[k].as_ref().expect("inserted")["details"]["id"]
                .as_str()
                .expect("id")
                .to_string()
        };
        let (a, b) = (id(0), id(1));
        let res = store.update(
            &[
                json!({"id": b, "Email": "A@x.io", "Title": null}),
                json!({"id": a, "Last_Name": ""}),
                json!({"id": "nope"}),
                json!(7),
            ],
            "t2",
        );
        let codes: Vec<&str> = res.iter().map(code_of).collect();
        assert_eq!(
            codes,
            ["SUCCESS", "MANDATORY_NOT_FOUND", "INVALID_DATA", "INVALID_DATA"]
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.find_by_email("a@x.io").map(|r| r.id.clone()), Some(a.clone()));
        assert!(store.find_by_email("b@x.io").is_none());
        store.delete(&[&a]);
        assert_eq!(store.find_by_email("a@x.io").map(|r| r.id.clone()), Some(b));
    }

    #[test]
    fn delete_removes_once() {
        let mut store = RecordStore::new("org");
        let items = store.upsert(&[json!({"Last_Name": "a", "Email": "a@x.io"})], &[], "t");
        let id = items[0].as_ref().expect("inserted")["details"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        assert_eq!(id.len(), 19);
        let res = store.delete(&[&id, &id, "nope"]);
        let codes: Vec<&str> = res.iter().map(code_of).collect();
        assert_eq!(codes, ["SUCCESS", "INVALID_DATA", "INVALID_DATA"]);
        assert!(store.find_by_email("a@x.io").is_none());
    }
}
