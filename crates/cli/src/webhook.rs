//! `crmsync webhook`: the Nylas webhook receiver.

use std::net::SocketAddr;
use std::time::Duration;

use crmsync_dashboard::web::Dashboard;
use crmsync_tenants::{SecretKey, TenantStore};
use crmsync_webhook::{Receiver, WebhookOptions};

use crate::Env;
use crate::logging::{self, Format};

#[derive(clap::Args)]
pub struct WebhookArgs {
    /// Address to listen on.
    #[arg(long, env = "CRMSYNC_WEBHOOK_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Largest notification body accepted, bytes (larger: 413).
    #[arg(long, env = "CRMSYNC_WEBHOOK_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// How long changes may wait to fill a batch before they are written, ms.
    #[arg(long, env = "CRMSYNC_FLUSH_WINDOW_MS", default_value_t = 2000)]
    flush_window_ms: u64,
    /// Most connections open at once (one more is answered 503 and closed).
    #[arg(long, env = "CRMSYNC_WEBHOOK_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has to send a request's head (also the longest idle keep-alive).
    #[arg(long, env = "CRMSYNC_WEBHOOK_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a shutdown waits for requests in progress before closing every connection.
    #[arg(long, env = "CRMSYNC_WEBHOOK_DRAIN_SECS", default_value_t = 10)]
    drain_secs: u64,
    /// Serve the web dashboard (as `crmsync dashboard` does) on the same port, at `/`; it
    /// then answers wherever Nylas can reach the receiver, guarded by its token.
    #[arg(long, env = "CRMSYNC_WEBHOOK_DASHBOARD")]
    with_dashboard: bool,
    /// The dashboard's token (with `--with-dashboard`; at least 16 characters). Prefer the
    /// environment variable: `ps` shows flags.
    #[arg(long, env = "CRMSYNC_DASHBOARD_TOKEN", hide_env_values = true)]
    dashboard_token: Option<String>,
    /// Zoho seconds per real second (as the workers use; only for simulators).
    #[arg(long, env = "CRMSYNC_TIME_SCALE", hide = true)]
    time_scale: Option<f64>,
    /// Log format.
    #[arg(long, value_enum, env = "CRMSYNC_LOG_FORMAT", default_value = "text")]
    log_format: Format,
}

pub async fn run(env: &Env, args: WebhookArgs) -> anyhow::Result<()> {
    logging::init(args.log_format, "info");
    let conn = env.conn()?;
    let tenants = TenantStore::new(conn.clone(), &env.namespace, Some(SecretKey::from_env()?));
    let receiver = Receiver::new(
        WebhookOptions {
            namespace: env.namespace.clone(),
            max_body_bytes: args.max_body_bytes,
            flush_window: Duration::from_millis(args.flush_window_ms.max(1)),
            limits: crmsync_http::Limits {
                header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
                max_connections: args.max_connections.max(1),
                drain: Duration::from_secs(args.drain_secs),
            },
        },
        conn,
        tenants,
    );
    let beside = if args.with_dashboard {
        let Some(token) = args.dashboard_token.as_deref() else {
            anyhow::bail!(
                "--with-dashboard needs the dashboard's token: set CRMSYNC_DASHBOARD_TOKEN (or --dashboard-token)"
            );
        };
        let queues = crmsync_dashboard::QUEUES.map(String::from);
        let fleet = crate::status::fleet(env, &queues, args.time_scale)?;
        Some(crmsync_dashboard::web::routes(Dashboard::new(fleet, token)?))
    } else {
        None
    };
    crmsync_webhook::serve(receiver, beside, args.listen, async {
        let _ = crmsync_queue::runtime::shutdown_signal().await;
    })
    .await
}
