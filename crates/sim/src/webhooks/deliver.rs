//! Sending a batch's notifications: at most `concurrency` POSTs in flight, started in the
//! schedule's order, optionally paced to `rate_per_sec`; each attempt has `timeout_ms`; a
//! genuine delivery answered with anything but 200 (or not at all) is retried up to
//! `retries` times after `retry_backoff_ms`, doubled each time, with the attempt number
//! raised and the body re-signed. A retry waiting for its backoff holds no concurrency slot.
//! Duplicates and forgeries are single POSTs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::schedule::{Forgery, Schedule, SendKind};
use super::{Notification, SIGNATURE_HEADER, gzip, sign};
use crate::config::WebhookConfig;
use crate::lock;

/// One POST and what came of it. Times are milliseconds since the batch's sends began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub notification_id: String,
    /// `contact.updated` or `contact.deleted` (of the genuine notification).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The notification's `time`.
    pub time: i64,
    pub contact_id: String,
    /// `genuine`, `duplicate` or `forged`.
    pub kind: String,
    /// `webhook_delivery_attempt` of the body.
    pub attempt: u32,
    pub sent_ms: f64,
    /// When the answer came back; `None` for a timeout or a connection error.
    pub answered_ms: Option<f64>,
    pub status: Option<u16>,
    /// The status code as text, `timeout`, or `error`.
    pub outcome: String,
}

impl DeliveryRecord {
    /// Answered with 200.
    pub fn acknowledged(&self) -> bool {
        self.status == Some(200)
    }
}

/// Spaces send starts `1 / rate` apart, across all tasks of a batch.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rate_per_sec: f64) -> Pacer {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate_per_sec),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = lock(&self.next);
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[derive(Debug)]
struct Ctx {
    client: reqwest::Client,
    cfg: WebhookConfig,
    slots: Arc<Semaphore>,
    pacer: Option<Pacer>,
    start: Instant,
}

impl Ctx {
    async fn slot(&self) -> anyhow::Result<OwnedSemaphorePermit> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .context("the delivery semaphore closed")?;
        if let Some(p) = &self.pacer {
            p.wait().await;
        }
        Ok(permit)
    }

    fn ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// The bytes on the wire for a JSON body (gzip when `compressed`).
    fn wire(&self, json: Vec<u8>) -> Vec<u8> {
        if self.cfg.compressed {
            // gzip into memory cannot fail short of running out of memory; sending the plain
            // JSON then makes the failure visible to the receiver instead of crashing.
            gzip(&json).unwrap_or(json)
        } else {
            json
        }
    }

    async fn post(
        &self,
        n: &Notification,
        kind: SendKind,
        attempt: u32,
        body: Vec<u8>,
        sig: Option<String>,
    ) -> DeliveryRecord {
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header(CONTENT_TYPE, "application/json")
            .timeout(Duration::from_millis(self.cfg.timeout_ms));
        if self.cfg.compressed {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(sig) = sig {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        let sent_ms = self.ms();
        let (status, outcome) = match req.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the answer to the end (under the same timeout) so the connection is
                // reusable and the answer time is when the receiver finished.
                match resp.bytes().await {
                    Ok(_) => (Some(status), status.to_string()),
                    Err(e) if e.is_timeout() => (None, "timeout".to_string()),
                    Err(_) => (Some(status), status.to_string()),
                }
            }
            Err(e) if e.is_timeout() => (None, "timeout".to_string()),
            Err(e) => {
                tracing::debug!(url = %self.cfg.url, error = %e, "webhook delivery failed");
                (None, "error".to_string())
            }
        };
        let answered_ms = status.map(|_| self.ms());
        DeliveryRecord {
            notification_id: n.id.clone(),
            event_type: n.kind.to_string(),
            time: n.time,
            contact_id: n.contact_id.clone(),
            kind: kind.label().to_string(),
            attempt,
            sent_ms,
            answered_ms,
            status,
            outcome,
        }
    }
}

/// One send of the schedule, with its retries; starts holding `permit`.
async fn send(
    ctx: Arc<Ctx>,
    n: Arc<Notification>,
    kind: SendKind,
    permit: OwnedSemaphorePermit,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let secret = ctx.cfg.secret.as_bytes();
    let app = ctx.cfg.application_id.as_str();
    match kind {
        SendKind::Duplicate => {
            let body = ctx.wire(n.json_body(app, 1));
            let sig = sign(secret, &body);
            let rec = ctx.post(&n, kind, 1, body, Some(sig)).await;
            drop(permit);
            Ok(vec![rec])
        }
        SendKind::Forged(forgery) => {
            let genuine = ctx.wire(n.json_body(app, 1));
            let (body, sig) = match forgery {
                Forgery::WrongSecret => {
                    let wrong = [secret, b"-forged"].concat();
                    let sig = sign(&wrong, &genuine);
                    (genuine, Some(sig))
                }
                Forgery::Unsigned => (genuine, None),
                Forgery::Tampered => {
                    let sig = sign(secret, &genuine);
                    (ctx.wire(n.tampered_json_body(app)), Some(sig))
                }
                Forgery::TamperedUnsigned => (ctx.wire(n.tampered_json_body(app)), None),
            };
            let rec = ctx.post(&n, kind, 1, body, sig).await;
            drop(permit);
            Ok(vec![rec])
        }
        SendKind::Genuine => {
            let mut records = Vec::new();
            let mut permit = Some(permit);
            let mut backoff = Duration::from_millis(ctx.cfg.retry_backoff_ms);
            for attempt in 1..=ctx.cfg.retries.saturating_add(1) {
                let held = match permit.take() {
                    Some(p) => p,
                    None => ctx.slot().await?,
                };
                let body = ctx.wire(n.json_body(app, attempt));
                let sig = sign(secret, &body);
                let rec = ctx.post(&n, kind, attempt, body, Some(sig)).await;
                drop(held);
                let done = rec.acknowledged();
                records.push(rec);
                if done || attempt > ctx.cfg.retries {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Ok(records)
        }
    }
}

/// Sends `schedule` (over `notifications`) to the destination; returns every POST's record,
/// in the order they were sent.
pub async fn deliver_all(
    client: reqwest::Client,
    cfg: &WebhookConfig,
    notifications: &[Notification],
    schedule: &Schedule,
    concurrency: usize,
    rate_per_sec: Option<f64>,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let ctx = Arc::new(Ctx {
        client,
        cfg: cfg.clone(),
        slots: Arc::new(Semaphore::new(concurrency.max(1))),
        pacer: rate_per_sec.map(Pacer::new),
        start: Instant::now(),
    });
    let shared: Vec<Arc<Notification>> = notifications.iter().cloned().map(Arc::new).collect();
    let mut tasks = JoinSet::new();
    for s in &schedule.sends {
        let Some(n) = shared.get(s.notification) else {
            continue;
        };
        let permit = ctx.slot().await?;
        tasks.spawn(send(ctx.clone(), n.clone(), s.kind, permit));
    }
    let mut records = Vec::new();
    while let Some(done) = tasks.join_next().await {
        records.extend(done.context("a webhook delivery task failed")??);
    }
    records.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(records)
}
