//! Shared pieces of the end-to-end tests: the probe job and the queue it runs on.
//!
//! The probe worker (`crmsync-probe-worker`) runs the real queue backend in its own process, so
//! tests can kill it with SIGKILL, stop it with SIGTERM and restart it, and read what it did
//! from Redis (`probe:starts` and `probe:done` hold `<job>:<attempt>:<pid>` records).

pub mod chaos;

use serde::{Deserialize, Serialize};

/// Name of the queue the probe worker consumes.
pub const PROBE_QUEUE: &str = "probe";
/// Redis list of `<job>:<attempt>:<pid>` records, one per job start.
pub const STARTS: &str = "probe:starts";
/// Redis list of `<job>:<attempt>:<pid>` records, one per job completion.
pub const DONE: &str = "probe:done";

/// A job of the probe worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeJob {
    pub id: u64,
    /// Sleep this long before finishing...
    pub sleep_ms: u64,
    /// ...on attempts up to this one (later attempts finish at once).
    pub sleep_until_attempt: u32,
    /// Abort the whole process (a poison job that crashes its worker).
    pub crash: bool,
}

impl ProbeJob {
    pub fn quick(id: u64) -> Self {
        Self {
            id,
            sleep_ms: 0,
            sleep_until_attempt: 0,
            crash: false,
        }
    }

    pub fn slow(id: u64, sleep_ms: u64) -> Self {
        Self {
            id,
            sleep_ms,
            sleep_until_attempt: u32::MAX,
            crash: false,
        }
    }
}

/// A parsed `<job>:<attempt>:<pid>` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub job: u64,
    pub attempt: u32,
    pub pid: u32,
}

impl Record {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split(':');
        Some(Self {
            job: it.next()?.parse().ok()?,
            attempt: it.next()?.parse().ok()?,
            pid: it.next()?.parse().ok()?,
        })
    }
}

/// The CRM state a backfill of `book` (Nylas contact JSON) must produce: Zoho records by
/// email, computed with the domain's mapping and the shared-email rule (the contact with the
/// smallest id owns an email), and the contacts skipped, by reason.
pub fn expected_crm(
    book: &[serde_json::Value],
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    std::collections::BTreeMap<String, u64>,
) {
    use crmsync_domain::{MapOutcome, SkipReason, map_contact};
    let mut by_email: std::collections::BTreeMap<String, (String, serde_json::Value)> = Default::default();
    let mut skipped: std::collections::BTreeMap<String, u64> = Default::default();
    for c in book {
        let contact = crmsync_nylas::parse_contact(c).expect("the simulator serves valid contacts");
        match map_contact(&contact, &crmsync_sink::zoho::LIMITS) {
            MapOutcome::Mapped { record, .. } => {
                let json = crmsync_sink::zoho::record_json(&record);
                let replace = match by_email.get(&record.email) {
                    Some((owner, _)) => {
                        *skipped.entry(SkipReason::SharedEmail.as_str().into()).or_default() += 1;
                        contact.id.as_str() < owner.as_str()
                    }
                    None => true,
                };
                if replace {
                    by_email.insert(record.email.clone(), (contact.id.clone(), json));
                }
            }
            MapOutcome::Skipped(r) => *skipped.entry(r.as_str().into()).or_default() += 1,
        }
    }
    (by_email.into_iter().map(|(e, (_, r))| (e, r)).collect(), skipped)
}

/// The destination a tenant writes to now (read from its settings, no secret key needed).
pub async fn dest_of(conn: &crmsync_redis::RedisConn, namespace: &str, tenant: &str) -> Option<String> {
    let store = crmsync_tenants::TenantStore::new(conn.clone(), namespace, None);
    let view = store.view(tenant).await.ok()?;
    view["dest"].as_str().map(str::to_owned)
}

/// The records a tenant's CRM refused, newest first (at most `n`).
pub async fn rejections(
    conn: &crmsync_redis::RedisConn,
    namespace: &str,
    tenant: &str,
    n: usize,
) -> Vec<crmsync_producer::Rejection> {
    let Some(dest) = dest_of(conn, namespace, tenant).await else {
        return Vec::new();
    };
    let keys = crmsync_tenants::TenantKeys::new(namespace, tenant).dest(&dest);
    crmsync_producer::Rejected::new(conn.clone(), keys)
        .newest(n)
        .await
        .unwrap_or_default()
}

/// `crmsync tenant add` arguments registering a simulator tenant (its Nylas grant and Zoho org
/// on the simulator's URLs), before any extra flags.
pub fn sim_tenant_add_args(sim: &crmsync_sim::RunningSim, t: &crmsync_sim::TenantConfig) -> Vec<String> {
    [
        "tenant",
        "add",
        &t.name,
        "--nylas-grant-id",
        &t.grant_id,
        "--nylas-api-key",
        &t.nylas_api_key,
        "--nylas-api-uri",
        &sim.nylas_api_uri(&t.nylas_region),
        "--zoho-region",
        &t.zoho.dc,
        "--zoho-accounts-url",
        &sim.zoho_accounts_url(&t.zoho.dc),
        "--zoho-client-id",
        &t.zoho.client_id,
        "--zoho-client-secret",
        &t.zoho.client_secret,
        "--zoho-refresh-token",
        &t.zoho.refresh_token,
        "--daily-credits",
        &t.zoho.daily_credits.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A simulated org's records by email, with the fields crmsync writes (as [`expected_crm`]
/// gives them); panics on two records with one email.
pub fn crm_records(sim: &crmsync_sim::RunningSim, org: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let org = sim.inspect_org(org).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for r in org["records"].as_array().cloned().unwrap_or_default() {
        let email = r["Email"].as_str().unwrap_or_default().to_owned();
        let fields: serde_json::Map<String, serde_json::Value> =
            ["First_Name", "Last_Name", "Email", "Phone", "Account_Name", "Title"]
                .iter()
                .map(|f| (f.to_string(), r.get(*f).cloned().unwrap_or(serde_json::Value::Null)))
                .collect();
        assert!(
            out.insert(email.clone(), serde_json::Value::Object(fields)).is_none(),
            "duplicate CRM record for {email}"
        );
    }
    out
}

/// The Salesforce fields crmsync keeps equal to the book (routing decides Contact or Lead, and
/// the Lead's Company or the Contact's Account, separately).
pub const SF_FIELDS: [&str; 5] = ["FirstName", "LastName", "Email", "Phone", "Title"];

/// The Salesforce state a backfill of `book` must produce: one record per contact with a usable
/// email, keyed by the contact's id (the external id), with [`SF_FIELDS`] as the mapping gives
/// them (contacts sharing an email are separate records); and the contacts skipped, by reason.
pub fn expected_salesforce(
    book: &[serde_json::Value],
) -> (
    std::collections::BTreeMap<String, serde_json::Value>,
    std::collections::BTreeMap<String, u64>,
) {
    use crmsync_domain::{MapOutcome, map_contact};
    let mut out = std::collections::BTreeMap::new();
    let mut skipped: std::collections::BTreeMap<String, u64> = Default::default();
    for c in book {
        let contact = crmsync_nylas::parse_contact(c).expect("the simulator serves valid contacts");
        match map_contact(&contact, &crmsync_sink::salesforce::LIMITS) {
            MapOutcome::Mapped { record, .. } => {
                out.insert(
                    contact.id.clone(),
                    serde_json::json!({
                        "FirstName": record.first_name,
                        "LastName": record.last_name,
                        "Email": record.email,
                        "Phone": record.phone,
                        "Title": record.title,
                    }),
                );
            }
            MapOutcome::Skipped(r) => *skipped.entry(r.as_str().into()).or_default() += 1,
        }
    }
    (out, skipped)
}

/// A simulated Salesforce org's live records (Contacts and unconverted Leads) by external id,
/// with [`SF_FIELDS`], and how many of each object there are. Panics when one external id
/// is held by two live records (a duplicate) or a live record has none (crmsync always sets it).
pub fn salesforce_records(
    sim: &crmsync_sim::RunningSim,
    org: &str,
    ext_field: &str,
) -> (std::collections::BTreeMap<String, serde_json::Value>, SfCounts) {
    let doc = sim.inspect_salesforce(org).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    let mut counts = SfCounts::default();
    for (object, list) in [("Contact", &doc["contacts"]), ("Lead", &doc["leads"])] {
        for r in list.as_array().cloned().unwrap_or_default() {
            if r["IsConverted"].as_bool() == Some(true) {
                counts.converted_leads += 1;
                continue;
            }
            let ext = r[ext_field].as_str().unwrap_or_default().to_owned();
            assert!(!ext.is_empty(), "a {object} without {ext_field}: {r}");
            if object == "Contact" {
                counts.contacts += 1;
                if r["AccountId"].is_string() {
                    counts.contacts_with_account += 1;
                }
            } else {
                counts.leads += 1;
            }
            let fields: serde_json::Map<String, serde_json::Value> = SF_FIELDS
                .iter()
                .map(|f| (f.to_string(), r.get(*f).cloned().unwrap_or(serde_json::Value::Null)))
                .collect();
            assert!(
                out.insert(ext.clone(), serde_json::Value::Object(fields)).is_none(),
                "two live records hold {ext_field} {ext}"
            );
        }
    }
    (out, counts)
}

/// Live records of a Salesforce org by object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfCounts {
    pub contacts: u64,
    pub contacts_with_account: u64,
    pub leads: u64,
    pub converted_leads: u64,
}

/// `crmsync tenant add` arguments registering a simulator tenant with its Salesforce org.
pub fn sim_salesforce_tenant_add_args(sim: &crmsync_sim::RunningSim, t: &crmsync_sim::TenantConfig) -> Vec<String> {
    let sf = t.salesforce.as_ref().expect("the tenant has a Salesforce org");
    [
        "tenant",
        "add",
        &t.name,
        "--crm",
        "salesforce",
        "--nylas-grant-id",
        &t.grant_id,
        "--nylas-api-key",
        &t.nylas_api_key,
        "--nylas-api-uri",
        &sim.nylas_api_uri(&t.nylas_region),
        "--sf-login-url",
        &sim.salesforce_login_url(&sf.org_id),
        "--sf-client-id",
        &sf.client_id,
        "--sf-client-secret",
        &sf.client_secret,
        "--sf-refresh-token",
        &sf.refresh_token,
        "--sf-external-id-field",
        &sf.ext_id_field,
        "--daily-requests",
        &sf.daily_requests.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
