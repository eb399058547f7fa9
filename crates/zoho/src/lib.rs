//! A Zoho CRM client for crmsync.
//!
//! - [`dc`]: the data-center table (accounts server and API domain of each DC).
//! - [`token`]: the [`TokenBroker`], one cached access token per tenant shared by the whole
//!   fleet through Redis, refreshed single-flight under a lock before it expires, within
//!   Zoho's limit of 10 token requests per 10 minutes.
//! - [`ZohoClient`]: upsert (≤ 100 records, matched on Email, no workflows), delete and search
//!   of Contacts, with a 401 `INVALID_TOKEN` answered by one refresh and one retry.
//! - [`ZohoError`]: every failure, classified by what the caller does next ([`Next`]).

pub mod dc;
mod dto;
mod error;
pub mod token;

use std::time::Duration;

use crmsync_domain::ZohoContact;
pub use dto::record_json;
pub use error::{Next, ZohoError};
pub use token::{AccessToken, Sealer, TokenBroker, ZohoOrg, exchange_code};
use tracing::debug;

/// Most records per upsert or delete call (Zoho's limit).
pub const MAX_BATCH: usize = 100;

/// The outcome of one record of an upsert, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordResult {
    Inserted {
        id: String,
    },
    Updated {
        id: String,
    },
    /// Zoho refused this record (`MANDATORY_NOT_FOUND`, `INVALID_DATA`, `DUPLICATE_DATA`, ...);
    /// the others of the call are unaffected.
    Rejected {
        code: String,
        field: Option<String>,
        message: String,
    },
}

impl RecordResult {
    pub fn next(&self) -> Option<Next> {
        matches!(self, RecordResult::Rejected { .. }).then_some(Next::RejectRecord)
    }
}

/// The outcome of a delete of one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteResult {
    Deleted { id: String },
    Rejected { id: String, code: String, message: String },
}

impl DeleteResult {
    /// The record id the result is about.
    pub fn id(&self) -> &str {
        match self {
            DeleteResult::Deleted { id } | DeleteResult::Rejected { id, .. } => id,
        }
    }
}

/// An upsert or delete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T> {
    pub results: Vec<T>,
    /// `X-API-CREDITS-REMAINING`, sent once half the org's daily credits are used.
    pub credits_remaining: Option<u64>,
    pub http_status: u16,
}

/// Credits an upsert of `records` records costs: 1 per 10 records, at least 1.
pub fn upsert_cost(records: usize) -> u64 {
    records.div_ceil(10).max(1) as u64
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct ZohoClient {
    http: reqwest::Client,
    broker: TokenBroker,
}

impl ZohoClient {
    pub fn new(http: reqwest::Client, broker: TokenBroker) -> Self {
        Self { http, broker }
    }

    /// A reqwest client with the timeouts crmsync uses for Zoho.
    pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ZohoError> {
        // reqwest is built without a default TLS provider: ring, installed once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("crmsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ZohoError::Unavailable {
                status: None,
                message: e.to_string(),
            })
    }

    pub fn broker(&self) -> &TokenBroker {
        &self.broker
    }

    /// Upserts up to 100 Contacts matched on Email, running no workflows (`trigger: []`).
    pub async fn upsert_contacts(
        &self,
        org: &ZohoOrg,
        records: &[ZohoContact],
    ) -> Result<Reply<RecordResult>, ZohoError> {
        if records.is_empty() {
            return Ok(Reply {
                results: vec![],
                credits_remaining: None,
                http_status: 200,
            });
        }
        if records.len() > MAX_BATCH {
            return Err(ZohoError::Rejected {
                status: 0,
                code: "LIMIT_EXCEEDED".into(),
                message: format!(
                    "{} records in one upsert; Zoho takes at most {MAX_BATCH}",
                    records.len()
                ),
            });
        }
        let body = serde_json::json!({
            "data": records.iter().map(record_json).collect::<Vec<_>>(),
            "duplicate_check_fields": ["Email"],
            "trigger": [],
        });
        let (status, credits, bytes) = self
            .send(org, reqwest::Method::POST, "/crm/v6/Contacts/upsert", &[], Some(&body))
            .await?;
        let results = dto::parse_upsert(status, &bytes, records.len())?;
        Ok(Reply {
            results,
            credits_remaining: credits,
            http_status: status,
        })
    }

    /// Updates up to 100 Contacts by record id (used when a contact's email changed, so its
    /// existing record follows it instead of a new one being created), running no workflows.
    pub async fn update_contacts(
        &self,
        org: &ZohoOrg,
        records: &[(String, ZohoContact)],
    ) -> Result<Reply<RecordResult>, ZohoError> {
        if records.len() > MAX_BATCH {
            return Err(ZohoError::Rejected {
                status: 0,
                code: "LIMIT_EXCEEDED".into(),
                message: format!(
                    "{} records in one update; Zoho takes at most {MAX_BATCH}",
                    records.len()
                ),
            });
        }
        let data: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, r)| {
                let mut v = record_json(r);
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("id".into(), serde_json::Value::String(id.clone()));
                }
                v
            })
            .collect();
        let body = serde_json::json!({ "data": data, "trigger": [] });
        let (status, credits, bytes) = self
            .send(org, reqwest::Method::PUT, "/crm/v6/Contacts", &[], Some(&body))
            .await?;
        let results = dto::parse_upsert(status, &bytes, records.len())?;
        Ok(Reply {
            results,
            credits_remaining: credits,
            http_status: status,
        })
    }

    /// Deletes up to 100 Contacts by id.
    pub async fn delete_contacts(&self, org: &ZohoOrg, ids: &[String]) -> Result<Reply<DeleteResult>, ZohoError> {
        let joined = ids.join(",");
        let (status, credits, bytes) = self
            .send(
                org,
                reqwest::Method::DELETE,
                "/crm/v6/Contacts",
                &[("ids", joined.as_str())],
                None,
            )
            .await?;
        Ok(Reply {
            results: dto::parse_delete(status, &bytes, ids)?,
            credits_remaining: credits,
            http_status: status,
        })
    }

    /// Finds Contact ids by email; an empty list when there is none (Zoho's 204).
    pub async fn search_by_email(&self, org: &ZohoOrg, email: &str) -> Result<Vec<String>, ZohoError> {
        let (status, _, bytes) = self
            .send(
                org,
                reqwest::Method::GET,
                "/crm/v6/Contacts/search",
                &[("email", email)],
                None,
            )
            .await?;
        if status == 204 || bytes.is_empty() {
            return Ok(vec![]);
        }
        dto::parse_search(&bytes)
    }

    /// Sends a request with the tenant's token; a 401 `INVALID_TOKEN` drops the token, gets a
    /// fresh one and retries once.
    async fn send(
        &self,
        org: &ZohoOrg,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Option<u64>, Vec<u8>), ZohoError> {
        let op = if path.ends_with("/upsert") {
            "upsert"
        } else if path.contains("/search") {
            "search"
        } else if method == reqwest::Method::DELETE {
            "delete"
        } else {
            "update"
        };
        let mut refreshed = false;
        loop {
            let token = self.broker.token(org).await?;
            let url = format!("{}{path}", token.api_domain);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .header("Authorization", format!("Zoho-oauthtoken {}", token.value()));
            if let Some(b) = body {
                req = req.json(b);
            }
            let res = req.send().await.map_err(|e| {
                crmsync_metrics::zoho_call(op, None);
                ZohoError::Unavailable {
                    status: None,
                    message: if e.is_timeout() {
                        format!("timed out: {e}")
                    } else {
                        e.to_string()
                    },
                }
            })?;
            let status = res.status().as_u16();
            crmsync_metrics::zoho_call(op, Some(status));
            let credits = res
                .headers()
                .get("X-API-CREDITS-REMAINING")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = res.bytes().await.map_err(|e| ZohoError::Unavailable {
                status: Some(status),
                message: e.to_string(),
            })?;
            if status == 401 && !refreshed && dto::error_code(&bytes).as_deref() == Some("INVALID_TOKEN") {
                debug!(tenant = %org.tenant, "Zoho said INVALID_TOKEN; refreshing once");
                self.broker.invalidate(org, &token).await?;
                refreshed = true;
                continue;
            }
            if let Some(err) = error::from_status(status, &bytes, retry_after, credits) {
                return Err(err);
            }
            return Ok((status, credits, bytes.to_vec()));
        }
    }
}
