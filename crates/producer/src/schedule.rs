//! The fleet's reconcile scheduler: tenants with `--reconcile-every` wait in one sorted set by
//! their next run's time (`<ns>:reconcile:due`). Every worker process looks for due tenants
//! (a few at a time, every half minute); a tenant is taken by one process at a time (a lease of
//! a minute in Redis, `T:reconcile:lease`), and a run starts only if none of the tenant's runs
//! is active (the runs' own lock) — so two schedulers racing start one run. A tenant's first
//! time in the period is spread by a hash of its id, so 10,000 tenants set to 24 h do not all
//! start in the same minute; later ones follow a period apart. A tenant busy with a backfill
//! (or paused for its budget: the reconcile's own reads then wait) is tried again in 10
//! minutes.

use std::time::Duration;

use crmsync_redis::{RedisConn, now_ms};
use crmsync_tenants::{TenantKeys, TenantStore};
use sha2::{Digest, Sha256};

use crate::{BackfillPage, PageMode, RunStore, StartOutcome};

/// How long one scheduler holds a tenant.
const LEASE: Duration = Duration::from_secs(60);
/// When a due tenant could not start (a run is active), it is tried again after this.
const BUSY_RETRY: Duration = Duration::from_secs(600);

/// The sorted set of tenants with a reconcile period, by next due time (ms).
pub fn due_key(namespace: &str) -> String {
    format!("{namespace}:reconcile:due")
}

/// Where in its period a tenant's reconciles fall: a stable share of the period.
fn offset(tenant: &str, period: Duration) -> u64 {
    let d = Sha256::digest(tenant.as_bytes());
    let h = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    h % (period.as_millis() as u64).max(1)
}

/// Puts the tenant on the schedule (its first reconcile within one period, spread by its id),
/// or takes it off (`None`).
pub async fn set(conn: &RedisConn, namespace: &str, tenant: &str, period: Option<Duration>) -> redis::RedisResult<()> {
    let mut conn = conn.clone();
    match period {
        Some(p) => {
            let at = now_ms() + offset(tenant, p);
            redis::cmd("ZADD")
                .arg(due_key(namespace))
                .arg(at)
                .arg(tenant)
                .query_async(&mut conn)
                .await
        }
        None => {
            redis::cmd("ZREM")
                .arg(due_key(namespace))
                .arg(tenant)
                .query_async(&mut conn)
                .await
        }
    }
}

/// When the tenant's next scheduled reconcile is due, if it has a period.
pub async fn next_due(conn: &RedisConn, namespace: &str, tenant: &str) -> redis::RedisResult<Option<u64>> {
    let at: Option<f64> = redis::cmd("ZSCORE")
        .arg(due_key(namespace))
        .arg(tenant)
        .query_async(&mut conn.clone())
        .await?;
    Ok(at.map(|a| a as u64))
}

/// The first job of a reconcile run: its first CRM page.
pub fn first_job(tenant: &str, run_id: &str) -> BackfillPage {
    BackfillPage {
        tenant: tenant.to_owned(),
        run_id: run_id.to_owned(),
        page: 0,
        cursor: None,
        force: false,
        mode: PageMode::Crm,
    }
}

/// Starts the reconciles that are due (at most `limit`); returns the runs started.
pub async fn start_due(
    conn: &RedisConn,
    namespace: &str,
    queue: &crmsync_queue::JobQueue<BackfillPage>,
    limit: usize,
) -> Result<Vec<String>, crate::RunError> {
    let mut c = conn.clone();
    let now = now_ms();
    let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(due_key(namespace))
        .arg("-inf")
        .arg(now)
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut c)
        .await?;
    let store = TenantStore::new(conn.clone(), namespace, None);
    let runs = RunStore::new(conn.clone(), namespace);
    let mut started = Vec::new();
    for tenant in due {
        let lease: Option<String> = redis::cmd("SET")
            .arg(TenantKeys::new(namespace, &tenant).reconcile_lease())
            .arg(now)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if lease.is_none() {
            continue; // another scheduler has it
        }
        let period = match store.view(&tenant).await {
            Ok(v) => v["reconcile_every_secs"].as_u64().map(Duration::from_secs),
            Err(crmsync_tenants::StoreError::NotFound(_)) => None,
            Err(crmsync_tenants::StoreError::Redis(e)) => return Err(e.into()),
            Err(_) => None,
        };
        let Some(period) = period else {
            set(conn, namespace, &tenant, None).await?;
            continue;
        };
        // Checked again under the lease: another scheduler may have run it just now.
        if next_due(conn, namespace, &tenant).await?.is_none_or(|at| at > now) {
            continue;
        }
        let next = match runs.start_reconcile(&tenant, false).await? {
            StartOutcome::Started(run) => {
                let first = first_job(&tenant, &run.id);
                queue
                    .enqueue_with(
                        &first,
                        crmsync_queue::EnqueueOptions::default().idempotency_key(first.idempotency_key()),
                    )
                    .await?;
                started.push(run.id);
                now + period.as_millis() as u64
            }
            StartOutcome::AlreadyRunning(_) => now + BUSY_RETRY.as_millis() as u64,
        };
        let _: () = redis::cmd("ZADD")
            .arg(due_key(namespace))
            .arg(next)
            .arg(&tenant)
            .query_async(&mut c)
            .await?;
    }
    Ok(started)
}
