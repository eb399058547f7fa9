//! A Salesforce backfill against the simulator, limits off: API requests per 1,000 contacts
//! (the seed recipe's one PATCH per contact costs 1,000; sObject Collections of 200 cost 5 plus
//! the Account reads) and contacts per second.

use std::time::{Duration, Instant};

use crmsync_producer::{BackfillPage, RunStore};
use crmsync_queue::JobQueue;
use crmsync_sim::{RunningSim, SalesforceConfig, SimConfig, TenantConfig};
use crmsync_tenants::{Crm, NylasSettings, SalesforceConnection, Secret, SecretKey, Tenant, TenantStore};
use crmsync_testkit::{ChildProcess, RedisServer};

use crate::backfill::{cpu_secs, peak_rss_kib, start_runs, start_workers, wait_runs};

#[derive(clap::Args)]
pub struct SalesforceBench {
    /// Tenants, each with its own Salesforce org.
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    /// Contacts per tenant.
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs per worker process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

async fn register(store: &TenantStore, sim: &RunningSim, t: &TenantConfig) -> anyhow::Result<()> {
    let sf = t.salesforce.as_ref().expect("a Salesforce org");
    let mut conn = SalesforceConnection::new(
        sim.salesforce_login_url(&sf.org_id),
        sf.client_id.clone(),
        Secret::new(sf.client_secret.clone()),
    );
    conn.refresh_token = Some(Secret::new(sf.refresh_token.clone()));
    conn.ext_id_field = sf.ext_id_field.clone();
    let mut tenant = Tenant::new(
        t.name.clone(),
        NylasSettings {
            grant_id: t.grant_id.clone(),
            api_key: Secret::new(t.nylas_api_key.clone()),
            api_uri: sim.nylas_api_uri(&t.nylas_region),
        },
        Crm::Salesforce(conn),
    );
    tenant.daily_credits = sf.daily_requests;
    tenant.budget_share = 1.0;
    tenant.requests_per_second = 100.0;
    tenant.concurrency = Some(25);
    store.add(tenant).await?;
    Ok(())
}

pub async fn run(b: SalesforceBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let tenants: Vec<TenantConfig> = (0..b.tenants)
        .map(|i| {
            let mut t = TenantConfig::named(&format!("sfbench{i:02}"));
            t.contacts = b.contacts;
            let mut sf = SalesforceConfig::named(&t.name);
            sf.limits = false;
            sf.daily_requests = 10_000_000;
            t.salesforce = Some(sf);
            t
        })
        .collect();
    let sim = RunningSim::start(
        SimConfig {
            seed: 17,
            tenants: tenants.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let key = SecretKey::generate();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    for t in &tenants {
        register(&store, &sim, t).await?;
    }
    let mut workers: Vec<ChildProcess> = start_workers(&redis, &key, b.workers, b.concurrency, &[]);
    let runs = RunStore::new(conn.clone(), "crmsync");
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let start = Instant::now();
    let ids = start_runs(&runs, &queue, &tenants).await?;
    let finished = wait_runs(&runs, &ids, Duration::from_secs(900)).await?;
    let elapsed = start.elapsed();
    let rss: Vec<u64> = workers.iter().filter_map(|w| w.pid().and_then(peak_rss_kib)).collect();
    let cpu: f64 = workers.iter().filter_map(|w| w.pid().and_then(cpu_secs)).sum();

    let (mut requests, mut upserts, mut queries, mut contacts, mut leads, mut read) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for t in &tenants {
        let org = sim
            .inspect_salesforce(&t.salesforce.as_ref().expect("sf").org_id)
            .unwrap_or_default();
        requests += org["api_usage"]["total"].as_u64().unwrap_or(0);
        upserts += org["calls"]["upsert"].as_u64().unwrap_or(0) + org["calls"]["single_upsert"].as_u64().unwrap_or(0);
        queries += org["calls"]["query"].as_u64().unwrap_or(0);
        contacts += org["counts"]["contacts"].as_u64().unwrap_or(0);
        leads += org["counts"]["leads"].as_u64().unwrap_or(0);
    }
    for r in &finished {
        read += r.contacts_read;
    }
    let written = contacts + leads;
    println!("## Salesforce backfill\n");
    println!(
        "{} tenants × {} contacts, {} worker processes × {} jobs, limits off, simulator latency as configured.\n",
        b.tenants, b.contacts, b.workers, b.concurrency
    );
    println!(
        "| contacts read | records written (Contacts / Leads) | API requests | upserts | queries | requests per 1k contacts | contacts/s | worker CPU s | worker peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {read} | {written} ({contacts} / {leads}) | {requests} | {upserts} | {queries} | {:.2} | {:.0} | {cpu:.1} | {} |",
        requests as f64 * 1000.0 / read.max(1) as f64,
        read as f64 / elapsed.as_secs_f64(),
        rss.iter()
            .max()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into()),
    );
    println!(
        "\nBar: ≤ 6 requests per 1,000 contacts (one PATCH per contact, the seed recipe's way, is 1,000; \
         200-record collections are 5 plus the Account reads).\n"
    );
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    sim.shutdown().await;
    Ok(())
}
