//! Where a tenant's contacts go: one CRM connection. Each CRM's settings are plain data here
//! (URLs, client ids, sealed secrets); the clients that use them live in `crmsync-sink`, one
//! folder per CRM. Two questions decide what a change of settings does to the fleet:
//! - [`Crm::same_destination`]: does the tenant still write to the same remote org? If not, the
//!   tenant gets a new destination id and starts with empty sync state (the next backfill
//!   writes every contact there) while the old destination's state is deleted.
//! - [`Crm::same_connection`]: are the credentials the same? If not, cached access tokens are
//!   dropped at once.

pub mod salesforce;
mod zoho;
pub mod zoho_dc;

pub use salesforce::{Routing, SalesforceConnection};
pub use zoho::ZohoConnection;

/// Which CRM a tenant writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrmKind {
    Zoho,
    Salesforce,
}

impl CrmKind {
    pub const ALL: [CrmKind; 2] = [CrmKind::Zoho, CrmKind::Salesforce];

    pub fn as_str(&self) -> &'static str {
        match self {
            CrmKind::Zoho => "zoho",
            CrmKind::Salesforce => "salesforce",
        }
    }

    /// The CRM's name for people.
    pub fn label(&self) -> &'static str {
        match self {
            CrmKind::Zoho => "Zoho CRM",
            CrmKind::Salesforce => "Salesforce",
        }
    }

    pub fn parse(s: &str) -> Option<CrmKind> {
        CrmKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// What the CRM's daily allowance is counted in, for messages.
    pub fn budget_unit(&self) -> &'static str {
        match self {
            CrmKind::Zoho => "credits",
            CrmKind::Salesforce => "requests",
        }
    }
}

impl std::fmt::Display for CrmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's CRM and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub enum Crm {
    Zoho(ZohoConnection),
    Salesforce(SalesforceConnection),
}

impl Crm {
    pub fn kind(&self) -> CrmKind {
        match self {
            Crm::Zoho(_) => CrmKind::Zoho,
            Crm::Salesforce(_) => CrmKind::Salesforce,
        }
    }

    /// Whether `other` writes to the same remote org: same CRM, same place, same client and
    /// the same grant of access. Secrets that only authenticate (a rotated client secret) do
    /// not change the destination.
    pub fn same_destination(&self, other: &Crm) -> bool {
        match (self, other) {
            (Crm::Zoho(a), Crm::Zoho(b)) => a.same_destination(b),
            (Crm::Salesforce(a), Crm::Salesforce(b)) => a.same_destination(b),
            _ => false,
        }
    }

    /// Whether `other` reaches the same place (CRM, data center or server, client): the most
    /// an operator's "same org" may change is the grant of access.
    pub fn same_place(&self, other: &Crm) -> bool {
        match (self, other) {
            (Crm::Zoho(a), Crm::Zoho(b)) => a.same_place(b),
            (Crm::Salesforce(a), Crm::Salesforce(b)) => a.same_place(b),
            _ => false,
        }
    }

    /// Whether every connection setting, secrets included, is the same.
    pub fn same_connection(&self, other: &Crm) -> bool {
        self == other
    }

    /// Checks the settings; `Err` holds what is wrong and which flag fixes it.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Crm::Zoho(z) => z.validate(),
            Crm::Salesforce(s) => s.validate(),
        }
    }

    pub fn zoho(&self) -> Option<&ZohoConnection> {
        match self {
            Crm::Zoho(z) => Some(z),
            Crm::Salesforce(_) => None,
        }
    }

    pub fn salesforce(&self) -> Option<&SalesforceConnection> {
        match self {
            Crm::Salesforce(s) => Some(s),
            Crm::Zoho(_) => None,
        }
    }

    /// Whether the connection holds a refresh token (nothing is written without one).
    pub fn has_refresh_token(&self) -> bool {
        match self {
            Crm::Zoho(z) => z.refresh_token.is_some(),
            Crm::Salesforce(s) => s.refresh_token.is_some(),
        }
    }
}
