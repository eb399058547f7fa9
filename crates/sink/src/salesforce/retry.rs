//! Salesforce's failures, classified once from the answer into what the caller does next
//! (vector's `RetryLogic` shape): every function here returns a [`SinkError`] whose code is in
//! [`CODES`].
//!
//! | answer | next | code |
//! |---|---|---|
//! | 403 `REQUEST_LIMIT_EXCEEDED` `TotalRequests…` (daily allowance) | throttled, usage = the allowance | `REQUEST_LIMIT_EXCEEDED` |
//! | 403 `REQUEST_LIMIT_EXCEEDED` otherwise (concurrency), 429 | throttled | `SF_CONCURRENCY` |
//! | 401 `INVALID_SESSION_ID` after one refresh | retry | `INVALID_SESSION_ID` |
//! | 5xx, timeout, connection | retry | `SF_UNAVAILABLE` |
//! | a 2xx crmsync cannot read | retry | `SF_DECODE` |
//! | 400 `INVALID_QUERY_LOCATOR` (a cursor closed while paging) | retry (a read: start it again, the caller's decision) | `INVALID_QUERY_LOCATOR` |
//! | a read cursor the sink did not make (checked before sending) | fail the job | `BAD_CURSOR` |
//! | other 4xx (`INVALID_FIELD`, `NOT_FOUND`, …) | fail the job | the code, else `SF_REJECTED` |
//! | token endpoint `invalid_grant` | re-authorize | `SF_INVALID_GRANT` |
//! | token endpoint `invalid_client_id` / `invalid_client` | re-authorize | `SF_INVALID_CLIENT` |
//! | token endpoint otherwise, 5xx, timeout | retry | `SF_UNAVAILABLE` |
//!
//! With the daily allowance spent there is no retry storm: the limit layer books the usage the
//! error carries, pauses the tenant until the rolling window has room and reads the usage
//! again with a `GET limits` probe.

use crate::{Next, SinkError, Usage, clean};

/// Codes a Salesforce failure can carry (all in `crmsync dead codes`), with what they mean.
/// Salesforce's own error codes are kept as they are; crmsync's are prefixed `SF_`.
/// `DEST_CHANGED` and `REDIS` mean what they mean everywhere in the fleet.
pub const CODES: &[(&str, &str)] = &[
    (
        "SF_INVALID_GRANT",
        "Salesforce refused the tenant's refresh token (revoked, expired or another org's): re-authorize with `crmsync salesforce exchange-code <tenant> --code ...`",
    ),
    (
        "SF_INVALID_CLIENT",
        "Salesforce refused the tenant's consumer key or secret: fix them with `crmsync tenant set`",
    ),
    (
        "INVALID_SESSION_ID",
        "Salesforce refused the access token, even right after a refresh",
    ),
    (
        "REQUEST_LIMIT_EXCEEDED",
        "the org's daily API request allowance (rolling 24 h, all integrations) is spent: writes wait until usage falls",
    ),
    (
        "SF_CONCURRENCY",
        "Salesforce refused a request for too many requests at once (ConcurrentPerOrgLongTxn)",
    ),
    (
        "SF_UNAVAILABLE",
        "Salesforce (API or token endpoint) 5xx answers, timeouts, connection failures or other token-endpoint errors",
    ),
    ("SF_DECODE", "a Salesforce answer crmsync could not read"),
    (
        "SF_ACCOUNTS",
        "the org's Accounts (for routing) were being read by another worker for too long",
    ),
    (
        "INVALID_QUERY_LOCATOR",
        "a Salesforce query cursor closed while its pages were read (the query runs again)",
    ),
    (
        "INVALID_FIELD",
        "a field crmsync writes or reads does not exist or is not visible (check the external-id field on Contact and Lead)",
    ),
    (
        "NOT_FOUND",
        "Salesforce does not know the resource (the object, the external-id field or the API version)",
    ),
    ("INVALID_TYPE", "Salesforce does not know the object"),
    ("MALFORMED_QUERY", "Salesforce refused a query crmsync made"),
    (
        "INSUFFICIENT_ACCESS",
        "the integration user lacks a permission on Contact, Lead or Account",
    ),
    (
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "the integration user may not write the record or field",
    ),
    (
        "API_DISABLED_FOR_ORG",
        "the org's edition or the user's profile has no API access",
    ),
    ("API_CURRENTLY_DISABLED", "the org's API access is turned off"),
    ("JSON_PARSER_ERROR", "Salesforce could not read a request crmsync sent"),
    (
        "EXCEEDED_ID_LIMIT",
        "a request with more than 200 records or ids (never sent by crmsync)",
    ),
    ("SF_REJECTED", "another refusal of a whole request by Salesforce"),
    (
        "DEST_CHANGED",
        "the tenant was re-pointed or removed while the job ran (it runs again against the new settings)",
    ),
    ("REDIS", "Redis errors until the attempts ran out"),
    (crate::BAD_CURSOR, crate::BAD_CURSOR_MEANING),
];

/// Salesforce request-refusal codes kept as they are (the job fails).
const REJECT_CODES: &[&str] = &[
    "INVALID_FIELD",
    "NOT_FOUND",
    "INVALID_TYPE",
    "MALFORMED_QUERY",
    "INSUFFICIENT_ACCESS",
    "INSUFFICIENT_ACCESS_OR_READONLY",
    "API_DISABLED_FOR_ORG",
    "API_CURRENTLY_DISABLED",
    "JSON_PARSER_ERROR",
    "EXCEEDED_ID_LIMIT",
];

/// The vocabulary entry for Salesforce's own code, else `otherwise`.
fn known(code: &str, list: &[&'static str], otherwise: &'static str) -> &'static str {
    list.iter().copied().find(|k| *k == code).unwrap_or(otherwise)
}

/// The first error of an error array (`[{"message","errorCode","fields"}]`), cleaned: code
/// (empty when none) and message (a bounded excerpt of the body when none).
pub(crate) fn first_error(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let e = if v.is_array() { &v[0] } else { &v };
    let code = e["errorCode"].as_str().or_else(|| e["error"].as_str()).unwrap_or("");
    let message = match e["message"].as_str().or_else(|| e["error_description"].as_str()) {
        Some(m) => clean(m, 300),
        None => clean(&String::from_utf8_lossy(&body[..body.len().min(200)]), 200),
    };
    (clean(code, 64), message)
}

/// The error for an API answer, or `None` when it carries results (2xx).
pub(crate) fn from_answer(status: u16, body: &[u8], usage: Option<Usage>) -> Option<SinkError> {
    if (200..300).contains(&status) {
        return None;
    }
    let (code, message) = first_error(body);
    let text = format!(
        "Salesforce answered {status}{}: {message}",
        if code.is_empty() {
            String::new()
        } else {
            format!(" {code}")
        }
    );
    let e = match (status, code.as_str()) {
        (403, "REQUEST_LIMIT_EXCEEDED") if message.contains("TotalRequests") => {
            // The org is at its allowance: whatever the header said, it is all used.
            let at_limit = usage.map(|u| match u {
                Usage::Used { used, max } => Usage::Used {
                    used: used.max(max),
                    max,
                },
                other => other,
            });
            return Some(
                SinkError::new(Next::Throttled { retry_after: None }, "REQUEST_LIMIT_EXCEEDED", text)
                    .with_usage(at_limit),
            );
        }
        (403, "REQUEST_LIMIT_EXCEEDED") | (429, _) => {
            SinkError::new(Next::Throttled { retry_after: None }, "SF_CONCURRENCY", text)
        }
        (401, "INVALID_SESSION_ID") => SinkError::new(Next::Retry, "INVALID_SESSION_ID", text),
        (500..=599, _) => SinkError::new(Next::Retry, "SF_UNAVAILABLE", text),
        (_, "INVALID_QUERY_LOCATOR") => SinkError::new(Next::Retry, "INVALID_QUERY_LOCATOR", text),
        (_, c) => SinkError::new(Next::FailJob, known(c, REJECT_CODES, "SF_REJECTED"), text),
    };
    Some(e.with_usage(usage))
}

/// No answer: a timeout or a connection failure (the request may have reached Salesforce).
pub(crate) fn transport(what: &str, e: &reqwest::Error) -> SinkError {
    let how = if e.is_timeout() { "timed out" } else { "failed" };
    SinkError::new(
        Next::Retry,
        "SF_UNAVAILABLE",
        format!("Salesforce {what} {how}: {}", clean(&e.to_string(), 300)),
    )
}

/// A 2xx answer crmsync could not read: the writes are idempotent (keyed on the external id),
/// so they are retried rather than lost.
pub(crate) fn decode(message: impl AsRef<str>) -> SinkError {
    SinkError::new(
        Next::Retry,
        "SF_DECODE",
        format!("unexpected Salesforce answer: {}", clean(message.as_ref(), 300)),
    )
}

pub(crate) fn redis(e: redis::RedisError) -> SinkError {
    SinkError::new(Next::Retry, "REDIS", format!("redis: {e}")).not_sent()
}

/// The tenant was re-pointed or removed while the call was prepared.
pub(crate) fn moved() -> SinkError {
    SinkError::new(
        Next::Retry,
        "DEST_CHANGED",
        "the tenant's destination changed (re-pointed or removed) while the call was prepared",
    )
    .not_sent()
}

/// Which grant a token request was for (the fix differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant<'a> {
    /// A session from the tenant's refresh token.
    Refresh { tenant: &'a str },
    /// An authorization code exchanged for a refresh token.
    Code,
}

/// The error for a token-endpoint answer other than 200. Nothing reached the API: not sent.
pub(crate) fn from_token_answer(status: u16, body: &[u8], grant: Grant<'_>) -> SinkError {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let error = clean(v["error"].as_str().unwrap_or(""), 64);
    let description = clean(v["error_description"].as_str().unwrap_or(""), 200);
    let said = if error.is_empty() {
        format!("HTTP {status}")
    } else if description.is_empty() {
        error.clone()
    } else {
        format!("{error}: {description}")
    };
    let e = match (status, error.as_str()) {
        (400..=499, "invalid_grant") => SinkError::new(
            Next::Reauthorize,
            "SF_INVALID_GRANT",
            match grant {
                Grant::Refresh { tenant } => format!(
                    "Salesforce refused the refresh token ({said}); re-authorize the tenant with `crmsync salesforce exchange-code {tenant} --code ...`"
                ),
                Grant::Code => format!(
                    "Salesforce refused the authorization code ({said}): it is unknown, expired or already used; get a new one from the consent screen"
                ),
            },
        ),
        (400..=499, "invalid_client_id" | "invalid_client") => SinkError::new(
            Next::Reauthorize,
            "SF_INVALID_CLIENT",
            format!("Salesforce refused the consumer key or secret ({said}); fix them with `crmsync tenant set`"),
        ),
        _ => SinkError::new(
            Next::Retry,
            "SF_UNAVAILABLE",
            format!("Salesforce's token endpoint answered {status} ({said})"),
        ),
    };
    e.not_sent()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HTTP status, body, and the expected decision with its code (None: not an error).
    type Case<'a> = (u16, &'a str, Option<(Next, &'a str)>);

    #[test]
    fn classification_table() {
        let throttled = Next::Throttled { retry_after: None };
        let cases: &[Case<'_>] = &[
            (200, r#"[{"id":"003","success":true}]"#, None),
            (201, "{}", None),
            (204, "", None),
            (
                403,
                r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
                Some((throttled, "REQUEST_LIMIT_EXCEEDED")),
            ),
            (
                403,
                r#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
                Some((throttled, "SF_CONCURRENCY")),
            ),
            (429, "", Some((throttled, "SF_CONCURRENCY"))),
            (
                401,
                r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
                Some((Next::Retry, "INVALID_SESSION_ID")),
            ),
            (
                500,
                r#"[{"message":"An unexpected error occurred.","errorCode":"UNKNOWN_EXCEPTION"}]"#,
                Some((Next::Retry, "SF_UNAVAILABLE")),
            ),
            (
                503,
                r#"[{"message":"The server is temporarily unable","errorCode":"SERVER_UNAVAILABLE"}]"#,
                Some((Next::Retry, "SF_UNAVAILABLE")),
            ),
            (502, "<html>bad gateway</html>", Some((Next::Retry, "SF_UNAVAILABLE"))),
            (
                400,
                r#"[{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}]"#,
                Some((Next::Retry, "INVALID_QUERY_LOCATOR")),
            ),
            (
                400,
                r#"[{"message":"No such column 'X__c' on entity 'Contact'","errorCode":"INVALID_FIELD"}]"#,
                Some((Next::FailJob, "INVALID_FIELD")),
            ),
            (
                404,
                r#"[{"message":"The requested resource does not exist","errorCode":"NOT_FOUND"}]"#,
                Some((Next::FailJob, "NOT_FOUND")),
            ),
            (
                400,
                r#"[{"message":"sObject type 'Foo' is not supported.","errorCode":"INVALID_TYPE"}]"#,
                Some((Next::FailJob, "INVALID_TYPE")),
            ),
            (
                400,
                r#"[{"message":"unexpected token","errorCode":"MALFORMED_QUERY"}]"#,
                Some((Next::FailJob, "MALFORMED_QUERY")),
            ),
            (
                403,
                r#"[{"message":"insufficient access rights on object id","errorCode":"INSUFFICIENT_ACCESS"}]"#,
                Some((Next::FailJob, "INSUFFICIENT_ACCESS")),
            ),
            (
                403,
                r#"[{"message":"The REST API is not enabled for this Organization.","errorCode":"API_DISABLED_FOR_ORG"}]"#,
                Some((Next::FailJob, "API_DISABLED_FOR_ORG")),
            ),
            (
                400,
                r#"[{"message":"?","errorCode":"SOMETHING_NEW"}]"#,
                Some((Next::FailJob, "SF_REJECTED")),
            ),
            (418, "not json", Some((Next::FailJob, "SF_REJECTED"))),
        ];
        for (status, body, want) in cases {
            let got = from_answer(*status, body.as_bytes(), None).map(|e| (e.next, e.code));
            assert_eq!(got, *want, "{status} {body}");
        }
    }

    #[test]
    fn the_daily_limit_reports_the_allowance_as_used_and_keeps_other_readings() {
        let body = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let e = from_answer(
            403,
            body,
            Some(Usage::Used {
                used: 14_990,
                max: 15_000,
            }),
        )
        .expect("error");
        assert_eq!(
            e.usage,
            Some(Usage::Used {
                used: 15_000,
                max: 15_000
            })
        );
        assert!(!e.not_sent, "the request reached Salesforce");
        let e = from_answer(403, body, None).expect("error");
        assert_eq!(e.usage, None, "no header, no reading made up");
        let concurrency =
            br#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        let e = from_answer(403, concurrency, Some(Usage::Used { used: 10, max: 15_000 })).expect("error");
        assert_eq!(e.usage, Some(Usage::Used { used: 10, max: 15_000 }));
    }

    #[test]
    fn token_endpoint_errors_say_what_to_do_and_are_not_sent() {
        let refresh = Grant::Refresh { tenant: "acme" };
        for (status, body, next, code) in [
            (
                400,
                r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#,
                Next::Reauthorize,
                "SF_INVALID_GRANT",
            ),
            (
                400,
                r#"{"error":"invalid_client_id","error_description":"client identifier invalid"}"#,
                Next::Reauthorize,
                "SF_INVALID_CLIENT",
            ),
            (
                400,
                r#"{"error":"invalid_client","error_description":"invalid client credentials"}"#,
                Next::Reauthorize,
                "SF_INVALID_CLIENT",
            ),
            (
                400,
                r#"{"error":"unsupported_grant_type","error_description":"grant type not supported"}"#,
                Next::Retry,
                "SF_UNAVAILABLE",
            ),
            (503, "<html>down</html>", Next::Retry, "SF_UNAVAILABLE"),
        ] {
            let e = from_token_answer(status, body.as_bytes(), refresh);
            assert_eq!((e.next, e.code), (next, code), "{body}");
            assert!(e.not_sent);
            assert!(!e.message.contains("<html>"), "no upstream body: {}", e.message);
        }
        let e = from_token_answer(400, br#"{"error":"invalid_grant"}"#, refresh);
        assert!(
            e.message.contains("crmsync salesforce exchange-code acme --code"),
            "{}",
            e.message
        );
        let e = from_token_answer(400, br#"{"error":"invalid_client"}"#, refresh);
        assert!(e.message.contains("crmsync tenant set"), "{}", e.message);
    }

    #[test]
    fn every_code_is_documented_once_and_none_clashes_with_zoho() {
        let mut seen = std::collections::BTreeSet::new();
        for (c, meaning) in CODES {
            assert!(seen.insert(*c), "{c} twice");
            assert!(!meaning.is_empty());
            if let Some((_, zoho)) = crate::zoho::CODES.iter().find(|(z, _)| z == c) {
                assert_eq!(zoho, meaning, "{c} is shared with Zoho only with the same meaning");
            }
        }
        for c in REJECT_CODES {
            assert!(seen.contains(c), "{c} is documented");
        }
        for e in [
            crate::bad_cursor("x"),
            decode("x"),
            redis(redis::RedisError::from((redis::ErrorKind::Io, "down"))),
            moved(),
        ] {
            assert!(seen.contains(e.code), "{}", e.code);
        }
    }
}
