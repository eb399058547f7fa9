//! `crmsync dashboard`: the fleet in a browser (see `crmsync_dashboard::web`).

use std::net::SocketAddr;

use crmsync_dashboard::web::{self, Dashboard};

use crate::Env;
use crate::logging::{self, Format};

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// Address to listen on (keep it on loopback or behind an authenticating proxy).
    #[arg(long, env = "CRMSYNC_DASHBOARD_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The token every request must carry (open `/?token=<token>` once in a browser). At
    /// least 16 characters; `crmsync keygen` makes a good one. Prefer the environment
    /// variable: `ps` shows flags.
    #[arg(long, env = "CRMSYNC_DASHBOARD_TOKEN", hide_env_values = true)]
    token: String,
    /// Zoho seconds per real second (as the workers use; only for simulators).
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
    /// Log format.
    #[arg(long, value_enum, env = "CRMSYNC_LOG_FORMAT", default_value = "text")]
    log_format: Format,
}

pub async fn run(env: &Env, args: DashboardArgs) -> anyhow::Result<()> {
    logging::init(args.log_format, "info");
    let queues = crmsync_dashboard::QUEUES.map(String::from);
    let fleet = crate::status::fleet(env, &queues, args.time_scale)?;
    let dashboard = Dashboard::new(fleet, &args.token)?;
    web::serve(dashboard, args.listen, async {
        let _ = crmsync_queue::runtime::shutdown_signal().await;
    })
    .await
}
