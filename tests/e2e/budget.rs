//! The credit budget and the limits, across a fleet of worker processes, against the
//! simulator with a compressed day.

use std::time::{Duration, Instant};

use crmsync_e2e::expected_crm;
use crmsync_producer::{RunStatus, RunStore};
use crmsync_sim::{FaultConfig, RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{ChildProcess, RedisServer, eventually};
use serde_json::Value;

use crate::support::{add_sim_tenant_with, crmsync, crmsync_output};

/// Simulated seconds per real second: a Zoho day lasts 15 real seconds.
const TIME_SCALE: f64 = 5_760.0;

fn add_tenant(
    redis: &RedisServer,
    key: &str,
    sim: &RunningSim,
    t: &TenantConfig,
    share: f64,
    rps: f64,
    concurrency: u32,
) {
    let (share, rps, concurrency) = (share.to_string(), rps.to_string(), concurrency.to_string());
    add_sim_tenant_with(
        redis,
        key,
        sim,
        t,
        &["--budget-share", &share, "--rps", &rps, "--concurrency", &concurrency],
    );
}

fn workers(redis: &RedisServer, key: &str, n: usize, time_scale: f64) -> Vec<ChildProcess> {
    (0..n)
        .map(|i| {
            let mut cmd = crmsync(redis, key);
            cmd.args([
                "worker",
                "--concurrency",
                "4",
                "--page-size",
                "50",
                "--visibility-timeout-secs",
                "5",
            ])
            .env("CRMSYNC_TIME_SCALE", time_scale.to_string());
            ChildProcess::spawn(&format!("worker-{i}"), cmd)
        })
        .collect()
}

async fn wait_for_runs(redis: &RedisServer, tenants: &[TenantConfig], timeout: Duration) {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn, "crmsync");
    let finished = eventually(timeout, "every run to end", || async {
        let mut all = Vec::new();
        for t in tenants {
            let r = runs.list(&t.name, 1).await.ok()?.first()?.clone();
            if r.status.is_active() {
                return None;
            }
            all.push(r);
        }
        Some(all)
    })
    .await;
    for r in finished {
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    }
}

fn assert_crm_matches_book(sim: &RunningSim, t: &TenantConfig, seed: u64) {
    let (expected, _) = expected_crm(&crmsync_sim::address_book(t, seed));
    let org = sim.inspect_org(&t.zoho.org_id).expect("org");
    let records = org["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        records.len(),
        expected.len(),
        "tenant {}: one record per email, none missing",
        t.name
    );
    for r in records {
        let email = r["Email"].as_str().unwrap_or_default().to_owned();
        let want = &expected[&email];
        for f in ["First_Name", "Last_Name", "Phone", "Account_Name", "Title"] {
            assert_eq!(
                r.get(f).unwrap_or(&Value::Null),
                &want[f],
                "tenant {} {email} {f}",
                t.name
            );
        }
    }
}

/// 4 workers, 10 tenants with different budgets and shares, a 15-second Zoho day: in no window
/// does any tenant's spend, as the simulator charges it, pass share × daily credits; a tenant
/// pauses within one call of its threshold, resumes by itself when credits return, and every
/// backfill completes. The fleet asks for a tenant's token about once per token lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_hold_across_the_fleet_and_backfills_resume_when_credits_return() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let shares: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64).collect();
    let tenants: Vec<TenantConfig> = (0..10)
        .map(|i| {
            let mut t = TenantConfig::named(&format!("b{i}"));
            t.contacts = 300;
            t.zoho.daily_credits = 20 + 5 * i as u64;
            t
        })
        .collect();
    let sim = RunningSim::start(
        SimConfig {
            seed: 5,
            time_scale: TIME_SCALE,
            tenants: tenants.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    for (t, share) in tenants.iter().zip(&shares) {
        add_tenant(&redis, &key, &sim, t, *share, 50.0, 20);
    }
    let _workers = workers(&redis, &key, 4, TIME_SCALE);
    let started = Instant::now();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let mut args = vec!["backfill"];
    args.extend(&names);
    let (code, out, err) = crmsync_output(&redis, &key, &args);
    assert_eq!(code, 0, "{out}{err}");
    wait_for_runs(&redis, &tenants, Duration::from_secs(240)).await;
    let elapsed_sim = started.elapsed().as_secs_f64() * TIME_SCALE;

    let mut paused = 0;
    for (t, share) in tenants.iter().zip(&shares) {
        let allowed = (t.zoho.daily_credits as f64 * share).floor() as u64;
        let org = sim.inspect_org(&t.zoho.org_id).expect("org");
        let max = org["max_credits_used_window"].as_u64().expect("max");
        let total = org["credits_used_total"].as_u64().expect("total");
        assert!(
            max <= allowed,
            "tenant {}: {max} credits in one window, {allowed} allowed",
            t.name
        );
        if total > allowed {
            paused += 1;
            // A call costs at most 10 credits (a full batch of 100): the pause began within one call.
            assert!(
                max + 10 > allowed,
                "tenant {}: paused at {max} of {allowed}, more than a call early",
                t.name
            );
        }
        assert_eq!(
            org["calls"]["rejected_429"], 0,
            "tenant {}: no 429 caused by us",
            t.name
        );
        let tokens = org["token_requests"].as_f64().unwrap_or(0.0);
        let lifetimes = elapsed_sim / 3600.0;
        assert!(
            tokens <= lifetimes / 0.95 + 2.0,
            "tenant {}: {tokens} token requests in {lifetimes:.1} token lifetimes",
            t.name
        );
        assert_crm_matches_book(&sim, t, 5);
    }
    assert!(
        paused >= 4,
        "the budgets were meant to pause several tenants, paused {paused}"
    );
}

/// With the simulator's concurrency limit and 10% injected 429s, every contact still lands, and
/// the fleet itself causes (almost) no 429: its concurrency leases keep it under the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_lands_despite_429s_and_the_concurrency_limit() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let tenants: Vec<TenantConfig> = (0..2)
        .map(|i| {
            let mut t = TenantConfig::named(&format!("c{i}"));
            t.contacts = 1_500;
            t.zoho.concurrency = 2;
            t
        })
        .collect();
    let sim = RunningSim::start(
        SimConfig {
            seed: 9,
            tenants: tenants.clone(),
            faults: FaultConfig {
                zoho_429_rate: 0.10,
                latency_ms: [20, 60],
                ..FaultConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    for t in &tenants {
        add_tenant(&redis, &key, &sim, t, 1.0, 50.0, 2);
    }
    let _workers = workers(&redis, &key, 3, 1.0);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "c0", "c1"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for_runs(&redis, &tenants, Duration::from_secs(180)).await;
    for t in &tenants {
        assert_crm_matches_book(&sim, t, 9);
        let org = sim.inspect_org(&t.zoho.org_id).expect("org");
        let calls: u64 = org["calls"]["by_status"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let ours = org["calls"]["rejected_429"].as_u64().unwrap_or(0);
        assert!(
            org["calls"]["faults_injected"].as_u64().unwrap_or(0) > 0,
            "faults were injected"
        );
        assert!(
            (ours as f64) < 0.02 * calls as f64,
            "tenant {}: {ours} of {calls} calls got a 429 we caused",
            t.name
        );
        assert!(
            org["max_in_flight"].as_u64().unwrap_or(0) <= 2,
            "never over the concurrency limit"
        );
    }
}

/// Another integration spends the org's credits before and during a 4-worker backfill (a
/// 15-second Zoho day): no call of crmsync's takes the org's total in the window past
/// share × daily, the tenant counts whose spend it waits for, and the run completes once the
/// window allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_integrations_spend_counts_against_the_share() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("shared");
    t.contacts = 3_000;
    t.zoho.daily_credits = 400;
    let sim = RunningSim::start(
        SimConfig {
            seed: 9,
            time_scale: TIME_SCALE,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add_tenant(&redis, &key, &sim, &t, 0.8, 50.0, 10); // 320 allowed
    sim.spend_zoho_credits(&t.zoho.org_id, 150).expect("spend");
    let _workers = workers(&redis, &key, 4, TIME_SCALE);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "shared"]);
    assert_eq!(code, 0, "{out}{err}");
    // The other integration keeps spending while the backfill runs: 60 more, a little at a
    // time, as another integration's calls would.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.spend_zoho_credits(&t.zoho.org_id, 10).expect("spend");
    }
    // The tenant counts the org's other integrations' spend.
    let said = eventually(Duration::from_secs(60), "the account's usage to show", || async {
        let out = crmsync(&redis, &key)
            .env("CRMSYNC_TIME_SCALE", TIME_SCALE.to_string())
            .args(["budget", "shared", "--json"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let b = &v[0];
        (b["others"].as_u64()? >= 150).then(|| b.clone())
    })
    .await;
    assert!(said["used"].as_u64().is_some(), "{said}");
    wait_for_runs(&redis, std::slice::from_ref(&t), Duration::from_secs(240)).await;

    let org = sim.inspect_org(&t.zoho.org_id).expect("org");
    // A reservation rests on the latest reading: the other integration's latest step (10
    // credits) may be spent between that answer and the call's charge, unseen by anyone.
    let max = org["max_credits_at_our_charge"].as_u64().expect("max");
    assert!(
        max <= 320 + 10,
        "a call of ours took the org to {max} credits in one window; 320 allowed"
    );
    assert_eq!(org["calls"]["rejected_429"], 0, "no 429 caused by us");
    assert!(
        org["credits_used_total"].as_u64().expect("ours") > 170,
        "the run needed more than the first window allowed, so it waited"
    );
    assert_crm_matches_book(&sim, &t, 9);
}

/// A backfill paused for its budget for hours (a real day) goes on within seconds of a raise;
/// before it, `crmsync resume` says why it waits and how to lift it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_budget_lifts_the_pause_within_seconds() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut t = TenantConfig::named("raise");
    t.contacts = 600;
    t.zoho.daily_credits = 100_000;
    let sim = RunningSim::start(
        SimConfig {
            seed: 13,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    add_tenant(&redis, &key, &sim, &t, 0.5, 50.0, 10);
    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "set", "raise", "--daily-credits", "40"]);
    assert_eq!(code, 0, "{out}{err}");
    let _workers = workers(&redis, &key, 2, 1.0);
    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "raise"]);
    assert_eq!(code, 0, "{out}{err}");
    // 20 credits allowed: the backfill pauses for the day.
    let paused = eventually(Duration::from_secs(60), "the budget pause", || async {
        let (_, out, _) = crmsync_output(&redis, &key, &["budget", "raise", "--json"]);
        let v: Value = serde_json::from_str(&out).ok()?;
        v[0]["budget_paused_until_ms"].as_u64().map(|u| (u, v[0].clone()))
    })
    .await;
    assert!(
        paused.0 > crmsync_queue::now_ms() + 3_600_000,
        "paused for hours: {}",
        paused.1
    );
    let (code, out, err) = crmsync_output(&redis, &key, &["resume", "raise"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("waits for its budget") && out.contains("crmsync tenant set raise --daily-credits"),
        "{out}"
    );
    let (code, out, _) = crmsync_output(&redis, &key, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("UTC"), "the pause's end in human time: {out}");

    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "set", "raise", "--daily-credits", "100000"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("run again now"), "{out}");
    // Within seconds, not the day the pause had left: the waiting writes run at once.
    wait_for_runs(&redis, std::slice::from_ref(&t), Duration::from_secs(60)).await;
    assert_crm_matches_book(&sim, &t, 13);
}
