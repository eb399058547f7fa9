//! Data-driven mapping tests: each `fixtures/<crm>/<case>.in.json` holds Nylas contacts as the
//! API sends them; `fixtures/<crm>/<case>.out.json` holds what crmsync sends to that CRM
//! (records after the shared-email merge, for a CRM matching on email; for Salesforce, which
//! matches on the contact, every record as a Lead and as a Contact) and what it skips, with
//! reasons and adjustments.
//!
//! Run with `UPDATE_FIXTURES=1` to rewrite the `.out.json` files from the current behaviour,
//! then review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use crmsync_domain::{CrmRecord, FieldLimits, MapOutcome, dedupe_by_email, map_contact};
use serde_json::{Value, json};

/// Contacts mapped with `limits`: (contact id, record), and skipped and adjusted ones.
type Mapped = (
    Vec<(String, CrmRecord)>,
    BTreeMap<String, Value>,
    BTreeMap<String, Value>,
);

fn map_all(input: &Value, limits: &FieldLimits) -> Mapped {
    let contacts: Vec<Value> = match input {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    let mut mapped = Vec::new();
    let mut skipped = BTreeMap::new();
    let mut adjustments = BTreeMap::new();
    for c in &contacts {
        let contact = crmsync_nylas::parse_contact(c).expect("fixture contact parses");
        match map_contact(&contact, limits) {
            MapOutcome::Mapped {
                record,
                adjustments: adj,
            } => {
                if !adj.is_empty() {
                    adjustments.insert(
                        contact.id.clone(),
                        json!(adj.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>()),
                    );
                }
                mapped.push((contact.id.clone(), record));
            }
            MapOutcome::Skipped(reason) => {
                skipped.insert(contact.id.clone(), json!(reason.as_str()));
            }
        }
    }
    (mapped, skipped, adjustments)
}

fn run_zoho(input: &Value) -> Value {
    let (mapped, mut skipped, adjustments) = map_all(input, &crmsync_sink::zoho::LIMITS);
    let (kept, merged) = dedupe_by_email(&mapped);
    for id in merged {
        skipped.insert(id.to_owned(), json!("shared_email"));
    }
    json!({
        "records": kept.iter().map(|(id, r)| json!({"nylas_id": id, "zoho": crmsync_sink::zoho::record_json(r)})).collect::<Vec<_>>(),
        "skipped": skipped,
        "adjustments": adjustments,
    })
}

/// Salesforce matches on the contact, so nothing is merged; where a record goes depends on the
/// org's Accounts, so both forms are shown (the Contact without an Account).
fn run_salesforce(input: &Value) -> Value {
    use crmsync_sink::salesforce::{LIMITS, contact_json, lead_json};
    let ext = "Nylas_Contact_Id__c";
    let (mapped, skipped, adjustments) = map_all(input, &LIMITS);
    json!({
        "records": mapped.iter().map(|(id, r)| json!({
            "nylas_id": id,
            "lead": lead_json(r, ext, id),
            "contact": contact_json(r, ext, id, None),
        })).collect::<Vec<_>>(),
        "skipped": skipped,
        "adjustments": adjustments,
    })
}

#[test]
fn nylas_contacts_map_to_zoho_records_as_the_fixtures_say() {
    check_fixtures("zoho", run_zoho);
}

#[test]
fn nylas_contacts_map_to_salesforce_records_as_the_fixtures_say() {
    check_fixtures("salesforce", run_salesforce);
}

fn check_fixtures(crm: &str, run_case: fn(&Value) -> Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(crm);
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "expected the fixture cases, found {}", cases.len());
    let mut failures = Vec::new();
    for input_path in cases {
        let name = input_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .trim_end_matches(".in.json")
            .to_owned();
        let input: Value = serde_json::from_str(&std::fs::read_to_string(&input_path).expect("read")).expect("json");
        let actual = run_case(&input);
        let out_path = dir.join(format!("{name}.out.json"));
        if update {
            std::fs::write(&out_path, serde_json::to_string_pretty(&actual).expect("json") + "\n").expect("write");
            continue;
        }
        let expected: Value = std::fs::read_to_string(&out_path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        if expected != actual {
            failures.push(format!(
                "case {name}:\nexpected {}\nactual   {}",
                serde_json::to_string_pretty(&expected).unwrap_or_default(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
