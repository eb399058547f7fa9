//! `crmsync reconcile T [--dry-run]`: compare the CRM with the book and write the differences
//! (or only report them).

use crmsync_producer::{BackfillPage, Run, RunStatus, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobQueue};
use crmsync_redis::num::thousands;
use crmsync_tenants::{CrmKind, TenantKeys};

use crate::Env;

#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The tenant.
    tenant: String,
    /// Change nothing: read the CRM and the book and print the drift by kind, with examples.
    #[arg(long)]
    dry_run: bool,
    /// Start the run and return (follow it with `crmsync runs` or `crmsync status`).
    #[arg(long)]
    no_wait: bool,
}

/// What each kind of drift means, in the order printed.
const KINDS: &[(&str, &str)] = &[
    (
        "missing",
        "in the book, not in the CRM (deleted there, or never written)",
    ),
    ("stale", "the book changed and the CRM was not told (a missed webhook)"),
    (
        "crm_edited",
        "edited in the CRM since crmsync wrote it (the book wins unless --keep-crm-edits)",
    ),
    (
        "orphaned",
        "written by crmsync for a contact the book no longer has (deleted, or no usable email)",
    ),
    ("not_ours", "in the CRM, not written by crmsync: never touched"),
];

pub async fn run(env: &Env, args: ReconcileArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let site = crmsync_ops::Site::of(&conn, &env.namespace, &args.tenant).await?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(&env.namespace));
    let run = match runs.start_reconcile(&args.tenant, args.dry_run).await? {
        StartOutcome::Started(run) => {
            let first = crmsync_producer::schedule::first_job(&args.tenant, &run.id);
            queue
                .enqueue_with(
                    &first,
                    EnqueueOptions::default().idempotency_key(first.idempotency_key()),
                )
                .await?;
            println!(
                "{} run {} started for tenant `{}`",
                if args.dry_run { "dry reconcile" } else { "reconcile" },
                run.id,
                args.tenant
            );
            run
        }
        StartOutcome::AlreadyRunning(run) => anyhow::bail!(
            "tenant `{}` already has run {} in progress; one run at a time (see `crmsync runs {}`)",
            args.tenant,
            run.id,
            args.tenant
        ),
    };
    if args.no_wait {
        println!("follow it with `crmsync runs {}` or `crmsync status`", args.tenant);
        return Ok(());
    }
    let finished = crate::backfill::follow(&runs, &conn, &env.namespace, vec![run]).await?;
    let run = &finished[0];
    let examples: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(TenantKeys::new(&env.namespace, &args.tenant).run_examples(&run.id))
        .query_async(&mut conn.clone())
        .await?;
    print!("{}", report(run, site.kind, &examples));
    anyhow::ensure!(run.status == RunStatus::Completed, "the run did not complete");
    Ok(())
}

/// What a reconcile found (and, unless dry, fixed and what it cost).
pub fn report(run: &Run, kind: CrmKind, examples: &std::collections::HashMap<String, String>) -> String {
    let n = |k: &str| run.drift.get(k).copied().unwrap_or(0);
    let mut s = format!(
        "\nreconcile {} ({}{}): {}\n  CRM records read {} · contacts read {} · in sync {}\n",
        run.id,
        run.tenant,
        if run.dry_run { ", dry run" } else { "" },
        run.status.as_str(),
        thousands(n("crm_read")),
        thousands(run.contacts_read),
        thousands(n("in_sync")),
    );
    let mut drift = 0;
    for (k, what) in KINDS {
        let count = n(k);
        if *k != "not_ours" {
            drift += count;
        }
        let ex: Vec<String> = examples
            .get(*k)
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default();
        s.push_str(&format!(
            "  {:<11} {:>7}  {what}{}\n",
            k.replace('_', " "),
            thousands(count),
            if ex.is_empty() {
                String::new()
            } else {
                format!("\n              e.g. {}", ex.join(", "))
            }
        ));
    }
    let unit = kind.budget_unit();
    if run.dry_run {
        s.push_str(&format!(
            "  nothing was changed; {} difference(s) to fix; reading cost {} {unit}\n  run `crmsync reconcile {}` to fix them\n",
            thousands(drift),
            thousands(run.credits),
            run.tenant
        ));
    } else {
        s.push_str(&format!(
            "  fixed: inserted {} · updated {} · deleted {} · rejected {}; {} calls, {} {unit} in all (reads included)\n",
            thousands(run.inserted),
            thousands(run.updated),
            thousands(run.deleted),
            thousands(run.failed_total()),
            thousands(run.calls),
            thousands(run.credits)
        ));
    }
    s
}
