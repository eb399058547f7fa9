//! `crmsync dead list|show|retry|purge|codes`: the dead-letter streams of both queues, filtered
//! by queue, tenant (from the job's payload) and error code (derived from the reason, see
//! `crmsync_worker::codes`); retried as fresh jobs after a fix, or purged.

use std::collections::BTreeMap;

use anyhow::bail;
use crmsync_producer::{BackfillPage, FlushWrites, Maintenance, RunError, RunStore};
use crmsync_queue::{DeadLetter, JobQueue, RedriveReport};
use crmsync_worker::codes;
use serde::Serialize;

use crate::Env;

#[derive(clap::Subcommand)]
pub enum DeadCmd {
    /// List dead letters, newest first.
    List(ListArgs),
    /// Show one dead letter in full, its payload pretty-printed.
    Show(ShowArgs),
    /// Put dead letters back into their queue as fresh jobs (attempts reset), after fixing
    /// what made them fail.
    Retry(RetryArgs),
    /// Delete dead letters.
    Purge(PurgeArgs),
    /// The error codes dead letters are filtered by, with what they mean.
    Codes,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    Backfill,
    Writes,
    Maintenance,
}

impl QueueName {
    const ALL: [QueueName; 3] = [QueueName::Backfill, QueueName::Writes, QueueName::Maintenance];

    fn as_str(self) -> &'static str {
        match self {
            QueueName::Backfill => crmsync_producer::BACKFILL_QUEUE,
            QueueName::Writes => crmsync_producer::WRITES_QUEUE,
            QueueName::Maintenance => crmsync_producer::MAINTENANCE_QUEUE,
        }
    }
}

#[derive(clap::Args)]
pub struct Filters {
    /// Only this queue.
    #[arg(long, value_enum)]
    queue: Option<QueueName>,
    /// Only jobs of this tenant (read from the job's payload).
    #[arg(long)]
    tenant: Option<String>,
    /// Only this error code, any case (`crmsync dead codes` lists them).
    #[arg(long)]
    code: Option<String>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The dead letter's id, as `crmsync dead list` shows it.
    dead_id: String,
    /// The queue to look in (needed only when both have a dead letter with this id).
    #[arg(long, value_enum)]
    queue: Option<QueueName>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["dead_ids", "all"])))]
pub struct RetryArgs {
    /// Dead letters to retry, by id.
    dead_ids: Vec<String>,
    /// Every dead letter that matches the filters.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filters: Filters,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["dead_ids", "all"])))]
pub struct PurgeArgs {
    /// Dead letters to delete, by id.
    dead_ids: Vec<String>,
    /// Every dead letter that matches the filters (requires --yes).
    #[arg(long, requires = "yes")]
    all: bool,
    /// Confirm deleting every dead letter that matches the filters.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    filters: Filters,
}

/// A dead letter as the CLI shows it.
#[derive(Debug, Clone, Serialize)]
struct DeadView {
    dead_id: String,
    queue: &'static str,
    /// From the payload's `tenant` (absent for entries that are not jobs).
    tenant: Option<String>,
    job_id: Option<String>,
    attempts: Option<u32>,
    max_attempts: Option<u32>,
    /// See `crmsync dead codes`.
    code: &'static str,
    dead_at_ms: Option<u64>,
    reason: String,
    /// The payload as JSON (a string when it is not JSON).
    payload: Option<serde_json::Value>,
    /// The queue entry the job was moved from.
    source_entry: Option<String>,
    /// Every field of the entry (for entries in an unknown format).
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<BTreeMap<String, String>>,
}

impl DeadView {
    fn new(queue: QueueName, d: DeadLetter, with_fields: bool) -> Self {
        let payload = d
            .payload
            .as_deref()
            .map(|p| serde_json::from_str(p).unwrap_or_else(|_| serde_json::Value::String(p.to_owned())));
        let tenant = payload
            .as_ref()
            .and_then(|p| p.get("tenant"))
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        let max_attempts = d
            .fields
            .iter()
            .find(|(k, _)| k == "m")
            .and_then(|(_, v)| v.parse().ok());
        DeadView {
            // Entries written before codes were recorded have none: OTHER.
            code: d.code.as_deref().and_then(codes::parse).unwrap_or("OTHER"),
            queue: queue.as_str(),
            tenant,
            job_id: d.job_id,
            attempts: d.attempts,
            max_attempts,
            dead_at_ms: d.dead_at_ms,
            reason: d.reason,
            payload,
            source_entry: d.source_entry,
            fields: with_fields.then(|| d.fields.into_iter().collect()),
            dead_id: d.dead_id,
        }
    }

    fn queue_name(&self) -> QueueName {
        QueueName::ALL
            .into_iter()
            .find(|q| q.as_str() == self.queue)
            .unwrap_or(QueueName::Writes)
    }
}

/// Filters as parsed: the code checked against the vocabulary.
struct Filter {
    queues: Vec<QueueName>,
    tenant: Option<String>,
    code: Option<&'static str>,
}

impl Filter {
    fn parse(f: &Filters) -> anyhow::Result<Self> {
        let code = match &f.code {
            None => None,
            Some(c) => match codes::parse(c) {
                Some(c) => Some(c),
                None => bail!(
                    "unknown error code `{c}`; the codes are: {} (see `crmsync dead codes`)",
                    codes::all().iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        Ok(Filter {
            queues: match f.queue {
                Some(q) => vec![q],
                None => QueueName::ALL.to_vec(),
            },
            tenant: f.tenant.clone(),
            code,
        })
    }

    fn matches(&self, v: &DeadView) -> bool {
        self.tenant.as_ref().is_none_or(|t| v.tenant.as_ref() == Some(t)) && self.code.is_none_or(|c| v.code == c)
    }
}

/// The queues, typed by their jobs (a retry checks that the payload decodes as one).
struct Queues {
    backfill: JobQueue<BackfillPage>,
    writes: JobQueue<FlushWrites>,
    maintenance: JobQueue<Maintenance>,
}

/// Dead letters read per call while scanning a stream.
const SCAN_PAGE: usize = 500;

impl Queues {
    fn new(env: &Env) -> anyhow::Result<Self> {
        let conn = env.conn()?;
        Ok(Queues {
            backfill: JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(&env.namespace)),
            writes: JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace)),
            maintenance: JobQueue::new(conn, crmsync_producer::maintenance_queue(&env.namespace)),
        })
    }

    async fn page(&self, q: QueueName, before: Option<&str>) -> anyhow::Result<Vec<DeadLetter>> {
        Ok(match q {
            QueueName::Backfill => self.backfill.dead_letters_before(before, SCAN_PAGE).await?,
            QueueName::Writes => self.writes.dead_letters_before(before, SCAN_PAGE).await?,
            QueueName::Maintenance => self.maintenance.dead_letters_before(before, SCAN_PAGE).await?,
        })
    }

    async fn get(&self, q: QueueName, id: &str) -> anyhow::Result<Option<DeadLetter>> {
        Ok(match q {
            QueueName::Backfill => self.backfill.dead_letter(id).await?,
            QueueName::Writes => self.writes.dead_letter(id).await?,
            QueueName::Maintenance => self.maintenance.dead_letter(id).await?,
        })
    }

    /// Matching dead letters of the filter's queues, newest first, at most `limit`.
    async fn scan(&self, f: &Filter, limit: Option<usize>) -> anyhow::Result<Vec<DeadView>> {
        let mut all = Vec::new();
        for &q in &f.queues {
            let mut found = 0;
            let mut before: Option<String> = None;
            'pages: loop {
                let page = self.page(q, before.as_deref()).await?;
                let Some(last) = page.last() else { break };
                before = Some(last.dead_id.clone());
                for d in page {
                    let v = DeadView::new(q, d, false);
                    if f.matches(&v) {
                        all.push(v);
                        found += 1;
                        if limit.is_some_and(|l| found >= l) {
                            break 'pages;
                        }
                    }
                }
            }
        }
        all.sort_by_key(|v| std::cmp::Reverse(entry_key(&v.dead_id)));
        if let Some(l) = limit {
            all.truncate(l);
        }
        Ok(all)
    }

    /// Finds dead letters by id in the given queues. Errors on an id present in two queues.
    async fn find(
        &self,
        queues: &[QueueName],
        ids: &[String],
        with_fields: bool,
    ) -> anyhow::Result<(Vec<DeadView>, Vec<String>)> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for id in ids {
            let mut hits = Vec::new();
            for &q in queues {
                if let Some(d) = self.get(q, id).await? {
                    hits.push(DeadView::new(q, d, with_fields));
                }
            }
            match hits.len() {
                0 => missing.push(id.clone()),
                1 => found.extend(hits),
                _ => bail!("both queues have a dead letter `{id}`; say which with --queue backfill or --queue writes"),
            }
        }
        Ok((found, missing))
    }

    /// The dead letters a retry or purge acts on: named ones (the filters must match too), or
    /// all that match the filters. Returns them and the named ids not acted on, with why.
    async fn select(
        &self,
        filters: &Filters,
        ids: &[String],
        all: bool,
    ) -> anyhow::Result<(Vec<DeadView>, Vec<(String, String)>)> {
        let f = Filter::parse(filters)?;
        if all {
            return Ok((self.scan(&f, None).await?, Vec::new()));
        }
        let (found, missing) = self.find(&f.queues, ids, false).await?;
        let mut skipped: Vec<(String, String)> = missing
            .into_iter()
            .map(|id| (id, "no such dead letter".to_owned()))
            .collect();
        let mut chosen = Vec::new();
        for v in found {
            if f.matches(&v) {
                chosen.push(v);
            } else {
                skipped.push((v.dead_id, "does not match the filters; left alone".into()));
            }
        }
        Ok((chosen, skipped))
    }
}

/// Stream ids (`<ms>-<seq>`) in time order.
fn entry_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// How long ago a time in ms was.
pub(crate) fn ago(ms: u64) -> String {
    let secs = crmsync_queue::now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// At most `n` characters of `s` on one line, with `…` when cut.
pub(crate) fn cut(s: &str, n: usize) -> String {
    let line = s.replace(['\n', '\r', '\t'], " ");
    if line.chars().count() <= n {
        return line;
    }
    let mut out: String = line.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub async fn run(env: &Env, cmd: DeadCmd) -> anyhow::Result<()> {
    match cmd {
        DeadCmd::List(args) => list(env, args).await,
        DeadCmd::Show(args) => show(env, args).await,
        DeadCmd::Retry(args) => retry(env, args).await,
        DeadCmd::Purge(args) => purge(env, args).await,
        DeadCmd::Codes => {
            for (c, meaning) in codes::all() {
                println!("{c:<26} {meaning}");
            }
            Ok(())
        }
    }
}

async fn list(env: &Env, args: ListArgs) -> anyhow::Result<()> {
    let f = Filter::parse(&args.filters)?;
    let views = Queues::new(env)?.scan(&f, Some(args.limit)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<16} {:<22} {:>8} {:<24} {:<8} REASON",
        "DEAD ID", "QUEUE", "TENANT", "JOB", "ATTEMPTS", "CODE", "DEAD AT"
    );
    for v in &views {
        println!(
            "{:<16} {:<8} {:<16} {:<22} {:>8} {:<24} {:<8} {}",
            v.dead_id,
            v.queue,
            v.tenant.as_deref().unwrap_or("-"),
            v.job_id.as_deref().unwrap_or("-"),
            match (v.attempts, v.max_attempts) {
                (Some(a), Some(m)) => format!("{a}/{m}"),
                (Some(a), None) => a.to_string(),
                _ => "-".into(),
            },
            v.code,
            v.dead_at_ms.map(ago).unwrap_or_else(|| "-".into()),
            cut(&v.reason, 80)
        );
    }
    if views.is_empty() {
        println!("(no dead letter matches)");
    }
    Ok(())
}

async fn show(env: &Env, args: ShowArgs) -> anyhow::Result<()> {
    let queues = Queues::new(env)?;
    let which = match args.queue {
        Some(q) => vec![q],
        None => QueueName::ALL.to_vec(),
    };
    let (found, _) = queues.find(&which, std::slice::from_ref(&args.dead_id), true).await?;
    let Some(v) = found.into_iter().next() else {
        bail!("no dead letter `{}`; list them with `crmsync dead list`", args.dead_id);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let meaning = codes::all()
        .into_iter()
        .find(|(c, _)| *c == v.code)
        .map(|(_, m)| m)
        .unwrap_or("");
    println!("dead letter {} in queue {}", v.dead_id, v.queue);
    println!("  job        {}", v.job_id.as_deref().unwrap_or("- (not a job)"));
    println!("  tenant     {}", v.tenant.as_deref().unwrap_or("-"));
    println!("  code       {} ({meaning})", v.code);
    println!(
        "  attempts   {}",
        match (v.attempts, v.max_attempts) {
            (Some(a), Some(m)) => format!("{a} of {m}"),
            (Some(a), None) => a.to_string(),
            _ => "-".into(),
        }
    );
    println!(
        "  dead at    {}",
        v.dead_at_ms
            .map(|ms| format!("{ms} ms ({})", ago(ms)))
            .unwrap_or_else(|| "-".into())
    );
    println!("  from entry {}", v.source_entry.as_deref().unwrap_or("-"));
    println!("  reason     {}", v.reason);
    match &v.payload {
        Some(p) => {
            println!("  payload");
            for line in serde_json::to_string_pretty(p)?.lines() {
                println!("    {line}");
            }
        }
        None => println!("  payload    -"),
    }
    if v.job_id.is_none() || v.code == "UNDECODABLE" {
        println!("  fields (the entry as stored; it cannot be retried, only purged)");
        for (k, val) in v.fields.iter().flatten() {
            println!("    {k:<8} {}", cut(val, 200));
        }
    }
    Ok(())
}

/// Why a backfill page should not be retried, if so: a page of a run that has ended finishes
/// without reading (see `crmsync_worker::backfill`), so retrying it would do nothing.
async fn ended_run(runs: &RunStore, v: &DeadView) -> anyhow::Result<Option<String>> {
    let Some(p) = &v.payload else { return Ok(None) };
    let (Some(tenant), Some(run)) = (
        p.get("tenant").and_then(|t| t.as_str()),
        p.get("run_id").and_then(|r| r.as_str()),
    ) else {
        return Ok(None);
    };
    let start_again = format!("start a new run with `crmsync backfill {tenant}` (unchanged contacts cost no credit)");
    Ok(match runs.get(tenant, run).await {
        Ok(r) if r.status.is_active() => None,
        Ok(r) => Some(format!(
            "its run {run} is {}: pages of an ended run finish without reading; {start_again}",
            r.status.as_str()
        )),
        Err(RunError::NotFound(_)) => Some(format!("its run {run} no longer exists; {start_again}")),
        Err(e) => return Err(e.into()),
    })
}

async fn retry(env: &Env, args: RetryArgs) -> anyhow::Result<()> {
    let queues = Queues::new(env)?;
    let runs = RunStore::new(env.conn()?, &env.namespace);
    let (chosen, mut skipped) = queues.select(&args.filters, &args.dead_ids, args.all).await?;
    if chosen.is_empty() && skipped.is_empty() {
        println!("no dead letter matches; nothing to retry");
        return Ok(());
    }
    let mut by_queue: BTreeMap<QueueName, Vec<String>> = BTreeMap::new();
    let mut tenants: BTreeMap<String, &DeadView> = BTreeMap::new();
    for v in &chosen {
        if v.queue_name() == QueueName::Backfill
            && let Some(why) = ended_run(&runs, v).await?
        {
            skipped.push((v.dead_id.clone(), why));
            continue;
        }
        by_queue.entry(v.queue_name()).or_default().push(v.dead_id.clone());
        tenants.insert(v.dead_id.clone(), v);
    }
    let mut retried = 0;
    for (q, ids) in by_queue {
        let report: RedriveReport = match q {
            QueueName::Backfill => queues.backfill.redrive(&ids).await?,
            QueueName::Writes => queues.writes.redrive(&ids).await?,
            QueueName::Maintenance => queues.maintenance.redrive(&ids).await?,
        };
        for r in &report.redriven {
            let tenant = tenants.get(&r.dead_id).and_then(|v| v.tenant.as_deref()).unwrap_or("-");
            println!(
                "retried {} ({}, tenant `{tenant}`): job {} is queued again with fresh attempts",
                r.dead_id,
                q.as_str(),
                r.job_id
            );
        }
        retried += report.redriven.len();
        skipped.extend(report.refused.into_iter().map(|r| (r.dead_id, r.reason)));
        skipped.extend(
            report
                .missing
                .into_iter()
                .map(|id| (id, "no longer a dead letter (retried or purged meanwhile)".to_owned())),
        );
    }
    for (id, why) in &skipped {
        println!("not retried {id}: {why}");
    }
    println!("{retried} dead letter(s) retried");
    if !skipped.is_empty() {
        bail!("{} dead letter(s) could not be retried (see above)", skipped.len());
    }
    Ok(())
}

async fn purge(env: &Env, args: PurgeArgs) -> anyhow::Result<()> {
    let queues = Queues::new(env)?;
    let (chosen, skipped) = queues.select(&args.filters, &args.dead_ids, args.all).await?;
    let mut by_queue: BTreeMap<QueueName, Vec<String>> = BTreeMap::new();
    for v in &chosen {
        by_queue.entry(v.queue_name()).or_default().push(v.dead_id.clone());
    }
    let mut purged = 0;
    for (q, ids) in by_queue {
        purged += match q {
            QueueName::Backfill => queues.backfill.purge_dead(&ids).await?,
            QueueName::Writes => queues.writes.purge_dead(&ids).await?,
            QueueName::Maintenance => queues.maintenance.purge_dead(&ids).await?,
        };
    }
    for (id, why) in &skipped {
        println!("not purged {id}: {why}");
    }
    println!("{purged} dead letter(s) purged");
    if !skipped.is_empty() {
        bail!("{} dead letter(s) could not be purged (see above)", skipped.len());
    }
    Ok(())
}
