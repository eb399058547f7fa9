use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crmsync_queue::{JobError, JobInfo, Retention};
use crmsync_testkit::{RedisServer, eventually};
use tokio::sync::Semaphore;

use crate::support::{config, queue, start_worker};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Job {
    Quick,
    Hold,
}

fn xlen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(&mut redis.conn()).expect("XLEN")
}

/// A worker whose jobs count their runs in `ran`; `Hold` jobs wait for a permit of `gate`.
fn worker(
    redis: &RedisServer,
    cfg: &crmsync_queue::QueueConfig,
    gate: Arc<Semaphore>,
    ran: Arc<AtomicU64>,
) -> crate::support::TestWorker {
    start_worker(redis, cfg, move |job: Job, _: JobInfo| {
        let (gate, ran) = (gate.clone(), ran.clone());
        async move {
            if let Job::Hold = job {
                let _p = gate.acquire().await.map_err(|e| JobError::retry("SEMAPHORE", e))?;
            }
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    })
}

/// apalis-redis kept every job forever. Finished entries are trimmed to the newest `max_count`;
/// an entry a worker still holds is never trimmed, nor anything after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_trimmed_by_count_never_unfinished_ones() {
    let redis = RedisServer::start();
    let cfg = config("trim_count")
        .visibility_timeout(Duration::from_millis(900))
        .concurrency(64)
        .retention(Retention {
            max_age: None,
            max_count: Some(1_000),
        });
    let q = queue::<Job>(&redis, &cfg);
    let gate = Arc::new(Semaphore::new(0));
    // Counted by the handler, not by the queue's last-minute counters: on a loaded machine the
    // test can run past a minute, and the first jobs' completions would leave that window.
    let ran = Arc::new(AtomicU64::new(0));
    let w = worker(&redis, &cfg, gate.clone(), ran.clone());

    // A job held by the worker pins the trim point: nothing after it may go yet.
    let held = q.enqueue(&Job::Hold).await.expect("enqueue");
    let jobs = vec![Job::Quick; 5_000];
    q.enqueue_many(&jobs).await.expect("bulk");
    eventually(Duration::from_secs(30), "5,000 quick jobs", || async {
        (ran.load(Ordering::SeqCst) >= 5_000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        xlen(&redis, &q.keys().stream) >= 5_001,
        "entries after a held one were trimmed"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!(s.in_flight, 1, "the held job {held} is still running");

    gate.add_permits(1);
    for _ in 0..4 {
        q.enqueue_many(&jobs).await.expect("bulk");
    }
    // Polled by hand so that a timeout says what it saw.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = q.stats().await.expect("stats");
        let len = xlen(&redis, &q.keys().stream);
        let runs = ran.load(Ordering::SeqCst);
        // `~` trimming removes whole stream nodes (100 entries each), so allow some slack
        // above the 1,000 kept.
        if runs >= 25_001 && s.pending == 0 && s.in_flight == 0 && len <= 1_500 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 60 s: {runs} runs, stream length {len}, stats {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = q.stats().await.expect("stats");
    assert_eq!((s.pending, s.in_flight), (0, 0));
    assert!(
        s.retained >= 900,
        "about max_count finished entries are kept, not fewer: {}",
        s.retained
    );
    w.stop().await;
}

/// Finished entries older than `max_age` are trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_trimmed_by_age() {
    let redis = RedisServer::start();
    let cfg = config("trim_age")
        .visibility_timeout(Duration::from_millis(900))
        .concurrency(64)
        .retention(Retention {
            max_age: Some(Duration::from_secs(1)),
            max_count: None,
        });
    let q = queue::<Job>(&redis, &cfg);
    let ran = Arc::new(AtomicU64::new(0));
    let w = worker(&redis, &cfg, Arc::new(Semaphore::new(0)), ran.clone());
    q.enqueue_many(&vec![Job::Quick; 3_000]).await.expect("bulk");
    // Trimming is approximate (`XTRIM MINID ~`: whole 100-entry stream nodes, so no call does
    // unbounded work): at most the newest node survives.
    eventually(Duration::from_secs(30), "the stream to be trimmed by age", || async {
        (xlen(&redis, &q.keys().stream) <= 100).then_some(())
    })
    .await;
    // Trimming never took an entry that had not run.
    eventually(Duration::from_secs(10), "every job run", || async {
        let s = q.stats().await.expect("stats");
        (ran.load(Ordering::SeqCst) >= 3_000 && s.pending == 0 && s.in_flight == 0).then_some(())
    })
    .await;
    w.stop().await;
}

/// One old entry, then a burst after a pause: the ids spread so unevenly that an estimate of
/// the cut from them lands inside the first stream node, where `~` trimming removes nothing.
/// The count limit is still reached (within a node), not stuck above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_a_pause_is_still_trimmed_to_the_count() {
    let redis = RedisServer::start();
    let mut cfg = config("trim_burst").concurrency(64).retention(Retention {
        max_age: None,
        max_count: Some(1_000),
    });
    cfg.heartbeat_interval = Duration::from_millis(200);
    let q = queue::<Job>(&redis, &cfg);
    let ran = Arc::new(AtomicU64::new(0));
    let w = worker(&redis, &cfg, Arc::new(Semaphore::new(0)), ran.clone());
    q.enqueue(&Job::Quick).await.expect("enqueue");
    tokio::time::sleep(Duration::from_secs(2)).await;
    q.enqueue_many(&vec![Job::Quick; 2_000]).await.expect("bulk");
    eventually(
        Duration::from_secs(20),
        "the burst run and trimmed to the count",
        || async {
            let len = xlen(&redis, &q.keys().stream);
            (ran.load(Ordering::SeqCst) >= 2_001 && len <= 1_100).then_some(())
        },
    )
    .await;
    let s = q.stats().await.expect("stats");
    assert!(s.retained >= 900, "not trimmed below the count: {}", s.retained);
    w.stop().await;
}
