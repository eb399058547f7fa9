//! Time series for the dashboard's charts, each read with one pipelined round trip:
//!
//! - **throughput per queue**, per minute over the last hour: the queue's per-second counter
//!   hashes (`{ns:<queue>}:stats:<epoch sec>`, fields `done retried deferred released
//!   reclaimed dead`, kept `stats_ttl`, an hour by default) summed per minute;
//! - **credits used** per minute over the last hour, and per ledger bucket over the whole
//!   rolling window (the last 24 h at one minute: a bucket is window / 1440 wide), from the
//!   tenant's credit ledger (`T:credits`, `b:<bucket>` → credits, buckets numbered
//!   ms / bucket width; a bucket counts while it is no older than the window, as in
//!   `reserve.lua`), with the running total across the window against the budget line,
//!   share × daily credits;
//! - **429s** per minute over the last hour (`T:429s:<epoch minute>`, counted by the limiter).
//!
//! Without a tenant, credits and 429s are summed over every tenant (and so are the budgets).

use serde::Serialize;

use crate::fleet::{Fleet, FleetError};

/// One minute, the resolution of the hour series.
pub const MINUTE_MS: u64 = 60_000;
/// Points of the hour series: the current (partial) minute and the 59 before it.
pub const HOUR_POINTS: usize = 60;

/// One queue's counters per minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueSeries {
    pub queue: String,
    /// Jobs that succeeded, per minute: the throughput.
    pub done: Vec<u64>,
    pub retried: Vec<u64>,
    pub deferred: Vec<u64>,
    pub released: Vec<u64>,
    pub reclaimed: Vec<u64>,
    pub dead: Vec<u64>,
}

/// Credits used over time, against the budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditSeries {
    /// share × daily credits (summed over the tenants shown): the budget line of `cumulative`.
    pub allowed: u64,
    /// Credits used in the window now (the last point of `cumulative`).
    pub used: u64,
    /// Credits per minute over the last hour (aligned with [`Series::hour_start_ms`]).
    pub per_minute: Vec<u64>,
    /// Width of a ledger bucket: the window / 1440 (a minute for a 24-hour window).
    pub bucket_ms: u64,
    pub window_ms: u64,
    /// Start of the first bucket still in the window; `per_bucket` and `cumulative` go from
    /// there to the current bucket, `bucket_ms` apart.
    pub window_start_ms: u64,
    /// Credits per bucket across the window.
    pub per_bucket: Vec<u64>,
    /// Credits used in the window up to each bucket: what the budget is checked against.
    pub cumulative: Vec<u64>,
    /// The budget spread evenly over the window, per bucket: spending faster than this line
    /// pauses the tenant before the window ends.
    pub even_pace_per_bucket: f64,
}

/// Everything the charts draw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub at_ms: u64,
    /// Start of the first minute of the hour series; points are a minute apart and the last
    /// one is the current, partial, minute.
    pub hour_start_ms: u64,
    pub queues: Vec<QueueSeries>,
    /// The tenant of the credit and 429 series; none: every tenant summed.
    pub tenant: Option<String>,
    /// Tenants summed in the credit and 429 series.
    pub tenants: usize,
    pub credits: CreditSeries,
    /// 429s Zoho answered per minute over the last hour.
    pub throttled: Vec<u64>,
}

/// Sums `(time ms, value)` points into `n` bins of `step_ms` from `start_ms`; points outside
/// are dropped.
pub fn bin(points: impl IntoIterator<Item = (u64, u64)>, start_ms: u64, step_ms: u64, n: usize) -> Vec<u64> {
    let mut out = vec![0; n];
    let step = step_ms.max(1);
    for (t, v) in points {
        if t < start_ms {
            continue;
        }
        if let Some(slot) = out.get_mut(((t - start_ms) / step) as usize) {
            *slot += v;
        }
    }
    out
}

/// Running totals.
pub fn cumulative(v: &[u64]) -> Vec<u64> {
    v.iter()
        .scan(0u64, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect()
}

/// Adds `b` into `a` element-wise (`a` grows to fit).
fn add_into(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

impl Fleet {
    /// The chart series at this moment: queues always; credits and 429s of `tenant`, or of
    /// every tenant summed. A tenant that does not exist is an empty series.
    pub async fn series(&self, tenant: Option<&str>) -> Result<Series, FleetError> {
        let now = crmsync_queue::now_ms();
        let cur_minute = now / MINUTE_MS;
        let first_minute = cur_minute + 1 - HOUR_POINTS as u64;
        let hour_start_ms = first_minute * MINUTE_MS;

        let tenants = match tenant {
            Some(t) => vec![t.to_owned()],
            None => self.tenant_ids().await?,
        };
        let (queues, per_tenant) = tokio::join!(
            self.queue_series(first_minute, now),
            futures_util::future::join_all(tenants.iter().map(|t| self.tenant_series(t, first_minute, cur_minute))),
        );

        let bms = self.limiter.bucket_ms();
        let window_ms = self.limiter.window().as_millis() as u64;
        let cur_bucket = now / bms;
        // The live buckets, as `reserve.lua` keeps them: no older than the window.
        let first_bucket = cur_bucket.saturating_sub(window_ms / bms);
        let window_start_ms = first_bucket * bms;
        let n_buckets = (cur_bucket - first_bucket + 1) as usize;

        let mut credits = CreditSeries {
            allowed: 0,
            used: 0,
            per_minute: vec![0; HOUR_POINTS],
            bucket_ms: bms,
            window_ms,
            window_start_ms,
            per_bucket: vec![0; n_buckets],
            cumulative: Vec::new(),
            even_pace_per_bucket: 0.0,
        };
        let mut throttled = vec![0; HOUR_POINTS];
        let mut counted = 0;
        for t in per_tenant {
            let Some(t) = t? else { continue };
            counted += 1;
            credits.allowed += t.allowed;
            add_into(
                &mut credits.per_minute,
                &bin(t.ledger.iter().copied(), hour_start_ms, MINUTE_MS, HOUR_POINTS),
            );
            add_into(
                &mut credits.per_bucket,
                &bin(t.ledger.iter().copied(), window_start_ms, bms, n_buckets),
            );
            add_into(&mut throttled, &t.throttled);
        }
        credits.cumulative = cumulative(&credits.per_bucket);
        credits.used = credits.cumulative.last().copied().unwrap_or(0);
        credits.even_pace_per_bucket = credits.allowed as f64 * bms as f64 / window_ms.max(1) as f64;
        Ok(Series {
            at_ms: now,
            hour_start_ms,
            queues: queues?,
            tenant: tenant.map(str::to_owned),
            tenants: counted,
            credits,
            throttled,
        })
    }

    /// Every queue's per-second counters since `first_minute`, summed per minute: one
    /// pipeline per queue (3,600 `HGETALL`s in one slot; absent keys cost next to nothing),
    /// the queues read concurrently.
    async fn queue_series(&self, first_minute: u64, now_ms: u64) -> Result<Vec<QueueSeries>, FleetError> {
        let (first_sec, now_sec) = (first_minute * 60, now_ms / 1000);
        let reads = self.queues.iter().map(|q| async move {
            let mut pipe = redis::pipe();
            for s in first_sec..=now_sec {
                pipe.cmd("HGETALL").arg(q.keys().stats(s));
            }
            let mut conn = self.conn.clone();
            let secs: Vec<Vec<(String, u64)>> = pipe.query_async(&mut conn).await?;
            let mut s = QueueSeries {
                queue: q.config().name.clone(),
                done: vec![0; HOUR_POINTS],
                retried: vec![0; HOUR_POINTS],
                deferred: vec![0; HOUR_POINTS],
                released: vec![0; HOUR_POINTS],
                reclaimed: vec![0; HOUR_POINTS],
                dead: vec![0; HOUR_POINTS],
            };
            for (i, fields) in secs.iter().enumerate() {
                let m = i / 60;
                for (k, v) in fields {
                    let series = match k.as_str() {
                        "done" => &mut s.done,
                        "retried" => &mut s.retried,
                        "deferred" => &mut s.deferred,
                        "released" => &mut s.released,
                        "reclaimed" => &mut s.reclaimed,
                        "dead" => &mut s.dead,
                        _ => continue,
                    };
                    if let Some(slot) = series.get_mut(m) {
                        *slot += v;
                    }
                }
            }
            Ok::<_, FleetError>(s)
        });
        futures_util::future::join_all(reads).await.into_iter().collect()
    }

    /// One tenant's ledger and 429s (None when the tenant does not exist).
    async fn tenant_series(
        &self,
        tenant: &str,
        first_minute: u64,
        cur_minute: u64,
    ) -> Result<Option<TenantSeries>, FleetError> {
        let Some((s, dest)) = self.limit_settings(tenant).await? else {
            return Ok(None);
        };
        let (ledger, throttled) = tokio::join!(
            self.limiter.ledger(&dest),
            self.limiter.throttled_per_minute(&dest, first_minute, cur_minute),
        );
        Ok(Some(TenantSeries {
            allowed: s.allowed(),
            ledger: ledger?.buckets,
            throttled: throttled?,
        }))
    }
}

struct TenantSeries {
    allowed: u64,
    /// (bucket start ms, credits).
    ledger: Vec<(u64, u64)>,
    throttled: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_summed_into_their_bins_and_the_rest_dropped() {
        let pts = [(999, 7), (1_000, 1), (1_059, 2), (1_060, 3), (1_179, 4), (1_180, 100)];
        assert_eq!(bin(pts, 1_000, 60, 3), vec![3, 3, 4]);
        assert_eq!(cumulative(&[3, 3, 4]), vec![3, 6, 10]);
        let mut a = vec![1, 1];
        add_into(&mut a, &[1, 2, 3]);
        assert_eq!(a, vec![2, 3, 3]);
    }
}
