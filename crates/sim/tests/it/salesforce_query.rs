//! Salesforce SOQL queries (the subset, paging through `nextRecordsUrl`) and the org's
//! generated Accounts.

use std::collections::HashSet;

use crmsync_sim::salesforce::accounts::{email_domain, website_domain};
use crmsync_sim::{address_book, salesforce_accounts};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::salesforce::{EXT, ORG, contact, inspect, lead, query, query_more, sf_sim, sf_tenant, sf_token, upsert};
use crate::{config, start};

#[tokio::test]
async fn query_pages_through_next_records_url_and_closes_the_cursor_at_the_end() {
    let sim = sf_sim(|sf| sf.query_page_size = 3).await;
    let token = sf_token(&sim).await;
    let records: Vec<Value> = (0..8)
        .map(|i| contact(&format!("q{i}"), &format!("L{i}"), &format!("q{i}@x.example")))
        .collect();
    upsert(&sim, &token, "Contact", records).await;
    let first = query(
        &sim,
        &token,
        "SELECT Id, LastName, Nylas_Contact_Id__c FROM Contact ORDER BY Id",
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        (first.json["totalSize"].clone(), first.json["done"].clone()),
        (json!(8), json!(false))
    );
    let mut served: Vec<Value> = first.json["records"].as_array().expect("records").clone();
    let mut next = first.json["nextRecordsUrl"].as_str().map(String::from);
    let mut pages = 1;
    while let Some(url) = next {
        assert!(url.starts_with("/services/data/v60.0/query/01g"), "{url}");
        let page = query_more(&sim, &token, &url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(page.json["totalSize"], 8);
        served.extend(page.json["records"].as_array().expect("records").iter().cloned());
        next = page
            .json
            .get("nextRecordsUrl")
            .and_then(Value::as_str)
            .map(String::from);
        assert_eq!(page.json["done"], next.is_none());
        pages += 1;
        if next.is_none() {
            // The cursor is closed once its last page was served.
            let again = query_more(&sim, &token, &url).await;
            assert_eq!(again.status, StatusCode::BAD_REQUEST);
            assert_eq!(again.json[0]["errorCode"], "INVALID_QUERY_LOCATOR");
        }
    }
    assert_eq!(pages, 3);
    let exts: Vec<&str> = served.iter().map(|r| r[EXT].as_str().expect("ext")).collect();
    assert_eq!(exts, ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"], "creation order");
    let r = &served[0];
    assert_eq!(r["attributes"]["type"], "Contact");
    let id = r["Id"].as_str().expect("id");
    assert_eq!(
        r["attributes"]["url"],
        format!("/services/data/v60.0/sobjects/Contact/{id}")
    );
    let keys: HashSet<&str> = r.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["attributes", "Id", "LastName", EXT]));
    let org = inspect(&sim);
    assert_eq!(org["calls"]["query"], 4, "every page is a request");
    assert_eq!(org["open_query_cursors"], 0);
}

#[tokio::test]
async fn conditions_compare_text_case_insensitively_and_ids_in_either_form() {
    let sim = sf_sim(|_| {}).await;
    let token = sf_token(&sim).await;
    let odd = "o'neil \"q\" \\ é";
    let a = upsert(
        &sim,
        &token,
        "Contact",
        vec![
            contact(odd, "Quote", "Mixed.Case@X.example"),
            json!({EXT: "no-mail", "LastName": "NoMail"}),
            contact("c3", "Third", "third@x.example"),
        ],
    )
    .await;
    let ids: Vec<String> = a
        .json
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    upsert(&sim, &token, "Lead", vec![lead("l1", "Lead", "lead@x.example", "Co")]).await;
    let count = |soql: String| {
        let sim = &sim;
        let token = token.clone();
        async move {
            let a = query(sim, &token, &soql).await;
            assert_eq!(a.status, StatusCode::OK, "{soql}: {}", a.text);
            a.json
        }
    };
    let escaped = r#"o\'neil \"q\" \\ \u00e9"#;
    let found = count(format!("SELECT Id, {EXT} FROM Contact WHERE {EXT} = '{escaped}'")).await;
    assert_eq!(found["totalSize"], 1);
    assert_eq!(found["records"][0][EXT], odd);
    assert_eq!(
        count("select id from contact where email = 'mixed.case@x.EXAMPLE'".into()).await["totalSize"],
        1
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Email = null".into()).await["totalSize"],
        1
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Email != null".into()).await["totalSize"],
        2
    );
    assert_eq!(
        count("SELECT Id FROM Contact WHERE Email != 'third@x.example'".into()).await["totalSize"],
        2,
        "!= matches nulls too"
    );
    let in_ids = format!(
        "SELECT Id FROM Contact WHERE Id IN ('{}', '{}')",
        &ids[0][..15],
        ids[2].to_lowercase()
    );
    assert_eq!(count(in_ids).await["totalSize"], 2);
    let both = count("SELECT Id FROM Contact WHERE Email != null AND LastName = 'THIRD'".into()).await;
    assert_eq!(both["records"][0]["Id"], ids[2]);
    let desc = count("SELECT Id FROM Contact ORDER BY Id DESC LIMIT 2".into()).await;
    assert_eq!(desc["totalSize"], 2);
    assert_eq!(desc["records"][0]["Id"], ids[2]);
    let leads =
        count("SELECT Id, Name, Company, IsConverted, ConvertedContactId FROM Lead WHERE IsConverted = false".into())
            .await;
    assert_eq!(leads["records"][0]["Name"], "Test Lead");
    assert_eq!(leads["records"][0]["IsConverted"], false);
    assert_eq!(leads["records"][0]["ConvertedContactId"], Value::Null);

    for (soql, code) in [
        (
            "SELECT Id FROM Contact WHERE Email = 'a' OR Email = 'b'",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id FROM Contact WHERE Email LIKE 'a%'", "MALFORMED_QUERY"),
        ("SELECT COUNT() FROM Contact", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact ORDER BY LastName", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity", "INVALID_TYPE"),
        ("SELECT Company FROM Contact", "INVALID_FIELD"),
    ] {
        let a = query(&sim, &token, soql).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{soql}");
        assert_eq!(a.json[0]["errorCode"], code, "{soql}");
        assert!(a.json[0]["message"].is_string());
    }
}

#[tokio::test]
async fn generated_accounts_have_websites_on_email_domains_of_the_book() {
    let t = sf_tenant(400, |_| {});
    let sim = start(config(vec![t.clone()])).await;
    let expected = salesforce_accounts(&t, 42);
    assert_eq!(expected.len(), 3);
    assert_eq!(expected, salesforce_accounts(&t, 42), "deterministic");
    let domains: HashSet<String> = address_book(&t, 42)
        .iter()
        .filter_map(|c| c["emails"][0]["email"].as_str().and_then(email_domain))
        .collect();
    let token = sf_token(&sim).await;
    let a = query(&sim, &token, "SELECT Id, Name, Website FROM Account ORDER BY Id").await;
    assert_eq!(a.json["totalSize"], 3);
    for (rec, acc) in a.json["records"].as_array().expect("records").iter().zip(&expected) {
        assert_eq!(rec["Name"], acc.name);
        assert_eq!(rec["Website"].as_str(), acc.website.as_deref());
        let d = website_domain(rec["Website"].as_str().expect("website")).expect("domain");
        assert!(domains.contains(&d), "{d} is an email domain of the book");
        assert!(rec["Id"].as_str().is_some_and(|id| id.starts_with("001")));
    }
    let org = inspect(&sim);
    assert_eq!(org["accounts"].as_array().map(Vec::len), Some(3));
    assert_eq!(org["org_id"], ORG);
}
