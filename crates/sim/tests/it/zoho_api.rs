//! Zoho CRM API: upsert, delete, search.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{access_token, client, config, delete, inspect, records, search, start, tenant, upsert, upsert_body};

fn is_19_digits(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 19 && s.bytes().all(|b| b.is_ascii_digit()))
}

#[tokio::test]
async fn upsert_inserts_then_updates_on_case_insensitive_email_match() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let first = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![json!({
            "First_Name": "Leyah", "Last_Name": "Miller", "Email": "leyah.miller@example.com",
            "Phone": "+1-555-555-5555", "Account_Name": "Nylas", "Title": "Software Engineer"
        })]),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let item = &first.json["data"][0];
    assert_eq!(item["code"], "SUCCESS");
    assert_eq!(item["action"], "insert");
    assert_eq!(item["duplicate_field"], Value::Null);
    assert_eq!(item["message"], "record added");
    assert_eq!(item["status"], "success");
    assert!(is_19_digits(&item["details"]["id"]), "{item}");
    for k in ["Modified_Time", "Created_Time"] {
        assert!(
            item["details"][k]
                .as_str()
                .is_some_and(|t| t.len() >= 20 && t.contains('T')),
            "{k}"
        );
    }
    assert!(item["details"]["Created_By"]["id"].is_string());
    assert!(item["details"]["Modified_By"]["name"].is_string());
    let id = item["details"]["id"].clone();

    let second = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![
            json!({"Last_Name": "Miller-Jones", "Email": "LEYAH.Miller@EXAMPLE.com"}),
        ]),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK);
    let item = &second.json["data"][0];
    assert_eq!(item["action"], "update");
    assert_eq!(item["duplicate_field"], "Email");
    assert_eq!(item["message"], "record updated");
    assert_eq!(item["details"]["id"], id);

    let org = inspect(&sim, "org-acme").await;
    let recs = org["records"].as_array().expect("records");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["id"], id);
    assert_eq!(recs[0]["Last_Name"], "Miller-Jones");
    assert_eq!(recs[0]["First_Name"], "Leyah", "absent fields keep their value");
    assert_eq!(recs[0]["Title"], "Software Engineer");
    assert_eq!(recs[0]["Email"], "LEYAH.Miller@EXAMPLE.com");
    assert_eq!(org["calls"]["upsert"], 2);
    assert_eq!(org["records_upserted"], 2);
}

#[tokio::test]
async fn upsert_without_duplicate_check_fields_still_matches_on_email() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let body = json!({"data": [{"Last_Name": "A", "Email": "a@example.com"}], "trigger": []});
    assert_eq!(
        upsert(&sim, "us", &token, &body).await.json["data"][0]["action"],
        "insert"
    );
    let body = json!({"data": [{"Last_Name": "B", "Email": "A@example.com"}], "trigger": []});
    assert_eq!(
        upsert(&sim, "us", &token, &body).await.json["data"][0]["action"],
        "update"
    );
}

#[tokio::test]
async fn second_record_with_the_same_email_in_one_request_updates_the_first() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let a = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![
            json!({"Last_Name": "One", "Email": "dup@example.com", "Title": "CEO"}),
            json!({"Last_Name": "Two", "Email": "DUP@example.com"}),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"][0]["action"], "insert");
    assert_eq!(a.json["data"][1]["action"], "update");
    assert_eq!(a.json["data"][0]["details"]["id"], a.json["data"][1]["details"]["id"]);
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(org["records"][0]["Last_Name"], "Two");
    assert_eq!(org["records"][0]["Title"], "CEO");
}

#[tokio::test]
async fn per_record_errors_give_200_207_or_400_in_request_order() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let mixed = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![
            json!({"First_Name": "No", "Email": "nolast@example.com"}),
            json!({"Last_Name": "Ok", "Email": "ok@example.com"}),
            json!({"Last_Name": "   ", "Email": "blank@example.com"}),
            json!({"Last_Name": "Bad", "Email": "not an email@example.com"}),
            json!({"Last_Name": "Bad", "Email": "no-at.example.com"}),
            json!({"Last_Name": "Bad", "Email": "a@localhost"}),
            json!({"Last_Name": "Long", "Phone": "1".repeat(31)}),
        ]),
    )
    .await;
    assert_eq!(mixed.status, StatusCode::MULTI_STATUS, "{}", mixed.text);
    let d = &mixed.json["data"];
    assert_eq!(
        d[0],
        json!({"code": "MANDATORY_NOT_FOUND", "details": {"api_name": "Last_Name", "json_path": "$.data[0].Last_Name"}, "message": "required field not found", "status": "error"})
    );
    assert_eq!(d[1]["code"], "SUCCESS");
    assert_eq!(d[2]["code"], "MANDATORY_NOT_FOUND");
    assert_eq!(d[2]["details"]["json_path"], "$.data[2].Last_Name");
    for i in 3..6 {
        assert_eq!(
            d[i],
            json!({"code": "INVALID_DATA", "details": {"api_name": "Email", "json_path": format!("$.data[{i}].Email"), "expected_data_type": "email"}, "message": "invalid data", "status": "error"}),
            "record {i}"
        );
    }
    assert_eq!(
        d[6],
        json!({"code": "INVALID_DATA", "details": {"api_name": "Phone", "json_path": "$.data[6].Phone", "maximum_length": 30}, "message": "invalid data", "status": "error"})
    );

    let all_bad = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![json!({"First_Name": "x"}), json!({"Email": "y@example.com"})]),
    )
    .await;
    assert_eq!(all_bad.status, StatusCode::BAD_REQUEST);
    let data = all_bad.json["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|e| e["code"] == "MANDATORY_NOT_FOUND"));

    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(org["calls"]["by_status"]["207"], 1);
    assert_eq!(org["calls"]["by_status"]["400"], 1);
    assert_eq!(org["credits_used_window"], 2, "failed records are still charged");
}

#[tokio::test]
async fn field_limits_are_counted_in_characters() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let limits = [
        ("First_Name", 40),
        ("Last_Name", 80),
        ("Email", 100),
        ("Phone", 30),
        ("Title", 100),
        ("Account_Name", 200),
    ];
    for (field, max) in limits {
        let value = |n: usize| -> String {
            if field == "Email" {
                format!("{}@example.com", "é".repeat(n - "@example.com".len()))
            } else {
                "é".repeat(n)
            }
        };
        let mut at = json!({"Last_Name": "L", "Email": format!("{field}@example.com")});
        at[field] = json!(value(max));
        let mut over = json!({"Last_Name": "L", "Email": format!("{field}.over@example.com")});
        over[field] = json!(value(max + 1));
        let a = upsert(&sim, "us", &token, &upsert_body(vec![at, over])).await;
        assert_eq!(a.status, StatusCode::MULTI_STATUS, "{field}: {}", a.text);
        assert_eq!(
            a.json["data"][0]["code"], "SUCCESS",
            "{field} at its limit in chars is fine"
        );
        assert_eq!(
            a.json["data"][1]["details"],
            json!({"api_name": field, "json_path": format!("$.data[1].{field}"), "maximum_length": max})
        );
    }
}

#[tokio::test]
async fn more_than_100_records_is_400_limit_exceeded() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let a = upsert(&sim, "us", &token, &upsert_body(records("big", 101))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json,
        json!({"code": "LIMIT_EXCEEDED", "details": {"limit": 100}, "message": "Record count exceeded", "status": "error"})
    );
    let ok = upsert(&sim, "us", &token, &upsert_body(records("big", 100))).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json["data"].as_array().map(Vec::len), Some(100));
    assert_eq!(
        inspect(&sim, "org-acme").await["records"].as_array().map(Vec::len),
        Some(100)
    );
}

#[tokio::test]
async fn malformed_json_or_no_data_is_400_invalid_data() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let url = format!("{}/crm/v6/Contacts/upsert", sim.zoho_api_domain("us"));
    for body in [
        "{not json",
        "{}",
        r#"{"data": []}"#,
        r#"{"data": {"Last_Name": "x"}}"#,
        "",
    ] {
        let resp = client()
            .post(&url)
            .header("Authorization", format!("Zoho-oauthtoken {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("upsert");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["code"], "INVALID_DATA", "{body}");
        assert_eq!(v["status"], "error");
    }
    let org = inspect(&sim, "org-acme").await;
    assert_eq!(org["credits_used_window"], 0, "top-level errors are not charged");
}

#[tokio::test]
async fn upsert_without_trigger_is_counted_as_triggering_workflows() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    upsert(&sim, "us", &token, &upsert_body(records("w", 3))).await;
    assert_eq!(inspect(&sim, "org-acme").await["workflows_triggered"], 0);
    let no_trigger = json!({"data": records("w", 3), "duplicate_check_fields": ["Email"]});
    assert_eq!(upsert(&sim, "us", &token, &no_trigger).await.status, StatusCode::OK);
    assert_eq!(inspect(&sim, "org-acme").await["workflows_triggered"], 1);
}

#[tokio::test]
async fn v8_prefix_serves_the_same_api_and_unknown_paths_are_invalid_url_pattern() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let api = sim.zoho_api_domain("us");
    let resp = client()
        .post(format!("{api}/crm/v8/Contacts/upsert"))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .json(&upsert_body(records("v8", 1)))
        .send()
        .await
        .expect("upsert");
    assert_eq!(resp.status(), StatusCode::OK);
    let found = client()
        .get(format!("{api}/crm/v8/Contacts/search?email=v80@example.com"))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("search");
    assert_eq!(found.status(), StatusCode::OK);
    let resp = client()
        .post(format!("{api}/crm/v5/Contacts/upsert"))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .json(&upsert_body(records("v8", 1)))
        .send()
        .await
        .expect("upsert");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["code"], "INVALID_URL_PATTERN");
}

#[tokio::test]
async fn delete_removes_records_and_reports_unknown_ids_as_invalid_data() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let up = upsert(&sim, "us", &token, &upsert_body(records("d", 3))).await;
    let ids: Vec<String> = (0..3)
        .map(|i| up.json["data"][i]["details"]["id"].as_str().expect("id").to_string())
        .collect();

    let one = delete(&sim, "us", &token, &ids[0]).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        one.json,
        json!({"data": [{"code": "SUCCESS", "details": {"id": ids[0]}, "message": "record deleted", "status": "success"}]})
    );
    let mixed = delete(&sim, "us", &token, &format!("{},{},123", ids[1], ids[0])).await;
    assert_eq!(mixed.status, StatusCode::MULTI_STATUS);
    assert_eq!(mixed.json["data"][0]["code"], "SUCCESS");
    assert_eq!(
        mixed.json["data"][1],
        json!({"code": "INVALID_DATA", "details": {"id": ids[0]}, "message": "the id given seems to be invalid", "status": "error"})
    );
    assert_eq!(mixed.json["data"][2]["details"]["id"], "123");
    let none = delete(&sim, "us", &token, "1,2").await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert_eq!(none.json["data"].as_array().map(Vec::len), Some(2));

    let too_many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let a = delete(&sim, "us", &token, &too_many.join(",")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["code"], "LIMIT_EXCEEDED");
    assert_eq!(a.json["details"]["limit"], 100);

    let org = inspect(&sim, "org-acme").await;
    let left: Vec<&Value> = org["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(left, vec![&json!(ids[2])]);
    assert_eq!(org["calls"]["delete"], 3);
}

#[tokio::test]
async fn search_matches_email_case_insensitively_and_no_match_is_204_with_empty_body() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![
            json!({"Last_Name": "Found", "First_Name": "F", "Email": "Found@Example.com"}),
        ]),
    )
    .await;
    let hit = search(&sim, "us", &token, "found@EXAMPLE.com").await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(
        hit.json["info"],
        json!({"per_page": 200, "count": 1, "page": 1, "more_records": false})
    );
    let rec = &hit.json["data"][0];
    assert!(is_19_digits(&rec["id"]));
    assert_eq!(rec["Last_Name"], "Found");
    assert_eq!(rec["Email"], "Found@Example.com");

    let miss = search(&sim, "us", &token, "nobody@example.com").await;
    assert_eq!(miss.status, StatusCode::NO_CONTENT);
    assert!(miss.text.is_empty(), "204 has an empty body, got {:?}", miss.text);
    assert_eq!(inspect(&sim, "org-acme").await["calls"]["search"], 2);
}

#[tokio::test]
async fn inspection_lists_records_sorted_by_email_or_only_counts_with_records_false() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let recs = vec![
        json!({"Last_Name": "C", "Email": "c@example.com"}),
        json!({"Last_Name": "A", "Email": "a@example.com"}),
        json!({"Last_Name": "B", "Email": "b@example.com"}),
    ];
    upsert(&sim, "us", &token, &upsert_body(recs)).await;
    let full = inspect(&sim, "org-acme").await;
    let emails: Vec<&Value> = full["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| &r["Email"])
        .collect();
    assert_eq!(
        emails,
        [
            &json!("a@example.com"),
            &json!("b@example.com"),
            &json!("c@example.com")
        ]
    );
    for key in [
        "id",
        "First_Name",
        "Last_Name",
        "Email",
        "Phone",
        "Account_Name",
        "Title",
        "Created_Time",
        "Modified_Time",
    ] {
        assert!(full["records"][0].get(key).is_some(), "{key}");
    }
    assert_eq!(full["org_id"], "org-acme");
    assert_eq!(full["dc"], "us");
    let counts: Value = client()
        .get(format!("{}/_sim/orgs/org-acme?records=false", sim.base_url()))
        .send()
        .await
        .expect("inspect")
        .json()
        .await
        .expect("json");
    assert!(counts.get("records").is_none());
    assert_eq!(counts["record_count"], 3);
    assert_eq!(counts["records_upserted"], 3);
    assert_eq!(sim.inspect_org("org-acme"), Some(full));
    let missing = client()
        .get(format!("{}/_sim/orgs/org-nope", sim.base_url()))
        .send()
        .await
        .expect("inspect");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
