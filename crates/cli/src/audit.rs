//! `crmsync audit`: the audit log, newest first — every operator action from the CLI and the
//! dashboard, who did it, when, and what came of it (see `crmsync_ops::audit`).

use crmsync_ops::{Audit, one_line};
use crmsync_redis::when::{ago_text, stamp};

use crate::Env;
use crate::out::{Align, Table};

#[derive(clap::Args)]
pub struct AuditArgs {
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only entries older than this one (an id from a previous listing), to page back.
    #[arg(long, value_name = "ID")]
    before: Option<String>,
    /// Print JSON (times in epoch milliseconds).
    #[arg(long)]
    json: bool,
}

pub async fn run(env: &Env, args: AuditArgs) -> anyhow::Result<()> {
    let entries = Audit::new(env.conn()?, &env.namespace)
        .list(args.limit.max(1), args.before.as_deref())
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("(no operator action recorded yet)");
        return Ok(());
    }
    let now = crmsync_queue::now_ms();
    let mut table = Table::new(&[
        ("WHEN", Align::Left),
        ("WHO", Align::Left),
        ("VIA", Align::Left),
        ("ACTION", Align::Left),
        ("TARGET", Align::Left),
        ("REASON", Align::Left),
        ("OUTCOME", Align::Left),
    ])
    .title_columns(2);
    for e in &entries {
        table.row(vec![
            format!("{} ({})", stamp(e.at_ms), ago_text(e.at_ms, now)),
            e.who.clone(),
            e.via.clone(),
            e.action.clone(),
            one_line(&e.target, 60),
            if e.reason.is_empty() {
                "-".into()
            } else {
                one_line(&e.reason, 60)
            },
            one_line(e.outcome.lines().next().unwrap_or(""), 80),
        ]);
    }
    table.print();
    if let Some(last) = entries.last().filter(|_| entries.len() >= args.limit.max(1)) {
        println!("\nolder: `crmsync audit --before {}`", last.id);
    }
    Ok(())
}
