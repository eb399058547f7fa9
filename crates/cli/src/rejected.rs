//! `crmsync rejected list|retry <tenant>`: the records the CRM rejected for a tenant's
//! destination, with the contact and the CRM's reason, and their retry after a fix: the
//! contacts are re-read from Nylas and written again (forced) by the next flush, and their
//! rejections are forgotten (a record the CRM rejects again is listed again).

use std::collections::{BTreeSet, HashSet};

use anyhow::bail;
use crmsync_producer::{FlushTrigger, FlushWrites, Rejected, Rejection};
use crmsync_queue::JobQueue;
use serde::Serialize;

use crate::Env;
use crate::dead::{ago, cut};
use crate::site::Site;

#[derive(clap::Subcommand)]
pub enum RejectedCmd {
    /// Records the CRM rejected for a tenant, newest first, with the contact and the reason.
    List(ListArgs),
    /// Re-read rejected contacts from Nylas and write them again (after fixing what the CRM
    /// refused), then forget their rejections.
    Retry(RetryArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    tenant: String,
    /// Only this CRM code (any case), e.g. INVALID_DATA.
    #[arg(long)]
    code: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["contact", "code", "all"])))]
pub struct RetryArgs {
    tenant: String,
    /// The rejected records of these Nylas contact ids (repeat the flag for several).
    #[arg(long)]
    contact: Vec<String>,
    /// The rejected records with this CRM code (any case).
    #[arg(long)]
    code: Option<String>,
    /// Every rejected record of the tenant.
    #[arg(long)]
    all: bool,
}

/// A rejected record as the CLI shows it.
#[derive(Debug, Serialize)]
struct RejectedView {
    /// Entry id in the tenant's rejected stream (`<ms>-<seq>`).
    id: String,
    rejected_at_ms: u64,
    #[serde(flatten)]
    rejection: Rejection,
}

/// Rejected records read per call.
const PAGE: usize = 500;

/// The tenant's rejected records, newest first, that `keep` accepts; at most `limit`.
async fn read(
    state: &Rejected,
    limit: Option<usize>,
    keep: impl Fn(&Rejection) -> bool,
) -> anyhow::Result<Vec<RejectedView>> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = state.before(before.as_deref(), PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        before = Some(last.clone());
        for (id, r) in page {
            if keep(&r) {
                let rejected_at_ms = id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
                out.push(RejectedView {
                    id,
                    rejected_at_ms,
                    rejection: r,
                });
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

pub async fn run(env: &Env, cmd: RejectedCmd) -> anyhow::Result<()> {
    match cmd {
        RejectedCmd::List(args) => list(env, args).await,
        RejectedCmd::Retry(args) => retry(env, args).await,
    }
}

async fn list(env: &Env, args: ListArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let site = Site::of(&conn, &env.namespace, &args.tenant).await?;
    let state = Rejected::new(conn, site.keys.clone());
    let code = args.code.as_deref();
    let views = read(&state, Some(args.limit), |r| {
        code.is_none_or(|c| r.code.eq_ignore_ascii_case(c))
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<24} {:<32} {:<20} {:<14} {:<36} MESSAGE",
        "REJECTED", "CONTACT", "EMAIL", "CODE", "FIELD", "RUN"
    );
    for v in &views {
        let r = &v.rejection;
        println!(
            "{:<12} {:<24} {:<32} {:<20} {:<14} {:<36} {}",
            ago(v.rejected_at_ms),
            r.contact_id,
            r.email,
            r.code,
            r.field.as_deref().unwrap_or("-"),
            r.run_id,
            cut(&r.message, 80)
        );
    }
    if views.is_empty() {
        println!(
            "(no rejected record{})",
            code.map(|c| format!(" with code {c}")).unwrap_or_default()
        );
    } else {
        println!(
            "\nretry after a fix with `crmsync rejected retry {} --contact <id>`, `--code <code>` or `--all`",
            args.tenant
        );
    }
    Ok(())
}

async fn retry(env: &Env, args: RetryArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let site = Site::of(&conn, &env.namespace, &args.tenant).await?;
    let state = Rejected::new(conn.clone(), site.keys.clone());
    let wanted: HashSet<&str> = args.contact.iter().map(String::as_str).collect();
    let code = args.code.as_deref();
    let chosen = read(&state, None, |r| {
        args.all || wanted.contains(r.contact_id.as_str()) || code.is_some_and(|c| r.code.eq_ignore_ascii_case(c))
    })
    .await?;
    let contacts: BTreeSet<&str> = chosen.iter().map(|v| v.rejection.contact_id.as_str()).collect();
    let unknown: Vec<&str> = args
        .contact
        .iter()
        .map(String::as_str)
        .filter(|c| !contacts.contains(c))
        .collect();
    if !contacts.is_empty() {
        // Ask for the re-read first, then schedule the flush that does it, then forget the
        // rejections: a failure in between leaves a rejection listed for a contact that is
        // re-read anyway (harmless, and retried again if asked), never a forgotten one that
        // nobody re-reads.
        let ids: Vec<&str> = contacts.iter().copied().collect();
        site.buffer(&conn, &env.namespace).request_refresh(&ids).await?;
        let writes: JobQueue<FlushWrites> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
        let nonce = crmsync_queue::now_ms().to_string();
        crmsync_producer::schedule_flush(&writes, &args.tenant, FlushTrigger::Operator { nonce: &nonce }, None).await?;
        let entries: Vec<String> = chosen.iter().map(|v| v.id.clone()).collect();
        let forgotten = state.remove(&entries).await?;
        println!(
            "{} contact(s) of tenant `{}` will be re-read from Nylas and written by the next flush (scheduled now); \
             {forgotten} rejection(s) forgotten (a record the CRM rejects again is listed again)",
            contacts.len(),
            args.tenant
        );
        for c in &contacts {
            println!("  {c}");
        }
    } else if unknown.is_empty() {
        println!("no rejected record matches; nothing to retry");
    }
    if !unknown.is_empty() {
        bail!(
            "no rejected record for contact(s) {}; see `crmsync rejected list {}`",
            unknown.join(", "),
            args.tenant
        );
    }
    Ok(())
}
