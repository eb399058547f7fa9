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
        // Zoho sends the header once half the day's credits are used, on every answer.
        Some(self.credits_remaining.map_or(Usage::BelowHalf, Usage::Remaining))
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

/// One tenant's Zoho API. Cheap to clone. Ready once it holds a fresh access token: the limit
/// layer polls readiness before it takes the call's slot, so a token fetch never delays a send
/// past its slot (calls would bunch up in a second).
pub struct ZohoHttp {
    http: reqwest::Client,
    broker: TokenBroker,
    org: Arc<ZohoOrg>,
    /// A token being fetched for readiness (in a mutex only to keep the client `Sync`).
    warming: std::sync::Mutex<Option<BoxFuture<'static, Result<(), ZohoError>>>>,
}

impl Clone for ZohoHttp {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            broker: self.broker.clone(),
            org: self.org.clone(),
            warming: std::sync::Mutex::new(None),
        }
    }
}

impl ZohoHttp {
    pub fn new(http: reqwest::Client, broker: TokenBroker, org: ZohoOrg) -> Self {
        Self {
            http,
            broker,
            org: Arc::new(org),
            warming: std::sync::Mutex::new(None),
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        let warming = self.warming.get_mut().unwrap_or_else(|p| p.into_inner());
        if warming.is_none() {
            if self.broker.is_fresh(&self.org) {
                return Poll::Ready(Ok(()));
            }
            let (broker, org) = (self.broker.clone(), self.org.clone());
            *warming = Some(Box::pin(async move { broker.token(&org).await.map(|_| ()) }));
        }
        let Some(fetch) = warming.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = std::task::ready!(fetch.as_mut().poll(cx));
        *warming = None;
        Poll::Ready(done.map_err(SinkError::from))
    }

    fn call(&mut self, call: ZohoCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(&call).await.map_err(SinkError::from) })
    }
}
