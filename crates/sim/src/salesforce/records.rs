//! A Salesforce org's records (Accounts, Contacts, Leads) and the per-record rules of upsert
//! by external id, delete and lead conversion.
//!
//! Fields (names are case-insensitive in request bodies and queries; answers use these):
//! - Contact: `FirstName` (40), `LastName` (80, required), `Email` (80), `Phone` (40),
//!   `Title` (128), `AccountId` (an existing Account), the external-id field (255);
//! - Lead: the same without `AccountId`, plus `Company` (255, required); read-only
//!   `IsConverted`, `ConvertedContactId`, `ConvertedAccountId`;
//! - Account: `Name`, `Website`;
//! - all: read-only `Id`, `Name` (Contact and Lead: first and last name joined),
//!   `CreatedDate`, `LastModifiedDate`.
//!
//! Lengths count characters (Unicode scalar values). `null` or `""` clears a field (Salesforce
//! stores an empty text as null). Email must look like `local@domain.tld` without
//! whitespace.
//!
//! Upsert, per record, in request order (the first failing rule answers):
//! 1. the external id must be a non-empty string (`MISSING_ARGUMENT`), at most 255 characters
//!    (`STRING_TOO_LONG`), and appear once in the request (`DUPLICATE_VALUE`, every
//!    occurrence fails, as Salesforce refuses an upsert list holding one external id twice);
//! 2. it matches a record of that object by exact value (the field is set up unique and
//!    case-sensitive, as Nylas ids need) → update, else insert; a Lead that matches a
//!    converted Lead fails `CANNOT_UPDATE_CONVERTED_LEAD`;
//! 3. required fields of the record as it would be saved (`REQUIRED_FIELD_MISSING`, every
//!    missing one named), lengths (`STRING_TOO_LONG`), Email (`INVALID_EMAIL_ADDRESS`),
//!    `AccountId` (`INVALID_CROSS_REFERENCE_KEY`);
//! 4. the duplicate rule (see [`DuplicateRule`]): an Email (case-insensitive) held by another
//!    Contact or unconverted Lead fails `DUPLICATES_DETECTED` with a `duplicateResult`. As
//!    Salesforce documents, records saved by the same request are not compared with each
//!    other (only with records already saved), an edit runs the rule only when it changes
//!    the Email, and converted Leads are never matched.
//!
//! `allOrNone: true`: if any record fails, nothing is saved and the records that would have
//! succeeded fail `ALL_OR_NONE_OPERATION_ROLLED_BACK`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::accounts::{email_domain, website_domain};
use super::ids::{self, ACCOUNT_PREFIX, CONTACT_PREFIX, LEAD_PREFIX};
use crate::clock::{hash_str, rfc3339};
use crate::config::DuplicateRule;
use crate::zoho::records::plausible_email;

/// Salesforce's longest text external id.
pub const EXT_ID_MAX: usize = 255;

/// Maximum lengths in characters: (field, label in messages, maximum).
pub const LIMITS: &[(&str, &str, usize)] = &[
    ("FirstName", "First Name", 40),
    ("LastName", "Last Name", 80),
    ("Email", "Email", 80),
    ("Phone", "Phone", 40),
    ("Title", "Title", 128),
    ("Company", "Company", 255),
];

/// Fields holding record ids (compared by id, in either form, in queries).
pub const ID_FIELDS: &[&str] = &["Id", "AccountId", "ConvertedContactId", "ConvertedAccountId"];
/// Boolean fields.
pub const BOOL_FIELDS: &[&str] = &["IsConverted"];

/// The objects the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SObject {
    Account,
    Contact,
    Lead,
}

impl SObject {
    pub const ALL: [SObject; 3] = [SObject::Account, SObject::Contact, SObject::Lead];

    /// The object of an API name, ignoring case.
    pub fn parse(name: &str) -> Option<SObject> {
        SObject::ALL.into_iter().find(|o| o.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        match self {
            SObject::Account => "Account",
            SObject::Contact => "Contact",
            SObject::Lead => "Lead",
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            SObject::Account => ACCOUNT_PREFIX,
            SObject::Contact => CONTACT_PREFIX,
            SObject::Lead => LEAD_PREFIX,
        }
    }

    /// Fields an upsert may write, the external-id field aside.
    pub fn writable(self) -> &'static [&'static str] {
        match self {
            SObject::Account => &["Name", "Website"],
            SObject::Contact => &["FirstName", "LastName", "Email", "Phone", "Title", "AccountId"],
            SObject::Lead => &["FirstName", "LastName", "Email", "Phone", "Title", "Company"],
        }
    }

    /// Fields a query may select, the external-id field aside.
    pub fn readable(self) -> &'static [&'static str] {
        match self {
            SObject::Account => &["Id", "Name", "Website", "CreatedDate", "LastModifiedDate"],
            SObject::Contact => &[
                "Id",
                "FirstName",
                "LastName",
                "Name",
                "Email",
                "Phone",
                "Title",
                "AccountId",
                "CreatedDate",
                "LastModifiedDate",
            ],
            SObject::Lead => &[
                "Id",
                "FirstName",
                "LastName",
                "Name",
                "Email",
                "Phone",
                "Title",
                "Company",
                "IsConverted",
                "ConvertedContactId",
                "ConvertedAccountId",
                "CreatedDate",
                "LastModifiedDate",
            ],
        }
    }

    /// Whether the object carries the external-id field.
    pub fn has_ext_id(self) -> bool {
        self != SObject::Account
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            SObject::Account => &["Name"],
            SObject::Contact => &["LastName"],
            SObject::Lead => &["LastName", "Company"],
        }
    }

    /// The canonical name of a readable field (or the external-id field), ignoring case.
    pub fn field<'a>(self, ext_field: &'a str, name: &str) -> Option<&'a str> {
        if self.has_ext_id() && name.eq_ignore_ascii_case(ext_field) {
            return Some(ext_field);
        }
        self.readable().iter().copied().find(|f| f.eq_ignore_ascii_case(name))
    }
}

/// Simulated Unix seconds as Salesforce prints datetimes: `2024-05-01T10:20:30.000+0000`.
pub fn sf_datetime(unix: f64) -> String {
    let secs = unix.floor();
    let ms = ((unix - secs) * 1000.0) as u32;
    let text = rfc3339(secs as i64);
    format!("{}.{ms:03}+0000", text.trim_end_matches("+00:00"))
}

/// An error of one record, or of a whole request.
#[derive(Debug, Clone, PartialEq)]
pub struct SfError {
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
    /// The `duplicateResult` of a `DUPLICATES_DETECTED` error.
    pub duplicate_result: Option<Value>,
}

impl SfError {
    pub fn new(code: &'static str, message: impl Into<String>, fields: &[&str]) -> SfError {
        SfError {
            code,
            message: message.into(),
            fields: fields.iter().map(|f| (*f).to_string()).collect(),
            duplicate_result: None,
        }
    }

    /// As an entry of a collection result's `errors`: `{"statusCode","message","fields"}`.
    pub fn status_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.duplicate_result {
            m.insert("duplicateResult".into(), d.clone());
        }
        m.insert("statusCode".into(), json!(self.code));
        m.insert("message".into(), json!(self.message));
        m.insert("fields".into(), json!(self.fields));
        Value::Object(m)
    }

    /// As an entry of an error array answer: `{"message","errorCode","fields"}`.
    pub fn error_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.duplicate_result {
            m.insert("duplicateResult".into(), d.clone());
        }
        m.insert("message".into(), json!(self.message));
        m.insert("errorCode".into(), json!(self.code));
        m.insert("fields".into(), json!(self.fields));
        Value::Object(m)
    }

    fn rolled_back() -> SfError {
        SfError::new(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            &[],
        )
    }
}

/// The outcome of one record: its id and whether it was created, or its error.
pub type ItemResult = Result<(String, bool), SfError>;

/// One record.
#[derive(Debug, Clone)]
pub struct SfRecord {
    pub id: String,
    pub object: SObject,
    /// Stored fields by canonical name (`Id`, `Name` of Contacts and Leads, and the dates
    /// are derived).
    pub fields: Map<String, Value>,
    pub created: String,
    pub modified: String,
}

impl SfRecord {
    /// A field's value as queries return it (`null` when not set).
    pub fn value(&self, field: &str) -> Value {
        match field {
            "Id" => json!(self.id),
            "CreatedDate" => json!(self.created),
            "LastModifiedDate" => json!(self.modified),
            "IsConverted" => json!(self.converted()),
            "Name" if self.object != SObject::Account => {
                let parts: Vec<&str> = ["FirstName", "LastName"]
                    .iter()
                    .filter_map(|f| self.fields.get(*f).and_then(Value::as_str))
                    .collect();
                if parts.is_empty() {
                    Value::Null
                } else {
                    json!(parts.join(" "))
                }
            }
            f => self.fields.get(f).cloned().unwrap_or(Value::Null),
        }
    }

    pub fn converted(&self) -> bool {
        self.fields.get("IsConverted").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Every readable field (and the external id), for inspection.
    pub fn to_json(&self, ext_field: &str) -> Value {
        let mut m = Map::new();
        for f in self.object.readable() {
            m.insert((*f).to_string(), self.value(f));
        }
        if self.object.has_ext_id() {
            m.insert(ext_field.to_string(), self.value(ext_field));
        }
        Value::Object(m)
    }

    fn email_key(&self) -> Option<String> {
        if self.object == SObject::Account || self.converted() {
            return None;
        }
        self.fields
            .get("Email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_lowercase)
    }
}

/// What an upsert request needs to know besides its records.
#[derive(Debug, Clone, Copy)]
pub struct UpsertCtx<'a> {
    pub object: SObject,
    pub rule: DuplicateRule,
    /// `Sforce-Duplicate-Rule-Header: allowSave=true` was sent.
    pub allow_save: bool,
    pub all_or_none: bool,
    /// `CreatedDate` / `LastModifiedDate` of what this request saves.
    pub now: &'a str,
    /// The API version of the request (for record URLs).
    pub version: &'a str,
}

/// What an upsert request did.
#[derive(Debug, Default)]
pub struct UpsertOutcome {
    pub results: Vec<ItemResult>,
    pub created: u64,
    pub updated: u64,
    pub failed: u64,
    /// Records refused by the duplicate rule.
    pub duplicates_blocked: u64,
}

/// The records of one org.
#[derive(Debug, Clone)]
pub struct Store {
    /// By 18-character id; ids of one object share a prefix and sort in creation order.
    records: BTreeMap<String, SfRecord>,
    ext_index: HashMap<(SObject, String), String>,
    /// Lowercased Email → ids of the Contacts and unconverted Leads holding it.
    emails: HashMap<String, BTreeSet<String>>,
    next: HashMap<SObject, u64>,
    pod: String,
    pub ext_field: String,
}

impl Store {
    pub fn new(org_id: &str, ext_field: &str) -> Store {
        let next = SObject::ALL
            .into_iter()
            // Start somewhere org-specific, so ids do not all look alike.
            .map(|o| (o, hash_str(&format!("{org_id}/{}", o.name())) % 62u64.pow(6)))
            .collect();
        Store {
            records: BTreeMap::new(),
            ext_index: HashMap::new(),
            emails: HashMap::new(),
            next,
            pod: ids::pod(org_id),
            ext_field: ext_field.to_string(),
        }
    }

    fn new_id(&mut self, object: SObject) -> String {
        let n = self.next.entry(object).or_default();
        *n += 1;
        ids::make(object.prefix(), &self.pod, *n)
    }

    /// The record with an id in either form.
    pub fn get(&self, id: &str) -> Option<&SfRecord> {
        ids::normalize(id).and_then(|id| self.records.get(&id))
    }

    /// The records of an object, in id (creation) order.
    pub fn of(&self, object: SObject) -> impl Iterator<Item = &SfRecord> {
        let prefix = object.prefix();
        self.records
            .range(prefix.to_string()..)
            .take_while(move |(id, _)| id.starts_with(prefix))
            .map(|(_, r)| r)
    }

    pub fn count(&self, object: SObject) -> usize {
        self.of(object).count()
    }

    /// Every record of an object as JSON, for inspection.
    pub fn snapshot(&self, object: SObject) -> Vec<Value> {
        self.of(object).map(|r| r.to_json(&self.ext_field)).collect()
    }

    fn index(&mut self, id: &str) {
        if let Some(key) = self.records.get(id).and_then(SfRecord::email_key) {
            self.emails.entry(key).or_default().insert(id.to_string());
        }
    }

    fn unindex(&mut self, id: &str) {
        if let Some(key) = self.records.get(id).and_then(SfRecord::email_key)
            && let Some(ids) = self.emails.get_mut(&key)
        {
            ids.remove(id);
            if ids.is_empty() {
                self.emails.remove(&key);
            }
        }
    }

    fn insert(&mut self, object: SObject, fields: Map<String, Value>, now: &str) -> String {
        let id = self.new_id(object);
        if object.has_ext_id()
            && let Some(ext) = fields.get(&self.ext_field).and_then(Value::as_str)
        {
            self.ext_index.insert((object, ext.to_string()), id.clone());
        }
        self.records.insert(
            id.clone(),
            SfRecord {
                id: id.clone(),
                object,
                fields,
                created: now.to_string(),
                modified: now.to_string(),
            },
        );
        self.index(&id);
        id
    }

    /// Adds an Account (the org's initial ones, and conversions).
    pub fn add_account(&mut self, name: &str, website: Option<&str>, now: &str) -> String {
        let mut fields = Map::new();
        fields.insert("Name".into(), json!(name));
        if let Some(w) = website.filter(|w| !w.is_empty()) {
            fields.insert("Website".into(), json!(w));
        }
        self.insert(SObject::Account, fields, now)
    }

    /// The first Account whose website names `domain`.
    pub fn account_for_domain(&self, domain: &str) -> Option<String> {
        self.of(SObject::Account)
            .find(|a| {
                a.fields
                    .get("Website")
                    .and_then(Value::as_str)
                    .and_then(website_domain)
                    .is_some_and(|d| d == domain)
            })
            .map(|a| a.id.clone())
    }

    /// Upserts `records` (already checked by [`check_record`]) by the external id, in order.
    pub fn upsert(&mut self, ctx: &UpsertCtx<'_>, records: &[Map<String, Value>]) -> UpsertOutcome {
        let mut occurrences: HashMap<String, usize> = HashMap::new();
        for r in records {
            if let Some(Value::String(ext)) = r.get(&self.ext_field)
                && !ext.is_empty()
            {
                *occurrences.entry(ext.clone()).or_default() += 1;
            }
        }
        let backup = ctx.all_or_none.then(|| self.clone());
        let mut touched = HashSet::new();
        let mut results: Vec<ItemResult> = records
            .iter()
            .map(|r| {
                let repeated = r
                    .get(&self.ext_field)
                    .and_then(Value::as_str)
                    .is_some_and(|e| occurrences.get(e).is_some_and(|&n| n > 1));
                self.upsert_one(ctx, r, repeated, &mut touched)
            })
            .collect();
        let mut out = UpsertOutcome {
            duplicates_blocked: results
                .iter()
                .filter(|r| matches!(r, Err(e) if e.code == "DUPLICATES_DETECTED"))
                .count() as u64,
            ..UpsertOutcome::default()
        };
        if let Some(backup) = backup
            && results.iter().any(Result::is_err)
        {
            *self = backup;
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(SfError::rolled_back());
                }
            }
        }
        for r in &results {
            match r {
                Ok((_, true)) => out.created += 1,
                Ok((_, false)) => out.updated += 1,
                Err(_) => out.failed += 1,
            }
        }
        out.results = results;
        out
    }

    fn upsert_one(
        &mut self,
        ctx: &UpsertCtx<'_>,
        rec: &Map<String, Value>,
        repeated: bool,
        touched: &mut HashSet<String>,
    ) -> ItemResult {
        let ext_field = self.ext_field.clone();
        let ext = match rec.get(&ext_field) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(SfError::new(
                    "MISSING_ARGUMENT",
                    format!("{ext_field} not specified"),
                    &[&ext_field],
                ));
            }
        };
        if ext.chars().count() > EXT_ID_MAX {
            return Err(too_long(&ext_field, &ext_field, &ext, EXT_ID_MAX));
        }
        if repeated {
            return Err(SfError::new(
                "DUPLICATE_VALUE",
                format!("Duplicate external id specified: {ext}"),
                &[],
            ));
        }
        let existing = self.ext_index.get(&(ctx.object, ext.clone())).cloned();
        let old = existing.as_ref().and_then(|id| self.records.get(id));
        if ctx.object == SObject::Lead && old.is_some_and(SfRecord::converted) {
            return Err(SfError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                &[],
            ));
        }
        let old_email = old.and_then(SfRecord::email_key);
        let mut merged = old.map(|r| r.fields.clone()).unwrap_or_default();
        for (k, v) in rec {
            match v {
                Value::Null => {
                    merged.remove(k);
                }
                Value::String(s) if s.is_empty() => {
                    merged.remove(k);
                }
                v => {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        let missing: Vec<&str> = ctx
            .object
            .required()
            .iter()
            .copied()
            .filter(|f| !merged.contains_key(*f))
            .collect();
        if !missing.is_empty() {
            return Err(SfError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        for (field, label, max) in LIMITS {
            if let Some(Value::String(s)) = rec.get(*field)
                && s.chars().count() > *max
            {
                return Err(too_long(field, label, s, *max));
            }
        }
        if let Some(Value::String(e)) = rec.get("Email")
            && !e.is_empty()
            && !plausible_email(e)
        {
            return Err(SfError::new(
                "INVALID_EMAIL_ADDRESS",
                format!("Email: invalid email address: {e}"),
                &["Email"],
            ));
        }
        if ctx.object == SObject::Contact
            && let Some(Value::String(a)) = rec.get("AccountId")
            && !a.is_empty()
        {
            let account =
                ids::normalize(a).filter(|id| self.records.get(id).is_some_and(|r| r.object == SObject::Account));
            match account {
                Some(id) => {
                    merged.insert("AccountId".into(), json!(id));
                }
                None => {
                    return Err(SfError::new(
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                        &["AccountId"],
                    ));
                }
            }
        }
        let new_email = merged
            .get("Email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_lowercase);
        // An edit runs the rule only when it changes a matched field (the Email).
        let email_changed = existing.is_none() || new_email != old_email;
        if ctx.rule != DuplicateRule::None
            && email_changed
            && let Some(key) = &new_email
        {
            let matches: Vec<String> = self
                .emails
                .get(key)
                .map(|ids| {
                    ids.iter()
                        .filter(|id| existing.as_ref() != Some(*id) && !touched.contains(*id))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !matches.is_empty() && (ctx.rule == DuplicateRule::Block || !ctx.allow_save) {
                return Err(self.duplicates_detected(ctx, &matches));
            }
        }
        let (id, created) = match existing {
            Some(id) => {
                self.unindex(&id);
                if let Some(r) = self.records.get_mut(&id) {
                    r.fields = merged;
                    r.modified = ctx.now.to_string();
                }
                self.index(&id);
                (id, false)
            }
            None => (self.insert(ctx.object, merged, ctx.now), true),
        };
        touched.insert(id.clone());
        Ok((id, created))
    }

    /// `DUPLICATES_DETECTED` with a `duplicateResult` listing the matches, per object.
    fn duplicates_detected(&self, ctx: &UpsertCtx<'_>, matches: &[String]) -> SfError {
        let block = ctx.rule == DuplicateRule::Block;
        let mut by_object: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for id in matches {
            if let Some(r) = self.records.get(id) {
                let name = r.object.name();
                by_object.entry(name).or_default().push(json!({
                    "additionalInformation": [],
                    "fieldDiffs": [],
                    "matchConfidence": 100.0,
                    "record": {
                        "attributes": {"type": name, "url": format!("/services/data/{}/sobjects/{name}/{id}", ctx.version)},
                        "Id": id,
                    },
                }));
            }
        }
        let match_results: Vec<Value> = by_object
            .into_iter()
            .map(|(name, records)| {
                json!({
                    "entityType": name,
                    "errors": [],
                    "matchEngine": "ExactMatchEngine",
                    "matchRecords": records,
                    "rule": format!("Sim_{name}_Email_Matching_Rule"),
                    "size": records.len(),
                    "success": true,
                })
            })
            .collect();
        let object = ctx.object.name();
        let warning = "You're creating a duplicate record. We recommend you use an existing record instead.";
        let mut e = SfError::new(
            "DUPLICATES_DETECTED",
            if block { warning } else { "Use one of these records?" },
            &[],
        );
        e.duplicate_result = Some(json!({
            "allowSave": !block,
            "duplicateRule": format!("Sim_{object}_Email_Duplicate_Rule"),
            "duplicateRuleEntityType": object,
            "errorMessage": warning,
            "matchResults": match_results,
        }));
        e
    }

    /// Deletes records by id (any object; an Account's Contacts go with it, as in
    /// Salesforce). Per id: the 18-character id, or an error and the id to report (`None`
    /// for a malformed one).
    pub fn delete(&mut self, ids: &[String], all_or_none: bool) -> Vec<Result<String, (Option<String>, SfError)>> {
        let backup = all_or_none.then(|| self.clone());
        let mut results: Vec<Result<String, (Option<String>, SfError)>> = ids
            .iter()
            .map(|given| {
                let Some(id) = ids::normalize(given) else {
                    return Err((None, SfError::new("MALFORMED_ID", format!("malformed id {given}"), &[])));
                };
                if !self.records.contains_key(&id) {
                    return Err((
                        Some(given.clone()),
                        SfError::new("ENTITY_IS_DELETED", "entity is deleted", &[]),
                    ));
                }
                self.remove(&id);
                Ok(id)
            })
            .collect();
        if let Some(backup) = backup
            && results.iter().any(Result::is_err)
        {
            *self = backup;
            for r in &mut results {
                if let Ok(id) = r {
                    *r = Err((Some(id.clone()), SfError::rolled_back()));
                }
            }
        }
        results
    }

    fn remove(&mut self, id: &str) {
        self.unindex(id);
        let Some(rec) = self.records.remove(id) else {
            return;
        };
        if let Some(ext) = rec.fields.get(&self.ext_field).and_then(Value::as_str) {
            let key = (rec.object, ext.to_string());
            if self.ext_index.get(&key).is_some_and(|x| x == id) {
                self.ext_index.remove(&key);
            }
        }
        if rec.object == SObject::Account {
            let contacts: Vec<String> = self
                .of(SObject::Contact)
                .filter(|c| c.fields.get("AccountId").and_then(Value::as_str) == Some(id))
                .map(|c| c.id.clone())
                .collect();
            for c in contacts {
                self.remove(&c);
            }
        }
    }

    /// Converts a Lead: a Contact with its names, Email, Phone, Title and external id, under
    /// the Account whose website matches the Email's domain, else under a new Account named
    /// after the Company; the Lead is marked converted. Duplicate rules do not run on
    /// conversion (as in Salesforce). Returns the Contact's and the Account's ids.
    pub fn convert_lead(&mut self, lead_id: &str, now: &str) -> Result<(String, String), String> {
        let lead = self
            .get(lead_id)
            .filter(|r| r.object == SObject::Lead)
            .ok_or_else(|| format!("`{lead_id}` is not a Lead of this org"))?
            .clone();
        if lead.converted() {
            return Err(format!("Lead `{}` is already converted", lead.id));
        }
        let ext = lead
            .fields
            .get(&self.ext_field)
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(ext) = &ext
            && let Some(other) = self.ext_index.get(&(SObject::Contact, ext.clone()))
        {
            return Err(format!(
                "Contact `{other}` already holds {} `{ext}` (DUPLICATE_VALUE)",
                self.ext_field
            ));
        }
        let domain = lead.fields.get("Email").and_then(Value::as_str).and_then(email_domain);
        let account = match domain.and_then(|d| self.account_for_domain(&d)) {
            Some(id) => id,
            None => {
                let company = lead.fields.get("Company").and_then(Value::as_str).unwrap_or("Unknown");
                self.add_account(company, None, now)
            }
        };
        let mut fields = Map::new();
        for f in ["FirstName", "LastName", "Email", "Phone", "Title"] {
            if let Some(v) = lead.fields.get(f) {
                fields.insert(f.to_string(), v.clone());
            }
        }
        if let Some(ext) = ext {
            fields.insert(self.ext_field.clone(), json!(ext));
        }
        fields.insert("AccountId".into(), json!(account));
        let contact = self.insert(SObject::Contact, fields, now);
        self.unindex(&lead.id);
        if let Some(r) = self.records.get_mut(&lead.id) {
            r.fields.insert("IsConverted".into(), json!(true));
            r.fields.insert("ConvertedContactId".into(), json!(contact));
            r.fields.insert("ConvertedAccountId".into(), json!(account));
            r.modified = now.to_string();
        }
        Ok((contact, account))
    }
}

fn too_long(field: &str, label: &str, value: &str, max: usize) -> SfError {
    SfError::new(
        "STRING_TOO_LONG",
        format!("{label}: data value too large: {value} (max length={max})"),
        &[field],
    )
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks one record of a request body: a JSON object (with `attributes.type` naming
/// `object` when `needs_type`, as sObject Collections require), whose other keys are writable
/// fields of the object (`INVALID_FIELD` for unknown ones, `INVALID_FIELD_FOR_INSERT_UPDATE`
/// for read-only ones) holding strings or `null` (`JSON_PARSER_ERROR` otherwise). Returns the
/// fields under their canonical names. Any error fails the whole request.
pub fn check_record(
    object: SObject,
    ext_field: &str,
    rec: &Value,
    needs_type: bool,
) -> Result<Map<String, Value>, SfError> {
    let Value::Object(map) = rec else {
        return Err(SfError::new(
            "JSON_PARSER_ERROR",
            format!(
                "Cannot deserialize instance of {} from {} value",
                object.name(),
                kind_of(rec)
            ),
            &[],
        ));
    };
    let declared = map
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    match declared {
        None if needs_type => {
            return Err(SfError::new("INVALID_TYPE", "Must send a concrete entity type.", &[]));
        }
        Some(t) if !t.eq_ignore_ascii_case(object.name()) => {
            return Err(SfError::new(
                "INVALID_TYPE",
                format!(
                    "The records must all be of the type in the URL: {} (got {t})",
                    object.name()
                ),
                &[],
            ));
        }
        _ => {}
    }
    let mut out = Map::new();
    for (key, value) in map {
        if key == "attributes" {
            continue;
        }
        let writable = (object.has_ext_id() && key.eq_ignore_ascii_case(ext_field))
            .then_some(ext_field)
            .or_else(|| object.writable().iter().copied().find(|f| f.eq_ignore_ascii_case(key)));
        let Some(field) = writable else {
            return Err(match object.field(ext_field, key) {
                Some(f) => SfError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!(
                        "Unable to create/update fields: {f}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                    ),
                    &[f],
                ),
                None => SfError::new(
                    "INVALID_FIELD",
                    format!("No such column '{key}' on sobject of type {}", object.name()),
                    &[],
                ),
            });
        };
        if !matches!(value, Value::String(_) | Value::Null) {
            return Err(SfError::new(
                "JSON_PARSER_ERROR",
                format!(
                    "Cannot deserialize instance of string from {} value {value} or request may be missing a required field",
                    kind_of(value)
                ),
                &[],
            ));
        }
        out.insert(field.to_string(), value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT: &str = "Nylas_Contact_Id__c";

    fn ctx(object: SObject, rule: DuplicateRule, allow_save: bool) -> UpsertCtx<'static> {
        UpsertCtx {
            object,
            rule,
            allow_save,
            all_or_none: false,
            now: "2024-01-01T00:00:00.000+0000",
            version: "v60.0",
        }
    }

    fn rec(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect()
    }

    fn code(r: &ItemResult) -> &str {
        r.as_ref().err().map_or("OK", |e| e.code)
    }

    #[test]
    fn upsert_inserts_then_updates_by_external_id_keeping_absent_fields() {
        let mut s = Store::new("sforg-t", EXT);
        let c = ctx(SObject::Contact, DuplicateRule::None, false);
        let first = s.upsert(&c, &[rec(&[(EXT, "n1"), ("LastName", "Doe"), ("Title", "CEO")])]);
        let (id, created) = first.results[0].clone().expect("ok");
        assert!(created);
        let second = s.upsert(&c, &[rec(&[(EXT, "n1"), ("LastName", "Roe")])]);
        assert_eq!(second.results[0], Ok((id.clone(), false)));
        let r = s.get(&id).expect("record");
        assert_eq!(r.value("LastName"), json!("Roe"));
        assert_eq!(r.value("Title"), json!("CEO"));
        let mut clear = rec(&[(EXT, "n1")]);
        clear.insert("Title".into(), Value::Null);
        s.upsert(&c, &[clear]);
        assert_eq!(s.get(&id).expect("record").value("Title"), Value::Null);
    }

    #[test]
    fn per_record_rules_fail_only_their_record() {
        let mut s = Store::new("sforg-t", EXT);
        let c = ctx(SObject::Lead, DuplicateRule::None, false);
        let out = s.upsert(
            &c,
            &[
                rec(&[("LastName", "A"), ("Company", "X")]),
                rec(&[(EXT, "dup"), ("LastName", "A"), ("Company", "X")]),
                rec(&[(EXT, "dup"), ("LastName", "B"), ("Company", "X")]),
                rec(&[(EXT, "m"), ("FirstName", "A")]),
                rec(&[(EXT, "long"), ("LastName", &"x".repeat(81)), ("Company", "X")]),
                rec(&[
                    (EXT, "mail"),
                    ("LastName", "A"),
                    ("Company", "X"),
                    ("Email", "a b@x.com"),
                ]),
                rec(&[(EXT, "ok"), ("LastName", &"é".repeat(80)), ("Company", "X")]),
            ],
        );
        let codes: Vec<&str> = out.results.iter().map(code).collect();
        assert_eq!(
            codes,
            [
                "MISSING_ARGUMENT",
                "DUPLICATE_VALUE",
                "DUPLICATE_VALUE",
                "REQUIRED_FIELD_MISSING",
                "STRING_TOO_LONG",
                "INVALID_EMAIL_ADDRESS",
                "OK"
            ]
        );
        assert_eq!(
            out.results[3].as_ref().err().map(|e| e.fields.clone()),
            Some(vec!["LastName".to_string(), "Company".to_string()])
        );
        assert_eq!((out.created, out.failed), (1, 6));
    }

    #[test]
    fn all_or_none_rolls_everything_back() {
        let mut s = Store::new("sforg-t", EXT);
        let mut c = ctx(SObject::Contact, DuplicateRule::None, false);
        c.all_or_none = true;
        let out = s.upsert(&c, &[rec(&[(EXT, "a"), ("LastName", "A")]), rec(&[(EXT, "b")])]);
        let codes: Vec<&str> = out.results.iter().map(code).collect();
        assert_eq!(codes, ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "REQUIRED_FIELD_MISSING"]);
        assert_eq!(s.count(SObject::Contact), 0);
    }

    #[test]
    fn duplicate_rules_match_other_records_by_email_but_not_within_a_request() {
        let mut s = Store::new("sforg-t", EXT);
        let none = ctx(SObject::Contact, DuplicateRule::None, false);
        s.upsert(&none, &[rec(&[(EXT, "a"), ("LastName", "A"), ("Email", "Same@x.com")])]);
        let alert = ctx(SObject::Lead, DuplicateRule::Alert, false);
        let lead = rec(&[(EXT, "b"), ("LastName", "B"), ("Company", "C"), ("Email", "same@X.com")]);
        let out = s.upsert(&alert, std::slice::from_ref(&lead));
        assert_eq!(code(&out.results[0]), "DUPLICATES_DETECTED");
        assert_eq!(out.duplicates_blocked, 1);
        let dup = out.results[0].as_ref().err().and_then(|e| e.duplicate_result.clone());
        assert_eq!(dup.as_ref().map(|d| d["allowSave"].clone()), Some(json!(true)));
        let allowed = ctx(SObject::Lead, DuplicateRule::Alert, true);
        assert_eq!(code(&s.upsert(&allowed, std::slice::from_ref(&lead)).results[0]), "OK");
        let block = ctx(SObject::Contact, DuplicateRule::Block, true);
        let other = rec(&[(EXT, "c"), ("LastName", "C"), ("Email", "SAME@x.com")]);
        assert_eq!(code(&s.upsert(&block, &[other]).results[0]), "DUPLICATES_DETECTED");
        // Re-saving a record without changing its Email does not run the rule.
        let again = rec(&[(EXT, "a"), ("LastName", "A2"), ("Email", "Same@x.com")]);
        assert_eq!(code(&s.upsert(&block, &[again]).results[0]), "OK");
        // Two new records sharing an Email in one request are not compared with each other.
        let pair = [
            rec(&[(EXT, "p1"), ("LastName", "P"), ("Email", "pair@x.com")]),
            rec(&[(EXT, "p2"), ("LastName", "P"), ("Email", "pair@x.com")]),
        ];
        assert!(s.upsert(&block, &pair).results.iter().all(Result::is_ok));
    }

    #[test]
    fn converted_leads_refuse_lead_upserts_and_their_contact_takes_the_external_id() {
        let mut s = Store::new("sforg-t", EXT);
        let acme = s.add_account("Acme", Some("https://www.acme.io"), "now");
        let lead_ctx = ctx(SObject::Lead, DuplicateRule::None, false);
        let out = s.upsert(
            &lead_ctx,
            &[rec(&[
                (EXT, "n1"),
                ("LastName", "L"),
                ("Company", "Acme"),
                ("Email", "l@acme.io"),
            ])],
        );
        let (lead, _) = out.results[0].clone().expect("lead");
        let (contact, account) = s.convert_lead(&lead, "later").expect("convert");
        assert_eq!(account, acme, "matched by website domain");
        assert!(s.convert_lead(&lead, "later").is_err(), "only once");
        let again = s.upsert(
            &lead_ctx,
            &[rec(&[(EXT, "n1"), ("LastName", "L"), ("Company", "Acme")])],
        );
        assert_eq!(code(&again.results[0]), "CANNOT_UPDATE_CONVERTED_LEAD");
        let c = ctx(SObject::Contact, DuplicateRule::None, false);
        assert_eq!(
            s.upsert(&c, &[rec(&[(EXT, "n1"), ("LastName", "L")])]).results[0],
            Ok((contact, false))
        );
    }

    #[test]
    fn delete_answers_entity_is_deleted_for_unknown_ids() {
        let mut s = Store::new("sforg-t", EXT);
        let c = ctx(SObject::Contact, DuplicateRule::None, false);
        let (id, _) = s.upsert(&c, &[rec(&[(EXT, "a"), ("LastName", "A")])]).results[0]
            .clone()
            .expect("ok");
        let out = s.delete(&[id.clone(), id[..15].to_string(), "bad".to_string()], false);
        assert_eq!(out[0], Ok(id.clone()));
        assert_eq!(out[1].as_ref().err().map(|(_, e)| e.code), Some("ENTITY_IS_DELETED"));
        assert_eq!(out[2].as_ref().err().map(|(_, e)| e.code), Some("MALFORMED_ID"));
        // The external id is free again: an upsert inserts.
        assert!(
            s.upsert(&c, &[rec(&[(EXT, "a"), ("LastName", "A")])]).results[0]
                .as_ref()
                .is_ok_and(|(_, created)| *created)
        );
    }

    #[test]
    fn check_record_names_fields_canonically_and_refuses_others() {
        let ok = check_record(
            SObject::Contact,
            EXT,
            &json!({"attributes": {"type": "contact"}, "lastname": "x", "nylas_contact_id__c": "1", "Email": null}),
            true,
        )
        .expect("ok");
        assert_eq!(
            ok,
            json!({"LastName": "x", EXT: "1", "Email": null})
                .as_object()
                .cloned()
                .expect("map")
        );
        let code = |v: Value, needs_type: bool| {
            check_record(SObject::Contact, EXT, &v, needs_type)
                .err()
                .map(|e| e.code)
        };
        assert_eq!(code(json!({"LastName": "x"}), true), Some("INVALID_TYPE"));
        assert_eq!(code(json!({"LastName": "x"}), false), None);
        assert_eq!(
            code(json!({"attributes": {"type": "Lead"}}), true),
            Some("INVALID_TYPE")
        );
        assert_eq!(code(json!({"Company": "x"}), false), Some("INVALID_FIELD"));
        assert_eq!(code(json!({"Id": "x"}), false), Some("INVALID_FIELD_FOR_INSERT_UPDATE"));
        assert_eq!(code(json!({"LastName": 5}), false), Some("JSON_PARSER_ERROR"));
        assert_eq!(code(json!([1]), false), Some("JSON_PARSER_ERROR"));
    }

    #[test]
    fn datetimes_look_like_salesforce_ones() {
        assert_eq!(sf_datetime(1_723_821_985.25), "2024-08-16T15:26:25.250+0000");
    }
}
