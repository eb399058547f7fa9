//! `crmsync pause`, `crmsync resume`, `crmsync budget`.

use crmsync_limits::{Budget, BudgetKind, LimitSettings, Limiter};
use crmsync_producer::FlushWrites;
use crmsync_queue::JobQueue;
use crmsync_redis::when::{in_text, until_text, utc_text};
use crmsync_tenants::{StoreError, TenantStore};

use crate::Env;

#[derive(clap::Args)]
pub struct PauseArgs {
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

async fn exists(env: &Env, tenant: &str) -> anyhow::Result<()> {
    match TenantStore::new(env.conn()?, &env.namespace, None).view(tenant).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound(_)) => anyhow::bail!("no tenant `{tenant}`; list tenants with `crmsync tenant list`"),
        Err(e) => Err(e.into()),
    }
}

pub async fn pause(env: &Env, args: PauseArgs) -> anyhow::Result<()> {
    exists(env, &args.tenant).await?;
    limiter(env, None)?.pause(&args.tenant, &args.reason).await?;
    println!(
        "tenant `{}` paused; resume with `crmsync resume {}`",
        args.tenant, args.tenant
    );
    Ok(())
}

/// Lifts an operator's pause (and runs the writes that waited for it now). A tenant waiting
/// for its budget is not paused by anyone: says why it waits, until when, and how to lift it.
pub async fn resume(env: &Env, tenant: &str) -> anyhow::Result<()> {
    exists(env, tenant).await?;
    let conn = env.conn()?;
    let site = crate::site::Site::of(&conn, &env.namespace, tenant).await?;
    let writes: JobQueue<FlushWrites> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
    if limiter(env, None)?.resume(tenant).await? {
        let woken = crmsync_producer::waits::wake(&conn, &writes, &site.keys).await?;
        println!("tenant `{tenant}` resumed ({woken} waiting write(s) run now)");
        return Ok(());
    }
    let b = limiter(env, None)?
        .budget(&site.keys, &LimitSettings::of_view(&site.view))
        .await?;
    match (b.budget_paused_until_ms, b.budget_kind) {
        (Some(until), Some(kind)) => {
            let now = crmsync_queue::now_ms();
            let unit = site.kind.budget_unit();
            let flag = match site.kind {
                crmsync_tenants::CrmKind::Zoho => "--daily-credits",
                crmsync_tenants::CrmKind::Salesforce => "--daily-requests",
            };
            let whose = match kind {
                BudgetKind::Ours => format!("crmsync used {} of the {} {unit} allowed", b.used, b.allowed),
                BudgetKind::Account | BudgetKind::Probe => format!(
                    "the org's other integrations used {} and crmsync {} of the {} {unit} allowed",
                    b.others, b.used, b.allowed
                ),
            };
            let when = match kind {
                BudgetKind::Probe => format!(
                    "crmsync reads the org's usage again at {} ({}) and goes on as soon as there is room",
                    utc_text(until, now),
                    in_text(until, now)
                ),
                _ => format!("it goes on by itself {}", until_text(until, now)),
            };
            println!(
                "tenant `{tenant}` is not paused by an operator: it waits for its budget. {whose} \
                 (share {:.2} x {} {unit} a day); {when}.\n\
                 To lift it now, raise the budget: `crmsync tenant set {tenant} {flag} N` (the org's real \
                 allowance) or `--budget-share S` (up to 1.0); the fleet applies it within seconds.",
                b.budget_share, b.daily_credits
            );
        }
        _ => println!("tenant `{tenant}` was not paused"),
    }
    Ok(())
}

/// One tenant's budget, as `crmsync budget` prints it.
pub fn render(b: &Budget, unit: &str) -> String {
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
    format!(
        "{:<20} {:>9} {:>9} / {:<9} {:>5.1}%  share {:.2} of {:>9} {:<8}  next back {:<22} rate x{:.2}  {}\n",
        b.tenant,
        b.used,
        b.others,
        b.allowed,
        if b.allowed > 0 {
            total as f64 * 100.0 / b.allowed as f64
        } else {
            0.0
        },
        b.budget_share,
        b.daily_credits,
        unit,
        b.next_return_ms
            .map(|m| format!("{} ({})", in_text(m, now), b.next_return_credits))
            .unwrap_or_else(|| "-".into()),
        b.rate_factor,
        state
    )
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
        let site = crate::site::Site::of(&conn, &env.namespace, &id).await?;
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
    println!(
        "{:<20} {:>9} {:>9} / {:<9} {:>6}  (credits or requests used in the rolling window by crmsync and by the org's other integrations / allowed)",
        "TENANT", "CRMSYNC", "OTHERS", "ALLOWED", ""
    );
    for (b, unit) in &all {
        print!("{}", render(b, unit));
    }
    Ok(())
}
