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
//!
//! Listing (Get Records, see [`super::list`]) orders records by `id`, `Created_Time` or
//! `Modified_Time` (ties broken by id) and pages them from an offset or from a
//! [`Position`] (the place of a record in that order), so a walk that resumes after a position
//! stays consistent while records are added, edited or deleted.
//!
//! Records changed by hand (a user in Zoho's UI, not crmsync: see [`super::hand`]) follow the
//! same field rules; they are owned by and attributed to another user ("Sim User").

use std::collections::{BTreeMap, BTreeSet};

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

/// API names of the Contacts layout that Get Records serves (`null` when a record has no
/// value). Any other name is served only once some record has held a field by that name (a
/// custom field); unknown names are dropped silently.
pub const CONTACT_FIELDS: &[&str] = &[
    "Owner",
    "Salutation",
    "First_Name",
    "Last_Name",
    "Full_Name",
    "Email",
    "Secondary_Email",
    "Phone",
    "Mobile",
    "Home_Phone",
    "Other_Phone",
    "Fax",
    "Account_Name",
    "Title",
    "Department",
    "Lead_Source",
    "Description",
    "Mailing_Street",
    "Mailing_City",
    "Mailing_State",
    "Mailing_Zip",
    "Mailing_Country",
    "Email_Opt_Out",
    "Created_By",
    "Modified_By",
    "Created_Time",
    "Modified_Time",
];

/// System fields a user cannot set by hand (nor does the API store them as given).
pub const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "Owner",
    "Full_Name",
    "Created_By",
    "Modified_By",
    "Created_Time",
    "Modified_Time",
];

#[derive(Debug, Clone)]
pub struct Record {
    pub id: String,
    pub fields: Map<String, Value>,
    pub created: String,
    pub modified: String,
    /// Created by hand (another user in Zoho's UI), not through the API.
    pub by_hand: bool,
    /// Last changed by hand (created or edited).
    pub modified_by_hand: bool,
    /// Times the API changed the record after creating it (upsert matches, updates by id).
    pub api_updates: u64,
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

    /// The record as the inspection endpoint shows it.
    pub fn inspected(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        for f in INSPECTED_FIELDS {
            m.insert((*f).into(), self.fields.get(*f).cloned().unwrap_or(Value::Null));
        }
        m.insert("Created_Time".into(), json!(self.created));
        m.insert("Modified_Time".into(), json!(self.modified));
        m.insert("origin".into(), json!(if self.by_hand { "hand" } else { "api" }));
        m.insert("api_updates".into(), json!(self.api_updates));
        Value::Object(m)
    }

    /// The record's place in the order of `sort`.
    pub fn position(&self, sort: SortBy) -> Position {
        let key = match sort {
            SortBy::Id => 0,
            SortBy::CreatedTime => time_key(&self.created),
            SortBy::ModifiedTime => time_key(&self.modified),
        };
        Position {
            key,
            id: self.id.parse().unwrap_or(0),
        }
    }

    /// `First_Name Last_Name`, as Zoho's read-only `Full_Name`.
    fn full_name(&self) -> Value {
        let part = |f: &str| {
            self.fields
                .get(f)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let name = [part("First_Name"), part("Last_Name")]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        json!(name)
    }
}

/// The orders Get Records can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Id,
    CreatedTime,
    ModifiedTime,
}

impl SortBy {
    pub const API_NAMES: [&'static str; 3] = ["id", "Created_Time", "Modified_Time"];

    pub fn parse(s: &str) -> Option<SortBy> {
        match s {
            "id" => Some(SortBy::Id),
            "Created_Time" => Some(SortBy::CreatedTime),
            "Modified_Time" => Some(SortBy::ModifiedTime),
            _ => None,
        }
    }

    pub fn api_name(self) -> &'static str {
        match self {
            SortBy::Id => "id",
            SortBy::CreatedTime => "Created_Time",
            SortBy::ModifiedTime => "Modified_Time",
        }
    }
}

/// A record's place in an order: its time key (`0` when sorting by id; else the
/// `YYYYMMDDhhmmss` digits of `Created_Time` or `Modified_Time`), then its numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub key: u64,
    pub id: u64,
}

/// `2024-05-01T10:20:30+00:00` → `20240501102030` (the simulator writes every time in UTC
/// with the same layout, so the digits order as the times do).
pub fn time_key(stamp: &str) -> u64 {
    stamp.bytes().take(19).filter(u8::is_ascii_digit).fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    })
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first `n` records of the order are skipped (`page`/`per_page`).
    Offset(usize),
    /// The records that come after this position in the walk's direction.
    After(Position),
    /// The `per_page` records that come just before this position (a previous page).
    Before(Position),
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<'a> {
    pub records: Vec<&'a Record>,
    /// Whether records come before the page in the order.
    pub before: bool,
    /// Whether records come after the page (`more_records`).
    pub after: bool,
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
    /// By id: ids are 19 digits, so their text order is their numeric (creation) order.
    records: BTreeMap<String, Record>,
    /// Lowercased Email → ids of the records holding it (several only after updates by id,
    /// which do not enforce uniqueness); the smallest id (the oldest record) is the match.
    by_email: BTreeMap<String, BTreeSet<String>>,
    /// Every field name a record has held (custom fields Get Records then serves).
    seen_fields: BTreeSet<String>,
    id_prefix: u64,
    next_id: u64,
    /// The user crmsync's OAuth token acts as.
    user: Value,
    /// Another user of the org, who changes records by hand.
    hand_user: Value,
}

impl RecordStore {
    pub fn new(org_id: &str) -> RecordStore {
        // Zoho ids are 19-digit numbers; ours are a 7-digit org prefix and a 12-digit counter.
        let id_prefix = 1_000_000 + hash_str(org_id) % 9_000_000;
        RecordStore {
            records: BTreeMap::new(),
            by_email: BTreeMap::new(),
            seen_fields: BTreeSet::new(),
            id_prefix,
            next_id: 1_000_001,
            user: json!({"id": format!("{id_prefix}{:012}", 1), "name": "Sim Admin"}),
            hand_user: json!({"id": format!("{id_prefix}{:012}", 2), "name": "Sim User"}),
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
        let Some((field, id)) = matched else {
            return self.insert(fields, now);
        };
        if !self.records.contains_key(&id) {
            // The index and the records disagree: cannot happen, but answer as an insert.
            return self.insert(fields, now);
        }
        let created = self.change(&id, fields, now, false).unwrap_or_default();
        self.success(&id, &created, now, "update", Value::String(field))
    }

    fn insert(&mut self, fields: Map<String, Value>, now: &str) -> Value {
        let id = self.insert_record(fields, now, false);
        self.success(&id, now, now, "insert", Value::Null)
    }

    fn insert_record(&mut self, fields: Map<String, Value>, now: &str, by_hand: bool) -> String {
        let id = self.new_id();
        note_fields(&mut self.seen_fields, &fields);
        let rec = Record {
            id: id.clone(),
            fields,
            created: now.to_string(),
            modified: now.to_string(),
            by_hand,
            modified_by_hand: by_hand,
            api_updates: 0,
        };
        self.index_email(rec.email_key(), &id);
        self.records.insert(id.clone(), rec);
        id
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
        let created = self.change(id, fields, now, false).ok_or_else(|| invalid_id(i))?;
        Ok(self.success(id, &created, now, "update", Value::Null))
    }

    /// Sets `fields` on the record `id` (absent fields keep their value) and stamps it
    /// modified at `now`, by the API or by hand; returns its `Created_Time`, `None` when there
    /// is no such record.
    fn change(&mut self, id: &str, fields: Map<String, Value>, now: &str, by_hand: bool) -> Option<String> {
        let rec = self.records.get_mut(id)?;
        let old_key = rec.email_key();
        note_fields(&mut self.seen_fields, &fields);
        for (k, v) in fields {
            rec.fields.insert(k, v);
        }
        rec.modified = now.to_string();
        rec.modified_by_hand = by_hand;
        if !by_hand {
            rec.api_updates += 1;
        }
        let new_key = rec.email_key();
        let created = rec.created.clone();
        if old_key != new_key {
            self.unindex_email(old_key, id);
            self.index_email(new_key, id);
        }
        Some(created)
    }

    /// Removes the record `id`, if there is one.
    fn remove(&mut self, id: &str) -> Option<Record> {
        let rec = self.records.remove(id)?;
        self.unindex_email(rec.email_key(), id);
        Some(rec)
    }

    /// The record with this id.
    pub fn get(&self, id: &str) -> Option<&Record> {
        self.records.get(id)
    }

    /// A record a user created by hand (fields already checked); returns its id.
    pub fn create_by_hand(&mut self, fields: Map<String, Value>, now: &str) -> String {
        self.insert_record(fields, now, true)
    }

    /// A user's edit of record `id` (fields already checked); `None` when there is no such
    /// record.
    pub fn edit_by_hand(&mut self, id: &str, fields: Map<String, Value>, now: &str) -> Option<&Record> {
        self.change(id, fields, now, true)?;
        self.records.get(id)
    }

    /// A user's delete of record `id`; the record, `None` when there is no such record.
    pub fn delete_by_hand(&mut self, id: &str) -> Option<Record> {
        self.remove(id)
    }

    /// Deletes the given ids; an unknown id (or one already deleted earlier in the list) is
    /// `INVALID_DATA`.
    pub fn delete(&mut self, ids: &[&str]) -> Vec<ItemResult> {
        ids.iter()
            .map(|&id| match self.remove(id) {
                Some(_) => Ok(
                    json!({"code": "SUCCESS", "details": {"id": id}, "message": "record deleted", "status": "success"}),
                ),
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
        recs.into_iter().map(Record::inspected).collect()
    }

    /// One page of the records (only those of `ids` when given), in the order of `sort`
    /// (descending with `desc`; ties broken by id), starting at `start`.
    pub fn page(&self, sort: SortBy, desc: bool, ids: Option<&[String]>, start: Start, per_page: usize) -> Page<'_> {
        if sort == SortBy::Id && ids.is_none() {
            self.page_by_id(desc, start, per_page)
        } else {
            self.page_sorted(sort, desc, ids, start, per_page)
        }
    }

    /// [`page`](Self::page) of all records by id, straight from the id-ordered map: no
    /// sorting, and only the page is visited (a walk through 100,000 records stays cheap).
    fn page_by_id(&self, desc: bool, start: Start, per_page: usize) -> Page<'_> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        type Walk<'a> = Box<dyn Iterator<Item = &'a Record> + 'a>;
        fn values<'a>(
            it: std::collections::btree_map::Range<'a, String, Record>,
        ) -> impl DoubleEndedIterator<Item = &'a Record> + 'a {
            it.map(|(_, r)| r)
        }
        // Ids are 19 digits with no leading zero: the position's id is the map key (a larger
        // number, which no record has, is clamped to the largest 19-digit one).
        let key = |p: &Position| format!("{:019}", p.id.min(9_999_999_999_999_999_999));
        match start {
            Start::Offset(skip) => {
                let mut walk: Walk<'_> = if desc {
                    Box::new(self.records.values().rev())
                } else {
                    Box::new(self.records.values())
                };
                let records: Vec<&Record> = walk.by_ref().skip(skip).take(per_page).collect();
                let after = walk.next().is_some();
                Page {
                    records,
                    before: skip.min(self.records.len()) > 0,
                    after,
                }
            }
            Start::After(anchor) => {
                let k = key(&anchor);
                let k = k.as_str();
                let (mut ahead, before): (Walk<'_>, bool) = if desc {
                    (
                        Box::new(values(self.records.range::<str, _>((Unbounded, Excluded(k)))).rev()),
                        self.records.range::<str, _>((Included(k), Unbounded)).next().is_some(),
                    )
                } else {
                    (
                        Box::new(values(self.records.range::<str, _>((Excluded(k), Unbounded)))),
                        self.records.range::<str, _>((Unbounded, Included(k))).next().is_some(),
                    )
                };
                let records: Vec<&Record> = ahead.by_ref().take(per_page).collect();
                let after = ahead.next().is_some();
                Page { records, before, after }
            }
            Start::Before(anchor) => {
                let k = key(&anchor);
                let k = k.as_str();
                // Walks back from the anchor.
                let (mut behind, after): (Walk<'_>, bool) = if desc {
                    (
                        Box::new(values(self.records.range::<str, _>((Excluded(k), Unbounded)))),
                        self.records.range::<str, _>((Unbounded, Included(k))).next().is_some(),
                    )
                } else {
                    (
                        Box::new(values(self.records.range::<str, _>((Unbounded, Excluded(k)))).rev()),
                        self.records.range::<str, _>((Included(k), Unbounded)).next().is_some(),
                    )
                };
                let mut records: Vec<&Record> = behind.by_ref().take(per_page).collect();
                let before = behind.next().is_some();
                records.reverse();
                Page { records, before, after }
            }
        }
    }

    /// [`page`](Self::page) by sorting the (selected) records.
    fn page_sorted(&self, sort: SortBy, desc: bool, ids: Option<&[String]>, start: Start, per_page: usize) -> Page<'_> {
        let mut all: Vec<(Position, &Record)> = match ids {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.records.get(id))
                .map(|r| (r.position(sort), r))
                .collect(),
            None => self.records.values().map(|r| (r.position(sort), r)).collect(),
        };
        if ids.is_some() || sort != SortBy::Id {
            all.sort_by_key(|(p, _)| *p);
        }
        if desc {
            all.reverse();
        }
        // Whether `p` comes before `anchor` in the walk's direction.
        let precedes = |p: &Position, anchor: &Position| if desc { p > anchor } else { p < anchor };
        let len = all.len();
        let (from, to) = match start {
            Start::Offset(skip) => {
                let from = skip.min(len);
                (from, from.saturating_add(per_page).min(len))
            }
            Start::After(anchor) => {
                let from = all.partition_point(|(p, _)| precedes(p, &anchor) || *p == anchor);
                (from, from.saturating_add(per_page).min(len))
            }
            Start::Before(anchor) => {
                let to = all.partition_point(|(p, _)| precedes(p, &anchor));
                (to.saturating_sub(per_page), to)
            }
        };
        Page {
            records: all[from..to].iter().map(|(_, r)| *r).collect(),
            before: from > 0,
            after: to < len,
        }
    }

    /// A record as Get Records serves it: the requested `fields` (known ones `null` when
    /// empty, unknown ones left out), then `id`.
    pub fn list_item(&self, rec: &Record, fields: &[String]) -> Value {
        let mut m = Map::new();
        for f in fields {
            let value = match f.as_str() {
                "id" => continue,
                "Created_Time" => json!(rec.created),
                "Modified_Time" => json!(rec.modified),
                "Owner" | "Created_By" => self.user_of(rec.by_hand),
                "Modified_By" => self.user_of(rec.modified_by_hand),
                "Full_Name" => rec.full_name(),
                name => match rec.fields.get(name) {
                    Some(v) => v.clone(),
                    None if CONTACT_FIELDS.contains(&name) || self.seen_fields.contains(name) => Value::Null,
                    None => continue,
                },
            };
            m.insert(f.clone(), value);
        }
        m.insert("id".into(), json!(rec.id));
        Value::Object(m)
    }

    fn user_of(&self, by_hand: bool) -> Value {
        if by_hand {
            self.hand_user.clone()
        } else {
            self.user.clone()
        }
    }
}

/// Remembers the names of fields written to a record.
fn note_fields(seen: &mut BTreeSet<String>, fields: &Map<String, Value>) {
    for k in fields.keys() {
        if !seen.contains(k) {
            seen.insert(k.clone());
        }
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
    fn paging_by_id_from_the_map_matches_sorting() {
        let mut store = RecordStore::new("org");
        let data: Vec<Value> = (0..23).map(|i| json!({"Last_Name": format!("n{i}")})).collect();
        let items = store.upsert(&data, &["Last_Name".into()], "2024-05-01T10:20:30+00:00");
        let ids: Vec<String> = items
            .iter()
            .map(|r| {
                r.as_ref().expect("inserted")["details"]["id"]
                    .as_str()
                    .expect("id")
                    .to_string()
            })
            .collect();
        for gone in [0, 7, 8, 22] {
            store.delete(&[&ids[gone]]);
        }
        let ids_of = |p: &Page<'_>| p.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let mut anchors: Vec<Position> = ids
            .iter()
            .map(|id| Position {
                key: 0,
                id: id.parse().expect("numeric"),
            })
            .collect();
        anchors.push(Position { key: 0, id: 1 });
        anchors.push(Position { key: 0, id: u64::MAX });
        let mut starts: Vec<Start> = (0..25).map(Start::Offset).collect();
        starts.extend(anchors.iter().map(|a| Start::After(*a)));
        starts.extend(anchors.iter().map(|a| Start::Before(*a)));
        for desc in [false, true] {
            for &start in &starts {
                for per_page in [1, 3, 5, 30] {
                    let fast = store.page_by_id(desc, start, per_page);
                    let slow = store.page_sorted(SortBy::Id, desc, None, start, per_page);
                    let what = format!("{start:?} desc={desc} per_page={per_page}");
                    assert_eq!(ids_of(&fast), ids_of(&slow), "{what}");
                    assert_eq!((fast.before, fast.after), (slow.before, slow.after), "{what}");
                }
            }
        }
    }

    #[test]
    fn modified_time_order_moves_edited_records_last_with_ties_by_id() {
        assert_eq!(time_key("2024-05-01T10:20:30+00:00"), 20_240_501_102_030);
        let mut store = RecordStore::new("org");
        let t1 = "2024-05-01T10:20:30+00:00";
        let items = store.upsert(
            &[
                json!({"Last_Name": "a"}),
                json!({"Last_Name": "b"}),
                json!({"Last_Name": "c"}),
            ],
            &["Last_Name".into()],
            t1,
        );
        let id = |k: usize| {
            items[k].as_ref().expect("inserted")["details"]["id"]
                .as_str()
                .expect("id")
                .to_string()
        };
        let (a, b, c) = (id(0), id(1), id(2));
        store.update(&[json!({"id": b, "Title": "x"})], "2024-05-01T10:20:31+00:00");
        let names = |p: Page<'_>| p.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let by_modified = |desc, start| names(store.page(SortBy::ModifiedTime, desc, None, start, 10));
        assert_eq!(by_modified(false, Start::Offset(0)), [a.clone(), c.clone(), b.clone()]);
        assert_eq!(by_modified(true, Start::Offset(0)), [b.clone(), c.clone(), a.clone()]);
        let after_a = store.get(&a).expect("a").position(SortBy::ModifiedTime);
        assert_eq!(by_modified(false, Start::After(after_a)), [c.clone(), b.clone()]);
        assert_eq!(by_modified(true, Start::Before(after_a)), [b.clone(), c.clone()]);
        let by_created = names(store.page(SortBy::CreatedTime, false, None, Start::Offset(0), 10));
        assert_eq!(by_created, [a, b, c]);
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
