//! Salesforce writes: sObject Collections upsert by external id, the single-record upsert,
//! delete, duplicate rules and converted Leads.

use crmsync_sim::DuplicateRule;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::salesforce::{
    EXT, ORG, codes, contact, data_url, inspect, lead, query, sf_call, sf_sim, sf_token, upsert, usage,
};
use crate::{answer, client};

#[tokio::test]
async fn upsert_inserts_then_updates_by_external_id() {
    let sim = sf_sim(|_| {}).await;
    let token = sf_token(&sim).await;
    let records: Vec<Value> = (0..3)
        .map(|i| contact(&format!("n{i}"), &format!("Person {i}"), &format!("p{i}@example.org")))
        .collect();
    let first = upsert(&sim, &token, "Contact", records).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let results = first.json.as_array().expect("array").clone();
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r["success"], true);
        assert_eq!(r["created"], true);
        assert_eq!(r["errors"], json!([]));
        let id = r["id"].as_str().expect("id");
        assert!(id.len() == 18 && id.starts_with("003"), "{id}");
    }
    assert_eq!(usage(&first).as_deref(), Some("api-usage=1/15000"));

    let changed = vec![json!({EXT: "n1", "LastName": "Renamed", "Title": null, "Phone": "+1 555 0100"})];
    let second = upsert(&sim, &token, "Contact", changed).await;
    assert_eq!(second.json[0]["created"], false);
    assert_eq!(second.json[0]["id"], results[1]["id"], "same record");
    let q = query(
        &sim,
        &token,
        "SELECT Id, FirstName, LastName, Email, Phone, Nylas_Contact_Id__c FROM Contact WHERE Nylas_Contact_Id__c = 'n1'",
    )
    .await;
    assert_eq!(q.json["totalSize"], 1);
    let rec = &q.json["records"][0];
    assert_eq!(rec["LastName"], "Renamed");
    assert_eq!(rec["FirstName"], "Test", "absent fields keep their value");
    assert_eq!(rec["Phone"], "+1 555 0100");
    assert_eq!(rec["Email"], "p1@example.org");
    assert_eq!(rec["attributes"]["type"], "Contact");
    let org = inspect(&sim);
    assert_eq!(org["calls"]["upsert"], 2);
    assert_eq!(org["records_upserted"], 4);
    assert_eq!(
        (org["records_created"].clone(), org["records_updated"].clone()),
        (json!(3), json!(1))
    );
    assert_eq!(org["contacts"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn each_per_record_error_fails_only_its_record_and_the_answer_stays_200() {
    let sim = sf_sim(|_| {}).await;
    let token = sf_token(&sim).await;
    let accounts = query(&sim, &token, "SELECT Id, Name, Website FROM Account").await;
    let account_id = accounts.json["records"][0]["Id"]
        .as_str()
        .expect("an account")
        .to_string();
    let a = upsert(
        &sim,
        &token,
        "Contact",
        vec![
            json!({"LastName": "No ext id"}),
            contact("twice", "A", "a@x.example"),
            contact("twice", "B", "b@x.example"),
            json!({EXT: "nolast", "FirstName": "Only"}),
            contact("long", &"L".repeat(81), "l@x.example"),
            json!({EXT: "longfirst", "FirstName": "F".repeat(41), "LastName": "x"}),
            contact("mail", "M", "not an email"),
            json!({EXT: "acct", "LastName": "X", "AccountId": "001000000000000AAA"}),
            json!({EXT: "good", "LastName": "X", "AccountId": account_id}),
            contact("exact", &"é".repeat(80), &format!("{}@x.example", "e".repeat(69))),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        codes(&a),
        [
            "MISSING_ARGUMENT",
            "DUPLICATE_VALUE",
            "DUPLICATE_VALUE",
            "REQUIRED_FIELD_MISSING",
            "STRING_TOO_LONG",
            "STRING_TOO_LONG",
            "INVALID_EMAIL_ADDRESS",
            "INVALID_CROSS_REFERENCE_KEY",
            "OK",
            "OK"
        ]
    );
    let failed = &a.json[3];
    assert_eq!(failed["id"], Value::Null);
    assert_eq!(failed["errors"][0]["fields"], json!(["LastName"]));
    assert_eq!(
        failed["errors"][0]["message"],
        "Required fields are missing: [LastName]"
    );
    assert_eq!(a.json[4]["errors"][0]["fields"], json!(["LastName"]));
    assert_eq!(a.json[5]["errors"][0]["fields"], json!(["FirstName"]));
    assert_eq!(a.json[6]["errors"][0]["fields"], json!(["Email"]));
    assert_eq!(a.json[7]["errors"][0]["fields"], json!(["AccountId"]));

    // A Lead needs Company too; every record failing is still 200.
    let leads = upsert(&sim, &token, "Lead", vec![json!({EXT: "l1", "Email": "l@x.example"})]).await;
    assert_eq!(leads.status, StatusCode::OK);
    assert_eq!(codes(&leads), ["REQUIRED_FIELD_MISSING"]);
    assert_eq!(leads.json[0]["errors"][0]["fields"], json!(["LastName", "Company"]));
    assert_eq!(inspect(&sim)["records_failed"], 9);
}

#[tokio::test]
async fn whole_body_errors_are_400_error_arrays_and_200_records_is_the_limit() {
    let sim = sf_sim(|_| {}).await;
    let token = sf_token(&sim).await;
    let many = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| contact(&format!("m{i}"), "M", &format!("m{i}@x.example")))
            .collect()
    };
    let ok = upsert(&sim, &token, "Contact", many(200)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json.as_array().map(Vec::len), Some(200));
    let over = upsert(&sim, &token, "Contact", many(201)).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(over.json[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    assert_eq!(
        over.json[0]["message"],
        "record limit reached. cannot submit more than 200 records into this call"
    );

    let patch = |rest: String, body: Value| {
        let sim = &sim;
        let token = token.clone();
        async move { sf_call(sim, &token, Method::PATCH, &rest, Some(&body)).await }
    };
    let path = format!("composite/sobjects/Contact/{EXT}");
    let wrong_type = patch(
        path.clone(),
        json!({"records": [{"attributes": {"type": "Lead"}, EXT: "x", "LastName": "x"}]}),
    )
    .await;
    assert_eq!(
        (wrong_type.status, wrong_type.json[0]["errorCode"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_TYPE"))
    );
    let untyped = patch(path.clone(), json!({"records": [{EXT: "x", "LastName": "x"}]})).await;
    assert_eq!(untyped.json[0]["errorCode"], "INVALID_TYPE");
    let company_on_contact = patch(
        path.clone(),
        json!({"records": [{"attributes": {"type": "Contact"}, EXT: "x", "LastName": "x", "Company": "C"}]}),
    )
    .await;
    assert_eq!(company_on_contact.status, StatusCode::BAD_REQUEST);
    assert_eq!(company_on_contact.json[0]["errorCode"], "INVALID_FIELD");
    let not_json = answer_raw(&sim, &token, &path, "{not json").await;
    assert_eq!(
        (not_json.0, not_json.1[0]["errorCode"].clone()),
        (StatusCode::BAD_REQUEST, json!("JSON_PARSER_ERROR"))
    );
    let wrong_field = patch("composite/sobjects/Contact/Email".to_string(), json!({"records": []})).await;
    assert_eq!(wrong_field.status, StatusCode::NOT_FOUND);
    assert_eq!(wrong_field.json[0]["errorCode"], "NOT_FOUND");
    let account = patch(format!("composite/sobjects/Account/{EXT}"), json!({"records": []})).await;
    assert_eq!(account.status, StatusCode::NOT_FOUND);
    let org = inspect(&sim);
    assert_eq!(
        org["contacts"].as_array().map(Vec::len),
        Some(200),
        "refused bodies wrote nothing"
    );
    assert_eq!(
        org["api_usage"]["used"], 8,
        "every authenticated request counts, 400s included"
    );
    assert!(usage(&wrong_field).is_some(), "errors carry the usage header");
}

/// A raw PATCH body (not JSON).
async fn answer_raw(sim: &crmsync_sim::RunningSim, token: &str, rest: &str, body: &str) -> (StatusCode, Value) {
    let resp = client()
        .patch(data_url(sim, rest))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("patch");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn duplicate_rule_alert_refuses_unless_allow_save_and_block_refuses_always() {
    for rule in [DuplicateRule::None, DuplicateRule::Alert, DuplicateRule::Block] {
        let sim = sf_sim(|sf| sf.duplicate_rule = rule).await;
        let token = sf_token(&sim).await;
        let first = upsert(&sim, &token, "Contact", vec![contact("c1", "A", "same@x.example")]).await;
        let existing = first.json[0]["id"].clone();
        let dup = vec![lead("l1", "B", "SAME@X.example", "X Corp")];
        let plain = upsert(&sim, &token, "Lead", dup.clone()).await;
        let body = json!({"allOrNone": false, "records": [{"attributes": {"type": "Lead"}, EXT: "l1", "LastName": "B", "Email": "SAME@X.example", "Company": "X Corp"}]});
        let allowed = answer(
            client()
                .patch(data_url(&sim, &format!("composite/sobjects/Lead/{EXT}")))
                .bearer_auth(&token)
                .header("Sforce-Duplicate-Rule-Header", "allowSave=true")
                .json(&body)
                .send()
                .await
                .expect("patch"),
        )
        .await;
        match rule {
            DuplicateRule::None => {
                assert_eq!(codes(&plain), ["OK"]);
            }
            DuplicateRule::Alert => {
                assert_eq!(codes(&plain), ["DUPLICATES_DETECTED"]);
                let err = &plain.json[0]["errors"][0];
                let d = &err["duplicateResult"];
                assert_eq!(d["allowSave"], true);
                assert_eq!(d["duplicateRuleEntityType"], "Lead");
                assert_eq!(d["matchResults"][0]["entityType"], "Contact");
                assert_eq!(d["matchResults"][0]["matchRecords"][0]["record"]["Id"], existing);
                assert_eq!(codes(&allowed), ["OK"], "allowSave bypasses an alert rule");
                assert_eq!(inspect(&sim)["duplicates_blocked"], 1);
            }
            DuplicateRule::Block => {
                assert_eq!(codes(&plain), ["DUPLICATES_DETECTED"]);
                assert_eq!(plain.json[0]["errors"][0]["duplicateResult"]["allowSave"], false);
                assert_eq!(
                    codes(&allowed),
                    ["DUPLICATES_DETECTED"],
                    "allowSave does not bypass block"
                );
                assert_eq!(inspect(&sim)["duplicates_blocked"], 2);
            }
        }
    }
}

#[tokio::test]
async fn single_record_upsert_answers_201_then_200_and_204_before_v46() {
    let sim = sf_sim(|sf| sf.duplicate_rule = DuplicateRule::Alert).await;
    let token = sf_token(&sim).await;
    let url = |version: &str, value: &str| {
        format!(
            "{}/services/data/{version}/sobjects/Contact/{EXT}/{value}",
            sim.salesforce_instance_url(ORG)
        )
    };
    let put = |version: &'static str, value: &'static str, body: Value| {
        let url = url(version, value);
        let token = token.clone();
        async move {
            answer(
                client()
                    .patch(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .expect("patch"),
            )
            .await
        }
    };
    let created = put(
        "v60.0",
        "s%2F1",
        json!({"LastName": "One", "Email": "one@x.example", EXT: "ignored"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["created"], true);
    assert_eq!(created.json["success"], true);
    assert_eq!(created.json["errors"], json!([]));
    let updated = put("v60.0", "s%2F1", json!({"Title": "CEO"})).await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(
        updated.json,
        json!({"id": created.json["id"], "success": true, "errors": [], "created": false})
    );
    let old = put("v45.0", "s%2F1", json!({"Title": "CTO"})).await;
    assert_eq!((old.status, old.text.as_str()), (StatusCode::NO_CONTENT, ""));
    let q = query(&sim, &token, "SELECT Title, Nylas_Contact_Id__c FROM Contact").await;
    assert_eq!(q.json["records"][0]["Title"], "CTO");
    assert_eq!(q.json["records"][0][EXT], "s/1", "the URL value is the external id");
    let dup = put("v60.0", "s2", json!({"LastName": "Two", "Email": "ONE@x.example"})).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert_eq!(dup.json[0]["errorCode"], "DUPLICATES_DETECTED");
    assert!(dup.json[0]["duplicateResult"].is_object());
    let missing = put("v60.0", "s3", json!({"FirstName": "No last"})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json,
        json!([{"message": "Required fields are missing: [LastName]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}])
    );
    let wrong_field = answer(
        client()
            .patch(format!(
                "{}/services/data/v60.0/sobjects/Contact/Email/x",
                sim.salesforce_instance_url(ORG)
            ))
            .bearer_auth(&token)
            .json(&json!({"LastName": "x"}))
            .send()
            .await
            .expect("patch"),
    )
    .await;
    assert_eq!(wrong_field.status, StatusCode::NOT_FOUND);
    assert_eq!(
        wrong_field.json[0]["message"],
        "Provided external ID field does not exist or is not accessible: Email"
    );
    let org = inspect(&sim);
    assert_eq!(org["calls"]["single_upsert"], 6);
    assert_eq!(org["calls"]["upsert"], 0);
}

#[tokio::test]
async fn delete_answers_per_id_and_entity_is_deleted_for_unknown_or_deleted_ids() {
    let sim = sf_sim(|_| {}).await;
    let token = sf_token(&sim).await;
    let a = upsert(
        &sim,
        &token,
        "Contact",
        vec![contact("d1", "A", "a@x.example"), contact("d2", "B", "b@x.example")],
    )
    .await;
    let ids: Vec<String> = a
        .json
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    let del = |list: String| {
        let sim = &sim;
        let token = token.clone();
        async move {
            answer(
                client()
                    .delete(data_url(sim, "composite/sobjects"))
                    .query(&[("ids", list.as_str()), ("allOrNone", "false")])
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("delete"),
            )
            .await
        }
    };
    let unknown = "003000000000001AAA";
    let first = del(format!("{},{unknown}", ids[0])).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json[0], json!({"id": ids[0], "success": true, "errors": []}));
    assert_eq!(
        first.json[1],
        json!({"id": unknown, "success": false, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]})
    );
    // Again, and the other one by its 15-character id.
    let second = del(format!("{},{}", ids[0], &ids[1][..15])).await;
    assert_eq!(codes(&second), ["ENTITY_IS_DELETED", "OK"]);
    assert_eq!(second.json[1]["id"], ids[1], "answered with the 18-character id");
    let q = query(&sim, &token, "SELECT Id FROM Contact").await;
    assert_eq!(q.json["totalSize"], 0);
    // Over 200 ids is a whole-request error.
    let too_many: Vec<String> = (0..201).map(|i| format!("003000000000{i:03}AAA")).collect();
    let over = del(too_many.join(",")).await;
    assert_eq!(
        (over.status, over.json[0]["errorCode"].clone()),
        (StatusCode::BAD_REQUEST, json!("EXCEEDED_ID_LIMIT"))
    );
    // A deleted record's external id is free: the next upsert creates.
    let again = upsert(&sim, &token, "Contact", vec![contact("d1", "A", "a@x.example")]).await;
    assert_eq!(again.json[0]["created"], true);
    assert_ne!(again.json[0]["id"], ids[0]);
    assert_eq!(inspect(&sim)["calls"]["delete"], 3);
}

#[tokio::test]
async fn a_converted_lead_refuses_lead_upserts_and_its_contact_takes_over() {
    let sim = sf_sim(|sf| {
        sf.accounts = Some(vec![crmsync_sim::AccountConfig {
            name: "Initech".into(),
            website: Some("https://www.initech.test/".into()),
        }]);
    })
    .await;
    let token = sf_token(&sim).await;
    let a = upsert(
        &sim,
        &token,
        "Lead",
        vec![
            lead("n1", "Lumbergh", "bill@initech.test", "Initech"),
            lead("n2", "Bolton", "michael@elsewhere.example", "Chotchkie's"),
        ],
    )
    .await;
    let lead1 = a.json[0]["id"].as_str().expect("lead").to_string();
    let lead2 = a.json[1]["id"].as_str().expect("lead").to_string();
    let contact1 = sim.convert_salesforce_lead(ORG, &lead1).expect("convert");
    assert!(contact1.starts_with("003"));
    assert!(sim.convert_salesforce_lead(ORG, &lead1).is_err(), "converted once");
    let resp = client()
        .post(format!("{}/_sim/salesforce/{ORG}/convert/{lead2}", sim.base_url()))
        .send()
        .await
        .expect("convert");
    assert_eq!(resp.status(), StatusCode::OK);
    let contact2 = resp.json::<Value>().await.expect("json")["contact_id"]
        .as_str()
        .expect("id")
        .to_string();

    let again = upsert(
        &sim,
        &token,
        "Lead",
        vec![lead("n1", "Lumbergh", "bill@initech.test", "Initech")],
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.json[0],
        json!({"id": null, "success": false, "errors": [{"statusCode": "CANNOT_UPDATE_CONVERTED_LEAD", "message": "cannot reference converted lead", "fields": []}]})
    );
    let leads = query(
        &sim,
        &token,
        &format!("SELECT Id, IsConverted, ConvertedContactId FROM Lead WHERE Id = '{lead1}'"),
    )
    .await;
    assert_eq!(leads.json["records"][0]["IsConverted"], true);
    assert_eq!(leads.json["records"][0]["ConvertedContactId"], contact1);
    let contacts = query(
        &sim,
        &token,
        "SELECT Id, AccountId, Email, Nylas_Contact_Id__c FROM Contact ORDER BY Id",
    )
    .await;
    assert_eq!(contacts.json["totalSize"], 2);
    let accounts = query(&sim, &token, "SELECT Id, Name FROM Account ORDER BY Id").await;
    assert_eq!(accounts.json["totalSize"], 2, "Initech, and a new one for Chotchkie's");
    assert_eq!(accounts.json["records"][1]["Name"], "Chotchkie's");
    let c1 = &contacts.json["records"][0];
    assert_eq!((c1["Id"].clone(), c1[EXT].clone()), (json!(contact1), json!("n1")));
    assert_eq!(
        c1["AccountId"], accounts.json["records"][0]["Id"],
        "matched by website domain"
    );
    assert_eq!(contacts.json["records"][1]["Id"], contact2);
    assert_eq!(
        contacts.json["records"][1]["AccountId"],
        accounts.json["records"][1]["Id"]
    );
    // The Contact now answers upserts by that external id.
    let update = upsert(&sim, &token, "Contact", vec![json!({EXT: "n1", "Title": "VP"})]).await;
    assert_eq!(
        update.json[0],
        json!({"id": contact1, "success": true, "errors": [], "created": false})
    );
}
