//! Salesforce behind the seam. One file per concern:
//! - [`mapping`]: the Contact and Lead JSON of a record (field table there);
//! - [`request`]: the calls ([`SfCall`]): every API request costs 1 unit of the org's daily
//!   request allowance, known before it is sent; `GET limits` is the usage probe;
//! - [`service`]: [`SalesforceHttp`], the tower service that sends a call with the tenant's
//!   session (a 401 `INVALID_SESSION_ID` gets one refresh and one retry), and [`SfReply`] with
//!   the org's usage from `Sforce-Limit-Info`;
//! - `retry`: every failure classified once into what the caller does next ([`CODES`]);
//! - [`token`]: the fleet-wide session cache ([`SfTokens`]) and the grant-code exchange;
//! - [`accounts`]: the org's Accounts by website domain ([`SfAccounts`]), for routing;
//! - `dto`: Salesforce's answers, read by hand;
//! - `sink`: the strategies ([`SalesforceSink`]).
//!
//! **Strategy.** Records are matched on the contact: the Nylas contact id is the value of an
//! external-id field on both Contact and Lead, and writes are sObject Collections upserts keyed
//! on it (so an email change updates the same record, and contacts sharing an email are
//! separate records). Where a record goes:
//! - the object crmsync last wrote for the contact wins (a rid `003…` is a Contact, `00Q…` a
//!   Lead), so a record never hops between objects when an Account appears or goes;
//! - otherwise the tenant's [`Routing`]: a Contact under the Account whose website has the
//!   email's domain, else a Lead (`ContactOrLead`); always a Contact; always a Lead;
//! - a Lead that a user converted answers `CANNOT_UPDATE_CONVERTED_LEAD`: it is written again,
//!   in one more call, as a Contact with the same external id (the converted Contact keeps it),
//!   so the Contact is updated and no new Lead appears.
//!
//! Deletes: a known Contact id is deleted by id; anything else (a Lead id, which may have been
//! converted since, or no id) is found by external id with SOQL first.
//!
//! Reads (for reconcile, `read`): the Contacts, then the unconverted Leads, holding an external
//! id, with SOQL in Id order, 1 request per page of up to 2,000 rows; keyed on the external id,
//! without a company (see [`PROFILE`]'s `comparable`).
//!
//! **Worker wiring** (one [`SfTokens`] and one [`SfAccounts`] per process, shared by every
//! tenant, like Zoho's token broker):
//!
//! ```ignore
//! let tokens = SfTokens::new(conn.clone(), http.clone(), Arc::new(key.clone())).with_time_scale(scale);
//! let accounts = SfAccounts::new(conn.clone()).with_time_scale(scale);
//! // per flush:
//! let org = SfOrg::of(namespace, tenant)?;
//! let svc = limits.layer(SalesforceHttp::new(http.clone(), tokens.clone(), org.clone()));
//! let sink = SalesforceSink::new(svc, &org, accounts.clone());
//! ```

pub mod accounts;
mod dto;
pub mod mapping;
mod read;
pub mod request;
mod retry;
pub mod service;
mod sink;
pub mod token;

pub use accounts::{AccountDomains, SfAccounts, website_domain};
pub use crmsync_tenants::Routing;
pub use mapping::{contact_json, email_domain, lead_company, lead_json};
pub use request::{SfCall, SfObject, SfOp};
pub use retry::CODES;
pub use service::{SalesforceHttp, SfReply, parse_limit_info};
pub use sink::SalesforceSink;
pub use token::{SfOrg, SfToken, SfTokens, exchange_code};

use crate::{CrmKind, CrmRecord, FieldLimits, MatchKey, SinkProfile};

/// Salesforce's field lengths on Contact and Lead, in characters.
pub const LIMITS: FieldLimits = FieldLimits {
    first_name: 40,
    last_name: 80,
    email: 80,
    phone: 40,
    company: 255,
    title: 128,
};

/// Most records per sObject Collections call.
pub const MAX_BATCH: usize = 200;

/// Most writes a flush takes: 7 calls' worth. A collections upsert takes one object, and a
/// batch of a book mixes Contacts and Leads, so each object's last call of a batch is partial:
/// split into two 200-record batches, a mixed book would cost about twice the minimum; taken
/// 1,400 at a time, at most 2 of every 8 calls are partial (≤ 5.8 requests per 1,000 records).
pub const MAX_TAKE: usize = 7 * MAX_BATCH;

/// Salesforce's profile: matched on the contact (the external-id field), 200 records per call,
/// API requests; the company is not comparable.
pub const PROFILE: SinkProfile = SinkProfile {
    kind: CrmKind::Salesforce,
    match_key: MatchKey::ContactId,
    max_batch: MAX_BATCH,
    max_take: MAX_TAKE,
    field_limits: LIMITS,
    unit: "requests",
    comparable: without_company,
};

/// What Salesforce keeps of a record comparably: all but the company. A Lead's `Company` is
/// the record's company or, failing that, the email's domain (Salesforce requires one), and a
/// Contact has none (its Account is routing's, or the conversion's, and crmsync never updates
/// it); so neither tells what the address book says.
fn without_company(r: &CrmRecord) -> CrmRecord {
    CrmRecord {
        company: None,
        ..r.clone()
    }
}

/// The largest answer read from the API: a 200-record upsert answers about 30 KB, a
/// 2,000-row page of Accounts about 600 KB.
pub(crate) const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// The largest answer read from the token endpoint.
pub(crate) const MAX_TOKEN_ANSWER: usize = 64 * 1024;
