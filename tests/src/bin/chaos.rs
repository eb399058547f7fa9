//! `crmsync-chaos` (`make chaos`): the full chaos run; prints its figures and exits non-zero
//! on any violation. See `crmsync_e2e::chaos`.

use std::time::Duration;

use clap::Parser;
use crmsync_e2e::chaos::{ChaosConfig, run};

#[derive(Parser)]
#[command(
    name = "crmsync-chaos",
    about = "Backfills under faults, worker kills and a Redis restart; checks the CRMs"
)]
struct Args {
    #[arg(long, default_value_t = ChaosConfig::full().workers)]
    workers: usize,
    #[arg(long, default_value_t = ChaosConfig::full().tenants)]
    tenants: usize,
    /// Contacts per tenant.
    #[arg(long, default_value_t = ChaosConfig::full().contacts)]
    contacts: usize,
    /// Share of simulator calls that fail.
    #[arg(long, default_value_t = ChaosConfig::full().fault_rate)]
    fault_rate: f64,
    /// Seconds between worker kills.
    #[arg(long, default_value_t = ChaosConfig::full().kill_every.as_secs_f64())]
    kill_every: f64,
    /// Seconds into the run when Redis is killed and restarted.
    #[arg(long, default_value_t = ChaosConfig::full().redis_restart_after.as_secs_f64())]
    redis_restart_after: f64,
    #[arg(long, default_value_t = ChaosConfig::full().seed)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = Args::parse();
    let cfg = ChaosConfig {
        workers: a.workers.max(1),
        tenants: a.tenants.max(1),
        contacts: a.contacts,
        fault_rate: a.fault_rate.clamp(0.0, 0.9),
        kill_every: Duration::from_secs_f64(a.kill_every.max(0.1)),
        redis_restart_after: Duration::from_secs_f64(a.redis_restart_after.max(0.0)),
        seed: a.seed,
        ..ChaosConfig::full()
    };
    let report = run(&cfg).await?;
    print!("{}", report.render());
    let violations = report.violations();
    anyhow::ensure!(violations.is_empty(), "{} violations", violations.len());
    Ok(())
}
