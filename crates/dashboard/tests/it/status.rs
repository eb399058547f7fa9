//! `Fleet::status` and its text rendering.

use crmsync_dashboard::{ErrorSource, Pause, RunView, text};
use crmsync_limits::BudgetKind;
use crmsync_producer::RunStatus;
use crmsync_testkit::RedisServer;

use crate::support::{DEAD_REASON, NS, PAUSE_REASON, fleet, seed};

/// One status shows every kind of pause with why and until when, credits used against the
/// allowance, a running backfill's progress, each tenant's last error from its source, the
/// queues' depths and the workers — and renders readably at 80 and 120 columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_pauses_credits_runs_errors_queues_and_workers() {
    let redis = RedisServer::start();
    let seeded = seed(&redis).await;
    let s = fleet(&redis).status().await.expect("status");
    let now = crmsync_queue::now_ms();
    assert_eq!(s.namespace, NS);

    let ids: Vec<&str> = s.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["acme", "globex", "hooli", "initech"]);
    let t = |id: &str| s.tenants.iter().find(|t| t.id == id).expect("tenant");

    let acme = t("acme");
    assert!(acme.pauses.is_empty(), "{:?}", acme.pauses);
    assert_eq!((acme.credits.used, acme.credits.allowed), (30, 800));
    assert!((acme.credits.percent - 3.75).abs() < 1e-9);
    let run: &RunView = acme.run.as_ref().expect("acme's run in progress");
    assert_eq!(run.run.id, seeded.acme_run);
    assert_eq!((run.run.pages_done, run.run.last_page), (4, Some(7)));
    assert_eq!(run.progress, Some(0.5));
    assert!(acme.last_run.is_none(), "the newest run is the one in progress");
    let err = acme.last_error.as_ref().expect("acme's rejected record");
    assert_eq!(err.source, ErrorSource::Rejected);
    assert!(
        err.message.contains("INVALID_DATA") && err.message.contains("Phone"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains("broken@example.com"),
        "no contact email in the status"
    );

    let globex = t("globex");
    match globex.pauses.as_slice() {
        [Pause::Operator { reason, since_ms }] => {
            assert_eq!(reason, PAUSE_REASON);
            assert!(now - since_ms < 60_000);
        }
        other => panic!("globex is paused by an operator: {other:?}"),
    }
    assert!(globex.run.is_none());
    let last = globex.last_run.as_ref().expect("globex's failed run");
    assert_eq!(last.run.status, RunStatus::Failed);
    let err = globex.last_error.as_ref().expect("globex's run error");
    assert_eq!(err.source, ErrorSource::Run);
    assert!(err.message.contains("Nylas 500"));

    let hooli = t("hooli");
    match hooli.pauses.as_slice() {
        [Pause::Cooldown { until_ms }] => assert!(*until_ms > now && *until_ms <= now + 61_000),
        other => panic!("hooli cools down after a 429: {other:?}"),
    }
    assert_eq!(hooli.rate_factor, 0.5);
    let err = hooli.last_error.as_ref().expect("hooli's dead letter");
    assert_eq!(
        (err.source, err.message.as_str()),
        (ErrorSource::DeadLetter, DEAD_REASON)
    );

    let initech = t("initech");
    match initech.pauses.as_slice() {
        [
            Pause::Budget {
                until_ms,
                used,
                allowed,
                others: 0,
                whose: BudgetKind::Ours,
            },
        ] => {
            assert_eq!((*used, *allowed), (98, 100));
            assert!(*until_ms > now, "resumes later");
        }
        other => panic!("initech's budget is spent: {other:?}"),
    }
    assert_eq!((initech.credits.used, initech.credits.allowed), (98, 100));
    assert!(initech.last_error.is_none());

    let q = |name: &str| s.queues.iter().find(|q| q.queue == name).expect("queue");
    let backfill = q("backfill");
    assert_eq!(
        (backfill.pending, backfill.in_flight, backfill.delayed, backfill.dead),
        (3, 0, 0, 1)
    );
    assert_eq!(backfill.last_minute.dead, 1);
    let writes = q("writes");
    assert_eq!(
        (writes.pending, writes.in_flight, writes.delayed, writes.dead),
        (1, 2, 1, 0)
    );
    assert_eq!(writes.workers_alive, 1);
    let w = |queue: &str| s.workers.iter().find(|w| w.queue == queue).expect("worker");
    assert!(w("writes").worker.alive && w("writes").worker.in_flight == 2);
    assert!(!w("backfill").worker.alive && w("backfill").worker.state == "stopped");

    // The JSON carries no secret (the store is read without its key, and only limits are kept).
    let json = serde_json::to_string(&s).expect("json");
    for secret in ["SECRET_API_KEY", "CLIENT_SECRET_VALUE", "REFRESH_TOKEN_VALUE", "sealed"] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }

    // Nothing only cut: what does not fit its column is told in full on lines of its own.
    for width in [80, 120, 160, 200] {
        let out = text::render(&s, width);
        for line in out.lines() {
            assert!(line.chars().count() <= width, "wider than {width}: {line:?}\n{out}");
        }
        for needle in [
            "operator",
            "CRM migration",
            "budget",
            "crmsync used 98 of 100",
            "resume",
            "429",
            "4/8p",
            "30/800 (4%)",
            "failed",
            "dead letter",
            "Nylas answered 401",
            "grant expired",
            "invalid data",
            "Nylas 500",
            "stopped",
            "alive",
        ] {
            assert!(out.contains(needle), "{needle:?} missing at {width} columns:\n{out}");
        }
    }
    println!("{}\n{}", text::render(&s, 80), text::render(&s, 200));
    seeded.gate.add_permits(10);
    seeded.writes_worker.stop().await;
}

/// Writes that wait for something besides the budget, a pause or a 429 (here Zoho's
/// token-request window) show why, since when and until when, in human time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_the_token_window_shows_why_and_until_when() {
    let redis = RedisServer::start();
    let _seeded = seed(&redis).await;
    let now = crmsync_queue::now_ms();
    let conn = crmsync_queue::connect(redis.client(), std::time::Duration::from_secs(5)).expect("conn");
    let until = now + 8 * 60_000;
    crmsync_producer::waits::record(
        &conn,
        &crate::support::dest(&redis, "acme").await,
        "TOKEN_REQUESTS_EXHAUSTED",
        "Zoho's 10 token requests per 10 minutes are used",
        Some(until),
        None,
    )
    .await
    .expect("record");
    let s = fleet(&redis).status().await.expect("status");
    let acme = s.tenants.iter().find(|t| t.id == "acme").expect("acme");
    match acme.pauses.as_slice() {
        [Pause::Blocked { code, until_ms, .. }] => {
            assert_eq!((code.as_str(), *until_ms), ("TOKEN_REQUESTS_EXHAUSTED", Some(until)));
        }
        other => panic!("acme waits for the token window: {other:?}"),
    }
    let out = text::render(&s, 200);
    assert!(
        out.contains("Zoho's 10 token requests") && (out.contains("in 7m") || out.contains("in 8m")),
        "{out}"
    );
}

/// Each tenant's state in one word with why and until when, and a run's pages read and records
/// written counted apart: a run past its last page with records still waiting is not done; a
/// run nothing moved for 5 minutes is stalled; a tenant whose last run failed says so once
/// nothing else holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_tell_why_and_runs_count_records_apart_from_pages() {
    use crmsync_dashboard::StateKind;
    use crmsync_tenants::TenantKeys;

    let redis = RedisServer::start();
    let seeded = seed(&redis).await;
    let run_key = TenantKeys::new(NS, "acme").run(&seeded.acme_run);
    let buffered = TenantKeys::new(NS, "acme").run_buffered(&seeded.acme_run);
    // Every page counted, 250 records written, 40 unchanged, 150 still waiting.
    let _: () = redis::cmd("HSET")
        .arg(&run_key)
        .arg("pages_done")
        .arg(8)
        .arg("inserted")
        .arg(200)
        .arg("updated")
        .arg(50)
        .arg("unchanged")
        .arg(40)
        .query(&mut redis.conn())
        .expect("hset");
    let _: () = redis::cmd("SET")
        .arg(&buffered)
        .arg(150)
        .query(&mut redis.conn())
        .expect("set");

    let s = fleet(&redis).status().await.expect("status");
    let t =
        |s: &crmsync_dashboard::FleetStatus, id: &str| s.tenants.iter().find(|t| t.id == id).cloned().expect("tenant");
    let acme = t(&s, "acme");
    assert_eq!(acme.state.kind, StateKind::Running, "{:?}", acme.state);
    let run = acme.run.as_ref().expect("run");
    assert_eq!((run.pages.done, run.pages.total), (8, Some(8)));
    assert_eq!(run.progress, Some(1.0), "every page is read");
    assert_eq!(
        (run.records.written, run.records.unchanged, run.records.waiting),
        (250, 40, 150)
    );
    assert_eq!(run.records.rejected, 0);
    let f = run.records.fraction().expect("something to write");
    assert!((f - 250.0 / 400.0).abs() < 1e-9, "records written: {f}");

    let globex = t(&s, "globex");
    assert_eq!(globex.state.kind, StateKind::Paused);
    assert_eq!(globex.state.reason.as_deref(), Some(PAUSE_REASON));
    assert!(globex.state.since_ms.is_some() && globex.state.until_ms.is_none());
    assert_eq!(t(&s, "hooli").state.kind, StateKind::Cooldown);
    let initech = t(&s, "initech");
    assert_eq!(initech.state.kind, StateKind::Budget);
    assert!(
        initech.state.until_ms.is_some_and(|u| u > s.at_ms),
        "{:?}",
        initech.state
    );
    assert!(
        initech.state.reason.as_deref().is_some_and(|r| r.contains("98 of 100")),
        "{:?}",
        initech.state
    );
    assert!(s.worker_processes_alive >= 1);
    assert!(s.worker_processes_alive <= s.workers.iter().filter(|w| w.worker.alive).count());

    // Nothing moved for 10 minutes: stalled, saying since when. Resumed, globex shows its
    // failed run.
    let ten_min_ago = crmsync_queue::now_ms() - 600_000;
    let _: () = redis::cmd("HSET")
        .arg(&run_key)
        .arg("updated_at")
        .arg(ten_min_ago)
        .query(&mut redis.conn())
        .expect("hset");
    crmsync_limits::Limiter::new(crate::support::conn(&redis), NS)
        .resume("globex")
        .await
        .expect("resume");
    let s = fleet(&redis).status().await.expect("status");
    let acme = t(&s, "acme");
    assert_eq!(acme.state.kind, StateKind::Stalled, "{:?}", acme.state);
    assert_eq!(acme.state.since_ms, Some(ten_min_ago));
    assert!(
        acme.state.reason.as_deref().is_some_and(|r| r.contains("10m")),
        "{:?}",
        acme.state
    );
    let globex = t(&s, "globex");
    assert_eq!(globex.state.kind, StateKind::Failed, "{:?}", globex.state);
    assert!(globex.state.reason.as_deref().is_some_and(|r| r.contains("Nylas 500")));

    seeded.gate.add_permits(10);
    seeded.writes_worker.stop().await;
}
