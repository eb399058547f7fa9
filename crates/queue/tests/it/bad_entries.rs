use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crmsync_queue::{JobError, JobInfo};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{config, queue, start_worker};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Page {
    tenant: String,
    cursor: Option<String>,
}

/// An entry whose payload cannot be decoded (garbage bytes, an older format) goes to the
/// dead-letter stream with the decode error; the worker keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_dead_lettered_without_wedging_the_worker() {
    let redis = RedisServer::start();
    let cfg = config("bad");
    let q = queue::<Page>(&redis, &cfg);
    q.ensure_group().await.expect("group");
    let mut conn = redis.conn();
    let stream = &q.keys().stream;
    // Garbage bytes, not even our field names.
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(&[0xffu8, 0x00, 0xfe, 0x13][..])
        .query(&mut conn)
        .expect("xadd");
    // Our envelope, but an older payload format.
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&["id", "old-1", "a", "0", "m", "3", "p", "{\"tenant_id\":7}"])
        .query(&mut conn)
        .expect("xadd");
    // Our envelope with a corrupt attempt counter.
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg(&["id", "old-2", "a", "many", "m", "3", "p", "{}"])
        .query(&mut conn)
        .expect("xadd");
    q.enqueue(&Page {
        tenant: "acme".into(),
        cursor: None,
    })
    .await
    .expect("enqueue");

    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let w = start_worker(&redis, &cfg, move |page: Page, _: JobInfo| {
        let r = r.clone();
        async move {
            assert_eq!(page.tenant, "acme");
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    });
    eventually(
        Duration::from_secs(10),
        "three dead letters and one good job",
        || async {
            let dead = q.dead_letters(10).await.expect("dead");
            (dead.len() == 3 && ran.load(Ordering::SeqCst) == 1).then_some(())
        },
    )
    .await;
    let mut dead = q.dead_letters(10).await.expect("dead");
    dead.reverse();
    assert_eq!(
        dead[0].reason,
        "undecodable entry: entry has no `id` field (not a crmsync job, or an older format)"
    );
    assert_eq!(
        dead[0].fields[0].0, "data",
        "the garbage is kept byte for byte for inspection"
    );
    assert!(
        dead[1]
            .reason
            .starts_with("undecodable entry: payload of job old-1 does not decode: missing field `tenant`"),
        "{}",
        dead[1].reason
    );
    assert!(
        dead[2].reason.contains("field `a` is not a valid number"),
        "{}",
        dead[2].reason
    );

    // The worker is not wedged: later jobs still run.
    q.enqueue(&Page {
        tenant: "acme".into(),
        cursor: Some("c2".into()),
    })
    .await
    .expect("enqueue");
    eventually(Duration::from_secs(10), "a later job", || async {
        (ran.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
    let s = q.stats().await.expect("stats");
    assert_eq!((s.pending, s.in_flight, s.dead, s.last_minute.dead), (0, 0, 3, 3));
    w.stop().await;
}
