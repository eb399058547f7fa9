//! The Zoho Contacts record crmsync writes: field limits for the mapping, and the JSON.
//!
//! | Zoho field | from | limit |
//! |---|---|---|
//! | `Email` (the match key) | the record's email | 100 |
//! | `Last_Name` (mandatory) | last name | 80 |
//! | `First_Name` | first name | 40 |
//! | `Phone` | phone | 30 |
//! | `Account_Name` | company | 200 |
//! | `Title` | title | 100 |
//!
//! Limits are Zoho's defaults for the Contacts module, in characters.

use crmsync_domain::{CrmRecord, FieldLimits};
use serde_json::{Value, json};

/// Zoho CRM's default Contacts limits.
pub const LIMITS: FieldLimits = FieldLimits {
    first_name: 40,
    last_name: 80,
    email: 100,
    phone: 30,
    company: 200,
    title: 100,
};

/// The JSON of one Contacts record. Absent optional fields are sent as `null`, so the CRM
/// mirrors the address book (a removed phone number is cleared).
pub fn record_json(r: &CrmRecord) -> Value {
    json!({
        "First_Name": r.first_name,
        "Last_Name": r.last_name,
        "Email": r.email,
        "Phone": r.phone,
        "Account_Name": r.company,
        "Title": r.title,
    })
}
