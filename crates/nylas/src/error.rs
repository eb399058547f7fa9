//! Nylas errors, classified by what the caller does next.

use std::time::Duration;

/// What the caller does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Transient: try again later (after the given wait when Nylas said how long).
    RetryLater(Option<Duration>),
    /// Will not work until someone fixes the setup (key, grant, request).
    FailJob,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NylasError {
    /// 429: Nylas's own limit or provider throttling.
    #[error("rate limited by Nylas ({kind}){}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        kind: String,
        retry_after: Option<Duration>,
    },
    /// 401/403: the API key is wrong or the grant is no longer authorized.
    #[error("Nylas refused the credentials ({0}); check the tenant's Nylas API key and grant")]
    Unauthorized(String),
    /// 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// Other 4xx: a request Nylas will never accept.
    #[error("Nylas rejected the request: {kind}: {message}")]
    Rejected { kind: String, message: String },
    /// 5xx.
    #[error("Nylas server error {status}: {message}")]
    Server { status: u16, message: String },
    /// Connection failure or timeout.
    #[error("could not reach Nylas: {0}")]
    Transport(String),
    /// A 2xx body we could not read.
    #[error("unexpected Nylas response: {0}")]
    Decode(String),
}

/// Codes a Nylas failure can carry (all in `crmsync dead codes`), with what they mean. Nylas's
/// error types overlap the CRMs' codes in name but not in fix, hence the prefix.
pub const CODES: &[(&str, &str)] = &[
    (
        "NYLAS_UNAUTHORIZED",
        "Nylas refused the API key or the grant: fix them with `crmsync tenant set`",
    ),
    ("NYLAS_NOT_FOUND", "Nylas does not know the grant or the page"),
    ("NYLAS_REJECTED", "Nylas refused the request"),
    ("NYLAS_RATE_LIMITED", "Nylas kept throttling"),
    (
        "NYLAS_UNAVAILABLE",
        "Nylas 5xx answers, timeouts or connection failures",
    ),
    ("NYLAS_DECODE", "a Nylas answer crmsync could not read"),
];

impl NylasError {
    /// The dead-letter code of this failure.
    pub fn code(&self) -> &'static str {
        match self {
            NylasError::RateLimited { .. } => "NYLAS_RATE_LIMITED",
            NylasError::Unauthorized(_) => "NYLAS_UNAUTHORIZED",
            NylasError::NotFound(_) => "NYLAS_NOT_FOUND",
            NylasError::Rejected { .. } => "NYLAS_REJECTED",
            NylasError::Server { .. } | NylasError::Transport(_) => "NYLAS_UNAVAILABLE",
            NylasError::Decode(_) => "NYLAS_DECODE",
        }
    }

    pub fn next(&self) -> Next {
        match self {
            NylasError::RateLimited { retry_after, .. } => Next::RetryLater(*retry_after),
            // A 2xx that cannot be read (a proxy's page, a cut answer, a page without `data`)
            // is not the end of anything: read it again later.
            NylasError::Server { .. } | NylasError::Transport(_) | NylasError::Decode(_) => Next::RetryLater(None),
            NylasError::Unauthorized(_) | NylasError::NotFound(_) | NylasError::Rejected { .. } => Next::FailJob,
        }
    }
}

/// Reads the error envelope `{"request_id", "error": {"type", "message", "provider_error"?}}`.
pub(crate) fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> NylasError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let kind = v["error"]["type"].as_str().unwrap_or("unknown").to_owned();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        429 => NylasError::RateLimited { kind, retry_after },
        401 | 403 => NylasError::Unauthorized(format!("{kind}: {message}")),
        404 => NylasError::NotFound(message),
        500..=599 => NylasError::Server { status, message },
        _ => NylasError::Rejected { kind, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_both_kinds_of_429() {
        let own = from_response(
            429,
            br#"{"request_id":"r","error":{"type":"nylas_rate_limit_exceeded","message":"Too many requests"}}"#,
            None,
        );
        assert_eq!(own.next(), Next::RetryLater(None));
        let provider = from_response(
            429,
            br#"{"error":{"type":"rate_limit_error","message":"slow down","provider_error":{"error":{"code":429}}}}"#,
            Some(Duration::from_secs(1200)),
        );
        assert_eq!(provider.next(), Next::RetryLater(Some(Duration::from_secs(1200))));
        assert!(matches!(provider, NylasError::RateLimited { ref kind, .. } if kind == "rate_limit_error"));
    }

    #[test]
    fn other_errors() {
        assert_eq!(from_response(500, b"oops", None).next(), Next::RetryLater(None));
        assert_eq!(
            from_response(401, br#"{"error":{"type":"unauthorized","message":"bad key"}}"#, None).next(),
            Next::FailJob
        );
        let bad = from_response(
            400,
            br#"{"error":{"type":"invalid_request_error","message":"invalid page_token"}}"#,
            None,
        );
        assert_eq!(
            bad,
            NylasError::Rejected {
                kind: "invalid_request_error".into(),
                message: "invalid page_token".into()
            }
        );
    }
}
