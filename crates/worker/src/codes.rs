//! Why a job died, as a short code: what `crmsync dead list --code X` filters on.
//!
//! A dead letter keeps its reason as text (the queue moves opaque errors). The code is derived
//! from that text here, next to the handlers that write it (`errors.rs`: `zoho: ...`,
//! `nylas: ...`, `redis: ...`), so a change to a reason's wording breaks this module's tests
//! instead of silently turning codes into `OTHER`. The vocabulary is closed: every reason maps
//! to exactly one of [`CODES`], so operators can filter, count and alert on a fixed list.
//!
//! Zoho's own codes are kept for the failures an operator fixes differently (a revoked refresh
//! token, a missing scope, a refused record); any other Zoho code falls into `ZOHO_AUTH` or
//! `ZOHO_REJECTED`. Nylas failures get a `NYLAS_` prefix, since Nylas's error types overlap
//! Zoho's codes in name but not in fix.

/// Every code a dead letter can have, with what it means and what to do.
pub const CODES: &[(&str, &str)] = &[
    // Zoho authentication.
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
    // Zoho refusing a request.
    ("INVALID_DATA", "Zoho refused the request's data"),
    ("MANDATORY_NOT_FOUND", "Zoho found a mandatory field missing"),
    ("DUPLICATE_DATA", "Zoho refused a duplicate"),
    ("LIMIT_EXCEEDED", "a request over Zoho's limits (records per call)"),
    ("NO_PERMISSION", "the Zoho user lacks a permission"),
    ("ZOHO_REJECTED", "another refusal of a request by Zoho"),
    // Zoho unavailable or throttling until the attempts ran out.
    ("TOO_MANY_REQUESTS", "Zoho kept answering 429"),
    (
        "TOKEN_REQUESTS_EXHAUSTED",
        "Zoho's 10 token requests per 10 minutes were used up",
    ),
    ("ZOHO_UNAVAILABLE", "Zoho 5xx answers, timeouts or connection failures"),
    ("ZOHO_DECODE", "a Zoho answer crmsync could not read"),
    (
        "CALL_TOO_LARGE",
        "a call costs more credits than the tenant's whole allowance",
    ),
    // Nylas.
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
    // crmsync and the queue.
    (
        "UNDECODABLE",
        "not a job of its queue (garbage, an older format): it cannot be retried, only purged",
    ),
    (
        "LEASE_EXPIRED",
        "the worker running its last attempt stopped (crash, kill, partition)",
    ),
    ("PANIC", "the handler panicked (a bug)"),
    ("REDIS", "Redis errors until the attempts ran out"),
    ("RUN_GONE", "the page's backfill run no longer exists"),
    ("TENANT", "the tenant is gone, or its settings or secrets are unusable"),
    ("BUFFER_CORRUPT", "a buffered write could not be read"),
    ("OTHER", "anything else (see the reason)"),
];

/// Zoho authentication codes kept as they are (upper-cased: Zoho's OAuth server answers
/// `invalid_code`, its API `INVALID_TOKEN`).
const ZOHO_AUTH_CODES: &[&str] = &[
    "INVALID_TOKEN",
    "INVALID_CODE",
    "INVALID_CLIENT",
    "OAUTH_SCOPE_MISMATCH",
];
/// Zoho request-refusal codes kept as they are.
const ZOHO_REJECT_CODES: &[&str] = &[
    "INVALID_DATA",
    "MANDATORY_NOT_FOUND",
    "DUPLICATE_DATA",
    "LIMIT_EXCEEDED",
    "NO_PERMISSION",
];

/// The vocabulary entry equal to `s` ignoring case, if any (for parsing `--code`).
pub fn parse(s: &str) -> Option<&'static str> {
    CODES.iter().map(|(c, _)| *c).find(|c| c.eq_ignore_ascii_case(s.trim()))
}

/// The code of a dead letter's reason; always one of [`CODES`].
pub fn code(reason: &str) -> &'static str {
    let r = reason.trim_start();
    if r.starts_with("undecodable entry:") {
        "UNDECODABLE"
    } else if r.starts_with("lease expired:") {
        "LEASE_EXPIRED"
    } else if r.starts_with("handler panicked") {
        "PANIC"
    } else if let Some(rest) = r.strip_prefix("zoho: ") {
        zoho(rest)
    } else if let Some(rest) = r.strip_prefix("nylas: ") {
        nylas(rest)
    } else if r.starts_with("redis: ") {
        "REDIS"
    } else if r.starts_with("run ") && r.contains(" no longer exists") {
        "RUN_GONE"
    } else if r.starts_with("a call of ") && r.contains("exceeds the whole allowance") {
        "CALL_TOO_LARGE"
    } else if r.starts_with("buffered entry ") {
        "BUFFER_CORRUPT"
    } else if r.starts_with("no tenant `")
        || r.starts_with("tenant `")
        || r.starts_with("stored tenant `")
        || r.starts_with("invalid tenant id")
        || r.starts_with("no secret key")
        || r.starts_with("the secret key is malformed")
        || r.starts_with("cannot read the key file")
        || r.starts_with("a stored secret cannot be decrypted")
    {
        "TENANT"
    } else {
        "OTHER"
    }
}

/// The text between the first `(` and the next `)`.
fn in_parens(s: &str) -> Option<&str> {
    let start = s.find('(')? + 1;
    let len = s[start..].find(')')?;
    Some(&s[start..start + len])
}

fn known(code: &str, list: &[&'static str], otherwise: &'static str) -> &'static str {
    list.iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(code))
        .unwrap_or(otherwise)
}

fn zoho(rest: &str) -> &'static str {
    if rest.starts_with("Zoho rate limit") {
        "TOO_MANY_REQUESTS"
    } else if rest.starts_with("Zoho unavailable") {
        "ZOHO_UNAVAILABLE"
    } else if rest.starts_with("Zoho token requests exhausted") {
        "TOKEN_REQUESTS_EXHAUSTED"
    } else if rest.starts_with("unexpected Zoho response") {
        "ZOHO_DECODE"
    } else if rest.starts_with("Zoho authentication failed") {
        known(in_parens(rest).unwrap_or(""), ZOHO_AUTH_CODES, "ZOHO_AUTH")
    } else if rest.starts_with("Zoho rejected the request") {
        // `(<status> <code>)`
        let code = in_parens(rest).and_then(|p| p.split_whitespace().nth(1)).unwrap_or("");
        known(code, ZOHO_REJECT_CODES, "ZOHO_REJECTED")
    } else {
        "OTHER"
    }
}

fn nylas(rest: &str) -> &'static str {
    if rest.starts_with("rate limited by Nylas") {
        "NYLAS_RATE_LIMITED"
    } else if rest.starts_with("Nylas refused the credentials") {
        "NYLAS_UNAUTHORIZED"
    } else if rest.starts_with("not found:") {
        "NYLAS_NOT_FOUND"
    } else if rest.starts_with("Nylas rejected the request") {
        "NYLAS_REJECTED"
    } else if rest.starts_with("Nylas server error") || rest.starts_with("could not reach Nylas") {
        "NYLAS_UNAVAILABLE"
    } else if rest.starts_with("unexpected Nylas response") {
        "NYLAS_DECODE"
    } else {
        "OTHER"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crmsync_nylas::NylasError;
    use crmsync_queue::JobError;
    use crmsync_zoho::ZohoError;

    use super::*;

    /// The reason a dead letter keeps for a handler's error, with the settle layer's suffix
    /// when the attempts ran out.
    fn reason(e: JobError) -> String {
        match e {
            JobError::Permanent(r) => r,
            JobError::Retry(r) | JobError::RetryAt { reason: r, .. } | JobError::Defer { reason: r, .. } => {
                format!("{r} (attempt 8 of 8)")
            }
        }
    }

    fn check(reason: &str, want: &str) {
        assert_eq!(code(reason), want, "{reason}");
        assert!(parse(want).is_some(), "{want} is in the vocabulary");
    }

    fn auth(code: &str) -> ZohoError {
        ZohoError::Auth {
            code: code.into(),
            message: "refused".into(),
        }
    }

    fn rejected(code: &str) -> ZohoError {
        ZohoError::Rejected {
            status: 400,
            code: code.into(),
            message: "no".into(),
        }
    }

    #[test]
    fn reasons_the_handlers_write_map_to_their_codes() {
        let zoho = |e: ZohoError| reason(crate::errors::zoho(e));
        let nylas = |e: NylasError| reason(crate::errors::nylas(e));
        let cases: Vec<(String, &str)> = vec![
            (zoho(auth("INVALID_TOKEN")), "INVALID_TOKEN"),
            (zoho(auth("invalid_code")), "INVALID_CODE"),
            (zoho(auth("invalid_client")), "INVALID_CLIENT"),
            (zoho(auth("OAUTH_SCOPE_MISMATCH")), "OAUTH_SCOPE_MISMATCH"),
            (zoho(auth("UNAUTHORIZED")), "ZOHO_AUTH"),
            (zoho(rejected("INVALID_DATA")), "INVALID_DATA"),
            (zoho(rejected("MANDATORY_NOT_FOUND")), "MANDATORY_NOT_FOUND"),
            (zoho(rejected("DUPLICATE_DATA")), "DUPLICATE_DATA"),
            (zoho(rejected("LIMIT_EXCEEDED")), "LIMIT_EXCEEDED"),
            (zoho(rejected("NO_PERMISSION")), "NO_PERMISSION"),
            (zoho(rejected("SOMETHING_NEW")), "ZOHO_REJECTED"),
            (
                zoho(ZohoError::RateLimited {
                    retry_after: Some(Duration::from_secs(3)),
                    credits_remaining: Some(5),
                }),
                "TOO_MANY_REQUESTS",
            ),
            (
                zoho(ZohoError::Unavailable {
                    status: Some(503),
                    message: "down".into(),
                }),
                "ZOHO_UNAVAILABLE",
            ),
            (
                zoho(ZohoError::Unavailable {
                    status: None,
                    message: "timed out".into(),
                }),
                "ZOHO_UNAVAILABLE",
            ),
            (
                zoho(ZohoError::TokenRequestsExhausted { retry_at_ms: 5 }),
                "TOKEN_REQUESTS_EXHAUSTED",
            ),
            (zoho(ZohoError::Decode("eof".into())), "ZOHO_DECODE"),
            (
                nylas(NylasError::Unauthorized("api.auth_error: bad key".into())),
                "NYLAS_UNAUTHORIZED",
            ),
            (nylas(NylasError::NotFound("grant".into())), "NYLAS_NOT_FOUND"),
            (
                nylas(NylasError::Rejected {
                    kind: "invalid_request_error".into(),
                    message: "bad cursor".into(),
                }),
                "NYLAS_REJECTED",
            ),
            (
                nylas(NylasError::Server {
                    status: 502,
                    message: "bad gateway".into(),
                }),
                "NYLAS_UNAVAILABLE",
            ),
            (nylas(NylasError::Transport("reset".into())), "NYLAS_UNAVAILABLE"),
            (nylas(NylasError::Decode("eof".into())), "NYLAS_DECODE"),
            (
                nylas(NylasError::RateLimited {
                    kind: "provider".into(),
                    retry_after: None,
                }),
                "NYLAS_RATE_LIMITED",
            ),
            (reason(crate::errors::redis("connection refused")), "REDIS"),
            (
                reason(crate::panic_to_retry(
                    &(Box::new("boom") as Box<dyn std::any::Any + Send>),
                )),
                "PANIC",
            ),
            (
                crmsync_tenants::StoreError::NotFound("acme".into()).to_string(),
                "TENANT",
            ),
            (
                crmsync_tenants::TenantError::NoRefreshToken("acme".into()).to_string(),
                "TENANT",
            ),
            (
                crmsync_tenants::StoreError::Secret(crmsync_tenants::SecretError::Missing).to_string(),
                "TENANT",
            ),
            (
                crmsync_limits::Wait::TooLarge { cost: 10, allowed: 5 }.reason(),
                "CALL_TOO_LARGE",
            ),
        ];
        for (r, want) in &cases {
            check(r, want);
        }
    }

    #[test]
    fn reasons_the_queue_writes_map_to_their_codes() {
        check(
            "undecodable entry: entry has no `id` field (not a crmsync job, or an older format)",
            "UNDECODABLE",
        );
        check(
            "undecodable entry: payload of job x does not decode: missing field `tenant`",
            "UNDECODABLE",
        );
        check(
            "lease expired: worker w1 stopped during attempt 8; previous error: zoho: Zoho unavailable (503): x (all 8 attempts used)",
            "LEASE_EXPIRED",
        );
        check("run acme-1 no longer exists", "RUN_GONE");
        check("buffered entry c1 is unreadable: eof", "BUFFER_CORRUPT");
        check("", "OTHER");
        check("something nobody wrote yet", "OTHER");
    }

    #[test]
    fn the_vocabulary_is_unique_and_parses_ignoring_case() {
        let mut seen = std::collections::BTreeSet::new();
        for (c, meaning) in CODES {
            assert!(seen.insert(*c), "{c} twice");
            assert!(!meaning.is_empty());
            assert_eq!(parse(&c.to_lowercase()), Some(*c));
        }
        for c in ZOHO_AUTH_CODES.iter().chain(ZOHO_REJECT_CODES) {
            assert!(seen.contains(c), "{c} is documented in CODES");
        }
        assert_eq!(parse("nope"), None);
    }
}
