//! Salesforce's HTTP calls as a tower service: [`SalesforceHttp`] sends an [`SfCall`] with the
//! tenant's session (a 401 `INVALID_SESSION_ID` drops the session, gets a fresh one and retries
//! once), reads the answer within a size cap, reads the org's usage from `Sforce-Limit-Info`,
//! and classifies failures (`super::retry`).

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;
use tracing::debug;

use super::MAX_ANSWER;
use super::request::{Path, SfCall, SfOp};
use super::retry;
use super::token::{SfOrg, SfTokens};
use crate::{BoxFuture, Next, SinkError, SinkResponse, Usage};

/// The header Salesforce sends on every API answer: `api-usage=USED/MAX`, possibly with other
/// entries (`per-app-api-usage=17/250(appName=sample-app)`).
pub const LIMIT_INFO: &str = "Sforce-Limit-Info";

/// The org's API usage from a `Sforce-Limit-Info` value: the `api-usage=USED/MAX` entry; other
/// entries (separated by `,` or `;`) are ignored. None when absent or unreadable.
pub fn parse_limit_info(value: &str) -> Option<Usage> {
    value.split([',', ';']).find_map(|entry| {
        let (name, v) = entry.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("api-usage") {
            return None;
        }
        let (used, max) = v.trim().split_once('/')?;
        let used = used.trim().parse().ok()?;
        let max = max.trim().parse().ok()?;
        Some(Usage::Used { used, max })
    })
}

/// An answer Salesforce served (2xx).
#[derive(Debug, Clone)]
pub struct SfReply {
    pub status: u16,
    /// From `Sforce-Limit-Info`.
    pub usage: Option<Usage>,
    pub body: Vec<u8>,
}

impl SinkResponse for SfReply {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// One tenant's Salesforce API. Cheap to clone. Ready once it holds a fresh session: the limit
/// layer polls readiness before it takes the call's slot, so a token fetch never delays a send
/// past its slot.
pub struct SalesforceHttp {
    http: reqwest::Client,
    tokens: SfTokens,
    org: Arc<SfOrg>,
    /// A token being fetched for readiness (in a mutex only to keep the client `Sync`).
    warming: std::sync::Mutex<Option<BoxFuture<'static, Result<(), SinkError>>>>,
}

impl Clone for SalesforceHttp {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            tokens: self.tokens.clone(),
            org: self.org.clone(),
            warming: std::sync::Mutex::new(None),
        }
    }
}

impl SalesforceHttp {
    pub fn new(http: reqwest::Client, tokens: SfTokens, org: SfOrg) -> Self {
        Self {
            http,
            tokens,
            org: Arc::new(org),
            warming: std::sync::Mutex::new(None),
        }
    }

    pub fn org(&self) -> &SfOrg {
        &self.org
    }

    async fn send(&self, call: &SfCall) -> Result<SfReply, SinkError> {
        if let Err(message) = call.check() {
            return Err(SinkError::new(Next::FailJob, "EXCEEDED_ID_LIMIT", message).not_sent());
        }
        let op = call.name();
        let h = call.http(&self.org.ext_id_field);
        let mut refreshed = false;
        loop {
            let token = self.tokens.token(&self.org).await?;
            let url = match &h.path {
                Path::Data(rest) => format!("{}/services/data/{}/{rest}", token.instance_url, self.org.api_version),
                Path::Absolute(path) => format!("{}{path}", token.instance_url),
            };
            let mut req = self
                .http
                .request(h.method.clone(), &url)
                .query(&h.query)
                .bearer_auth(token.value());
            if let Some(b) = &h.body {
                req = req.json(b);
            }
            if self.org.allow_duplicates && matches!(call.op, SfOp::Upsert { .. }) {
                req = req.header("Sforce-Duplicate-Rule-Header", "allowSave=true");
            }
            let res = req.send().await.map_err(|e| {
                crmsync_metrics::salesforce_call(op, None, false);
                retry::transport(op, &e)
            })?;
            let status = res.status().as_u16();
            let usage = res
                .headers()
                .get(LIMIT_INFO)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_limit_info);
            let body = crate::read_capped(res, MAX_ANSWER).await.map_err(|m| {
                SinkError::new(Next::Retry, "SF_UNAVAILABLE", format!("Salesforce {op}: {m}")).with_usage(usage)
            })?;
            let limited = status == 403 && retry::first_error(&body).0 == "REQUEST_LIMIT_EXCEEDED";
            crmsync_metrics::salesforce_call(op, Some(status), limited);
            if status == 401 && retry::first_error(&body).0 == "INVALID_SESSION_ID" {
                // Dropped whether or not this was the retry: the next attempt starts afresh.
                self.tokens.invalidate(&self.org, &token).await?;
                if !refreshed {
                    debug!(tenant = %self.org.tenant, op, "Salesforce said INVALID_SESSION_ID; refreshing once");
                    refreshed = true;
                    continue;
                }
            }
            if let Some(e) = retry::from_answer(status, &body, usage) {
                debug!(tenant = %self.org.tenant, op, status, code = e.code, "Salesforce refused a call");
                return Err(e);
            }
            return Ok(SfReply { status, usage, body });
        }
    }
}

impl Service<SfCall> for SalesforceHttp {
    type Response = SfReply;
    type Error = SinkError;
    type Future = BoxFuture<'static, Result<SfReply, SinkError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SinkError>> {
        let warming = self.warming.get_mut().unwrap_or_else(|p| p.into_inner());
        if warming.is_none() {
            if self.tokens.is_fresh(&self.org) {
                return Poll::Ready(Ok(()));
            }
            let (tokens, org) = (self.tokens.clone(), self.org.clone());
            *warming = Some(Box::pin(async move { tokens.token(&org).await.map(|_| ()) }));
        }
        let Some(fetch) = warming.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = std::task::ready!(fetch.as_mut().poll(cx));
        *warming = None;
        Poll::Ready(done)
    }

    fn call(&mut self, call: SfCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(&call).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_api_usage_entry_only() {
        let used = |used, max| Some(Usage::Used { used, max });
        assert_eq!(parse_limit_info("api-usage=25/15000"), used(25, 15_000));
        assert_eq!(
            parse_limit_info("api-usage=18/5000, per-app-api-usage=17/250(appName=sample-app)"),
            used(18, 5_000)
        );
        assert_eq!(
            parse_limit_info("per-app-api-usage=17/250(appName=a); api-usage=7/15000"),
            used(7, 15_000)
        );
        assert_eq!(parse_limit_info(" API-Usage = 0 / 100 "), used(0, 100));
        for bad in [
            "",
            "api-usage=",
            "api-usage=x/15000",
            "api-usage=5",
            "per-app-api-usage=1/2",
            "api-usage=-1/5",
        ] {
            assert_eq!(parse_limit_info(bad), None, "{bad}");
        }
    }
}
