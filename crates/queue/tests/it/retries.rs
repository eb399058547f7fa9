use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crmsync_queue::{EnqueueOptions, JobError, JobInfo, RetryPolicy};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{config, queue, start_worker};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Behaviour {
    AlwaysFail,
    RetryAtThenSucceed { after_ms: u64 },
    DeferTwiceThenSucceed { after_ms: u64 },
    Permanent,
}

type Log = Arc<Mutex<Vec<(u32, Instant, Option<String>)>>>;

fn handler(
    log: Log,
) -> impl Fn(Behaviour, JobInfo) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |b: Behaviour, info: JobInfo| {
        let log = log.clone();
        Box::pin(async move {
            let runs = {
                let mut l = log.lock().expect("lock");
                l.push((info.attempt, Instant::now(), info.last_error.clone()));
                l.len()
            };
            let later = |ms: u64| SystemTime::now() + Duration::from_millis(ms);
            match b {
                Behaviour::AlwaysFail => Err(JobError::retry("FLAKY", format!("failure #{runs}"))),
                Behaviour::RetryAtThenSucceed { after_ms } if runs == 1 => Err(JobError::retry_at(
                    later(after_ms),
                    "TOO_MANY_REQUESTS",
                    "429 Retry-After",
                )),
                Behaviour::DeferTwiceThenSucceed { after_ms } if runs <= 2 => {
                    Err(JobError::defer(later(after_ms), "BUDGET", "budget spent"))
                }
                Behaviour::Permanent => Err(JobError::permanent("INVALID_DATA", "INVALID_DATA: Email")),
                _ => Ok(()),
            }
        })
    }
}

/// apalis-redis 1.0.0 ignored the retry policy (25 attempts at now+attempt seconds). Ours: the
/// job's max attempts, full-jitter exponential backoff between them, then a dead letter that
/// carries the last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_jobs_policy() {
    let redis = RedisServer::start();
    let cfg = config("retries");
    let q = queue::<Behaviour>(&redis, &cfg);
    let log: Log = Default::default();
    let w = start_worker(&redis, &cfg, handler(log.clone()));

    let policy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(300),
        cap: Duration::from_secs(10),
    };
    let job = q
        .enqueue_with(&Behaviour::AlwaysFail, EnqueueOptions::default().policy(policy))
        .await
        .expect("enqueue");
    let dead = eventually(
        Duration::from_secs(20),
        "the failing job to be dead-lettered",
        || async { q.dead_letters(10).await.expect("dead letters").into_iter().next() },
    )
    .await;
    let runs = log.lock().expect("lock").clone();
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "exactly max_attempts runs"
    );
    assert_eq!(
        runs[1].2.as_deref(),
        Some("failure #1"),
        "each attempt sees the previous error"
    );
    // Full jitter: the wait after attempt k is at most base * 2^(k-1) (300 ms, then 600 ms),
    // plus the promotion interval and scheduling slack.
    let gap1 = runs[1].1 - runs[0].1;
    let gap2 = runs[2].1 - runs[1].1;
    assert!(gap1 < Duration::from_millis(300 + 700), "first backoff {gap1:?}");
    assert!(gap2 < Duration::from_millis(600 + 700), "second backoff {gap2:?}");
    assert_eq!(dead.job_id.as_deref(), Some(job.id().as_str()));
    assert_eq!(dead.attempts, Some(3));
    assert_eq!(dead.reason, "failure #3 (attempt 3 of 3)");
    assert_eq!(dead.payload.as_deref(), Some("\"AlwaysFail\""));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log.lock().expect("lock").len(), 3, "no run after the dead letter");

    // A permanent error goes to the dead letter at once, whatever the attempts left.
    log.lock().expect("lock").clear();
    q.enqueue(&Behaviour::Permanent).await.expect("enqueue");
    let dead = eventually(Duration::from_secs(10), "the permanent failure", || async {
        q.dead_letters(10)
            .await
            .expect("dead")
            .into_iter()
            .find(|d| d.reason.starts_with("INVALID_DATA"))
    })
    .await;
    assert_eq!(dead.attempts, Some(1));
    assert_eq!(log.lock().expect("lock").len(), 1);
    w.stop().await;
}

/// A 429's Retry-After becomes an explicit "run again at" time, honored to within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_retry_at_is_honored_within_a_second() {
    let redis = RedisServer::start();
    let cfg = config("retry_at");
    let q = queue::<Behaviour>(&redis, &cfg);
    let log: Log = Default::default();
    let w = start_worker(&redis, &cfg, handler(log.clone()));
    q.enqueue(&Behaviour::RetryAtThenSucceed { after_ms: 2_000 })
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(10), "the second run", || async {
        (log.lock().expect("lock").len() == 2).then_some(())
    })
    .await;
    let runs = log.lock().expect("lock").clone();
    let gap = runs[1].1 - runs[0].1;
    assert!(gap >= Duration::from_millis(1_990), "ran again too early: {gap:?}");
    assert!(gap <= Duration::from_millis(3_000), "ran again too late: {gap:?}");
    assert_eq!(runs[1].0, 2, "a Retry-After retry uses an attempt");
    let stats = q.stats().await.expect("stats");
    assert_eq!((stats.dead, stats.delayed, stats.last_minute.retried), (0, 0, 1));
    w.stop().await;
}

/// A budget deferral is not a failure: it does not use an attempt, so a job allowed a single
/// attempt can be deferred again and again and still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_deferral_does_not_consume_an_attempt() {
    let redis = RedisServer::start();
    let cfg = config("defer");
    let q = queue::<Behaviour>(&redis, &cfg);
    let log: Log = Default::default();
    let w = start_worker(&redis, &cfg, handler(log.clone()));
    let one_shot = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    q.enqueue_with(
        &Behaviour::DeferTwiceThenSucceed { after_ms: 700 },
        EnqueueOptions::default().policy(one_shot),
    )
    .await
    .expect("enqueue");
    eventually(Duration::from_secs(10), "three runs", || async {
        (log.lock().expect("lock").len() == 3).then_some(())
    })
    .await;
    let runs = log.lock().expect("lock").clone();
    assert_eq!(
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 1, 1],
        "every run is still attempt 1"
    );
    for pair in runs.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_millis(690) && gap <= Duration::from_millis(1_700),
            "deferral honored: {gap:?}"
        );
    }
    let stats = eventually(Duration::from_secs(5), "the success to be recorded", || async {
        let s = q.stats().await.expect("stats");
        (s.last_minute.done == 1).then_some(s)
    })
    .await;
    assert_eq!(
        (stats.dead, stats.last_minute.deferred, stats.last_minute.retried),
        (0, 2, 0)
    );
    w.stop().await;
}
