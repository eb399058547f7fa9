//! `crmsync feed [<tenant>]`: the webhook receivers' counters, the change feed's counters per
//! tenant, and what waits.

use std::collections::BTreeMap;

use crmsync_tenants::TenantStore;
use serde::Serialize;

use crate::Env;

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
        let buffer = crate::site::Site::of(&conn, &env.namespace, &tenant)
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
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "{:<20} {:>8} {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>6} {:>8}",
        "TENANT",
        "WAITING",
        "CHANGES",
        "UNCHANGED",
        "STALE",
        "SHARED",
        "INSERTED",
        "UPDATED",
        "DELETED",
        "FAILED",
        "CALLS",
        "CREDITS"
    );
    for v in all {
        let c = |k: &str| v.counters.get(k).copied().unwrap_or(0);
        let failed: u64 = v
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, n)| n)
            .sum();
        println!(
            "{:<20} {:>8} {:>8} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>6} {:>8}",
            v.tenant,
            v.waiting,
            c("changes"),
            c("unchanged"),
            c("stale"),
            c("shared"),
            c("inserted"),
            c("updated"),
            c("deleted"),
            failed,
            c("calls"),
            c("credits")
        );
    }
    Ok(())
}
