//! A fake Nylas v3 Contacts API, Zoho CRM (accounts server + CRM API) and Salesforce orgs in one
//! axum server,
//! faithful to `api-facts.md` and deterministic from a seed, for the demo, end-to-end tests
//! and benchmarks.
//!
//! URL layout under the base URL (`http://127.0.0.1:PORT`):
//! - Nylas API URI per region: `/nylas/{us|eu}` (then `/v3/grants/{grant_id}/contacts...`)
//! - Zoho accounts server per DC: `/zoho/{dc}/accounts` (then `/oauth/v2/token`)
//! - Zoho API domain per DC: `/zoho/{dc}/api` (then `/crm/{v6|v8}/Contacts...`), see [`zoho`]
//! - Zoho records changed by hand (another user in Zoho's UI): `POST /_sim/orgs/{org_id}/records`,
//!   `PATCH`/`DELETE /_sim/orgs/{org_id}/records/{id}` (see [`zoho::hand`])
//! - Salesforce login server per org: `/salesforce/{org}/login` (then
//!   `/services/oauth2/token`), and instance: `/salesforce/{org}/instance` (then
//!   `/services/data/vNN.N/...`), see [`salesforce`]
//! - inspection: `/_sim/...` (see [`inspect`])
//! - mutation driver: `POST /_sim/nylas/{grant_id}/mutations` (see [`mutations`]), which
//!   changes an address book and delivers signed webhooks (see [`webhooks`])
//! - explicit changes: `PUT`/`DELETE /_sim/nylas/{grant_id}/contacts/{id}` (see [`changes`])
//!
//! Start it in-process with [`RunningSim::start`], or run the `crmsync-sim serve` binary.
//!
//! **Boundary:** the simulator shares no code or types with the crmsync clients: it
//! reproduces the APIs from the facts file, so a client bug cannot hide behind a shared
//! misunderstanding.

pub mod changes;
pub mod clock;
pub mod config;
pub mod faults;
pub mod generate;
pub mod inspect;
pub mod mutations;
pub mod nylas;
pub mod salesforce;
pub mod webhooks;
pub mod zoho;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use changes::PutReport;
pub use config::{
    AccountConfig, DuplicateRule, FaultConfig, SalesforceConfig, SimConfig, TenantConfig, WebhookConfig, ZohoConfig,
};
pub use generate::address_book;
pub use mutations::{AppliedMutation, LatencySummary, Mix, MutationKind, MutationPlan, MutationReport};
pub use salesforce::accounts::salesforce_accounts;
pub use webhooks::deliver::DeliveryRecord;

use clock::{SimClock, derive_seed, splitmix64};
use faults::Latency;
use nylas::NylasState;
use salesforce::SalesforceState;
use webhooks::WebhookState;
use zoho::ZohoState;

/// Locks a mutex, recovering the data if a previous holder panicked (the simulator keeps
/// serving rather than failing every later request).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What charging another integration's usage to an org did (Zoho credits, or Salesforce API
/// requests).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpendReport {
    pub org_id: String,
    /// Units asked for.
    pub requested: u64,
    /// Units charged: all of them, unless the org's limit (with `limits` on) left less room;
    /// the other integration's calls past the limit would be refused too.
    pub charged: u64,
    /// Used in the rolling window now, everyone's usage included.
    pub used_window: u64,
    /// The org's daily limit.
    pub limit: u64,
}

/// The simulator's whole state, shared by every handler.
#[derive(Debug)]
pub struct Sim {
    pub cfg: SimConfig,
    pub clock: SimClock,
    /// `http://127.0.0.1:PORT` of the bound listener.
    pub base_url: String,
    pub latency: Latency,
    pub nylas: NylasState,
    pub zoho: ZohoState,
    pub salesforce: SalesforceState,
    pub webhooks: WebhookState,
    request_seq: AtomicU64,
    request_salt: u64,
}

impl Sim {
    /// Builds the state: generates every address book (this takes a moment for big books).
    pub fn new(cfg: SimConfig, base_url: String) -> Sim {
        let clock = SimClock::new(cfg.time_scale);
        let nylas = NylasState::new(&cfg);
        Sim {
            latency: Latency::new(cfg.seed, cfg.faults.latency_ms),
            salesforce: SalesforceState::new(&cfg, &nylas, clock.unix_now()),
            nylas,
            clock,
            zoho: ZohoState::new(&cfg),
            webhooks: WebhookState::new(cfg.seed),
            request_seq: AtomicU64::new(0),
            request_salt: derive_seed(cfg.seed, "request-id"),
            base_url,
            cfg,
        }
    }

    /// A fresh request id in UUID form.
    pub fn request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let a = splitmix64(n ^ self.request_salt);
        let b = splitmix64(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// The base URL clients are told about (`public_url`, else the bound address).
    pub fn public_base(&self) -> &str {
        self.cfg
            .public_url
            .as_deref()
            .unwrap_or(&self.base_url)
            .trim_end_matches('/')
    }

    /// The `api_domain` the token endpoint returns for a DC.
    pub fn zoho_api_domain(&self, dc: &str) -> String {
        format!("{}/zoho/{dc}/api", self.public_base())
    }
}

/// Every route of the simulator.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(nylas::routes())
        .merge(zoho::routes())
        .merge(salesforce::routes())
        .merge(inspect::routes())
        .merge(mutations::routes())
        .merge(changes::routes())
        .fallback(fallback)
        .with_state(sim)
}

/// Unknown paths answer in the shape of the API they fall under.
async fn fallback(uri: Uri) -> Response {
    let path = uri.path();
    let body = if path.starts_with("/zoho/") {
        zoho::error_body(
            "INVALID_URL_PATTERN",
            json!({}),
            "Please check if the URL trying to access is a correct one",
        )
    } else if path.starts_with("/salesforce/") {
        salesforce::error_array("NOT_FOUND", "The requested resource does not exist")
    } else if path.starts_with("/nylas/") {
        json!({"request_id": "", "error": {"type": "api.not_found_error", "message": "not found"}})
    } else {
        json!({"error": "not found"})
    };
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// A simulator serving on a local port. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    sim: Arc<Sim>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSim {
    /// Validates `cfg`, binds `addr` (port 0 picks a free port), generates the address books
    /// and starts serving.
    pub async fn start(cfg: SimConfig, addr: SocketAddr) -> anyhow::Result<RunningSim> {
        cfg.validate()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let mut local = listener.local_addr().context("the listener has no local address")?;
        if local.ip().is_unspecified() {
            local.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let base_url = format!("http://{local}");
        let sim = {
            let base_url = base_url.clone();
            tokio::task::spawn_blocking(move || Arc::new(Sim::new(cfg, base_url)))
                .await
                .context("generating the simulator state failed")?
        };
        let app = router(sim.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%base_url, "simulator listening");
        Ok(RunningSim {
            addr: local,
            base_url,
            sim,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Nylas API URI of a region (`us`, `eu`).
    pub fn nylas_api_uri(&self, region: &str) -> String {
        format!("{}/nylas/{region}", self.base_url)
    }

    /// The Zoho accounts server of a DC.
    pub fn zoho_accounts_url(&self, dc: &str) -> String {
        format!("{}/zoho/{dc}/accounts", self.base_url)
    }

    /// The Zoho API domain of a DC.
    pub fn zoho_api_domain(&self, dc: &str) -> String {
        format!("{}/zoho/{dc}/api", self.base_url)
    }

    /// The login URL of a Salesforce org (then `/services/oauth2/token`).
    pub fn salesforce_login_url(&self, org_id: &str) -> String {
        format!("{}/salesforce/{org_id}/login", self.base_url)
    }

    /// The instance URL of a Salesforce org (then `/services/data/vNN.N/...`), as the token
    /// endpoint returns it in `instance_url` (unless `public_url` is set).
    pub fn salesforce_instance_url(&self, org_id: &str) -> String {
        format!("{}/salesforce/{org_id}/instance", self.base_url)
    }

    /// The shared state, for in-process inspection.
    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// The inspection document of an org (as `GET /_sim/orgs/{org_id}`).
    pub fn inspect_org(&self, org_id: &str) -> Option<Value> {
        self.sim.inspect_org(org_id, true)
    }

    /// The counters of a Nylas grant (as `GET /_sim/nylas/{grant_id}`).
    pub fn inspect_grant(&self, grant_id: &str) -> Option<Value> {
        self.sim.nylas.grants.get(grant_id).map(|g| g.inspect())
    }

    /// Charges `credits` to the rolling credit window of Zoho org `org_id` as if another
    /// integration had spent them (as `POST /_sim/orgs/{org_id}/spend`): later
    /// `X-API-CREDITS-REMAINING` headers and the limit count them; crmsync's own totals do
    /// not (the inspection shows them as `other_credits_*`).
    pub fn spend_zoho_credits(&self, org_id: &str, credits: u64) -> anyhow::Result<SpendReport> {
        self.sim.spend_zoho_credits(org_id, credits)
    }

    /// Creates a Contacts record in Zoho org `org_id` as another user would in Zoho's UI (not
    /// an API call: no credits, no faults); returns its id. The record belongs to that user:
    /// crmsync must never touch it (the inspection shows it with `origin: "hand"` and counts
    /// `api_updates`). As `POST /_sim/orgs/{org_id}/records`.
    pub fn create_zoho_record(&self, org_id: &str, fields: serde_json::Map<String, Value>) -> anyhow::Result<String> {
        self.sim.create_zoho_record(org_id, fields)
    }

    /// Edits record `record_id` of Zoho org `org_id` as a user would in Zoho's UI: sets
    /// `fields` (`null` clears), stamps `Modified_Time` now; returns the record as the
    /// inspection shows it. As `PATCH /_sim/orgs/{org_id}/records/{record_id}`.
    pub fn edit_zoho_record(
        &self,
        org_id: &str,
        record_id: &str,
        fields: serde_json::Map<String, Value>,
    ) -> anyhow::Result<Value> {
        self.sim.edit_zoho_record(org_id, record_id, fields)
    }

    /// Deletes record `record_id` of Zoho org `org_id` as a user would in Zoho's UI (gone from
    /// the API); returns the record as the inspection showed it. As `DELETE
    /// /_sim/orgs/{org_id}/records/{record_id}`.
    pub fn delete_zoho_record(&self, org_id: &str, record_id: &str) -> anyhow::Result<Value> {
        self.sim.delete_zoho_record(org_id, record_id)
    }

    /// The inspection document of a Salesforce org (as `GET /_sim/salesforce/{org_id}`).
    pub fn inspect_salesforce(&self, org_id: &str) -> Option<Value> {
        self.sim.inspect_salesforce(org_id, true)
    }

    /// Ends every live session of a Salesforce org, as a session timeout or a revoked
    /// session would (as `POST /_sim/salesforce/{org_id}/expire_sessions`); returns how many
    /// were live.
    pub fn expire_salesforce_sessions(&self, org_id: &str) -> anyhow::Result<usize> {
        self.sim.expire_salesforce_sessions(org_id)
    }

    /// Counts `requests` API requests of another integration in the org's rolling window
    /// (as `POST /_sim/salesforce/{org_id}/spend`).
    pub fn spend_salesforce_requests(&self, org_id: &str, requests: u64) -> anyhow::Result<SpendReport> {
        self.sim.spend_salesforce_requests(org_id, requests)
    }

    /// Converts a Lead into a Contact (and Account) as a user would; returns the Contact's id
    /// (as `POST /_sim/salesforce/{org_id}/convert/{lead_id}`).
    pub fn convert_salesforce_lead(&self, org_id: &str, lead_id: &str) -> anyhow::Result<String> {
        self.sim.convert_salesforce_lead(org_id, lead_id)
    }

    /// Applies a mutation plan to the book of `grant_id` and delivers its notifications to
    /// the configured webhook destination; returns when every delivery has finished,
    /// retries included (as `POST /_sim/nylas/{grant_id}/mutations`).
    pub async fn mutate(&self, grant_id: &str, plan: MutationPlan) -> anyhow::Result<MutationReport> {
        self.sim.mutate(grant_id, plan).await
    }

    /// Puts one contact into the book of `grant_id` (appended if its `id` is new, replaced
    /// otherwise; `grant_id` and `object` filled when missing) and, with `deliver` and
    /// webhooks configured, delivers one signed `contact.updated`, returning once it was
    /// answered (as `PUT /_sim/nylas/{grant_id}/contacts/{id}`).
    pub async fn put_contact(&self, grant_id: &str, contact: Value, deliver: bool) -> anyhow::Result<PutReport> {
        self.sim.put_contact(grant_id, contact, deliver).await
    }

    /// Deletes one contact from the book of `grant_id` and, with `deliver` and webhooks
    /// configured, delivers one signed `contact.deleted`, returning once it was answered (as
    /// `DELETE /_sim/nylas/{grant_id}/contacts/{id}`).
    pub async fn delete_contact(&self, grant_id: &str, contact_id: &str, deliver: bool) -> anyhow::Result<PutReport> {
        self.sim.delete_contact(grant_id, contact_id, deliver).await
    }

    /// Stops accepting, lets requests in progress finish (for up to 5 s), then stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
