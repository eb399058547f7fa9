//! A client for the Nylas v3 Contacts API: list a grant's contacts page by page, read one
//! contact, and turn every failure into what the caller does next.
//!
//! - Pages: `limit` (we ask for 200, Nylas's documented maximum), `page_token` from the previous
//!   page's `next_cursor`; the last page has no cursor (absent or null).
//! - 429: Nylas's own limit (`nylas_rate_limit_exceeded`, often without `Retry-After`) and
//!   provider throttling (`rate_limit_error`, with `Retry-After` when the provider sent one).
//!   A short `Retry-After` (≤ 5 s) is waited out here, up to 3 times; anything longer goes back
//!   to the caller as [`Next::RetryLater`] so the job is rescheduled instead of holding a slot.
//! - The API URI is per tenant: `us`, `eu`, or any URL.

mod dto;
mod error;

use std::time::Duration;

use crmsync_domain::Contact;
pub use dto::parse_contact;

/// Parses a contact page as Nylas answers it (what `list_contacts` does with a 200 body);
/// public for the fuzz targets (`make fuzz`): it never panics, whatever the bytes.
pub fn parse_contact_page(body: &[u8]) -> Result<ContactPage, NylasError> {
    dto::parse_page(body)
}
pub use error::{CODES, Next, NylasError};
use tracing::debug;

/// Nylas's limit on Contacts requests per second per grant.
pub const GRANT_RPS: f64 = 200.0;
/// Nylas's documented maximum page size.
pub const MAX_PAGE_SIZE: u32 = 200;
/// Longest `Retry-After` waited out in-process.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);
/// The largest answer read from Nylas: a page of 200 contacts is a few hundred KB, so 8 MiB
/// leaves room for rich contacts and never lets a stranger's endless answer fill memory.
pub const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// Reads an answer's body up to `max` bytes, streaming: an upstream answer is never trusted to
/// be small (a declared or actual size past `max` is an error before it is held).
async fn read_capped(mut res: reqwest::Response, max: usize) -> Result<Vec<u8>, NylasError> {
    if let Some(len) = res.content_length()
        && len as usize > max
    {
        return Err(NylasError::Decode(format!(
            "answer of {len} bytes is over the {max}-byte limit"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| NylasError::Transport(transport_message(&e)))?
    {
        if out.len() + chunk.len() > max {
            return Err(NylasError::Decode(format!("answer is over the {max}-byte limit")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
const INLINE_RETRIES: u32 = 3;

/// The API URI for a region name (`us`, `eu`) or a URL given as is.
pub fn api_uri(region_or_url: &str) -> String {
    match region_or_url.trim().to_ascii_lowercase().as_str() {
        "us" => "https://api.us.nylas.com".to_owned(),
        "eu" => "https://api.eu.nylas.com".to_owned(),
        _ => region_or_url.trim().trim_end_matches('/').to_owned(),
    }
}

/// Where and as whom to read: one grant (a connected mailbox).
#[derive(Clone, Copy)]
pub struct Grant<'a> {
    pub api_uri: &'a str,
    pub grant_id: &'a str,
    pub api_key: &'a str,
}

impl std::fmt::Debug for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("api_uri", &self.api_uri)
            .field("grant_id", &self.grant_id)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// One page of contacts.
#[derive(Debug, Clone)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    pub next_cursor: Option<String>,
    pub request_id: Option<String>,
}

/// The client. Cheap to clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct NylasClient {
    http: reqwest::Client,
}

impl NylasClient {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, NylasError> {
        // reqwest is built without a default TLS provider: ring, installed once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("crmsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NylasError::Transport(e.to_string()))?;
        Ok(Self { http })
    }

    /// Reads one page of the grant's address book.
    pub async fn list_contacts(
        &self,
        grant: &Grant<'_>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ContactPage, NylasError> {
        let url = format!("{}/v3/grants/{}/contacts", grant.api_uri, encode(grant.grant_id));
        let limit = limit.clamp(1, MAX_PAGE_SIZE).to_string();
        let mut query: Vec<(&str, &str)> = vec![("limit", &limit)];
        if let Some(c) = cursor {
            query.push(("page_token", c));
        }
        let body = self.get(grant, &url, &query).await?;
        dto::parse_page(&body)
    }

    /// Reads one contact; `None` when Nylas says it does not exist (treated as deleted).
    pub async fn get_contact(&self, grant: &Grant<'_>, id: &str) -> Result<Option<Contact>, NylasError> {
        let url = format!(
            "{}/v3/grants/{}/contacts/{}",
            grant.api_uri,
            encode(grant.grant_id),
            encode(id)
        );
        match self.get(grant, &url, &[]).await {
            Ok(body) => dto::parse_single(&body).map(Some),
            Err(NylasError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, grant: &Grant<'_>, url: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, NylasError> {
        let op = if url.ends_with("/contacts") { "list" } else { "get" };
        let mut tries = 0;
        loop {
            let res = self
                .http
                .get(url)
                .query(query)
                .bearer_auth(grant.api_key)
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| {
                    crmsync_metrics::nylas_call(op, None);
                    NylasError::Transport(transport_message(&e))
                })?;
            let status = res.status();
            crmsync_metrics::nylas_call(op, Some(status.as_u16()));
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = read_capped(res, MAX_ANSWER).await?;
            if status.is_success() {
                return Ok(body.to_vec());
            }
            let err = error::from_response(status.as_u16(), &body, retry_after);
            if let NylasError::RateLimited {
                retry_after: Some(wait),
                ..
            } = &err
                && *wait <= MAX_INLINE_WAIT
                && tries < INLINE_RETRIES
            {
                tries += 1;
                debug!(
                    grant = grant.grant_id,
                    wait_ms = wait.as_millis() as u64,
                    "Nylas asked to wait; waiting"
                );
                tokio::time::sleep(*wait).await;
                continue;
            }
            return Err(err);
        }
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's Display includes the URL, which holds no secret (the key is a header).
    if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_uri_by_region_or_url() {
        assert_eq!(super::api_uri("US"), "https://api.us.nylas.com");
        assert_eq!(super::api_uri("eu"), "https://api.eu.nylas.com");
        assert_eq!(
            super::api_uri("http://127.0.0.1:9/nylas/us/"),
            "http://127.0.0.1:9/nylas/us"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(super::encode("a b/c"), "a%20b%2Fc");
    }
}
