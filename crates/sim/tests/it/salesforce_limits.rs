//! Salesforce limits: the daily API request limit (rolling 24 h, other integrations'
//! usage included), `Sforce-Limit-Info`, `/limits`, concurrency, and seeded faults.

use std::time::Duration;

use crmsync_sim::SimConfig;
use crmsync_testkit::eventually;
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::salesforce::{ORG, contact, inspect, sf_call, sf_sim, sf_sim_with, sf_tenant, sf_token, upsert, usage};
use crate::{client, config};

#[tokio::test]
async fn usage_header_counts_every_request_and_other_integrations_and_403_past_the_limit() {
    let sim = sf_sim(|sf| sf.daily_requests = 10).await;
    let token = sf_token(&sim).await;
    let limits = sf_call(&sim, &token, Method::GET, "limits", None).await;
    assert_eq!(usage(&limits).as_deref(), Some("api-usage=1/10"));
    assert_eq!(limits.json["DailyApiRequests"], json!({"Max": 10, "Remaining": 9}));
    let resp = client()
        .post(format!("{}/_sim/salesforce/{ORG}/spend", sim.base_url()))
        .json(&json!({"requests": 6}))
        .send()
        .await
        .expect("spend");
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.expect("json");
    assert_eq!(
        report,
        json!({"org_id": ORG, "requested": 6, "charged": 6, "used_window": 7, "limit": 10})
    );
    let a = upsert(&sim, &token, "Contact", vec![contact("x", "X", "x@x.example")]).await;
    assert_eq!(usage(&a).as_deref(), Some("api-usage=8/10"));
    let limits = sf_call(&sim, &token, Method::GET, "limits", None).await;
    assert_eq!(limits.json["DailyApiRequests"]["Remaining"], 1);
    let last = sf_call(&sim, &token, Method::GET, "limits", None).await;
    assert_eq!(
        (last.status, usage(&last).as_deref()),
        (StatusCode::OK, Some("api-usage=10/10"))
    );
    let over = upsert(&sim, &token, "Contact", vec![contact("y", "Y", "y@x.example")]).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(
        over.json,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(
        usage(&over).as_deref(),
        Some("api-usage=10/10"),
        "refusals are not counted"
    );
    let org = inspect(&sim);
    assert_eq!(
        org["api_usage"],
        json!({"used": 10, "max": 10, "other": 6, "other_total": 6, "total": 4})
    );
    assert_eq!(org["max_usage_window"], 10);
    assert_eq!(org["calls"]["rejected_limit"], 1);
    assert_eq!(org["calls"]["by_status"], json!({"200": 4, "403": 1}));
    assert_eq!(
        org["contacts"].as_array().map(Vec::len),
        Some(1),
        "the refused upsert wrote nothing"
    );
    // Another integration cannot go past the limit either.
    let more = sim.spend_salesforce_requests(ORG, 5).expect("spend");
    assert_eq!((more.charged, more.used_window), (0, 10));
    assert!(sim.spend_salesforce_requests("sforg-nobody", 1).is_err());
}

#[tokio::test]
async fn requests_return_to_the_allowance_after_a_rolling_24_hours() {
    let mut cfg = config(vec![sf_tenant(1, |sf| {
        sf.daily_requests = 3;
        sf.session_secs = 10 * 86_400;
    })]);
    cfg.time_scale = 43_200.0; // a simulated day lasts 2 real seconds
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    sim.spend_salesforce_requests(ORG, 2).expect("spend");
    assert_eq!(
        sf_call(&sim, &token, Method::GET, "limits", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        sf_call(&sim, &token, Method::GET, "limits", None).await.status,
        StatusCode::FORBIDDEN
    );
    let (s, t) = (&sim, &token);
    eventually(Duration::from_secs(10), "the window to roll over", move || async move {
        let a = sf_call(s, t, Method::GET, "limits", None).await;
        (a.status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(inspect(&sim)["max_usage_window"].as_u64().is_some_and(|m| m <= 3));
}

#[tokio::test]
async fn more_requests_in_flight_than_concurrency_get_a_distinguishable_403() {
    let mut cfg = config(vec![sf_tenant(1, |sf| sf.concurrency = 2)]);
    cfg.faults.latency_ms = [600, 600];
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    let answers = join_all((0..6).map(|_| sf_call(&sim, &token, Method::GET, "limits", None))).await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == StatusCode::FORBIDDEN).collect();
    assert!(ok <= 2, "{ok} served at once");
    assert_eq!(ok + refused.len(), 6);
    for a in &refused {
        assert_eq!(
            a.json,
            json!([{"message": "ConcurrentPerOrgLongTxn Limit exceeded", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
        );
        assert!(usage(a).is_some());
    }
    let org = inspect(&sim);
    assert_eq!(org["calls"]["rejected_concurrency"], refused.len());
    assert_eq!(org["api_usage"]["used"], ok, "refused requests are not counted");
    assert!(org["max_in_flight"].as_u64().is_some_and(|m| m >= 3), "{org}");

    // limits: false lifts both limits but still counts.
    let mut cfg = config(vec![sf_tenant(1, |sf| {
        sf.concurrency = 1;
        sf.daily_requests = 2;
        sf.limits = false;
    })]);
    cfg.faults.latency_ms = [200, 200];
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    let answers = join_all((0..4).map(|_| sf_call(&sim, &token, Method::GET, "limits", None))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(
        usage(&answers[0]).map(|u| u.ends_with("/2")),
        Some(true),
        "the header is still sent"
    );
    assert_eq!(inspect(&sim)["api_usage"]["used"], 4);
}

fn faulty(seed: u64) -> SimConfig {
    let mut cfg = config(vec![sf_tenant(1, |_| {})]);
    cfg.seed = seed;
    cfg.faults.sf_5xx_rate = 0.2;
    cfg.faults.sf_timeout_rate = 0.1;
    cfg.faults.timeout_ms = 20;
    cfg
}

/// Statuses of `n` sequential `/limits` calls against a fresh simulator.
async fn sequence(cfg: SimConfig, n: usize) -> Vec<u16> {
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let a = sf_call(&sim, &token, Method::GET, "limits", None).await;
        match a.status {
            StatusCode::OK => {}
            StatusCode::INTERNAL_SERVER_ERROR => assert_eq!(a.json[0]["errorCode"], "UNKNOWN_EXCEPTION"),
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(a.json[0]["errorCode"], "SERVER_UNAVAILABLE"),
            other => panic!("unexpected {other}: {}", a.text),
        }
        assert!(usage(&a).is_some(), "faults carry the usage header too");
        out.push(a.status.as_u16());
    }
    let org = inspect(&sim);
    let faults = out.iter().filter(|s| **s != 200).count();
    assert_eq!(org["faults_injected"], faults);
    assert_eq!(org["api_usage"]["used"], n - faults, "injected faults are not counted");
    out
}

#[tokio::test]
async fn seeded_faults_are_reproducible_and_count_nothing() {
    let a = sequence(faulty(7), 50).await;
    let b = sequence(faulty(7), 50).await;
    let c = sequence(faulty(8), 50).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    for s in [200, 500, 503] {
        assert!(a.contains(&s), "{s} in {a:?}");
    }
    // Never on the login server.
    let mut cfg = faulty(7);
    cfg.faults.sf_5xx_rate = 1.0;
    cfg.faults.sf_timeout_rate = 0.0;
    let sim = sf_sim_with(cfg).await;
    for _ in 0..10 {
        sf_token(&sim).await;
    }
    let token = sf_token(&sim).await;
    let a = upsert(&sim, &token, "Contact", vec![contact("f", "F", "f@x.example")]).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        inspect(&sim)["contacts"].as_array().map(Vec::len),
        Some(0),
        "a fault applies nothing"
    );
}
