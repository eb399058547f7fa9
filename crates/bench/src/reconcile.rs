//! Reconcile of a backfilled book against the simulator, limits off: in sync (the CRM equals
//! the book), then with 1% drift (silent changes and records deleted in Zoho by hand): credits
//! per 1,000 contacts, contacts/s, and what was written.

use std::time::{Duration, Instant};

use crmsync_producer::{BackfillPage, Run, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobQueue};
use crmsync_sim::{Mix, MutationPlan, RunningSim, SimConfig, TenantConfig};
use crmsync_tenants::{SecretKey, TenantStore};
use crmsync_testkit::{ChildProcess, RedisServer};

use crate::backfill::{register, start_runs, start_workers, wait_runs};

#[derive(clap::Args)]
pub struct ReconcileBench {
    /// Contacts in the book.
    #[arg(long, default_value_t = 100_000)]
    contacts: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs per worker process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

async fn reconcile(runs: &RunStore, queue: &JobQueue<BackfillPage>, tenant: &str) -> anyhow::Result<(Run, Duration)> {
    let start = Instant::now();
    let StartOutcome::Started(run) = runs.start_reconcile(tenant, false).await? else {
        anyhow::bail!("a run was already active");
    };
    let first = crmsync_producer::schedule::first_job(tenant, &run.id);
    queue
        .enqueue_with(
            &first,
            EnqueueOptions::default().idempotency_key(first.idempotency_key()),
        )
        .await?;
    let done = wait_runs(runs, &[(tenant.to_owned(), run.id.clone())], Duration::from_secs(1800)).await?;
    Ok((done[0].clone(), start.elapsed()))
}

fn row(label: &str, r: &Run, took: Duration) {
    let n = |k: &str| r.drift.get(k).copied().unwrap_or(0);
    println!(
        "| {label} | {} | {} | {} | {} | {} | {} / {} / {} | {} | **{:.2}** | {:.0} |",
        r.contacts_read,
        n("crm_read"),
        n("missing"),
        n("stale"),
        n("orphaned"),
        r.inserted,
        r.updated,
        r.deleted,
        r.credits,
        r.credits as f64 * 1000.0 / r.contacts_read.max(1) as f64,
        r.contacts_read as f64 / took.as_secs_f64()
    );
}

pub async fn run(b: ReconcileBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let mut t = TenantConfig::named("rcbench");
    t.contacts = b.contacts;
    t.zoho.limits = false;
    t.zoho.daily_credits = 10_000_000;
    let org = t.zoho.org_id.clone();
    let sim = RunningSim::start(
        SimConfig {
            seed: 19,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let key = SecretKey::generate();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    register(&store, &sim, &t, 100.0, 25, 1.0).await?;
    let mut workers: Vec<ChildProcess> = start_workers(&redis, &key, b.workers, b.concurrency, &[]);
    let runs = RunStore::new(conn.clone(), "crmsync");
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let ids = start_runs(&runs, &queue, std::slice::from_ref(&t)).await?;
    wait_runs(&runs, &ids, Duration::from_secs(1800)).await?;

    let (in_sync, took_in_sync) = reconcile(&runs, &queue, &t.name).await?;
    // 1% drift: silent changes (no webhook) and records deleted in Zoho by hand.
    let silent = b.contacts / 200;
    sim.mutate(
        &t.grant_id,
        MutationPlan {
            count: silent,
            seed: 3,
            deliver: false,
            mix: Mix {
                create: 0.2,
                update: 0.4,
                email_change: 0.2,
                delete: 0.2,
            },
            ..MutationPlan::default()
        },
    )
    .await?;
    let records = sim.inspect_org(&org).unwrap_or_default()["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by_hand = b.contacts / 200;
    for r in records
        .iter()
        .step_by((records.len() / by_hand.max(1)).max(1))
        .take(by_hand)
    {
        if let Some(id) = r["id"].as_str() {
            sim.delete_zoho_record(&org, id)?;
        }
    }
    let (drifted, took_drifted) = reconcile(&runs, &queue, &t.name).await?;

    println!("## Reconcile\n");
    println!(
        "One tenant, {} contacts backfilled, {} worker processes × {} jobs, limits off. 1% drift: {silent} silent book changes and {by_hand} records deleted in Zoho by hand.\n",
        b.contacts, b.workers, b.concurrency
    );
    println!(
        "| book | contacts read | CRM records read | missing | stale | orphaned | inserted / updated / deleted | credits | credits per 1k contacts | contacts/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    row("in sync", &in_sync, took_in_sync);
    row("1% drift", &drifted, took_drifted);
    println!("\nBar: in sync, ≤ 6 credits per 1,000 contacts (reading at 200 a page) and 0 writes.\n");
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    sim.shutdown().await;
    Ok(())
}
