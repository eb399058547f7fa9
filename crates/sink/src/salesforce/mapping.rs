//! The Contact and Lead records crmsync writes. The record comes from the domain mapping,
//! already cut to [`super::LIMITS`].
//!
//! | Salesforce field | object | from | limit |
//! |---|---|---|---|
//! | the external-id field (e.g. `Nylas_Contact_Id__c`; the match key) | both | the Nylas contact id | 255 |
//! | `LastName` (required) | both | last name | 80 |
//! | `FirstName` | both | first name | 40 |
//! | `Email` | both | the record's email | 80 |
//! | `Phone` | both | phone | 40 |
//! | `Title` | both | title | 128 |
//! | `Company` (required) | Lead | company, else the email's domain | 255 |
//! | `AccountId` | Contact | the Account whose website has the email's domain, when crmsync routes a new Contact there | – |
//!
//! Absent optional fields are sent as `null`, so the CRM mirrors the address book (a removed
//! phone number is cleared). `AccountId` is never sent as `null`: crmsync sets it when it
//! routes a contact to an Account and leaves it alone afterwards (a Contact a user moved to
//! another Account, or one made by a lead conversion, keeps its Account).

use crmsync_domain::CrmRecord;
use serde_json::{Map, Value, json};

use super::LIMITS;

/// Company of a Lead when the record has none and its email has no domain (Salesforce's own
/// placeholder for web-to-lead).
const NO_COMPANY: &str = "[not provided]";

/// The lowercased domain of an email address (after its last `@`), if it has one.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    (domain.contains('.') && !domain.starts_with('.')).then_some(domain)
}

/// The Lead's `Company`: the record's company, else the email's domain (Salesforce refuses a
/// Lead without one), at most 255 characters.
pub fn lead_company(r: &CrmRecord) -> String {
    let company = r
        .company
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .or_else(|| email_domain(&r.email))
        .unwrap_or_else(|| NO_COMPANY.to_owned());
    company.chars().take(LIMITS.company).collect()
}

fn common(r: &CrmRecord, ext_field: &str, contact_id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("FirstName".into(), json!(r.first_name));
    m.insert("LastName".into(), json!(r.last_name));
    m.insert("Email".into(), json!(r.email));
    m.insert("Phone".into(), json!(r.phone));
    m.insert("Title".into(), json!(r.title));
    m.insert(ext_field.to_owned(), json!(contact_id));
    m
}

/// The JSON of a Contact (without `attributes`, which the call adds). `account_id`: the
/// Account routing found; none leaves the Contact's Account as it is.
pub fn contact_json(r: &CrmRecord, ext_field: &str, contact_id: &str, account_id: Option<&str>) -> Value {
    let mut m = common(r, ext_field, contact_id);
    if let Some(a) = account_id {
        m.insert("AccountId".into(), json!(a));
    }
    Value::Object(m)
}

/// The JSON of a Lead (without `attributes`).
pub fn lead_json(r: &CrmRecord, ext_field: &str, contact_id: &str) -> Value {
    let mut m = common(r, ext_field, contact_id);
    m.insert("Company".into(), json!(lead_company(r)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(email: &str, company: Option<&str>) -> CrmRecord {
        CrmRecord {
            first_name: None,
            last_name: "Lovelace".into(),
            email: email.into(),
            phone: Some("+44 20 7946 0958".into()),
            company: company.map(str::to_owned),
            title: None,
        }
    }

    #[test]
    fn leads_need_a_company_and_get_the_email_domain() {
        assert_eq!(
            lead_company(&rec("ada@Engines.example.com", None)),
            "engines.example.com"
        );
        assert_eq!(lead_company(&rec("ada@example.com", Some("  "))), "example.com");
        assert_eq!(lead_company(&rec("ada@example.com", Some("Analytical"))), "Analytical");
        assert_eq!(lead_company(&rec("nobody", None)), NO_COMPANY);
        let long = format!("ada@{}.com", "x".repeat(300));
        assert_eq!(lead_company(&rec(&long, None)).chars().count(), 255);
    }

    #[test]
    fn absent_fields_are_null_and_account_id_only_when_found() {
        let r = rec("ada@example.com", None);
        let c = contact_json(&r, "Nylas_Contact_Id__c", "c1", None);
        assert_eq!(c["FirstName"], Value::Null);
        assert_eq!(c["Title"], Value::Null);
        assert_eq!(c["Nylas_Contact_Id__c"], "c1");
        assert!(c.get("AccountId").is_none(), "never null: {c}");
        assert!(c.get("Company").is_none());
        let c = contact_json(&r, "Nylas_Contact_Id__c", "c1", Some("001xx"));
        assert_eq!(c["AccountId"], "001xx");
        let l = lead_json(&r, "Nylas_Contact_Id__c", "c1");
        assert_eq!(l["Company"], "example.com");
        assert_eq!(l["Phone"], "+44 20 7946 0958");
        assert!(l.get("AccountId").is_none());
    }
}
