//! A tenant's life after its first backfill: re-pointed to another org, removed and added
//! again, and contacts whose ids hold characters that break naive formats. Sync state and
//! tokens belong to the destination they describe, so none of these reuse the old one's.

use std::time::Duration;

use crmsync_e2e::{crm_records, expected_crm};
use crmsync_producer::{RunStatus, RunStore};
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{RedisServer, eventually};
use serde_json::{Value, json};

use crate::support::{
    add_sim_tenant, add_sim_tenant_with, crmsync_output, crmsync_worker, webhook_server_on, webhook_sim,
};

const SEED: u64 = 31;

async fn sim(tenants: Vec<TenantConfig>) -> RunningSim {
    RunningSim::start(
        SimConfig {
            seed: SEED,
            tenants,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim")
}

async fn backfill_and_wait(redis: &RedisServer, key: &str, tenant: &str) -> crmsync_producer::Run {
    let (code, out, err) = crmsync_output(redis, key, &["backfill", tenant]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    eventually(Duration::from_secs(90), "the run to end", || async {
        let r = runs.list(tenant, 1).await.ok()?.first()?.clone();
        (!r.status.is_active()).then_some(r)
    })
    .await
}

/// Writes (upserts, updates, deletes) an org has served: what "no write" is measured by.
fn writes(sim: &RunningSim, org: &str) -> u64 {
    let o = sim.inspect_org(org).expect("org");
    ["upsert", "update", "delete"]
        .iter()
        .map(|k| o["calls"][k].as_u64().unwrap_or(0))
        .sum()
}

/// Every key under the tenant's hash tag.
fn tenant_keys(redis: &RedisServer, tenant: &str) -> Vec<String> {
    let mut c = redis.conn();
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{crmsync:t:{tenant}}}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .expect("SCAN");
        out.extend(keys);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

fn assert_org_holds_the_book(sim: &RunningSim, org: &str, book_of: &TenantConfig) {
    let (expected, _) = expected_crm(&crmsync_sim::address_book(book_of, SEED));
    let actual = crm_records(sim, org);
    assert_eq!(
        actual.len(),
        expected.len(),
        "{org}: one record per email, none missing"
    );
    for (email, want) in &expected {
        assert_eq!(actual.get(email), Some(want), "{org}: record {email}");
    }
}

/// A tenant pointed at another org mid-life (another client and grant): the next backfill
/// writes the whole book there, though the old org already held every record unchanged, and
/// the old org receives no write after the re-point; the old destination's state is deleted
/// in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repointed_tenant_writes_its_whole_book_to_the_new_org_and_nothing_to_the_old() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut first = TenantConfig::named("life");
    first.contacts = 700;
    // The second org: only its Zoho side is used (its own book stays empty).
    let mut second = TenantConfig::named("other");
    second.contacts = 0;
    let sim = sim(vec![first.clone(), second.clone()]).await;
    add_sim_tenant(&redis, &key, &sim, &first);
    let _w = crmsync_worker(&redis, &key, "worker", &["--concurrency", "4"]);

    assert_eq!(
        backfill_and_wait(&redis, &key, "life").await.status,
        RunStatus::Completed
    );
    assert_org_holds_the_book(&sim, &first.zoho.org_id, &first);
    let old_dest = tenant_keys(&redis, "life")
        .iter()
        .find_map(|k| k.split(":d:").nth(1).map(|r| r[..12].to_owned()))
        .expect("a destination's keys");

    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &[
            "tenant",
            "set",
            "life",
            "--zoho-client-id",
            &second.zoho.client_id,
            "--zoho-client-secret",
            &second.zoho.client_secret,
            "--zoho-refresh-token",
            &second.zoho.refresh_token,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new destination"), "{out}");
    let old_writes = writes(&sim, &first.zoho.org_id);

    let run = backfill_and_wait(&redis, &key, "life").await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.unchanged, 0, "nothing of the old org's state is used: {run:?}");
    assert_org_holds_the_book(&sim, &second.zoho.org_id, &first);
    assert_eq!(
        writes(&sim, &first.zoho.org_id),
        old_writes,
        "the first org receives no write after the re-point"
    );
    eventually(
        Duration::from_secs(30),
        "the old destination's state deleted",
        || async {
            let left: Vec<String> = tenant_keys(&redis, "life")
                .into_iter()
                .filter(|k| k.contains(&format!(":d:{old_dest}:")))
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
}

/// `tenant remove` deletes every key of the tenant; the same id added again against a fresh,
/// empty org is a new tenant: the whole book is written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_and_re_added_tenant_starts_from_nothing() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("again");
    t.contacts = 500;
    let mut fresh = TenantConfig::named("fresh");
    fresh.contacts = 0;
    let sim = sim(vec![t.clone(), fresh.clone()]).await;
    add_sim_tenant(&redis, &key, &sim, &t);
    let mut w = crmsync_worker(&redis, &key, "worker", &["--concurrency", "4"]);
    assert_eq!(
        backfill_and_wait(&redis, &key, "again").await.status,
        RunStatus::Completed
    );
    assert!(!tenant_keys(&redis, "again").is_empty());

    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "remove", "again", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        tenant_keys(&redis, "again"),
        Vec::<String>::new(),
        "no key of the tenant left"
    );
    // A while later (any job of it still queued has run and found no tenant), still none.
    w.terminate(Duration::from_secs(10));
    assert_eq!(tenant_keys(&redis, "again"), Vec::<String>::new());
    let _w2 = crmsync_worker(&redis, &key, "worker-2", &["--concurrency", "4"]);

    // The same id, the same book, a fresh org.
    let mut readded = t.clone();
    readded.zoho = fresh.zoho.clone();
    add_sim_tenant(&redis, &key, &sim, &readded);
    let run = backfill_and_wait(&redis, &key, "again").await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.unchanged, 0, "{run:?}");
    assert_org_holds_the_book(&sim, &fresh.zoho.org_id, &t);
}

/// With a backfill running, `tenant remove` without a terminal to ask on refuses (bad usage,
/// 2) and says the run would be cancelled; with `--yes` it cancels the run first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_tenant_with_a_running_backfill_asks_first() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = TenantConfig::named("busy");
    let sim = sim(vec![t.clone()]).await;
    add_sim_tenant(&redis, &key, &sim, &t);
    // No worker: the run stays active.
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "busy"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "remove", "busy"]);
    assert_eq!(code, 2);
    assert!(err.contains("has a backfill running") && err.contains("--yes"), "{err}");
    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "remove", "busy", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled") && out.contains("removed"), "{out}");
    assert_eq!(tenant_keys(&redis, "busy"), Vec::<String>::new());
}

/// Contact ids holding `"`, `\`, a tab, a newline and non-ASCII are just ids: such contacts
/// are backfilled, change (one of them its email) and are deleted over signed webhooks, each
/// landing in the CRM as the book says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_with_odd_ids_sync_change_and_delete() {
    const SECRET: &str = "whsec-odd-ids";
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let port = crmsync_testkit::free_port();
    let mut t = TenantConfig::named("odd");
    t.contacts = 50;
    let sim = webhook_sim(SEED, vec![t.clone()], port, SECRET).await;
    let odd = ["q\"uote", "back\\slash", "tab\there", "new\nline", "ünï-côdé ✓"];
    let contact = |i: usize, id: &str, email: &str, last: &str| -> Value {
        json!({
            "id": id,
            "given_name": format!("Odd{i}"),
            "surname": last,
            "emails": [{"email": email, "type": "work"}],
            "phone_numbers": [],
        })
    };
    for (i, id) in odd.iter().enumerate() {
        sim.put_contact(
            &t.grant_id,
            contact(i, id, &format!("odd{i}@example.com"), "First"),
            false,
        )
        .await
        .expect("put");
    }
    add_sim_tenant_with(&redis, &key, &sim, &t, &["--webhook-secret", SECRET]);
    let _w = crmsync_worker(&redis, &key, "worker", &["--concurrency", "4"]);
    let (_hook, _) = webhook_server_on(&redis, &key, port, &["--flush-window-ms", "200"]).await;
    assert_eq!(
        backfill_and_wait(&redis, &key, "odd").await.status,
        RunStatus::Completed
    );
    let records = crm_records(&sim, &t.zoho.org_id);
    for i in 0..odd.len() {
        assert_eq!(
            records[&format!("odd{i}@example.com")]["Last_Name"],
            "First",
            "odd contact {i} backfilled"
        );
    }
    // Events are stamped in whole seconds: keep them apart from the backfill's reads.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // Each changes its name; the first also its email; then the last two are deleted.
    for (i, id) in odd.iter().enumerate() {
        let email = if i == 0 {
            "moved0@example.com".to_owned()
        } else {
            format!("odd{i}@example.com")
        };
        let r = sim
            .put_contact(&t.grant_id, contact(i, id, &email, "Second"), true)
            .await
            .expect("put");
        assert_eq!(r.status, Some(200), "{r:?}");
    }
    for id in &odd[3..] {
        let r = sim.delete_contact(&t.grant_id, id, true).await.expect("delete");
        assert_eq!(r.status, Some(200), "{r:?}");
    }
    eventually(Duration::from_secs(30), "the changes written", || async {
        let r = crm_records(&sim, &t.zoho.org_id);
        let moved = r.get("moved0@example.com").is_some_and(|v| v["Last_Name"] == "Second");
        let old_gone = !r.contains_key("odd0@example.com");
        let changed = (1..3).all(|i| {
            r.get(&format!("odd{i}@example.com"))
                .is_some_and(|v| v["Last_Name"] == "Second")
        });
        let deleted = (3..5).all(|i| !r.contains_key(&format!("odd{i}@example.com")));
        (moved && old_gone && changed && deleted).then_some(())
    })
    .await;
    // And the rest of the book is untouched: the CRM equals the book.
    let book: Vec<Value> = reqwest::get(format!("{}/_sim/nylas/{}/contacts", sim.base_url(), t.grant_id))
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    let (expected, _) = expected_crm(&book);
    assert_eq!(crm_records(&sim, &t.zoho.org_id), expected);
}
