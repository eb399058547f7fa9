//! What every handler needs: Redis, the tenant store, the API clients, the run store.

use std::sync::Arc;
use std::time::Duration;

use crmsync_limits::Limiter;
use crmsync_nylas::NylasClient;
use crmsync_producer::{BackfillPage, FlushWrites, RunStore, TenantState, WriteBuffer};
use crmsync_queue::{JobQueue, RedisConn};
use crmsync_tenants::{SecretKey, TenantStore};
use crmsync_zoho::{TokenBroker, ZohoClient};

/// Settings shared by the handlers.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    pub redis_url: String,
    pub namespace: String,
    /// Contacts per Nylas page (at most 200).
    pub page_size: u32,
    /// Timeout of each Nylas or Zoho request.
    pub http_timeout: Duration,
    /// Zoho seconds per real second: 1 against Zoho. A simulator compressing its day sets
    /// more; the credit window, token lifetimes and the token-request window shrink alike.
    pub time_scale: f64,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379/".into(),
            namespace: "crmsync".into(),
            page_size: crmsync_nylas::MAX_PAGE_SIZE,
            http_timeout: Duration::from_secs(30),
            time_scale: 1.0,
        }
    }
}

/// Shared by every job of a process.
pub struct Context {
    pub opts: ContextOptions,
    pub target: crmsync_queue::RedisTarget,
    pub conn: RedisConn,
    pub tenants: TenantStore,
    pub runs: RunStore,
    pub nylas: NylasClient,
    pub zoho: ZohoClient,
    pub limiter: Limiter,
    pub backfill: JobQueue<BackfillPage>,
    pub writes: JobQueue<FlushWrites>,
}

impl Context {
    /// Builds the context; the secret key must be set (the worker reads tenants' secrets).
    pub fn connect(opts: ContextOptions) -> anyhow::Result<Self> {
        let key = SecretKey::from_env()?;
        // The error names the problem, never the URL (it may hold a password).
        let target = crmsync_queue::RedisTarget::parse(&opts.redis_url)
            .map_err(|e| anyhow::anyhow!("invalid Redis URL (CRMSYNC_REDIS_URL): {e}"))?;
        let conn = crmsync_queue::connect(&target, Duration::from_secs(5))?;
        let http = ZohoClient::http_client(opts.http_timeout)?;
        let broker =
            TokenBroker::new(conn.clone(), http.clone(), Arc::new(key.clone())).with_time_scale(opts.time_scale);
        Ok(Self {
            tenants: TenantStore::new(conn.clone(), &opts.namespace, Some(key)),
            runs: RunStore::new(conn.clone(), &opts.namespace),
            nylas: NylasClient::new(opts.http_timeout)?,
            zoho: ZohoClient::new(http, broker),
            limiter: Limiter::new(conn.clone(), &opts.namespace)
                .with_window(crmsync_limits::DAY.div_f64(opts.time_scale.max(1e-6)))
                .with_lease_ttl(opts.http_timeout * 2),
            backfill: JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(&opts.namespace)),
            writes: JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&opts.namespace)),
            target,
            conn,
            opts,
        })
    }

    pub fn buffer(&self, tenant: &str) -> WriteBuffer {
        WriteBuffer::new(self.conn.clone(), &self.opts.namespace, tenant)
    }

    pub fn tenant_state(&self, tenant: &str) -> TenantState {
        TenantState::new(self.conn.clone(), &self.opts.namespace, tenant)
    }
}
