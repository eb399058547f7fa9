//! Zoho errors, classified by what the caller does next (vector's `RetryLogic` shape: the
//! decision is computed once from the response, not scattered `if status == 429`s).

use std::time::Duration;

/// What the caller does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Transient (429, 5xx, timeout): retry later, after the given wait when known.
    RetryLater(Option<Duration>),
    /// The access token was refused: get a fresh one (the client does this once by itself).
    RefreshToken,
    /// This record is bad; record why and carry on with the others.
    RejectRecord,
    /// The job cannot succeed until someone fixes the setup (credentials, scope, request).
    FailJob,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZohoError {
    /// 429 TOO_MANY_REQUESTS: over the credit allowance or the concurrency limit (Zoho does
    /// not say which).
    #[error("Zoho rate limit (429 TOO_MANY_REQUESTS){}", credits_remaining.map(|c| format!(", {c} credits remaining")).unwrap_or_default())]
    RateLimited {
        retry_after: Option<Duration>,
        credits_remaining: Option<u64>,
    },
    /// 5xx, a timeout or a connection failure.
    #[error("Zoho unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unavailable { status: Option<u16>, message: String },
    /// No token request may be made before `retry_at_ms` (Zoho allows 10 per 10 minutes).
    #[error("Zoho token requests exhausted for now; next allowed at {retry_at_ms} ms")]
    TokenRequestsExhausted { retry_at_ms: u64 },
    /// Authentication that a retry will not fix: a refresh token Zoho no longer accepts, a
    /// missing scope, a token refused right after a refresh.
    #[error("Zoho authentication failed ({code}): {message}")]
    Auth { code: String, message: String },
    /// Any other refusal of the whole request.
    #[error("Zoho rejected the request ({status} {code}): {message}")]
    Rejected { status: u16, code: String, message: String },
    /// A success response we could not read.
    #[error("unexpected Zoho response: {0}")]
    Decode(String),
}

impl ZohoError {
    pub fn next(&self) -> Next {
        match self {
            ZohoError::RateLimited { retry_after, .. } => Next::RetryLater(*retry_after),
            ZohoError::Unavailable { .. } => Next::RetryLater(None),
            ZohoError::TokenRequestsExhausted { retry_at_ms } => {
                let wait = retry_at_ms.saturating_sub(crate::token::now_ms());
                Next::RetryLater(Some(Duration::from_millis(wait)))
            }
            ZohoError::Auth { .. } | ZohoError::Rejected { .. } | ZohoError::Decode(_) => Next::FailJob,
        }
    }

    /// Zoho's error code, when it gave one.
    pub fn code(&self) -> &str {
        match self {
            ZohoError::RateLimited { .. } => "TOO_MANY_REQUESTS",
            ZohoError::Unavailable { .. } => "UNAVAILABLE",
            ZohoError::TokenRequestsExhausted { .. } => "TOKEN_REQUESTS_EXHAUSTED",
            ZohoError::Auth { code, .. } | ZohoError::Rejected { code, .. } => code,
            ZohoError::Decode(_) => "DECODE",
        }
    }
}

/// The error for a response, or `None` when the response carries results (2xx, or a 400
/// whose body is per-record results).
pub(crate) fn from_status(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    credits: Option<u64>,
) -> Option<ZohoError> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let code = v["code"].as_str().unwrap_or("").to_owned();
    let message = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    match status {
        200..=299 => None,
        400 if v["data"].is_array() => None,
        429 => Some(ZohoError::RateLimited {
            retry_after,
            credits_remaining: credits,
        }),
        401 => Some(ZohoError::Auth {
            code: if code.is_empty() { "UNAUTHORIZED".into() } else { code },
            message,
        }),
        500..=599 => Some(ZohoError::Unavailable {
            status: Some(status),
            message,
        }),
        _ => Some(ZohoError::Rejected {
            status,
            code: if code.is_empty() { "UNKNOWN".into() } else { code },
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: &[(u16, &str, Option<Next>)] = &[
            (200, r#"{"data":[]}"#, None),
            (207, r#"{"data":[]}"#, None),
            (
                400,
                r#"{"data":[{"code":"MANDATORY_NOT_FOUND","status":"error"}]}"#,
                None,
            ),
            (429, r#"{"code":"TOO_MANY_REQUESTS"}"#, Some(Next::RetryLater(None))),
            (500, r#"{"code":"INTERNAL_ERROR"}"#, Some(Next::RetryLater(None))),
            (504, "", Some(Next::RetryLater(None))),
            (
                401,
                r#"{"code":"OAUTH_SCOPE_MISMATCH","message":"invalid oauth scope"}"#,
                Some(Next::FailJob),
            ),
            (
                400,
                r#"{"code":"LIMIT_EXCEEDED","message":"Record count exceeded"}"#,
                Some(Next::FailJob),
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                from_status(*status, body.as_bytes(), None, None).map(|e| e.next()),
                *want,
                "{status} {body}"
            );
        }
    }
}
