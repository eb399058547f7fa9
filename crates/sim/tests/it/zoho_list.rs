//! Zoho CRM Get Records (`GET /crm/{v6|v8}/Contacts`) and records changed by hand.

use std::collections::BTreeSet;
use std::time::Duration;

use crmsync_sim::RunningSim;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::{
    Answer, access_token, answer, client, config, delete, inspect, records, start, tenant, upsert, upsert_body,
};

const ORG: &str = "org-acme";

/// `GET {api}/crm/{version}/Contacts` with query parameters.
async fn list_v(sim: &RunningSim, version: &str, token: &str, query: &[(&str, &str)]) -> Answer {
    let resp = client()
        .get(format!("{}/crm/{version}/Contacts", sim.zoho_api_domain("us")))
        .query(query)
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("get records");
    answer(resp).await
}

async fn list(sim: &RunningSim, token: &str, query: &[(&str, &str)]) -> Answer {
    list_v(sim, "v6", token, query).await
}

/// Inserts `n` records through the upsert endpoint, 100 per call; returns their ids in order.
async fn seed(sim: &RunningSim, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let all = records(prefix, n);
    let mut ids = Vec::with_capacity(n);
    for chunk in all.chunks(100) {
        let a = upsert(sim, "us", token, &upsert_body(chunk.to_vec())).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        for item in a.json["data"].as_array().expect("data") {
            ids.push(item["details"]["id"].as_str().expect("id").to_string());
        }
    }
    ids
}

fn ids_of(a: &Answer) -> Vec<String> {
    a.json["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {}", a.text))
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

fn next_token(a: &Answer) -> Option<String> {
    a.json["info"]["next_page_token"].as_str().map(String::from)
}

/// Walks every page with `query` from the first, following `next_page_token`; returns the ids
/// in order and the number of calls.
async fn walk(sim: &RunningSim, token: &str, query: &[(&str, &str)]) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut page_token: Option<String> = None;
    let mut calls = 0;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        if let Some(t) = &page_token {
            q.push(("page_token", t));
        }
        let a = list(sim, token, &q).await;
        calls += 1;
        assert_eq!(a.status, StatusCode::OK, "call {calls}: {}", a.text);
        assert_eq!(a.json["info"]["page"], calls, "info.page counts the walk's pages");
        ids.extend(ids_of(&a));
        match next_token(&a) {
            Some(t) => {
                assert_eq!(a.json["info"]["more_records"], true);
                page_token = Some(t);
            }
            None => {
                assert_eq!(a.json["info"]["more_records"], false);
                return (ids, calls);
            }
        }
    }
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn assert_each_once(seen: &[String], expected: &[String]) {
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "a record was served twice");
    assert_eq!(
        distinct,
        expected.iter().collect::<BTreeSet<_>>(),
        "every record exactly once"
    );
}

#[tokio::test]
async fn four_hundred_fifty_records_come_in_three_pages_by_page_or_token_one_credit_each() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed(&sim, &token, "p", 450).await;
    let before = inspect(&sim, ORG).await;
    assert_eq!(before["credits_used_window"], 45);

    // By page number, ascending ids.
    let mut by_page = Vec::new();
    for (page, count, more) in [("1", 200, true), ("2", 200, true), ("3", 50, false)] {
        let a = list(
            &sim,
            &token,
            &[
                ("fields", "Last_Name,Email,Phone,Nope"),
                ("per_page", "200"),
                ("page", page),
                ("sort_by", "id"),
                ("sort_order", "asc"),
            ],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert!(
            a.headers.get("x-api-credits-remaining").is_none(),
            "under half the credits"
        );
        let info = &a.json["info"];
        assert_eq!(info["per_page"], 200);
        assert_eq!(info["count"], count);
        assert_eq!(info["page"], page.parse::<u64>().expect("page"));
        assert_eq!(info["sort_by"], "id");
        assert_eq!(info["sort_order"], "asc");
        assert_eq!(info["more_records"], more);
        assert_eq!(info["next_page_token"].is_string(), more);
        assert_eq!(info["previous_page_token"].is_string(), page != "1");
        assert!(info["page_token_expiry"].is_string());
        let first = &a.json["data"][0];
        let keys: BTreeSet<&str> = first.as_object().expect("record").keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["id", "Last_Name", "Email", "Phone"]),
            "the fields asked for (unknown ones dropped), and id"
        );
        assert_eq!(first["Phone"], Value::Null, "an empty field is null");
        by_page.extend(ids_of(&a));
    }
    assert_eq!(by_page, ids, "ascending ids are creation order");

    // By token, descending ids (the default order).
    let (by_token, calls) = walk(&sim, &token, &[("fields", "Email")]).await;
    assert_eq!(calls, 3);
    let mut desc = ids.clone();
    desc.reverse();
    assert_eq!(by_token, desc);
    assert_each_once(&by_token, &ids);

    let after = inspect(&sim, ORG).await;
    assert_eq!(after["calls"]["list"], 6);
    assert_eq!(after["records_listed"], 900);
    assert_eq!(after["credits_used_window"], 45 + 6, "1 credit per call");
    assert_eq!(after["credits_used_total"], 45 + 6);
    assert_eq!(after["calls"]["by_status"]["200"], 5 + 6);
}

#[tokio::test]
async fn parameter_errors_are_400_uncharged_and_module_version_and_auth_are_checked() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    seed(&sim, &token, "e", 3).await;
    let many_fields = (0..51).map(|i| format!("F{i}")).collect::<Vec<_>>().join(",");
    let cases: Vec<(Vec<(&str, &str)>, Value)> = vec![
        (
            vec![("per_page", "10")],
            json!({"code": "REQUIRED_PARAM_MISSING", "details": {"param_name": "fields"}, "message": "One of the expected parameter is missing", "status": "error"}),
        ),
        (
            vec![("fields", "Email"), ("per_page", "201")],
            json!({"code": "INVALID_DATA", "details": {"param_name": "per_page"}, "message": "invalid data", "status": "error"}),
        ),
        (
            vec![("fields", &many_fields)],
            json!({"code": "LIMIT_EXCEEDED", "details": {"limit": 50, "param_name": "fields"}, "message": "Fields limit exceeded", "status": "error"}),
        ),
        (
            vec![("fields", "Email"), ("page", "11")],
            json!({"code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED", "details": {"limit": 2000}, "message": "You can only get the first 2000 records without using page_token param.", "status": "error"}),
        ),
        (
            vec![("fields", "Email"), ("page", "2"), ("page_token", "abc")],
            json!({"code": "AMBIGUITY_DURING_PROCESSING", "details": {"ambiguity_due_to": [{"param_name": "page"}, {"param_name": "page_token"}]}, "message": "You cannot use both page and page_token", "status": "error"}),
        ),
        (
            vec![("fields", "Email"), ("page_token", "not-a-token")],
            json!({"code": "INVALID_DATA", "details": {"param_name": "page_token"}, "message": "The token given seems to be invalid.", "status": "error"}),
        ),
        (
            vec![("fields", "Email"), ("sort_by", "Email")],
            json!({"code": "INVALID_DATA", "details": {"param_name": "sort_by", "supported_values": ["id", "Created_Time", "Modified_Time"]}, "message": "invalid data", "status": "error"}),
        ),
    ];
    for (query, expected) in &cases {
        let a = list(&sim, &token, query).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query:?}: {}", a.text);
        assert_eq!(&a.json, expected, "{query:?}");
    }
    let org = inspect(&sim, ORG).await;
    assert_eq!(org["credits_used_window"], 1, "only the seeding upsert is charged");
    assert_eq!(org["calls"]["list"], 0);
    assert_eq!(org["calls"]["by_status"]["400"], cases.len());

    let leads = client()
        .get(format!("{}/crm/v6/Leads?fields=Email", sim.zoho_api_domain("us")))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("leads");
    let leads = answer(leads).await;
    assert_eq!(leads.status, StatusCode::BAD_REQUEST);
    assert_eq!(leads.json["code"], "INVALID_MODULE");
    let v5 = list_v(&sim, "v5", &token, &[("fields", "Email")]).await;
    assert_eq!(v5.status, StatusCode::NOT_FOUND);
    assert_eq!(v5.json["code"], "INVALID_URL_PATTERN");
    let v8 = list_v(&sim, "v8", &token, &[("fields", "Email")]).await;
    assert_eq!(v8.status, StatusCode::OK);
    assert_eq!(v8.json["info"]["count"], 3);
    let anonymous = list(&sim, "", &[("fields", "Email")]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let bad = list(&sim, "nope", &[("fields", "Email")]).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.json["code"], "INVALID_TOKEN");
}

#[tokio::test]
async fn an_empty_module_answers_204_for_a_credit_and_the_org_probe_still_works() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let a = list(&sim, &token, &[("fields", "Email,Last_Name")]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.text, "");
    let ids = seed(&sim, &token, "x", 2).await;
    let none = list(&sim, &token, &[("fields", "Email"), ("ids", "1,2")]).await;
    assert_eq!(none.status, StatusCode::NO_CONTENT, "no record has those ids");
    let past = list(&sim, &token, &[("fields", "Email"), ("page", "2"), ("per_page", "2")]).await;
    assert_eq!(past.status, StatusCode::NO_CONTENT, "a page past the last record");
    let some = list(
        &sim,
        &token,
        &[("fields", "Email"), ("ids", &format!("{},999", ids[1]))],
    )
    .await;
    assert_eq!(ids_of(&some), [ids[1].clone()]);

    let probe = client()
        .get(format!("{}/crm/v8/org", sim.zoho_api_domain("us")))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .send()
        .await
        .expect("org");
    let probe = answer(probe).await;
    assert_eq!(probe.status, StatusCode::OK, "{}", probe.text);
    assert_eq!(probe.json["org"][0]["id"], ORG);

    let org = inspect(&sim, ORG).await;
    assert_eq!(org["calls"]["list"], 4);
    assert_eq!(org["calls"]["org"], 1);
    assert_eq!(org["calls"]["by_status"]["204"], 3);
    assert_eq!(
        org["credits_used_window"],
        1 + 4 + 1,
        "upsert, 4 lists (204s too), the probe"
    );
}

#[tokio::test]
async fn a_page_token_walk_reaches_past_2000_records_where_page_numbers_stop() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let mut ids = seed(&sim, &token, "big", 2_000).await;
    for i in 0..100 {
        let id = sim
            .create_zoho_record(
                ORG,
                fields(json!({"Last_Name": format!("Hand {i}"), "Email": format!("hand{i}@example.com")})),
            )
            .expect("created by hand");
        ids.push(id);
    }
    let asc = [("fields", "Email,Last_Name"), ("sort_order", "asc")];

    let page = |n: &'static str| {
        let sim = &sim;
        let token = &token;
        async move {
            let mut q = asc.to_vec();
            q.push(("page", n));
            list(sim, token, &q).await
        }
    };
    let eleven = page("11").await;
    assert_eq!(eleven.status, StatusCode::BAD_REQUEST);
    assert_eq!(eleven.json["code"], "DISCRETE_PAGINATION_LIMIT_EXCEEDED");
    let ten = page("10").await;
    assert_eq!(ten.status, StatusCode::OK);
    assert_eq!(ids_of(&ten), ids[1800..2000]);
    let continued = {
        let mut q = asc.to_vec();
        let t = next_token(&ten).expect("page 10 has a next page token");
        q.push(("page_token", &t));
        list(&sim, &token, &q).await.json.clone()
    };
    assert_eq!(continued["info"]["page"], 11);
    assert_eq!(continued["info"]["count"], 100);
    assert_eq!(continued["info"]["more_records"], false);
    assert_eq!(continued["info"]["next_page_token"], Value::Null);
    assert_eq!(
        continued["data"][0]["id"], ids[2000],
        "page 10's token leads to record 2001"
    );

    let (walked, calls) = walk(&sim, &token, &asc).await;
    assert_eq!(calls, 11);
    assert_eq!(walked, ids);

    // A previous-page token goes back.
    let last = {
        let mut q = asc.to_vec();
        let t = next_token(&ten).expect("token");
        q.push(("page_token", &t));
        list(&sim, &token, &q).await
    };
    let prev = last.json["info"]["previous_page_token"]
        .as_str()
        .expect("previous token")
        .to_string();
    let mut q = asc.to_vec();
    q.push(("page_token", &prev));
    let back = list(&sim, &token, &q).await;
    assert_eq!(ids_of(&back), ids[1800..2000]);
    assert_eq!(back.json["info"]["page"], 10);

    let org = inspect(&sim, ORG).await;
    assert_eq!(org["record_count"], 2_100);
    assert_eq!(org["by_hand"]["created"], 100);
    assert_eq!(org["calls"]["list"], 1 + 1 + 11 + 1 + 1);
    assert_eq!(org["credits_used_window"], 200 + 15, "hand creates are free");
}

#[tokio::test]
async fn a_token_walk_stays_consistent_while_records_change_and_is_bound_to_its_parameters() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ids = seed(&sim, &token, "c", 450).await;
    let q = [("fields", "Email,Last_Name"), ("sort_order", "asc")];
    let first = list(&sim, &token, &q).await;
    assert_eq!(ids_of(&first), ids[..200]);
    let t = next_token(&first).expect("token");

    // Between pages: a record already served is deleted through the API, one not yet served
    // is deleted and another edited by hand, and a new one is created by hand.
    assert_eq!(delete(&sim, "us", &token, &ids[10]).await.status, StatusCode::OK);
    sim.delete_zoho_record(ORG, &ids[300]).expect("deleted by hand");
    sim.edit_zoho_record(ORG, &ids[301], fields(json!({"Last_Name": "Edited"})))
        .expect("edited by hand");
    let created = sim
        .create_zoho_record(ORG, fields(json!({"Last_Name": "New", "Email": "new@example.com"})))
        .expect("created by hand");

    let changed_fields = [("fields", "Email"), ("sort_order", "asc"), ("page_token", t.as_str())];
    let mismatch = list(&sim, &token, &changed_fields).await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        mismatch.json,
        json!({"code": "TOKEN_BOUND_DATA_MISMATCH", "details": {"param_name": "page_token"}, "message": "The page_token given seems to be invalid or input param is added, altered, or deleted", "status": "error"})
    );
    let added = [
        ("fields", "Email,Last_Name"),
        ("sort_order", "asc"),
        ("per_page", "200"),
        ("page_token", t.as_str()),
    ];
    assert_eq!(
        list(&sim, &token, &added).await.json["code"],
        "TOKEN_BOUND_DATA_MISMATCH",
        "a parameter added"
    );

    let mut seen = ids_of(&first);
    let mut page_token = Some(t);
    while let Some(t) = page_token {
        let mut query = q.to_vec();
        query.push(("page_token", &t));
        let a = list(&sim, &token, &query).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        if let Some(rec) = a.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|r| r["id"] == ids[301].as_str())
        {
            assert_eq!(rec["Last_Name"], "Edited");
        }
        seen.extend(ids_of(&a));
        page_token = next_token(&a);
    }
    let mut expected: Vec<String> = ids.iter().filter(|id| **id != ids[300]).cloned().collect();
    expected.push(created.clone());
    assert_eq!(
        seen, expected,
        "every record once, in order: the one deleted ahead skipped, the new one last"
    );
}

#[tokio::test]
async fn hand_changes_show_in_the_list_and_the_inspection_for_no_credits() {
    let sim = start(config(vec![tenant("acme", 1)])).await;
    let token = access_token(&sim, "us", "acme").await;
    let ours = seed(&sim, &token, "o", 1).await.remove(0);
    let base = sim.base_url();

    // Created by another user, over HTTP.
    let created = answer(
        client()
            .post(format!("{base}/_sim/orgs/{ORG}/records"))
            .json(&json!({"First_Name": "Ann", "Last_Name": "Other", "Email": "ann@example.com", "Title": "CFO"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let theirs = created.json["id"].as_str().expect("id").to_string();
    assert_eq!(created.json["origin"], "hand");
    assert_eq!(created.json["api_updates"], 0);

    let fields_q = "Email,Last_Name,Title,Full_Name,Owner,Created_By,Modified_By,Modified_Time";
    let both = format!("{ours},{theirs}");
    let q = [("fields", fields_q), ("ids", both.as_str()), ("sort_order", "asc")];
    let a = list(&sim, &token, &q).await;
    assert_eq!(ids_of(&a), [ours.clone(), theirs.clone()]);
    let rec = &a.json["data"][1];
    assert_eq!(rec["Full_Name"], "Ann Other");
    assert_eq!(rec["Owner"]["name"], "Sim User");
    assert_eq!(rec["Created_By"]["name"], "Sim User");
    assert_eq!(
        a.json["data"][0]["Owner"]["name"], "Sim Admin",
        "crmsync's records are the API user's"
    );
    let modified_before = rec["Modified_Time"].as_str().expect("time").to_string();

    // Edited by hand, over HTTP and in-process.
    let edited = answer(
        client()
            .patch(format!("{base}/_sim/orgs/{ORG}/records/{theirs}"))
            .json(&json!({"Title": null, "Email": "ann.other@example.com"}))
            .send()
            .await
            .expect("edit"),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text);
    assert_eq!(edited.json["Email"], "ann.other@example.com");
    assert_eq!(edited.json["Title"], Value::Null);
    let ours_edited = sim
        .edit_zoho_record(ORG, &ours, fields(json!({"Phone": "+1 555 0100"})))
        .expect("edit ours");
    assert_eq!(ours_edited["Phone"], "+1 555 0100");
    assert_eq!(ours_edited["origin"], "api");
    let a = list(&sim, &token, &q).await;
    let rec = &a.json["data"][1];
    assert_eq!(rec["Email"], "ann.other@example.com");
    assert_eq!(rec["Title"], Value::Null);
    assert!(rec["Modified_Time"].as_str().expect("time") >= modified_before.as_str());
    assert_eq!(a.json["data"][0]["Modified_By"]["name"], "Sim User", "edited by hand");
    let org = inspect(&sim, ORG).await;
    let inspected = org["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["id"] == theirs.as_str())
        .expect("their record")
        .clone();
    assert_eq!(inspected["Email"], "ann.other@example.com");
    assert_eq!(inspected["origin"], "hand");

    // Refusals.
    let no_last = answer(
        client()
            .post(format!("{base}/_sim/orgs/{ORG}/records"))
            .json(&json!({"Email": "x@example.com"}))
            .send()
            .await
            .expect("create"),
    )
    .await;
    assert_eq!(no_last.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_last.json["details"]["code"], "MANDATORY_NOT_FOUND");
    let read_only = answer(
        client()
            .patch(format!("{base}/_sim/orgs/{ORG}/records/{theirs}"))
            .json(&json!({"Modified_Time": "2020-01-01T00:00:00+00:00"}))
            .send()
            .await
            .expect("edit"),
    )
    .await;
    assert_eq!(read_only.status, StatusCode::BAD_REQUEST);
    assert_eq!(read_only.json["details"]["details"]["api_name"], "Modified_Time");
    let unknown = client()
        .patch(format!("{base}/_sim/orgs/{ORG}/records/123"))
        .json(&json!({"Title": "x"}))
        .send()
        .await
        .expect("edit");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let no_org = client()
        .delete(format!("{base}/_sim/orgs/org-nope/records/{theirs}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(no_org.status(), StatusCode::NOT_FOUND);
    assert!(
        sim.edit_zoho_record(ORG, &theirs, fields(json!({"Last_Name": ""})))
            .is_err()
    );

    // Deleted by hand: gone from the API and the inspection.
    let deleted = client()
        .delete(format!("{base}/_sim/orgs/{ORG}/records/{theirs}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    let gone = list(&sim, &token, &[("fields", "Email"), ("ids", &theirs)]).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let again = client()
        .delete(format!("{base}/_sim/orgs/{ORG}/records/{theirs}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(sim.delete_zoho_record(ORG, &theirs).is_err());
    let by_api = delete(&sim, "us", &token, &theirs).await;
    assert_eq!(by_api.json["data"][0]["code"], "INVALID_DATA");

    let org = inspect(&sim, ORG).await;
    assert_eq!(org["record_count"], 1);
    assert!(
        org["records"]
            .as_array()
            .expect("records")
            .iter()
            .all(|r| r["id"] != theirs.as_str())
    );
    assert_eq!(org["by_hand"], json!({"created": 1, "edited": 2, "deleted": 1}));
    assert_eq!(org["calls"]["list"], 3);
    assert_eq!(
        org["credits_used_window"],
        1 + 3 + 1,
        "upsert, lists, API delete; hand changes free"
    );
    assert_eq!(org["calls"]["upsert"], 1);

    // An API write to a record is counted on it.
    let a = upsert(
        &sim,
        "us",
        &token,
        &upsert_body(vec![json!({"Last_Name": "Again", "Email": "o0@example.com"})]),
    )
    .await;
    assert_eq!(a.json["data"][0]["details"]["id"], ours.as_str());
    assert_eq!(inspect(&sim, ORG).await["records"][0]["api_updates"], 1);
}

/// Get Records with a fresh access token (they live 167 real ms at this time scale).
async fn list_fresh(sim: &RunningSim, query: &[(&str, &str)]) -> Answer {
    for _ in 0..5 {
        let token = access_token(sim, "us", "acme").await;
        let a = list(sim, &token, query).await;
        if a.status != StatusCode::UNAUTHORIZED {
            return a;
        }
    }
    panic!("no access token lived long enough");
}

#[tokio::test]
async fn page_tokens_expire_after_24_simulated_hours() {
    // 6 simulated hours per real second.
    let mut cfg = config(vec![tenant("acme", 1)]);
    cfg.time_scale = 21_600.0;
    let sim = start(cfg).await;
    sim.create_zoho_record(ORG, fields(json!({"Last_Name": "A"})))
        .expect("a");
    sim.create_zoho_record(ORG, fields(json!({"Last_Name": "B"})))
        .expect("b");
    let q = [("fields", "Last_Name"), ("per_page", "1")];
    let first = list_fresh(&sim, &q).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let t = next_token(&first).expect("token");
    let expiry = first.json["info"]["page_token_expiry"]
        .as_str()
        .expect("expiry")
        .to_string();
    assert!(expiry.ends_with("+00:00"), "{expiry}");

    tokio::time::sleep(Duration::from_millis(1500)).await; // ~9 simulated hours
    let mut with_token = q.to_vec();
    with_token.push(("page_token", &t));
    let second = list_fresh(&sim, &with_token).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.json["data"][0]["Last_Name"], "A");

    tokio::time::sleep(Duration::from_millis(2700)).await; // past 24 simulated hours
    let expired = list_fresh(&sim, &with_token).await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST, "{}", expired.text);
    assert_eq!(
        expired.json,
        json!({"code": "EXPIRED_VALUE", "details": {"api_name": "page_token", "json_path": "$.query.page_token"}, "message": "Page token expired", "status": "error"})
    );
}

#[tokio::test]
async fn get_records_spends_the_credit_window_with_its_header_and_429() {
    let mut t = tenant("acme", 1);
    t.zoho.daily_credits = 4;
    let sim = start(config(vec![t])).await;
    sim.create_zoho_record(ORG, fields(json!({"Last_Name": "A"})))
        .expect("a");
    let token = access_token(&sim, "us", "acme").await;
    let q = [("fields", "Last_Name")];
    let mut headers = Vec::new();
    for _ in 0..4 {
        let a = list(&sim, &token, &q).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        headers.push(
            a.headers
                .get("x-api-credits-remaining")
                .map(|v| v.to_str().expect("ascii").to_string()),
        );
    }
    assert_eq!(
        headers,
        [None, Some("2".into()), Some("1".into()), Some("0".into())],
        "the header appears once half the day's credits are used"
    );
    let over = list(&sim, &token, &q).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.json["code"], "TOO_MANY_REQUESTS");
    let org = inspect(&sim, ORG).await;
    assert_eq!(org["calls"]["list"], 4, "the refused call is not served");
    assert_eq!(org["calls"]["rejected_429"], 1);
    assert_eq!(org["credits_used_window"], 4);
}
