//! Mutable address books: what list and get serve after a plan, the HTTP driver, targets.

use std::collections::{HashMap, HashSet};

use crmsync_sim::{Mix, MutationKind, MutationPlan, address_book};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::receiver::{Arrival, Behavior, Receiver};
use crate::webhooks::{get_contact, sim_for};
use crate::{client, config, list_contacts, start, tenant};

/// Every contact the grant serves, walking the pages with `limit`.
async fn walk(sim: &crmsync_sim::RunningSim, limit: &str) -> Vec<Value> {
    let mut served = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", limit)];
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

fn id_of(c: &Value) -> &str {
    c["id"].as_str().unwrap_or_default()
}

/// Applies notifications, as a correct receiver would: genuine ones only, each id once, in
/// `time` order; `contact.updated` replaces or appends, `contact.deleted` removes.
fn apply(book: &mut Vec<Value>, arrivals: &[Arrival]) {
    let mut seen = HashSet::new();
    let mut events: Vec<&Arrival> = arrivals
        .iter()
        .filter(|a| a.valid && seen.insert(a.id().to_string()))
        .collect();
    events.sort_by_key(|a| a.time());
    for a in events {
        let object = &a.json["data"]["object"];
        let id = id_of(object);
        match a.json["type"].as_str() {
            Some("contact.updated") => match book.iter().position(|c| id_of(c) == id) {
                Some(i) => book[i] = object.clone(),
                None => book.push(object.clone()),
            },
            Some("contact.deleted") => book.retain(|c| id_of(c) != id),
            other => panic!("unexpected type {other:?}"),
        }
    }
}

#[tokio::test]
async fn book_served_after_the_mutations_equals_applying_them_and_deleted_contacts_404() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 120, |_| {}).await;
    let mut expected = address_book(&tenant("acme", 120), 42);
    let plan = MutationPlan {
        count: 150,
        seed: 21,
        log: true,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    assert_eq!(report.failed, 0);
    apply(&mut expected, &receiver.arrivals());
    let creates = report.by_kind["create"] as usize;
    let deletes = report.by_kind["delete"] as usize;
    assert_eq!(expected.len(), 120 + creates - deletes);
    for limit in ["200", "7"] {
        assert_eq!(walk(&sim, limit).await, expected, "limit {limit}");
    }
    for c in &expected {
        let (status, body) = get_contact(&sim, id_of(c)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body["data"], c);
    }
    let deleted: HashSet<&str> = report
        .applied
        .iter()
        .filter(|m| m.kind == MutationKind::Delete)
        .map(|m| m.contact_id.as_str())
        .collect();
    assert_eq!(deleted.len(), deletes, "a deleted contact is not targeted again");
    for id in deleted {
        let (status, body) = get_contact(&sim, id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(body["error"]["type"], "api.not_found_error");
    }
    let all: Value = client()
        .get(format!("{}/_sim/nylas/grant-acme/contacts", sim.base_url()))
        .send()
        .await
        .expect("inspect")
        .json()
        .await
        .expect("json");
    assert_eq!(all, Value::Array(expected));
}

#[tokio::test]
async fn plans_hit_the_same_contacts_repeatedly_and_created_contacts_have_unique_plausible_emails() {
    let sim = start(config(vec![tenant("acme", 300)])).await;
    let plan = MutationPlan {
        count: 200,
        seed: 22,
        log: true,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    assert_eq!(report.undelivered, 200, "no webhooks configured");
    assert_eq!(report.deliveries, 0);
    let mut per_contact: HashMap<&str, Vec<MutationKind>> = HashMap::new();
    for m in &report.applied {
        per_contact.entry(&m.contact_id).or_default().push(m.kind);
    }
    let repeated = per_contact.values().filter(|k| k.len() >= 2).count();
    assert!(repeated >= 10, "only {repeated} contacts changed more than once");
    let created_then_changed = per_contact
        .values()
        .filter(|k| k[0] == MutationKind::Create && k.len() >= 2)
        .count();
    assert!(created_then_changed >= 3, "{created_then_changed}");
    // Every kind happens; a deleted contact is never touched after.
    for kind in ["create", "update", "email_change", "delete"] {
        assert!(report.by_kind[kind] > 0, "{kind}");
    }
    assert!(
        per_contact
            .values()
            .all(|k| !k[..k.len() - 1].contains(&MutationKind::Delete))
    );

    // Emails of created or changed contacts are plausible and unique in the book.
    let book = walk(&sim, "200").await;
    let mut owners: HashMap<String, usize> = HashMap::new();
    for c in &book {
        if let Some(e) = c["emails"][0]["email"].as_str() {
            *owners.entry(e.trim().to_lowercase()).or_default() += 1;
        }
    }
    let touched: HashSet<&str> = report
        .applied
        .iter()
        .filter(|m| matches!(m.kind, MutationKind::Create | MutationKind::EmailChange))
        .map(|m| m.contact_id.as_str())
        .collect();
    let mut checked = 0;
    for c in book.iter().filter(|c| touched.contains(id_of(c))) {
        let email = c["emails"][0]["email"].as_str().expect("an email");
        let (local, domain) = email.split_once('@').expect("an @");
        assert!(!local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace));
        assert_eq!(owners[&email.to_lowercase()], 1, "{email} is unique");
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
    // Updates keep emails: an updated-only contact has its generated emails.
    let original = address_book(&tenant("acme", 300), 42);
    let updated_only: Vec<&str> = per_contact
        .iter()
        .filter(|(_, k)| k.iter().all(|k| *k == MutationKind::Update))
        .map(|(id, _)| *id)
        .collect();
    assert!(!updated_only.is_empty());
    for id in updated_only {
        let before = original.iter().find(|c| id_of(c) == id).expect("generated");
        let after = book.iter().find(|c| id_of(c) == id).expect("still there");
        assert_eq!(before["emails"], after["emails"]);
        assert_ne!(before, after, "an update changes something");
    }
}

#[tokio::test]
async fn a_distinct_plan_touches_each_contact_once_and_creates_when_none_is_left() {
    let sim = start(config(vec![tenant("acme", 50)])).await;
    let plan = MutationPlan {
        count: 40,
        seed: 23,
        distinct: true,
        mix: Mix {
            create: 0.0,
            update: 1.0,
            email_change: 0.0,
            delete: 0.0,
        },
        log: true,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan.clone()).await.expect("mutate");
    let ids: HashSet<&str> = report.applied.iter().map(|m| m.contact_id.as_str()).collect();
    assert_eq!(ids.len(), 40, "40 updates to 40 distinct contacts");
    assert_eq!(report.by_kind["update"], 40);
    // 20 more than the book holds: the last 10 have nothing untouched left and create.
    let report = sim
        .mutate("grant-acme", MutationPlan { count: 60, ..plan })
        .await
        .expect("mutate");
    let ids: HashSet<&str> = report.applied.iter().map(|m| m.contact_id.as_str()).collect();
    assert_eq!(ids.len(), 60);
    assert_eq!((report.by_kind["update"], report.by_kind["create"]), (50, 10));
}

#[tokio::test]
async fn pages_stay_consistent_when_the_book_changes_during_a_read() {
    let sim = start(config(vec![tenant("acme", 100)])).await;
    let first = list_contacts(&sim, "us", "grant-acme", Some("nyk-acme"), &[("limit", "30")]).await;
    let cursor = first.json["next_cursor"].as_str().expect("cursor").to_string();
    let plan = MutationPlan {
        count: 60,
        seed: 23,
        mix: Mix {
            create: 1.0,
            update: 0.0,
            email_change: 0.0,
            delete: 1.0,
        },
        ..MutationPlan::default()
    };
    sim.mutate("grant-acme", plan).await.expect("mutate");
    let mut served: Vec<Value> = first.json["data"].as_array().cloned().unwrap_or_default();
    let mut cursor = Some(cursor);
    while let Some(c) = cursor.take() {
        let a = list_contacts(
            &sim,
            "us",
            "grant-acme",
            Some("nyk-acme"),
            &[("limit", "30"), ("page_token", &c)],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        served.extend(a.json["data"].as_array().cloned().unwrap_or_default());
        cursor = a.json.get("next_cursor").and_then(Value::as_str).map(String::from);
    }
    let ids: Vec<&str> = served.iter().map(id_of).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no contact served twice");
    let now = walk(&sim, "200").await;
    assert!(
        now.iter().all(|c| unique.contains(id_of(c))),
        "every contact still in the book was served"
    );
}

#[tokio::test]
async fn mutations_endpoint_runs_a_plan_over_http() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 50, |_| {}).await;
    let url = format!("{}/_sim/nylas/grant-acme/mutations", sim.base_url());
    let resp = client()
        .post(&url)
        .json(&json!({"count": 20, "seed": 3, "mix": {"update": 1}, "duplicate_rate": 0.1}))
        .send()
        .await
        .expect("mutate");
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.expect("report");
    assert_eq!(report["mutations"], 20);
    assert_eq!(
        report["by_kind"],
        json!({"create": 0, "update": 20, "email_change": 0, "delete": 0})
    );
    assert_eq!(report["notifications"], 20);
    assert_eq!(report["duplicates"], 2);
    assert_eq!(report["forged"], 1, "the default forged_rate 0.05");
    assert_eq!(report["deliveries"], 23);
    assert_eq!(report["by_status"], json!({"200": 22, "401": 1}));
    assert_eq!(report["failed"], 0);
    assert!(report["latency_ms"]["p50"].is_number() && report["latency_ms"]["p99"].is_number());
    assert!(report.get("log").is_none(), "no log unless asked");
    assert_eq!(receiver.arrivals().len(), 23);

    // An empty body is the default plan.
    let resp = client().post(&url).send().await.expect("mutate");
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.expect("report");
    assert_eq!(report["mutations"], 100);

    for bad in [
        json!({"count": 1, "duplicate_rate": 2.0}),
        json!({"concurrency": 0}),
        json!({"mix": {"create": 0}}),
        json!({"nope": 1}),
    ] {
        let resp = client().post(&url).json(&bad).send().await.expect("mutate");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let resp = client()
        .post(format!("{}/_sim/nylas/grant-nope/mutations", sim.base_url()))
        .json(&json!({}))
        .send()
        .await
        .expect("mutate");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let inspect: Value = client()
        .get(format!("{}/_sim/nylas/grant-acme", sim.base_url()))
        .send()
        .await
        .expect("inspect")
        .json()
        .await
        .expect("json");
    assert_eq!(inspect["mutations"]["update"].as_u64().map(|n| n >= 20), Some(true));
    assert_eq!(inspect["contacts"].as_u64(), Some(walk(&sim, "200").await.len() as u64));
}

#[tokio::test]
async fn deliver_false_changes_the_book_silently() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 30, |_| {}).await;
    let plan = MutationPlan {
        count: 10,
        deliver: false,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    assert_eq!((report.undelivered, report.deliveries, report.failed), (10, 0, 0));
    assert!(receiver.arrivals().is_empty());
    assert_ne!(walk(&sim, "200").await, address_book(&tenant("acme", 30), 42));
    assert!(sim.mutate("grant-nope", MutationPlan::default()).await.is_err());
}
