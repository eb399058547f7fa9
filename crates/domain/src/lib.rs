//! crmsync's domain: a mailbox contact as Nylas describes it, the Zoho CRM contact record it
//! becomes, and the rules between them (which email is the match key, what is too long, what
//! is skipped and why).
//!
//! **Boundary:** this crate knows nothing about HTTP, JSON or Redis. The Nylas and Zoho client
//! crates convert their wire formats to and from these types by hand.

mod contact;
mod mapping;

pub use contact::{Contact, ContactEmail, ContactPhone, ImAddress, PhysicalAddress, WebPage};
pub use mapping::{
    Adjustment, FieldLimits, MapOutcome, SkipReason, ZohoContact, dedupe_by_email, is_plausible_email, map_contact,
};
