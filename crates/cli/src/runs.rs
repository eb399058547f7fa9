//! `crmsync runs [<tenant>]`: backfill and reconcile runs with their counts; `crmsync cancel
//! <run id>`.

use crmsync_producer::{Run, RunStore};
use crmsync_redis::num::{out_of, thousands};
use crmsync_redis::when::ago_text;
use crmsync_tenants::TenantKeys;
use crmsync_tenants::TenantStore;

use crate::Env;
use crate::out::{Align, Table};

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

/// A run as `crmsync runs --json` prints it: the run, and its records still waiting to be
/// written.
#[derive(serde::Serialize)]
struct RunRow {
    #[serde(flatten)]
    run: Run,
    /// Inserted, updated or deleted in the CRM.
    written: u64,
    /// Read and waiting in the write buffer (or a flush) to be written.
    waiting: u64,
}

/// How many of a run's records wait to be written.
async fn waiting(env: &Env, conn: &crmsync_queue::RedisConn, run: &Run) -> anyhow::Result<u64> {
    let n: Option<i64> = redis::cmd("GET")
        .arg(TenantKeys::new(&env.namespace, &run.tenant).run_buffered(&run.id))
        .query_async(&mut conn.clone())
        .await?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

pub async fn run(env: &Env, args: RunsArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let store = TenantStore::new(conn.clone(), &env.namespace, None);
    let tenants = match args.tenant {
        Some(t) => {
            // An unknown tenant is an error, not an empty table.
            store.view(&t).await?;
            vec![t]
        }
        None => store.ids().await?,
    };
    let mut all = Vec::new();
    for t in tenants {
        for run in runs.list(&t, args.limit).await? {
            let waiting = waiting(env, &conn, &run).await?;
            all.push(RunRow {
                written: run.inserted + run.updated + run.deleted,
                waiting,
                run,
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no runs yet; start one with `crmsync backfill <tenant>`");
        return Ok(());
    }
    let now = crmsync_queue::now_ms();
    // Pages read and records written are counted apart: a run whose every page is read may
    // still have most of its records to write (WAITING).
    let mut table = Table::new(&[
        ("RUN", Align::Left),
        ("KIND", Align::Left),
        ("STATUS", Align::Left),
        ("STARTED", Align::Left),
        ("PAGES", Align::Right),
        ("READ", Align::Right),
        ("WRITTEN", Align::Right),
        ("WAITING", Align::Right),
        ("UNCHANGED", Align::Right),
        ("SKIPPED", Align::Right),
        ("REJECTED", Align::Right),
        ("CREDITS", Align::Right),
    ])
    .title_columns(4);
    for row in &all {
        let r = &row.run;
        let pages = match r.last_page {
            Some(last) => out_of(r.pages_done, last + 1),
            None => thousands(r.pages_done),
        };
        let kind = match (r.kind, r.dry_run) {
            (crmsync_producer::RunKind::Reconcile, true) => "dry-run",
            (kind, _) => kind.as_str(),
        };
        table.row(vec![
            r.id.clone(),
            kind.to_owned(),
            r.status.as_str().to_owned(),
            ago_text(r.started_at_ms, now),
            pages,
            thousands(r.contacts_read),
            thousands(row.written),
            thousands(row.waiting),
            thousands(r.unchanged),
            thousands(r.skipped_total()),
            thousands(r.failed_total()),
            thousands(r.credits),
        ]);
    }
    table.print();
    Ok(())
}

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The run's id, as `crmsync runs` shows it.
    run_id: String,
    /// Why (kept with the run and in the audit log, `crmsync audit`).
    #[arg(long, default_value = "cancelled by an operator")]
    reason: String,
}

/// `crmsync cancel <run id>`: ends a running backfill as cancelled and frees its tenant for a
/// new run (see `crmsync_ops::tenant::TenantOps::cancel`).
pub async fn cancel(env: &Env, args: CancelArgs) -> anyhow::Result<()> {
    let out = crmsync_ops::tenant::TenantOps::new(env.conn()?, &env.namespace)
        .cancel(&crmsync_ops::Actor::cli(), &args.run_id, &args.reason)
        .await?;
    println!("{}", out.message);
    Ok(())
}
