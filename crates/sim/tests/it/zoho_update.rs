//! Zoho CRM API: update records by id (`PUT Contacts`).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    Answer, access_token, answer, client, config, inspect, records, search, start, tenant, upsert, upsert_body,
};

async fn put(sim: &crmsync_sim::RunningSim, version: &str, token: &str, body: &Value) -> Answer {
    let resp = client()
        .put(format!("{}/crm/{version}/Contacts", sim.zoho_api_domain("us")))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .json(body)
        .send()
        .await
        .expect("update");
    answer(resp).await
}

/// Inserts `n` records; returns their ids.
async fn seed_records(sim: &crmsync_sim::RunningSim, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let a = upsert(sim, "us", token, &upsert_body(records(prefix, n))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    (0..n)
        .map(|i| a.json["data"][i]["details"]["id"].as_str().expect("id").to_string())
        .collect()
}

fn record<'a>(org: &'a Value, id: &str) -> &'a Value {
    org["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("record {id} not found"))
}

#[tokio::test]
async fn put_updates_records_by_id_keeping_absent_fields_and_clearing_nulls() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let first = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![json!({
            "First_Name": "Leyah", "Last_Name": "Miller", "Email": "leyah@example.com",
            "Phone": "+1-555", "Title": "CEO", "Account_Name": "Nylas"
        })]),
    )
    .await;
    let id = first.json["data"][0]["details"]["id"].as_str().expect("id").to_string();
    let created = first.json["data"][0]["details"]["Created_Time"].clone();
    let a = put(
        &sim,
        "v6",
        &token,
        &json!({"data": [{"id": id, "First_Name": "Leya", "Title": null, "Email": "leya@example.com"}], "trigger": []}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let item = &a.json["data"][0];
    assert_eq!(item["code"], "SUCCESS");
    assert_eq!(item["duplicate_field"], Value::Null);
    assert_eq!(item["action"], "update");
    assert_eq!(item["message"], "record updated");
    assert_eq!(item["status"], "success");
    assert_eq!(item["details"]["id"], id);
    assert!(
        item["details"]["Modified_Time"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
    assert_eq!(item["details"]["Created_Time"], created);

    let org = inspect(&sim, "org-acme").await;
    let rec = record(&org, &id);
    assert_eq!(rec["First_Name"], "Leya");
    assert_eq!(rec["Last_Name"], "Miller", "absent fields keep their value");
    assert_eq!(rec["Phone"], "+1-555");
    assert_eq!(rec["Account_Name"], "Nylas");
    assert_eq!(rec["Title"], Value::Null, "null clears");
    assert_eq!(rec["Email"], "leya@example.com");
    assert_eq!(org["calls"]["update"], 1);
    assert_eq!(org["calls"]["upsert"], 1);
    assert_eq!(org["records_updated"], 1);
    assert_eq!(org["workflows_triggered"], 0);

    // The new Email is what search and upsert match now; the old one matches nothing.
    assert_eq!(
        search(&sim, "us", &token, "LEYA@example.com").await.json["data"][0]["id"],
        id
    );
    assert_eq!(
        search(&sim, "us", &token, "leyah@example.com").await.status,
        StatusCode::NO_CONTENT
    );
    // v8 serves the same.
    let b = put(
        &sim,
        "v8",
        &token,
        &json!({"data": [{"id": id, "Last_Name": "Miller-Jones"}]}),
    )
    .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(
        record(&inspect(&sim, "org-acme").await, &id)["Last_Name"],
        "Miller-Jones"
    );
    assert_eq!(
        inspect(&sim, "org-acme").await["workflows_triggered"],
        1,
        "no trigger: workflows run"
    );
}

#[tokio::test]
async fn put_with_missing_or_unknown_id_is_invalid_data_and_mixed_results_are_207() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed_records(&sim, &token, "u", 2).await;
    let a = put(
        &sim,
        "v6",
        &token,
        &json!({"data": [
            {"Last_Name": "No id"},
            {"id": ids[0], "Title": "Updated"},
            {"id": "1234567890123456789", "Title": "x"},
            {"id": ids[1], "Last_Name": "  "},
            {"id": ids[1], "Last_Name": null},
            {"id": ids[1], "Email": "not an email"},
            {"id": ids[1], "First_Name": "é".repeat(41)},
            {"id": ids[1]},
        ], "trigger": []}),
    )
    .await;
    assert_eq!(a.status, StatusCode::MULTI_STATUS, "{}", a.text);
    let d = &a.json["data"];
    assert_eq!(
        d[0],
        json!({"code": "INVALID_DATA", "details": {"api_name": "id", "json_path": "$.data[0].id"}, "message": "the id given seems to be invalid", "status": "error"})
    );
    assert_eq!(d[1]["code"], "SUCCESS");
    assert_eq!(
        d[2],
        json!({"code": "INVALID_DATA", "details": {"api_name": "id", "json_path": "$.data[2].id"}, "message": "the id given seems to be invalid", "status": "error"})
    );
    for i in [3, 4] {
        assert_eq!(
            d[i],
            json!({"code": "MANDATORY_NOT_FOUND", "details": {"api_name": "Last_Name", "json_path": format!("$.data[{i}].Last_Name")}, "message": "required field not found", "status": "error"}),
            "Last_Name cannot be blanked ({i})"
        );
    }
    assert_eq!(
        d[5],
        json!({"code": "INVALID_DATA", "details": {"api_name": "Email", "json_path": "$.data[5].Email", "expected_data_type": "email"}, "message": "invalid data", "status": "error"})
    );
    assert_eq!(
        d[6]["details"],
        json!({"api_name": "First_Name", "json_path": "$.data[6].First_Name", "maximum_length": 40})
    );
    assert_eq!(d[7]["code"], "SUCCESS", "an update of no field is fine");

    let all_bad = put(
        &sim,
        "v6",
        &token,
        &json!({"data": [{"id": "1"}, {"Title": "x"}], "trigger": []}),
    )
    .await;
    assert_eq!(all_bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(all_bad.json["data"].as_array().map(Vec::len), Some(2));
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(record(&org, &ids[0])["Title"], "Updated");
    assert_eq!(
        record(&org, &ids[1])["Last_Name"],
        "Person 1",
        "failed records change nothing"
    );
    assert_eq!(org["calls"]["update"], 2);
    assert_eq!(org["calls"]["by_status"]["207"], 1);
    assert_eq!(org["calls"]["by_status"]["400"], 1);
}

#[tokio::test]
async fn put_of_more_than_100_records_is_limit_exceeded_and_costs_like_upsert() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed_records(&sim, &token, "c", 100).await;
    let mut expected = 10;
    assert_eq!(inspect(&sim, "org-acme").await["credits_used_window"], expected);
    let body = |n: usize| {
        let data: Vec<Value> = ids
            .iter()
            .cycle()
            .take(n)
            .map(|id| json!({"id": id, "Title": "T"}))
            .collect();
        json!({"data": data, "trigger": []})
    };
    let over = put(&sim, "v6", &token, &body(101)).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        over.json,
        json!({"code": "LIMIT_EXCEEDED", "details": {"limit": 100}, "message": "Record count exceeded", "status": "error"})
    );
    for bad in [json!({}), json!({"data": []})] {
        assert_eq!(put(&sim, "v6", &token, &bad).await.json["code"], "INVALID_DATA");
    }
    assert_eq!(
        inspect(&sim, "org-acme").await["credits_used_window"],
        expected,
        "top-level errors are not charged"
    );
    for (n, cost) in [(1, 1), (10, 1), (11, 2), (100, 10)] {
        let a = put(&sim, "v6", &token, &body(n)).await;
        assert_eq!(a.status, StatusCode::OK, "{n}");
        assert_eq!(a.json["data"].as_array().map(Vec::len), Some(n));
        expected += cost;
        assert_eq!(
            inspect(&sim, "org-acme").await["credits_used_window"],
            expected,
            "{n} records"
        );
    }
    // A served call whose every record fails is charged too.
    let failed = put(&sim, "v6", &token, &json!({"data": [{"id": "nope"}], "trigger": []})).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], expected + 1);
    assert_eq!(org["calls"]["update"], 5);
}

#[tokio::test]
async fn put_over_the_daily_budget_is_429_and_needs_a_valid_token() {
    let mut t = tenant("acme", 1);
    t.zoho.daily_credits = 11;
    let sim = start(config(vec![t])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed_records(&sim, &token, "b", 100).await;
    let data: Vec<Value> = ids.iter().take(11).map(|id| json!({"id": id, "Title": "T"})).collect();
    let over = put(&sim, "v6", &token, &json!({"data": data, "trigger": []})).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.json["code"], "TOO_MANY_REQUESTS");
    let one = put(
        &sim,
        "v6",
        &token,
        &json!({"data": [{"id": ids[0], "Title": "T"}], "trigger": []}),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(one.headers.get("x-api-credits-remaining").is_some());
    let unauth = put(&sim, "v6", "bogus", &json!({"data": [{"id": ids[0]}]})).await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauth.json["code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn put_does_not_enforce_email_uniqueness() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed_records(&sim, &token, "dup", 2).await;
    // Give the second record the first one's Email.
    let a = put(
        &sim,
        "v6",
        &token,
        &json!({"data": [{"id": ids[1], "Email": "DUP0@example.com"}], "trigger": []}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(record(&org, &ids[0])["Email"], "dup0@example.com");
    assert_eq!(record(&org, &ids[1])["Email"], "DUP0@example.com");
    // Search and upsert match the older record; once it is gone, the other.
    assert_eq!(
        search(&sim, "us", &token, "dup0@example.com").await.json["data"][0]["id"],
        ids[0]
    );
    let up = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![json!({"Last_Name": "Again", "Email": "dup0@example.com"})]),
    )
    .await;
    assert_eq!(up.json["data"][0]["details"]["id"], ids[0]);
    crate::delete(&sim, "us", &token, &ids[0]).await;
    assert_eq!(
        search(&sim, "us", &token, "dup0@example.com").await.json["data"][0]["id"],
        ids[1]
    );
    // The second record's old Email matches nothing any more.
    assert_eq!(
        search(&sim, "us", &token, "dup1@example.com").await.status,
        StatusCode::NO_CONTENT
    );
}
