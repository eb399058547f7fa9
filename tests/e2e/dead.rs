//! Operating the fleet's failures with the CLI: dead letters (`crmsync dead`), records Zoho
//! rejected (`crmsync rejected`) and cancelling a backfill (`crmsync cancel`), against real
//! worker processes, Redis and the simulator.

use std::collections::BTreeSet;
use std::time::Duration;

use crmsync_e2e::expected_crm;
use crmsync_producer::{Rejection, RunStatus, RunStore};
use crmsync_queue::JobQueue;
use crmsync_sim::{FaultConfig, RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{RedisServer, eventually};
use serde_json::Value;

use crate::support::{add_sim_tenant, crmsync_output, crmsync_worker};

const SEED: u64 = 11;

fn tenant(name: &str, contacts: usize) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.contacts = contacts;
    t
}

async fn start_sim(tenants: Vec<TenantConfig>, faults: FaultConfig) -> RunningSim {
    let cfg = SimConfig {
        seed: SEED,
        tenants,
        faults,
        ..SimConfig::default()
    };
    RunningSim::start(cfg, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("sim starts")
}

fn runs(redis: &RedisServer) -> RunStore {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    RunStore::new(conn, "crmsync")
}

/// Runs `crmsync <args>` and parses its JSON output (the command must succeed).
fn json(redis: &RedisServer, key: &str, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = crmsync_output(redis, key, args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Emails of the records in a simulated Zoho org.
fn crm_emails(sim: &RunningSim, org: &str) -> BTreeSet<String> {
    sim.inspect_org(org).expect("org")["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["Email"].as_str().map(str::to_owned))
        .collect()
}

/// The simulator's count of Nylas calls of one kind (`list` or `get`) for a grant.
fn nylas_calls(sim: &RunningSim, grant: &str, kind: &str) -> u64 {
    sim.sim().nylas.grants.get(grant).expect("grant").inspect()["calls"][kind]
        .as_u64()
        .unwrap_or(0)
}

/// Three kinds of dead letters: flushes of a tenant whose Zoho refresh token was revoked, the
/// first page of a tenant whose Nylas key is wrong, and garbage in the backfill queue. (A grant
/// the CRM refuses pauses its tenant instead: see the Salesforce and lifecycle tests.) They
/// are listed newest first and filtered by tenant, queue and code; shown in full; refused for
/// retry when retrying cannot work (garbage, a page of a failed run); retried after the fix,
/// which completes the run; and purged selectively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_filtered_shown_retried_after_a_fix_and_purged() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let acme = tenant("acme", 150);
    let initech = tenant("initech", 40);
    let sim = start_sim(vec![acme.clone(), initech.clone()], FaultConfig::default()).await;
    let mut wrong_key = initech.clone();
    wrong_key.nylas_api_key = "nyk-wrong".into();
    add_sim_tenant(&redis, &key, &sim, &acme);
    add_sim_tenant(&redis, &key, &sim, &wrong_key);
    // acme's refresh token is taken away: its flushes cannot build a Zoho client.
    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "set", "acme", "--zoho-refresh-token", ""]);
    assert_eq!(code, 0, "{out}{err}");
    let _w = crmsync_worker(
        &redis,
        &key,
        "worker",
        &[
            "--concurrency",
            "2",
            "--page-size",
            "100",
            "--visibility-timeout-secs",
            "3",
        ],
    );
    let _: String = redis::cmd("XADD")
        .arg("{crmsync:backfill}:stream")
        .arg("*")
        .arg("data")
        .arg(&[0xffu8, 0x00, 0xfe][..])
        .query(&mut redis.conn())
        .expect("xadd garbage");
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "acme", "initech"]);
    assert_eq!(code, 0, "{out}{err}");

    let runs = runs(&redis);
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let writes: JobQueue<Value> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue("crmsync"));
    let backfill: JobQueue<Value> = JobQueue::new(conn, crmsync_producer::backfill_queue("crmsync"));
    eventually(
        Duration::from_secs(60),
        "acme's flushes and initech's page to die",
        || async {
            let a = runs.list("acme", 1).await.ok()?.first()?.clone();
            let i = runs.list("initech", 1).await.ok()?.first()?.clone();
            let w = writes.stats().await.ok()?;
            let b = backfill.stats().await.ok()?;
            (a.status == RunStatus::Draining
                && i.status == RunStatus::Failed
                && w.dead >= 1
                && w.pending + w.in_flight + w.delayed == 0
                && b.dead == 2)
                .then_some(())
        },
    )
    .await;

    // Nothing else is coming: the last page's drain flush is enqueued just after the run
    // drains, and dies within moments.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The table: every kind, no secret.
    let (code, table, err) = crmsync_output(&redis, &key, &["dead", "list"]);
    assert_eq!(code, 0, "{table}{err}");
    for want in [
        "DEAD ID",
        "QUEUE",
        "TENANT",
        "ATTEMPTS",
        "CODE",
        "REASON",
        "TENANT",
        "NYLAS_UNAUTHORIZED",
        "UNDECODABLE",
        "acme",
        "initech",
    ] {
        assert!(table.contains(want), "`{want}` missing from:\n{table}");
    }
    for secret in [acme.zoho.refresh_token.as_str(), "nyk-wrong", "cs-acme", key.as_str()] {
        assert!(!table.contains(secret), "secret printed:\n{table}");
    }

    // Newest first, across both queues.
    let all = json(&redis, &key, &["dead", "list", "--json"]);
    let ids: Vec<(u64, u64)> = all
        .iter()
        .map(|d| {
            let (ms, seq) = field(d, "dead_id").split_once('-').expect("entry id");
            (ms.parse().expect("ms"), seq.parse().expect("seq"))
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");

    let acme_dead = json(&redis, &key, &["dead", "list", "--json", "--tenant", "acme"]);
    assert!(!acme_dead.is_empty());
    for d in &acme_dead {
        assert_eq!(
            (field(d, "queue"), field(d, "tenant"), field(d, "code")),
            ("writes", "acme", "TENANT"),
            "{d}"
        );
    }
    assert_eq!(all.len(), acme_dead.len() + 2, "{all:?}");
    let backfill_dead = json(&redis, &key, &["dead", "list", "--json", "--queue", "backfill"]);
    let codes: BTreeSet<&str> = backfill_dead.iter().map(|d| field(d, "code")).collect();
    assert_eq!(codes, BTreeSet::from(["NYLAS_UNAUTHORIZED", "UNDECODABLE"]));
    let garbage = json(&redis, &key, &["dead", "list", "--json", "--code", "undecodable"]);
    assert_eq!(garbage.len(), 1);
    assert!(garbage[0]["tenant"].is_null() && garbage[0]["job_id"].is_null());
    let garbage_id = field(&garbage[0], "dead_id").to_owned();
    let page = json(
        &redis,
        &key,
        &["dead", "list", "--json", "--code", "NYLAS_UNAUTHORIZED"],
    );
    assert_eq!(page.len(), 1);
    let page_id = field(&page[0], "dead_id").to_owned();
    let newest = json(&redis, &key, &["dead", "list", "--json", "--limit", "1"]);
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0]["dead_id"], all[0]["dead_id"]);
    let (code, _, err) = crmsync_output(&redis, &key, &["dead", "list", "--code", "BOGUS"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown error code `BOGUS`"), "{err}");

    // Show: everything, the payload pretty-printed.
    let (code, shown, err) = crmsync_output(&redis, &key, &["dead", "show", &page_id]);
    assert_eq!(code, 0, "{shown}{err}");
    for want in [
        "in queue backfill",
        "NYLAS_UNAUTHORIZED",
        "attempts   1 of 8",
        "nylas: Nylas refused the credentials",
        "\"tenant\": \"initech\"",
        "\"page\": 0",
    ] {
        assert!(shown.contains(want), "`{want}` missing from:\n{shown}");
    }
    assert!(!shown.contains("nyk-wrong"), "{shown}");
    let (code, shown, _) = crmsync_output(&redis, &key, &["dead", "show", &garbage_id]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("cannot be retried, only purged") && shown.contains("data"),
        "{shown}"
    );
    let (code, _, err) = crmsync_output(&redis, &key, &["dead", "show", "1-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter `1-1`"), "{err}");

    // What cannot work is refused and left in place: garbage, and a page of a failed run.
    let (code, out, err) = crmsync_output(&redis, &key, &["dead", "retry", &garbage_id]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("not retried {garbage_id}: not a job: entry has no `id` field")),
        "{out}"
    );
    let (code, out, err) = crmsync_output(&redis, &key, &["dead", "retry", "--all", "--tenant", "initech"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("is failed: pages of an ended run finish without reading")
            && out.contains("crmsync backfill initech"),
        "{out}"
    );
    assert_eq!(
        json(&redis, &key, &["dead", "list", "--json", "--queue", "backfill"]).len(),
        2,
        "both stay"
    );

    // Fixed: the retried flushes resume their batches, and the run completes.
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &[
            "tenant",
            "set",
            "acme",
            "--zoho-refresh-token",
            &acme.zoho.refresh_token,
            "--same-org",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = crmsync_output(&redis, &key, &["dead", "retry", "--all", "--tenant", "acme"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{} dead letter(s) retried", acme_dead.len())),
        "{out}"
    );
    let run = eventually(Duration::from_secs(60), "acme's run to complete", || async {
        let r = runs.list("acme", 1).await.ok()?.first()?.clone();
        (r.status == RunStatus::Completed).then_some(r)
    })
    .await;
    let (expected, _) = expected_crm(&crmsync_sim::address_book(&acme, SEED));
    assert_eq!(
        crm_emails(&sim, &acme.zoho.org_id),
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "every record written once fixed"
    );
    assert_eq!(run.inserted, expected.len() as u64, "{run:?}");
    assert!(json(&redis, &key, &["dead", "list", "--json", "--tenant", "acme"]).is_empty());

    // Purge: --all needs --yes; only the selected go.
    let (code, _, err) = crmsync_output(&redis, &key, &["dead", "purge", "--all", "--code", "undecodable"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &["dead", "purge", "--all", "--code", "undecodable", "--yes"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 dead letter(s) purged"), "{out}");
    let left = json(&redis, &key, &["dead", "list", "--json"]);
    assert_eq!(
        left.iter().map(|d| field(d, "dead_id")).collect::<Vec<_>>(),
        vec![page_id.as_str()]
    );
    let (code, out, err) = crmsync_output(&redis, &key, &["dead", "purge", &page_id, "1-1"]);
    assert_eq!(code, 1, "a named letter that does not exist is an error: {out}{err}");
    assert!(
        out.contains("1 dead letter(s) purged") && out.contains("not purged 1-1: no such dead letter"),
        "{out}"
    );
    assert!(json(&redis, &key, &["dead", "list", "--json"]).is_empty());
}

/// Records Zoho rejected are listed per tenant with the contact and the reason; a retry puts
/// the contacts into the tenant's refresh set and schedules a flush, which re-reads them from
/// Nylas and writes them; the retried rejections are forgotten, the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_listed_and_retried_through_a_nylas_re_read() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = tenant("acme", 60);
    let sim = start_sim(vec![t.clone()], FaultConfig::default()).await;
    add_sim_tenant(&redis, &key, &sim, &t);

    // Two contacts of the book whose email no other contact has.
    let (expected, _) = expected_crm(&crmsync_sim::address_book(&t, SEED));
    let book = crmsync_sim::address_book(&t, SEED);
    let mut picked = Vec::new();
    for c in &book {
        let contact = crmsync_nylas::parse_contact(c).expect("contact");
        if let crmsync_domain::MapOutcome::Mapped { record, .. } =
            crmsync_domain::map_contact(&contact, &crmsync_sink::zoho::LIMITS)
        {
            let sharing = book
                .iter()
                .filter(|o| {
                    o["emails"].as_array().into_iter().flatten().any(|e| {
                        e["email"]
                            .as_str()
                            .is_some_and(|s| s.trim().eq_ignore_ascii_case(&record.email))
                    })
                })
                .count();
            if sharing == 1 && expected.contains_key(&record.email) {
                picked.push((contact.id.clone(), record.email.clone()));
            }
        }
        if picked.len() == 2 {
            break;
        }
    }
    assert_eq!(picked.len(), 2, "the book has contacts with their own email");
    let (a, a_email) = picked[0].clone();
    let (b, b_email) = picked[1].clone();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let dest = crmsync_tenants::TenantKeys::new("crmsync", "acme").dest(
        &crmsync_e2e::dest_of(&conn, "crmsync", "acme")
            .await
            .expect("the tenant's destination"),
    );
    // Rejected records as a flush records them.
    let add_rejection = |r: Rejection| {
        let _: String = redis::cmd("XADD")
            .arg(dest.rejected())
            .arg("*")
            .arg("run")
            .arg(&r.run_id)
            .arg("contact")
            .arg(&r.contact_id)
            .arg("email")
            .arg(&r.email)
            .arg("code")
            .arg(&r.code)
            .arg("field")
            .arg(r.field.as_deref().unwrap_or(""))
            .arg("message")
            .arg(&r.message)
            .query(&mut redis.conn())
            .expect("XADD");
    };
    let rejection = |cid: &str, email: &str, code: &str, field: &str| Rejection {
        run_id: "feed".into(),
        contact_id: cid.into(),
        email: email.into(),
        code: code.into(),
        field: Some(field.into()),
        message: "invalid data".into(),
    };
    add_rejection(rejection(&a, &a_email, "INVALID_DATA", "Email"));
    add_rejection(rejection(&b, &b_email, "MANDATORY_NOT_FOUND", "Last_Name"));

    let (code, table, err) = crmsync_output(&redis, &key, &["rejected", "list", "acme"]);
    assert_eq!(code, 0, "{table}{err}");
    for want in [
        "CONTACT",
        "CODE",
        "MESSAGE",
        a.as_str(),
        b.as_str(),
        "INVALID_DATA",
        "MANDATORY_NOT_FOUND",
        "Last_Name",
    ] {
        assert!(table.contains(want), "`{want}` missing from:\n{table}");
    }
    let listed = json(&redis, &key, &["rejected", "list", "acme", "--json"]);
    assert_eq!(
        listed.iter().map(|r| field(r, "contact_id")).collect::<Vec<_>>(),
        vec![b.as_str(), a.as_str()],
        "newest first"
    );
    let only = json(
        &redis,
        &key,
        &["rejected", "list", "acme", "--json", "--code", "invalid_data"],
    );
    assert_eq!(only.len(), 1);
    assert_eq!(
        (field(&only[0], "contact_id"), field(&only[0], "email")),
        (a.as_str(), a_email.as_str())
    );
    let (code, _, err) = crmsync_output(&redis, &key, &["rejected", "list", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant `nobody`"), "{err}");
    let (code, _, _) = crmsync_output(&redis, &key, &["rejected", "retry", "acme"]);
    assert_eq!(code, 2, "a retry says which records");

    // Retry by code, before any worker runs: the contact waits to be re-read, a flush waits.
    let (code, out, err) = crmsync_output(&redis, &key, &["rejected", "retry", "acme", "--code", "INVALID_DATA"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&a) && !out.contains(&b), "{out}");
    let refresh: Vec<String> = redis::cmd("SMEMBERS")
        .arg(dest.refresh())
        .query(&mut redis.conn())
        .expect("SMEMBERS");
    assert_eq!(refresh, vec![a.clone()]);
    let writes: JobQueue<Value> = JobQueue::new(conn, crmsync_producer::writes_queue("crmsync"));
    writes.ensure_group().await.expect("group");
    assert_eq!(writes.stats().await.expect("stats").pending, 1, "a flush is scheduled");
    let left = json(&redis, &key, &["rejected", "list", "acme", "--json"]);
    assert_eq!(
        left.iter().map(|r| field(r, "contact_id")).collect::<Vec<_>>(),
        vec![b.as_str()]
    );
    assert_eq!(nylas_calls(&sim, &t.grant_id, "get"), 0);

    // A worker re-reads the contact from Nylas and writes it.
    let _w = crmsync_worker(&redis, &key, "worker", &["--concurrency", "2"]);
    eventually(Duration::from_secs(30), "the contact re-read and written", || async {
        (nylas_calls(&sim, &t.grant_id, "get") == 1 && crm_emails(&sim, &t.zoho.org_id).contains(&a_email))
            .then_some(())
    })
    .await;
    assert_eq!(
        crm_emails(&sim, &t.zoho.org_id),
        BTreeSet::from([a_email.clone()]),
        "only the retried contact"
    );

    // By contact id: an id without a rejected record is an error, the others are retried.
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &["rejected", "retry", "acme", "--contact", &b, "--contact", "nope"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&b), "{out}");
    assert!(err.contains("no rejected record for contact(s) nope"), "{err}");
    eventually(Duration::from_secs(30), "the second contact written", || async {
        crm_emails(&sim, &t.zoho.org_id).contains(&b_email).then_some(())
    })
    .await;
    assert_eq!(nylas_calls(&sim, &t.grant_id, "get"), 2);
    assert!(json(&redis, &key, &["rejected", "list", "acme", "--json"]).is_empty());
}

/// Cancelling a running backfill of a large address book: the run is cancelled, its tenant is
/// free for a new run at once, no page job reads from Nylas any more, and what the run read is
/// still written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_backfill_and_frees_the_tenant() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = tenant("acme", 20_000);
    // Some latency per request, so 400 pages take long enough to cancel midway.
    let sim = start_sim(
        vec![t.clone()],
        FaultConfig {
            latency_ms: [20, 40],
            ..FaultConfig::default()
        },
    )
    .await;
    add_sim_tenant(&redis, &key, &sim, &t);
    let _w = crmsync_worker(
        &redis,
        &key,
        "worker",
        &[
            "--concurrency",
            "4",
            "--page-size",
            "50",
            "--visibility-timeout-secs",
            "3",
        ],
    );
    let (code, _, err) = crmsync_output(&redis, &key, &["cancel", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no run `nope`"), "{err}");

    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "acme"]);
    assert_eq!(code, 0, "{out}{err}");
    let runs = runs(&redis);
    let run = runs.active("acme").await.expect("active").expect("a run");
    eventually(Duration::from_secs(30), "a few pages read", || async {
        (runs.get("acme", &run.id).await.ok()?.pages_done >= 5).then_some(())
    })
    .await;

    let (code, out, err) = crmsync_output(&redis, &key, &["cancel", &run.id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("run {} of tenant `acme` cancelled after", run.id))
            && out.contains("finish without reading"),
        "{out}"
    );
    let reads_at_cancel = nylas_calls(&sim, &t.grant_id, "list");
    let cancelled = runs.get("acme", &run.id).await.expect("run");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("cancelled by an operator"));
    assert!(
        runs.active("acme").await.expect("active").is_none(),
        "the tenant is free"
    );

    // At most the page that was already reading finishes its read; then reading stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = nylas_calls(&sim, &t.grant_id, "list");
    assert!(
        reads <= reads_at_cancel + 1,
        "{reads} reads, {reads_at_cancel} at cancel"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        nylas_calls(&sim, &t.grant_id, "list"),
        reads,
        "no page job keeps reading"
    );
    assert!(reads < 400, "the run was cancelled midway ({reads} of 400 pages)");
    let backfill: JobQueue<Value> = JobQueue::new(
        crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn"),
        crmsync_producer::backfill_queue("crmsync"),
    );
    let s = backfill.stats().await.expect("stats");
    assert_eq!((s.pending, s.in_flight, s.delayed, s.dead), (0, 0, 0, 0), "{s:?}");

    // What it read is written.
    let done = eventually(Duration::from_secs(60), "the run's records written", || async {
        let buffered: Option<i64> = redis::cmd("GET")
            .arg(format!("{{crmsync:t:acme}}:run:{}:buffered", run.id))
            .query(&mut redis.conn())
            .ok()?;
        let r = runs.get("acme", &run.id).await.ok()?;
        (buffered.unwrap_or(0) == 0 && r.inserted > 0).then_some(r)
    })
    .await;
    assert_eq!(done.status, RunStatus::Cancelled, "writing does not revive the run");
    assert_eq!(crm_emails(&sim, &t.zoho.org_id).len() as u64, done.inserted, "{done:?}");

    // The tenant takes a new run; cancelling the old one again changes nothing.
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "acme"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = runs.active("acme").await.expect("active").expect("a new run");
    assert_ne!(second.id, run.id);
    let (code, out, _) = crmsync_output(&redis, &key, &["cancel", &run.id]);
    assert_eq!(code, 0);
    assert!(out.contains("has already ended (cancelled)"), "{out}");
    let (code, out, err) = crmsync_output(&redis, &key, &["cancel", &second.id]);
    assert_eq!(code, 0, "{out}{err}");
}
