//! `crmsync feed [<tenant>]`: the webhook receivers' counters, the change feed's counters per
//! tenant, and what waits.

use std::collections::BTreeMap;

use crmsync_redis::num::thousands;
use crmsync_tenants::TenantStore;
use serde::Serialize;

use crate::Env;
use crate::out::{Align, Table};

#[derive(clap::Args)]
pub struct FeedArgs {
    /// Only this tenant.
    tenant: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct FeedView {
    tenant: String,
    /// Entries waiting to be written (change feed and backfill together).
    waiting: u64,
    /// Contacts waiting to be re-read from Nylas.
    to_refresh: u64,
    /// Counters since the tenant's first change (see ARCHITECTURE.md, `feed:stats`).
    counters: BTreeMap<String, u64>,
}

pub async fn run(env: &Env, args: FeedArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let tenants = match args.tenant {
        Some(t) => vec![t],
        None => TenantStore::new(conn.clone(), &env.namespace, None).ids().await?,
    };
    let receivers: BTreeMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{}:webhook:stats", env.namespace))
        .query_async(&mut conn.clone())
        .await?;
    let mut all = Vec::new();
    for tenant in tenants {
        let buffer = crmsync_ops::Site::of(&conn, &env.namespace, &tenant)
            .await?
            .buffer(&conn, &env.namespace);
        let w = buffer.waiting().await?;
        let (waiting, to_refresh) = (w.entries, w.refresh);
        let counters = buffer.feed_stats().await?;
        all.push(FeedView {
            tenant,
            waiting,
            to_refresh,
            counters,
        });
    }
    if args.json {
        let out = serde_json::json!({ "receivers": receivers, "tenants": all });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Webhook receivers: {}\n",
        if receivers.is_empty() {
            "no notification yet".to_owned()
        } else {
            receivers
                .iter()
                .map(|(k, n)| format!("{k} {}", thousands(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let mut table = Table::new(&[
        ("TENANT", Align::Left),
        ("WAITING", Align::Right),
        ("CHANGES", Align::Right),
        ("UNCHANGED", Align::Right),
        ("STALE", Align::Right),
        ("SHARED", Align::Right),
        ("INSERTED", Align::Right),
        ("UPDATED", Align::Right),
        ("DELETED", Align::Right),
        ("FAILED", Align::Right),
        ("CALLS", Align::Right),
        ("CREDITS", Align::Right),
    ]);
    for v in all {
        let c = |k: &str| v.counters.get(k).copied().unwrap_or(0);
        let failed: u64 = v
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, n)| n)
            .sum();
        table.row(vec![
            v.tenant.clone(),
            thousands(v.waiting),
            thousands(c("changes")),
            thousands(c("unchanged")),
            thousands(c("stale")),
            thousands(c("shared")),
            thousands(c("inserted")),
            thousands(c("updated")),
            thousands(c("deleted")),
            thousands(failed),
            thousands(c("calls")),
            thousands(c("credits")),
        ]);
    }
    table.print();
    Ok(())
}
