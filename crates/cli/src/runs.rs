//! `crmsync runs [<tenant>]`: backfill and reconcile runs with their counts; `crmsync cancel
//! <run id>`.

use crmsync_producer::{FlushTrigger, FlushWrites, RunError, RunStatus, RunStore};
use crmsync_queue::JobQueue;
use crmsync_tenants::TenantKeys;
use crmsync_tenants::TenantStore;

use crate::Env;

#[derive(clap::Args)]
pub struct RunsArgs {
    /// Only this tenant's runs.
    tenant: Option<String>,
    /// Runs per tenant.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(env: &Env, args: RunsArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let tenants = match args.tenant {
        Some(t) => vec![t],
        None => TenantStore::new(conn, &env.namespace, None).ids().await?,
    };
    let mut all = Vec::new();
    for t in tenants {
        all.extend(runs.list(&t, args.limit).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<10} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "RUN", "KIND", "STATUS", "DONE", "READ", "INSERTED", "UPDATED", "DELETED", "SKIPPED", "REJECTED", "CREDITS"
    );
    for r in all {
        let done = r
            .progress()
            .map(|p| format!("{:.0}%", p * 100.0))
            .unwrap_or_else(|| format!("{}p", r.pages_done));
        let kind = match (r.kind, r.dry_run) {
            (crmsync_producer::RunKind::Reconcile, true) => "dry-run",
            (kind, _) => kind.as_str(),
        };
        println!(
            "{:<40} {:<10} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.id,
            kind,
            r.status.as_str(),
            done,
            r.contacts_read,
            r.inserted,
            r.updated,
            r.deleted,
            r.skipped_total(),
            r.failed_total(),
            r.credits
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The run's id, as `crmsync runs` shows it.
    run_id: String,
}

/// `crmsync cancel <run id>`: ends a running backfill as cancelled and frees its tenant for a
/// new run. The run's page jobs still queued (or retrying) finish without reading (a page of a
/// run that is not running is dropped); a page already reading when the run is cancelled
/// finishes its read. What the run already read is still written: those records are current
/// contacts, the buffer has already settled their emails' owners, and the writes are bounded
/// by what was read. To stop every Zoho call of a tenant at once, `crmsync pause` it.
pub async fn cancel(env: &Env, args: CancelArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let run = match runs.find(&args.run_id).await {
        Ok(r) => r,
        Err(RunError::NotFound(_)) => {
            anyhow::bail!("no run `{}`; list runs with `crmsync runs`", args.run_id)
        }
        Err(e) => return Err(e.into()),
    };
    let tenant = run.tenant.clone();
    if !run.status.is_active() {
        println!(
            "run {} of tenant `{tenant}` has already ended ({}); nothing to cancel",
            run.id,
            run.status.as_str()
        );
        return Ok(());
    }
    if !runs
        .end(&tenant, &run.id, RunStatus::Cancelled, "cancelled by an operator")
        .await?
    {
        let now = runs.get(&tenant, &run.id).await?;
        println!(
            "run {} of tenant `{tenant}` ended by itself meanwhile ({}); nothing to cancel",
            run.id,
            now.status.as_str()
        );
        return Ok(());
    }
    // Write what the run read without waiting for a full batch: with the run ended, a flush
    // takes whatever waits.
    let writes: JobQueue<FlushWrites> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
    crmsync_producer::schedule_flush(&writes, &tenant, FlushTrigger::RunEnded { run: &run.id }, None).await?;
    let buffered: Option<i64> = redis::cmd("GET")
        .arg(TenantKeys::new(&env.namespace, &tenant).run_buffered(&run.id))
        .query_async(&mut conn.clone())
        .await?;
    let run = runs.get(&tenant, &run.id).await?;
    println!(
        "run {} of tenant `{tenant}` cancelled after {} page(s) and {} contacts read",
        run.id, run.pages_done, run.contacts_read
    );
    println!("  its remaining page jobs finish without reading");
    println!(
        "  the {} record(s) it read and not yet written are still written (to stop all Zoho calls: `crmsync pause {tenant}`)",
        buffered.unwrap_or(0).max(0)
    );
    println!("  tenant `{tenant}` can start a new run: `crmsync backfill {tenant}`");
    Ok(())
}
