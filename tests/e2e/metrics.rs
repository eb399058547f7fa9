//! Prometheus `/metrics` of a worker and of the webhook receiver, against what really
//! happened: the simulator's own call and credit counts, the run's counts, the receiver's.

use std::collections::HashMap;
use std::time::Duration;

use crmsync_sim::{MutationPlan, TenantConfig};
use crmsync_testkit::{RedisServer, free_port};

use crate::support::{add_sim_tenant_with, crmsync_output, crmsync_worker, webhook_server_on, webhook_sim};

const SECRET: &str = "whsec-metrics";

/// Scrapes `url` into `series -> value` (`name{labels}` as exposed).
async fn scrape(url: &str) -> HashMap<String, f64> {
    let res = reqwest::get(url).await.expect("scrape");
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().expect("ctype").to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = res.text().await.expect("text");
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// The sum of every series of `name` whose labels contain all of `having`.
fn sum(m: &HashMap<String, f64>, name: &str, having: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && having.iter().all(|h| k.contains(h)))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_webhook_metrics_match_what_happened() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let hook_port = free_port();
    let metrics_port = free_port();
    let mut t = TenantConfig::named("metered");
    t.contacts = 450;
    let sim = webhook_sim(8, vec![t.clone()], hook_port, SECRET).await;
    add_sim_tenant_with(&redis, &key, &sim, &t, &["--webhook-secret", SECRET, "--rps", "2"]);
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _worker = crmsync_worker(&redis, &key, "worker", &["--metrics-listen", &metrics_addr]);
    let (_hook, hook_base) = webhook_server_on(&redis, &key, hook_port, &[]).await;

    let (code, out, err) = crmsync_output(&redis, &key, &["backfill", "metered", "--follow"]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let run = crmsync_producer::RunStore::new(conn, "crmsync")
        .list("metered", 1)
        .await
        .expect("runs")[0]
        .clone();

    let m = scrape(&format!("http://{metrics_addr}/metrics")).await;
    let org = sim.inspect_org(&t.zoho.org_id).expect("org");
    // One worker made every call: its counts are the simulator's.
    assert_eq!(
        sum(&m, "crmsync_zoho_credits_total", &["kind=\"spent\""]),
        org["credits_used_total"].as_u64().expect("credits") as f64,
        "{m:?}"
    );
    assert!(
        sum(&m, "crmsync_zoho_credits_total", &["kind=\"reserved\""])
            >= sum(&m, "crmsync_zoho_credits_total", &["kind=\"spent\""])
    );
    assert_eq!(
        sum(&m, "crmsync_zoho_calls_total", &["op=\"upsert\""]),
        org["calls"]["upsert"].as_u64().expect("upserts") as f64
    );
    assert_eq!(
        sum(&m, "crmsync_records_written_total", &["op=\"inserted\""]),
        run.inserted as f64
    );
    assert_eq!(
        sum(&m, "crmsync_nylas_calls_total", &["op=\"list\"", "status=\"200\""]),
        3.0,
        "450 contacts: 3 pages"
    );
    assert!(sum(&m, "crmsync_zoho_token_refreshes_total", &["outcome=\"ok\""]) >= 1.0);
    assert_eq!(
        sum(&m, "crmsync_jobs_total", &["queue=\"backfill\"", "outcome=\"done\""]),
        3.0
    );
    assert!(sum(&m, "crmsync_jobs_total", &["queue=\"writes\"", "outcome=\"done\""]) >= 1.0);
    assert!(sum(&m, "crmsync_job_duration_seconds_count", &["queue=\"backfill\""]) >= 3.0);
    // At 2 requests/s, the two batches of the first page cannot both go at once.
    assert!(
        sum(&m, "crmsync_limiter_waits_total", &["reason=\"rate\""]) >= 1.0,
        "{m:?}"
    );
    assert_eq!(
        sum(&m, "crmsync_limiter_waits_total", &["reason=\"budget\""]),
        0.0,
        "far within its budget"
    );
    assert_eq!(
        m.get("crmsync_queue_depth{queue=\"backfill\",state=\"pending\"}"),
        Some(&0.0)
    );
    assert!(m.keys().any(|k| k.starts_with("crmsync_build_info{version=")));

    // The receiver counts its outcomes as it stores them.
    let report = sim
        .mutate(
            &t.grant_id,
            MutationPlan {
                count: 30,
                seed: 3,
                ..MutationPlan::default()
            },
        )
        .await
        .expect("mutate");
    let h = scrape(&format!("{hook_base}/metrics")).await;
    let stats: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg("crmsync:webhook:stats")
        .query(&mut redis.conn())
        .expect("stats");
    for outcome in ["accepted", "duplicate", "bad_signature", "unsigned"] {
        assert_eq!(
            sum(
                &h,
                "crmsync_webhook_requests_total",
                &[&format!("outcome=\"{outcome}\"")]
            ),
            stats.get(outcome).copied().unwrap_or(0) as f64,
            "{outcome}"
        );
    }
    assert_eq!(
        sum(&h, "crmsync_webhook_request_duration_seconds_count", &[]),
        report.deliveries as f64,
        "every delivery answered is timed"
    );
}
