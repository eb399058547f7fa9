//! The simulator as a process (`crmsync-sim serve`), reached over HTTP: its URLs, its
//! inspection endpoints and its mutations.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crmsync_sim::{MutationPlan, MutationReport, SimConfig};
use serde_json::Value;

use crate::fleet::Fleet;

/// A running simulator, by its base URL.
#[derive(Debug, Clone)]
pub struct Sim {
    base: String,
    http: reqwest::Client,
}

impl Sim {
    /// Writes `cfg` to `config`, starts `crmsync-sim serve` in the fleet and waits until it
    /// says where it listens.
    pub async fn start(fleet: &Fleet, program: &Path, cfg: &SimConfig, config: &Path) -> anyhow::Result<Sim> {
        std::fs::write(config, serde_json::to_vec_pretty(cfg)?)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn");
        fleet.spawn("simulator", cmd)?;
        let log = fleet.log("simulator");
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
                break url.trim().to_owned();
            }
            anyhow::ensure!(
                fleet.running("simulator"),
                "the simulator exited: {}",
                text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "the simulator did not start within 60 s (see {})",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Sim {
            base,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?,
        })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn nylas_api_uri(&self, region: &str) -> String {
        format!("{}/nylas/{region}", self.base)
    }

    pub fn zoho_accounts_url(&self, dc: &str) -> String {
        format!("{}/zoho/{dc}/accounts", self.base)
    }

    pub fn salesforce_login_url(&self, org_id: &str) -> String {
        format!("{}/salesforce/{org_id}/login", self.base)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .json()
            .await?)
    }

    /// A Zoho org as the simulator holds it: records (with `api_updates`), calls, credits.
    pub async fn zoho_org(&self, org_id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/_sim/orgs/{org_id}")).await
    }

    /// A Salesforce org: Contacts, Leads, API usage.
    pub async fn salesforce_org(&self, org_id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/_sim/salesforce/{org_id}")).await
    }

    /// A grant's address book as it is now (Nylas contact JSON).
    pub async fn book(&self, grant_id: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.get(&format!("/_sim/nylas/{grant_id}/contacts")).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Changes a grant's address book and delivers the signed webhooks.
    pub async fn mutate(&self, grant_id: &str, plan: &MutationPlan) -> anyhow::Result<MutationReport> {
        let url = format!("{}/_sim/nylas/{grant_id}/mutations", self.base);
        Ok(self
            .http
            .post(&url)
            .json(plan)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .error_for_status()?
            .json()
            .await?)
    }
}
