//! `crmsync dead list|show|retry|purge|codes`: the dead-letter streams of both queues, filtered
//! by queue, tenant (from the job's payload) and error code (derived from the reason, see
//! `crmsync_worker::codes`); retried as fresh jobs after a fix, or purged.

use anyhow::bail;
use crmsync_ops::Actor;
use crmsync_ops::dead::{DeadFilter, DeadLetters, DeadRef, DeadView, Skipped};
use crmsync_ops::one_line;
use crmsync_redis::num::thousands;
use crmsync_redis::when::{ago_text, human};
use crmsync_worker::codes;

use crate::Env;
use crate::out::{Align, Table};

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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    Backfill,
    Writes,
    Maintenance,
}

impl From<QueueName> for crmsync_ops::dead::QueueName {
    fn from(q: QueueName) -> Self {
        match q {
            QueueName::Backfill => Self::Backfill,
            QueueName::Writes => Self::Writes,
            QueueName::Maintenance => Self::Maintenance,
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
    /// Why (kept in the audit log, `crmsync audit`).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    filters: Filters,
}

impl Filters {
    fn filter(&self) -> anyhow::Result<DeadFilter> {
        Ok(DeadFilter::new(
            self.queue.map(Into::into),
            self.tenant.as_deref(),
            self.code.as_deref(),
        )?)
    }
}

/// The dead letters a retry or purge acts on: the named ones that match the filters too, or
/// every one that matches them; with how the audit log names them.
async fn select(
    dead: &DeadLetters,
    filters: &Filters,
    ids: &[String],
    all: bool,
) -> anyhow::Result<(Vec<DeadView>, Vec<Skipped>, String)> {
    let f = filters.filter()?;
    if all {
        let (chosen, skipped) = dead.select(&f, &[]).await?;
        return Ok((chosen, skipped, format!("every one of the {}", f.describe())));
    }
    let refs: Vec<DeadRef> = ids
        .iter()
        .map(|id| DeadRef {
            queue: None,
            dead_id: id.clone(),
        })
        .collect();
    let (chosen, skipped) = dead.select(&f, &refs).await?;
    Ok((chosen, skipped, format!("dead letters {}", ids.join(", "))))
}

/// How long ago a time in ms was (`5m ago`).
pub(crate) fn ago(ms: u64) -> String {
    ago_text(ms, crmsync_queue::now_ms())
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
    let f = args.filters.filter()?;
    let (views, _) = DeadLetters::new(env.conn()?, &env.namespace)
        .list(&f, Some(args.limit))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    if views.is_empty() {
        println!("(no dead letter matches)");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("DEAD ID", Align::Left),
        ("QUEUE", Align::Left),
        ("TENANT", Align::Left),
        ("JOB", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("CODE", Align::Left),
        ("DEAD AT", Align::Left),
        ("REASON", Align::Left),
    ])
    .title_columns(3);
    for v in &views {
        table.row(vec![
            v.dead_id.clone(),
            v.queue.to_owned(),
            v.tenant.as_deref().unwrap_or("-").to_owned(),
            v.job_id.as_deref().unwrap_or("-").to_owned(),
            match (v.attempts, v.max_attempts) {
                (Some(a), Some(m)) => format!("{a}/{m}"),
                (Some(a), None) => a.to_string(),
                _ => "-".into(),
            },
            v.code.to_owned(),
            v.dead_at_ms.map(ago).unwrap_or_else(|| "-".into()),
            one_line(&v.reason, 80),
        ]);
    }
    table.print();
    Ok(())
}

async fn show(env: &Env, args: ShowArgs) -> anyhow::Result<()> {
    let dead = DeadLetters::new(env.conn()?, &env.namespace);
    let which = DeadRef {
        queue: args.queue.map(Into::into),
        dead_id: args.dead_id.clone(),
    };
    let (found, _) = dead.find(std::slice::from_ref(&which), true).await?;
    let Some(v) = found.into_iter().next() else {
        bail!("no dead letter `{}`; list them with `crmsync dead list`", args.dead_id);
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let meaning = v.code_meaning;
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
            .map(|ms| human(ms, crmsync_queue::now_ms()))
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
            println!("    {k:<8} {}", one_line(val, 200));
        }
    }
    Ok(())
}

async fn retry(env: &Env, args: RetryArgs) -> anyhow::Result<()> {
    let dead = DeadLetters::new(env.conn()?, &env.namespace);
    let (chosen, skipped, what) = select(&dead, &args.filters, &args.dead_ids, args.all).await?;
    if chosen.is_empty() && skipped.is_empty() {
        println!("no dead letter matches; nothing to retry");
        return Ok(());
    }
    let out = dead.retry(&Actor::cli(), &what, chosen, skipped).await?;
    for d in &out.done {
        println!(
            "retried {} ({}, tenant `{}`): job {} is queued again with fresh attempts",
            d.dead_id,
            d.queue,
            d.tenant.as_deref().unwrap_or("-"),
            d.job_id.as_deref().unwrap_or("-")
        );
    }
    for s in &out.skipped {
        println!("not retried {}: {}", s.dead_id, s.why);
    }
    println!("{} dead letter(s) retried", thousands(out.count));
    if !out.skipped.is_empty() {
        bail!(
            "{} dead letter(s) could not be retried (see above)",
            thousands(out.skipped.len() as u64)
        );
    }
    Ok(())
}

async fn purge(env: &Env, args: PurgeArgs) -> anyhow::Result<()> {
    let dead = DeadLetters::new(env.conn()?, &env.namespace);
    let (chosen, skipped, what) = select(&dead, &args.filters, &args.dead_ids, args.all).await?;
    if chosen.is_empty() && skipped.is_empty() {
        println!("no dead letter matches; nothing to purge");
        return Ok(());
    }
    let out = dead.purge(&Actor::cli(), &what, &args.reason, chosen, skipped).await?;
    for s in &out.skipped {
        println!("not purged {}: {}", s.dead_id, s.why);
    }
    println!("{} dead letter(s) purged", thousands(out.count));
    if !out.skipped.is_empty() {
        bail!(
            "{} dead letter(s) could not be purged (see above)",
            thousands(out.skipped.len() as u64)
        );
    }
    Ok(())
}
