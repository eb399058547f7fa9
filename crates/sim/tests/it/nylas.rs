//! Nylas v3 Contacts: pagination, cursors, errors.

use std::collections::HashSet;

use crmsync_sim::address_book;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{client, config, list_contacts, start, tenant};

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn list_contacts_defaults_to_30_per_page_with_request_id_and_cursor() {
    let sim = start(config(vec![tenant("acme", 100)])).await;
    let a = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["data"].as_array().map(Vec::len), Some(30));
    assert!(a.json["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(a.json["next_cursor"].as_str().is_some_and(|c| !c.is_empty()));
    let book = address_book(&tenant("acme", 100), 42);
    assert_eq!(a.json["data"].as_array().expect("data")[..], book[..30]);
}

#[tokio::test]
async fn limit_above_200_is_clamped_to_200() {
    let sim = start(config(vec![tenant("acme", 450)])).await;
    let a = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("limit", "1000")]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"].as_array().map(Vec::len), Some(200));
    let b = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("limit", "7")]).await;
    assert_eq!(b.json["data"].as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn limit_zero_or_not_a_number_is_400_invalid_request_error() {
    let sim = start(config(vec![tenant("acme", 10)])).await;
    for bad in ["0", "abc", "-5", "1.5"] {
        let a = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("limit", bad)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "limit={bad}");
        assert_eq!(a.json["error"]["type"], "invalid_request_error", "limit={bad}");
        assert!(a.json["request_id"].is_string());
    }
}

/// Walks every page; returns the pages' JSON.
async fn walk(sim: &crmsync_sim::RunningSim, limit: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", limit)];
        if let Some(c) = cursor.as_deref() {
            q.push(("page_token", c));
        }
        let a = list_contacts(sim, "us", "grant-acme", Some("nyk-acme"), &q).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let next = a.json.get("next_cursor").and_then(Value::as_str).map(String::from);
        pages.push(a.json);
        match next {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
        assert!(pages.len() < 10_000, "pagination does not end");
    }
}

#[tokio::test]
async fn whole_book_is_served_exactly_once_across_pages_and_last_page_has_no_cursor() {
    let t = tenant("acme", 1234);
    let sim = start(config(vec![t.clone()])).await;
    let book = address_book(&t, 42);
    for limit in ["200", "30", "17"] {
        let pages = walk(&sim, limit).await;
        let served: Vec<Value> = pages
            .iter()
            .flat_map(|p| p["data"].as_array().cloned().unwrap_or_default())
            .collect();
        assert_eq!(served, book, "limit {limit}");
        let last = pages.last().expect("a page");
        assert!(last.get("next_cursor").is_none_or(Value::is_null), "limit {limit}");
        for p in &pages[..pages.len() - 1] {
            assert!(p["next_cursor"].is_string());
        }
    }
    // An exact multiple of the limit: no trailing empty page.
    let pages = walk(&sim, "617").await;
    assert_eq!(pages.len(), 7, "617 is clamped to 200: 200*6 + 34");
    let sim2 = start(config(vec![tenant("acme", 400)])).await;
    let pages = walk(&sim2, "200").await;
    assert_eq!(pages.len(), 2);
}

#[tokio::test]
async fn last_page_cursor_is_absent_or_null_both_happen() {
    let sim = start(config(vec![tenant("acme", 90)])).await;
    let (mut absent, mut null) = (0, 0);
    for limit in 1..=89 {
        let pages = walk(&sim, &limit.to_string()).await;
        match pages
            .last()
            .and_then(|p| p.as_object())
            .map(|o| o.get("next_cursor").cloned())
        {
            Some(None) => absent += 1,
            Some(Some(Value::Null)) => null += 1,
            other => panic!("last page with limit {limit} has next_cursor {other:?}"),
        }
    }
    assert!(absent > 0 && null > 0, "absent {absent}, null {null}");
}

#[tokio::test]
async fn same_cursor_always_returns_the_same_contacts() {
    let sim = start(config(vec![tenant("acme", 300)])).await;
    let first = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("limit", "50")]).await;
    let cursor = first.json["next_cursor"].as_str().expect("cursor").to_string();
    let a = list_contacts(
        &sim,
        "us",
        "grant-acme",
        Some("nyk-acme"),
        &[("limit", "50"), ("page_token", &cursor)],
    )
    .await;
    let b = list_contacts(
        &sim,
        "us",
        "grant-acme",
        Some("nyk-acme"),
        &[("limit", "50"), ("page_token", &cursor)],
    )
    .await;
    assert_eq!(ids(&a.json), ids(&b.json));
    assert_eq!(a.json["next_cursor"], b.json["next_cursor"]);
    let overlap: HashSet<String> = ids(&first.json).into_iter().collect();
    assert!(ids(&a.json).iter().all(|id| !overlap.contains(id)));
}

#[tokio::test]
async fn invalid_or_foreign_cursor_is_400_invalid_page_token() {
    let sim = start(config(vec![tenant("acme", 100), tenant("globex", 100)])).await;
    let foreign = list_contacts(&sim, "us", "grant-globex", Some("nyk-globex"), &[]).await;
    let foreign_cursor = foreign.json["next_cursor"].as_str().expect("cursor").to_string();
    let own = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[]).await;
    let own_cursor = own.json["next_cursor"].as_str().expect("cursor").to_string();
    let mut tampered = own_cursor.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in ["garbage", "!!!", foreign_cursor.as_str(), tampered.as_str(), "djE6MDow"] {
        let a = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("page_token", bad)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "cursor {bad}: {}", a.text);
        assert_eq!(a.json["error"]["type"], "invalid_request_error");
        assert_eq!(a.json["error"]["message"], "invalid page_token");
        assert!(a.json["request_id"].is_string());
    }
}

#[tokio::test]
async fn missing_or_wrong_api_key_is_401_unauthorized() {
    let sim = start(config(vec![tenant("acme", 10), tenant("globex", 10)])).await;
    for key in [None, Some("nope"), Some("nyk-globex")] {
        let a = list_contacts(&sim, "us", "grant-acme", key, &[]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "key {key:?}");
        assert_eq!(a.json["error"]["type"], "unauthorized");
        assert!(a.json["error"]["message"].is_string());
        assert!(a.json["request_id"].is_string());
    }
}

#[tokio::test]
async fn unknown_grant_or_other_region_is_404_grant_not_found() {
    let mut eu = tenant("euro", 10);
    eu.nylas_region = "eu".into();
    let sim = start(config(vec![tenant("acme", 10), eu])).await;
    let cases = [
        ("us", "grant-nope", "nyk-acme"),
        ("eu", "grant-acme", "nyk-acme"),
        ("us", "grant-euro", "nyk-euro"),
    ];
    for (region, grant, key) in cases {
        let a = list_contacts(&sim, region, grant, Some(key), &[]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{region} {grant}");
        assert_eq!(a.json["error"]["type"], "api.not_found_error");
        assert_eq!(a.json["error"]["message"], "grant not found");
    }
    let ok = list_contacts(&sim, "eu", "grant-euro", Some("nyk-euro"), &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn get_contact_by_id_and_unknown_id_is_404_not_found() {
    let t = tenant("acme", 20);
    let sim = start(config(vec![t.clone()])).await;
    let book = address_book(&t, 42);
    let id = book[7]["id"].as_str().expect("id");
    let base = sim.nylas_api_uri("us");
    let resp = client()
        .get(format!("{base}/v3/grants/grant-acme/contacts/{id}"))
        .bearer_auth("nyk-acme")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["data"], book[7]);
    assert!(body["request_id"].is_string());
    // URL-encoded unknown id.
    let resp = client()
        .get(format!("{base}/v3/grants/grant-acme/contacts/no%20such%2Fid"))
        .bearer_auth("nyk-acme")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["type"], "api.not_found_error");
    assert!(body["request_id"].is_string());
    let resp = client()
        .get(format!("{base}/v3/grants/grant-acme/contacts/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
