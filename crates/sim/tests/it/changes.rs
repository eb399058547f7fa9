//! Explicit address-book changes (`put_contact`, `delete_contact` and their HTTP routes):
//! chosen ids, however odd, round-trip through list, get and signed webhooks.

use crmsync_sim::{MutationKind, MutationPlan, RunningSim};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::receiver::{Behavior, Receiver, SECRET, verify};
use crate::webhooks::sim_for;
use crate::{answer, client, config, list_contacts, start, tenant};

/// Ids a client must carry byte for byte: JSON escapes, control characters, non-ASCII, and
/// characters that mean something in URLs.
const ODD_IDS: &[&str] = &[
    "c\"1",
    "back\\slash",
    "tab\there",
    "new\nline",
    "Zoë-山田-😀",
    "slash/and%25?#&+ space",
];

/// Percent-encodes every byte outside RFC 3986's unreserved set, for one path segment.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn minimal(id: &str, n: usize) -> Value {
    json!({"id": id, "given_name": "A", "surname": format!("B{n}"),
           "emails": [{"email": format!("odd{n}@example.com"), "type": "work"}]})
}

/// GET one contact with its id percent-encoded in the path.
async fn get_encoded(sim: &RunningSim, id: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!(
            "{}/v3/grants/grant-acme/contacts/{}",
            sim.nylas_api_uri("us"),
            encode_segment(id)
        ))
        .bearer_auth("nyk-acme")
        .send()
        .await
        .expect("get contact");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every contact the grant serves, two per page.
async fn walk(sim: &RunningSim) -> Vec<Value> {
    let mut served = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "2")];
        if let Some(c) = cursor.as_deref() {
            q.push(("page_token", c));
        }
        let a = list_contacts(sim, "us", "grant-acme", Some("nyk-acme"), &q).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        served.extend(a.json["data"].as_array().cloned().unwrap_or_default());
        match a.json.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => return served,
        }
    }
}

#[tokio::test]
async fn odd_ids_round_trip_through_list_get_and_signed_webhooks() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 3, |_| {}).await;
    let mut last_time = 0;
    for (n, id) in ODD_IDS.iter().enumerate() {
        let report = sim.put_contact("grant-acme", minimal(id, n), true).await.expect("put");
        assert_eq!(report.kind, MutationKind::Create);
        assert!(!report.existed);
        assert!(report.delivered);
        assert_eq!((report.status, report.attempts), (Some(200), 1));
        assert_eq!(report.outcome.as_deref(), Some("200"));
        assert!(report.time > last_time, "time strictly increases");
        last_time = report.time;
    }
    // Served as given, with only `grant_id` and `object` filled in.
    let expected: Vec<Value> = ODD_IDS
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let mut c = minimal(id, n);
            c["grant_id"] = json!("grant-acme");
            c["object"] = json!("contact");
            c
        })
        .collect();
    let served = walk(&sim).await;
    assert_eq!(served.len(), 3 + ODD_IDS.len());
    assert_eq!(served[3..], expected[..], "appended in order, across pages");
    for c in &expected {
        let id = c["id"].as_str().expect("id");
        let (status, body) = get_encoded(&sim, id).await;
        assert_eq!(status, StatusCode::OK, "{id:?}");
        assert_eq!(&body["data"], c);
    }
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), ODD_IDS.len());
    for (a, c) in arrivals.iter().zip(&expected) {
        let sig = a.signature.as_deref().expect("signed");
        assert!(verify(SECRET, &a.raw, sig), "valid signature");
        assert_eq!(a.json["type"], "contact.updated");
        assert_eq!(a.json["webhook_delivery_attempt"], 1);
        assert_eq!(&a.json["data"]["object"], c, "the receiver parses the same contact");
    }

    // Replace in place, then delete.
    let id = ODD_IDS[0];
    let mut changed = minimal(id, 0);
    changed["surname"] = json!("Changed \"quoted\"");
    let report = sim.put_contact("grant-acme", changed.clone(), true).await.expect("put");
    assert_eq!((report.kind, report.existed), (MutationKind::Update, true));
    assert_eq!(walk(&sim).await[3]["surname"], "Changed \"quoted\"", "same position");
    let deleted = sim.delete_contact("grant-acme", id, true).await.expect("delete");
    assert_eq!(
        (deleted.kind, deleted.existed, deleted.status),
        (MutationKind::Delete, true, Some(200))
    );
    assert!(deleted.contact.is_none());
    assert_eq!(get_encoded(&sim, id).await.0, StatusCode::NOT_FOUND);
    assert!(walk(&sim).await.iter().all(|c| c["id"] != id));
    let last = receiver.arrivals().pop().expect("delete delivered");
    assert!(verify(SECRET, &last.raw, last.signature.as_deref().expect("signed")));
    assert_eq!(last.json["type"], "contact.deleted");
    assert_eq!(
        last.json["data"]["object"],
        json!({"grant_id": "grant-acme", "id": id, "object": "contact"})
    );
    assert_eq!(last.id(), deleted.notification_id);
}

#[tokio::test]
async fn changes_share_the_logical_clock_with_plans_and_use_the_retrying_delivery() {
    let receiver = Receiver::start(Behavior {
        fail_below_attempt: 2,
        ..Behavior::default()
    })
    .await;
    let sim = sim_for(&receiver, 20, |_| {}).await;
    let plan = MutationPlan {
        count: 5,
        duplicate_rate: 0.0,
        reorder_rate: 0.0,
        forged_rate: 0.0,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    let put = sim
        .put_contact("grant-acme", minimal("after-plan", 1), true)
        .await
        .expect("put");
    assert!(put.time > report.last_time.expect("times"));
    assert_eq!((put.status, put.attempts), (Some(200), 2), "retried once after a 503");
    assert_eq!(put.log.len(), 2);
    assert_eq!(put.log[0].status, Some(503));
    let ids: Vec<&str> = put.log.iter().map(|r| r.notification_id.as_str()).collect();
    assert_eq!(ids, [put.notification_id.as_str(); 2], "a retry keeps the id");
}

#[tokio::test]
async fn deliver_false_changes_the_book_silently() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 2, |_| {}).await;
    let put = sim
        .put_contact("grant-acme", minimal("quiet", 0), false)
        .await
        .expect("put");
    assert!(!put.delivered);
    assert_eq!((put.status, put.attempts, put.outcome), (None, 0, None));
    assert_eq!(get_encoded(&sim, "quiet").await.0, StatusCode::OK);
    let del = sim.delete_contact("grant-acme", "quiet", false).await.expect("delete");
    assert!(del.existed && !del.delivered);
    assert_eq!(get_encoded(&sim, "quiet").await.0, StatusCode::NOT_FOUND);
    // Deleting again changes nothing; the notification is still made.
    let again = sim.delete_contact("grant-acme", "quiet", true).await.expect("delete");
    assert!(!again.existed && again.delivered);
    assert_eq!(receiver.arrivals().len(), 1, "only the asked-for delivery");
    let inspect = sim.inspect_grant("grant-acme").expect("grant");
    assert_eq!(inspect["mutations"], json!({"create": 1, "delete": 1}));
    // Without webhooks configured nothing is sent either.
    let plain = start(config(vec![tenant("acme", 1)])).await;
    let put = plain
        .put_contact("grant-acme", minimal("x", 0), true)
        .await
        .expect("put");
    assert!(!put.delivered);
    assert!(plain.put_contact("grant-nobody", minimal("x", 0), true).await.is_err());
    assert!(
        plain
            .put_contact("grant-acme", json!({"given_name": "no id"}), true)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn http_put_and_delete_take_percent_encoded_ids_and_the_path_id_wins() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 2, |_| {}).await;
    let url = |id: &str, query: &str| {
        format!(
            "{}/_sim/nylas/grant-acme/contacts/{}{query}",
            sim.base_url(),
            encode_segment(id)
        )
    };
    for (n, id) in ODD_IDS.iter().enumerate() {
        let mut body = minimal("ignored-body-id", n);
        body["grant_id"] = json!("grant-kept-as-given");
        let a = answer(
            client()
                .put(url(id, "?deliver=false"))
                .json(&body)
                .send()
                .await
                .expect("put"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.json["contact_id"], *id);
        assert_eq!(a.json["kind"], "create");
        assert_eq!(a.json["delivered"], false);
        let (status, got) = get_encoded(&sim, id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got["data"]["id"], *id);
        assert_eq!(got["data"]["grant_id"], "grant-kept-as-given");
    }
    assert!(receiver.arrivals().is_empty());
    let a = answer(client().delete(url(ODD_IDS[5], "")).send().await.expect("delete")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        (a.json["existed"].clone(), a.json["status"].clone()),
        (json!(true), json!(200))
    );
    assert_eq!(receiver.arrivals()[0].json["data"]["object"]["id"], ODD_IDS[5]);
    assert_eq!(get_encoded(&sim, ODD_IDS[5]).await.0, StatusCode::NOT_FOUND);

    let bad = |req: reqwest::RequestBuilder| async move { answer(req.send().await.expect("send")).await.status };
    assert_eq!(
        bad(client().put(url("x", "?deliver=maybe")).json(&json!({}))).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        bad(client().put(url("x", "")).json(&json!([1]))).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        bad(client().put(url("x", "")).body("{nope")).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        bad(client().delete(format!("{}/_sim/nylas/grant-nobody/contacts/x", sim.base_url()))).await,
        StatusCode::NOT_FOUND
    );
}
