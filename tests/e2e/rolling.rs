//! A rolling restart of the fleet during backfills: each worker in turn gets SIGTERM, drains
//! (finishing or handing back its jobs), exits cleanly and is replaced. Nothing is lost,
//! nothing duplicated, nothing waits for a visibility timeout.

use std::time::{Duration, Instant};

use crmsync_e2e::{crm_records, expected_crm};
use crmsync_producer::{RunStatus, RunStore};
use crmsync_queue::JobQueue;
use crmsync_sim::{FaultConfig, RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{RedisServer, eventually};
use serde_json::Value;

use crate::support::{add_sim_tenant, crmsync_output, crmsync_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_fleet_loses_nothing() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let tenants: Vec<TenantConfig> = ["roll1", "roll2", "roll3"]
        .iter()
        .map(|n| {
            let mut t = TenantConfig::named(n);
            t.contacts = 4_000;
            t
        })
        .collect();
    // Slow calls keep jobs running when SIGTERM comes.
    let sim = RunningSim::start(
        SimConfig {
            seed: 9,
            tenants: tenants.clone(),
            faults: FaultConfig {
                latency_ms: [50, 100],
                ..FaultConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    for t in &tenants {
        add_sim_tenant(&redis, &key, &sim, t);
    }
    // A visibility timeout far beyond the test: only a clean hand-back lets a job move on.
    let args = [
        "--concurrency",
        "3",
        "--page-size",
        "50",
        "--drain-secs",
        "10",
        "--visibility-timeout-secs",
        "600",
    ];
    let mut workers: Vec<_> = (0..3)
        .map(|i| crmsync_worker(&redis, &key, &format!("w{i}"), &args))
        .collect();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let mut cli = vec!["backfill"];
    cli.extend(&names);
    let (code, out, err) = crmsync_output(&redis, &key, &cli);
    assert_eq!(code, 0, "{out}{err}");

    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = RunStore::new(conn.clone(), "crmsync");
    // Two rounds of the whole fleet, one worker at a time, while the runs go on.
    let mut restarts = 0;
    for round in 0..2 {
        if round == 1 {
            let mut active = 0;
            for t in &tenants {
                active += runs
                    .list(&t.name, 1)
                    .await
                    .expect("runs")
                    .iter()
                    .filter(|r| r.status.is_active())
                    .count();
            }
            assert!(active > 0, "the first round of restarts happened while backfills ran");
        }
        for (i, worker) in workers.iter_mut().enumerate() {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let started = Instant::now();
            let code = worker.terminate(Duration::from_secs(20));
            assert_eq!(code, Some(0), "worker {i} (round {round}) drained and exited cleanly");
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "it drained within its deadline"
            );
            *worker = crmsync_worker(&redis, &key, &format!("w{i}-{round}"), &args);
            restarts += 1;
        }
    }
    assert_eq!(restarts, 6);
    let finished = eventually(Duration::from_secs(120), "every run to end", || async {
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
    for r in &finished {
        assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    }
    for t in &tenants {
        let (expected, _) = expected_crm(&crmsync_sim::address_book(t, 9));
        assert_eq!(crm_records(&sim, &t.zoho.org_id), expected, "tenant {}", t.name);
    }
    for q in [
        crmsync_producer::backfill_queue("crmsync"),
        crmsync_producer::writes_queue("crmsync"),
    ] {
        let q: JobQueue<Value> = JobQueue::new(conn.clone(), q);
        assert!(q.dead_letters(10).await.expect("dead").is_empty());
    }
}
