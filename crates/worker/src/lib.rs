//! The worker: the job handlers ([`backfill`] pages, [`flush`] writes, [`maintenance`]) and
//! the worker process ([`run`]), which runs them under apalis on the Redis Streams queues
//! until SIGTERM, then drains.

pub mod backfill;
pub mod codes;
mod context;
mod errors;
pub mod flush;
pub mod maintenance;
mod metrics;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis_core::monitor::Monitor;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
pub use context::{Context, ContextOptions, profile};
use crmsync_producer::{BackfillPage, FlushWrites, Maintenance};
use crmsync_queue::runtime::{self, Handles};
use crmsync_queue::{JobError, JobInfo, RedisStreamBackend, worker_identity};
use tracing::info;

/// How often a worker process looks for tenants due for a reconcile (jittered down to half).
const SCHEDULE_EVERY: Duration = Duration::from_secs(30);

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub context: ContextOptions,
    /// Backfill pages run at once by this process.
    pub concurrency: usize,
    /// How long running jobs get to finish after SIGTERM.
    pub drain: Duration,
    /// A job held by a worker that stops heartbeating is redelivered after this long.
    pub visibility_timeout: Duration,
    /// Where to serve `/metrics` (Prometheus) and `/healthz`; None: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Installs the TLS crypto provider (rustls with ring) once per process.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A handler that panicked is retried (using an attempt), so a bug on one input ends in the
/// dead-letter stream instead of crash-looping.
fn panic_to_retry(p: &Box<dyn std::any::Any + Send>) -> JobError {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    JobError::retry("PANIC", format!("handler panicked: {msg}"))
}

/// Runs a worker process until SIGTERM/SIGINT, then drains.
pub async fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    install_tls();
    let ctx = Arc::new(Context::connect(opts.context.clone())?);
    // A key that cannot open the fleet's secrets would fail every job it takes: refuse to start.
    // (Redis unreachable is not that: wait for it, as the queue does.)
    let mut wait = Duration::from_millis(200);
    loop {
        match ctx.tenants.check_key().await {
            Ok(()) => break,
            Err(crmsync_tenants::StoreError::Redis(e)) => {
                tracing::warn!(error = %e, "Redis unreachable at start; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                anyhow::bail!("{e}; the worker does not start with a secret key that cannot open the fleet's tenants")
            }
        }
    }
    let handles = Handles::default();
    let h = handles.clone();
    let c = ctx.clone();
    let backfill_cfg = crmsync_producer::backfill_queue(&opts.context.namespace)
        .concurrency(opts.concurrency)
        .visibility_timeout(opts.visibility_timeout);
    let writes_cfg = crmsync_producer::writes_queue(&opts.context.namespace)
        .concurrency(opts.concurrency)
        .visibility_timeout(opts.visibility_timeout);
    // Maintenance is background work: a couple at a time is plenty.
    let maintenance_cfg = crmsync_producer::maintenance_queue(&opts.context.namespace)
        .concurrency(2)
        .visibility_timeout(opts.visibility_timeout);
    if let Some(addr) = opts.metrics_listen {
        metrics::serve(
            addr,
            ctx.conn.clone(),
            vec![backfill_cfg.clone(), writes_cfg.clone(), maintenance_cfg.clone()],
        )
        .await?;
    }
    let (h2, c2) = (handles.clone(), ctx.clone());
    let (h3, c3) = (handles.clone(), ctx.clone());
    let monitor = Monitor::new()
        .register(move |_| {
            let backend = RedisStreamBackend::<BackfillPage>::with_connection(
                c.target.clone(),
                c.conn.clone(),
                backfill_cfg.clone(),
            );
            h.push(backend.handle());
            WorkerBuilder::new(worker_identity("backfill"))
                .backend(backend)
                .layer(CatchPanicLayer::with_panic_handler(panic_to_retry))
                .data(c.clone())
                .build(|job: BackfillPage, info: JobInfo, ctx: Data<Arc<Context>>| async move {
                    backfill::run_page(&ctx, job, &info).await
                })
        })
        .register(move |_| {
            let backend = RedisStreamBackend::<FlushWrites>::with_connection(
                c2.target.clone(),
                c2.conn.clone(),
                writes_cfg.clone(),
            );
            h2.push(backend.handle());
            WorkerBuilder::new(worker_identity("writes"))
                .backend(backend)
                .layer(CatchPanicLayer::with_panic_handler(panic_to_retry))
                .data(c2.clone())
                .build(|job: FlushWrites, info: JobInfo, ctx: Data<Arc<Context>>| async move {
                    flush::run_flush(&ctx, job, &info).await
                })
        })
        .register(move |_| {
            let backend = RedisStreamBackend::<Maintenance>::with_connection(
                c3.target.clone(),
                c3.conn.clone(),
                maintenance_cfg.clone(),
            );
            h3.push(backend.handle());
            WorkerBuilder::new(worker_identity("maintenance"))
                .backend(backend)
                .layer(CatchPanicLayer::with_panic_handler(panic_to_retry))
                .data(c3.clone())
                .build(|job: Maintenance, ctx: Data<Arc<Context>>| async move {
                    maintenance::run_maintenance(&ctx, job).await
                })
        });
    // The fleet's reconcile scheduler: every process looks for due tenants (see
    // `crmsync_producer::schedule`); stopped with the process.
    let scheduler = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SCHEDULE_EVERY.mul_f64(rand::random_range(0.5..1.0))).await;
                match crmsync_producer::schedule::start_due(&ctx.conn, &ctx.opts.namespace, &ctx.backfill, 10).await {
                    Ok(started) if !started.is_empty() => info!(runs = ?started, "Scheduled reconcile runs started"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "The reconcile scheduler could not read Redis; trying again"),
                }
            }
        })
    };
    info!(concurrency = opts.concurrency, "crmsync worker started");
    let report = runtime::run_until(monitor, &handles, runtime::shutdown_signal(), opts.drain).await;
    scheduler.abort();
    let report = report?;
    info!(
        timed_out = report.timed_out,
        handed_back = report.released,
        "crmsync worker stopped"
    );
    Ok(())
}
