//! Zoho accounts server: grants, DCs, token limits, expiry.

use std::time::Duration;

use crmsync_testkit::eventually;
use reqwest::StatusCode;
use serde_json::json;

use crate::{access_token, client, config, records, search, start, tenant, token_request, upsert, upsert_body};

fn refresh(name: &str) -> [(&'static str, String); 4] {
    [
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", format!("rt-{name}")),
        ("client_id", format!("cid-{name}")),
        ("client_secret", format!("cs-{name}")),
    ]
}

fn params<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    p.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn refresh_token_grant_returns_token_and_api_domain_of_its_dc() {
    let mut eu = tenant("euro", 1);
    eu.zoho.dc = "eu".into();
    let sim = start(config(vec![tenant("acme", 1), eu])).await;
    for (name, dc) in [("acme", "us"), ("euro", "eu")] {
        let a = token_request(&sim, dc, &params(&refresh(name))).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert!(a.json["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(a.json["expires_in"], 3600);
        assert_eq!(a.json["token_type"], "Bearer");
        assert_eq!(a.json["api_domain"], sim.zoho_api_domain(dc));
        assert_eq!(a.json["api_domain"], format!("{}/zoho/{dc}/api", sim.base_url()));
        assert!(a.json.get("refresh_token").is_none());
    }
}

#[tokio::test]
async fn token_parameters_are_accepted_as_query_string_or_form_body() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let p = refresh("acme");
    let resp = client()
        .post(format!("{}/oauth/v2/token", sim.zoho_accounts_url("us")))
        .query(&params(&p))
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["access_token"].is_string(), "{body}");
    let form = token_request(&sim, "us", &params(&p)).await;
    assert!(form.json["access_token"].is_string(), "{}", form.text);
}

#[tokio::test]
async fn wrong_secret_unknown_or_other_dcs_refresh_token_is_200_invalid_code() {
    let mut eu = tenant("euro", 1);
    eu.zoho.dc = "eu".into();
    let sim = start(config(vec![tenant("acme", 1), eu])).await;
    let mut wrong_secret = refresh("acme");
    wrong_secret[3].1 = "nope".into();
    let mut unknown = refresh("acme");
    unknown[1].1 = "rt-nope".into();
    let mut wrong_client = refresh("acme");
    wrong_client[2].1 = "cid-euro".into();
    for (dc, p) in [
        ("us", wrong_secret),
        ("us", unknown),
        ("us", wrong_client),
        ("us", refresh("euro")),
    ] {
        let a = token_request(&sim, dc, &params(&p)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json, json!({"error": "invalid_code"}), "{p:?}");
    }
}

#[tokio::test]
async fn token_works_only_in_its_own_dc() {
    let mut eu = tenant("euro", 1);
    eu.zoho.dc = "eu".into();
    let sim = start(config(vec![tenant("acme", 1), eu])).await;
    let eu_token = access_token(&sim, "eu", "euro").await;
    let own = search(&sim, "eu", &eu_token, "x@example.com").await;
    assert_eq!(own.status, StatusCode::NO_CONTENT);
    let other = search(&sim, "us", &eu_token, "x@example.com").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        other.json,
        json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"})
    );
}

#[tokio::test]
async fn missing_token_is_401_authentication_failure_and_unknown_is_invalid_token() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let resp = client()
        .get(format!(
            "{}/crm/v6/Contacts/search?email=a@b.co",
            sim.zoho_api_domain("us")
        ))
        .send()
        .await
        .expect("search");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"code": "AUTHENTICATION_FAILURE", "details": {}, "message": "Authentication failed", "status": "error"})
    );
    let a = search(&sim, "us", "1000.bogus.bogus", "a@b.co").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn eleventh_token_request_in_10_minutes_is_400_access_denied_until_the_window_ends() {
    // 120 simulated seconds per real second: the 10-minute window lasts five real seconds.
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.time_scale = 120.0;
    let sim = start(cfg).await;
    let p = refresh("acme");
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..11 {
        let a = token_request(&sim, "us", &params(&p)).await;
        statuses.push(a.status);
        last = Some(a);
    }
    let last = last.expect("answers");
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::OK));
    assert_eq!(last.status, StatusCode::BAD_REQUEST, "{}", last.text);
    assert_eq!(
        last.json,
        json!({"error": "Access Denied", "error_description": "You have made too many requests continuously. Please try again after some time."})
    );
    let (s, p) = (&sim, &p);
    eventually(Duration::from_secs(20), "the token window to end", move || async move {
        let a = token_request(s, "us", &params(p)).await;
        a.json["access_token"].is_string().then_some(())
    })
    .await;
    let org = crate::inspect(&sim, "org-acme").await;
    assert!(org["token_requests"].as_u64().is_some_and(|n| n >= 12));
    assert!(org["calls"]["token"].as_u64().is_some_and(|n| n >= 11));
}

#[tokio::test]
async fn token_request_limit_counts_per_refresh_token_at_real_speed() {
    let sim = start(config(vec![tenant("acme", 1), tenant("globex", 1)])).await;
    for _ in 0..10 {
        assert_eq!(
            token_request(&sim, "us", &params(&refresh("acme"))).await.status,
            StatusCode::OK
        );
    }
    let denied = token_request(&sim, "us", &params(&refresh("acme"))).await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert_eq!(denied.json["error"], "Access Denied");
    let other = token_request(&sim, "us", &params(&refresh("globex"))).await;
    assert_eq!(other.status, StatusCode::OK, "another refresh token has its own window");
}

#[tokio::test]
async fn tokens_expire_after_expires_in_simulated_seconds() {
    // An hour per real second: a token lives one real second.
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.time_scale = 3600.0;
    let sim = start(cfg).await;
    let token = access_token(&sim, "us", "acme").await;
    let fresh = search(&sim, "us", &token, "a@example.com").await;
    assert_eq!(fresh.status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = search(&sim, "us", &token, "a@example.com").await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stale.json["code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn at_most_10_live_tokens_per_refresh_token_the_oldest_is_invalidated() {
    // 300x: the 10-minute request window lasts 2 s, a token lives 12 s.
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.time_scale = 300.0;
    let sim = start(cfg).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(access_token(&sim, "us", "acme").await);
    }
    for t in &tokens {
        assert_eq!(
            search(&sim, "us", t, "a@example.com").await.status,
            StatusCode::NO_CONTENT
        );
    }
    let p = refresh("acme");
    let (s, p) = (&sim, &p);
    let eleventh = eventually(Duration::from_secs(10), "the token window to end", move || async move {
        let a = token_request(s, "us", &params(p)).await;
        a.json["access_token"].as_str().map(String::from)
    })
    .await;
    assert_eq!(
        search(&sim, "us", &eleventh, "a@example.com").await.status,
        StatusCode::NO_CONTENT
    );
    let oldest = search(&sim, "us", &tokens[0], "a@example.com").await;
    assert_eq!(oldest.status, StatusCode::UNAUTHORIZED);
    assert_eq!(oldest.json["code"], "INVALID_TOKEN");
    for t in &tokens[1..] {
        assert_eq!(
            search(&sim, "us", t, "a@example.com").await.status,
            StatusCode::NO_CONTENT
        );
    }
}

#[tokio::test]
async fn authorization_code_exchanges_once_for_the_refresh_token() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let p = [
        ("grant_type", "authorization_code"),
        ("code", "code-acme"),
        ("client_id", "cid-acme"),
        ("client_secret", "cs-acme"),
        ("redirect_uri", "http://localhost/callback"),
    ];
    let first = token_request(&sim, "us", &p).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json["refresh_token"], "rt-acme");
    assert_eq!(first.json["api_domain"], sim.zoho_api_domain("us"));
    let token = first.json["access_token"].as_str().expect("token");
    assert_eq!(
        search(&sim, "us", token, "a@example.com").await.status,
        StatusCode::NO_CONTENT
    );
    let again = token_request(&sim, "us", &p).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json, json!({"error": "invalid_code"}));
    let mut unknown = p;
    unknown[1].1 = "code-nope";
    assert_eq!(
        token_request(&sim, "us", &unknown).await.json,
        json!({"error": "invalid_code"})
    );
}

#[tokio::test]
async fn client_credentials_grant_gives_a_token_without_refresh_token() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let p = [
        ("grant_type", "client_credentials"),
        ("client_id", "cid-acme"),
        ("client_secret", "cs-acme"),
        ("scope", "ZohoCRM.modules.contacts.ALL"),
        ("soid", "ZohoCRM.org-acme"),
    ];
    let a = token_request(&sim, "us", &p).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.json.get("refresh_token").is_none());
    let token = a.json["access_token"].as_str().expect("token");
    let up = upsert(&sim, "us", token, &upsert_body(records("cc", 1))).await;
    assert_eq!(up.status, StatusCode::OK);
    let mut wrong_org = p;
    wrong_org[4].1 = "ZohoCRM.org-nope";
    assert_eq!(
        token_request(&sim, "us", &wrong_org).await.json,
        json!({"error": "invalid_code"})
    );
    let mut wrong_secret = p;
    wrong_secret[2].1 = "nope";
    assert_eq!(
        token_request(&sim, "us", &wrong_secret).await.json,
        json!({"error": "invalid_code"})
    );
}
