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
    /// Of which change-feed entries.
    waiting_feed: u64,
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
        let (waiting, waiting_feed, to_refresh) = (w.entries, w.feed, w.refresh);
        let counters = buffer.feed_stats().await?;
        all.push(FeedView {
            tenant,
            waiting,
            waiting_feed,
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
    // Two partitions, each adding up: what became of every change received (or contact
    // re-read), and of every write it queued.
    let mut changes = Table::new(&[
        ("TENANT", Align::Left),
        ("CHANGES", Align::Right),
        ("RE-READ", Align::Right),
        ("UNCHANGED", Align::Right),
        ("STALE", Align::Right),
        ("SHARED", Align::Right),
        ("NO-OP", Align::Right),
        ("QUEUED", Align::Right),
    ]);
    let mut writes = Table::new(&[
        ("TENANT", Align::Left),
        ("QUEUED", Align::Right),
        ("INSERTED", Align::Right),
        ("UPDATED", Align::Right),
        ("DELETED", Align::Right),
        ("FAILED", Align::Right),
        ("COALESCED", Align::Right),
        ("WAITING", Align::Right),
        ("CALLS", Align::Right),
        ("CREDITS", Align::Right),
    ]);
    for v in &all {
        let c = |k: &str| v.counters.get(k).copied().unwrap_or(0);
        let failed: u64 = v
            .counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, n)| n)
            .sum();
        changes.row(vec![
            v.tenant.clone(),
            thousands(c("changes")),
            thousands(c("refreshed")),
            thousands(c("unchanged")),
            thousands(c("stale")),
            thousands(c("shared")),
            thousands(c("noop")),
            thousands(c("queued")),
        ]);
        writes.row(vec![
            v.tenant.clone(),
            thousands(c("pushed")),
            thousands(c("inserted")),
            thousands(c("updated")),
            thousands(c("deleted")),
            thousands(failed),
            thousands(c("coalesced")),
            thousands(v.waiting_feed),
            thousands(c("calls")),
            thousands(c("credits")),
        ]);
    }
    println!("Changes: CHANGES + RE-READ = UNCHANGED + STALE + SHARED + NO-OP + QUEUED");
    changes.print();
    println!(
        "  unchanged: the record already held it; stale: older than a change already applied; shared: its email\n  \
         is another contact's; no-op: nothing to write (a deletion of a contact with no record)\n"
    );
    println!("Writes: QUEUED = INSERTED + UPDATED + DELETED + FAILED + COALESCED + WAITING");
    writes.print();
    println!("  coalesced: replaced by a newer change of the same contact before it was written");
    let backfill_waiting: u64 = all.iter().map(|v| v.waiting.saturating_sub(v.waiting_feed)).sum();
    if backfill_waiting > 0 {
        println!(
            "  (and {} backfill record(s) waiting to be written)",
            thousands(backfill_waiting)
        );
    }
    Ok(())
}
