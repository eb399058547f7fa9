//! Zoho API credits (rolling 24 h window) and concurrency limits.

use std::time::Duration;

use crmsync_sim::TenantConfig;
use crmsync_testkit::eventually;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::{access_token, config, delete, inspect, records, search, start, tenant, upsert, upsert_body};

fn budget(name: &str, daily: u64) -> TenantConfig {
    let mut t = tenant(name, 1);
    t.zoho.daily_credits = daily;
    t
}

#[tokio::test]
async fn upsert_costs_one_credit_per_10_records_search_and_delete_one() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let mut expected = 0;
    for (n, cost) in [(1, 1), (10, 1), (11, 2), (25, 3), (100, 10)] {
        let a = upsert(&sim, "us", &token, &upsert_body(records(&format!("c{n}-"), n))).await;
        assert_eq!(a.status, StatusCode::OK);
        expected += cost;
        assert_eq!(
            inspect(&sim, "org-acme").await["credits_used_window"],
            expected,
            "{n} records"
        );
    }
    search(&sim, "us", &token, "nobody@example.com").await;
    delete(&sim, "us", &token, "123").await;
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], expected + 2);
    assert_eq!(org["credits_used_total"], expected + 2);
    assert_eq!(org["calls"]["token"], 1, "token requests cost nothing");
}

#[tokio::test]
async fn over_the_daily_budget_is_429_too_many_requests_and_not_charged() {
    let sim = start(config(vec![budget("acme", 12)])).await;
    let token = access_token(&sim, "us", "acme").await;
    assert_eq!(
        upsert(&sim, "us", &token, &upsert_body(records("a", 100))).await.status,
        StatusCode::OK
    );
    // 10 used: a 21-record upsert (3 credits) does not fit, a 1-record one does.
    let over = upsert(&sim, "us", &token, &upsert_body(records("b", 21))).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.json["code"], "TOO_MANY_REQUESTS");
    assert_eq!(over.json["status"], "error");
    assert_eq!(over.json["details"], json!({}));
    assert!(over.headers.get("retry-after").is_none());
    assert_eq!(
        upsert(&sim, "us", &token, &upsert_body(records("c", 1))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        search(&sim, "us", &token, "a0@example.com").await.status,
        StatusCode::OK
    );
    assert_eq!(
        search(&sim, "us", &token, "a0@example.com").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], 12);
    assert_eq!(org["calls"]["rejected_429"], 2);
    assert_eq!(
        org["records"].as_array().map(Vec::len),
        Some(101),
        "the refused upsert wrote nothing"
    );
}

#[tokio::test]
async fn credits_remaining_header_appears_once_half_the_daily_credits_are_used() {
    let sim = start(config(vec![budget("acme", 20)])).await;
    let token = access_token(&sim, "us", "acme").await;
    for i in 1..=12u64 {
        let a = search(&sim, "us", &token, "x@example.com").await;
        let header = a
            .headers
            .get("x-api-credits-remaining")
            .map(|h| h.to_str().expect("ascii").to_string());
        if i < 10 {
            assert_eq!(header, None, "after {i} credits of 20");
        } else {
            assert_eq!(header, Some((20 - i).to_string()), "after {i} credits of 20");
        }
    }
}

#[tokio::test]
async fn spent_credits_return_after_a_rolling_24_hour_window() {
    // 6 simulated hours per real second: a day lasts 4 s.
    let mut cfg = config(vec![budget("acme", 20)]);
    cfg.time_scale = 21_600.0;
    let sim = start(cfg).await;
    // Tokens live 3600 simulated s = 167 real ms here, so take a fresh one for every call.
    let spend = |prefix: &'static str| {
        let sim = &sim;
        async move {
            let token = access_token(sim, "us", "acme").await;
            upsert(sim, "us", &token, &upsert_body(records(prefix, 100)))
                .await
                .status
        }
    };
    assert_eq!(spend("a").await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1400)).await; // ~8.4 simulated hours later
    assert_eq!(spend("b").await, StatusCode::OK);
    assert_eq!(spend("c").await, StatusCode::TOO_MANY_REQUESTS, "20 of 20 credits used");
    // The first 10 credits come back 24 h after they were spent, the second 10 later.
    let s = &sim;
    eventually(
        Duration::from_secs(10),
        "the first charge to leave the window",
        move || async move {
            let used = inspect(s, "org-acme").await["credits_used_window"].as_u64();
            (used == Some(10)).then_some(())
        },
    )
    .await;
    assert_eq!(spend("d").await, StatusCode::OK);
    eventually(
        Duration::from_secs(10),
        "every charge to leave the window",
        move || async move {
            let used = inspect(s, "org-acme").await["credits_used_window"].as_u64();
            (used == Some(0)).then_some(())
        },
    )
    .await;
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_total"], 30);
}

#[tokio::test]
async fn more_requests_in_flight_than_the_concurrency_limit_get_429() {
    let mut t = tenant("acme", 1);
    t.zoho.concurrency = 3;
    let mut cfg = config(vec![t]);
    cfg.faults.latency_ms = [1000, 1000];
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let answers = join_all((0..8).map(|_| search(&sim, "us", &token, "x@example.com"))).await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::NO_CONTENT).count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(ok <= 3, "at most 3 served, got {ok}");
    assert!(limited.len() >= 5, "the rest is refused: {}", limited.len());
    assert!(limited.iter().all(|a| a.json["code"] == "TOO_MANY_REQUESTS"));
    let org = inspect(&sim, "org-acme").await;
    assert!(org["max_in_flight"].as_u64().is_some_and(|m| m >= 4), "{org}");
    assert_eq!(org["calls"]["rejected_429"], limited.len());
    assert_eq!(org["credits_used_window"], ok, "refused requests are not charged");
}

#[tokio::test]
async fn more_than_10_concurrent_upserts_of_more_than_10_records_get_429() {
    let mut t = tenant("acme", 1);
    t.zoho.concurrency = 50;
    let mut cfg = config(vec![t]);
    cfg.faults.latency_ms = [1000, 1000];
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let bodies: Vec<_> = (0..14).map(|i| upsert_body(records(&format!("x{i}-"), 11))).collect();
    let answers = join_all(bodies.iter().map(|b| upsert(&sim, "us", &token, b))).await;
    let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
    let limited = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(ok <= 10, "{ok} complex upserts served at once");
    assert_eq!(ok + limited, 14);
    // Small upserts are not complex: 14 at once are fine.
    let small: Vec<_> = (0..14).map(|i| upsert_body(records(&format!("s{i}-"), 10))).collect();
    let answers = join_all(small.iter().map(|b| upsert(&sim, "us", &token, b))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
}

#[tokio::test]
async fn limits_false_disables_credit_and_concurrency_limits_but_still_counts() {
    let mut t = budget("acme", 5);
    t.zoho.concurrency = 2;
    t.zoho.limits = false;
    let mut cfg = config(vec![t]);
    cfg.faults.latency_ms = [200, 200];
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let bodies: Vec<_> = (0..12).map(|i| upsert_body(records(&format!("n{i}-"), 20))).collect();
    let answers = join_all(bodies.iter().map(|b| upsert(&sim, "us", &token, b))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert!(
        answers
            .iter()
            .all(|a| a.headers.get("x-api-credits-remaining").is_none())
    );
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], 24);
    assert!(org["max_in_flight"].as_u64().is_some_and(|m| m > 2));
    assert_eq!(org["records_upserted"], 240);
}

#[tokio::test]
async fn other_integrations_spending_counts_toward_the_limit_and_the_header_but_not_our_totals() {
    let sim = start(config(vec![budget("acme", 20)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let spent = sim.spend_zoho_credits("org-acme", 9).expect("spend");
    assert_eq!(
        (spent.requested, spent.charged, spent.used_window, spent.limit),
        (9, 9, 9, 20)
    );
    let a = search(&sim, "us", &token, "x@example.com").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        a.headers
            .get("x-api-credits-remaining")
            .map(|h| h.to_str().expect("ascii")),
        Some("10"),
        "9 of theirs + 1 of ours reach half of 20"
    );
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], 10, "everyone's usage");
    assert_eq!(org["max_credits_used_window"], 10);
    assert_eq!(org["credits_used_total"], 1, "ours only");
    assert_eq!(org["other_credits_window"], 9);
    assert_eq!(org["other_credits_total"], 9);
    assert_eq!(org["calls"]["search"], 1);

    // Over HTTP; the other integration cannot spend past the allowance either.
    let resp = crate::client()
        .post(format!("{}/_sim/orgs/org-acme/spend", sim.base_url()))
        .json(&json!({"credits": 100}))
        .send()
        .await
        .expect("spend");
    assert_eq!(resp.status(), StatusCode::OK);
    let report: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(report["charged"], 10);
    assert_eq!(report["used_window"], 20);
    let a = search(&sim, "us", &token, "x@example.com").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a.headers
            .get("x-api-credits-remaining")
            .map(|h| h.to_str().expect("ascii")),
        Some("0")
    );
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["max_credits_used_window"], 20);
    assert_eq!(
        (org["credits_used_total"].clone(), org["other_credits_total"].clone()),
        (json!(1), json!(19))
    );

    let post = |path: &str, body: serde_json::Value| {
        crate::client()
            .post(format!("{}{path}", sim.base_url()))
            .json(&body)
            .send()
    };
    assert_eq!(
        post("/_sim/orgs/org-nobody/spend", json!({"credits": 1}))
            .await
            .expect("send")
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post("/_sim/orgs/org-acme/spend", json!({"credit": 1}))
            .await
            .expect("send")
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert!(sim.spend_zoho_credits("org-nobody", 1).is_err());
}
