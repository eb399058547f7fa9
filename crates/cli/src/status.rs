//! `crmsync status`: the fleet at a glance — queues, tenants (paused and why, credits, run
//! progress, last error) and workers — read straight from Redis.

use std::time::Duration;

use anyhow::Context;
use crmsync_dashboard::{Fleet, text};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Queues to show.
    #[arg(long = "queue", default_values_t = crmsync_dashboard::QUEUES.map(String::from))]
    queues: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Refresh every N seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
    /// Zoho seconds per real second (as the workers use; only for simulators).
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
}

/// The fleet reader the status and the dashboard share.
pub fn fleet(env: &crate::Env, queues: &[String], time_scale: Option<f64>) -> anyhow::Result<Fleet> {
    let names: Vec<&str> = queues.iter().map(String::as_str).collect();
    let fleet = Fleet::new(env.conn()?, &env.namespace).with_queues(&names);
    Ok(match time_scale.filter(|s| s.is_finite() && *s > 0.0) {
        Some(s) => fleet.with_window(crmsync_limits::DAY.div_f64(s)),
        None => fleet,
    })
}

/// The terminal's width: `COLUMNS` when the shell exports it, else 120.
fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(120)
}

pub async fn run(env: &crate::Env, args: StatusArgs) -> anyhow::Result<()> {
    let fleet = fleet(env, &args.queues, args.time_scale)?;
    loop {
        let status = fleet.status().await.context("reading the fleet from Redis")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            if args.watch.is_some() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", text::render(&status, width()));
        }
        match args.watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(()),
        }
    }
}
