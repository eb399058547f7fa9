//! Zoho's HTTP calls as a tower service: [`ZohoHttp`] sends a [`ZohoCall`] with the tenant's
//! access token (a 401 `INVALID_TOKEN` drops the token, gets a fresh one and retries once),
//! reads the answer within a size cap, and classifies failures ([`super::retry`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;
use tracing::debug;

use super::MAX_ANSWER;
use super::request::{MAX_BATCH, ZohoCall};
use super::retry::{self, ZohoError};
use super::token::{TokenBroker, ZohoOrg};
use crate::{BoxFuture, SinkError, SinkResponse, Usage};

/// An answer Zoho served (2xx, or a 400 carrying per-record results).
#[derive(Debug, Clone)]
pub struct ZohoReply {
    pub status: u16,
    /// `X-API-CREDITS-REMAINING`, sent once half the org's daily credits are used.
    pub credits_remaining: Option<u64>,
    pub body: Vec<u8>,
}

impl SinkResponse for ZohoReply {
    fn usage(&self) -> Option<Usage> {
        self.credits_remaining.map(Usage::Remaining)
    }
}

/// A reqwest client with the timeouts crmsync uses for CRMs.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    // reqwest is built without a default TLS provider: ring, installed once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("crmsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SinkError::new(crate::Next::Retry, "ZOHO_UNAVAILABLE", e.to_string()))
}

/// One tenant's Zoho API. Cheap to clone.
#[derive(Clone)]
pub struct ZohoHttp {
    http: reqwest::Client,
    broker: TokenBroker,
    org: Arc<ZohoOrg>,
}

impl ZohoHttp {
    pub fn new(http: reqwest::Client, broker: TokenBroker, org: ZohoOrg) -> Self {
        Self {
            http,
            broker,
            org: Arc::new(org),
        }
    }

    pub fn org(&self) -> &ZohoOrg {
        &self.org
    }

    async fn send(&self, call: &ZohoCall) -> Result<ZohoReply, ZohoError> {
        if call.len() > MAX_BATCH {
            return Err(ZohoError::Rejected {
                status: 0,
                code: "LIMIT_EXCEEDED".into(),
                message: format!("{} records in one call; Zoho takes at most {MAX_BATCH}", call.len()),
            });
        }
        let op = call.name();
        let (method, path, query, body) = call.http();
        let mut refreshed = false;
        loop {
            let token = self.broker.token(&self.org).await?;
            let url = format!("{}{path}", token.api_domain);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .query(&query)
                .header("Authorization", format!("Zoho-oauthtoken {}", token.value()));
            if let Some(b) = &body {
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
                .map(|s| Duration::from_secs(s.min(3600)));
            let bytes = crate::read_capped(res, MAX_ANSWER)
                .await
                .map_err(|message| ZohoError::Unavailable {
                    status: Some(status),
                    message,
                })?;
            if status == 401 && !refreshed && super::dto::error_code(&bytes).as_deref() == Some("INVALID_TOKEN") {
                debug!(tenant = %self.org.tenant, "Zoho said INVALID_TOKEN; refreshing once");
                self.broker.invalidate(&self.org, &token).await?;
                refreshed = true;
                continue;
            }
            if let Some(err) = retry::from_status(status, &bytes, retry_after, credits) {
                return Err(err);
            }
            return Ok(ZohoReply {
                status,
                credits_remaining: credits,
                body: bytes,
            });
        }
    }
}

impl Service<ZohoCall> for ZohoHttp {
    type Response = ZohoReply;
    type Error = SinkError;
    type Future = BoxFuture<'static, Result<ZohoReply, SinkError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ZohoCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(&call).await.map_err(SinkError::from) })
    }
}
