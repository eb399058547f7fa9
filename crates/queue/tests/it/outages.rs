use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmsync_queue::{JobError, JobInfo};
use crmsync_testkit::{RedisOptions, RedisServer, eventually};

use crate::support::{config, queue, start_worker};

type Seen = Arc<Mutex<HashSet<u32>>>;

fn recording_worker(
    redis: &RedisServer,
    cfg: &crmsync_queue::QueueConfig,
    seen: Seen,
    work: Duration,
) -> crate::support::TestWorker {
    start_worker(redis, cfg, move |n: u32, _: JobInfo| {
        let seen = seen.clone();
        async move {
            tokio::time::sleep(work).await;
            seen.lock().expect("lock").insert(n);
            Ok::<(), JobError>(())
        }
    })
}

async fn all_seen(seen: &Seen, n: usize, what: &str) {
    eventually(Duration::from_secs(60), what, || async {
        (seen.lock().expect("lock").len() == n).then_some(())
    })
    .await;
}

/// apalis-redis exited on any Redis error. A worker survives Redis going away for ten seconds:
/// it logs, reconnects with backoff, and resumes; with AOF nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_ten_second_redis_outage() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    });
    let cfg = config("outage");
    let q = queue::<u32>(&redis, &cfg);
    let seen: Seen = Default::default();
    let w = recording_worker(&redis, &cfg, seen.clone(), Duration::ZERO);

    q.enqueue_many(&(0..200).collect::<Vec<_>>()).await.expect("bulk");
    all_seen(&seen, 200, "jobs before the outage").await;

    redis.kill();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(w.is_running(), "the worker is still alive during the outage");
    redis.start_again();

    // The producer's first call after the outage may fail while its connection is re-made;
    // the caller retries.
    let more: Vec<u32> = (200..400).collect();
    eventually(Duration::from_secs(10), "an enqueue to succeed", || async {
        q.enqueue_many(&more).await.ok()
    })
    .await;
    all_seen(&seen, 400, "jobs after the outage").await;
    assert!(w.is_running());
    w.stop().await;
}

/// A frozen Redis (connections open, nothing answering, as in a partition) surfaces as
/// timeouts; the worker reconnects once it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_frozen_redis() {
    let redis = RedisServer::start();
    let cfg = config("frozen");
    let q = queue::<u32>(&redis, &cfg);
    let seen: Seen = Default::default();
    let w = recording_worker(&redis, &cfg, seen.clone(), Duration::ZERO);
    q.enqueue_many(&(0..50).collect::<Vec<_>>()).await.expect("bulk");
    all_seen(&seen, 50, "jobs before the freeze").await;

    redis.freeze();
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.thaw();
    assert!(w.is_running());
    let more: Vec<u32> = (50..100).collect();
    eventually(Duration::from_secs(10), "an enqueue to succeed", || async {
        q.enqueue_many(&more).await.ok()
    })
    .await;
    all_seen(&seen, 100, "jobs after the freeze").await;
    w.stop().await;
}

/// With AOF on, a Redis restart in the middle of a run loses no job: every job enqueued is
/// processed (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_lost_across_a_redis_restart_with_aof() {
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    });
    let cfg = config("restart").concurrency(8);
    let q = queue::<u32>(&redis, &cfg);
    let seen: Seen = Default::default();
    let w = recording_worker(&redis, &cfg, seen.clone(), Duration::from_millis(2));
    q.enqueue_many(&(0..3_000).collect::<Vec<_>>()).await.expect("bulk");

    eventually(Duration::from_secs(30), "the run to be under way", || async {
        (seen.lock().expect("lock").len() >= 500).then_some(())
    })
    .await;
    redis.restart();
    all_seen(&seen, 3_000, "every job after the restart").await;
    let s = eventually(Duration::from_secs(20), "outcomes recorded", || async {
        let s = q.stats().await.ok()?;
        (s.in_flight == 0 && s.pending == 0).then_some(s)
    })
    .await;
    assert_eq!(s.dead, 0);
    w.stop().await;
}
