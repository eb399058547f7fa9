//! `Fleet::series`: the per-minute sums behind the charts.

use crmsync_dashboard::{MINUTE_MS, Series};
use crmsync_testkit::RedisServer;

use crate::support::{NS, add_tenants, fleet, settings};

/// Index of an epoch minute in the hour series (None outside it).
fn at(s: &Series, minute: u64) -> Option<usize> {
    let start = s.hour_start_ms / MINUTE_MS;
    (minute >= start && minute < start + 60).then(|| (minute - start) as usize)
}

/// Per-second queue counters are summed per minute over the hour; the ledger's buckets become
/// credits per minute and a running total across the 24-hour window that ends at what the
/// budget reports as used, against the budget line share × daily credits; 429s per minute
/// come from the limiter's counters; without a tenant every tenant is summed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_sum_counters_credits_and_429s_per_minute() {
    let redis = RedisServer::start();
    add_tenants(&redis, &[("acme", 1_440, 1.0), ("beta", 2_880, 0.5)]).await;
    let mut c = redis.conn();
    let cur = crmsync_queue::now_ms() / MINUTE_MS;
    // Minutes chosen so that a minute ticking over during the test moves nothing out of (or
    // into) the hour.
    let (m58, m30, m1, m61) = (cur - 57, cur - 30, cur - 1, cur - 61);
    let hincr = |c: &mut redis::Connection, key: String, field: &str, n: u64| {
        let _: i64 = redis::cmd("HINCRBY")
            .arg(key)
            .arg(field)
            .arg(n)
            .query(c)
            .expect("hincrby");
    };
    for (sec, n) in [
        (m1 * 60, 2),
        (m1 * 60 + 17, 2),
        (m1 * 60 + 59, 2),
        (m58 * 60 + 30, 1),
        (m61 * 60, 100),
    ] {
        hincr(&mut c, format!("{{{NS}:backfill}}:stats:{sec}"), "done", n);
    }
    hincr(&mut c, format!("{{{NS}:backfill}}:stats:{}", m1 * 60 + 3), "retried", 5);
    hincr(&mut c, format!("{{{NS}:writes}}:stats:{}", m30 * 60 + 1), "dead", 4);
    hincr(&mut c, format!("{{{NS}:writes}}:stats:{}", m30 * 60 + 2), "done", 9);

    // acme's ledger: three live buckets and one that left the window but is not yet pruned.
    let (acme, beta) = (
        crate::support::dest(&redis, "acme").await,
        crate::support::dest(&redis, "beta").await,
    );
    let (m600, gone) = (cur - 600, cur - 1_441);
    for (bucket, credits) in [(m1, 5), (m30, 7), (m600, 11), (gone, 100)] {
        hincr(&mut c, acme.ledger(), &format!("b:{bucket}"), credits);
        hincr(&mut c, acme.ledger(), "sum", credits);
        let _: i64 = redis::cmd("ZADD")
            .arg(acme.ledger_index())
            .arg(bucket)
            .arg(bucket)
            .query(&mut c)
            .expect("zadd");
    }
    hincr(&mut c, beta.ledger(), &format!("b:{m1}"), 2);
    hincr(&mut c, beta.ledger(), "sum", 2);
    let _: () = redis::cmd("SET")
        .arg(acme.throttled(m30))
        .arg(3)
        .query(&mut c)
        .expect("set");
    let _: () = redis::cmd("SET")
        .arg(beta.throttled(m30))
        .arg(1)
        .query(&mut c)
        .expect("set");

    let f = fleet(&redis);
    let s = f.series(Some("acme")).await.expect("series");
    assert_eq!((s.tenant.as_deref(), s.tenants), (Some("acme"), 1));
    let backfill = &s.queues[0];
    assert_eq!(backfill.queue, "backfill");
    assert_eq!(backfill.done.len(), 60);
    assert_eq!(
        backfill.done[at(&s, m1).expect("in the hour")],
        6,
        "three seconds summed"
    );
    assert_eq!(backfill.done[at(&s, m58).expect("in the hour")], 1);
    assert_eq!(
        backfill.done.iter().sum::<u64>(),
        7,
        "the minute before the hour is left out"
    );
    assert_eq!(backfill.retried[at(&s, m1).expect("in the hour")], 5);
    let writes = &s.queues[1];
    assert_eq!(writes.queue, "writes");
    assert_eq!(writes.dead[at(&s, m30).expect("in the hour")], 4);
    assert_eq!(writes.done.iter().sum::<u64>(), 9);

    let cr = &s.credits;
    assert_eq!((cr.bucket_ms, cr.window_ms), (60_000, 86_400_000));
    assert_eq!(cr.per_minute.len(), 60);
    assert_eq!(cr.per_minute[at(&s, m1).expect("in the hour")], 5);
    assert_eq!(cr.per_minute[at(&s, m30).expect("in the hour")], 7);
    assert_eq!(cr.per_minute.iter().sum::<u64>(), 12);
    assert_eq!(
        cr.per_bucket.len(),
        1_441,
        "the window's live buckets, the current one included"
    );
    assert_eq!(cr.window_start_ms, (s.at_ms / MINUTE_MS - 1_440) * MINUTE_MS);
    assert_eq!(
        cr.per_bucket[((m600 * MINUTE_MS - cr.window_start_ms) / MINUTE_MS) as usize],
        11
    );
    assert_eq!(
        cr.per_bucket.iter().sum::<u64>(),
        23,
        "the bucket that left the window is not counted"
    );
    assert_eq!(cr.cumulative.last().copied(), Some(23));
    assert!(cr.cumulative.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(cr.used, 23);
    assert_eq!(cr.allowed, 1_440, "share × daily credits");
    assert!(
        (cr.even_pace_per_bucket - 1.0).abs() < 1e-9,
        "1,440 a day is one a minute"
    );
    // The budget (which prunes the stale bucket) agrees with the series.
    let limiter = crmsync_limits::Limiter::new(crate::support::conn(&redis), NS);
    assert_eq!(
        limiter
            .budget(&crate::support::dest(&redis, "acme").await, &settings(1_440, 1.0))
            .await
            .expect("budget")
            .used,
        23
    );

    assert_eq!(s.throttled.len(), 60);
    assert_eq!(s.throttled[at(&s, m30).expect("in the hour")], 3);
    assert_eq!(s.throttled.iter().sum::<u64>(), 3);

    let all = f.series(None).await.expect("series");
    assert_eq!((all.tenant.as_deref(), all.tenants), (None, 2));
    assert_eq!(all.credits.allowed, 1_440 + 1_440);
    assert_eq!(all.credits.per_minute[at(&all, m1).expect("in the hour")], 7);
    assert_eq!(all.credits.used, 25);
    assert_eq!(all.throttled.iter().sum::<u64>(), 4);

    let none = f.series(Some("nobody")).await.expect("series");
    assert_eq!(none.tenants, 0);
    assert_eq!(none.credits.used, 0);
}
