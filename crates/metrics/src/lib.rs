//! crmsync's Prometheus metrics: one registry per process, recorded from the queue, the API
//! clients, the worker and the webhook receiver, and served as OpenMetrics text on `/metrics`
//! by `crmsync worker --metrics-listen` and `crmsync webhook`.
//!
//! Every label takes values from a small fixed set (queue names come from the deployment's
//! configuration, HTTP statuses are folded into the codes the APIs document, everything else
//! is an enum), so the number of series stays bounded however many tenants, contacts or jobs
//! pass through. Tenants are deliberately not a label: per-tenant figures live in Redis
//! (`crmsync status`, the dashboard).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `crmsync_jobs_total` | counter | `queue`, `outcome` (done, retried, deferred, dead, released) |
//! | `crmsync_job_duration_seconds` | histogram | `queue` |
//! | `crmsync_queue_depth` | gauge | `queue`, `state` (pending, in_flight, delayed, dead) |
//! | `crmsync_zoho_calls_total` | counter | `op` (upsert, update, delete, search, token), `status` |
//! | `crmsync_salesforce_calls_total` | counter | `op` (upsert, delete, query, query_more, limits), `status` |
//! | `crmsync_nylas_calls_total` | counter | `op` (list, get), `status` |
//! | `crmsync_zoho_credits_total` | counter | `kind` (reserved, spent) |
//! | `crmsync_rate_limited_total` | counter | `api` (zoho, salesforce, nylas): 429 answers (Salesforce: 403 `REQUEST_LIMIT_EXCEEDED`) |
//! | `crmsync_zoho_token_refreshes_total` | counter | `outcome` (ok, error) |
//! | `crmsync_limiter_waits_total` | counter | `reason` (budget, pause, cooldown, rate, concurrency): a job deferred for it, or a call that waited in place for it (rate: the fleet's or the local smoother) |
//! | `crmsync_webhook_requests_total` | counter | `outcome` |
//! | `crmsync_webhook_request_duration_seconds` | histogram | — |
//! | `crmsync_records_written_total` | counter | `op` (inserted, updated, deleted, rejected) |
//! | `crmsync_build_info` | gauge | `version` |
//!
//! `status` is the HTTP status as text for the codes the APIs use (200, 201, 202, 204, 207,
//! 400, 401, 403, 404, 405, 413, 429, 500, 502, 503, 504), `other` for any other code, and
//! `error` when no answer came (timeout, connection refused).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueOutcome {
    queue: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    op: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Api {
    api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    jobs: Family<QueueOutcome, Counter>,
    job_duration: HistogramFamily<QueueLabel>,
    queue_depth: Family<QueueState, Gauge>,
    zoho_calls: Family<Call, Counter>,
    salesforce_calls: Family<Call, Counter>,
    nylas_calls: Family<Call, Counter>,
    zoho_credits: Family<Kind, Counter>,
    rate_limited: Family<Api, Counter>,
    token_refreshes: Family<Outcome, Counter>,
    limiter_waits: Family<Reason, Counter>,
    webhook_requests: Family<Outcome, Counter>,
    webhook_duration: Histogram,
    records_written: Family<Op, Counter>,
    flush_takes: Family<Outcome, Counter>,
}

fn job_buckets() -> Histogram {
    // 1 ms to ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("crmsync");
    let jobs = Family::<QueueOutcome, Counter>::default();
    registry.register(
        "jobs",
        "Jobs settled by this process, by queue and outcome",
        jobs.clone(),
    );
    let job_duration = HistogramFamily::<QueueLabel>::new_with_constructor(job_buckets as fn() -> Histogram);
    registry.register(
        "job_duration_seconds",
        "Time a job's handler ran, by queue",
        job_duration.clone(),
    );
    let queue_depth = Family::<QueueState, Gauge>::default();
    registry.register(
        "queue_depth",
        "Jobs in each queue by state, read from Redis at scrape time",
        queue_depth.clone(),
    );
    let zoho_calls = Family::<Call, Counter>::default();
    registry.register(
        "zoho_calls",
        "Zoho HTTP calls by operation and status",
        zoho_calls.clone(),
    );
    let salesforce_calls = Family::<Call, Counter>::default();
    registry.register(
        "salesforce_calls",
        "Salesforce HTTP calls by operation and status",
        salesforce_calls.clone(),
    );
    let nylas_calls = Family::<Call, Counter>::default();
    registry.register(
        "nylas_calls",
        "Nylas HTTP calls by operation and status",
        nylas_calls.clone(),
    );
    let zoho_credits = Family::<Kind, Counter>::default();
    registry.register(
        "zoho_credits",
        "Zoho API credits reserved in the fleet's ledger and spent by calls Zoho served",
        zoho_credits.clone(),
    );
    let rate_limited = Family::<Api, Counter>::default();
    registry.register("rate_limited", "429 answers by API", rate_limited.clone());
    let token_refreshes = Family::<Outcome, Counter>::default();
    registry.register(
        "zoho_token_refreshes",
        "Zoho access-token refreshes by outcome",
        token_refreshes.clone(),
    );
    let limiter_waits = Family::<Reason, Counter>::default();
    registry.register(
        "limiter_waits",
        "Zoho calls held back by the limits, by reason",
        limiter_waits.clone(),
    );
    let webhook_requests = Family::<Outcome, Counter>::default();
    registry.register(
        "webhook_requests",
        "Webhook requests by outcome",
        webhook_requests.clone(),
    );
    let webhook_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
    registry.register(
        "webhook_request_duration_seconds",
        "Time to answer a webhook request",
        webhook_duration.clone(),
    );
    let records_written = Family::<Op, Counter>::default();
    registry.register(
        "records_written",
        "CRM records written by operation (rejected: refused by the CRM)",
        records_written.clone(),
    );
    let flush_takes = Family::<Outcome, Counter>::default();
    registry.register(
        "flush_takes",
        "Flush jobs by what they took: a batch, nothing while nothing waited (idle), or nothing \
         while records waited (blocked: being written, or fewer than a full batch while a backfill reads)",
        flush_takes.clone(),
    );
    let build = Family::<Version, Gauge>::default();
    build
        .get_or_create(&Version {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register("build_info", "The running crmsync version", build);
    Metrics {
        registry,
        jobs,
        job_duration,
        queue_depth,
        zoho_calls,
        salesforce_calls,
        nylas_calls,
        zoho_credits,
        rate_limited,
        token_refreshes,
        limiter_waits,
        webhook_requests,
        webhook_duration,
        records_written,
        flush_takes,
    }
});

/// Folds an HTTP status into the bounded `status` label (None: no answer).
pub fn status_label(status: Option<u16>) -> &'static str {
    match status {
        None => "error",
        Some(200) => "200",
        Some(201) => "201",
        Some(202) => "202",
        Some(204) => "204",
        Some(207) => "207",
        Some(400) => "400",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(405) => "405",
        Some(413) => "413",
        Some(429) => "429",
        Some(500) => "500",
        Some(502) => "502",
        Some(503) => "503",
        Some(504) => "504",
        Some(_) => "other",
    }
}

/// `n` jobs settled (recorded in Redis): `outcome` is done, retried, deferred, dead or
/// released.
pub fn jobs_settled(queue: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        METRICS
            .jobs
            .get_or_create(&QueueOutcome {
                queue: queue.to_owned(),
                outcome,
            })
            .inc_by(n);
    }
}

/// A job's handler ran for `took`.
pub fn job_ran(queue: &str, took: Duration) {
    METRICS
        .job_duration
        .get_or_create(&QueueLabel {
            queue: queue.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// The depth of one queue in one state, as read from Redis.
pub fn set_queue_depth(queue: &str, state: &'static str, jobs: u64) {
    METRICS
        .queue_depth
        .get_or_create(&QueueState {
            queue: queue.to_owned(),
            state,
        })
        .set(jobs.min(i64::MAX as u64) as i64);
}

/// A Zoho HTTP call answered with `status` (None: no answer). A 429 also counts as rate limited.
pub fn zoho_call(op: &'static str, status: Option<u16>) {
    METRICS
        .zoho_calls
        .get_or_create(&Call {
            op,
            status: status_label(status),
        })
        .inc();
    if status == Some(429) {
        rate_limited("zoho");
    }
}

/// A Salesforce HTTP call answered with `status` (None: no answer); `limited`: Salesforce
/// refused it for a limit (403 `REQUEST_LIMIT_EXCEEDED`, its 429), counted as rate limited.
pub fn salesforce_call(op: &'static str, status: Option<u16>, limited: bool) {
    METRICS
        .salesforce_calls
        .get_or_create(&Call {
            op,
            status: status_label(status),
        })
        .inc();
    if limited {
        rate_limited("salesforce");
    }
}

/// A Nylas HTTP call answered with `status` (None: no answer). A 429 also counts as rate limited.
pub fn nylas_call(op: &'static str, status: Option<u16>) {
    METRICS
        .nylas_calls
        .get_or_create(&Call {
            op,
            status: status_label(status),
        })
        .inc();
    if status == Some(429) {
        rate_limited("nylas");
    }
}

fn rate_limited(api: &'static str) {
    METRICS.rate_limited.get_or_create(&Api { api }).inc();
}

/// Credits reserved in the ledger before a call (`reserved`), or charged for a call Zoho
/// served (`spent`).
pub fn zoho_credits(kind: &'static str, credits: u64) {
    METRICS.zoho_credits.get_or_create(&Kind { kind }).inc_by(credits);
}

/// A token refresh finished.
pub fn token_refresh(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    METRICS.token_refreshes.get_or_create(&Outcome { outcome }).inc();
}

/// A Zoho call was held back: budget, pause, cooldown, rate or concurrency.
pub fn limiter_wait(reason: &'static str) {
    METRICS.limiter_waits.get_or_create(&Reason { reason }).inc();
}

/// A webhook request's outcome (accepted, duplicate, bad_signature, unsigned, unknown_grant,
/// malformed, unknown_type, oversize, error).
pub fn webhook_request(outcome: &'static str) {
    METRICS.webhook_requests.get_or_create(&Outcome { outcome }).inc();
}

/// A webhook request was answered after `took`.
pub fn webhook_answered(took: Duration) {
    METRICS.webhook_duration.observe(took.as_secs_f64());
}

/// CRM records written: inserted, updated, deleted or rejected.
pub fn records_written(op: &'static str, n: u64) {
    if n > 0 {
        METRICS.records_written.get_or_create(&Op { op }).inc_by(n);
    }
}

/// What a flush job took from the write buffer: `batch`, `idle` or `blocked`.
pub fn flush_take(outcome: &'static str) {
    METRICS.flush_takes.get_or_create(&Outcome { outcome }).inc();
}

/// Every metric of this process as OpenMetrics text.
pub fn render() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bounded_series_with_the_documented_names() {
        jobs_settled("writes", "done", 1);
        jobs_settled("writes", "dead", 0);
        job_ran("writes", Duration::from_millis(3));
        zoho_call("upsert", Some(429));
        zoho_call("upsert", Some(599));
        nylas_call("list", None);
        zoho_credits("spent", 10);
        records_written("inserted", 0);
        let text = render();
        for line in [
            "crmsync_jobs_total{queue=\"writes\",outcome=\"done\"} 1",
            "crmsync_zoho_calls_total{op=\"upsert\",status=\"429\"} 1",
            "crmsync_zoho_calls_total{op=\"upsert\",status=\"other\"} 1",
            "crmsync_nylas_calls_total{op=\"list\",status=\"error\"} 1",
            "crmsync_rate_limited_total{api=\"zoho\"} 1",
            "crmsync_zoho_credits_total{kind=\"spent\"} 10",
            "crmsync_build_info{version=\"",
            "crmsync_job_duration_seconds_count{queue=\"writes\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(
            !text.contains("records_written_total{op=\"inserted\"}"),
            "zero adds no series"
        );
        assert!(!text.contains("outcome=\"dead\""), "zero adds no series");
        assert!(text.ends_with("# EOF\n"));
    }
}
