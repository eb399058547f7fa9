use std::sync::Arc;
use std::time::Duration;

use crmsync_queue::{EnqueueOptions, JobError, JobInfo, RetryPolicy};
use crmsync_testkit::{RedisServer, eventually};
use tokio::sync::Semaphore;

use crate::support::{config, queue, start_worker};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Job {
    Quick,
    Hold,
    Fail,
}

/// One call returns the queue's state straight from Redis: pending, in flight, delayed, dead,
/// completed in the last minute, and the workers with their last heartbeat. Every key of the
/// queue carries the queue's hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_come_straight_from_redis() {
    let redis = RedisServer::start();
    let cfg = config("inspect").concurrency(2);
    let q = queue::<Job>(&redis, &cfg);
    q.ensure_group().await.expect("group");

    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let w = start_worker(&redis, &cfg, move |job: Job, _: JobInfo| {
        let g = g.clone();
        async move {
            match job {
                Job::Quick => Ok(()),
                Job::Hold => {
                    let _permit = g.acquire().await.map_err(|e| JobError::retry("SEMAPHORE", e))?;
                    Ok(())
                }
                Job::Fail => Err(JobError::permanent("INVALID_DATA", "bad record")),
            }
        }
    });
    for _ in 0..5 {
        q.enqueue(&Job::Quick).await.expect("enqueue");
    }
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    q.enqueue_with(&Job::Fail, EnqueueOptions::default().policy(once))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "quick jobs done", || async {
        let s = q.stats().await.expect("stats");
        (s.last_minute.done == 5 && s.dead == 1).then_some(())
    })
    .await;
    // Two jobs hold both slots; three more wait behind them; two are delayed.
    for _ in 0..5 {
        q.enqueue(&Job::Hold).await.expect("enqueue");
    }
    for _ in 0..2 {
        q.enqueue_with(&Job::Quick, EnqueueOptions::default().delay(Duration::from_secs(60)))
            .await
            .expect("enqueue");
    }
    let s = eventually(Duration::from_secs(10), "two jobs in flight", || async {
        let s = q.stats().await.expect("stats");
        (s.in_flight == 2 && s.pending == 3).then_some(s)
    })
    .await;
    assert_eq!(s.queue, "inspect");
    assert_eq!((s.pending, s.in_flight, s.delayed, s.dead), (3, 2, 2, 1));
    assert_eq!((s.last_minute.done, s.last_minute.dead), (5, 1));
    assert!(s.next_delayed_ms.is_some());
    assert_eq!(s.workers.len(), 1);
    let worker = &s.workers[0];
    assert_eq!(Some(worker.name.as_str()), w.handle.worker_name());
    assert_eq!(
        (worker.in_flight, worker.concurrency, worker.pid),
        (2, 2, std::process::id() as u64)
    );
    assert!(worker.alive && worker.state == "running");
    assert!(crmsync_queue::now_ms() - worker.last_heartbeat_ms < 5_000);

    gate.add_permits(5);
    let s = eventually(Duration::from_secs(10), "held jobs done", || async {
        let s = q.stats().await.expect("stats");
        (s.last_minute.done == 10).then_some(s)
    })
    .await;
    assert_eq!((s.pending, s.in_flight), (0, 0));
    w.stop().await;
    let s = q.stats().await.expect("stats");
    assert_eq!(s.workers[0].state, "stopped");
    assert!(!s.workers[0].alive);

    // The key layout: every key of the queue shares its hash tag (one Redis Cluster slot).
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    assert!(keys.len() >= 5, "{keys:?}");
    for k in keys {
        assert!(
            k.starts_with("{crmsync:inspect}:"),
            "key {k} lacks the queue's hash tag"
        );
    }
}
