use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crmsync_queue::{EnqueueOptions, Enqueued, JobError, JobInfo};
use crmsync_testkit::{RedisServer, eventually};

use crate::support::{config, queue, start_worker};

/// A job enqueued twice with the same idempotency key within its TTL runs once; after the
/// TTL the key may be used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_enqueue_runs_once() {
    let redis = RedisServer::start();
    let mut cfg = config("idem");
    cfg.idempotency_ttl = Duration::from_secs(2);
    let q = queue::<String>(&redis, &cfg);

    let first = q
        .enqueue_with(
            &"a".to_string(),
            EnqueueOptions::default().idempotency_key("page:acme:1"),
        )
        .await
        .expect("enqueue");
    let second = q
        .enqueue_with(
            &"a-again".to_string(),
            EnqueueOptions::default().idempotency_key("page:acme:1"),
        )
        .await
        .expect("enqueue");
    assert!(matches!(first, Enqueued::New(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id().clone()));
    // Delayed jobs are deduplicated the same way.
    let delayed = EnqueueOptions::default()
        .idempotency_key("page:acme:2")
        .delay(Duration::from_millis(200));
    assert!(matches!(
        q.enqueue_with(&"b".to_string(), delayed.clone())
            .await
            .expect("enqueue"),
        Enqueued::New(_)
    ));
    assert!(matches!(
        q.enqueue_with(&"b".to_string(), delayed).await.expect("enqueue"),
        Enqueued::Duplicate(_)
    ));

    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let w = start_worker(&redis, &cfg, move |_: String, _: JobInfo| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    });
    eventually(Duration::from_secs(10), "both distinct jobs to run", || async {
        (runs.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each key ran exactly once");

    // After the TTL the key is free again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let third = q
        .enqueue_with(
            &"a".to_string(),
            EnqueueOptions::default().idempotency_key("page:acme:1"),
        )
        .await
        .expect("enqueue");
    assert!(matches!(third, Enqueued::New(ref id) if id != first.id()));
    eventually(Duration::from_secs(10), "the re-enqueued job", || async {
        (runs.load(Ordering::SeqCst) == 3).then_some(())
    })
    .await;
    w.stop().await;
}
