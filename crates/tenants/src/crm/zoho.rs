//! A Zoho CRM org as a tenant reaches it.

use super::zoho_dc;
use crate::secret::Secret;

/// Where and how to reach one Zoho CRM org.
#[derive(Debug, Clone, PartialEq)]
pub struct ZohoConnection {
    /// Data center code (`us`, `eu`, `in`, `au`, `jp`, `cn`, `ca`, `sa`, `uk`).
    pub region: Option<String>,
    /// Overrides the region's accounts server.
    pub accounts_url: Option<String>,
    /// Overrides the API domain the token endpoint returns.
    pub api_domain: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    /// Set with `crmsync tenant set --zoho-refresh-token` or `crmsync zoho exchange-code`.
    pub refresh_token: Option<Secret>,
}

fn is_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://")) && s.len() > "http://".len() + 1
}

impl ZohoConnection {
    /// The accounts server: the override, else the region's.
    pub fn accounts_url(&self) -> Option<String> {
        self.accounts_url
            .clone()
            .or_else(|| {
                self.region
                    .as_deref()
                    .and_then(zoho_dc::data_center)
                    .map(|d| d.accounts_url.to_owned())
            })
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    /// Same org: the same accounts server (hence data center), API domain, client and refresh
    /// token. A refresh token is one user's grant to one client: another one may be another
    /// org's, so it starts a new destination. The client secret only authenticates.
    pub fn same_destination(&self, other: &ZohoConnection) -> bool {
        self.accounts_url() == other.accounts_url()
            && self.api_domain == other.api_domain
            && self.client_id == other.client_id
            && self.refresh_token == other.refresh_token
    }

    /// Same accounts server, API domain and client (the grant may differ).
    pub fn same_place(&self, other: &ZohoConnection) -> bool {
        self.accounts_url() == other.accounts_url()
            && self.api_domain == other.api_domain
            && self.client_id == other.client_id
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.client_id.trim().is_empty() || self.client_secret.expose().trim().is_empty() {
            return Err("the Zoho client id and client secret are required".into());
        }
        match (&self.region, &self.accounts_url) {
            (_, Some(u)) if !is_url(u) => return Err(format!("the Zoho accounts URL `{u}` is not a URL")),
            (Some(r), None) if zoho_dc::data_center(r).is_none() => {
                return Err(format!("unknown Zoho region `{r}` (one of: {})", zoho_dc::codes()));
            }
            (None, None) => {
                return Err("set a Zoho region (--zoho-region) or accounts URL (--zoho-accounts-url)".into());
            }
            _ => {}
        }
        if let Some(d) = &self.api_domain
            && !is_url(d)
        {
            return Err(format!("the Zoho API domain `{d}` is not a URL"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ZohoConnection {
        ZohoConnection {
            region: Some("eu".into()),
            accounts_url: None,
            api_domain: None,
            client_id: "1000.C".into(),
            client_secret: Secret::new("s1"),
            refresh_token: Some(Secret::new("r1")),
        }
    }

    #[test]
    fn what_changes_the_destination_and_what_does_not() {
        let a = conn();
        let mut rotated = a.clone();
        rotated.client_secret = Secret::new("s2");
        assert!(a.same_destination(&rotated), "a rotated client secret is the same org");
        let mut spelled = a.clone();
        spelled.accounts_url = Some("https://accounts.zoho.eu/".into());
        assert!(
            a.same_destination(&spelled),
            "the region's own accounts URL, spelled out"
        );
        for change in [
            |c: &mut ZohoConnection| c.region = Some("us".into()),
            |c: &mut ZohoConnection| c.accounts_url = Some("https://accounts.example.test".into()),
            |c: &mut ZohoConnection| c.api_domain = Some("https://api.example.test".into()),
            |c: &mut ZohoConnection| c.client_id = "1000.D".into(),
            |c: &mut ZohoConnection| c.refresh_token = Some(Secret::new("r2")),
        ] {
            let mut b = a.clone();
            change(&mut b);
            assert!(!a.same_destination(&b), "{b:?}");
        }
    }
}
