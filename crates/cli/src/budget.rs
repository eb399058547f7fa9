//! `crmsync pause`, `crmsync resume`, `crmsync budget`.

use crmsync_limits::{Budget, LimitSettings, Limiter};
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

pub async fn resume(env: &Env, tenant: &str) -> anyhow::Result<()> {
    exists(env, tenant).await?;
    if limiter(env, None)?.resume(tenant).await? {
        println!("tenant `{tenant}` resumed");
    } else {
        println!("tenant `{tenant}` was not paused");
    }
    Ok(())
}

fn when(ms: u64) -> String {
    let now = crmsync_queue::now_ms();
    let secs = ms.saturating_sub(now) / 1000;
    match secs {
        0..=59 => format!("in {secs}s"),
        60..=3599 => format!("in {}m{:02}s", secs / 60, secs % 60),
        _ => format!("in {}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// One tenant's budget, as `crmsync budget` prints it.
pub fn render(b: &Budget) -> String {
    let state = if let Some(p) = &b.paused {
        format!("paused by an operator: {}", p.reason)
    } else if let Some(u) = b.budget_paused_until_ms {
        format!("paused: budget spent, resumes {}", when(u))
    } else if let Some(u) = b.cooldown_until_ms {
        format!("cooling down after a 429, {}", when(u))
    } else {
        "running".into()
    };
    format!(
        "{:<20} {:>9} / {:<9} {:>5.1}%  share {:.2} of {:>9}  next credits back {:<14} rate x{:.2}  {}\n",
        b.tenant,
        b.used,
        b.allowed,
        if b.allowed > 0 {
            b.used as f64 * 100.0 / b.allowed as f64
        } else {
            0.0
        },
        b.budget_share,
        b.daily_credits,
        b.next_return_ms
            .map(|m| format!("{} ({})", when(m), b.next_return_credits))
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
        all.push(l.budget(&site.keys, &LimitSettings::of_view(&site.view)).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>9} / {:<9} {:>6}  (credits used / allowed in the rolling window)",
        "TENANT", "USED", "ALLOWED", ""
    );
    for b in &all {
        print!("{}", render(b));
    }
    Ok(())
}
