//! `crmsync pause`, `crmsync resume`, `crmsync budget`.

use crmsync_limits::{Budget, BudgetKind, LimitSettings, Limiter};
use crmsync_ops::Actor;
use crmsync_ops::tenant::TenantOps;
use crmsync_redis::num::{out_of, thousands};
use crmsync_redis::when::{in_text, until_text, utc_text};
use crmsync_tenants::TenantStore;

use crate::Env;
use crate::out::{Align, Table};

#[derive(clap::Args)]
pub struct PauseArgs {
    /// The tenant to pause.
    tenant: String,
    /// Why (shown by `crmsync budget` and `crmsync status`).
    #[arg(long, default_value = "paused by an operator")]
    reason: String,
}

#[derive(clap::Args)]
pub struct BudgetArgs {
    /// Only this tenant.
    tenant: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Zoho seconds per real second (as the workers use; only for simulators).
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
}

fn limiter(env: &Env, time_scale: Option<f64>) -> anyhow::Result<Limiter> {
    let l = Limiter::new(env.conn()?, &env.namespace);
    Ok(match time_scale.filter(|s| s.is_finite() && *s > 0.0) {
        Some(s) => l.with_window(crmsync_limits::DAY.div_f64(s)),
        None => l,
    })
}

pub async fn pause(env: &Env, args: PauseArgs) -> anyhow::Result<()> {
    TenantOps::new(env.conn()?, &env.namespace)
        .pause(&Actor::cli(), &args.tenant, &args.reason)
        .await?;
    println!(
        "tenant `{}` paused; resume with `crmsync resume {}`",
        args.tenant, args.tenant
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The tenant to resume.
    tenant: String,
    /// Why (kept in the audit log, `crmsync audit`).
    #[arg(long, default_value = "")]
    reason: String,
    /// Zoho seconds per real second (as the workers use; only for simulators).
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
}

/// Lifts an operator's pause (and runs the writes that waited for it now). A tenant waiting
/// for its budget is not paused by anyone: says why it waits, until when, and how to lift it.
pub async fn resume(env: &Env, args: ResumeArgs) -> anyhow::Result<()> {
    let out = TenantOps::new(env.conn()?, &env.namespace)
        .with_limiter(limiter(env, args.time_scale)?)
        .resume(&Actor::cli(), &args.tenant, &args.reason)
        .await?;
    println!("{}", out.message);
    Ok(())
}

/// The columns of `crmsync budget`.
const COLUMNS: [(&str, Align); 8] = [
    ("TENANT", Align::Left),
    ("CRMSYNC", Align::Right),
    ("OTHERS", Align::Right),
    ("USED/ALLOWED", Align::Right),
    ("SHARE OF DAILY", Align::Right),
    ("NEXT BACK", Align::Left),
    ("RATE", Align::Right),
    ("STATE", Align::Left),
];

/// One tenant's budget, as `crmsync budget` prints it: a row of [`COLUMNS`].
pub fn render(b: &Budget, unit: &str) -> Vec<String> {
    let now = crmsync_queue::now_ms();
    let state = if let Some(p) = &b.paused {
        format!("paused by an operator: {}", p.reason)
    } else if let (Some(u), Some(kind)) = (b.budget_paused_until_ms, b.budget_kind) {
        match kind {
            BudgetKind::Ours => format!("paused: budget used, {}", until_text(u, now)),
            BudgetKind::Account => format!(
                "paused: the org's budget is used by its other integrations, {}",
                until_text(u, now)
            ),
            BudgetKind::Probe => format!(
                "paused: the org's budget is used by its other integrations; usage read again at {} ({})",
                utc_text(u, now),
                in_text(u, now)
            ),
        }
    } else if let Some(u) = b.cooldown_until_ms {
        format!("cooling down after a 429, {}", until_text(u, now))
    } else {
        "running".into()
    };
    let total = b.used + b.others;
    vec![
        b.tenant.clone(),
        thousands(b.used),
        thousands(b.others),
        format!(
            "{} ({:.1}%)",
            out_of(total, b.allowed),
            if b.allowed > 0 {
                total as f64 * 100.0 / b.allowed as f64
            } else {
                0.0
            }
        ),
        format!("{:.2} of {} {unit}", b.budget_share, thousands(b.daily_credits)),
        b.next_return_ms
            .map(|m| format!("{} ({})", in_text(m, now), thousands(b.next_return_credits)))
            .unwrap_or_else(|| "-".into()),
        format!("x{:.2}", b.rate_factor),
        state,
    ]
}

pub async fn show(env: &Env, args: BudgetArgs) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let store = TenantStore::new(conn.clone(), &env.namespace, None);
    let l = limiter(env, args.time_scale)?;
    let ids = match args.tenant {
        Some(t) => vec![t],
        None => store.ids().await?,
    };
    let mut all = Vec::new();
    for id in ids {
        let site = crmsync_ops::Site::of(&conn, &env.namespace, &id).await?;
        let b = l.budget(&site.keys, &LimitSettings::of_view(&site.view)).await?;
        all.push((b, site.kind.budget_unit()));
    }
    if args.json {
        let json: Vec<serde_json::Value> = all
            .iter()
            .map(|(b, unit)| {
                let mut v = serde_json::to_value(b).unwrap_or_default();
                v["unit"] = (*unit).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no tenants; add one with `crmsync tenant add <id> ...`");
        return Ok(());
    }
    let mut table = Table::new(&COLUMNS);
    for (b, unit) in &all {
        table.row(render(b, unit));
    }
    table.print();
    println!(
        "\nCredits (Zoho) or requests (Salesforce) used in the rolling 24 hours by crmsync\n\
         and by the org's other integrations, of crmsync's share of the daily allowance."
    );
    Ok(())
}
