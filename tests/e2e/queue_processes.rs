//! The queue requirements that need real processes: crash recovery after SIGKILL, poison jobs,
//! worker identity across restarts, and the SIGTERM drain.

use std::time::{Duration, Instant};

use crmsync_e2e::ProbeJob;
use crmsync_queue::{EnqueueOptions, RetryPolicy};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{done, probe_queue, probe_worker, starts};

/// A worker killed with SIGKILL mid-job: its job is redelivered to another worker after the
/// visibility timeout, and that delivery counts as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_redelivers_a_killed_workers_job_after_the_visibility_timeout() {
    let redis = RedisServer::start();
    let q = probe_queue(&redis);
    let mut a = probe_worker(&redis, 4, 2_000, 5_000);
    let job = ProbeJob {
        sleep_until_attempt: 1,
        ..ProbeJob::slow(7, 60_000)
    };
    q.enqueue(&job).await.expect("enqueue");
    let first = eventually(Duration::from_secs(15), "worker A to start the job", || async {
        starts(&redis).first().copied()
    })
    .await;
    assert_eq!((first.job, first.attempt, Some(first.pid)), (7, 1, a.pid()));

    a.kill();
    let killed_at = Instant::now();
    let b = probe_worker(&redis, 4, 2_000, 5_000);
    let second = eventually(Duration::from_secs(20), "the job to be redelivered", || async {
        starts(&redis).get(1).copied()
    })
    .await;
    let waited = killed_at.elapsed();
    assert_eq!(
        (second.job, second.attempt, Some(second.pid)),
        (7, 2, b.pid()),
        "redelivered to B as attempt 2"
    );
    assert!(
        waited >= Duration::from_millis(1_500),
        "redelivered before the visibility timeout: {waited:?}"
    );
    let finished = eventually(Duration::from_secs(10), "the job to finish", || async {
        done(&redis).first().copied()
    })
    .await;
    assert_eq!((finished.job, finished.attempt), (7, 2));
    let s = q.stats().await.expect("stats");
    assert_eq!((s.dead, s.in_flight, s.pending, s.last_minute.reclaimed), (0, 0, 0, 1));
}

/// A job that crashes every worker that runs it is dead-lettered once it has used its
/// attempts, with the reason, instead of crash-looping the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_that_kills_its_worker_is_dead_lettered_instead_of_crash_looping() {
    let redis = RedisServer::start();
    let q = probe_queue(&redis);
    let poison = ProbeJob {
        crash: true,
        ..ProbeJob::quick(13)
    };
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    q.enqueue_with(&poison, EnqueueOptions::default().policy(policy))
        .await
        .expect("enqueue");
    q.enqueue(&ProbeJob::quick(14)).await.expect("enqueue");

    // A supervisor that restarts the worker whenever it dies, as Kubernetes would.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut worker = probe_worker(&redis, 1, 1_000, 5_000);
    let mut restarts = 0;
    let dead = loop {
        assert!(Instant::now() < deadline, "the poison job was never dead-lettered");
        if let Some(d) = q.dead_letters(5).await.expect("dead").into_iter().next() {
            break d;
        }
        if !worker.is_running() {
            restarts += 1;
            worker = probe_worker(&redis, 1, 1_000, 5_000);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let poison_runs: Vec<u32> = starts(&redis)
        .iter()
        .filter(|r| r.job == 13)
        .map(|r| r.attempt)
        .collect();
    assert_eq!(poison_runs, vec![1, 2, 3], "one run per attempt, then no more");
    assert_eq!(restarts, 3, "each run crashed its worker");
    assert!(
        dead.reason.contains("lease expired") && dead.reason.ends_with("(all 3 attempts used)"),
        "{}",
        dead.reason
    );
    assert_eq!(dead.attempts, Some(3));
    // The fleet carries on with other work.
    eventually(Duration::from_secs(10), "the healthy job", || async {
        done(&redis).iter().any(|r| r.job == 14).then_some(())
    })
    .await;
    assert!(worker.is_running());
}

/// Worker identities are unique per process, and a worker restarted on the same host starts
/// at once (apalis-redis refused a restarted worker its old name until it expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_identities_are_unique_and_a_restarted_worker_starts_at_once() {
    let redis = RedisServer::start();
    let q = probe_queue(&redis);
    q.ensure_group().await.expect("group");
    let mut a = probe_worker(&redis, 2, 30_000, 5_000);
    let b = probe_worker(&redis, 2, 30_000, 5_000);
    let workers = eventually(Duration::from_secs(15), "two workers registered", || async {
        let s = q.stats().await.expect("stats");
        (s.workers.iter().filter(|w| w.alive).count() == 2).then_some(s.workers)
    })
    .await;
    assert_ne!(workers[0].name, workers[1].name);
    let pids: Vec<u64> = workers.iter().map(|w| w.pid).collect();
    assert!(pids.contains(&(a.pid().expect("pid") as u64)) && pids.contains(&(b.pid().expect("pid") as u64)));
    drop(b);

    a.kill();
    let restarted_at = Instant::now();
    let c = probe_worker(&redis, 2, 30_000, 5_000);
    q.enqueue(&ProbeJob::quick(1)).await.expect("enqueue");
    let rec = eventually(Duration::from_secs(10), "the restarted worker to run a job", || async {
        done(&redis).first().copied()
    })
    .await;
    assert_eq!(Some(rec.pid), c.pid());
    assert!(
        restarted_at.elapsed() < Duration::from_secs(10),
        "a restarted worker must not wait for its old registration"
    );
    let s = q.stats().await.expect("stats");
    let names: Vec<&str> = s.workers.iter().map(|w| w.name.as_str()).collect();
    let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "names are unique: {names:?}");
}

/// SIGTERM: the worker stops fetching, lets its running jobs finish, leaves the queued rest for
/// other workers, and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_jobs_and_leaves_the_rest_for_others() {
    let redis = RedisServer::start();
    let q = probe_queue(&redis);
    let mut a = probe_worker(&redis, 2, 30_000, 10_000);
    for id in 0..2 {
        q.enqueue(&ProbeJob::slow(id, 1_500)).await.expect("enqueue");
    }
    eventually(Duration::from_secs(15), "two jobs running", || async {
        (starts(&redis).len() == 2).then_some(())
    })
    .await;
    for id in 2..12 {
        q.enqueue(&ProbeJob::quick(id)).await.expect("enqueue");
    }
    let term_at = Instant::now();
    let code = a.terminate(Duration::from_secs(15));
    let took = term_at.elapsed();
    assert_eq!(code, Some(0), "clean exit");
    assert!(
        took >= Duration::from_millis(1_000),
        "exited before its running jobs finished: {took:?}"
    );
    let finished = done(&redis);
    assert_eq!(finished.iter().map(|r| r.job).collect::<Vec<_>>().len(), 2);
    assert!(finished.iter().all(|r| r.job < 2 && Some(r.pid) == a_pid(&finished)));
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (s.in_flight, s.pending),
        (0, 10),
        "the rest is left in the queue, none held"
    );

    let _b = probe_worker(&redis, 2, 30_000, 10_000);
    eventually(
        Duration::from_secs(15),
        "the rest to be done by another worker",
        || async { (done(&redis).len() == 12).then_some(()) },
    )
    .await;
    let mut ids: Vec<u64> = done(&redis).iter().map(|r| r.job).collect();
    ids.sort();
    assert_eq!(ids, (0..12).collect::<Vec<_>>(), "every job exactly once");
}

fn a_pid(records: &[crmsync_e2e::Record]) -> Option<u32> {
    records.first().map(|r| r.pid)
}

/// A job still running when the drain deadline passes is handed back at once, without using
/// an attempt, instead of waiting out the visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_hands_running_jobs_back_at_once() {
    let redis = RedisServer::start();
    let q = probe_queue(&redis);
    let mut a = probe_worker(&redis, 1, 30_000, 500);
    let job = ProbeJob {
        sleep_until_attempt: 1,
        ..ProbeJob::slow(5, 20_000)
    };
    q.enqueue(&job).await.expect("enqueue");
    eventually(Duration::from_secs(15), "the job to start", || async {
        starts(&redis).first().copied()
    })
    .await;
    let term_at = Instant::now();
    assert_eq!(a.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        term_at.elapsed() < Duration::from_secs(5),
        "drain deadline not enforced: {:?}",
        term_at.elapsed()
    );
    let s = q.stats().await.expect("stats");
    assert_eq!(
        (s.in_flight, s.pending, s.last_minute.released),
        (0, 1, 1),
        "handed back, not left to time out"
    );

    let b = probe_worker(&redis, 1, 30_000, 500);
    let rec = eventually(Duration::from_secs(10), "the job to run again", || async {
        starts(&redis).get(1).copied()
    })
    .await;
    assert_eq!(
        (rec.job, rec.attempt, Some(rec.pid)),
        (5, 1, b.pid()),
        "an interrupted run does not use an attempt"
    );
}
