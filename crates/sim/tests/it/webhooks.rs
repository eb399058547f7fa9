//! Signed webhook delivery of address-book mutations, checked by a receiver that verifies
//! signatures itself (see `receiver.rs`).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crmsync_sim::webhooks::sign;
use crmsync_sim::{MutationPlan, RunningSim, WebhookConfig};
use serde_json::{Value, json};

use crate::receiver::{Arrival, Behavior, Receiver, SECRET, hmac_hex, verify};
use crate::{config, start, tenant};

/// A simulator with one tenant `acme` of `contacts` contacts delivering to `receiver`.
pub async fn sim_for(receiver: &Receiver, contacts: usize, tweak: impl FnOnce(&mut WebhookConfig)) -> RunningSim {
    let mut w = WebhookConfig::new(receiver.url(), SECRET);
    w.retry_backoff_ms = 10;
    tweak(&mut w);
    let mut cfg = config(vec![tenant("acme", contacts)]);
    cfg.webhooks = Some(w);
    start(cfg).await
}

/// A plan with no duplicates, reordering or forgeries.
fn clean_plan(count: usize, seed: u64) -> MutationPlan {
    MutationPlan {
        count,
        seed,
        duplicate_rate: 0.0,
        reorder_rate: 0.0,
        forged_rate: 0.0,
        log: true,
        ..MutationPlan::default()
    }
}

#[tokio::test]
async fn signature_is_lowercase_hex_hmac_sha256_of_the_raw_body_and_matches_the_vectors() {
    // The official Kotlin SDK's vector: its body, byte for byte.
    let sdk_body = r#"{"specversion":"1.0","type":"grant.deleted","source":"/nylas/system","id":"Kkx2QQB7TWjWM3KXRQQn562394","time":1717162394,"webhook_delivery_attempt":1,"data":{"application_id":"a7966b5a-9bc2-44b7-9895-4e2b281ce6be","object":{"code":25013,"grant_id":"4c22c3c5-d163-48b6-ad95-45fedc879683","integration_id":"b7dd6e6e-af6a-463b-92fa-be35c2683f5c","metric":1934,"provider":"google"}}}"#;
    let sdk_sig = "a4534f7e68dcd54f0621f7539ddd5a0d14a9a46ace9b68a4cfd9c99b4b6b89cc";
    assert_eq!(sign(SECRET.as_bytes(), sdk_body.as_bytes()), sdk_sig);
    assert_eq!(hmac_hex(SECRET, sdk_body.as_bytes()), sdk_sig);
    assert!(verify(SECRET, sdk_body.as_bytes(), sdk_sig));
    assert!(!verify(
        SECRET,
        sdk_body.as_bytes(),
        "a4534f7e68dcd54f0621f7539ddd5a0d14a9a46ace9b68a4cfd9c99b4b6b89ca"
    ));
    assert!(!verify(SECRET, sdk_body.as_bytes(), &sdk_sig.to_uppercase()));
    // Our own vector over a fixed contact.deleted body, computed with
    // `printf %s "$body" | openssl dgst -sha256 -hmac UfZWFrkjsbg5bxLbax-y`.
    let own_body = r#"{"specversion":"1.0","type":"contact.deleted","source":"/google/contacts/incremental","id":"sim-vector-1","time":1723821985,"webhook_delivery_attempt":1,"data":{"application_id":"app-sim","object":{"grant_id":"grant-acme","id":"abc123","object":"contact"}}}"#;
    let own_sig = "3b6d07a1b7af11511410b484db667f5d6b0dce4d32a7db3287c4710009810668";
    assert_eq!(sign(SECRET.as_bytes(), own_body.as_bytes()), own_sig);
    assert_eq!(hmac_hex(SECRET, own_body.as_bytes()), own_sig);
}

#[tokio::test]
async fn deliveries_are_signed_over_the_raw_body_in_the_nylas_envelope() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 50, |_| {}).await;
    let report = sim.mutate("grant-acme", clean_plan(30, 3)).await.expect("mutate");
    assert_eq!(report.mutations, 30);
    assert_eq!(report.notifications, 30);
    assert_eq!(report.deliveries, 30);
    assert_eq!(report.by_status.get("200"), Some(&30));
    assert_eq!((report.failed, report.retried, report.undelivered), (0, 0, 0));
    assert_eq!(report.latency_ms.count, 30);
    assert!(report.latency_ms.p50 <= report.latency_ms.p99 && report.latency_ms.p99 <= report.latency_ms.max);
    assert!(report.log.iter().all(|r| r.answered_ms.is_some_and(|a| a >= r.sent_ms)));

    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 30);
    for a in &arrivals {
        let sig = a.signature.as_deref().expect("signed");
        assert_eq!(sig.len(), 64);
        assert!(
            sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{sig}"
        );
        assert_eq!(sig, hmac_hex(SECRET, &a.raw), "signature over the raw body");
        assert!(a.valid);
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        assert_eq!(a.content_encoding, None);
        let j = &a.json;
        assert_eq!(j["specversion"], "1.0");
        assert_eq!(j["source"], "/google/contacts/incremental");
        assert!(j["type"] == "contact.updated" || j["type"] == "contact.deleted", "{j}");
        assert_eq!(j["webhook_delivery_attempt"], 1);
        assert_eq!(j["data"]["application_id"], "app-sim");
        assert!(j["time"].is_i64());
        assert!(j["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(j["data"]["object"]["grant_id"], "grant-acme");
        assert_eq!(j["data"]["object"]["object"], "contact");
    }
    let ids: HashSet<&str> = arrivals.iter().map(Arrival::id).collect();
    assert_eq!(ids.len(), 30, "notification ids are unique");
}

#[tokio::test]
async fn compressed_delivery_gzips_the_body_and_signs_the_gzip_bytes() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 20, |w| w.compressed = true).await;
    let report = sim.mutate("grant-acme", clean_plan(10, 4)).await.expect("mutate");
    assert_eq!(report.by_status.get("200"), Some(&10));
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 10);
    for a in &arrivals {
        assert_eq!(a.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(&a.raw[..2], &[0x1f, 0x8b], "gzip magic");
        let sig = a.signature.as_deref().expect("signed");
        assert!(verify(SECRET, &a.raw, sig), "the signature covers the compressed bytes");
        let plain = serde_json::to_vec(&a.json).expect("json");
        assert!(!verify(SECRET, &plain, sig), "and not the JSON");
        assert!(a.json["type"].is_string(), "the gzip holds the notification");
    }
}

/// GET one contact from the simulator's Nylas API.
pub async fn get_contact(sim: &RunningSim, id: &str) -> (reqwest::StatusCode, Value) {
    let resp = crate::client()
        .get(format!(
            "{}/v3/grants/grant-acme/contacts/{id}",
            sim.nylas_api_uri("us")
        ))
        .bearer_auth("nyk-acme")
        .send()
        .await
        .expect("get contact");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn contact_updated_carries_the_full_current_contact_and_contact_deleted_only_ids() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 40, |_| {}).await;
    let report = sim.mutate("grant-acme", clean_plan(60, 5)).await.expect("mutate");
    assert!(report.by_kind["create"] > 0 && report.by_kind["delete"] > 0 && report.by_kind["update"] > 0);
    let mut arrivals = receiver.genuine();
    arrivals.sort_by_key(Arrival::time);
    // The last notification of each contact is its current state.
    let mut last: HashMap<String, Value> = HashMap::new();
    for a in &arrivals {
        let object = &a.json["data"]["object"];
        let id = object["id"].as_str().expect("contact id").to_string();
        match a.json["type"].as_str() {
            Some("contact.deleted") => {
                assert_eq!(
                    object,
                    &json!({"grant_id": "grant-acme", "id": id, "object": "contact"}),
                    "ids only"
                );
            }
            Some("contact.updated") => {
                for key in [
                    "id",
                    "grant_id",
                    "object",
                    "source",
                    "emails",
                    "phone_numbers",
                    "groups",
                ] {
                    assert!(object.get(key).is_some(), "{key} missing from {object}");
                }
            }
            other => panic!("unexpected type {other:?}"),
        }
        last.insert(id, a.json.clone());
    }
    for (id, n) in &last {
        let (status, body) = get_contact(&sim, id).await;
        if n["type"] == "contact.deleted" {
            assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "deleted {id}");
            assert_eq!(body["error"]["type"], "api.not_found_error");
        } else {
            assert_eq!(status, reqwest::StatusCode::OK);
            assert_eq!(body["data"], n["data"]["object"], "exactly what get serves");
        }
    }
}

#[tokio::test]
async fn times_strictly_increase_within_a_plan_and_across_plans() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 30, |_| {}).await;
    let first = sim.mutate("grant-acme", clean_plan(25, 6)).await.expect("mutate");
    let second = sim.mutate("grant-acme", clean_plan(5, 7)).await.expect("mutate");
    let times: Vec<i64> = first.applied.iter().chain(&second.applied).map(|a| a.time).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert_eq!(first.last_time.zip(first.first_time).map(|(l, f)| l - f), Some(24));
    assert!(second.first_time > first.last_time);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (first.first_time.expect("time") - now).abs() < 60,
        "starts at the current time"
    );
    // What arrived carries the same times, each notification its own second.
    let arrived: HashSet<i64> = receiver.genuine().iter().map(Arrival::time).collect();
    assert_eq!(arrived, times.iter().copied().collect());
}

#[tokio::test]
async fn duplicates_keep_the_id_and_body_and_reordered_arrivals_happen() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 50, |_| {}).await;
    let plan = MutationPlan {
        count: 50,
        seed: 8,
        duplicate_rate: 0.2,
        reorder_rate: 0.3,
        forged_rate: 0.0,
        // One POST at a time: arrival order is the send order.
        concurrency: 1,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    assert_eq!((report.duplicates, report.reordered), (10, 15));
    assert_eq!(report.deliveries, 60);
    let arrivals = receiver.genuine();
    assert_eq!(arrivals.len(), 60);
    let mut by_id: HashMap<&str, Vec<&Arrival>> = HashMap::new();
    for a in &arrivals {
        by_id.entry(a.id()).or_default().push(a);
    }
    assert_eq!(by_id.len(), 50);
    let twice: Vec<&Vec<&Arrival>> = by_id.values().filter(|v| v.len() == 2).collect();
    assert_eq!(twice.len(), 10);
    for pair in twice {
        assert_eq!(pair[0].raw, pair[1].raw, "a duplicate is the identical POST");
        assert_eq!(pair[0].signature, pair[1].signature);
        assert_eq!(pair[1].attempt(), 1);
    }
    // First arrivals of each notification, in arrival order, are not in `time` order.
    let mut seen = HashSet::new();
    let firsts: Vec<i64> = arrivals
        .iter()
        .filter(|a| seen.insert(a.id().to_string()))
        .map(Arrival::time)
        .collect();
    let inversions = firsts.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions >= 5, "{inversions} inversions in {firsts:?}");
}

#[tokio::test]
async fn forged_deliveries_are_extra_and_every_genuine_one_arrives() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 50, |_| {}).await;
    let plan = MutationPlan {
        count: 40,
        seed: 9,
        duplicate_rate: 0.0,
        reorder_rate: 0.2,
        forged_rate: 0.5,
        log: true,
        ..MutationPlan::default()
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    assert_eq!(report.forged, 20);
    assert_eq!(report.deliveries, 60);
    assert_eq!(
        report.by_status.get("401"),
        Some(&20),
        "the receiver refused every forgery"
    );
    assert_eq!(report.by_status.get("200"), Some(&40));
    assert_eq!(report.failed, 0);
    let arrivals = receiver.arrivals();
    let forged: Vec<&Arrival> = arrivals.iter().filter(|a| !a.valid).collect();
    assert_eq!(forged.len(), 20);
    assert!(forged.iter().all(|a| a.answered == 401));
    assert!(forged.iter().any(|a| a.signature.is_none()), "unsigned forgeries");
    assert!(forged.iter().any(|a| a.signature.is_some()), "wrongly signed forgeries");
    let genuine_ids: HashSet<&str> = arrivals.iter().filter(|a| a.valid).map(Arrival::id).collect();
    let notified: HashSet<&str> = report.applied.iter().map(|m| m.notification_id.as_str()).collect();
    assert_eq!(genuine_ids, notified, "every notification arrived genuinely");
    // A forgery can reuse a real notification id: verify before deduplicating.
    assert!(forged.iter().any(|a| notified.contains(a.id())));
}

#[tokio::test]
async fn non_200_answers_are_retried_with_increasing_attempts_and_the_same_id() {
    let receiver = Receiver::start(Behavior {
        fail_below_attempt: 3,
        fail_status: 503,
        ..Behavior::default()
    })
    .await;
    let sim = sim_for(&receiver, 20, |_| {}).await;
    let report = sim.mutate("grant-acme", clean_plan(10, 10)).await.expect("mutate");
    assert_eq!(report.deliveries, 30);
    assert_eq!(report.retried, 20);
    assert_eq!(report.by_status.get("503"), Some(&20));
    assert_eq!(report.by_status.get("200"), Some(&10));
    assert_eq!(report.failed, 0);
    let arrivals = receiver.arrivals();
    assert!(arrivals.iter().all(|a| a.valid), "every attempt is re-signed");
    let mut by_id: HashMap<&str, Vec<&Arrival>> = HashMap::new();
    for a in &arrivals {
        by_id.entry(a.id()).or_default().push(a);
    }
    assert_eq!(by_id.len(), 10);
    for (id, tries) in by_id {
        let attempts: Vec<u64> = tries.iter().map(|a| a.attempt()).collect();
        assert_eq!(attempts, [1, 2, 3], "{id}");
        assert!(tries.windows(2).all(|w| w[0].at < w[1].at));
        // Only the attempt field differs.
        let strip = |a: &Arrival| {
            let mut j = a.json.clone();
            j["webhook_delivery_attempt"] = Value::Null;
            j
        };
        assert_eq!(strip(tries[0]), strip(tries[2]));
        assert_ne!(tries[0].signature, tries[1].signature);
    }
}

#[tokio::test]
async fn a_destination_that_never_answers_200_fails_after_the_retries() {
    let receiver = Receiver::start(Behavior {
        fail_below_attempt: u64::MAX,
        fail_status: 500,
        ..Behavior::default()
    })
    .await;
    let sim = sim_for(&receiver, 20, |w| w.retries = 2).await;
    let started = Instant::now();
    let report = sim.mutate("grant-acme", clean_plan(5, 11)).await.expect("mutate");
    assert_eq!(report.failed, 5);
    assert_eq!(report.deliveries, 15);
    assert_eq!(report.retried, 10);
    assert_eq!(report.by_status.get("500"), Some(&15));
    assert_eq!(report.latency_ms.count, 0);
    // Backoff 10 ms then 20 ms.
    assert!(started.elapsed().as_millis() >= 30);
}

#[tokio::test]
async fn no_answer_within_timeout_ms_is_retried() {
    let receiver = Receiver::start(Behavior {
        stall_first_attempt_ms: 1_000,
        ..Behavior::default()
    })
    .await;
    let sim = sim_for(&receiver, 20, |w| w.timeout_ms = 150).await;
    let report = sim.mutate("grant-acme", clean_plan(4, 12)).await.expect("mutate");
    assert_eq!(report.by_status.get("timeout"), Some(&4));
    assert_eq!(report.by_status.get("200"), Some(&4));
    assert_eq!(report.retried, 4);
    assert_eq!(report.failed, 0);
}

#[tokio::test]
async fn rate_per_sec_paces_the_sends() {
    let receiver = Receiver::start(Behavior::default()).await;
    let sim = sim_for(&receiver, 20, |_| {}).await;
    let plan = MutationPlan {
        rate_per_sec: Some(40.0),
        ..clean_plan(9, 13)
    };
    let report = sim.mutate("grant-acme", plan).await.expect("mutate");
    let sent: Vec<f64> = report.log.iter().map(|r| r.sent_ms).collect();
    assert_eq!(sent.len(), 9);
    // Slots are 25 ms apart from the start of the delivery: the 9th send cannot go out before
    // 200 ms (a little slack for timer granularity). A busy machine only makes sends later, so
    // this bound holds under any load (the span between two sends would not: a first send
    // that wakes late shortens it).
    assert!(sent[8] >= 190.0, "{sent:?}");
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
}
