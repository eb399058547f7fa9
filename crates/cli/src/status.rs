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
    /// Refresh every SECS seconds (at least 1) until interrupted.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
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

pub async fn run(env: &crate::Env, args: StatusArgs) -> anyhow::Result<()> {
    let fleet = fleet(env, &args.queues, args.time_scale)?;
    loop {
        let status = fleet.status().await.context("reading the fleet from Redis")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            // Clear the screen between refreshes, on a screen only: a pipe or a file gets the
            // tables one after the other.
            if args.watch.is_some() && crate::out::stdout_is_terminal() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", text::render(&status, crate::out::width()));
        }
        match args.watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => return Ok(()),
        }
    }
}
