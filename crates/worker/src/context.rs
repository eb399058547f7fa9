//! What every handler needs: Redis, the tenant store, the API clients, the run store, and the
//! sink of a tenant (its CRM's client under the fleet's limits).

use std::sync::Arc;
use std::time::Duration;

use crmsync_limits::{LimitLayer, LimitSettings, Limiter};
use crmsync_nylas::NylasClient;
use crmsync_producer::{BackfillPage, FlushWrites, Maintenance, RunStore, WriteBuffer};
use crmsync_queue::{JobQueue, RedisConn};
use crmsync_sink::salesforce::{SalesforceHttp, SalesforceSink, SfAccounts, SfOrg, SfTokens};
use crmsync_sink::zoho::{TokenBroker, ZohoHttp, ZohoOrg, ZohoSink};
use crmsync_sink::{CrmSink, SinkProfile};
use crmsync_tenants::{Crm, DestKeys, SecretKey, Tenant, TenantKeys, TenantStore};
use tower_layer::Layer;

/// Settings shared by the handlers.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    pub redis_url: String,
    pub namespace: String,
    /// Contacts per Nylas page (at most 200).
    pub page_size: u32,
    /// Timeout of each Nylas or CRM request.
    pub http_timeout: Duration,
    /// CRM seconds per real second: 1 against a CRM. A simulator compressing its day sets
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
    pub http: reqwest::Client,
    pub zoho_tokens: TokenBroker,
    pub sf_tokens: SfTokens,
    pub sf_accounts: SfAccounts,
    pub limiter: Limiter,
    pub backfill: JobQueue<BackfillPage>,
    pub writes: JobQueue<FlushWrites>,
    pub maintenance: JobQueue<Maintenance>,
}

impl Context {
    /// Builds the context; the secret key must be set (the worker reads tenants' secrets).
    pub fn connect(opts: ContextOptions) -> anyhow::Result<Self> {
        let key = SecretKey::from_env()?;
        // The error names the problem, never the URL (it may hold a password).
        let target = crmsync_queue::RedisTarget::parse(&opts.redis_url)
            .map_err(|e| anyhow::anyhow!("invalid Redis URL (CRMSYNC_REDIS_URL): {e}"))?;
        let conn = crmsync_queue::connect(&target, Duration::from_secs(5))?;
        let http = crmsync_sink::zoho::http_client(opts.http_timeout)?;
        let zoho_tokens =
            TokenBroker::new(conn.clone(), http.clone(), Arc::new(key.clone())).with_time_scale(opts.time_scale);
        let sf_tokens =
            SfTokens::new(conn.clone(), http.clone(), Arc::new(key.clone())).with_time_scale(opts.time_scale);
        let sf_accounts = SfAccounts::new(conn.clone()).with_time_scale(opts.time_scale);
        Ok(Self {
            tenants: TenantStore::new(conn.clone(), &opts.namespace, Some(key)),
            runs: RunStore::new(conn.clone(), &opts.namespace),
            nylas: NylasClient::new(opts.http_timeout)?,
            http,
            zoho_tokens,
            sf_tokens,
            sf_accounts,
            limiter: Limiter::new(conn.clone(), &opts.namespace)
                .with_window(crmsync_limits::DAY.div_f64(opts.time_scale.max(1e-6)))
                .with_lease_ttl(opts.http_timeout * 2),
            backfill: JobQueue::new(conn.clone(), crmsync_producer::backfill_queue(&opts.namespace)),
            writes: JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&opts.namespace)),
            maintenance: JobQueue::new(conn.clone(), crmsync_producer::maintenance_queue(&opts.namespace)),
            target,
            conn,
            opts,
        })
    }

    /// The keys of the tenant's current destination.
    pub fn dest_keys(&self, tenant: &Tenant) -> DestKeys {
        TenantKeys::new(&self.opts.namespace, &tenant.id).dest(&tenant.dest)
    }

    /// The write buffer of the tenant's current destination.
    pub fn buffer(&self, tenant: &Tenant) -> WriteBuffer {
        let p = profile(tenant);
        WriteBuffer::new(
            self.conn.clone(),
            &self.opts.namespace,
            &tenant.id,
            &tenant.dest,
            p.match_key,
            p.max_take,
        )
    }

    /// The tenant's CRM, its calls under the destination's limits.
    pub fn sink(&self, tenant: &Tenant) -> Result<Box<dyn CrmSink>, crmsync_tenants::TenantError> {
        let limits = LimitLayer::new(self.limiter.clone(), self.dest_keys(tenant), LimitSettings::of(tenant));
        Ok(match &tenant.crm {
            Crm::Zoho(_) => {
                let org = ZohoOrg::of(&self.opts.namespace, tenant)?;
                let http = ZohoHttp::new(self.http.clone(), self.zoho_tokens.clone(), org);
                Box::new(ZohoSink::new(limits.layer(http)))
            }
            Crm::Salesforce(_) => {
                let org = SfOrg::of(&self.opts.namespace, tenant)?;
                let http = SalesforceHttp::new(self.http.clone(), self.sf_tokens.clone(), org.clone());
                Box::new(SalesforceSink::new(limits.layer(http), &org, self.sf_accounts.clone()))
            }
        })
    }
}

/// What the tenant's CRM needs known before any call (field limits, match key, batch size).
pub fn profile(tenant: &Tenant) -> &'static SinkProfile {
    crmsync_sink::profile(tenant.crm.kind())
}
