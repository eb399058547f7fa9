//! `crmsync rejected list|retry <tenant>`: the records the CRM rejected for a tenant's
//! destination, with the contact and the CRM's reason, and their retry after a fix: the
//! contacts are re-read from Nylas and written again (forced) by the next flush, and their
//! rejections are forgotten (a record the CRM rejects again is listed again).

use anyhow::bail;
use crmsync_ops::Actor;
use crmsync_ops::rejected::{Pick, RejectedRecords};

use crate::Env;
use crate::dead::ago;
use crate::out::{Align, Table};
use crmsync_ops::one_line;

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
    /// The tenant whose rejected records to list.
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
    /// The tenant whose rejected records to retry.
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

pub async fn run(env: &Env, cmd: RejectedCmd) -> anyhow::Result<()> {
    match cmd {
        RejectedCmd::List(args) => list(env, args).await,
        RejectedCmd::Retry(args) => retry(env, args).await,
    }
}

async fn list(env: &Env, args: ListArgs) -> anyhow::Result<()> {
    let records = RejectedRecords::of(env.conn()?, &env.namespace, &args.tenant).await?;
    let code = args.code.as_deref();
    let (views, _) = records
        .list(Some(args.limit), |r| {
            code.is_none_or(|c| r.code.eq_ignore_ascii_case(c))
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    let mut table = Table::new(&[
        ("REJECTED", Align::Left),
        ("CONTACT", Align::Left),
        ("EMAIL", Align::Left),
        ("CODE", Align::Left),
        ("FIELD", Align::Left),
        ("RUN", Align::Left),
        ("MESSAGE", Align::Left),
    ])
    .title_columns(3);
    for v in &views {
        let r = &v.rejection;
        table.row(vec![
            ago(v.rejected_at_ms),
            r.contact_id.clone(),
            r.email.clone(),
            r.code.clone(),
            r.field.as_deref().unwrap_or("-").to_owned(),
            r.run_id.clone(),
            one_line(&r.message, 80),
        ]);
    }
    if !table.is_empty() {
        table.print();
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
    let records = RejectedRecords::of(env.conn()?, &env.namespace, &args.tenant).await?;
    let pick = match (&args.code, args.all) {
        (_, true) => Pick::All,
        (Some(c), false) => Pick::Code(c),
        (None, false) => Pick::Contacts(&args.contact),
    };
    let out = records.retry(&Actor::cli(), pick).await?;
    println!("{}", out.message);
    for c in &out.contacts {
        println!("  {c}");
    }
    if !out.unknown.is_empty() {
        bail!(
            "no rejected record for contact(s) {}; see `crmsync rejected list {}`",
            out.unknown.join(", "),
            args.tenant
        );
    }
    Ok(())
}
