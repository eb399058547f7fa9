//! The main job end to end: `crmsync backfill` through worker processes into the simulated
//! Zoho CRM, with a worker killed mid-run.

use std::collections::BTreeMap;
use std::time::Duration;

use crmsync_e2e::expected_crm;
use crmsync_producer::{RunStatus, RunStore};
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{RedisServer, eventually};
use serde_json::Value;

use crate::support::{add_sim_tenant, crmsync_output, crmsync_worker};

fn tenant(name: &str, region: &str, contacts: usize) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.nylas_region = region.into();
    t.zoho.dc = region.into();
    t.contacts = contacts;
    t
}

async fn start_sim(tenants: Vec<TenantConfig>) -> RunningSim {
    let cfg = SimConfig {
        seed: 7,
        tenants,
        ..SimConfig::default()
    };
    RunningSim::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim starts")
}

fn crm_records(sim: &RunningSim, org: &str) -> Vec<Value> {
    sim.inspect_org(org).expect("org")["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// 3 tenants across 2 data centers, 5,300 messy contacts, 2 worker processes, one killed with
/// SIGKILL mid-run and restarted: every contact with a usable email lands exactly once with the
/// right fields, and every other one is accounted for in its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_lands_every_contact_exactly_once_despite_a_killed_worker() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let tenants = vec![
        tenant("north", "us", 2_000),
        tenant("south", "eu", 1_800),
        tenant("east", "us", 1_500),
    ];
    let sim = start_sim(tenants.clone()).await;
    for t in &tenants {
        add_sim_tenant(&redis, &key, &sim, t);
    }
    let args = [
        "--concurrency",
        "3",
        "--visibility-timeout-secs",
        "3",
        "--page-size",
        "100",
    ];
    let mut w1 = crmsync_worker(&redis, &key, "worker-1", &args);
    let _w2 = crmsync_worker(&redis, &key, "worker-2", &args);

    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "north", "south", "east"]);
    assert_eq!(code, 0, "{out}{err}");

    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    eventually(Duration::from_secs(60), "some pages done", || async {
        let mut done = 0;
        for t in &tenants {
            done += runs.list(&t.name, 1).await.ok()?.first()?.pages_done;
        }
        (done >= 4).then_some(())
    })
    .await;
    w1.kill();
    let _w1b = crmsync_worker(&redis, &key, "worker-1-restarted", &args);

    let finished = eventually(Duration::from_secs(120), "all runs to end", || async {
        let mut all = Vec::new();
        for t in &tenants {
            let r = runs.list(&t.name, 1).await.ok()?.first()?.clone();
            if r.status.is_active() {
                return None;
            }
            all.push(r);
        }
        Some(all)
    })
    .await;

    for (t, run) in tenants.iter().zip(&finished) {
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        let book = crmsync_sim::address_book(t, 7);
        let (expected, skipped) = expected_crm(&book);
        assert_eq!(
            run.contacts_read,
            book.len() as u64,
            "every contact read once in the counts"
        );
        assert_eq!(run.skipped, skipped, "every skip accounted for with its reason");
        assert_eq!(run.failed_total(), 0, "no record rejected: {:?}", run.failed);
        let shared = skipped.get("shared_email").copied().unwrap_or(0);
        assert_eq!(
            run.mapped + run.skipped_total() - shared,
            run.contacts_read,
            "mapped or skipped, each once"
        );
        assert!(
            run.inserted + run.updated >= expected.len() as u64,
            "every record written"
        );
        assert!(
            run.skipped.get("shared_email").copied().unwrap_or(0) > 0,
            "the book has shared emails"
        );
        assert!(
            run.skipped.get("no_email").copied().unwrap_or(0) > 0,
            "the book has contacts without email"
        );

        let records = crm_records(&sim, &t.zoho.org_id);
        let mut actual: BTreeMap<String, Value> = BTreeMap::new();
        for r in &records {
            let email = r["Email"].as_str().expect("email").to_owned();
            let fields: Value = ["First_Name", "Last_Name", "Email", "Phone", "Account_Name", "Title"]
                .iter()
                .map(|f| (f.to_string(), r.get(*f).cloned().unwrap_or(Value::Null)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            assert!(
                actual.insert(email.clone(), fields).is_none(),
                "duplicate CRM record for {email}"
            );
        }
        assert_eq!(actual.len(), expected.len(), "tenant {}: record count", t.name);
        for (email, want) in &expected {
            assert_eq!(actual.get(email), Some(want), "tenant {}: record {email}", t.name);
        }
        let org = sim.inspect_org(&t.zoho.org_id).expect("org");
        assert_eq!(org["workflows_triggered"], 0, "upserts run no workflows");
    }
}

/// Only one backfill per tenant at a time: a second is refused with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_backfill_of_a_running_tenant_is_refused() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let sim = start_sim(vec![tenant("solo", "us", 10)]).await;
    add_sim_tenant(&redis, &key, &sim, &tenant("solo", "us", 10));
    let (code, out, _) = crmsync_output(&redis, &key, &["backfill", "solo"]);
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = crmsync_output(&redis, &key, &["backfill", "solo"]);
    assert_eq!(code, 1);
    assert!(err.contains("tenant `solo` already has backfill run solo-"), "{err}");
    let (code, _, err) = crmsync_output(&redis, &key, &["backfill", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant `nobody`"), "{err}");
}

async fn backfill_and_wait(redis: &RedisServer, key: &str, tenant: &str, extra: &[&str]) -> crmsync_producer::Run {
    let mut args = vec!["backfill", tenant];
    args.extend(extra);
    let (code, out, err) = crmsync_output(redis, key, &args);
    assert_eq!(code, 0, "{out}{err}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    eventually(Duration::from_secs(60), "the run to end", || async {
        let r = runs.list(tenant, 1).await.ok()?.first()?.clone();
        (!r.status.is_active()).then_some(r)
    })
    .await
}

/// A second backfill of an unchanged address book costs no Zoho credit: every record is what
/// was last written. `--force` writes them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebackfill_of_an_unchanged_address_book_costs_zero_credits() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = tenant("again", "us", 1_200);
    let sim = start_sim(vec![t.clone()]).await;
    add_sim_tenant(&redis, &key, &sim, &t);
    let _w = crmsync_worker(&redis, &key, "worker", &["--concurrency", "4"]);

    let first = backfill_and_wait(&redis, &key, "again", &[]).await;
    assert_eq!(first.status, RunStatus::Completed);
    let spent = sim.inspect_org(&t.zoho.org_id).expect("org")["credits_used_total"]
        .as_u64()
        .expect("credits");
    assert!(spent > 0);

    let second = backfill_and_wait(&redis, &key, "again", &[]).await;
    assert_eq!(second.status, RunStatus::Completed);
    let org = sim.inspect_org(&t.zoho.org_id).expect("org");
    assert_eq!(
        org["credits_used_total"].as_u64(),
        Some(spent),
        "an unchanged book costs nothing"
    );
    assert_eq!((second.inserted, second.updated, second.credits), (0, 0, 0));
    assert_eq!(
        second.unchanged, first.inserted,
        "every record (one per email) was unchanged"
    );

    let forced = backfill_and_wait(&redis, &key, "again", &["--force"]).await;
    assert_eq!(forced.status, RunStatus::Completed);
    assert!(
        forced.updated > 0 && forced.credits > 0,
        "--force writes again: {forced:?}"
    );
    assert_eq!(
        crm_records(&sim, &t.zoho.org_id).len() as u64,
        first.inserted,
        "and still no duplicate"
    );
}
