//! A Salesforce org as a tenant reaches it.

use crate::secret::Secret;

/// The API version used unless set (Summer '24; every call crmsync makes exists since v42.0).
pub const DEFAULT_API_VERSION: &str = "v60.0";
/// The external-id field on Contact and Lead unless set.
pub const DEFAULT_EXT_ID_FIELD: &str = "Nylas_Contact_Id__c";
/// The login server of production orgs; sandboxes use `https://test.salesforce.com`.
pub const PRODUCTION_LOGIN: &str = "https://login.salesforce.com";

/// Where a contact's record goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Routing {
    /// A Contact under the Account whose website has the email's domain, else a Lead.
    #[default]
    ContactOrLead,
    /// Always a Contact (without an Account when none matches).
    Contact,
    /// Always a Lead.
    Lead,
}

impl Routing {
    pub const ALL: [Routing; 3] = [Routing::ContactOrLead, Routing::Contact, Routing::Lead];

    pub fn as_str(&self) -> &'static str {
        match self {
            Routing::ContactOrLead => "contact-or-lead",
            Routing::Contact => "contact",
            Routing::Lead => "lead",
        }
    }

    pub fn parse(s: &str) -> Option<Routing> {
        Routing::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Where and how to reach one Salesforce org.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesforceConnection {
    /// The login server: `https://login.salesforce.com`, `https://test.salesforce.com` or the
    /// org's My Domain URL. The token endpoint names the instance the API is called on.
    pub login_url: String,
    /// The connected app's consumer key and secret.
    pub client_id: String,
    pub client_secret: Secret,
    /// Set with `crmsync tenant set --sf-refresh-token` or `crmsync salesforce exchange-code`.
    pub refresh_token: Option<Secret>,
    /// `vNN.N`.
    pub api_version: String,
    /// The external-id field holding the Nylas contact id, on both Contact and Lead.
    pub ext_id_field: String,
    pub routing: Routing,
    /// Send `Sforce-Duplicate-Rule-Header: allowSave=true` (saves past "alert" duplicate rules,
    /// never past "block" ones).
    pub allow_duplicates: bool,
}

impl SalesforceConnection {
    /// A connection with every default but the login server and the client.
    pub fn new(login_url: impl Into<String>, client_id: impl Into<String>, client_secret: Secret) -> Self {
        SalesforceConnection {
            login_url: login_url.into(),
            client_id: client_id.into(),
            client_secret,
            refresh_token: None,
            api_version: DEFAULT_API_VERSION.into(),
            ext_id_field: DEFAULT_EXT_ID_FIELD.into(),
            routing: Routing::default(),
            allow_duplicates: false,
        }
    }

    /// The login server without a trailing slash.
    pub fn login(&self) -> &str {
        self.login_url.trim_end_matches('/')
    }

    /// Same org: the same login server, client and refresh token (a refresh token is one user's
    /// grant in one org). The client secret only authenticates; the API version, the routing and
    /// the duplicate setting change what is written, not where.
    pub fn same_destination(&self, other: &SalesforceConnection) -> bool {
        self.same_place(other) && self.refresh_token == other.refresh_token
    }

    /// Same login server, client and external-id field (the grant may differ). Records are
    /// found by the external-id field: another one is another set of records.
    pub fn same_place(&self, other: &SalesforceConnection) -> bool {
        self.login() == other.login() && self.client_id == other.client_id && self.ext_id_field == other.ext_id_field
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.client_id.trim().is_empty() || self.client_secret.expose().trim().is_empty() {
            return Err(
                "the Salesforce client id and client secret are required (--sf-client-id, CRMSYNC_SF_CLIENT_SECRET)"
                    .into(),
            );
        }
        if !crate::tenant::is_url(self.login()) {
            return Err(format!(
                "the Salesforce login URL `{}` is not a URL (--sf-login-url: https://login.salesforce.com, https://test.salesforce.com or a My Domain URL)",
                self.login_url
            ));
        }
        if !valid_version(&self.api_version) {
            return Err(format!(
                "the Salesforce API version `{}` is not of the form vNN.N (--sf-api-version, e.g. {DEFAULT_API_VERSION})",
                self.api_version
            ));
        }
        if !valid_ext_field(&self.ext_id_field) {
            return Err(format!(
                "the external-id field `{}` is not a custom field name like {DEFAULT_EXT_ID_FIELD} (--sf-external-id-field)",
                self.ext_id_field
            ));
        }
        Ok(())
    }
}

/// `v` + digits + `.` + one digit, from v42.0 (sObject Collections upsert needs v46.0).
fn valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = rest.split_once('.') else {
        return false;
    };
    minor.len() == 1
        && minor.bytes().all(|b| b.is_ascii_digit())
        && major.parse::<u32>().is_ok_and(|m| (46..=99).contains(&m))
}

/// A custom field's API name: letters, digits and single underscores, ending `__c`, at most 43
/// characters (40 plus the suffix). It goes into URLs and SOQL, so nothing else is allowed.
fn valid_ext_field(f: &str) -> bool {
    let Some(name) = f.strip_suffix("__c") else {
        return false;
    };
    !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.contains("__")
        && !name.ends_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> SalesforceConnection {
        let mut c = SalesforceConnection::new(PRODUCTION_LOGIN, "3MVG9", Secret::new("s1"));
        c.refresh_token = Some(Secret::new("r1"));
        c
    }

    #[test]
    fn what_changes_the_destination_and_what_does_not() {
        let a = conn();
        for same in [
            |c: &mut SalesforceConnection| c.client_secret = Secret::new("s2"),
            |c: &mut SalesforceConnection| c.api_version = "v61.0".into(),
            |c: &mut SalesforceConnection| c.routing = Routing::Lead,
            |c: &mut SalesforceConnection| c.allow_duplicates = true,
            |c: &mut SalesforceConnection| c.login_url = format!("{PRODUCTION_LOGIN}/"),
        ] {
            let mut b = a.clone();
            same(&mut b);
            assert!(a.same_destination(&b), "{b:?}");
        }
        for change in [
            |c: &mut SalesforceConnection| c.login_url = "https://test.salesforce.com".into(),
            |c: &mut SalesforceConnection| c.client_id = "3MVG8".into(),
            |c: &mut SalesforceConnection| c.refresh_token = Some(Secret::new("r2")),
            |c: &mut SalesforceConnection| c.ext_id_field = "Other_Id__c".into(),
        ] {
            let mut b = a.clone();
            change(&mut b);
            assert!(!a.same_destination(&b), "{b:?}");
        }
    }

    #[test]
    fn settings_that_reach_urls_and_queries_are_checked() {
        assert!(conn().validate().is_ok());
        for (bad, field) in [
            ("v6.0", "version"),
            ("60.0", "version"),
            ("v60", "version"),
            ("v60.0/../x", "version"),
        ] {
            let mut c = conn();
            c.api_version = bad.into();
            assert!(c.validate().expect_err("refused").contains(field), "{bad}");
        }
        for bad in ["Nylas_Id", "x__c' OR Id != null", "__c", "A__b__c", "Id__c/x", "1a__c"] {
            let mut c = conn();
            c.ext_id_field = bad.into();
            assert!(c.validate().expect_err("refused").contains("external-id"), "{bad}");
        }
        let mut c = conn();
        c.login_url = "login.salesforce.com".into();
        assert!(c.validate().expect_err("refused").contains("login URL"));
        assert_eq!(Routing::parse(" Contact-Or-Lead "), Some(Routing::ContactOrLead));
        assert_eq!(Routing::parse("account"), None);
    }
}
