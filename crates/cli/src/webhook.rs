//! `crmsync webhook`: the Nylas webhook receiver.

use std::net::SocketAddr;
use std::time::Duration;

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
        },
        conn,
        tenants,
    );
    crmsync_webhook::serve(receiver, args.listen, async {
        let _ = crmsync_queue::runtime::shutdown_signal().await;
    })
    .await
}
