//! The limiter against a real Redis: several `Limiter`s stand for several worker processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crmsync_limits::{BudgetKind, CallOutcome, LimitSettings, Limiter, Priority, Wait};
use crmsync_tenants::{DestKeys, TenantKeys};
use crmsync_testkit::RedisServer;

/// The destination every test tenant writes to.
const DEST: &str = "0123456789ab";
/// The tenants of these tests.
const TENANTS: [&str; 10] = ["t1", "t", "t2", "r", "c", "big", "x", "y", "z", "prio"];

/// A limiter of its own connection (a worker process); the test tenants are live.
fn limiter(redis: &RedisServer, window: Duration) -> Limiter {
    for t in TENANTS {
        let _: () = redis::cmd("SET")
            .arg(TenantKeys::new("crmsync", t).live())
            .arg(DEST)
            .query(&mut redis.conn())
            .expect("live");
    }
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    Limiter::new(conn, "crmsync").with_window(window)
}

/// The keys of a test tenant's destination.
fn dest(tenant: &str) -> DestKeys {
    TenantKeys::new("crmsync", tenant).dest(DEST)
}

fn settings(daily: u64, share: f64) -> LimitSettings {
    LimitSettings {
        daily_credits: daily,
        budget_share: share,
        requests_per_second: 1_000.0,
        concurrency: 25,
    }
}

/// Four "workers" racing for credits never reserve more than share × daily in a window; the
/// refusal says when credits come back, and from then on calls go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_reservations_never_pass_the_cap_and_resume_when_credits_leave() {
    let redis = RedisServer::start();
    let window = Duration::from_millis(2_880);
    let s = settings(125, 0.8); // 100 allowed
    let workers: Vec<Limiter> = (0..4).map(|_| limiter(&redis, window)).collect();
    let granted = Arc::new(AtomicU32::new(0));
    let mut handles = Vec::new();
    for l in workers.clone() {
        let granted = granted.clone();
        handles.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            for _ in 0..10 {
                match l
                    .acquire(&dest("t1"), &s, 7, None, Priority::Change)
                    .await
                    .expect("redis")
                {
                    Ok(p) => {
                        granted.fetch_add(7, Ordering::SeqCst);
                        l.finish(p, &s, CallOutcome::Answered { usage: None })
                            .await
                            .expect("finish");
                    }
                    Err(w) => waits.push(w),
                }
            }
            waits
        }));
    }
    let mut waits = Vec::new();
    for h in handles {
        waits.extend(h.await.expect("task"));
    }
    let spent = granted.load(Ordering::SeqCst);
    assert!(spent <= 100, "spent {spent} of 100");
    assert!(
        spent > 100 - 7,
        "the pause began within one call of the threshold: {spent}"
    );
    let Some(Wait::Budget {
        until_ms,
        used,
        allowed,
        others: 0,
        kind: BudgetKind::Ours,
    }) = waits.first().cloned()
    else {
        panic!("expected budget waits, got {waits:?}")
    };
    assert_eq!((used, allowed), (spent as u64, 100));
    let now = crmsync_queue::now_ms();
    assert!(
        until_ms > now && until_ms <= now + window.as_millis() as u64 + 50,
        "resumes within a window"
    );
    let b = workers[0].budget(&dest("t1"), &s).await.expect("budget");
    assert_eq!(b.budget_paused_until_ms, Some(until_ms));
    assert_eq!(b.used, spent as u64);

    tokio::time::sleep(Duration::from_millis(
        until_ms.saturating_sub(crmsync_queue::now_ms()) + 10,
    ))
    .await;
    let p = workers[1]
        .acquire(&dest("t1"), &s, 7, None, Priority::Change)
        .await
        .expect("redis")
        .expect("credits came back");
    workers[1]
        .finish(p, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
}

/// A reservation whose request was never sent goes back; Zoho's remaining-credits header makes
/// the ledger count other integrations' usage; backfill leaves the last 10% to the change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_gives_back_unsent_calls_reconciles_with_zoho_and_keeps_headroom() {
    let redis = RedisServer::start();
    let l = limiter(&redis, Duration::from_secs(60));
    let s = settings(1_000, 1.0);
    let p = l
        .acquire(&dest("t"), &s, 10, None, Priority::Backfill)
        .await
        .expect("redis")
        .expect("permit");
    l.finish(p, &s, CallOutcome::NotSent).await.expect("finish");
    assert_eq!(l.budget(&dest("t"), &s).await.expect("budget").used, 0);

    let p = l
        .acquire(&dest("t"), &s, 10, None, Priority::Backfill)
        .await
        .expect("redis")
        .expect("permit");
    // Zoho says 600 are left of 1,000: 400 used by the org, 390 of them by someone else.
    l.finish(
        p,
        &s,
        CallOutcome::Answered {
            usage: Some(crmsync_sink::Usage::Remaining(600)),
        },
    )
    .await
    .expect("finish");
    let b = l.budget(&dest("t"), &s).await.expect("budget");
    assert_eq!((b.used, b.others, b.org_used), (10, 390, Some(400)));

    // While change-feed work waits, backfill may go up to 900 (90%); the change feed up to 1,000.
    let _: () = redis::cmd("SET")
        .arg(dest("t").feed_waiting())
        .arg(3)
        .query(&mut redis.conn())
        .expect("set");
    let mut used = 400;
    while let Ok(p) = l
        .acquire(&dest("t"), &s, 50, None, Priority::Backfill)
        .await
        .expect("redis")
    {
        used += 50;
        l.finish(p, &s, CallOutcome::Answered { usage: None })
            .await
            .expect("finish");
    }
    assert_eq!(used, 900);
    let p = l
        .acquire(&dest("t"), &s, 50, None, Priority::Change)
        .await
        .expect("redis")
        .expect("change feed still runs");
    l.finish(p, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
    let too_big = l
        .acquire(&dest("t2"), &settings(10, 1.0), 11, None, Priority::Change)
        .await
        .expect("redis");
    assert!(matches!(too_big, Err(Wait::TooLarge { cost: 11, allowed: 10 })));
}

/// The tenant's rate holds across workers: N calls at R per second take at least (N-1)/R.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_is_shared_by_every_worker() {
    let redis = RedisServer::start();
    let s = LimitSettings {
        requests_per_second: 10.0,
        ..settings(1_000_000, 1.0)
    };
    let workers: Vec<Limiter> = (0..3).map(|_| limiter(&redis, Duration::from_secs(3600))).collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    for l in workers {
        handles.push(tokio::spawn(async move {
            let mut granted = Vec::new();
            for _ in 0..7 {
                let p = l
                    .acquire(&dest("r"), &s, 1, None, Priority::Change)
                    .await
                    .expect("redis")
                    .expect("permit");
                granted.push(start.elapsed());
                l.finish(p, &s, CallOutcome::Answered { usage: None })
                    .await
                    .expect("finish");
            }
            granted
        }));
    }
    let mut granted = Vec::new();
    for h in handles {
        granted.extend(h.await.expect("task"));
    }
    granted.sort();
    assert!(
        start.elapsed() >= Duration::from_millis(2_000),
        "21 calls at 10/s took {:?}",
        start.elapsed()
    );
    // As the CRM counts: no second holds more than 10 calls (a wake-up may be up to the
    // limiter's 50 ms margin late, so windows of 950 ms are counted).
    for (i, t) in granted.iter().enumerate() {
        let in_window = granted[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_millis(950))
            .count();
        assert!(
            in_window <= 10,
            "{in_window} calls within a second from {t:?}: {granted:?}"
        );
    }
}

/// No more calls in flight than the tenant's concurrency (and 10 for large upserts); a lease
/// held by a worker that died expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_leases_cap_parallel_calls_and_expire() {
    let redis = RedisServer::start();
    let s = LimitSettings {
        concurrency: 2,
        ..settings(1_000_000, 1.0)
    };
    let l = limiter(&redis, Duration::from_secs(3600))
        .with_lease_ttl(Duration::from_millis(800))
        .with_max_lease_wait(Duration::from_millis(200));
    let a = l
        .acquire(&dest("c"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("1st");
    let _dead = l
        .acquire(&dest("c"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("2nd");
    assert_eq!(
        l.acquire(&dest("c"), &s, 1, None, Priority::Change)
            .await
            .expect("redis")
            .err(),
        Some(Wait::Busy)
    );
    l.finish(a, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
    let b = l
        .acquire(&dest("c"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("a slot came free");
    // `_dead` is never finished (its worker was killed): its lease expires on its own.
    let slow = l.clone().with_max_lease_wait(Duration::from_secs(3));
    let c = slow
        .acquire(&dest("c"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("the dead lease expired");
    l.finish(b, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
    l.finish(c, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");

    let wide = LimitSettings { concurrency: 25, ..s };
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(
            l.acquire(&dest("big"), &wide, 10, Some(10), Priority::Change)
                .await
                .expect("redis")
                .expect("complex"),
        );
    }
    assert_eq!(
        l.acquire(&dest("big"), &wide, 10, Some(10), Priority::Change)
            .await
            .expect("redis")
            .err(),
        Some(Wait::Busy)
    );
    let small = l
        .acquire(&dest("big"), &wide, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("small upserts still go");
    l.finish(small, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
    for p in held {
        l.finish(p, &wide, CallOutcome::Answered { usage: None })
            .await
            .expect("finish");
    }
}

/// A 429 seen by one worker makes every worker wait, halves the tenant's rate factor, and
/// successes raise it again; pauses stop every call until resumed; retries draw on a budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_cools_down_every_worker_and_pauses_stop_calls() {
    let redis = RedisServer::start();
    let s = settings(1_000_000, 1.0);
    let (a, b) = (
        limiter(&redis, Duration::from_secs(3600)),
        limiter(&redis, Duration::from_secs(3600)),
    );
    let p = a
        .acquire(&dest("x"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("permit");
    let until = a
        .finish(
            p,
            &s,
            CallOutcome::Throttled {
                retry_after: Some(Duration::from_secs(5)),
                usage: None,
            },
        )
        .await
        .expect("finish")
        .expect("cooldown");
    match b
        .acquire(&dest("x"), &s, 1, None, Priority::Change)
        .await
        .expect("redis")
    {
        Err(Wait::Cooldown { until_ms }) => assert_eq!(until_ms, until),
        other => panic!("the other worker must cool down too: {other:?}"),
    }
    let budget = b.budget(&dest("x"), &s).await.expect("budget");
    assert_eq!(budget.rate_factor, 0.5);
    assert_eq!(budget.used, 0, "a 429 is not charged");

    let _: () = redis::cmd("DEL")
        .arg(dest("x").cooldown())
        .query(&mut redis.conn())
        .expect("del");
    for _ in 0..5 {
        let p = b
            .acquire(&dest("x"), &s, 1, None, Priority::Change)
            .await
            .expect("redis")
            .expect("permit");
        b.finish(p, &s, CallOutcome::Answered { usage: None })
            .await
            .expect("finish");
    }
    assert!(
        (b.budget(&dest("x"), &s).await.expect("budget").rate_factor - 0.6).abs() < 1e-9,
        "additive increase"
    );

    a.pause("x", "maintenance").await.expect("pause");
    assert!(matches!(
        b.acquire(&dest("x"), &s, 1, None, Priority::Change)
            .await
            .expect("redis"),
        Err(Wait::Paused { .. })
    ));
    assert!(a.resume("x").await.expect("resume"));
    assert!(
        b.acquire(&dest("x"), &s, 1, None, Priority::Change)
            .await
            .expect("redis")
            .is_ok()
    );

    let mut allowed = 0;
    for _ in 0..200 {
        if a.retry_allowed(&dest("y")).await.expect("budget") {
            allowed += 1;
        }
    }
    assert!(
        (50..=52).contains(&allowed),
        "a failing API gets a bounded number of retries: {allowed}"
    );
}

/// Every 429 is counted in the minute it came (one key per minute under the tenant's hash tag,
/// kept 25 hours) for the dashboard's chart; answered calls count nothing; the ledger reads
/// back per bucket as `budget` sums it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_429_is_counted_per_minute_for_the_dashboard() {
    let redis = RedisServer::start();
    let s = settings(1_000_000, 1.0);
    let l = limiter(&redis, crmsync_limits::DAY);
    let minute = crmsync_queue::now_ms() / 60_000;
    for outcome in [
        CallOutcome::Throttled {
            retry_after: Some(Duration::from_millis(1)),
            usage: None,
        },
        CallOutcome::Answered { usage: None },
        CallOutcome::Throttled {
            retry_after: Some(Duration::from_millis(1)),
            usage: None,
        },
    ] {
        let p = l
            .acquire(&dest("z"), &s, 3, None, Priority::Change)
            .await
            .expect("redis")
            .expect("permit");
        l.finish(p, &s, outcome).await.expect("finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now_minute = crmsync_queue::now_ms() / 60_000;
    let counts = l
        .throttled_per_minute(&dest("z"), minute - 2, now_minute)
        .await
        .expect("read");
    assert_eq!(counts.iter().sum::<u64>(), 2, "two 429s: {counts:?}");
    assert_eq!(counts[..2], [0, 0], "nothing in earlier minutes");
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*429s*").query(&mut conn).expect("keys");
    assert!(!keys.is_empty() && keys.len() <= 2, "{keys:?}");
    let mut total = 0;
    for key in &keys {
        assert!(
            key.starts_with(&format!("{}:429s:", dest("z").prefix())),
            "the destination's keys: {key}"
        );
        let n: u64 = redis::cmd("GET").arg(key).query(&mut conn).expect("get");
        total += n;
        let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).expect("ttl");
        assert!((24 * 3600..=25 * 3600).contains(&ttl), "kept about 25 h: {ttl}");
    }
    assert_eq!(total, 2);

    // Only the answered call is charged (a 429 is not); the ledger reads back by bucket.
    let ledger = l.ledger(&dest("z")).await.expect("ledger");
    assert_eq!(ledger.bucket_ms, 60_000);
    assert_eq!(ledger.used(), 3);
    assert_eq!(ledger.used(), l.budget(&dest("z"), &s).await.expect("budget").used);
    assert!(ledger.buckets.iter().all(|(start, _)| start % 60_000 == 0));
}

/// A permit dropped before its call finished (a cancelled or panicking call) gives back its
/// leases and its reservation by itself: the next calls find every lease free and the credits
/// unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_permit_gives_back_its_leases_and_credits() {
    let redis = RedisServer::start();
    let l = limiter(&redis, Duration::from_secs(60)).with_max_lease_wait(Duration::from_millis(300));
    let s = LimitSettings {
        concurrency: 1,
        ..settings(100, 1.0)
    };
    let k = dest("x");
    let permit = l
        .acquire(&k, &s, 40, Some(1), Priority::Change)
        .await
        .expect("redis")
        .expect("granted");
    assert_eq!(
        l.acquire(&k, &s, 1, None, Priority::Change).await.expect("redis").err(),
        Some(Wait::Busy),
        "the one lease is held"
    );
    drop(permit);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let used: Option<u64> = redis::cmd("HGET")
            .arg(k.ledger())
            .arg("sum")
            .query(&mut redis.conn())
            .expect("HGET");
        let leases: u64 = redis::cmd("ZCARD")
            .arg(k.leases())
            .query(&mut redis.conn())
            .expect("ZCARD");
        let capped: u64 = redis::cmd("ZCARD")
            .arg(k.complex_leases())
            .query(&mut redis.conn())
            .expect("ZCARD");
        if used.unwrap_or(0) == 0 && leases == 0 && capped == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still held: {used:?} credits, {leases} leases, {capped} capped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The whole allowance is there again, and the lease.
    let p = l
        .acquire(&k, &s, 100, Some(1), Priority::Change)
        .await
        .expect("redis")
        .expect("the whole allowance");
    l.finish(p, &s, CallOutcome::NotSent).await.expect("finish");
}

/// The budget is the org's: what its other integrations use (read from the CRM's usage
/// answers) counts against the share. When they fill it, one caller at a time is told to
/// probe; a reading showing room lifts the pause at once, and an answer without the header
/// (under half the day used) bounds what others can have used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orgs_other_integrations_count_and_a_probe_reads_their_usage_again() {
    use crmsync_limits::Ask;
    use crmsync_sink::Usage;
    let redis = RedisServer::start();
    let l = limiter(&redis, Duration::from_secs(60));
    let s = settings(1_000, 0.8); // 800 allowed
    let k = dest("y");
    let answered = |r: u64| CallOutcome::Answered {
        usage: Some(Usage::Remaining(r)),
    };
    let p = l
        .acquire(&k, &s, 10, None, Priority::Change)
        .await
        .expect("redis")
        .expect("permit");
    // 400 left: the org used 600, 10 of them ours.
    l.finish(p, &s, answered(400)).await.expect("finish");
    let b = l.budget(&k, &s).await.expect("budget");
    assert_eq!((b.used, b.others), (10, 590));
    let p = l
        .acquire(&k, &s, 10, None, Priority::Change)
        .await
        .expect("redis")
        .expect("room");
    // Meanwhile the others spent 240 more: 150 left.
    l.finish(p, &s, answered(150)).await.expect("finish");
    assert_eq!(l.budget(&k, &s).await.expect("budget").others, 830);

    let mut ask = Ask::new(10, None, Priority::Change);
    ask.can_probe = true;
    assert_eq!(
        l.acquire_with(&k, &s, ask).await.expect("redis").err(),
        Some(Wait::Probe)
    );
    let Some(Wait::Budget {
        kind,
        others,
        used,
        until_ms,
        ..
    }) = l.acquire_with(&k, &s, ask).await.expect("redis").err()
    else {
        panic!("one probe at a time")
    };
    assert_eq!((kind, others, used), (BudgetKind::Probe, 830, 20));
    let interval = l.probe_interval(&s).as_millis() as u64;
    assert!(
        until_ms <= crmsync_queue::now_ms() + interval,
        "the next probe is due within {interval} ms"
    );
    let b = l.budget(&k, &s).await.expect("budget");
    assert_eq!(b.budget_kind, Some(BudgetKind::Probe));

    // The probe (forced past the cap) reads 600 left: the others' credits left the window.
    let mut probe = Ask::new(1, None, Priority::Change);
    probe.force = true;
    let p = l
        .acquire_with(&k, &s, probe)
        .await
        .expect("redis")
        .expect("a probe goes");
    l.finish(p, &s, answered(600)).await.expect("finish");
    let b = l.budget(&k, &s).await.expect("budget");
    assert_eq!((b.used, b.others), (21, 379));
    let p = l.acquire_with(&k, &s, ask).await.expect("redis").expect("room again");
    // No header: under half the day (500) is used, so the others used at most 499 - 31.
    l.finish(p, &s, below_half()).await.expect("finish");
    let b = l.budget(&k, &s).await.expect("budget");
    assert_eq!((b.used, b.others), (31, 379), "379 is under the bound");
    let p = l
        .acquire(&k, &s, 100, None, Priority::Change)
        .await
        .expect("redis")
        .expect("permit");
    l.finish(p, &s, below_half()).await.expect("finish");
    let b = l.budget(&k, &s).await.expect("budget");
    assert_eq!((b.used, b.others), (131, 499 - 131), "bounded by the missing header");
}

/// An answer without `X-API-CREDITS-REMAINING`: under half the day is used.
fn below_half() -> CallOutcome {
    CallOutcome::Answered {
        usage: Some(crmsync_sink::Usage::BelowHalf),
    }
}

/// While change-feed records wait, backfill calls take rate slots only a little ahead: a
/// change asking after eight backfill calls is granted with the next slot (at 2 a second: two
/// at once, then two more a second later), not behind all eight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_calls_go_before_backfill_calls_in_the_rate() {
    let redis = RedisServer::start();
    let s = LimitSettings {
        requests_per_second: 2.0,
        ..settings(1_000_000, 1.0)
    };
    let k = dest("prio");
    let _: () = redis::cmd("SET")
        .arg(k.feed_waiting())
        .arg(1)
        .query(&mut redis.conn())
        .expect("feed waits");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..8 {
        let (l, k, order) = (limiter(&redis, Duration::from_secs(3600)), k.clone(), order.clone());
        handles.push(tokio::spawn(async move {
            let p = l
                .acquire(&k, &s, 1, None, Priority::Backfill)
                .await
                .expect("redis")
                .expect("permit");
            order.lock().expect("order").push(format!("backfill-{i}"));
            l.finish(p, &s, CallOutcome::Answered { usage: None })
                .await
                .expect("finish");
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let l = limiter(&redis, Duration::from_secs(3600));
    let p = l
        .acquire(&k, &s, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("permit");
    order.lock().expect("order").push("change".into());
    l.finish(p, &s, CallOutcome::Answered { usage: None })
        .await
        .expect("finish");
    for h in handles {
        h.await.expect("task");
    }
    let order = order.lock().expect("order").clone();
    let at = order.iter().position(|o| o == "change").expect("change granted");
    // The first two slots went at once; the change shares the next two (ties in either order).
    assert!(at <= 3, "the change waited behind {at} backfill calls: {order:?}");
}

/// A refusal near the cap says exactly when enough credits leave, reading a bounded part of
/// the ledger (group totals, then one group's buckets), not all 1,440 buckets of a full window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_finds_when_credits_leave_reading_a_bounded_part_of_the_ledger() {
    let redis = RedisServer::start();
    let window = Duration::from_millis(144_000); // buckets of 100 ms
    let l = limiter(&redis, window);
    let k = dest("big");
    let bms = l.bucket_ms();
    let span = 1_441; // buckets that may hold live credits: window / bucket + 1
    let now_b = crmsync_queue::now_ms() / bms;
    // A full window: 1 credit in each of the last 1,440 buckets (written as the scripts would).
    let first = now_b - 1_439;
    let mut pipe = redis::pipe();
    for b in first..=now_b {
        pipe.cmd("HSET").arg(k.ledger()).arg(format!("b:{b}")).arg(1).ignore();
        pipe.cmd("ZADD").arg(k.ledger_index()).arg(b).arg(b).ignore();
    }
    pipe.cmd("HSET").arg(k.ledger()).arg("sum").arg(1_440).ignore();
    let _: () = pipe.query(&mut redis.conn()).expect("ledger");
    let s = settings(1_440, 1.0); // 1,440 allowed: full
    // Once to build the group totals (an older ledger gets them once), then measured.
    let _ = l.acquire(&k, &s, 100, None, Priority::Change).await.expect("redis");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.conn())
        .expect("reset");
    let Some(Wait::Budget { until_ms, .. }) = l
        .acquire(&k, &s, 100, None, Priority::Change)
        .await
        .expect("redis")
        .err()
    else {
        panic!("refused for budget")
    };
    // 100 credits must leave: the 100 oldest buckets, the last of them `first + 99`.
    assert_eq!(until_ms, (first + 99 + span) * bms);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.conn())
        .expect("info");
    let hmget: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
        .and_then(|r| r.split(',').next()?.parse().ok())
        .unwrap_or(0);
    assert!(hmget <= 70, "{hmget} HMGETs for one refusal");
}
