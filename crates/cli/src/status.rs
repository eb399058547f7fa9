//! `crmsync status`: queue depths, last-minute throughput and workers.

use std::time::Duration;

use anyhow::Context;
use crmsync_queue::{JobQueue, QueueConfig, QueueStats};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Queues to show.
    #[arg(long = "queue", default_values_t = ["backfill".to_string(), "writes".to_string()])]
    queues: Vec<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
    /// Refresh every N seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
}

pub async fn run(env: &crate::Env, args: StatusArgs) -> anyhow::Result<()> {
    let (redis_url, namespace) = (&env.redis_url, &env.namespace);
    let conn = env.conn()?;
    let queues: Vec<JobQueue<serde_json::Value>> = args
        .queues
        .iter()
        .map(|q| JobQueue::new(conn.clone(), QueueConfig::new(q.as_str()).namespace(namespace.as_str())))
        .collect();
    loop {
        let mut all = Vec::new();
        for q in &queues {
            all.push(
                q.stats()
                    .await
                    .with_context(|| format!("reading queue `{}` from {redis_url}", q.config().name))?,
            );
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&all)?);
        } else {
            if args.watch.is_some() {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&all));
        }
        match args.watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(()),
        }
    }
}

fn ago(ms: u64) -> String {
    let d = crmsync_queue::now_ms().saturating_sub(ms) / 1000;
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        _ => format!("{}h ago", d / 3600),
    }
}

/// The terminal rendering of `crmsync status`.
pub fn render(all: &[QueueStats]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<12} {:>9} {:>9} {:>9} {:>7} {:>10} {:>8} {:>8}\n",
        "QUEUE", "PENDING", "IN FLIGHT", "DELAYED", "DEAD", "DONE/MIN", "RETRIED", "RECLAIM"
    ));
    for s in all {
        out.push_str(&format!(
            "{:<12} {:>9} {:>9} {:>9} {:>7} {:>10} {:>8} {:>8}\n",
            s.queue,
            s.pending,
            s.in_flight,
            s.delayed,
            s.dead,
            s.last_minute.done,
            s.last_minute.retried,
            s.last_minute.reclaimed
        ));
    }
    let workers: Vec<_> = all
        .iter()
        .flat_map(|s| s.workers.iter().map(move |w| (&s.queue, w)))
        .collect();
    if !workers.is_empty() {
        out.push_str(&format!(
            "\n{:<12} {:<48} {:>9} {:>12} {:<8}\n",
            "QUEUE", "WORKER", "IN FLIGHT", "HEARTBEAT", "STATE"
        ));
        for (q, w) in workers {
            let state = if w.alive {
                "alive"
            } else if w.state == "stopped" {
                "stopped"
            } else {
                "lost"
            };
            out.push_str(&format!(
                "{:<12} {:<48} {:>9} {:>12} {:<8}\n",
                q,
                w.name,
                w.in_flight,
                ago(w.last_heartbeat_ms),
                state
            ));
        }
    }
    out
}
