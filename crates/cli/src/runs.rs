//! `crmsync runs [<tenant>]`: backfill runs with their counts.

use crmsync_producer::RunStore;
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
        "{:<36} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "RUN", "STATUS", "DONE", "READ", "INSERTED", "UPDATED", "SKIPPED", "REJECTED", "CREDITS"
    );
    for r in all {
        let done = r
            .progress()
            .map(|p| format!("{:.0}%", p * 100.0))
            .unwrap_or_else(|| format!("{}p", r.pages_done));
        println!(
            "{:<36} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.id,
            r.status.as_str(),
            done,
            r.contacts_read,
            r.inserted,
            r.updated,
            r.skipped_total(),
            r.failed_total(),
            r.credits
        );
    }
    Ok(())
}
