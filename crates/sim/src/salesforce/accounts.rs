//! The Accounts a Salesforce org starts with, and the domain matching that decides where a
//! contact belongs.
//!
//! api-facts routes a Nylas contact to a Contact when its email domain matches a known
//! Account (by website), else to a Lead. So that routing has something to match, an org
//! without configured `accounts` gets three generated ones whose website domains are email
//! domains of the tenant's generated address book (free-mail domains excluded), chosen with
//! a seeded shuffle: the same seed and book give the same Accounts.
//!
//! Websites are written the ways people type them into Salesforce, cycling through
//! `https://www.<domain>`, `http://<domain>/` and a bare `<domain>`: a client must reduce a
//! website to its domain ([`website_domain`]) before comparing it with an email's.

use std::collections::BTreeMap;

use rand::Rng as _;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use serde_json::Value;

use crate::clock::derive_seed;
use crate::config::{AccountConfig, TenantConfig};
use crate::generate::address_book;
use crate::zoho::records::plausible_email;

/// How many Accounts an org gets when none are configured.
pub const GENERATED_ACCOUNTS: usize = 3;

/// Domains of free-mail providers: nobody's company website.
const FREE_MAIL: &[&str] = &["gmail.", "outlook.", "hotmail.", "yahoo.", "icloud."];

/// Used when the book has too few company domains (an empty or tiny book).
const FALLBACK_DOMAINS: &[&str] = &["example.com", "acme.io", "initech.test"];

const SUFFIXES: &[&str] = &["Inc.", "Ltd", "GmbH", "LLC", "S.A."];

/// The lowercased domain of an email address, if it is plausible.
pub fn email_domain(email: &str) -> Option<String> {
    let email = email.trim();
    if !plausible_email(email) {
        return None;
    }
    email.rsplit_once('@').map(|(_, d)| d.to_lowercase())
}

/// The domain a website names: scheme, `www.`, port, path, query and fragment removed,
/// lowercased; `None` if nothing domain-like is left.
pub fn website_domain(website: &str) -> Option<String> {
    let w = website.trim().to_lowercase();
    let w = w
        .strip_prefix("https://")
        .or_else(|| w.strip_prefix("http://"))
        .unwrap_or(&w);
    let host = w.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    let host = host.strip_prefix("www.").unwrap_or(host);
    (host.contains('.') && !host.starts_with('.') && !host.ends_with('.')).then(|| host.to_string())
}

/// The Accounts of a tenant's Salesforce org: the configured ones, or three generated from
/// its address book (see the module docs). Empty without a Salesforce org.
pub fn salesforce_accounts(tenant: &TenantConfig, seed: u64) -> Vec<AccountConfig> {
    match &tenant.salesforce {
        None => Vec::new(),
        Some(sf) => match &sf.accounts {
            Some(accounts) => accounts.clone(),
            None => generated_accounts(&sf.org_id, seed, &address_book(tenant, seed)),
        },
    }
}

/// Three Accounts whose website domains are company email domains of `book`.
pub fn generated_accounts<'a>(
    org_id: &str,
    seed: u64,
    book: impl IntoIterator<Item = &'a Value>,
) -> Vec<AccountConfig> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in book {
        let first = c.get("emails").and_then(Value::as_array).and_then(|list| {
            list.iter()
                .find_map(|e| e.get("email").and_then(Value::as_str).and_then(email_domain))
        });
        if let Some(d) = first.filter(|d| !FREE_MAIL.iter().any(|f| d.starts_with(f))) {
            *counts.entry(d).or_default() += 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(derive_seed(seed, &format!("salesforce/accounts/{org_id}")));
    let mut domains: Vec<String> = counts.into_keys().collect();
    domains.shuffle(&mut rng);
    for d in FALLBACK_DOMAINS {
        if domains.len() >= GENERATED_ACCOUNTS {
            break;
        }
        if !domains.iter().any(|x| x == d) {
            domains.push((*d).to_string());
        }
    }
    domains
        .into_iter()
        .take(GENERATED_ACCOUNTS)
        .enumerate()
        .map(|(i, domain)| {
            let label = domain
                .split('.')
                .find(|l| !matches!(*l, "www" | "mail"))
                .unwrap_or("company");
            let mut name: String = label.chars().take(1).flat_map(char::to_uppercase).collect();
            name.push_str(&label.chars().skip(1).collect::<String>());
            let suffix = SUFFIXES[rng.random_range(0..SUFFIXES.len())];
            let website = match i % 3 {
                0 => format!("https://www.{domain}"),
                1 => format!("http://{domain}/"),
                _ => domain.clone(),
            };
            AccountConfig {
                name: format!("{name} {suffix}"),
                website: Some(website),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn websites_reduce_to_their_domain() {
        for (w, d) in [
            ("https://www.Acme.io", Some("acme.io")),
            ("http://acme.io/", Some("acme.io")),
            ("acme.io", Some("acme.io")),
            ("  www.acme.io:8080/about?x#y ", Some("acme.io")),
            ("localhost", None),
            ("", None),
        ] {
            assert_eq!(website_domain(w).as_deref(), d, "{w}");
        }
        assert_eq!(
            email_domain(" Ann@Mail.Example.CO.UK ").as_deref(),
            Some("mail.example.co.uk")
        );
        assert_eq!(email_domain("no-at-sign"), None);
    }

    #[test]
    fn generated_accounts_use_company_domains_of_the_book_deterministically() {
        let book: Vec<Value> = [
            "a@globex.example",
            "b@gmail.example",
            "c@acme.io",
            "d@initech.test",
            "e@x.org",
        ]
        .iter()
        .map(|e| json!({"emails": [{"email": e}]}))
        .collect();
        let a = generated_accounts("sforg-acme", 1, &book);
        assert_eq!(a, generated_accounts("sforg-acme", 1, &book));
        assert_eq!(a.len(), 3);
        for acc in &a {
            let d = website_domain(acc.website.as_deref().unwrap_or_default()).expect("domain");
            assert!(
                ["globex.example", "acme.io", "initech.test", "x.org"].contains(&d.as_str()),
                "{d}"
            );
        }
        let empty = generated_accounts("sforg-acme", 1, &[] as &[Value]);
        assert_eq!(empty.len(), 3, "fallback domains");
    }
}
