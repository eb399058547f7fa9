//! The queue benchmark: no-op jobs through the Redis Streams backend with at-least-once acks.
//!
//! - Throughput: N jobs enqueued in bulk by 4 producer tasks while W worker processes drain
//!   them; the clock runs from the first enqueue to the last acknowledgement (enqueue +
//!   process, as BullMQ's figure is measured).
//! - Latency: one worker, jobs enqueued at a steady paced rate; each job carries its enqueue
//!   time in microseconds and the worker records `start - enqueue`.
//! - Memory: Redis `used_memory` sampled while 1,000,000 jobs flow through, and after, with
//!   the default retention (finished entries trimmed to the newest 100,000).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use crmsync_queue::runtime::{self, Handles};
use crmsync_queue::{JobError, JobQueue, QueueConfig, RedisStreamBackend, worker_identity};
use crmsync_testkit::{ChildProcess, RedisServer, TempDir, bin_path};

const QUEUE: &str = "bench";

#[derive(clap::Args)]
pub struct QueueBench {
    /// Jobs per throughput run.
    #[arg(long, default_value_t = 200_000)]
    jobs: u64,
    /// Jobs for the memory run.
    #[arg(long, default_value_t = 1_000_000)]
    memory_jobs: u64,
    /// Paced rate of the latency run, jobs/s.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Worker concurrency (job slots per process).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    redis: String,
    #[arg(long)]
    concurrency: usize,
    /// Where to write the latency samples summary on exit.
    #[arg(long)]
    latency_out: Option<PathBuf>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn config(concurrency: usize) -> QueueConfig {
    QueueConfig::new(QUEUE)
        .concurrency(concurrency)
        .fetch_batch(concurrency.min(512))
}

/// A worker process running no-op jobs whose payload is their enqueue time (µs).
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let client = redis::Client::open(args.redis.as_str())?;
    let conn = crmsync_queue::connect(&client, Duration::from_secs(5))?;
    let cfg = config(args.concurrency);
    let samples = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let handles = Handles::default();
    let (h, s) = (handles.clone(), samples.clone());
    let monitor = Monitor::new().register(move |_| {
        let backend = RedisStreamBackend::<u64>::with_connection(client.clone(), conn.clone(), cfg.clone());
        h.push(backend.handle());
        let s = s.clone();
        WorkerBuilder::new(worker_identity("bench"))
            .backend(backend)
            .build(move |enq_us: u64| {
                let s = s.clone();
                async move {
                    let lat = now_us().saturating_sub(enq_us);
                    if let Ok(mut v) = s.lock() {
                        v.push(lat);
                    }
                    Ok::<(), JobError>(())
                }
            })
    });
    runtime::run_until(monitor, &handles, runtime::shutdown_signal(), Duration::from_secs(10)).await?;
    if let Some(path) = args.latency_out {
        let mut v = samples.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        let pct = |p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let summary = serde_json::json!({ "count": v.len(), "p50_us": pct(0.50), "p99_us": pct(0.99), "max_us": v.last().copied().unwrap_or(0) });
        std::fs::write(path, summary.to_string())?;
    }
    Ok(())
}

struct Fleet {
    procs: Vec<ChildProcess>,
}

impl Fleet {
    async fn start(
        redis: &RedisServer,
        q: &JobQueue<u64>,
        n: usize,
        concurrency: usize,
        latency_out: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut procs = Vec::new();
        for i in 0..n {
            let mut cmd = Command::new(bin_path("crmsync-bench"));
            cmd.arg("worker")
                .arg("--redis")
                .arg(redis.url())
                .arg("--concurrency")
                .arg(concurrency.to_string());
            if let Some(p) = latency_out {
                cmd.arg("--latency-out").arg(p);
            }
            procs.push(ChildProcess::spawn(&format!("bench-worker-{i}"), cmd));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = q.stats().await?;
            if s.workers.iter().filter(|w| w.alive).count() == n {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "bench workers did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { procs })
    }

    fn stop(mut self) {
        for p in &mut self.procs {
            p.terminate(Duration::from_secs(20));
        }
    }
}

/// Entries delivered to the group so far (`entries-read`) and whether everything is acked.
async fn progress(conn: &mut crmsync_queue::RedisConn) -> anyhow::Result<(u64, u64)> {
    let v: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("{{crmsync:{QUEUE}}}:stream"))
        .query_async(conn)
        .await?;
    let mut read = 0;
    if let redis::Value::Array(groups) = v
        && let Some(redis::Value::Array(g)) = groups.first()
    {
        for kv in g.chunks(2) {
            if let [redis::Value::BulkString(k), redis::Value::Int(n)] = kv
                && k == b"entries-read"
            {
                read = *n as u64;
            }
        }
    }
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(format!("{{crmsync:{QUEUE}}}:stream"))
        .arg("workers")
        .query_async(conn)
        .await?;
    Ok((read, pending.0))
}

async fn used_memory(conn: &mut crmsync_queue::RedisConn) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Enqueues `n` jobs from 4 producer tasks in bulk and waits until all are processed.
async fn push_and_drain(
    q: &JobQueue<u64>,
    conn: &mut crmsync_queue::RedisConn,
    n: u64,
    mut sample: impl FnMut(u64),
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                let share = n / 4 + if p < n % 4 { 1 } else { 0 };
                while sent < share {
                    let k = (share - sent).min(1_000);
                    let batch = vec![now_us(); k as usize];
                    q.enqueue_many(&batch).await?;
                    sent += k;
                }
                Ok::<_, crmsync_queue::QueueError>(())
            })
        })
        .collect();
    let mut enqueued_at = None;
    let mut producers = Some(producers);
    loop {
        if let Some(ps) = producers.as_ref()
            && ps.iter().all(|p| p.is_finished())
        {
            for p in producers.take().into_iter().flatten() {
                p.await??;
            }
            enqueued_at = Some(start.elapsed());
        }
        let (read, in_flight) = progress(conn).await?;
        sample(read);
        if read >= n && in_flight == 0 && enqueued_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((start.elapsed(), enqueued_at.unwrap_or_default()))
}

pub async fn run(b: QueueBench) -> anyhow::Result<()> {
    println!(
        "## Queue (no-op jobs, at-least-once acks, one local Redis, {} cores)\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("| run | jobs | enqueue+process | jobs/s | enqueue only jobs/s |");
    println!("|---|---:|---:|---:|---:|");
    for workers in [1usize, 4] {
        let redis = RedisServer::start();
        let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
        let q: JobQueue<u64> = JobQueue::new(conn.clone(), config(b.concurrency));
        q.ensure_group().await?;
        let fleet = Fleet::start(&redis, &q, workers, b.concurrency, None).await?;
        let mut c = conn.clone();
        let (total, enq) = push_and_drain(&q, &mut c, b.jobs, |_| {}).await?;
        println!(
            "| {workers} worker process{} | {} | {:.2} s | **{:.0}** | {:.0} |",
            if workers == 1 { "" } else { "es" },
            b.jobs,
            total.as_secs_f64(),
            b.jobs as f64 / total.as_secs_f64(),
            b.jobs as f64 / enq.as_secs_f64().max(1e-9)
        );
        fleet.stop();
    }
    println!("\nBar: ≥ 20,000 jobs/s (2× BullMQ's ~10,500 no-op jobs/s on a comparable 2-core machine).\n");

    // Latency at a steady paced rate.
    let redis = RedisServer::start();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let q: JobQueue<u64> = JobQueue::new(conn.clone(), config(64));
    q.ensure_group().await?;
    let dir = TempDir::new("bench");
    let out = dir.path().join("latency.json");
    let fleet = Fleet::start(&redis, &q, 1, 64, Some(&out)).await?;
    let total = b.latency_rate * b.latency_secs;
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / b.latency_rate as f64);
        tokio::time::sleep_until(due.into()).await;
        q.enqueue(&now_us()).await?;
    }
    let mut c = conn.clone();
    while progress(&mut c).await? != (total, 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.stop();
    let lat: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    println!(
        "## Enqueue-to-start latency (1 worker, {} jobs/s for {} s, single enqueues)\n",
        b.latency_rate, b.latency_secs
    );
    println!("| samples | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|");
    let ms = |k: &str| lat[k].as_u64().unwrap_or(0) as f64 / 1000.0;
    println!(
        "| {} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
        lat["count"],
        ms("p50_us"),
        ms("p99_us"),
        ms("max_us")
    );

    // Memory under a steady stream of work.
    let redis = RedisServer::start();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let q: JobQueue<u64> = JobQueue::new(conn.clone(), config(b.concurrency));
    q.ensure_group().await?;
    let mut c = conn.clone();
    let baseline = used_memory(&mut c).await?;
    let fleet = Fleet::start(&redis, &q, 2, b.concurrency, None).await?;
    let peak = Arc::new(Mutex::new(0u64));
    let mut mem_conn = conn.clone();
    let p = peak.clone();
    let sampler = tokio::spawn(async move {
        loop {
            if let Ok(m) = used_memory(&mut mem_conn).await
                && let Ok(mut p) = p.lock()
            {
                *p = (*p).max(m);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (total, _) = push_and_drain(&q, &mut c, b.memory_jobs, |_| {}).await?;
    // Let the maintainers run a couple of trim passes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sampler.abort();
    let after = used_memory(&mut c).await?;
    let s = q.stats().await?;
    fleet.stop();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "## Redis memory, {} jobs through 2 worker processes ({:.0} jobs/s), default retention (newest 100,000 finished kept)\n",
        b.memory_jobs,
        b.memory_jobs as f64 / total.as_secs_f64()
    );
    println!("| before | peak during | after (trimmed) | finished entries kept |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |\n",
        mib(baseline),
        mib(*peak.lock().map_err(|_| anyhow::anyhow!("poisoned"))?),
        mib(after),
        s.retained
    );
    Ok(())
}
