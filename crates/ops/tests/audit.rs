//! The audit stream against a real Redis: entries newest first, paged, bounded, one line each.

use std::time::Duration;

use crmsync_ops::{Actor, Audit};
use crmsync_testkit::RedisServer;

#[tokio::test]
async fn entries_are_listed_newest_first_paged_and_bounded() {
    let redis = RedisServer::start();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let audit = Audit::new(conn, "ns");
    let alice = Actor::dashboard("alice (session 0123abcd, 127.0.0.1)");
    for i in 0..5 {
        audit
            .record(&alice, "tenant.pause", &format!("tenant t{i}"), "why", "paused")
            .await
            .expect("record");
    }
    // A stranger's text: forged lines and escape codes become one line; long text is cut.
    let evil = format!("x\n2026-01-01 INFO forged\x1b[31m{}", "y".repeat(5_000));
    audit
        .record(&Actor::cli(), "dead.purge", &evil, &evil, &evil)
        .await
        .expect("record");

    let all = audit.list(100, None).await.expect("list");
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].action, "dead.purge");
    assert_eq!(all[0].via, "cli");
    assert!(all[0].who.contains('@'), "{}", all[0].who);
    for field in [&all[0].target, &all[0].reason, &all[0].outcome] {
        assert!(!field.contains('\n') && !field.contains('\x1b'), "{field:?}");
        assert!(field.chars().count() <= 500, "{}", field.len());
        assert!(field.ends_with('…'));
    }
    assert_eq!(all[1].target, "tenant t4");
    assert_eq!(all[5].target, "tenant t0");
    assert!(all.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));

    let first = audit.list(2, None).await.expect("page 1");
    let next = audit.list(2, Some(&first[1].id)).await.expect("page 2");
    assert_eq!(next[0].target, "tenant t3");
    assert_eq!(next[1].target, "tenant t2");
    assert!(audit.list(2, Some("not-an-id")).await.expect("bad cursor").is_empty());
}
