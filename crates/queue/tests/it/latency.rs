use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmsync_queue::{JobError, JobInfo};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{command_calls, config, queue, start_worker};

/// An idle worker waits in a blocking XREADGROUP, not a sleep-and-poll loop, so a new job starts
/// within a second (in practice within milliseconds) and an idle worker costs Redis about one
/// call per block period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_picks_up_a_new_job_within_a_second() {
    let redis = RedisServer::start();
    let cfg = config("latency");
    let q = queue::<u32>(&redis, &cfg);
    let started = Arc::new(Mutex::new(None::<Instant>));
    let s = started.clone();
    let w = start_worker(&redis, &cfg, move |_: u32, _: JobInfo| {
        let s = s.clone();
        async move {
            *s.lock().expect("lock") = Some(Instant::now());
            Ok::<(), JobError>(())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = redis.conn();
    let before = command_calls(&mut conn, "xreadgroup");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_reads = command_calls(&mut conn, "xreadgroup") - before;
    // Blocking 1 s per read: about 3 reads in 3 s (a sleep-poll loop would make dozens).
    assert!(idle_reads <= 5, "{idle_reads} XREADGROUP calls in 3 idle seconds");

    let enqueued = Instant::now();
    q.enqueue(&1).await.expect("enqueue");
    let start = eventually(Duration::from_secs(5), "the job to start", || async {
        *started.lock().expect("lock")
    })
    .await;
    let latency = start - enqueued;
    assert!(latency < Duration::from_secs(1), "picked up after {latency:?}");
    w.stop().await;
}
