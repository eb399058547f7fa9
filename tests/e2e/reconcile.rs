//! Reconcile: the CRM brought back to the book after missed webhooks and edits in the CRM,
//! without touching records crmsync did not write; the dry run changes nothing; the fleet's
//! scheduler starts one run however many schedulers race.

use std::time::Duration;

use crmsync_e2e::{crm_records, expected_crm};
use crmsync_producer::{RunKind, RunStore};
use crmsync_sim::{Mix, MutationPlan, RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::RedisServer;
use serde_json::{Value, json};

use crate::changes::current_book;
use crate::support::{add_sim_tenant_with, crmsync_output, crmsync_worker};

fn hand_fields(i: usize) -> serde_json::Map<String, Value> {
    let Value::Object(m) = json!({
        "Last_Name": format!("Hand {i}"),
        "Email": format!("hand-{i}@elsewhere.test"),
        "Phone": "+1 555 0100",
    }) else {
        unreachable!()
    };
    m
}

/// The org's records as the simulator holds them, without their timestamps: what a dry run
/// must leave exactly as it was.
fn org_records(sim: &RunningSim, org: &str) -> Vec<Value> {
    let doc = sim.inspect_org(org).expect("org");
    let mut out: Vec<Value> = doc["records"].as_array().cloned().unwrap_or_default();
    for r in &mut out {
        if let Value::Object(m) = r {
            m.retain(|k, _| !k.ends_with("_Time"));
        }
    }
    out.sort_by_key(|r| r["id"].to_string());
    out
}

fn drift(out: &str, kind: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(kind)?;
            // Counts are printed with thousands separators (`1,234`).
            rest.split_whitespace().next()?.replace(',', "").parse().ok()
        })
        .unwrap_or(0)
}

/// Silent updates, email changes, creates and deletes (no webhook), records deleted and
/// edited in Zoho by hand, and records another user made there: the dry run reports each kind
/// and changes nothing; the real run leaves the CRM equal to the book and the other user's
/// records untouched; a second run finds nothing and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_brings_the_crm_back_to_the_book_and_touches_nothing_else() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("recon");
    t.contacts = 800;
    t.zoho.daily_credits = 1_000_000;
    let org = t.zoho.org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 41,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add_sim_tenant_with(&redis, &key, &sim, &t, &["--rps", "50"]);
    let args = ["--concurrency", "4", "--page-size", "100"];
    let _w1 = crmsync_worker(&redis, &key, "worker-1", &args);
    let _w2 = crmsync_worker(&redis, &key, "worker-2", &args);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "recon", "--follow"]);
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Missed webhooks: 240 changes nobody is told about.
    let report = sim
        .mutate(
            &t.grant_id,
            MutationPlan {
                count: 240,
                seed: 12,
                deliver: false,
                mix: Mix {
                    create: 0.15,
                    update: 0.35,
                    email_change: 0.25,
                    delete: 0.25,
                },
                ..MutationPlan::default()
            },
        )
        .await
        .expect("mutate");
    assert!(report.by_kind.get("delete").copied().unwrap_or(0) > 20, "{report:?}");
    // The winner of a shared email (the contact with the smallest id) deleted silently too:
    // its record must come back to the next contact's fields.
    let book = current_book(&sim, &t.grant_id).await;
    let mut by_email: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in &book {
        let contact = crmsync_nylas::parse_contact(c).expect("contact");
        if let crmsync_domain::MapOutcome::Mapped { record, .. } =
            crmsync_domain::map_contact(&contact, &crmsync_sink::zoho::LIMITS)
        {
            by_email.entry(record.email).or_default().push(contact.id.clone());
        }
    }
    let (shared_email, mut sharers) = by_email
        .into_iter()
        .find(|(_, ids)| ids.len() >= 2)
        .expect("a shared email in the book");
    sharers.sort();
    sim.delete_contact(&t.grant_id, &sharers[0], false)
        .await
        .expect("delete the winner");
    // In Zoho, by hand: 10 records deleted, 5 edited; another user's 3 records.
    let records = sim.inspect_org(&org).expect("org")["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for r in records.iter().skip(3).step_by(37).take(10) {
        sim.delete_zoho_record(&org, r["id"].as_str().expect("id"))
            .expect("delete");
    }
    let mut edited = Vec::new();
    for r in records.iter().skip(5).step_by(41).take(5) {
        let id = r["id"].as_str().expect("id").to_owned();
        let Value::Object(f) = json!({"Phone": "+1 555 0199"}) else {
            unreachable!()
        };
        if sim.edit_zoho_record(&org, &id, f).is_ok() {
            edited.push(id);
        }
    }
    let hand: Vec<String> = (0..3)
        .map(|i| sim.create_zoho_record(&org, hand_fields(i)).expect("create"))
        .collect();

    // The dry run: every kind found, nothing changed.
    let before = org_records(&sim, &org);
    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "recon", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    for kind in ["missing", "stale", "crm edited", "orphaned", "not ours"] {
        assert!(drift(&out, kind) > 0, "no `{kind}` found:\n{out}");
    }
    assert_eq!(drift(&out, "not ours"), 3, "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(org_records(&sim, &org), before, "the dry run changed the CRM");

    // The real run.
    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "recon"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fixed:"), "{out}");
    let book = current_book(&sim, &t.grant_id).await;
    let (expected, _) = expected_crm(&book);
    let mut actual = crm_records(&sim, &org);
    let theirs: Vec<Value> = (0..3)
        .map(|i| {
            actual
                .remove(&format!("hand-{i}@elsewhere.test"))
                .expect("the other user's record is still there")
        })
        .collect();
    let missing: Vec<&String> = expected.keys().filter(|e| !actual.contains_key(*e)).collect();
    let orphans: Vec<&String> = actual.keys().filter(|e| !expected.contains_key(*e)).collect();
    assert!(
        missing.is_empty() && orphans.is_empty(),
        "missing {missing:?}, orphans {orphans:?}"
    );
    for (email, want) in &expected {
        assert_eq!(&actual[email], want, "record {email}");
    }
    assert!(
        actual.contains_key(&shared_email),
        "the shared email's record went to the next contact"
    );
    let doc = sim.inspect_org(&org).expect("org");
    for id in &hand {
        let r = doc["records"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == id.as_str())
            .expect("the other user's record");
        assert_eq!(r["api_updates"], 0, "crmsync touched another user's record: {r}");
    }
    assert_eq!(theirs.len(), 3);

    // In sync now: a second run reads the CRM and writes nothing.
    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "recon"]);
    assert_eq!(code, 0, "{out}{err}");
    for kind in ["missing", "stale", "crm edited", "orphaned"] {
        assert_eq!(drift(&out, kind), 0, "`{kind}` after a reconcile:\n{out}");
    }
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    let last = runs.list("recon", 1).await.expect("runs")[0].clone();
    assert_eq!(last.kind, RunKind::Reconcile);
    assert_eq!((last.inserted, last.updated, last.deleted), (0, 0, 0), "{last:?}");
    let pages = actual.len().div_ceil(200) as u64 + 1;
    assert!(
        last.credits <= pages,
        "an in-sync reconcile costs its reads ({pages} pages at most): {last:?}"
    );
}

/// Two schedulers find the same tenant due at once: one run starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_schedulers_start_one_run() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("sched");
    t.contacts = 20;
    let sim = RunningSim::start(
        SimConfig {
            seed: 43,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add_sim_tenant_with(&redis, &key, &sim, &t, &["--reconcile-every", "24h"]);
    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "show", "sched"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"reconcile_every_secs\": 86400"), "{out}");
    // Due now.
    let _: () = redis::cmd("ZADD")
        .arg(crmsync_producer::schedule::due_key("crmsync"))
        .arg(crmsync_queue::now_ms() - 1)
        .arg("sched")
        .query(&mut redis.conn())
        .expect("zadd");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let queue: crmsync_queue::JobQueue<crmsync_producer::BackfillPage> =
        crmsync_queue::JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let racers = (0..4).map(|_| crmsync_producer::schedule::start_due(&conn, "crmsync", &queue, 10));
    let started: usize = futures_util::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("start_due").len())
        .sum();
    assert_eq!(started, 1);
    let runs = RunStore::new(conn.clone(), "crmsync")
        .list("sched", 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].kind, RunKind::Reconcile);
    // The next one is a period away.
    let next = crmsync_producer::schedule::next_due(&conn, "crmsync", "sched")
        .await
        .expect("due")
        .expect("scheduled");
    assert!(next > crmsync_queue::now_ms() + 23 * 3_600_000, "{next}");
}

/// A reconcile whose worker is killed with SIGKILL mid-run is finished by the others: the run
/// completes and the CRM equals the book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_killed_mid_run_resumes_and_ends_correct() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("rckill");
    t.contacts = 3_000;
    t.zoho.daily_credits = 1_000_000;
    let org = t.zoho.org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 47,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add_sim_tenant_with(&redis, &key, &sim, &t, &["--rps", "50"]);
    let args = [
        "--concurrency",
        "4",
        "--page-size",
        "50",
        "--visibility-timeout-secs",
        "3",
    ];
    let mut w1 = crmsync_worker(&redis, &key, "worker-1", &args);
    let _w2 = crmsync_worker(&redis, &key, "worker-2", &args);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "rckill", "--follow"]);
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sim.mutate(
        &t.grant_id,
        MutationPlan {
            count: 300,
            seed: 21,
            deliver: false,
            ..MutationPlan::default()
        },
    )
    .await
    .expect("mutate");

    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "rckill", "--no-wait"]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    crmsync_testkit::eventually(Duration::from_secs(60), "the book to be half read", || async {
        let r = runs.list("rckill", 1).await.ok()?.first()?.clone();
        (r.kind == RunKind::Reconcile && r.pages_done >= 20).then_some(())
    })
    .await;
    crmsync_testkit::signal(w1.pid().expect("pid"), "KILL");
    w1.kill();
    let _w3 = crmsync_worker(&redis, &key, "worker-3", &args);
    let run = crmsync_testkit::eventually(Duration::from_secs(120), "the reconcile to end", || async {
        let r = runs.list("rckill", 1).await.ok()?.first()?.clone();
        (!r.status.is_active()).then_some(r)
    })
    .await;
    assert_eq!(run.status, crmsync_producer::RunStatus::Completed, "{run:?}");
    let book = current_book(&sim, &t.grant_id).await;
    let (expected, _) = expected_crm(&book);
    let actual = crm_records(&sim, &org);
    let missing: Vec<&String> = expected.keys().filter(|e| !actual.contains_key(*e)).collect();
    let orphans: Vec<&String> = actual.keys().filter(|e| !expected.contains_key(*e)).collect();
    assert!(
        missing.is_empty() && orphans.is_empty(),
        "missing {missing:?}, orphans {orphans:?}"
    );
    for (email, want) in &expected {
        assert_eq!(&actual[email], want, "record {email}");
    }
}

/// A Salesforce tenant: silent changes and a Lead converted by a user; the reconcile reads both
/// objects by the external-id field, leaves the org equal to the book (the converted Lead's
/// Contact updated, no new Lead), and a second run writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_reconcile_brings_the_org_back_to_the_book() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = crate::salesforce::sf_tenant("sfrc", 600, 1_000_000);
    let org = t.salesforce.as_ref().expect("sf").org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 49,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    crate::salesforce::add(&redis, &key, &sim, &t, &["--rps", "50"]);
    let _w = crmsync_worker(&redis, &key, "worker-1", &["--concurrency", "4", "--page-size", "100"]);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "sfrc", "--follow"]);
    assert_eq!(code, 0, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sim.mutate(
        &t.grant_id,
        MutationPlan {
            count: 150,
            seed: 23,
            deliver: false,
            ..MutationPlan::default()
        },
    )
    .await
    .expect("mutate");
    let doc = sim.inspect_salesforce(&org).expect("org");
    let lead = doc["leads"].as_array().and_then(|l| l.first()).expect("a Lead")["Id"]
        .as_str()
        .expect("id")
        .to_owned();
    sim.convert_salesforce_lead(&org, &lead).expect("convert");

    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "sfrc"]);
    assert_eq!(code, 0, "{out}{err}");
    let book = current_book(&sim, &t.grant_id).await;
    crate::salesforce::assert_org_equals_book(&sim, &t, &book);
    let (code, out, err) = crmsync_output(&redis, &key, &["reconcile", "sfrc"]);
    assert_eq!(code, 0, "{out}{err}");
    for kind in ["missing", "stale", "crm edited", "orphaned"] {
        assert_eq!(drift(&out, kind), 0, "`{kind}` after a reconcile:\n{out}");
    }
    assert!(out.contains("inserted 0 · updated 0 · deleted 0"), "{out}");
}
