use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmsync_queue::{EnqueueOptions, JobError, JobInfo};
use crmsync_testkit::{RedisServer, eventually};
use futures_util::future::join_all;

use crate::support::{config, queue, start_worker};

/// apalis-redis 1.0.0 wedged every worker once ~8,000 jobs were due at once (its fetch script
/// unpacked every due id in one Lua call). 90,000 ready jobs plus 10,000 delayed jobs that
/// came due while no worker ran must all be processed, exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_of_100k_due_jobs_is_drained() {
    let redis = RedisServer::start();
    let mut cfg = config("backlog");
    cfg.promote_batch = 500;
    let q = queue::<u32>(&redis, &cfg);

    let ready: Vec<u32> = (0..90_000).collect();
    q.enqueue_many(&ready).await.expect("bulk enqueue");
    // Far enough ahead that every delayed enqueue lands before it, even on a loaded machine
    // (a job whose time has already come is enqueued as ready).
    let due_at = std::time::SystemTime::now() + Duration::from_secs(3);
    for chunk in (90_000u32..100_000).collect::<Vec<_>>().chunks(500) {
        let calls = chunk
            .iter()
            .map(|n| q.enqueue_with(n, EnqueueOptions::default().run_at(due_at)));
        for r in join_all(calls).await {
            r.expect("delayed enqueue");
        }
    }
    assert_eq!(q.stats().await.expect("stats").delayed, 10_000);
    // The delayed jobs come due while no worker runs.
    let until_due = due_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(until_due + Duration::from_millis(100)).await;

    // Promotion handles the 10,000 due jobs in bounded calls, never all at once.
    let report = q.promote_due().await.expect("promote");
    assert_eq!(report.moved, 10_000);
    assert!(
        report.calls >= 20,
        "10,000 due jobs in batches of 500 take at least 20 calls, took {}",
        report.calls
    );

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let dupes = Arc::new(Mutex::new(0u32));
    let handler = {
        let (seen, dupes) = (seen.clone(), dupes.clone());
        move |n: u32, _info: JobInfo| {
            let (seen, dupes) = (seen.clone(), dupes.clone());
            async move {
                if !seen.lock().expect("lock").insert(n) {
                    *dupes.lock().expect("lock") += 1;
                }
                Ok::<(), JobError>(())
            }
        }
    };
    let cfg = cfg.concurrency(256);
    let w1 = start_worker(&redis, &cfg, handler.clone());
    let w2 = start_worker(&redis, &cfg, handler);

    eventually(Duration::from_secs(180), "100,000 jobs processed", || async {
        (seen.lock().expect("lock").len() == 100_000).then_some(())
    })
    .await;
    let stats = eventually(Duration::from_secs(10), "all outcomes recorded", || async {
        let s = q.stats().await.expect("stats");
        (s.in_flight == 0).then_some(s)
    })
    .await;
    assert_eq!((stats.pending, stats.delayed, stats.dead), (0, 0, 0));
    assert_eq!(*dupes.lock().expect("lock"), 0, "no job ran twice");
    w1.stop().await;
    w2.stop().await;
}
