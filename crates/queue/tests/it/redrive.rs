//! An operator's retry of dead letters (redrive) and their removal (purge).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crmsync_queue::{EnqueueOptions, JobError, JobInfo, RetryPolicy};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{config, queue, start_worker};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sync {
    tenant: String,
    n: u32,
}

fn job(n: u32) -> Sync {
    Sync {
        tenant: "acme".into(),
        n,
    }
}

/// Each run of a job: (payload's n, attempt, previous error, job id).
type Runs = Arc<std::sync::Mutex<Vec<(u32, u32, Option<String>, String)>>>;

fn xlen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query(&mut redis.conn()).expect("XLEN")
}

/// A job that used all its attempts while something was broken ends dead; once fixed, a
/// redrive puts it back with fresh attempts, same id and payload, and it succeeds and is
/// acked. The dead letter is gone, and a second redrive of it finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_job_is_redriven_with_fresh_attempts_and_acked_once_fixed() {
    let redis = RedisServer::start();
    let cfg = config("redrive");
    let q = queue::<Sync>(&redis, &cfg);
    let broken = Arc::new(AtomicBool::new(true));
    let runs: Runs = Default::default();
    let (b, r) = (broken.clone(), runs.clone());
    let w = start_worker(&redis, &cfg, move |s: Sync, info: JobInfo| {
        let (b, r) = (b.clone(), r.clone());
        async move {
            r.lock()
                .expect("lock")
                .push((s.n, info.attempt, info.last_error.clone(), info.job_id.clone()));
            if b.load(Ordering::SeqCst) {
                Err(JobError::retry("INVALID_TOKEN", "INVALID_TOKEN: the token was revoked"))
            } else {
                Ok(())
            }
        }
    });
    let policy = RetryPolicy {
        max_attempts: 2,
        base: Duration::from_millis(50),
        cap: Duration::from_millis(100),
    };
    let id = q
        .enqueue_with(&job(7), EnqueueOptions::default().policy(policy))
        .await
        .expect("enqueue")
        .id()
        .clone();
    let dead = eventually(Duration::from_secs(15), "the job to die", || async {
        q.dead_letters(10).await.expect("dead").into_iter().next()
    })
    .await;
    assert_eq!(dead.attempts, Some(2));
    assert_eq!(runs.lock().expect("lock").len(), 2);

    broken.store(false, Ordering::SeqCst);
    let report = q.redrive(std::slice::from_ref(&dead.dead_id)).await.expect("redrive");
    assert_eq!(report.redriven.len(), 1, "{report:?}");
    assert!(report.missing.is_empty() && report.refused.is_empty(), "{report:?}");
    assert_eq!(report.redriven[0].job_id, id.as_str(), "the job keeps its id");
    eventually(Duration::from_secs(15), "the redriven job to succeed", || async {
        let s = q.stats().await.expect("stats");
        (s.pending == 0 && s.in_flight == 0 && s.last_minute.done == 1).then_some(())
    })
    .await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let (n, attempt, last_error, job_id) = runs[2].clone();
    assert_eq!(
        (n, attempt, last_error, job_id.as_str()),
        (7, 1, None, id.as_str()),
        "the same payload as a fresh job: first attempt, no previous error"
    );
    assert_eq!(xlen(&redis, &q.keys().dead), 0, "the dead letter is gone");
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&q.keys().stream)
        .arg("workers")
        .query(&mut redis.conn())
        .expect("XPENDING");
    assert_eq!(
        pending.as_sequence().and_then(|p| p.first()).cloned(),
        Some(redis::Value::Int(0)),
        "acked"
    );

    let again = q.redrive(std::slice::from_ref(&dead.dead_id)).await.expect("redrive");
    assert_eq!(again.missing, vec![dead.dead_id.clone()]);
    assert!(again.redriven.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.stats().await.expect("stats").last_minute.done, 1, "no second run");
    w.stop().await;
}

/// Entries that are not jobs of the queue (garbage, an older payload format) cannot be
/// redriven: they are reported with the reason and stay in the dead-letter stream, and
/// nothing is added to the queue for them. Good entries in the same call still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_dead_letters_are_refused_and_stay() {
    let redis = RedisServer::start();
    let cfg = config("redrive_bad");
    let q = queue::<Sync>(&redis, &cfg);
    q.ensure_group().await.expect("group");
    let mut conn = redis.conn();
    let stream = q.keys().stream.clone();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("data")
        .arg(&[0xffu8, 0x00, 0xfe][..])
        .query(&mut conn)
        .expect("xadd");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&["id", "old-1", "a", "0", "m", "3", "p", "{\"tenant_id\":7}"])
        .query(&mut conn)
        .expect("xadd");
    q.enqueue_with(
        &job(1),
        EnqueueOptions::default().policy(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }),
    )
    .await
    .expect("enqueue");
    let fail = Arc::new(AtomicBool::new(true));
    let ran = Arc::new(AtomicU32::new(0));
    let (f, r) = (fail.clone(), ran.clone());
    let w = start_worker(&redis, &cfg, move |_: Sync, _: JobInfo| {
        let (f, r) = (f.clone(), r.clone());
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            if f.load(Ordering::SeqCst) {
                Err(JobError::permanent("ZOHO_UNAVAILABLE", "zoho: down"))
            } else {
                Ok(())
            }
        }
    });
    let dead = eventually(Duration::from_secs(10), "three dead letters", || async {
        let d = q.dead_letters(10).await.expect("dead");
        (d.len() == 3).then_some(d)
    })
    .await;
    fail.store(false, Ordering::SeqCst);
    let good = dead
        .iter()
        .find(|d| d.reason == "zoho: down")
        .expect("the job's letter");
    let ids: Vec<String> = dead.iter().map(|d| d.dead_id.clone()).collect();
    let stream_before = xlen(&redis, &stream);
    let report = q.redrive(&ids).await.expect("redrive");
    assert_eq!(report.redriven.len(), 1, "{report:?}");
    assert_eq!(report.redriven[0].dead_id, good.dead_id);
    let mut reasons: Vec<&str> = report.refused.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{report:?}");
    assert!(
        reasons[0].starts_with("not a job: entry has no `id` field"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("payload of job old-1 does not decode: missing field `tenant`"),
        "{reasons:?}"
    );
    eventually(Duration::from_secs(10), "the good job to run again", || async {
        (ran.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    assert_eq!(
        xlen(&redis, &stream),
        stream_before + 1,
        "only the good job went back into the queue"
    );
    let mut left: Vec<String> = q
        .dead_letters(10)
        .await
        .expect("dead")
        .into_iter()
        .map(|d| d.dead_id)
        .collect();
    let mut refused: Vec<String> = report.refused.iter().map(|r| r.dead_id.clone()).collect();
    left.sort();
    refused.sort();
    assert_eq!(left, refused, "the refused letters stay");
    w.stop().await;
}

/// Two operators retrying the same dead letter at once make one job, not two: the move is
/// atomic per entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redrives_of_one_dead_letter_make_one_job() {
    let redis = RedisServer::start();
    let cfg = config("redrive_race");
    let q = queue::<Sync>(&redis, &cfg);
    q.ensure_group().await.expect("group");
    let mut ids = Vec::new();
    for n in 0..50u32 {
        let p = serde_json::to_string(&job(n)).expect("json");
        let id: String = redis::cmd("XADD")
            .arg(&q.keys().dead)
            .arg("*")
            .arg(&["id", &format!("j{n}"), "a", "3", "m", "3", "e", "boom", "p", &p])
            .query(&mut redis.conn())
            .expect("xadd");
        ids.push(id);
    }
    let (a, b) = tokio::join!(q.redrive(&ids), q.redrive(&ids));
    let (a, b) = (a.expect("redrive"), b.expect("redrive"));
    assert_eq!(a.redriven.len() + b.redriven.len(), 50, "{a:?} {b:?}");
    assert_eq!(a.missing.len() + b.missing.len(), 50);
    assert_eq!(xlen(&redis, &q.keys().stream), 50, "one job per dead letter");
    assert_eq!(xlen(&redis, &q.keys().dead), 0);
    let fields: Vec<(String, String)> = {
        let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&q.keys().stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(&mut redis.conn())
            .expect("XRANGE");
        v.into_iter().next().expect("an entry").1
    };
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("a"), Some("0"), "attempts reset");
    assert_eq!(get("e"), None, "no previous error");
    assert_eq!(get("m"), Some("3"), "the job's policy kept");
}

/// A purge removes exactly the dead letters named; paging reads the stream newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_the_selected_dead_letters() {
    let redis = RedisServer::start();
    let cfg = config("purge");
    let q = queue::<Sync>(&redis, &cfg);
    let mut ids = Vec::new();
    for n in 0..5u32 {
        let p = serde_json::to_string(&job(n)).expect("json");
        let id: String = redis::cmd("XADD")
            .arg(&q.keys().dead)
            .arg("*")
            .arg(&["id", &format!("j{n}"), "a", "1", "m", "1", "e", "boom", "p", &p])
            .query(&mut redis.conn())
            .expect("xadd");
        ids.push(id);
    }
    // Newest first, in pages.
    let first = q.dead_letters_before(None, 2).await.expect("page");
    let second = q.dead_letters_before(Some(&first[1].dead_id), 2).await.expect("page");
    let third = q.dead_letters_before(Some(&second[1].dead_id), 2).await.expect("page");
    let paged: Vec<String> = first
        .iter()
        .chain(&second)
        .chain(&third)
        .map(|d| d.dead_id.clone())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(paged, newest_first);
    assert_eq!(
        q.dead_letter(&ids[2]).await.expect("get").map(|d| d.job_id),
        Some(Some("j2".to_owned()))
    );
    assert_eq!(q.dead_letter("nope").await.expect("get"), None);

    let removed = q
        .purge_dead(&[ids[1].clone(), ids[3].clone(), "1-1".into(), "garbage".into()])
        .await
        .expect("purge");
    assert_eq!(removed, 2);
    let left: Vec<String> = q
        .dead_letters(10)
        .await
        .expect("dead")
        .into_iter()
        .map(|d| d.dead_id)
        .collect();
    assert_eq!(left, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
}
