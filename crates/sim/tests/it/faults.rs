//! Seeded faults and latency.

use std::time::{Duration, Instant};

use crmsync_sim::SimConfig;
use reqwest::StatusCode;
use serde_json::json;

use crate::{access_token, config, inspect, list_contacts, records, search, start, tenant, upsert, upsert_body};

fn zoho_faulty(seed: u64) -> SimConfig {
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.seed = seed;
    cfg.faults.zoho_429_rate = 0.2;
    cfg.faults.zoho_5xx_rate = 0.2;
    cfg
}

/// Statuses of `n` sequential searches against a fresh simulator.
async fn zoho_sequence(cfg: SimConfig, n: usize) -> Vec<u16> {
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let mut out = Vec::new();
    for _ in 0..n {
        let a = search(&sim, "us", &token, "x@example.com").await;
        match a.status {
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(a.json["code"], "TOO_MANY_REQUESTS");
                assert!(a.headers.get("retry-after").is_none());
            }
            StatusCode::INTERNAL_SERVER_ERROR => assert_eq!(
                a.json,
                json!({"code": "INTERNAL_ERROR", "details": {}, "message": "Internal server error occurred.", "status": "error"})
            ),
            StatusCode::NO_CONTENT => {}
            other => panic!("unexpected {other}: {}", a.text),
        }
        out.push(a.status.as_u16());
    }
    let org = inspect(&sim, "org-acme").await;
    let faults = out.iter().filter(|s| **s != 204).count();
    assert_eq!(org["calls"]["faults_injected"], faults);
    assert_eq!(
        org["credits_used_window"],
        n - faults,
        "injected faults are not charged"
    );
    out
}

#[tokio::test]
async fn zoho_faults_are_reproducible_for_the_same_seed() {
    let a = zoho_sequence(zoho_faulty(7), 60).await;
    let b = zoho_sequence(zoho_faulty(7), 60).await;
    let c = zoho_sequence(zoho_faulty(8), 60).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    for s in [204, 429, 500] {
        assert!(a.contains(&s), "{s} in {a:?}");
    }
}

#[tokio::test]
async fn injected_zoho_faults_apply_nothing_and_charge_nothing() {
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.faults.zoho_5xx_rate = 1.0;
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let a = upsert(&sim, "us", &token, &upsert_body(records("f", 5))).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["records"].as_array().map(Vec::len), Some(0));
    assert_eq!(org["credits_used_window"], 0);
    assert_eq!(org["calls"]["upsert"], 0);
    assert_eq!(org["calls"]["faults_injected"], 1);
    assert_eq!(org["calls"]["by_status"]["500"], 1);
}

#[tokio::test]
async fn zoho_faults_never_hit_the_accounts_server() {
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.faults.zoho_429_rate = 1.0;
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    assert_eq!(
        search(&sim, "us", &token, "x@example.com").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn zoho_timeout_fault_stalls_timeout_ms_then_answers_504() {
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.faults.zoho_timeout_rate = 1.0;
    cfg.faults.timeout_ms = 300;
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let started = Instant::now();
    let a = upsert(&sim, "us", &token, &upsert_body(records("t", 1))).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        inspect(&sim, "org-acme").await["records"].as_array().map(Vec::len),
        Some(0)
    );
}

/// (status, error type, Retry-After) of `n` sequential list calls.
async fn nylas_sequence(seed: u64, n: usize) -> Vec<(u16, String, Option<String>)> {
    let mut cfg = config(vec![tenant("acme", 50)]);
    cfg.seed = seed;
    cfg.faults.nylas_429_rate = 0.4;
    cfg.faults.nylas_5xx_rate = 0.2;
    let sim = start(cfg).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let a = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[]).await;
        let kind = a.json["error"]["type"].as_str().unwrap_or("").to_string();
        let retry = a
            .headers
            .get("retry-after")
            .map(|h| h.to_str().expect("ascii").to_string());
        match (a.status.as_u16(), kind.as_str()) {
            (200, "") => assert!(a.json["data"].is_array()),
            (429, "nylas_rate_limit_exceeded") => {
                assert!(a.json["request_id"].is_string());
                assert_eq!(a.json["error"]["message"], "Too many requests");
                assert_eq!(retry, None);
            }
            (429, "rate_limit_error") => {
                assert_eq!(
                    a.json["error"]["provider_error"],
                    json!({"error": {"code": 429, "message": "Quota exceeded"}})
                );
                assert!(a.json["error"]["message"].is_string());
                assert_eq!(retry.as_deref(), Some("1"));
            }
            (500, "internal_error") => assert!(a.json["request_id"].is_string()),
            other => panic!("unexpected {other:?}: {}", a.text),
        }
        out.push((a.status.as_u16(), kind, retry));
    }
    out
}

#[tokio::test]
async fn nylas_faults_are_reproducible_and_come_in_both_429_kinds() {
    let a = nylas_sequence(3, 80).await;
    assert_eq!(a, nylas_sequence(3, 80).await);
    assert_ne!(a, nylas_sequence(4, 80).await);
    for kind in ["", "nylas_rate_limit_exceeded", "rate_limit_error", "internal_error"] {
        assert!(a.iter().any(|(_, k, _)| k == kind), "{kind:?} never happened");
    }
}

#[tokio::test]
async fn latency_applies_to_every_request_of_both_apis() {
    let mut cfg = config(vec![tenant("acme", 5)]);
    cfg.faults.latency_ms = [150, 200];
    let sim = start(cfg).await;
    let started = Instant::now();
    let token = access_token(&sim, "us", "acme").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    search(&sim, "us", &token, "x@example.com").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}
