//! Mapping a [`Contact`] to the record a CRM receives, whatever the CRM.
//!
//! | field | from | when too long |
//! |---|---|---|
//! | `email` (the match key) | first *usable* email: trimmed, lowercased, plausible, within the limit | the contact is **skipped** (`email_too_long`): a cut email is another address |
//! | `last_name` (mandatory everywhere) | surname, else the email's local part | truncated |
//! | `first_name` | given name | truncated |
//! | `phone` | first non-blank phone number | the field is **left out**: a cut phone number is a wrong number |
//! | `company` | company name | truncated |
//! | `title` | job title | truncated |
//!
//! Limits are the sink's ([`FieldLimits`]: each CRM folder of `crmsync-sink` defines its own),
//! counted in characters; truncation cuts at a character boundary and trims trailing
//! whitespace. Every adjustment is reported, so a run can count what it changed.
//!
//! A contact without a usable email is **skipped, never sent blind**: records are found again
//! by their email (Zoho) or at least must carry one for activity capture (Salesforce).

use crate::contact::Contact;

/// Field limits of a CRM's contact record, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    pub first_name: usize,
    pub last_name: usize,
    pub email: usize,
    pub phone: usize,
    pub company: usize,
    pub title: usize,
}

/// A contact as a CRM record, before any CRM's field names: what crmsync writes, hashes to
/// skip unchanged writes, and keeps in the write buffer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrmRecord {
    pub first_name: Option<String>,
    pub last_name: String,
    /// Trimmed and lowercased.
    pub email: String,
    pub phone: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
}

/// How a CRM finds a contact's record again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKey {
    /// By email (Zoho's upsert `duplicate_check_fields: ["Email"]`): contacts sharing an email
    /// share one record, owned by the smallest contact id; an email change moves the record.
    Email,
    /// By the contact's own id, kept in the record (Salesforce's external id): one record per
    /// contact, whatever its email.
    ContactId,
}

/// A field the mapping may shorten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    FirstName,
    LastName,
    Company,
    Title,
}

/// Why a contact was not sent to the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// No email at all (no list, an empty list, or only blank entries).
    NoEmail,
    /// Emails present, but none is a plausible address.
    InvalidEmail,
    /// The only plausible email is longer than the CRM's Email field.
    EmailTooLong,
    /// Another contact of the address book has the same email; the CRM keeps one record for
    /// both (the contact with the smallest Nylas id wins, so the result does not depend on
    /// the order pages are processed in).
    SharedEmail,
}

impl SkipReason {
    /// Stable snake_case name, used in run counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            SkipReason::NoEmail => "no_email",
            SkipReason::InvalidEmail => "invalid_email",
            SkipReason::EmailTooLong => "email_too_long",
            SkipReason::SharedEmail => "shared_email",
        }
    }

    pub const ALL: [SkipReason; 4] = [
        SkipReason::NoEmail,
        SkipReason::InvalidEmail,
        SkipReason::EmailTooLong,
        SkipReason::SharedEmail,
    ];
}

/// A change the mapping made to fit the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Adjustment {
    /// A field was cut to its limit.
    Truncated(Field),
    /// The phone number was too long and was left out.
    PhoneDropped,
    /// No surname: Last_Name is the email's local part.
    LastNameFromEmail,
}

/// The result of mapping one contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    Mapped {
        record: CrmRecord,
        adjustments: Vec<Adjustment>,
    },
    Skipped(SkipReason),
}

/// A plausible email: one `@`, a non-empty local part, a domain with a dot and no empty
/// labels at its ends, no whitespace or control characters.
pub fn is_plausible_email(s: &str) -> bool {
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn clean(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn fit(value: &str, limit: usize, field: Field, adj: &mut Vec<Adjustment>) -> String {
    if value.chars().count() <= limit {
        return value.to_owned();
    }
    adj.push(Adjustment::Truncated(field));
    value.chars().take(limit).collect::<String>().trim_end().to_owned()
}

/// Maps a contact to the record crmsync writes, or says why it is skipped.
pub fn map_contact(c: &Contact, limits: &FieldLimits) -> MapOutcome {
    let candidates: Vec<String> = c
        .emails
        .iter()
        .filter_map(|e| clean(&e.email))
        .map(str::to_lowercase)
        .collect();
    let plausible: Vec<&String> = candidates.iter().filter(|e| is_plausible_email(e)).collect();
    let Some(email) = plausible.iter().find(|e| e.chars().count() <= limits.email) else {
        return MapOutcome::Skipped(if !plausible.is_empty() {
            SkipReason::EmailTooLong
        } else if !candidates.is_empty() {
            SkipReason::InvalidEmail
        } else {
            SkipReason::NoEmail
        });
    };
    let mut adj = Vec::new();
    let last_name = match clean(&c.surname) {
        Some(s) => fit(s, limits.last_name, Field::LastName, &mut adj),
        None => {
            adj.push(Adjustment::LastNameFromEmail);
            let local = email.split('@').next().unwrap_or(email);
            fit(local, limits.last_name, Field::LastName, &mut adj)
        }
    };
    let first_name = clean(&c.given_name).map(|s| fit(s, limits.first_name, Field::FirstName, &mut adj));
    let phone = c.phone_numbers.iter().find_map(|p| clean(&p.number)).and_then(|p| {
        if p.chars().count() <= limits.phone {
            Some(p.to_owned())
        } else {
            adj.push(Adjustment::PhoneDropped);
            None
        }
    });
    let company = clean(&c.company_name).map(|s| fit(s, limits.company, Field::Company, &mut adj));
    let title = clean(&c.job_title).map(|s| fit(s, limits.title, Field::Title, &mut adj));
    MapOutcome::Mapped {
        record: CrmRecord {
            first_name,
            last_name,
            email: (*email).clone(),
            phone,
            company,
            title,
        },
        adjustments: adj,
    }
}

/// Keeps one record per email among `(contact id, record)` pairs: the one with the smallest
/// contact id. Returns the kept pairs (in their original order) and the ids merged away.
pub fn dedupe_by_email(items: &[(String, CrmRecord)]) -> (Vec<&(String, CrmRecord)>, Vec<&str>) {
    let mut winner: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (id, r) in items {
        winner
            .entry(r.email.as_str())
            .and_modify(|w| {
                if id.as_str() < *w {
                    *w = id.as_str();
                }
            })
            .or_insert(id.as_str());
    }
    let mut kept = Vec::new();
    let mut merged = Vec::new();
    for item in items {
        if winner.get(item.1.email.as_str()) == Some(&item.0.as_str()) {
            kept.push(item);
        } else {
            merged.push(item.0.as_str());
        }
    }
    (kept, merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{ContactEmail, ContactPhone};

    fn with_emails(emails: &[&str]) -> Contact {
        Contact {
            id: "c1".into(),
            surname: Some("Doe".into()),
            emails: emails
                .iter()
                .map(|e| ContactEmail {
                    email: Some((*e).into()),
                    kind: None,
                })
                .collect(),
            ..Contact::default()
        }
    }

    /// Zoho's limits, the tighter of the two CRMs for most fields.
    const LIMITS: FieldLimits = FieldLimits {
        first_name: 40,
        last_name: 80,
        email: 100,
        phone: 30,
        company: 200,
        title: 100,
    };

    fn skipped(c: &Contact) -> Option<SkipReason> {
        match map_contact(c, &LIMITS) {
            MapOutcome::Skipped(r) => Some(r),
            MapOutcome::Mapped { .. } => None,
        }
    }

    #[test]
    fn picks_the_first_usable_email() {
        let c = with_emails(&["   ", "not an email", " Jane.DOE@Example.COM "]);
        let MapOutcome::Mapped { record, .. } = map_contact(&c, &LIMITS) else {
            panic!("mapped")
        };
        assert_eq!(record.email, "jane.doe@example.com");
    }

    #[test]
    fn skip_reasons() {
        assert_eq!(skipped(&with_emails(&[])), Some(SkipReason::NoEmail));
        assert_eq!(skipped(&with_emails(&["", "  "])), Some(SkipReason::NoEmail));
        assert_eq!(
            skipped(&with_emails(&["jane at example.com"])),
            Some(SkipReason::InvalidEmail)
        );
        let long = format!("{}@example.com", "a".repeat(95));
        assert_eq!(skipped(&with_emails(&[&long])), Some(SkipReason::EmailTooLong));
        assert_eq!(skipped(&with_emails(&[&long, "b@example.com"])), None);
    }

    #[test]
    fn plausible_emails() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(is_plausible_email(ok), "{ok}");
        }
        for bad in ["a@b", "@b.co", "a@@b.co", "a b@c.de", "a@.co", "a@co.", "plain"] {
            assert!(!is_plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn long_phone_is_dropped_not_cut() {
        let mut c = with_emails(&["a@b.co"]);
        c.phone_numbers = vec![ContactPhone {
            number: Some("+1 (555) 555-5555 ext. 1234567890123".into()),
            kind: None,
        }];
        let MapOutcome::Mapped { record, adjustments } = map_contact(&c, &LIMITS) else {
            panic!("mapped")
        };
        assert_eq!(record.phone, None);
        assert_eq!(adjustments, vec![Adjustment::PhoneDropped]);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut c = with_emails(&["a@b.co"]);
        c.given_name = Some("é".repeat(45));
        let MapOutcome::Mapped { record, adjustments } = map_contact(&c, &LIMITS) else {
            panic!("mapped")
        };
        assert_eq!(record.first_name.as_deref().map(|s| s.chars().count()), Some(40));
        assert_eq!(adjustments, vec![Adjustment::Truncated(Field::FirstName)]);
    }

    #[test]
    fn shared_emails_keep_the_smallest_contact_id() {
        let r = |email: &str, last: &str| CrmRecord {
            first_name: None,
            last_name: last.into(),
            email: email.into(),
            phone: None,
            company: None,
            title: None,
        };
        let items = vec![
            ("c9".to_string(), r("x@y.z", "Nine")),
            ("c2".to_string(), r("q@y.z", "Two")),
            ("c3".to_string(), r("x@y.z", "Three")),
        ];
        let (kept, merged) = dedupe_by_email(&items);
        assert_eq!(kept.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(), vec!["c2", "c3"]);
        assert_eq!(merged, vec!["c9"]);
    }
}
