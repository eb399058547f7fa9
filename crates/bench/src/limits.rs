//! The limits benchmark: one tenant limited to R requests/s and C concurrent calls (the
//! simulator enforces C too), backfilled by 2 worker processes. Reports the achieved Zoho call
//! rate as a share of R, the 429s our own load caused, and the credits spent against the
//! minimum for the records written.

use std::time::{Duration, Instant};

use crmsync_producer::{BackfillPage, RunStore};
use crmsync_queue::JobQueue;
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_tenants::{SecretKey, TenantStore};
use crmsync_testkit::RedisServer;

use crate::backfill::{register, start_runs, start_workers, wait_runs};

#[derive(clap::Args)]
pub struct LimitsBench {
    /// Requests per second allowed (R).
    #[arg(long, default_value_t = 5.0)]
    rps: f64,
    /// Concurrent calls allowed (C), in the tenant and in the simulated org.
    #[arg(long, default_value_t = 3)]
    concurrency: u32,
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    /// Simulated Zoho latency per call, ms.
    #[arg(long, default_value_t = 150)]
    latency_ms: u64,
}

pub async fn run(b: LimitsBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let mut t = TenantConfig::named("limited");
    t.contacts = b.contacts;
    t.zoho.concurrency = b.concurrency as usize;
    t.zoho.daily_credits = 1_000_000;
    let sim = RunningSim::start(
        SimConfig {
            seed: 17,
            tenants: vec![t.clone()],
            faults: crmsync_sim::FaultConfig {
                latency_ms: [b.latency_ms, b.latency_ms],
                ..Default::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let key = SecretKey::generate();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    register(&store, &sim, &t, b.rps, b.concurrency, 1.0).await?;
    let mut workers = start_workers(&redis, &key, 2, 8, &[]);
    let runs = RunStore::new(conn.clone(), "crmsync");
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let start = Instant::now();
    let ids = start_runs(&runs, &queue, std::slice::from_ref(&t)).await?;
    let finished = wait_runs(&runs, &ids, Duration::from_secs(1800)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    let org = sim.inspect_org(&t.zoho.org_id).unwrap_or_default();
    let by_status = org["calls"]["by_status"].as_object().cloned().unwrap_or_default();
    let calls: u64 = by_status.values().filter_map(|v| v.as_u64()).sum();
    let ours_429 = org["calls"]["rejected_429"].as_u64().unwrap_or(0);
    let credits = org["credits_used_total"].as_u64().unwrap_or(0);
    let run = &finished[0];
    let written = run.inserted + run.updated;
    let minimum = written.div_ceil(10);
    let achieved = calls as f64 / elapsed;
    println!(
        "## Limits: one tenant at R = {} requests/s and C = {} concurrent, {} contacts, {} ms Zoho latency, 2 workers\n",
        b.rps, b.concurrency, b.contacts, b.latency_ms
    );
    println!(
        "| Zoho calls | time | achieved calls/s | share of R | most calls in any 1 s (R = {}) | 429s we caused | peak in flight | credits spent | minimum for {written} records | spent / minimum |",
        b.rps
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {calls} | {elapsed:.1} s | {achieved:.2} | **{:.0}%** | **{}** | {ours_429} | {} | {credits} | {minimum} | {:.3} |\n",
        achieved * 100.0 / b.rps,
        org["max_requests_per_second"],
        org["max_in_flight"],
        credits as f64 / minimum.max(1) as f64
    );
    println!(
        "Bars: share of R ≥ 90% with zero 429s caused by us; no second as the CRM counts with more than R calls; credits spent equal to the minimum.\n"
    );
    Ok(())
}
