//! crmsync's domain: a mailbox contact as Nylas describes it, the CRM record it becomes
//! ([`CrmRecord`], before any CRM's field names), and the rules between them (which email is
//! the match key, what is too long, what is skipped and why).
//!
//! **Boundary:** this crate knows nothing about HTTP, JSON, Redis or any particular CRM. The
//! Nylas client and each sink convert their wire formats to and from these types by hand; each
//! sink brings its own [`FieldLimits`].

mod contact;
mod mapping;

pub use contact::{Contact, ContactEmail, ContactPhone, ImAddress, PhysicalAddress, WebPage};
pub use mapping::{
    Adjustment, CrmRecord, Field, FieldLimits, MapOutcome, MatchKey, SkipReason, dedupe_by_email, is_plausible_email,
    map_contact,
};
