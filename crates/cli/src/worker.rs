//! `crmsync worker`: settings from flags, else environment, else a TOML config file, else
//! defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use crmsync_worker::{ContextOptions, WorkerOptions};
use serde::Deserialize;

use crate::Env;
use crate::logging::{self, Format};

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Backfill pages this process runs at once [default: 8].
    #[arg(long, env = "CRMSYNC_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Log format [default: text].
    #[arg(long, value_enum, env = "CRMSYNC_LOG_FORMAT")]
    log_format: Option<Format>,
    /// Seconds running jobs get to finish after SIGTERM [default: 25].
    #[arg(long, env = "CRMSYNC_DRAIN_SECS")]
    drain_secs: Option<u64>,
    /// Seconds before a job of a silent worker is redelivered [default: 30].
    #[arg(long, env = "CRMSYNC_VISIBILITY_TIMEOUT_SECS")]
    visibility_timeout_secs: Option<u64>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9090).
    #[arg(long, env = "CRMSYNC_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Contacts per Nylas page [default: 200].
    #[arg(long, env = "CRMSYNC_PAGE_SIZE")]
    page_size: Option<u32>,
    /// Zoho seconds per real second [default: 1]. Only for a simulator with a compressed day.
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
    /// A TOML file with any of: redis_url, namespace, concurrency, log_format, drain_secs,
    /// visibility_timeout_secs, page_size, http_timeout_secs, metrics_listen.
    #[arg(long, env = "CRMSYNC_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    redis_url: Option<String>,
    namespace: Option<String>,
    concurrency: Option<usize>,
    log_format: Option<Format>,
    drain_secs: Option<u64>,
    visibility_timeout_secs: Option<u64>,
    page_size: Option<u32>,
    http_timeout_secs: Option<u64>,
    metrics_listen: Option<std::net::SocketAddr>,
}

pub async fn run(env: &Env, args: WorkerArgs) -> anyhow::Result<()> {
    let file: FileConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    logging::init(args.log_format.or(file.log_format).unwrap_or(Format::Text), "info");
    // Flags and environment win over the file; the global Redis URL and namespace come from
    // the file only when left at their defaults.
    let redis_url = match (&file.redis_url, std::env::var_os("CRMSYNC_REDIS_URL")) {
        (Some(u), None) if env.redis_url == "redis://127.0.0.1:6379/" => u.clone(),
        _ => env.redis_url.clone(),
    };
    let namespace = match (&file.namespace, std::env::var_os("CRMSYNC_NAMESPACE")) {
        (Some(n), None) if env.namespace == "crmsync" => n.clone(),
        _ => env.namespace.clone(),
    };
    let opts = WorkerOptions {
        context: ContextOptions {
            redis_url,
            namespace,
            page_size: args
                .page_size
                .or(file.page_size)
                .unwrap_or(crmsync_nylas::MAX_PAGE_SIZE),
            http_timeout: Duration::from_secs(file.http_timeout_secs.unwrap_or(30)),
            time_scale: args.time_scale.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(1.0),
        },
        concurrency: args.concurrency.or(file.concurrency).unwrap_or(8).max(1),
        drain: Duration::from_secs(args.drain_secs.or(file.drain_secs).unwrap_or(25)),
        visibility_timeout: Duration::from_secs(
            args.visibility_timeout_secs
                .or(file.visibility_timeout_secs)
                .unwrap_or(30)
                .max(1),
        ),
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
    };
    crmsync_worker::run(opts).await
}
