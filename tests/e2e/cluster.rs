//! crmsync on a Redis Cluster: queues, ledgers, tenant store, runs and the write buffer
//! spread over 3 masters; a backfill of several tenants, then the change feed, end as the
//! address books are.

use std::time::Duration;

use crmsync_e2e::expected_crm;
use crmsync_sim::{MutationPlan, RunningSim, TenantConfig};
use crmsync_testkit::{RedisCluster, eventually, free_port};
use serde_json::Value;

use crate::support::{TestRedis, add_sim_tenant_with, crmsync_output, crmsync_worker, webhook_server_on, webhook_sim};

const SECRET: &str = "whsec-cluster";

async fn book(sim: &RunningSim, grant: &str) -> Vec<Value> {
    reqwest::get(format!("{}/_sim/nylas/{grant}/contacts", sim.base_url()))
        .await
        .expect("book")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_change_feed_work_across_a_three_master_cluster() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = RedisCluster::start(3);
    let key = crmsync_tenants::SecretKey::generate();
    let hook_port = free_port();
    let tenants: Vec<TenantConfig> = ["north", "south", "east", "west"]
        .iter()
        .map(|n| {
            let mut t = TenantConfig::named(n);
            t.contacts = 700;
            t.zoho.daily_credits = 1_000_000;
            t
        })
        .collect();
    let sim = webhook_sim(12, tenants.clone(), hook_port, SECRET).await;
    for t in &tenants {
        add_sim_tenant_with(&cluster, &key, &sim, t, &["--webhook-secret", SECRET]);
    }
    let _w1 = crmsync_worker(&cluster, &key, "worker-1", &["--concurrency", "4"]);
    let _w2 = crmsync_worker(&cluster, &key, "worker-2", &["--concurrency", "4"]);
    let (_hook, _) = webhook_server_on(&cluster, &key, hook_port, &["--flush-window-ms", "300"]).await;

    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let mut args = vec!["backfill"];
    args.extend(&names);
    args.push("--follow");
    let (code, out, err) = crmsync_output(&cluster, &key, &args);
    assert_eq!(code, 0, "{out}{err}");
    for t in &tenants {
        let (expected, _) = expected_crm(&book(&sim, &t.grant_id).await);
        assert_eq!(
            crmsync_e2e::crm_records(&sim, &t.zoho.org_id),
            expected,
            "tenant {}",
            t.name
        );
    }
    // The fleet's state is spread over every master, not piled on one.
    let per_node = cluster.keys_per_node();
    assert!(per_node.iter().all(|n| *n > 0), "keys per node: {per_node:?}");

    // The change feed on the cluster: every tenant's book changes; CRMs follow.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for (i, t) in tenants.iter().enumerate() {
        let report = sim
            .mutate(
                &t.grant_id,
                MutationPlan {
                    count: 120,
                    seed: 40 + i as u64,
                    ..MutationPlan::default()
                },
            )
            .await
            .expect("mutate");
        assert_eq!(report.failed, 0, "{report:?}");
    }
    for t in &tenants {
        eventually(
            Duration::from_secs(60),
            "the CRM to follow the address book",
            || async {
                let (expected, _) = expected_crm(&book(&sim, &t.grant_id).await);
                (crmsync_e2e::crm_records(&sim, &t.zoho.org_id) == expected).then_some(())
            },
        )
        .await;
    }
    let (code, out, err) = crmsync_output(&cluster, &key, &["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(cluster.redis_url().starts_with("redis+cluster://"));
}
