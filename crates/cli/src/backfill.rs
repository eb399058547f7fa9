//! `crmsync backfill <tenant>... [--follow] [--force]`: start (or join, with `--follow`) a
//! backfill run per tenant, show live progress, and end with each run's summary.

use std::time::Duration;

use crmsync_producer::{BackfillPage, Run, RunStatus, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobQueue};
use crmsync_tenants::{CrmKind, StoreError, TenantStore};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::Env;

#[derive(clap::Args)]
pub struct BackfillArgs {
    /// Tenants to backfill.
    #[arg(required = true)]
    tenants: Vec<String>,
    /// Show live progress until the runs end, then their summaries. A tenant whose run is
    /// already in progress is joined instead of refused.
    #[arg(long)]
    follow: bool,
    /// Write every contact, even those unchanged since they were last written.
    #[arg(long)]
    force: bool,
}

pub async fn run(env: &Env, args: BackfillArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let tenants = TenantStore::new(conn.clone(), &env.namespace, None);
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(&env.namespace));
    let mut followed = Vec::new();
    let mut kinds = std::collections::HashMap::new();
    for tenant in &args.tenants {
        match tenants.view(tenant).await {
            Ok(v) => {
                let kind = v["crm"]["kind"]
                    .as_str()
                    .and_then(CrmKind::parse)
                    .unwrap_or(CrmKind::Zoho);
                kinds.insert(tenant.clone(), kind);
            }
            Err(StoreError::NotFound(_)) => {
                anyhow::bail!("no tenant `{tenant}`; add it with `crmsync tenant add {tenant} ...`")
            }
            Err(e) => return Err(e.into()),
        }
        match runs.start(tenant, args.force).await? {
            StartOutcome::Started(run) => {
                let first = BackfillPage {
                    tenant: tenant.clone(),
                    run_id: run.id.clone(),
                    page: 0,
                    cursor: None,
                    force: args.force,
                    mode: crmsync_producer::PageMode::Backfill,
                };
                if let Err(e) = queue
                    .enqueue_with(
                        &first,
                        EnqueueOptions::default().idempotency_key(first.idempotency_key()),
                    )
                    .await
                {
                    if let Err(end) = runs
                        .end(tenant, &run.id, RunStatus::Failed, &format!("could not enqueue: {e}"))
                        .await
                    {
                        eprintln!(
                            "warning: run {} could not be marked failed either ({end}); it ends when its lock expires",
                            run.id
                        );
                    }
                    return Err(e.into());
                }
                println!("backfill run {} started for tenant `{tenant}`", run.id);
                followed.push(run);
            }
            StartOutcome::AlreadyRunning(run) if args.follow => {
                println!("tenant `{tenant}` already has run {} in progress; following it", run.id);
                followed.push(run);
            }
            StartOutcome::AlreadyRunning(run) => anyhow::bail!(
                "tenant `{tenant}` already has backfill run {} in progress ({} pages, {} contacts read so far); \
                 follow it with `crmsync backfill {tenant} --follow`, or see `crmsync runs {tenant}`",
                run.id,
                run.pages_done,
                run.contacts_read
            ),
        }
    }
    if !args.follow {
        println!("follow progress with `crmsync runs` or `crmsync status`");
        return Ok(());
    }
    let finished = follow(&runs, followed).await?;
    println!();
    for run in &finished {
        let kind = kinds.get(&run.tenant).copied().unwrap_or(CrmKind::Zoho);
        print!("{}", summary(run, kind));
    }
    let failed: Vec<&Run> = finished.iter().filter(|r| r.status != RunStatus::Completed).collect();
    anyhow::ensure!(failed.is_empty(), "{} run(s) did not complete", failed.len());
    Ok(())
}

pub(crate) async fn follow(runs: &RunStore, mut list: Vec<Run>) -> anyhow::Result<Vec<Run>> {
    let multi = MultiProgress::new();
    let spinner = ProgressStyle::with_template("{prefix:<12} {spinner} page {pos} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressStyle::with_template("{prefix:<12} [{bar:30}] {pos}/{len} pages {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = list
        .iter()
        .map(|r| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(spinner.clone());
            pb.set_prefix(r.tenant.clone());
            pb
        })
        .collect();
    loop {
        let mut running = 0;
        for (run, pb) in list.iter_mut().zip(&bars) {
            if run.status.is_active() {
                *run = runs.get(&run.tenant, &run.id).await?;
            }
            if let Some(last) = run.last_page
                && pb.length() != Some(last + 1)
            {
                pb.set_style(bar.clone());
                pb.set_length(last + 1);
            }
            pb.set_position(run.pages_done);
            pb.set_message(format!(
                "{} read · {} new · {} updated · {} skipped · {} rejected · {} credits",
                run.contacts_read,
                run.inserted,
                run.updated,
                run.skipped_total(),
                run.failed_total(),
                run.credits
            ));
            if run.status.is_active() {
                running += 1;
                pb.tick();
            } else if !pb.is_finished() {
                pb.finish_with_message(format!("{} — {} contacts read", run.status.as_str(), run.contacts_read));
            }
        }
        if running == 0 {
            return Ok(list);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A run's summary as printed at the end of `--follow` (and by the demo).
pub fn summary(run: &Run, kind: CrmKind) -> String {
    let secs = run
        .finished_at_ms
        .unwrap_or(run.updated_at_ms)
        .saturating_sub(run.started_at_ms) as f64
        / 1000.0;
    let written = run.inserted + run.updated;
    let profile = crmsync_sink::profile(kind);
    // The least a CRM's calls can cost for these records: Zoho 1 credit per 10 records
    // written, Salesforce 1 request per full batch of 200.
    let minimum = match kind {
        CrmKind::Zoho => written.div_ceil(10),
        CrmKind::Salesforce => written.div_ceil(profile.max_batch as u64),
    };
    let mut s = format!(
        "run {} ({}): {} in {:.1} s\n  contacts read {} · inserted {} · updated {} · unchanged {} · shortened to fit {}\n",
        run.id,
        run.tenant,
        run.status.as_str(),
        secs,
        run.contacts_read,
        run.inserted,
        run.updated,
        run.unchanged,
        run.adjusted
    );
    let skipped: Vec<String> = run.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
    s.push_str(&format!(
        "  skipped {}{}\n",
        run.skipped_total(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join(", "))
        }
    ));
    let failed: Vec<String> = run.failed.iter().map(|(c, n)| format!("{c} {n}")).collect();
    s.push_str(&format!(
        "  rejected by {} {}{}\n",
        kind.label(),
        run.failed_total(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    ));
    match kind {
        CrmKind::Zoho => s.push_str(&format!(
            "  Zoho calls {} · credits {} (minimum for {} records written: {})\n",
            run.calls, run.credits, written, minimum
        )),
        CrmKind::Salesforce => s.push_str(&format!(
            "  Salesforce API requests {} (minimum for {} records written: {} upserts of 200)\n",
            run.credits, written, minimum
        )),
    }
    if let Some(e) = &run.error {
        s.push_str(&format!("  error: {e}\n"));
    }
    s
}
