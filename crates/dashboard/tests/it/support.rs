//! Shared set-up: tenants, a seeded fleet, in-process queue workers.

use std::sync::Arc;
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use crmsync_dashboard::Fleet;
use crmsync_limits::{CallOutcome, LimitSettings, Limiter, Priority, Wait};
use crmsync_producer::{BackfillPage, FlushWrites, PageCounts, RunStatus, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobError, JobQueue, RedisConn, RedisStreamBackend, RetryPolicy, worker_identity};
use crmsync_tenants::{
    Crm, DestKeys, NylasSettings, Secret, SecretKey, Tenant, TenantKeys, TenantStore, ZohoConnection,
};
use crmsync_testkit::{RedisServer, eventually};
use tokio::sync::{Semaphore, oneshot};

pub const NS: &str = "crmsync";
/// The operator's reason for pausing `globex`.
pub const PAUSE_REASON: &str = "CRM migration until Monday";
/// Why `hooli`'s backfill page was dead-lettered.
pub const DEAD_REASON: &str = "Nylas answered 401 UNAUTHORIZED: grant expired";

pub fn conn(redis: &RedisServer) -> RedisConn {
    crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn")
}

pub fn fleet(redis: &RedisServer) -> Fleet {
    Fleet::new(conn(redis), NS)
}

pub fn tenant(id: &str, daily_credits: u64, budget_share: f64) -> Tenant {
    let mut t = Tenant::new(
        id,
        NylasSettings {
            grant_id: format!("grant-{id}"),
            api_key: Secret::new("nyk_v0_SECRET_API_KEY_123"),
            api_uri: "https://api.us.nylas.com".into(),
        },
        Crm::Zoho(ZohoConnection {
            region: Some("eu".into()),
            accounts_url: None,
            api_domain: None,
            client_id: "1000.CLIENTID".into(),
            client_secret: Secret::new("CLIENT_SECRET_VALUE_xyz"),
            refresh_token: Some(Secret::new("1000.REFRESH_TOKEN_VALUE_abc")),
        }),
    );
    t.daily_credits = daily_credits;
    t.budget_share = budget_share;
    t.requests_per_second = 100.0;
    t.concurrency = Some(25);
    t
}

/// The keys of a tenant's destination, from its stored settings.
pub async fn dest(redis: &RedisServer, id: &str) -> DestKeys {
    let view = TenantStore::new(conn(redis), NS, None).view(id).await.expect("tenant");
    TenantKeys::new(NS, id).dest(view["dest"].as_str().expect("dest"))
}

pub async fn add_tenants(redis: &RedisServer, tenants: &[(&str, u64, f64)]) {
    let key = SecretKey::from_base64(&SecretKey::generate()).expect("key");
    let store = TenantStore::new(conn(redis), NS, Some(key));
    for (id, daily, share) in tenants {
        store.add(tenant(id, *daily, *share)).await.expect("add tenant");
    }
}

pub fn settings(daily: u64, share: f64) -> LimitSettings {
    LimitSettings {
        daily_credits: daily,
        budget_share: share,
        requests_per_second: 1_000.0,
        concurrency: 25,
    }
}

/// An in-process worker of one queue, stopped on demand.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<Result<(), apalis_core::error::WorkerError>>,
}

impl TestWorker {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.join)
            .await
            .expect("worker stops within 30 s");
    }
}

fn start_worker<Args, F, Fut>(
    redis: &RedisServer,
    cfg: crmsync_queue::QueueConfig,
    role: &str,
    handler: F,
) -> TestWorker
where
    Args: serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(Args) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
{
    let backend = RedisStreamBackend::<Args>::new(redis.client(), cfg).expect("backend");
    let worker = WorkerBuilder::new(worker_identity(role))
        .backend(backend)
        .build(move |args: Args| handler(args));
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    TestWorker { stop: Some(tx), join }
}

/// What [`seed`] made.
pub struct Seeded {
    /// Holds `writes` jobs in flight until dropped or released.
    pub gate: Arc<Semaphore>,
    pub writes_worker: TestWorker,
    pub acme_run: String,
}

/// A fleet with something to show:
/// - `acme` (800 credits allowed): a backfill run at page 4 of 8 (50%), 30 credits used, a
///   rejected record;
/// - `globex`: paused by an operator ([`PAUSE_REASON`]), its last run failed;
/// - `hooli`: a 429 cooldown; a dead-lettered backfill page ([`DEAD_REASON`]);
/// - `initech` (100 credits allowed): budget spent (98 of 100 used), paused until credits
///   return;
/// - `backfill`: 3 pending, 1 dead, a stopped worker; `writes`: 2 in flight on a live worker
///   (concurrency 2), 1 pending, 1 delayed;
pub async fn seed(redis: &RedisServer) -> Seeded {
    add_tenants(
        redis,
        &[
            ("acme", 1_000, 0.8),
            ("globex", 50_000, 0.8),
            ("hooli", 20_000, 0.5),
            ("initech", 125, 0.8),
        ],
    )
    .await;
    let c = conn(redis);
    let limiter = Limiter::new(c.clone(), NS);
    let runs = RunStore::new(c.clone(), NS);

    // acme: a run half done, 30 credits used, a rejected record.
    let StartOutcome::Started(run) = runs.start("acme", false).await.expect("start") else {
        panic!("acme had a run already")
    };
    for (page, has_next) in [(0, true), (1, true), (2, true), (7, false)] {
        let counts = PageCounts {
            contacts_read: 100,
            mapped: 100,
            ..PageCounts::default()
        };
        let status = runs
            .record_page("acme", &run.id, page, has_next, &counts)
            .await
            .expect("page");
        assert_eq!(status, RunStatus::Running);
    }
    let acme = settings(1_000, 0.8);
    let acme_dest = dest(redis, "acme").await;
    for cost in [10, 10, 10] {
        let p = limiter
            .acquire(&acme_dest, &acme, cost, Some(10), Priority::Backfill)
            .await
            .expect("redis")
            .expect("permit");
        limiter
            .finish(p, &acme, CallOutcome::Answered { usage: None })
            .await
            .expect("finish");
    }
    // A record the CRM refused, as a flush records it.
    let _: String = redis::cmd("XADD")
        .arg(acme_dest.rejected())
        .arg("*")
        .arg("run")
        .arg(&run.id)
        .arg("contact")
        .arg("c-17")
        .arg("email")
        .arg("broken@example.com")
        .arg("code")
        .arg("INVALID_DATA")
        .arg("field")
        .arg("Phone")
        .arg("message")
        .arg("invalid data")
        .query(&mut redis.conn())
        .expect("rejection");

    // globex: paused by an operator; its last run failed.
    let StartOutcome::Started(failed) = runs.start("globex", false).await.expect("start") else {
        panic!("globex had a run already")
    };
    runs.end(
        "globex",
        &failed.id,
        RunStatus::Failed,
        "page 3 failed for good: Nylas 500",
    )
    .await
    .expect("end");
    limiter.pause("globex", PAUSE_REASON).await.expect("pause");

    // hooli: a 429 cooldown of a minute.
    let hooli = settings(20_000, 0.5);
    let p = limiter
        .acquire(&dest(redis, "hooli").await, &hooli, 1, None, Priority::Change)
        .await
        .expect("redis")
        .expect("permit");
    limiter
        .finish(
            p,
            &hooli,
            CallOutcome::Throttled {
                retry_after: Some(Duration::from_secs(60)),
                usage: None,
            },
        )
        .await
        .expect("finish");

    // initech: spend its 100 allowed credits 7 at a time until the budget pauses it.
    let initech = settings(125, 0.8);
    let initech_dest = dest(redis, "initech").await;
    loop {
        match limiter
            .acquire(&initech_dest, &initech, 7, None, Priority::Change)
            .await
            .expect("redis")
        {
            Ok(p) => limiter
                .finish(p, &initech, CallOutcome::Answered { usage: None })
                .await
                .map(|_| ())
                .expect("finish"),
            Err(Wait::Budget { .. }) => break,
            Err(other) => panic!("unexpected wait {other:?}"),
        }
    }

    // backfill: one page of hooli dies on a worker, which then stops; 3 more wait.
    let backfill_cfg = crmsync_producer::backfill_queue(NS);
    let backfill = JobQueue::<BackfillPage>::new(c.clone(), backfill_cfg.clone());
    let page = |tenant: &str, page: u32| BackfillPage {
        tenant: tenant.into(),
        run_id: format!("{tenant}-run"),
        page,
        cursor: None,
        force: false,
        mode: crmsync_producer::PageMode::Backfill,
    };
    backfill
        .enqueue_with(
            &page("hooli", 0),
            EnqueueOptions::default().policy(RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            }),
        )
        .await
        .expect("enqueue");
    let dying = start_worker(
        redis,
        backfill_cfg.concurrency(1),
        "backfill",
        |_: BackfillPage| async { Err(JobError::permanent("INVALID_DATA", DEAD_REASON)) },
    );
    eventually(Duration::from_secs(20), "hooli's page dead-lettered", || async {
        let s = backfill.stats().await.expect("stats");
        (s.dead == 1).then_some(())
    })
    .await;
    dying.stop().await;
    for p in 1..=3 {
        backfill.enqueue(&page("acme", p)).await.expect("enqueue");
    }

    // writes: a live worker holds 2 flushes; 1 more waits, 1 is delayed.
    let writes_cfg = crmsync_producer::writes_queue(NS).concurrency(2);
    let writes = JobQueue::<FlushWrites>::new(c.clone(), writes_cfg.clone());
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let writes_worker = start_worker(redis, writes_cfg, "writes", move |_: FlushWrites| {
        let g = g.clone();
        async move {
            let _held = g.acquire().await.map_err(|e| JobError::retry("SEMAPHORE", e))?;
            Ok(())
        }
    });
    let flush = FlushWrites {
        tenant: "acme".into(),
        full: false,
        slot: None,
    };
    for _ in 0..3 {
        writes.enqueue(&flush).await.expect("enqueue");
    }
    writes
        .enqueue_with(&flush, EnqueueOptions::default().delay(Duration::from_secs(600)))
        .await
        .expect("enqueue");
    eventually(Duration::from_secs(20), "two flushes in flight", || async {
        let s = writes.stats().await.expect("stats");
        (s.in_flight == 2 && s.pending == 1).then_some(())
    })
    .await;

    Seeded {
        gate,
        writes_worker,
        acme_run: run.id,
    }
}

/// Why a maintenance job was dead-lettered (see [`seed_maintenance_dead_letter`]).
pub const MAINTENANCE_REASON: &str =
    "redis: WRONGTYPE Operation against a key holding the wrong kind of value (the old destination's keys)";
/// Why `acme`'s flush was dead-lettered (see [`seed_writes_dead_letter`]).
pub const WRITES_REASON: &str = "Zoho answered 500 INTERNAL_ERROR to the upsert batch, 5 times";

/// `job` put in the queue of `cfg` with a single attempt, and dead-lettered by a worker that
/// fails it with `code` and `reason` (the worker stops then): its dead-letter id.
async fn dead_letter<J>(
    redis: &RedisServer,
    cfg: crmsync_queue::QueueConfig,
    job: &J,
    code: &'static str,
    reason: &'static str,
) -> String
where
    J: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let queue = JobQueue::<J>::new(conn(redis), cfg.clone());
    let before = queue.stats().await.expect("stats").dead;
    let once = EnqueueOptions::default().policy(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });
    queue.enqueue_with(job, once).await.expect("enqueue");
    let role = cfg.name.clone();
    let dying = start_worker(redis, cfg.concurrency(1), &role, move |_: J| async move {
        Err(JobError::permanent(code, reason))
    });
    let dead = eventually(Duration::from_secs(20), "the job dead-lettered", || async {
        if queue.stats().await.expect("stats").dead == before {
            return None;
        }
        queue.dead_letters(1).await.expect("dead letters").into_iter().next()
    })
    .await;
    dying.stop().await;
    dead.dead_id
}

/// A dead letter in the maintenance queue: `tenant`'s job purging the state of a destination
/// it left died on its only attempt. Its dead-letter id.
pub async fn seed_maintenance_dead_letter(redis: &RedisServer, tenant: &str) -> String {
    let job = crmsync_producer::Maintenance::PurgeDestination {
        tenant: tenant.into(),
        dest: "zoho-old".into(),
    };
    dead_letter(
        redis,
        crmsync_producer::maintenance_queue(NS),
        &job,
        "REDIS",
        MAINTENANCE_REASON,
    )
    .await
}

/// A dead letter that can be retried: a flush of `acme`'s writes that died on its only
/// attempt. Seed it before [`seed`] (whose live `writes` worker would take the job). Its
/// dead-letter id.
pub async fn seed_writes_dead_letter(redis: &RedisServer) -> String {
    let job = FlushWrites {
        tenant: "acme".into(),
        full: false,
        slot: None,
    };
    dead_letter(
        redis,
        crmsync_producer::writes_queue(NS),
        &job,
        "ZOHO_UNAVAILABLE",
        WRITES_REASON,
    )
    .await
}

/// Queue counters, credits and 429s over the last hour and day, as workers would have left
/// them (for the charts).
pub async fn seed_history(redis: &RedisServer) {
    let (acme, hooli) = (dest(redis, "acme").await, dest(redis, "hooli").await);
    let mut c = redis.conn();
    let now_s = crmsync_queue::now_ms() / 1000;
    let cur_min = now_s / 60;
    let mut pipe = redis::pipe();
    for m in 1..60u64 {
        let minute = cur_min - m;
        // A wave of throughput: both queues, some retries, a dead letter now and then.
        let done = 20 + (m * 7 % 23) + if m % 15 < 5 { 30 } else { 0 };
        let sec = minute * 60 + (m % 60);
        pipe.cmd("HINCRBY")
            .arg(format!("{{{NS}:backfill}}:stats:{sec}"))
            .arg("done")
            .arg(done)
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(format!("{{{NS}:writes}}:stats:{sec}"))
            .arg("done")
            .arg(done / 3 + m % 5)
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(format!("{{{NS}:writes}}:stats:{sec}"))
            .arg("retried")
            .arg(m % 3)
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(format!("{{{NS}:backfill}}:stats:{sec}"))
            .arg(3600)
            .ignore();
        pipe.cmd("EXPIRE")
            .arg(format!("{{{NS}:writes}}:stats:{sec}"))
            .arg(3600)
            .ignore();
        // Credits per minute for acme (the ledger's buckets are minutes with a 24 h window).
        let credits = 1 + m % 4;
        pipe.cmd("HINCRBY")
            .arg(acme.ledger())
            .arg(format!("b:{minute}"))
            .arg(credits)
            .ignore();
        pipe.cmd("HINCRBY").arg(acme.ledger()).arg("sum").arg(credits).ignore();
        pipe.cmd("ZADD")
            .arg(acme.ledger_index())
            .arg(minute)
            .arg(minute)
            .ignore();
        if m % 9 == 0 {
            pipe.cmd("INCRBY").arg(hooli.throttled(minute)).arg(m / 9).ignore();
        }
    }
    // And the rest of the day, hourly, for the 24-hour credit chart.
    for h in 1..24u64 {
        let minute = cur_min - h * 60;
        pipe.cmd("HINCRBY")
            .arg(acme.ledger())
            .arg(format!("b:{minute}"))
            .arg(8 + h % 5)
            .ignore();
        pipe.cmd("HINCRBY")
            .arg(acme.ledger())
            .arg("sum")
            .arg(8 + h % 5)
            .ignore();
        pipe.cmd("ZADD")
            .arg(acme.ledger_index())
            .arg(minute)
            .arg(minute)
            .ignore();
    }
    let _: () = pipe.query(&mut c).expect("seed history");
}
