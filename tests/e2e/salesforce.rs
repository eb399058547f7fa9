//! A Salesforce tenant through the same fleet: backfill and change feed into Contacts and Leads,
//! with faults, expired sessions and a killed worker; the org's daily request limit shared with
//! another integration.

use std::time::Duration;

use crmsync_e2e::{expected_salesforce, salesforce_records, sim_salesforce_tenant_add_args};
use crmsync_producer::{RunStatus, RunStore};
use crmsync_sim::{FaultConfig, MutationPlan, RunningSim, SalesforceConfig, SimConfig, TenantConfig, WebhookConfig};
use crmsync_testkit::{RedisServer, eventually, signal};
use serde_json::Value;

use crate::changes::{current_book, settled};
use crate::support::{crmsync, crmsync_output, crmsync_worker, webhook_server_on};

const SECRET: &str = "whsec-sf-e2e";

pub(crate) fn sf_tenant(name: &str, contacts: usize, daily_requests: u64) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.contacts = contacts;
    let mut sf = SalesforceConfig::named(name);
    sf.daily_requests = daily_requests;
    t.salesforce = Some(sf);
    t
}

pub(crate) fn add(redis: &RedisServer, key: &str, sim: &RunningSim, t: &TenantConfig, extra: &[&str]) {
    let mut args = sim_salesforce_tenant_add_args(sim, t);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = crmsync_output(redis, key, &args);
    assert_eq!(code, 0, "tenant add failed: {out} {err}");
}

async fn wait_for_run(redis: &RedisServer, tenant: &str, timeout: Duration) {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    let run = eventually(timeout, "the run to end", || async {
        let r = runs.list(tenant, 1).await.ok()?.first()?.clone();
        (!r.status.is_active()).then_some(r)
    })
    .await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
}

/// The org holds exactly one live record per contact with a usable email, with the book's
/// fields: nothing lost, nothing duplicated (a second live record of one external id panics).
pub(crate) fn assert_org_equals_book(sim: &RunningSim, t: &TenantConfig, book: &[Value]) -> crmsync_e2e::SfCounts {
    let sf = t.salesforce.as_ref().expect("sf");
    let (expected, _) = expected_salesforce(book);
    let (actual, counts) = salesforce_records(sim, &sf.org_id, &sf.ext_id_field);
    let missing: Vec<&String> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<&String> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing {missing:?}, {} not in the book {extra:?}",
        missing.len(),
        extra.len()
    );
    for (id, want) in &expected {
        assert_eq!(&actual[id], want, "record of contact {id}");
    }
    counts
}

/// Backfill with injected 5xx and timeouts, every session ended mid-run and a worker killed
/// with SIGKILL, then 300 webhook changes: the org equals the book, Contacts under the
/// Accounts whose domains match and Leads for the rest, nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_backfill_and_feed_survive_faults_expired_sessions_and_a_killed_worker() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let port = crmsync_testkit::free_port();
    let t = sf_tenant("sfco", 2_000, 1_000_000);
    let org = t.salesforce.as_ref().expect("sf").org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 31,
            tenants: vec![t.clone()],
            webhooks: Some(WebhookConfig::new(
                format!("http://127.0.0.1:{port}/webhooks/nylas"),
                SECRET,
            )),
            faults: FaultConfig {
                sf_5xx_rate: 0.05,
                sf_timeout_rate: 0.02,
                timeout_ms: 300,
                ..FaultConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add(&redis, &key, &sim, &t, &["--webhook-secret", SECRET, "--rps", "50"]);
    let worker_args = [
        "--concurrency",
        "4",
        "--page-size",
        "50",
        "--visibility-timeout-secs",
        "5",
    ];
    let mut w1 = crmsync_worker(&redis, &key, "worker-1", &worker_args);
    let _w2 = crmsync_worker(&redis, &key, "worker-2", &worker_args);
    let (_hook, _) = webhook_server_on(&redis, &key, port, &["--flush-window-ms", "500"]).await;

    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "sfco"]);
    assert_eq!(code, 0, "{out}{err}");
    // Once records are landing: every session ends, and a worker dies mid-flight.
    eventually(Duration::from_secs(60), "records to land", || async {
        let doc = sim.inspect_salesforce(&org)?;
        (doc["records_upserted"].as_u64()? >= 200).then_some(())
    })
    .await;
    assert!(sim.expire_salesforce_sessions(&org).expect("expire") >= 1);
    signal(w1.pid().expect("pid"), "KILL");
    w1.kill();
    let _w3 = crmsync_worker(&redis, &key, "worker-3", &worker_args);
    wait_for_run(&redis, "sfco", Duration::from_secs(180)).await;

    let book = current_book(&sim, &t.grant_id).await;
    let counts = assert_org_equals_book(&sim, &t, &book);
    assert!(
        counts.contacts_with_account > 0 && counts.leads > 0,
        "routing made both Contacts under Accounts and Leads: {counts:?}"
    );
    let doc = sim.inspect_salesforce(&org).expect("org");
    assert!(doc["faults_injected"].as_u64().unwrap_or(0) > 0, "faults were injected");
    assert!(
        doc["calls"]["token"].as_u64().unwrap_or(0) >= 2,
        "the expired session was refreshed"
    );

    // The change feed: creates, updates, email changes and deletes, some twice, some late.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let report = sim
        .mutate(
            &t.grant_id,
            MutationPlan {
                count: 300,
                seed: 8,
                ..MutationPlan::default()
            },
        )
        .await
        .expect("mutate");
    assert_eq!(report.failed, 0, "{report:?}");
    eventually(Duration::from_secs(120), "every change to be written", || async {
        settled(&redis, "sfco").await.then_some(())
    })
    .await;
    let book = current_book(&sim, &t.grant_id).await;
    assert_org_equals_book(&sim, &t, &book);

    // Status and the runs name the CRM's unit.
    let (code, out, err) = crmsync_output(&redis, &key, &["budget", "sfco", "--json"]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(b[0]["unit"], "requests", "{out}");
    assert_eq!(
        b[0]["daily_credits"], 1_000_000,
        "the org's own DailyApiRequests Max, as every answer reports it"
    );
}

/// Simulated seconds per real second: a Salesforce day lasts 15 real seconds.
const TIME_SCALE: f64 = 5_760.0;

/// Another integration uses most of the org's share before and during a backfill: crmsync's
/// requests never take the org past share × the org's Max, no request meets the org's 403
/// limit, the tenant says whose usage it waits for, and the run completes once the window
/// allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_org_used_by_others_pauses_the_tenant_without_403s() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = sf_tenant("sfshared", 5_000, 100);
    if let Some(sf) = &mut t.salesforce {
        // A day is 15 real seconds here: sessions last the simulated day.
        sf.session_secs = 86_400;
    }
    let org = t.salesforce.as_ref().expect("sf").org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 33,
            time_scale: TIME_SCALE,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    // Configured far above the org's real 100: the org's own count wins from the first answer.
    add(&redis, &key, &sim, &t, &["--budget-share", "0.8", "--rps", "50"]);
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &["tenant", "set", "sfshared", "--daily-requests", "50000"],
    );
    assert_eq!(code, 0, "{out}{err}");
    sim.spend_salesforce_requests(&org, 60).expect("spend");
    let _workers: Vec<_> = (0..2)
        .map(|i| {
            let mut cmd = crmsync(&redis, &key);
            cmd.args(["worker", "--concurrency", "4", "--page-size", "100"])
                .env("CRMSYNC_TIME_SCALE", TIME_SCALE.to_string());
            crmsync_testkit::ChildProcess::spawn(&format!("worker-{i}"), cmd)
        })
        .collect();
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "sfshared"]);
    assert_eq!(code, 0, "{out}{err}");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.spend_salesforce_requests(&org, 5).expect("spend");
    }
    let said = eventually(Duration::from_secs(60), "the org's usage to show", || async {
        let out = crmsync(&redis, &key)
            .env("CRMSYNC_TIME_SCALE", TIME_SCALE.to_string())
            .args(["budget", "sfshared", "--json"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v[0]["others"].as_u64()? >= 60).then(|| v[0].clone())
    })
    .await;
    assert_eq!(
        said["daily_credits"], 100,
        "the org's Max replaced the configured 50000: {said}"
    );
    wait_for_run(&redis, "sfshared", Duration::from_secs(240)).await;

    let doc = sim.inspect_salesforce(&org).expect("org");
    let max = doc["max_usage_at_our_request"].as_u64().expect("max");
    // A request rests on the latest reading: the other integration's latest step (5) may land
    // between that answer and the request, unseen by anyone.
    assert!(
        max <= 80 + 5,
        "a request of ours took the org to {max} in one window; 80 allowed"
    );
    assert_eq!(
        doc["calls"]["rejected_limit"], 0,
        "no request met the org's daily limit"
    );
    assert!(
        doc["api_usage"]["total"].as_u64().unwrap_or(0) > 20,
        "the run needed more than the 20 requests the first window left, so it waited: {}",
        doc["api_usage"]
    );
    let book = current_book(&sim, &t.grant_id).await;
    assert_org_equals_book(&sim, &t, &book);
}

/// A refresh token Salesforce refuses (`invalid_grant`) pauses the tenant with a reason that
/// says to re-authorize — no dead letters, no retry loop —; `crmsync salesforce exchange-code`
/// lifts the pause and the writes that waited land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_pauses_the_tenant_until_it_is_re_authorized() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = sf_tenant("sfgrant", 400, 1_000_000);
    let sf = t.salesforce.clone().expect("sf");
    let sim = RunningSim::start(
        SimConfig {
            seed: 35,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add(&redis, &key, &sim, &t, &["--rps", "50"]);
    // The grant is revoked: the stored refresh token no longer works (same org).
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &[
            "tenant",
            "set",
            "sfgrant",
            "--sf-refresh-token",
            "revoked-token",
            "--same-org",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let _w = crmsync_worker(&redis, &key, "worker-1", &["--concurrency", "4"]);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "sfgrant"]);
    assert_eq!(code, 0, "{out}{err}");
    let reason = eventually(Duration::from_secs(60), "the tenant to pause", || async {
        let (_, out, _) = crmsync_output(&redis, &key, &["budget", "sfgrant", "--json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        v[0]["paused"]["reason"].as_str().map(str::to_owned)
    })
    .await;
    assert!(
        reason.starts_with("re-authorize:") && reason.contains("crmsync salesforce exchange-code"),
        "{reason}"
    );
    let (code, out, _) = crmsync_output(&redis, &key, &["dead", "list", "--json"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("SF_INVALID_GRANT"),
        "no dead letter for a dead grant: {out}"
    );
    let (code, out, _) = crmsync_output(&redis, &key, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("re-authorize"), "status says why: {out}");

    let code_arg = sf.grant_codes[0].clone();
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &[
            "salesforce",
            "exchange-code",
            "sfgrant",
            "--code",
            &code_arg,
            "--same-org",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pause for re-authorization is lifted"), "{out}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    let started = std::time::Instant::now();
    loop {
        let r = runs.list("sfgrant", 1).await.expect("runs")[0].clone();
        if !r.status.is_active() {
            assert_eq!(r.status, RunStatus::Completed, "{r:?}");
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let (_, status, _) = crmsync_output(&redis, &key, &["status"]);
            let (_, dead, _) = crmsync_output(&redis, &key, &["dead", "list"]);
            panic!("the run did not end after the re-authorization: {r:?}\n{status}\n{dead}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let book = current_book(&sim, &t.grant_id).await;
    assert_org_equals_book(&sim, &t, &book);
}
