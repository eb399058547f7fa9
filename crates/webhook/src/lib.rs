//! `crmsync webhook`: the Nylas webhook receiver.
//!
//! `GET /webhooks/nylas?challenge=X` answers `X` (Nylas's endpoint verification). `POST
//! /webhooks/nylas` takes a notification: bounded body (413 beyond the limit), optional gzip
//! (`compressed_delivery`), the grant's tenant (an unknown grant is acknowledged and counted, so
//! Nylas does not retry it for days), the signature (`x-nylas-signature`, HMAC-SHA256 of the
//! raw bytes under the tenant's secret or, during a rotation, the next one: 401 otherwise), the
//! event type (`contact.updated`, `contact.deleted`; 400 otherwise), then the change is pushed
//! into the write buffer of the tenant's destination, deduplicated on the notification id in
//! the same atomic step (ids are kept 96 hours, past Nylas's 72-hour retry horizon), and a
//! flush is scheduled. It never calls a CRM: it
//! answers in milliseconds. Nothing is recorded for a refused request, and no body is logged.
//!
//! `GET /healthz` (liveness) and `GET /readyz` (Redis reachable) serve orchestrators.
//! Counters per outcome are kept in Redis (`<namespace>:webhook:stats`) for `crmsync feed`.

pub mod signature;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use crmsync_domain::{MapOutcome, map_contact};
use crmsync_producer::{Change, FlushWrites, Pushing, Source, WriteBuffer};
use crmsync_queue::{JobQueue, RedisConn, now_ms};
use crmsync_tenants::TenantStore;
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

/// Settings of the receiver.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub namespace: String,
    /// Largest body accepted, bytes, compressed or not (a gzip body may inflate to no more).
    pub max_body_bytes: usize,
    /// How long change-feed records may wait for a fuller batch before a flush.
    pub flush_window: Duration,
    /// Time, connection and drain bounds of the server.
    pub limits: crmsync_http::Limits,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            namespace: "crmsync".into(),
            max_body_bytes: 1024 * 1024,
            flush_window: Duration::from_secs(2),
            limits: crmsync_http::Limits::default(),
        }
    }
}

/// Bodies read, inflated and parsed at once: a request holds at most `2 × max_body_bytes` and
/// its parse while it does, so memory stays bounded whatever arrives (200 unsigned gzip bombs
/// at once wait their turn instead of inflating together).
const BODIES_AT_ONCE: usize = 16;
/// How long a body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its turn before it is answered 503 (Nylas retries).
const BODY_TURN_WAIT: Duration = Duration::from_secs(10);

/// Shared by every request.
pub struct Receiver {
    opts: WebhookOptions,
    conn: RedisConn,
    tenants: TenantStore,
    writes: JobQueue<FlushWrites>,
    bodies: tokio::sync::Semaphore,
}

impl Receiver {
    pub fn new(opts: WebhookOptions, conn: RedisConn, tenants: TenantStore) -> Arc<Self> {
        let writes = JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&opts.namespace));
        Arc::new(Self {
            opts,
            conn,
            tenants,
            writes,
            bodies: tokio::sync::Semaphore::new(BODIES_AT_ONCE),
        })
    }

    async fn count(&self, what: &'static str) {
        if what != "received" {
            crmsync_metrics::webhook_request(what);
        }
        let mut conn = self.conn.clone();
        let res: redis::RedisResult<()> = redis::cmd("HINCRBY")
            .arg(format!("{}:webhook:stats", self.opts.namespace))
            .arg(what)
            .arg(1)
            .query_async(&mut conn)
            .await;
        if let Err(error) = res {
            warn!(%error, "Could not count a webhook outcome");
        }
    }
}

/// The receiver's routes.
pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/webhooks/nylas", get(challenge).post(notification))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(receiver)
}

/// Serves the receiver's routes, and `beside` (more routes on the same port, such as the
/// dashboard's), until `shutdown` resolves.
pub async fn serve(
    receiver: Arc<Receiver>,
    beside: Option<Router>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(addr = %listener.local_addr()?, "Webhook receiver listening");
    let limits = receiver.opts.limits;
    crmsync_http::serve(
        listener,
        router(receiver).merge(beside.unwrap_or_default()),
        limits,
        shutdown,
    )
    .await
}

#[derive(Deserialize)]
struct ChallengeQuery {
    challenge: Option<String>,
}

async fn challenge(Query(q): Query<ChallengeQuery>) -> Response {
    match q.challenge {
        // Echoed as plain text that no browser may sniff as HTML; Nylas's challenges are short.
        Some(c) if c.len() <= 512 => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            c,
        )
            .into_response(),
        Some(_) => reject(StatusCode::BAD_REQUEST, "`challenge` is longer than 512 bytes"),
        None => reject(StatusCode::BAD_REQUEST, "missing `challenge` query parameter"),
    }
}

async fn ready(State(r): State<Arc<Receiver>>) -> Response {
    let mut conn = r.conn.clone();
    if let Err(e) = redis::cmd("PING").query_async::<String>(&mut conn).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("redis unreachable: {e}")).into_response();
    }
    // Signatures are checked with the tenants' sealed webhook secrets: a key that cannot open
    // them would refuse every delivery.
    match r.tenants.check_key().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

/// Why a gzip body was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Inflate {
    TooLarge,
    NotGzip,
}

/// Inflates a gzip body to at most `limit` bytes: a notification is a few KB, and a bomb stops
/// at the limit, before anything is authenticated.
pub fn inflate(raw: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut out = Vec::new();
    match flate2::read::GzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
    {
        Ok(n) if n > limit => Err(Inflate::TooLarge),
        Ok(_) => Ok(out),
        Err(_) => Err(Inflate::NotGzip),
    }
}

/// What the receiver reads of a body before it looks anything up: inflated when gzipped, the
/// notification's envelope, and for a `contact.updated` the contact (as the handler does).
/// Never panics, whatever the bytes: the fuzz targets (`make fuzz`) hold it to that.
pub fn parse_body(raw: &[u8], gzipped: bool, limit: usize) -> Result<String, String> {
    let json = if gzipped {
        inflate(raw, limit).map_err(|e| format!("{e:?}"))?
    } else {
        raw.to_vec()
    };
    let note: Notification = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    if note.kind == "contact.updated" {
        crmsync_nylas::parse_contact(&note.data.object).map_err(|e| e.to_string())?;
    }
    Ok(note.id)
}

fn reject(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[derive(Deserialize)]
struct Notification {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    /// Unix seconds.
    time: Option<u64>,
    data: NotificationData,
}

#[derive(Deserialize)]
struct NotificationData {
    object: serde_json::Value,
}

/// Prometheus metrics of this process (see `crmsync-metrics`).
async fn metrics() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crmsync_metrics::CONTENT_TYPE)],
        crmsync_metrics::render(),
    )
        .into_response()
}

async fn notification(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    let started = std::time::Instant::now();
    let resp = match handle(&r, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            crmsync_metrics::webhook_request("error");
            warn!(error = %e, "Webhook could not be recorded; Nylas will retry");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unable to record the notification",
            )
        }
    };
    crmsync_metrics::webhook_answered(started.elapsed());
    resp
}

async fn handle(r: &Receiver, headers: &HeaderMap, body: Body) -> anyhow::Result<Response> {
    r.count("received").await;
    // Before a byte of the body is read: a turn among the few bodies held at once.
    let Ok(Ok(_turn)) = tokio::time::timeout(BODY_TURN_WAIT, r.bodies.acquire()).await else {
        r.count("busy").await;
        return Ok(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: too many requests at once",
        ));
    };
    let limit = r.opts.max_body_bytes;
    // The body within the limit and within a time: a client promising a megabyte and sending
    // a byte does not hold its turn.
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await else {
        r.count("slow_body").await;
        return Ok(reject(StatusCode::REQUEST_TIMEOUT, "body not received in time"));
    };
    let Ok(raw) = read else {
        r.count("oversize").await;
        return Ok(reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than the configured limit",
        ));
    };
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let json_bytes: Bytes = if gzipped {
        match inflate(&raw, limit) {
            Ok(out) => Bytes::from(out),
            Err(Inflate::TooLarge) => {
                r.count("oversize").await;
                return Ok(reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "decompressed body larger than the limit",
                ));
            }
            Err(Inflate::NotGzip) => {
                r.count("malformed").await;
                return Ok(reject(StatusCode::BAD_REQUEST, "body is not valid gzip"));
            }
        }
    } else {
        raw.clone()
    };
    let note: Notification = match serde_json::from_slice(&json_bytes) {
        Ok(n) => n,
        Err(e) => {
            r.count("malformed").await;
            return Ok(reject(StatusCode::BAD_REQUEST, &format!("malformed notification: {e}")));
        }
    };
    let Some(grant) = note.data.object.get("grant_id").and_then(|g| g.as_str()) else {
        r.count("malformed").await;
        return Ok(reject(
            StatusCode::BAD_REQUEST,
            "notification without data.object.grant_id",
        ));
    };
    let Some(tenant_id) = r.tenants.tenant_of_grant(grant).await? else {
        // Acknowledged: Nylas would otherwise retry it for days. Counted for operators.
        r.count("unknown_grant").await;
        // Both come from whoever sent the request: escaped and cut before they are logged.
        warn!(grant = %shown(grant), notification = %shown(&note.id), "Webhook for a grant no tenant has; acknowledged and dropped");
        return Ok((
            StatusCode::OK,
            axum::Json(json!({ "status": "ignored", "reason": "unknown grant" })),
        )
            .into_response());
    };
    let Some(signature) = headers.get("x-nylas-signature").and_then(|v| v.to_str().ok()) else {
        r.count("unsigned").await;
        return Ok(reject(StatusCode::UNAUTHORIZED, "missing x-nylas-signature"));
    };
    let tenant = match r.tenants.get(&tenant_id).await {
        Ok(t) => t,
        // Removed between the grant lookup and now: as an unknown grant.
        Err(crmsync_tenants::StoreError::NotFound(_)) => {
            r.count("unknown_grant").await;
            return Ok((
                StatusCode::OK,
                axum::Json(json!({ "status": "ignored", "reason": "unknown grant" })),
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let profile = crmsync_sink::profile(tenant.crm.kind());
    let secrets = [tenant.webhook_secret.as_ref(), tenant.webhook_secret_next.as_ref()];
    if !secrets
        .iter()
        .flatten()
        .any(|s| signature::verify(s.expose(), &raw, signature))
    {
        r.count("bad_signature").await;
        warn!(tenant = %tenant_id, notification = %shown(&note.id), "Webhook with a wrong signature refused");
        return Ok(reject(StatusCode::UNAUTHORIZED, "signature does not match"));
    }
    let contact_id = note
        .data
        .object
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    // A signed notification may still carry a time no event had (u64::MAX would wrap once
    // in milliseconds and freeze the contact behind it): only times from 2010 to a day ahead
    // are taken.
    let at_ms = match note.time {
        None => now_ms(),
        Some(t) if (EARLIEST_EVENT_S..=now_ms() / 1000 + 86_400).contains(&t) => t * 1000,
        Some(t) => {
            r.count("implausible_time").await;
            return Ok(reject(
                StatusCode::BAD_REQUEST,
                &format!("implausible notification time {t} (seconds since 1970)"),
            ));
        }
    };
    let change = match note.kind.as_str() {
        "contact.updated" => match crmsync_nylas::parse_contact(&note.data.object) {
            Ok(c) => match map_contact(&c, &profile.field_limits) {
                MapOutcome::Mapped { record, .. } => Change::Upsert {
                    contact_id: c.id,
                    at_ms,
                    record,
                },
                MapOutcome::Skipped(_) => Change::Unmap {
                    contact_id: c.id,
                    at_ms,
                },
            },
            Err(e) => {
                r.count("malformed").await;
                return Ok(reject(StatusCode::BAD_REQUEST, &format!("malformed contact: {e}")));
            }
        },
        "contact.deleted" if !contact_id.is_empty() => Change::Delete { contact_id, at_ms },
        "contact.deleted" => {
            r.count("malformed").await;
            return Ok(reject(
                StatusCode::BAD_REQUEST,
                "contact.deleted without data.object.id",
            ));
        }
        other => {
            r.count("unknown_type").await;
            return Ok(reject(
                StatusCode::BAD_REQUEST,
                &format!("unknown event type `{other}`"),
            ));
        }
    };

    let buffer = WriteBuffer::new(
        r.conn.clone(),
        &r.opts.namespace,
        &tenant_id,
        &tenant.dest,
        profile.match_key,
        profile.max_take,
    );
    // The notification id is checked and remembered in the same atomic step as the push: a
    // delivery is accepted once, however many copies arrive at once, and one that failed
    // half-way is retried by Nylas.
    let pushed = match buffer
        .push_notification(&Source::Feed, false, std::slice::from_ref(&change), Some(&note.id))
        .await?
    {
        Pushing::Duplicate => {
            r.count("duplicate").await;
            return Ok((StatusCode::OK, axum::Json(json!({ "status": "duplicate" }))).into_response());
        }
        Pushing::Pushed(p) => p,
    };
    tracing::debug!(tenant = %tenant_id, kind = %shown(&note.kind), at = %crmsync_redis::when::stamp(at_ms), ?pushed, "Recorded a change");
    // A flush after the window, and one at once for every full batch.
    crmsync_producer::schedule_feed_flush(&r.writes, &tenant_id, r.opts.flush_window).await?;
    crmsync_producer::schedule_full_flushes(&r.writes, &buffer, &tenant_id, pushed.schedule).await?;
    r.count("accepted").await;
    Ok((StatusCode::OK, axum::Json(json!({ "status": "accepted" }))).into_response())
}

/// The earliest event time taken from a notification: 2010-01-01 (Nylas v3 is far younger).
const EARLIEST_EVENT_S: u64 = 1_262_304_000;

/// A value from the request, safe to log: control characters escaped, at most 80 characters.
fn shown(s: &str) -> String {
    crmsync_sink::clean(s, 80)
}
