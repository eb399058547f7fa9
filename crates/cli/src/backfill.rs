//! `crmsync backfill <tenant>... [--follow] [--force]`: start (or join, with `--follow`) a
//! backfill run per tenant, show live progress, and end with each run's summary.

use std::time::Duration;

use crmsync_producer::{BackfillPage, Run, RunStatus, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobQueue};
use crmsync_redis::num::{out_of, thousands};
use crmsync_tenants::{CrmKind, TenantKeys, TenantStore};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::Env;
use crmsync_ops::one_line;

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
    // Every tenant is checked before any run starts: a typo in the third name starts nothing.
    for tenant in &args.tenants {
        let v = tenants.view(tenant).await?;
        let kind = v["crm"]["kind"]
            .as_str()
            .and_then(CrmKind::parse)
            .unwrap_or(CrmKind::Zoho);
        kinds.insert(tenant.clone(), kind);
    }
    for tenant in &args.tenants {
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
                thousands(run.pages_done),
                thousands(run.contacts_read)
            ),
        }
    }
    if !args.follow {
        println!("follow progress with `crmsync runs` or `crmsync status`");
        return Ok(());
    }
    let finished = follow(&runs, &conn, &env.namespace, followed).await?;
    println!();
    for run in &finished {
        let kind = kinds.get(&run.tenant).copied().unwrap_or(CrmKind::Zoho);
        print!("{}", summary(run, kind));
    }
    let failed: Vec<&Run> = finished.iter().filter(|r| r.status != RunStatus::Completed).collect();
    anyhow::ensure!(failed.is_empty(), "{} run(s) did not complete", failed.len());
    Ok(())
}

/// Terminal columns a `--follow` line may take: every line fits an 80-column terminal.
const FOLLOW_WIDTH: usize = 79;

/// What `--follow` shows of a run, on three lines of at most 80 columns: its pages and
/// contacts read (beside the bar), what was written apart from what waits to be written, and
/// what was skipped, rejected and spent.
fn follow_message(run: &Run, waiting: u64) -> String {
    let pages = match run.last_page {
        Some(last) => format!("{} pages", out_of(run.pages_done, last + 1)),
        None => format!("{} pages", thousands(run.pages_done)),
    };
    let state = if run.status.is_active() {
        String::new()
    } else {
        format!("{} · ", run.status.as_str())
    };
    let first = format!("{state}{pages} · {} read", thousands(run.contacts_read));
    let mut written = format!(
        "  {} written ({} new, {} updated",
        thousands(run.inserted + run.updated + run.deleted),
        thousands(run.inserted),
        thousands(run.updated)
    );
    if run.deleted > 0 {
        written.push_str(&format!(", {} deleted", thousands(run.deleted)));
    }
    written.push_str(&format!(
        ") · {} waiting · {} unchanged",
        thousands(waiting),
        thousands(run.unchanged)
    ));
    let rest = format!(
        "  {} skipped · {} rejected · {} calls · {} credits",
        thousands(run.skipped_total()),
        thousands(run.failed_total()),
        thousands(run.calls),
        thousands(run.credits)
    );
    // The bar and the tenant take 40 columns of the first line.
    [
        one_line(&first, FOLLOW_WIDTH - 40),
        one_line(&written, FOLLOW_WIDTH),
        one_line(&rest, FOLLOW_WIDTH),
    ]
    .join("\n")
}

/// Shows the runs' progress (on stderr, on a terminal) until they end; returns them as they
/// ended.
pub(crate) async fn follow(
    runs: &RunStore,
    conn: &crmsync_queue::RedisConn,
    namespace: &str,
    mut list: Vec<Run>,
) -> anyhow::Result<Vec<Run>> {
    let multi = MultiProgress::new();
    let spinner = ProgressStyle::with_template("{prefix:<12} {spinner:26} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressStyle::with_template("{prefix:<12} [{bar:24}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = list
        .iter()
        .map(|r| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(spinner.clone());
            pb.set_prefix(one_line(&r.tenant, 12));
            pb
        })
        .collect();
    loop {
        let mut running = 0;
        for (run, pb) in list.iter_mut().zip(&bars) {
            if run.status.is_active() {
                *run = runs.get(&run.tenant, &run.id).await?;
            }
            let waiting: Option<i64> = redis::cmd("GET")
                .arg(TenantKeys::new(namespace, &run.tenant).run_buffered(&run.id))
                .query_async(&mut conn.clone())
                .await?;
            if let Some(last) = run.last_page
                && pb.length() != Some(last + 1)
            {
                pb.set_style(bar.clone());
                pb.set_length(last + 1);
            }
            pb.set_position(run.pages_done);
            pb.set_message(follow_message(run, waiting.unwrap_or(0).max(0) as u64));
            if run.status.is_active() {
                running += 1;
                pb.tick();
            } else if !pb.is_finished() {
                pb.finish();
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
        "run {} ({}): {} in {:.1} s\n  contacts read {} · unchanged {} · shortened to fit {}\n",
        run.id,
        run.tenant,
        run.status.as_str(),
        secs,
        thousands(run.contacts_read),
        thousands(run.unchanged),
        thousands(run.adjusted)
    );
    s.push_str(&format!(
        "  written {}: inserted {} · updated {}{}\n",
        thousands(run.inserted + run.updated + run.deleted),
        thousands(run.inserted),
        thousands(run.updated),
        if run.deleted > 0 {
            format!(" · deleted {}", thousands(run.deleted))
        } else {
            String::new()
        }
    ));
    let skipped: Vec<String> = run
        .skipped
        .iter()
        .map(|(r, n)| format!("{r} {}", thousands(*n)))
        .collect();
    s.push_str(&format!(
        "  skipped {}{}\n",
        thousands(run.skipped_total()),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join(", "))
        }
    ));
    let failed: Vec<String> = run
        .failed
        .iter()
        .map(|(c, n)| format!("{c} {}", thousands(*n)))
        .collect();
    s.push_str(&format!(
        "  rejected by {} {}{}\n",
        kind.label(),
        thousands(run.failed_total()),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    ));
    match kind {
        CrmKind::Zoho => s.push_str(&format!(
            "  Zoho calls {} · credits {} (minimum for {} records written: {})\n",
            thousands(run.calls),
            thousands(run.credits),
            thousands(written),
            thousands(minimum)
        )),
        CrmKind::Salesforce => s.push_str(&format!(
            "  Salesforce API requests {} (minimum for {} records written: {} upserts of 200)\n",
            thousands(run.credits),
            thousands(written),
            thousands(minimum)
        )),
    }
    if let Some(e) = &run.error {
        s.push_str(&format!("  error: {e}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scale: u64) -> Run {
        Run {
            id: "acme-20261203-140509-ab12".into(),
            tenant: "acme".into(),
            kind: crmsync_producer::RunKind::Backfill,
            dry_run: false,
            status: RunStatus::Running,
            started_at_ms: 0,
            finished_at_ms: None,
            updated_at_ms: 0,
            force: false,
            pages_done: 4 * scale,
            last_page: Some(8 * scale - 1),
            contacts_read: 800 * scale,
            mapped: 790 * scale,
            inserted: 500 * scale,
            updated: 200 * scale,
            deleted: 0,
            unchanged: 60 * scale,
            adjusted: 0,
            skipped: [("no_email".to_owned(), 10 * scale)].into(),
            failed: [("INVALID_DATA".to_owned(), 2 * scale)].into(),
            calls: 8 * scale,
            credits: 70 * scale,
            drift: Default::default(),
            error: None,
        }
    }

    /// `--follow` shows updates and credits, and every line fits 80 columns (the bar and the
    /// tenant take 40 of the first).
    #[test]
    fn follow_lines_show_every_count_within_80_columns() {
        let m = follow_message(&run(1), 30);
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], "4/8 pages · 800 read");
        assert_eq!(
            lines[1],
            "  700 written (500 new, 200 updated) · 30 waiting · 60 unchanged"
        );
        assert_eq!(lines[2], "  10 skipped · 2 rejected · 8 calls · 70 credits");
        for scale in [1, 1_000, 100_000] {
            let m = follow_message(&run(scale), 30 * scale);
            let lines: Vec<&str> = m.lines().collect();
            assert!(lines[0].chars().count() + 40 <= 80, "{m}");
            assert!(lines[1..].iter().all(|l| l.chars().count() <= 80), "{m}");
            assert!(m.contains("updated") && m.contains("credits"), "{m}");
        }
    }
}
