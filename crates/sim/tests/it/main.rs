//! Integration tests of the simulator against `api-facts.md`: each test starts its own
//! simulator in-process on a free port and talks to it over real HTTP.

mod binary;
mod changes;
mod credits;
mod faults;
mod generate;
mod mutations;
mod nylas;
mod receiver;
mod salesforce;
mod salesforce_limits;
mod salesforce_query;
mod salesforce_upsert;
mod webhooks;
mod zoho_accounts;
mod zoho_api;
mod zoho_list;
mod zoho_update;

use std::time::Duration;

use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Starts a simulator on a free loopback port.
pub async fn start(cfg: SimConfig) -> RunningSim {
    RunningSim::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the simulator starts")
}

/// A config with the given tenants and everything else default.
pub fn config(tenants: Vec<TenantConfig>) -> SimConfig {
    SimConfig {
        tenants,
        ..SimConfig::default()
    }
}

/// A tenant named `name` with a small address book.
pub fn tenant(name: &str, contacts: usize) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.contacts = contacts;
    t
}

/// Installs rustls's ring provider once: reqwest (built with `rustls-no-provider`) needs one
/// to build any client, even for plain http.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The test thread's client (building one loads TLS roots, which is slow in debug builds;
/// one per thread keeps connection pools from outliving a test's runtime).
pub fn client() -> Client {
    thread_local! {
        static CLIENT: Client = {
            install_crypto_provider();
            Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client")
        };
    }
    CLIENT.with(Client::clone)
}

/// An HTTP answer: status, headers, raw body and the body as JSON (`Null` if not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
    }
}

/// `POST {accounts}/oauth/v2/token` with form parameters.
pub async fn token_request(sim: &RunningSim, dc: &str, params: &[(&str, &str)]) -> Answer {
    let resp = client()
        .post(format!("{}/oauth/v2/token", sim.zoho_accounts_url(dc)))
        .form(params)
        .send()
        .await
        .expect("token request");
    answer(resp).await
}

/// A fresh access token for tenant `name` (defaults: `rt-<name>`, `cid-<name>`, `cs-<name>`).
pub async fn access_token(sim: &RunningSim, dc: &str, name: &str) -> String {
    let rt = format!("rt-{name}");
    let cid = format!("cid-{name}");
    let cs = format!("cs-{name}");
    let a = token_request(
        sim,
        dc,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("client_id", &cid),
            ("client_secret", &cs),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token in {}", a.text))
        .to_string()
}

/// `POST {api}/crm/v6/Contacts/upsert` with `body`.
pub async fn upsert(sim: &RunningSim, dc: &str, token: &str, body: &Value) -> Answer {
    let resp = client()
        .post(format!("{}/crm/v6/Contacts/upsert", sim.zoho_api_domain(dc)))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .json(body)
        .send()
        .await
        .expect("upsert");
    answer(resp).await
}

/// An upsert body as crmsync sends it.
pub fn upsert_body(records: Vec<Value>) -> Value {
    json!({"data": records, "duplicate_check_fields": ["Email"], "trigger": []})
}

/// `n` valid records with distinct emails `p0@example.com`, `p1@...`.
pub fn records(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"First_Name": "Test", "Last_Name": format!("Person {i}"), "Email": format!("{prefix}{i}@example.com")}))
        .collect()
}

pub async fn search(sim: &RunningSim, dc: &str, token: &str, email: &str) -> Answer {
    let resp = client()
        .get(format!("{}/crm/v6/Contacts/search", sim.zoho_api_domain(dc)))
        .query(&[("email", email)])
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("search");
    answer(resp).await
}

pub async fn delete(sim: &RunningSim, dc: &str, token: &str, ids: &str) -> Answer {
    let resp = client()
        .delete(format!("{}/crm/v6/Contacts", sim.zoho_api_domain(dc)))
        .query(&[("ids", ids)])
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("delete");
    answer(resp).await
}

/// `GET /_sim/orgs/{org_id}`.
pub async fn inspect(sim: &RunningSim, org_id: &str) -> Value {
    let resp = client()
        .get(format!("{}/_sim/orgs/{org_id}", sim.base_url()))
        .send()
        .await
        .expect("inspect");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("inspection JSON")
}

/// `GET {api_uri}/v3/grants/{grant}/contacts` with query parameters and an API key.
pub async fn list_contacts(
    sim: &RunningSim,
    region: &str,
    grant: &str,
    key: Option<&str>,
    query: &[(&str, &str)],
) -> Answer {
    let mut req = client()
        .get(format!("{}/v3/grants/{grant}/contacts", sim.nylas_api_uri(region)))
        .query(query);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    answer(req.send().await.expect("list contacts")).await
}
