//! The worker's `/metrics` (Prometheus) and `/healthz` endpoints, on `--metrics-listen`.
//! Queue depths are read from Redis at scrape time, so every worker reports the fleet's
//! queues as they are now (take `max` across workers in queries).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use crmsync_queue::{JobQueue, QueueConfig, RedisConn};
use tracing::{info, warn};

/// How long a scrape waits for the queue depths before answering without fresh ones.
const DEPTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `listen` and serves until the process ends.
pub(crate) async fn serve(listen: SocketAddr, conn: RedisConn, queues: Vec<QueueConfig>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {listen}: {e}"))?;
    info!(addr = %listener.local_addr()?, "Metrics on /metrics");
    let queues: Vec<JobQueue<serde_json::Value>> =
        queues.into_iter().map(|cfg| JobQueue::new(conn.clone(), cfg)).collect();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let queues = queues.clone();
                async move { scrape(&queues).await }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            warn!(%error, "The metrics endpoint stopped");
        }
    });
    Ok(())
}

async fn scrape(queues: &[JobQueue<serde_json::Value>]) -> Response {
    for q in queues {
        match tokio::time::timeout(DEPTH_TIMEOUT, q.stats()).await {
            Ok(Ok(s)) => {
                let name = &q.config().name;
                crmsync_metrics::set_queue_depth(name, "pending", s.pending);
                crmsync_metrics::set_queue_depth(name, "in_flight", s.in_flight);
                crmsync_metrics::set_queue_depth(name, "delayed", s.delayed);
                crmsync_metrics::set_queue_depth(name, "dead", s.dead);
            }
            Ok(Err(error)) => warn!(queue = %q.config().name, %error, "Could not read queue depths for /metrics"),
            Err(_) => warn!(queue = %q.config().name, "Reading queue depths for /metrics timed out"),
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crmsync_metrics::CONTENT_TYPE)],
        crmsync_metrics::render(),
    )
        .into_response()
}
