//! A worker process for the queue's multi-process tests: runs [`ProbeJob`]s on the real
//! backend under apalis's Monitor, with the same signal handling and drain as `crmsync worker`.

use std::time::Duration;

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use clap::Parser;
use crmsync_e2e::{DONE, PROBE_QUEUE, ProbeJob, STARTS};
use crmsync_queue::runtime::{self, Handles};
use crmsync_queue::{JobError, JobInfo, QueueConfig, RedisStreamBackend, worker_identity};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    redis: String,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 30_000)]
    vt_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
}

async fn run_job(job: ProbeJob, info: JobInfo, conn: crmsync_queue::RedisConn) -> Result<(), JobError> {
    let mut conn = conn;
    let record = format!("{}:{}:{}", job.id, info.attempt, std::process::id());
    let _: () = redis::cmd("RPUSH")
        .arg(STARTS)
        .arg(&record)
        .query_async(&mut conn)
        .await
        .map_err(|e| JobError::retry("SEMAPHORE", e))?;
    if info.attempt <= job.sleep_until_attempt {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    if job.crash {
        std::process::abort();
    }
    let _: () = redis::cmd("RPUSH")
        .arg(DONE)
        .arg(&record)
        .query_async(&mut conn)
        .await
        .map_err(|e| JobError::retry("SEMAPHORE", e))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = redis::Client::open(args.redis.as_str())?;
    let conn = crmsync_queue::connect(&client, Duration::from_secs(5))?;
    let cfg = QueueConfig::new(PROBE_QUEUE)
        .concurrency(args.concurrency)
        .visibility_timeout(Duration::from_millis(args.vt_ms));
    let handles = Handles::default();
    let h = handles.clone();
    let monitor = Monitor::new().register(move |_| {
        let backend = RedisStreamBackend::<ProbeJob>::with_connection(client.clone(), conn.clone(), cfg.clone());
        h.push(backend.handle());
        let job_conn = conn.clone();
        WorkerBuilder::new(worker_identity("probe"))
            .backend(backend)
            .layer(CatchPanicLayer::with_panic_handler(
                |_: &Box<dyn std::any::Any + Send>| JobError::retry("PANIC", "job panicked"),
            ))
            .build(move |job: ProbeJob, info: JobInfo| run_job(job, info, job_conn.clone()))
    });
    let report = runtime::run_until(
        monitor,
        &handles,
        runtime::shutdown_signal(),
        Duration::from_millis(args.drain_ms),
    )
    .await?;
    tracing::info!(
        timed_out = report.timed_out,
        released = report.released,
        "Probe worker exiting"
    );
    Ok(())
}
