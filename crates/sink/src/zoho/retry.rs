//! Zoho's failures, classified once from the response into what the caller does next
//! (vector's `RetryLogic` shape, not scattered `if status == 429`s): [`ZohoError`] inside this
//! folder, [`SinkError`] with its [`Next`] and dead-letter code at the seam.

use std::time::Duration;

use crmsync_redis::now_ms;

use crate::{Next, SinkError, Usage};

/// Codes a Zoho failure can carry (all in `crmsync dead codes`), with what they mean.
pub const CODES: &[(&str, &str)] = &[
    ("INVALID_TOKEN", "Zoho refused the access token, even after a refresh"),
    (
        "INVALID_CODE",
        "Zoho refused the tenant's refresh token (revoked or wrong): run `crmsync zoho exchange-code`",
    ),
    (
        "INVALID_CLIENT",
        "Zoho refused the tenant's client id or secret: fix them with `crmsync tenant set`",
    ),
    (
        "OAUTH_SCOPE_MISMATCH",
        "the Zoho grant lacks the scope ZohoCRM.modules.contacts.ALL",
    ),
    ("ZOHO_AUTH", "another Zoho authentication failure"),
    ("INVALID_DATA", "Zoho refused the request's data"),
    ("MANDATORY_NOT_FOUND", "Zoho found a mandatory field missing"),
    ("DUPLICATE_DATA", "Zoho refused a duplicate"),
    ("LIMIT_EXCEEDED", "a request over Zoho's limits (records per call)"),
    ("NO_PERMISSION", "the Zoho user lacks a permission"),
    ("ZOHO_REJECTED", "another refusal of a request by Zoho"),
    ("TOO_MANY_REQUESTS", "Zoho kept answering 429"),
    (
        "TOKEN_REQUESTS_EXHAUSTED",
        "Zoho's 10 token requests per 10 minutes were used up",
    ),
    ("ZOHO_UNAVAILABLE", "Zoho 5xx answers, timeouts or connection failures"),
    ("ZOHO_DECODE", "a Zoho answer crmsync could not read"),
    (
        "PAGE_TOKEN_EXPIRED",
        "Zoho refused the page token of a read (expired after 24 h, or made with other parameters): the read cannot go on from there; whether to start it again is the caller's decision",
    ),
    (
        "PAGINATION_LIMIT_EXCEEDED",
        "Zoho serves a read only its first 100,000 records (through page tokens): the org holds more Contacts",
    ),
    (crate::BAD_CURSOR, crate::BAD_CURSOR_MEANING),
    (
        "DEST_CHANGED",
        "the tenant was re-pointed or removed while the job ran (it runs again against the new settings)",
    ),
];

/// Zoho authentication codes kept as they are (upper-cased: Zoho's OAuth server answers
/// `invalid_code`, its API `INVALID_TOKEN`).
const AUTH_CODES: &[&str] = &[
    "INVALID_TOKEN",
    "INVALID_CODE",
    "INVALID_CLIENT",
    "OAUTH_SCOPE_MISMATCH",
];
/// Zoho request-refusal codes kept as they are.
const REJECT_CODES: &[&str] = &[
    "INVALID_DATA",
    "MANDATORY_NOT_FOUND",
    "DUPLICATE_DATA",
    "LIMIT_EXCEEDED",
    "NO_PERMISSION",
    "PAGINATION_LIMIT_EXCEEDED",
];
/// Zoho's refusals of a page token that was good once: expired (`EXPIRED_VALUE`, after 24 h)
/// or bound to other parameters (`TOKEN_BOUND_DATA_MISMATCH`, e.g. a read of another version
/// of crmsync). Both are `PAGE_TOKEN_EXPIRED`: a retry with the token cannot succeed.
const PAGE_TOKEN_CODES: &[&str] = &["EXPIRED_VALUE", "TOKEN_BOUND_DATA_MISMATCH"];

/// The vocabulary entry for Zoho's own `code`, else `otherwise`.
fn known(code: &str, list: &[&'static str], otherwise: &'static str) -> &'static str {
    list.iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(code))
        .unwrap_or(otherwise)
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
    /// The tenant was re-pointed or removed while this call was being prepared.
    #[error("the tenant's destination changed (re-pointed or removed) while the call was prepared")]
    Moved,
}

pub(crate) fn redis_err(e: redis::RedisError) -> ZohoError {
    ZohoError::Unavailable {
        status: None,
        message: format!("redis: {e}"),
    }
}

impl From<ZohoError> for SinkError {
    fn from(e: ZohoError) -> SinkError {
        let message = e.to_string();
        match e {
            ZohoError::RateLimited {
                retry_after,
                credits_remaining,
            } => SinkError::new(Next::Throttled { retry_after }, "TOO_MANY_REQUESTS", message)
                .with_usage(credits_remaining.map(Usage::Remaining)),
            ZohoError::Unavailable { .. } => SinkError::new(Next::Retry, "ZOHO_UNAVAILABLE", message),
            ZohoError::TokenRequestsExhausted { retry_at_ms } => SinkError::new(
                Next::RetryAfter(Duration::from_millis(retry_at_ms.saturating_sub(now_ms()))),
                "TOKEN_REQUESTS_EXHAUSTED",
                message,
            )
            .not_sent(),
            ZohoError::Auth { code, .. } => {
                let c = known(&code, AUTH_CODES, "ZOHO_AUTH");
                // A refresh token or client Zoho no longer accepts: nothing works until an
                // operator re-authorizes. A missing scope or a refused fresh token fails the job.
                let next = if matches!(c, "INVALID_CODE" | "INVALID_CLIENT") {
                    Next::Reauthorize
                } else {
                    Next::FailJob
                };
                let e = SinkError::new(next, c, message);
                if next == Next::Reauthorize { e.not_sent() } else { e }
            }
            ZohoError::Rejected { code, .. } if PAGE_TOKEN_CODES.iter().any(|c| c.eq_ignore_ascii_case(&code)) => {
                SinkError::new(Next::FailJob, "PAGE_TOKEN_EXPIRED", message)
            }
            ZohoError::Rejected { code, .. } => {
                SinkError::new(Next::FailJob, known(&code, REJECT_CODES, "ZOHO_REJECTED"), message)
            }
            // A 2xx we could not read (a proxy's page, a cut answer): the write is idempotent
            // (matched on Email), so it is retried rather than lost.
            ZohoError::Decode(_) => SinkError::new(Next::Retry, "ZOHO_DECODE", message),
            ZohoError::Moved => SinkError::new(Next::Retry, "DEST_CHANGED", message).not_sent(),
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
    let code = crate::clean(v["code"].as_str().unwrap_or(""), 64);
    let message = match v["message"].as_str() {
        Some(m) => crate::clean(m, 300),
        None => crate::clean(&String::from_utf8_lossy(&body[..body.len().min(200)]), 300),
    };
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

    /// HTTP status, body, and the expected decision with its code (None: not an error).
    type Case<'a> = (u16, &'a str, Option<(Next, &'a str)>);

    #[test]
    fn classification_table() {
        let cases: &[Case<'_>] = &[
            (200, r#"{"data":[]}"#, None),
            (207, r#"{"data":[]}"#, None),
            (
                400,
                r#"{"data":[{"code":"MANDATORY_NOT_FOUND","status":"error"}]}"#,
                None,
            ),
            (
                429,
                r#"{"code":"TOO_MANY_REQUESTS"}"#,
                Some((Next::Throttled { retry_after: None }, "TOO_MANY_REQUESTS")),
            ),
            (
                500,
                r#"{"code":"INTERNAL_ERROR"}"#,
                Some((Next::Retry, "ZOHO_UNAVAILABLE")),
            ),
            (504, "", Some((Next::Retry, "ZOHO_UNAVAILABLE"))),
            (
                401,
                r#"{"code":"OAUTH_SCOPE_MISMATCH","message":"invalid oauth scope"}"#,
                Some((Next::FailJob, "OAUTH_SCOPE_MISMATCH")),
            ),
            (401, r#"{"code":"SOMETHING_ELSE"}"#, Some((Next::FailJob, "ZOHO_AUTH"))),
            (
                400,
                r#"{"code":"LIMIT_EXCEEDED","message":"Record count exceeded"}"#,
                Some((Next::FailJob, "LIMIT_EXCEEDED")),
            ),
            (
                400,
                r#"{"code":"SOMETHING_NEW","message":"?"}"#,
                Some((Next::FailJob, "ZOHO_REJECTED")),
            ),
            (204, "", None),
            (
                400,
                r#"{"code":"EXPIRED_VALUE","details":{"api_name":"page_token","json_path":"$.query.page_token"},"message":"Page token expired","status":"error"}"#,
                Some((Next::FailJob, "PAGE_TOKEN_EXPIRED")),
            ),
            (
                400,
                r#"{"code":"TOKEN_BOUND_DATA_MISMATCH","details":{"param_name":"page_token"},"message":"input param is altered","status":"error"}"#,
                Some((Next::FailJob, "PAGE_TOKEN_EXPIRED")),
            ),
            (
                400,
                r#"{"code":"PAGINATION_LIMIT_EXCEEDED","details":{"param_name":"page_token"},"message":"up to first 100000 records","status":"error"}"#,
                Some((Next::FailJob, "PAGINATION_LIMIT_EXCEEDED")),
            ),
        ];
        for (status, body, want) in cases {
            let got = from_status(*status, body.as_bytes(), None, None).map(|e| {
                let e = SinkError::from(e);
                (e.next, e.code)
            });
            assert_eq!(got, *want, "{status} {body}");
        }
    }

    #[test]
    fn dead_grants_ask_for_re_authorization_and_every_code_is_documented() {
        for (code, next) in [
            ("invalid_code", Next::Reauthorize),
            ("invalid_client", Next::Reauthorize),
            ("INVALID_TOKEN", Next::FailJob),
        ] {
            let e = SinkError::from(ZohoError::Auth {
                code: code.into(),
                message: "no".into(),
            });
            assert_eq!(e.next, next, "{code}");
            assert!(CODES.iter().any(|(c, _)| *c == e.code), "{}", e.code);
        }
        for c in AUTH_CODES
            .iter()
            .chain(REJECT_CODES)
            .chain(&["PAGE_TOKEN_EXPIRED", crate::BAD_CURSOR])
        {
            assert!(CODES.iter().any(|(k, _)| k == c), "{c} is documented");
        }
    }
}
