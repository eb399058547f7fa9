//! The closed vocabulary of dead-letter codes: what `crmsync dead list --code X` filters on.
//!
//! Every failure carries its code from where it happens (a sink's classification of the CRM's
//! answer, the Nylas client's, the limiter's, the queue's own) to the dead-letter stream (field
//! `c`); nothing is derived from message text. This module only lists the codes, each with what
//! it means and what to do, so operators can filter, count and alert on a fixed list; its tests
//! check that every code written anywhere is listed.

use crmsync_queue::codes as queue;

/// Codes written by the worker, the limiter and the queue (the CRMs' and Nylas's are listed by
/// their clients).
const FLEET: &[(&str, &str)] = &[
    (
        queue::UNDECODABLE,
        "not a job of its queue (garbage, an older format): it cannot be retried, only purged",
    ),
    (
        queue::LEASE_EXPIRED,
        "the worker running its last attempt stopped (crash, kill, partition)",
    ),
    ("PANIC", "the handler panicked (a bug)"),
    ("REDIS", "Redis errors until the attempts ran out"),
    ("RUN_GONE", "the page's backfill run no longer exists"),
    ("TENANT", "the tenant is gone, or its settings or secrets are unusable"),
    ("BUFFER_CORRUPT", "a buffered write could not be read"),
    (
        "DEST_CHANGED",
        "the tenant was re-pointed or removed while the job ran (it runs again against the new settings)",
    ),
    (
        "BUDGET",
        "crmsync used its share of the org's budget (deferred until credits return)",
    ),
    (
        "ORG_BUDGET",
        "the org's other integrations used the share of its budget (deferred until there is room; probed)",
    ),
    ("PAUSED", "the tenant was paused by an operator"),
    ("BUSY", "no concurrency slot came free in time"),
    (
        "CALL_TOO_LARGE",
        "a call costs more credits than the tenant's whole allowance",
    ),
    (queue::OTHER, "anything else (see the reason)"),
];

/// Every code a dead letter can have, with what it means and what to do; each code once.
pub fn all() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for (c, m) in crmsync_sink::zoho::CODES
        .iter()
        .chain(crmsync_sink::salesforce::CODES)
        .chain(crmsync_nylas::CODES)
        .chain(FLEET)
    {
        if !out.iter().any(|(k, _)| k == c) {
            out.push((c, m));
        }
    }
    out
}

/// The vocabulary entry equal to `s` ignoring case, if any (for parsing `--code`).
pub fn parse(s: &str) -> Option<&'static str> {
    all()
        .into_iter()
        .map(|(c, _)| c)
        .find(|c| c.eq_ignore_ascii_case(s.trim()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crmsync_nylas::NylasError;
    use crmsync_sink::{Next, SinkError};

    use super::*;

    fn listed(code: &str) {
        assert!(parse(code).is_some(), "{code} is not in the vocabulary");
    }

    #[test]
    fn every_code_the_fleet_writes_is_listed() {
        let nylas = [
            NylasError::Unauthorized("bad key".into()),
            NylasError::NotFound("grant".into()),
            NylasError::Rejected {
                kind: "invalid_request_error".into(),
                message: "bad cursor".into(),
            },
            NylasError::Server {
                status: 502,
                message: "bad gateway".into(),
            },
            NylasError::Transport("reset".into()),
            NylasError::Decode("eof".into()),
            NylasError::RateLimited {
                kind: "provider".into(),
                retry_after: None,
            },
        ];
        for e in nylas {
            listed(crate::errors::nylas(e).code());
        }
        for (c, _) in crmsync_sink::zoho::CODES {
            listed(crate::errors::sink(SinkError::new(Next::FailJob, c, "x")).code());
        }
        for w in [
            crmsync_limits::Wait::TooLarge { cost: 10, allowed: 5 },
            crmsync_limits::Wait::Budget {
                until_ms: 1,
                used: 1,
                others: 0,
                allowed: 1,
                kind: crmsync_limits::BudgetKind::Ours,
            },
            crmsync_limits::Wait::Budget {
                until_ms: 1,
                used: 1,
                others: 1,
                allowed: 1,
                kind: crmsync_limits::BudgetKind::Account,
            },
            crmsync_limits::Wait::Probe,
            crmsync_limits::Wait::Paused { reason: "x".into() },
            crmsync_limits::Wait::Busy,
            crmsync_limits::Wait::Gone,
            crmsync_limits::Wait::Cooldown { until_ms: 1 },
        ] {
            listed(crate::errors::sink(crmsync_limits::wait_error(w)).code());
        }
        listed(crate::errors::redis("connection refused").code());
        listed(crate::errors::tenant("no tenant").code());
        listed(crate::errors::buffer(crmsync_producer::BufferError::Gone).code());
        listed(crate::panic_to_retry(&(Box::new("boom") as Box<dyn std::any::Any + Send>)).code());
        let sink_wait = crate::errors::sink(SinkError::new(
            Next::RetryAfter(Duration::from_secs(1)),
            "TOKEN_REQUESTS_EXHAUSTED",
            "x",
        ));
        listed(sink_wait.code());
        listed(queue::UNDECODABLE);
        listed(queue::LEASE_EXPIRED);
    }

    #[test]
    fn the_vocabulary_is_unique_and_parses_ignoring_case() {
        let mut seen = std::collections::BTreeSet::new();
        for (c, meaning) in all() {
            assert!(seen.insert(c), "{c} twice");
            assert!(!meaning.is_empty());
            assert_eq!(parse(&c.to_lowercase()), Some(c));
        }
        assert_eq!(parse("nope"), None);
    }
}
