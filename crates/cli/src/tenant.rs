//! `crmsync tenant add|set|list|show|remove`. Secrets can come from the environment instead
//! of flags (flags are visible in process lists and shell history); they are never printed.

use anyhow::Context as _;
use clap::Subcommand;
use crmsync_producer::{FlushWrites, Maintenance, RunStatus, RunStore};
use crmsync_queue::JobQueue;
use crmsync_redis::num::thousands;
use crmsync_redis::when::human;
use crmsync_tenants::{
    Crm, CrmKind, Edition, NylasSettings, Routing, SalesforceConnection, Secret, SecretKey, StoreError, Tenant,
    TenantStore, UpdateOptions, Updated, ZohoConnection,
};

use crate::Env;
use crate::out::{Align, Table};

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Add a tenant.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    Add(TenantFlags),
    /// Change settings of a tenant (only the flags given).
    #[command(after_help = crate::SECRET_KEY_HELP)]
    Set(TenantFlags),
    /// List tenants.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    List,
    /// Show a tenant (secrets masked), with its times in UTC.
    #[command(after_help = crate::SECRET_KEY_HELP)]
    Show {
        /// The tenant's id.
        id: String,
        /// Print the stored settings as JSON for scripts (times as epoch ms only).
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant and every key it has in Redis (a re-added id starts from nothing).
    /// Asks first on a terminal; elsewhere it needs --yes.
    Remove {
        /// The tenant's id.
        id: String,
        /// Do not ask: remove it (cancelling its running backfill, if any).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
pub struct TenantFlags {
    /// Tenant id: lowercase letters, digits, `-`, `_`.
    id: String,
    /// The CRM the tenant writes to: zoho or salesforce [add default: zoho].
    #[arg(long)]
    crm: Option<String>,
    /// The Nylas grant (the connected mailbox) whose contacts are synced.
    #[arg(long)]
    nylas_grant_id: Option<String>,
    /// The Nylas API key (or CRMSYNC_NYLAS_API_KEY).
    #[arg(long, env = "CRMSYNC_NYLAS_API_KEY", hide_env_values = true)]
    nylas_api_key: Option<String>,
    /// `us`, `eu` or the API URI [add default: us].
    #[arg(long)]
    nylas_api_uri: Option<String>,
    /// Zoho data center: us, eu, in, au, jp, cn, ca, sa, uk.
    #[arg(long)]
    zoho_region: Option<String>,
    /// Overrides the region's accounts server.
    #[arg(long)]
    zoho_accounts_url: Option<String>,
    /// Overrides the API domain returned with the token.
    #[arg(long)]
    zoho_api_domain: Option<String>,
    /// The Zoho API client's id (API console).
    #[arg(long)]
    zoho_client_id: Option<String>,
    /// The Zoho API client's secret (or CRMSYNC_ZOHO_CLIENT_SECRET).
    #[arg(long, env = "CRMSYNC_ZOHO_CLIENT_SECRET", hide_env_values = true)]
    zoho_client_secret: Option<String>,
    /// The Zoho refresh token (or CRMSYNC_ZOHO_REFRESH_TOKEN; or use `crmsync zoho
    /// exchange-code`).
    #[arg(long, env = "CRMSYNC_ZOHO_REFRESH_TOKEN", hide_env_values = true)]
    zoho_refresh_token: Option<String>,
    /// Salesforce: the login server: https://login.salesforce.com (production),
    /// https://test.salesforce.com (sandboxes) or the org's My Domain URL [add default:
    /// https://login.salesforce.com].
    #[arg(long)]
    sf_login_url: Option<String>,
    /// Salesforce: the connected app's consumer key.
    #[arg(long)]
    sf_client_id: Option<String>,
    /// Salesforce: the connected app's consumer secret (or CRMSYNC_SF_CLIENT_SECRET).
    #[arg(long, env = "CRMSYNC_SF_CLIENT_SECRET", hide_env_values = true)]
    sf_client_secret: Option<String>,
    /// Salesforce: the refresh token (or CRMSYNC_SF_REFRESH_TOKEN; or use `crmsync salesforce
    /// exchange-code`).
    #[arg(long, env = "CRMSYNC_SF_REFRESH_TOKEN", hide_env_values = true)]
    sf_refresh_token: Option<String>,
    /// Salesforce: the REST API version, vNN.N [add default: v60.0].
    #[arg(long)]
    sf_api_version: Option<String>,
    /// Salesforce: the external-id field holding the Nylas contact id, on both Contact and Lead
    /// [add default: Nylas_Contact_Id__c].
    #[arg(long)]
    sf_external_id_field: Option<String>,
    /// Salesforce: where a contact goes: contact-or-lead (a Contact under the Account with the
    /// email's domain, else a Lead), contact, or lead [add default: contact-or-lead].
    #[arg(long)]
    sf_routing: Option<String>,
    /// Salesforce: send `Sforce-Duplicate-Rule-Header: allowSave=true`, so records save past
    /// duplicate rules that only alert (never past blocking ones): true or false [add default:
    /// false].
    #[arg(long)]
    sf_allow_duplicates: Option<bool>,
    /// The org's daily API credits (Zoho) [add default: from --edition and --users, else
    /// 50000].
    #[arg(long, allow_hyphen_values = true)]
    daily_credits: Option<i64>,
    /// The org's daily API requests (Salesforce's DailyApiRequests Max; the org's own figure,
    /// sent with every answer, replaces it from the first call) [add default: 15000, Developer
    /// Edition's].
    #[arg(long, allow_hyphen_values = true)]
    daily_requests: Option<i64>,
    /// Zoho edition: free, standard, professional, enterprise, ultimate (sets the default
    /// concurrency and, with --users, the daily credits).
    #[arg(long)]
    edition: Option<String>,
    /// User licences of the org.
    #[arg(long, allow_hyphen_values = true)]
    users: Option<i64>,
    /// Requests per second to Zoho, fleet-wide [add default: 5].
    #[arg(long = "rps", allow_hyphen_values = true)]
    requests_per_second: Option<f64>,
    /// Concurrent Zoho calls, fleet-wide [default: the edition's: Free 5, Standard 10,
    /// Professional 15, Enterprise 20, Ultimate 25].
    #[arg(long, allow_hyphen_values = true)]
    concurrency: Option<i64>,
    /// The Nylas webhook destination's secret (or CRMSYNC_WEBHOOK_SECRET).
    #[arg(long, env = "CRMSYNC_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// During a rotation, the next secret: deliveries signed with either are accepted
    /// (an empty value ends the rotation).
    #[arg(long, env = "CRMSYNC_WEBHOOK_SECRET_NEXT", hide_env_values = true)]
    webhook_secret_next: Option<String>,
    /// Share of the daily credits crmsync may use, 0.5–1.0 [add default: 0.8].
    #[arg(long, allow_hyphen_values = true)]
    budget_share: Option<f64>,
    /// Reconcile the CRM with the book this often, fleet-wide: `24h`, `90m`, `7d`, or `off`
    /// [default: off]. Tenants are spread over the period; a reconcile waits behind backfills
    /// and the change feed, within the budget.
    #[arg(long)]
    reconcile_every: Option<String>,
    /// A reconcile leaves records edited in the CRM since crmsync wrote them: true or false
    /// [default: false, the book wins].
    #[arg(long)]
    keep_crm_edits: Option<bool>,
    /// With a new refresh token (`set` only): it re-authorizes the same org (say, after a
    /// revoked grant), so crmsync keeps what it knows of that org. Without it, new credentials
    /// are a new destination: its state starts empty and the next backfill writes every contact.
    #[arg(long)]
    same_org: bool,
}

fn store(env: &Env) -> anyhow::Result<TenantStore> {
    Ok(TenantStore::new(
        env.conn()?,
        &env.namespace,
        Some(SecretKey::from_env()?),
    ))
}

/// A period like `24h`, `90m`, `7d`, `3600s`; `off`: None.
fn period(s: &str) -> anyhow::Result<Option<u64>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a period: use e.g. 24h, 90m, 7d or off"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3_600,
        "d" => n * 86_400,
        _ => anyhow::bail!("`{s}` is not a period: use e.g. 24h, 90m, 7d or off"),
    };
    Ok(Some(secs))
}

fn positive(what: &str, n: i64) -> anyhow::Result<u64> {
    anyhow::ensure!(n > 0, "{what} must be a positive number, got {n}");
    Ok(n as u64)
}

/// Salesforce's DailyApiRequests of the smallest org (Developer Edition): the allowance until
/// the org reports its own.
pub const SF_DEFAULT_DAILY_REQUESTS: u64 = 15_000;

fn nylas_uri(s: &str) -> String {
    crmsync_nylas::api_uri(s)
}

impl TenantFlags {
    fn refuse_zoho_flags(&self) -> anyhow::Result<()> {
        let given = [
            ("--zoho-region", self.zoho_region.is_some()),
            ("--zoho-accounts-url", self.zoho_accounts_url.is_some()),
            ("--zoho-api-domain", self.zoho_api_domain.is_some()),
            ("--zoho-client-id", self.zoho_client_id.is_some()),
            ("--zoho-client-secret", self.zoho_client_secret.is_some()),
            ("--zoho-refresh-token", self.zoho_refresh_token.is_some()),
        ];
        match given.iter().find(|(_, g)| *g) {
            Some((flag, _)) => anyhow::bail!("{flag} is for Zoho tenants; tenant `{}` writes to Salesforce", self.id),
            None => Ok(()),
        }
    }

    fn refuse_salesforce_flags(&self) -> anyhow::Result<()> {
        let given = [
            ("--sf-login-url", self.sf_login_url.is_some()),
            ("--sf-client-id", self.sf_client_id.is_some()),
            ("--sf-client-secret", self.sf_client_secret.is_some()),
            ("--sf-refresh-token", self.sf_refresh_token.is_some()),
            ("--sf-api-version", self.sf_api_version.is_some()),
            ("--sf-external-id-field", self.sf_external_id_field.is_some()),
            ("--sf-routing", self.sf_routing.is_some()),
            ("--sf-allow-duplicates", self.sf_allow_duplicates.is_some()),
        ];
        match given.iter().find(|(_, g)| *g) {
            Some((flag, _)) => anyhow::bail!("{flag} is for Salesforce tenants; tenant `{}` writes to Zoho", self.id),
            None => Ok(()),
        }
    }

    fn apply(self, t: &mut Tenant) -> anyhow::Result<()> {
        match t.crm.kind() {
            CrmKind::Zoho => self.refuse_salesforce_flags()?,
            CrmKind::Salesforce => self.refuse_zoho_flags()?,
        }
        if let Some(c) = &self.crm {
            let kind = CrmKind::parse(c).ok_or_else(|| anyhow::anyhow!("unknown CRM `{c}`: use zoho or salesforce"))?;
            anyhow::ensure!(
                kind == t.crm.kind(),
                "tenant `{}` writes to {}; to move it to {kind}, remove it and add it again",
                t.id,
                t.crm.kind()
            );
        }
        if let Some(v) = self.nylas_grant_id {
            t.nylas.grant_id = v;
        }
        if let Some(v) = self.nylas_api_key {
            t.nylas.api_key = Secret::new(v);
        }
        if let Some(v) = self.nylas_api_uri {
            t.nylas.api_uri = nylas_uri(&v);
        }
        match &mut t.crm {
            Crm::Zoho(z) => {
                if let Some(v) = self.zoho_region {
                    z.region = Some(v.to_ascii_lowercase());
                }
                if let Some(v) = self.zoho_accounts_url {
                    z.accounts_url = Some(v).filter(|s| !s.is_empty());
                }
                if let Some(v) = self.zoho_api_domain {
                    z.api_domain = Some(v).filter(|s| !s.is_empty());
                }
                if let Some(v) = self.zoho_client_id {
                    z.client_id = v;
                }
                if let Some(v) = self.zoho_client_secret {
                    z.client_secret = Secret::new(v);
                }
                if let Some(v) = self.zoho_refresh_token {
                    // Empty: none (nothing is written until one is set or exchanged).
                    z.refresh_token = Some(v).filter(|s| !s.is_empty()).map(Secret::new);
                }
                anyhow::ensure!(
                    self.daily_requests.is_none(),
                    "--daily-requests is for Salesforce tenants; a Zoho tenant's budget is --daily-credits"
                );
            }
            Crm::Salesforce(c) => {
                if let Some(v) = self.sf_login_url {
                    c.login_url = v;
                }
                if let Some(v) = self.sf_client_id {
                    c.client_id = v;
                }
                if let Some(v) = self.sf_client_secret {
                    c.client_secret = Secret::new(v);
                }
                if let Some(v) = self.sf_refresh_token {
                    c.refresh_token = Some(v).filter(|s| !s.is_empty()).map(Secret::new);
                }
                if let Some(v) = self.sf_api_version {
                    c.api_version = v;
                }
                if let Some(v) = self.sf_external_id_field {
                    c.ext_id_field = v;
                }
                if let Some(v) = self.sf_routing {
                    c.routing = Routing::parse(&v).ok_or_else(|| {
                        anyhow::anyhow!("unknown routing `{v}`: use contact-or-lead, contact or lead")
                    })?;
                }
                if let Some(v) = self.sf_allow_duplicates {
                    c.allow_duplicates = v;
                }
                anyhow::ensure!(
                    self.daily_credits.is_none(),
                    "--daily-credits is for Zoho tenants; a Salesforce tenant's budget is --daily-requests"
                );
                anyhow::ensure!(
                    self.edition.is_none() && self.users.is_none(),
                    "--edition and --users are Zoho's plans; a Salesforce tenant's budget is --daily-requests"
                );
                if let Some(v) = self.daily_requests {
                    t.daily_credits = positive("daily requests", v)?;
                }
            }
        }
        let plan_changed = self.edition.is_some() || self.users.is_some();
        if let Some(v) = self.edition {
            t.edition = Some(Edition::parse(&v).ok_or_else(|| {
                anyhow::anyhow!("unknown edition `{v}`: use free, standard, professional, enterprise or ultimate")
            })?);
        }
        if let Some(v) = self.users {
            anyhow::ensure!(
                (1..=1_000_000).contains(&v),
                "users {v} is out of range: from 1 to 1,000,000 user licences"
            );
            t.users = Some(u32::try_from(v)?);
        }
        match (self.daily_credits, t.edition) {
            (Some(v), _) => t.daily_credits = positive("daily credits", v)?,
            (None, Some(e)) if plan_changed => t.daily_credits = e.daily_credits(t.users.unwrap_or(1)),
            _ => {}
        }
        if let Some(v) = self.budget_share {
            t.budget_share = v;
        }
        if let Some(v) = self.requests_per_second {
            t.requests_per_second = v;
        }
        if let Some(v) = self.webhook_secret {
            t.webhook_secret = Some(v).filter(|s| !s.is_empty()).map(Secret::new);
        }
        if let Some(v) = self.webhook_secret_next {
            t.webhook_secret_next = Some(v).filter(|s| !s.is_empty()).map(Secret::new);
        }
        if let Some(v) = &self.reconcile_every {
            t.reconcile_every_secs = period(v)?;
        }
        if let Some(v) = self.keep_crm_edits {
            t.keep_crm_edits = v;
        }
        if let Some(v) = self.concurrency {
            anyhow::ensure!(
                (1..=25).contains(&v),
                "concurrency {v} is out of range: 1 to 25 concurrent calls"
            );
            t.concurrency = Some(v as u32);
        }
        Ok(())
    }
}

/// New credentials lift the pause the fleet put on a tenant whose grant the CRM refused, and
/// the writes that waited for it run again now.
async fn lift_reauthorize_pause(env: &Env, id: &str, dest: &str) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let keys = crmsync_tenants::TenantKeys::new(&env.namespace, id);
    let reason: Option<String> = redis::cmd("HGET")
        .arg(keys.pause())
        .arg("reason")
        .query_async(&mut conn.clone())
        .await?;
    if !reason.is_some_and(|r| r.starts_with(crmsync_worker::flush::REAUTHORIZE)) {
        return Ok(());
    }
    crmsync_limits::Limiter::new(conn.clone(), &env.namespace)
        .resume(id)
        .await?;
    let writes: JobQueue<FlushWrites> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
    let woken = crmsync_producer::waits::wake(&conn, &writes, &keys.dest(dest)).await?;
    println!("  the pause for re-authorization is lifted ({woken} waiting write(s) run now)");
    Ok(())
}

/// Puts the tenant on the fleet's reconcile schedule (or takes it off) and says when it runs.
async fn reschedule(env: &Env, id: &str, every: Option<u64>) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let period = every.map(std::time::Duration::from_secs);
    crmsync_producer::schedule::set(&conn, &env.namespace, id, period).await?;
    match crmsync_producer::schedule::next_due(&conn, &env.namespace, id).await? {
        Some(at) => {
            let now = crmsync_queue::now_ms();
            println!(
                "  reconciled every {} by the fleet; the first at {} ({})",
                crmsync_redis::when::in_text(now + every.unwrap_or(0) * 1000, now).trim_start_matches("in "),
                crmsync_redis::when::utc_text(at, now),
                crmsync_redis::when::in_text(at, now)
            );
        }
        None => println!("  no scheduled reconcile (run one with `crmsync reconcile {id}`)"),
    }
    Ok(())
}

/// Keys deleted per `UNLINK` when a tenant is removed.
const PURGE_BATCH: usize = 500;

/// What follows a change of settings: a tenant pointed at another destination starts there
/// with empty state (its running backfill, which read for the old one, is cancelled), and the
/// old destination's state is deleted by the fleet in the background.
pub async fn after_update(env: &Env, id: &str, u: &Updated) -> anyhow::Result<()> {
    if u.connection_changed && u.old_dest.is_none() {
        println!("  new credentials: cached access tokens are no longer used");
    }
    if u.connection_changed {
        lift_reauthorize_pause(env, id, &u.dest).await?;
    }
    let Some(old) = &u.old_dest else { return Ok(()) };
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    if let Some(run) = runs.active(id).await? {
        let reason = "cancelled: the tenant was pointed at another destination";
        if runs.end(id, &run.id, RunStatus::Cancelled, reason).await? {
            println!(
                "  backfill run {} cancelled: it read for the previous destination",
                run.id
            );
        }
    }
    let maintenance: JobQueue<Maintenance> =
        JobQueue::new(conn.clone(), crmsync_producer::maintenance_queue(&env.namespace));
    maintenance
        .enqueue(&Maintenance::PurgeDestination {
            tenant: id.to_owned(),
            dest: old.clone(),
        })
        .await?;
    println!(
        "  the tenant now writes to a new destination ({}): nothing of the previous one is used, and its \
         state is deleted in the background",
        u.dest
    );
    println!("  run `crmsync backfill {id}` to write the whole address book there");
    Ok(())
}

/// Records a change of a tenant in the audit log (what changed, never a value: values may be
/// secrets).
async fn audit(env: &Env, action: &str, tenant: &str, outcome: &str) -> anyhow::Result<()> {
    crmsync_ops::Audit::new(env.conn()?, &env.namespace)
        .record(
            &crmsync_ops::Actor::cli(),
            action,
            &format!("tenant {tenant}"),
            "",
            outcome,
        )
        .await?;
    Ok(())
}

/// Removes a tenant: its settings first (from then on nothing of it is written), then every
/// key under its hash tag, a bounded batch at a time. Asks first, on a terminal; a script says
/// `--yes` (nothing is asked where nobody can answer).
async fn remove(env: &Env, id: &str, yes: bool) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    let s = TenantStore::new(conn.clone(), &env.namespace, None);
    // An unknown id is said at once, before any question (an unreadable tenant can still be
    // removed).
    if let Err(e @ StoreError::NotFound(_)) = s.view(id).await {
        return Err(e.into());
    }
    let active = runs.active(id).await?;
    if !yes {
        let question = match &active {
            Some(run) => format!(
                "Remove tenant `{id}`, cancel its running backfill (run {}) and delete every key it has in Redis?",
                run.id
            ),
            None => format!("Remove tenant `{id}` and delete every key it has in Redis?"),
        };
        match crate::out::confirm(&question) {
            Some(true) => {}
            Some(false) => anyhow::bail!("not confirmed; tenant `{id}` is kept"),
            None => {
                let what = match &active {
                    Some(run) => format!(
                        "tenant `{id}` has a backfill running (run {}): `tenant remove` cancels it and deletes the \
                         tenant and every key it has",
                        run.id
                    ),
                    None => format!("`tenant remove` deletes tenant `{id}` and every key it has"),
                };
                return Err(crate::errors::Usage(format!(
                    "{what}; there is no terminal to ask on: pass --yes to confirm"
                ))
                .into());
            }
        }
    }
    if let Some(run) = active
        && runs
            .end(id, &run.id, RunStatus::Cancelled, "cancelled: the tenant was removed")
            .await?
    {
        println!("backfill run {} cancelled", run.id);
    }
    anyhow::ensure!(
        s.remove(id).await?.is_some(),
        "no tenant `{id}`; list tenants with `crmsync tenant list`"
    );
    let forgotten = runs.forget_tenant(id).await?;
    let purged = s.purge(id, PURGE_BATCH).await?;
    let outcome = format!(
        "tenant `{id}` removed: {} key(s) deleted ({} run(s) forgotten); a re-added `{id}` starts from nothing",
        thousands(purged.deleted as u64),
        thousands(forgotten as u64)
    );
    crmsync_ops::Audit::new(conn, &env.namespace)
        .record(
            &crmsync_ops::Actor::cli(),
            "tenant.remove",
            &format!("tenant {id}"),
            "",
            &outcome,
        )
        .await?;
    println!("{outcome}");
    Ok(())
}

/// A tenant's settings as `tenant show` prints them: the stored view, each epoch-ms time
/// (`created_at_ms`) followed by the same time for people (`created_at`: `2026-12-03 14:05:09
/// UTC (3m ago)`).
fn with_human_times(mut v: serde_json::Value, now_ms: u64) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        let times: Vec<(String, u64)> = map
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix("_ms")?.to_owned(), v.as_u64().filter(|&ms| ms > 0)?)))
            .collect();
        for (k, ms) in times {
            map.entry(k).or_insert_with(|| human(ms, now_ms).into());
        }
        for (_, child) in map.iter_mut() {
            if child.is_object() {
                *child = with_human_times(std::mem::take(child), now_ms);
            }
        }
    }
    v
}

pub async fn run(env: &Env, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add(flags) => {
            anyhow::ensure!(
                !flags.same_org,
                "--same-org is for `tenant set` (a new tenant has no org yet)"
            );
            let kind = match &flags.crm {
                Some(c) => {
                    CrmKind::parse(c).ok_or_else(|| anyhow::anyhow!("unknown CRM `{c}`: use zoho or salesforce"))?
                }
                None => CrmKind::Zoho,
            };
            let crm = match kind {
                CrmKind::Zoho => Crm::Zoho(ZohoConnection {
                    region: None,
                    accounts_url: None,
                    api_domain: None,
                    client_id: String::new(),
                    client_secret: Secret::new(""),
                    refresh_token: None,
                }),
                CrmKind::Salesforce => Crm::Salesforce(SalesforceConnection::new(
                    crmsync_tenants::crm::salesforce::PRODUCTION_LOGIN,
                    "",
                    Secret::new(""),
                )),
            };
            let mut t = Tenant::new(
                flags.id.clone(),
                NylasSettings {
                    grant_id: String::new(),
                    api_key: Secret::new(""),
                    api_uri: nylas_uri("us"),
                },
                crm,
            );
            if kind == CrmKind::Salesforce {
                t.daily_credits = SF_DEFAULT_DAILY_REQUESTS;
            }
            flags.apply(&mut t)?;
            let id = t.id.clone();
            let every = t.reconcile_every_secs;
            let s = store(env)?;
            // Every tenant of a fleet is sealed with the fleet's key.
            s.check_key().await?;
            s.add(t).await?;
            audit(env, "tenant.add", &id, "added").await?;
            println!("tenant `{id}` added");
            if every.is_some() {
                reschedule(env, &id, every).await?;
            }
        }
        TenantCmd::Set(flags) => {
            let s = store(env)?;
            let mut t = s.get(&flags.id).await?;
            let same_org = flags.same_org;
            let limits = |t: &crmsync_tenants::Tenant| {
                (
                    t.daily_credits,
                    t.budget_share.to_bits(),
                    t.requests_per_second.to_bits(),
                    t.effective_concurrency(),
                )
            };
            let before = limits(&t);
            let every_before = t.reconcile_every_secs;
            flags.apply(&mut t)?;
            let limits_changed = limits(&t) != before;
            let every = t.reconcile_every_secs;
            let allowed = t.allowed_credits();
            let updated_unit = t.crm.kind().budget_unit();
            let id = t.id.clone();
            let updated = s
                .update_with(
                    t,
                    UpdateOptions {
                        reauthorized: false,
                        same_org,
                    },
                )
                .await?;
            let what = match (&updated.old_dest, limits_changed) {
                (Some(_), _) => "updated: pointed at a new destination",
                (None, true) => "updated: limits changed",
                (None, false) => "updated",
            };
            audit(env, "tenant.set", &id, what).await?;
            println!("tenant `{id}` updated");
            after_update(env, &id, &updated).await?;
            if every != every_before {
                reschedule(env, &id, every).await?;
            }
            if limits_changed && updated.old_dest.is_none() {
                let conn = env.conn()?;
                let writes: JobQueue<FlushWrites> =
                    JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
                let dest = crmsync_tenants::TenantKeys::new(&env.namespace, &id).dest(&updated.dest);
                let woken = crmsync_producer::waits::wake(&conn, &writes, &dest).await?;
                let unit = updated_unit;
                println!(
                    "  limits changed ({} {unit} allowed in any 24 hours): the fleet applies them from its next call{}",
                    thousands(allowed),
                    if woken > 0 {
                        format!("; {} waiting write(s) run again now", thousands(woken as u64))
                    } else {
                        String::new()
                    }
                );
            }
        }
        TenantCmd::List => {
            // Only settings in clear are listed: no key is needed, but a malformed one is an
            // error, not a silent "(sealed)".
            let key = match SecretKey::from_env() {
                Ok(k) => Some(k),
                Err(crmsync_tenants::SecretError::Missing) => None,
                Err(e) => return Err(e.into()),
            };
            let s = TenantStore::new(env.conn()?, &env.namespace, key);
            let ids = s.ids().await?;
            if ids.is_empty() {
                println!("no tenants; add one with `crmsync tenant add <id> ...`");
                return Ok(());
            }
            let mut table = Table::new(&[
                ("TENANT", Align::Left),
                ("NYLAS GRANT", Align::Left),
                ("CRM", Align::Left),
                ("DAILY ALLOWANCE", Align::Right),
                ("SHARE", Align::Right),
            ]);
            for id in ids {
                let v = s.view(&id).await?;
                let (crm, unit) = match v["crm"]["kind"].as_str() {
                    Some("salesforce") => ("salesforce".to_owned(), "requests"),
                    _ => (
                        format!("zoho/{}", v["crm"]["region"].as_str().unwrap_or("custom")),
                        "credits",
                    ),
                };
                table.row(vec![
                    id,
                    v["nylas"]["grant_id"].as_str().unwrap_or("").to_owned(),
                    crm,
                    format!("{} {unit}", thousands(v["daily_credits"].as_u64().unwrap_or(0))),
                    v["budget_share"]
                        .as_f64()
                        .map(|f| format!("{f:.2}"))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            table.print();
        }
        TenantCmd::Show { id, json } => {
            // Shows the secrets masked (`****abcd`): that needs the key that sealed them.
            let key = SecretKey::from_env().context(
                "`tenant show` opens the tenant's secrets to mask them: set CRMSYNC_SECRET_KEY (or CRMSYNC_SECRET_KEY_FILE) to the fleet's key",
            )?;
            let s = TenantStore::new(env.conn()?, &env.namespace, Some(key));
            let mut v = s.view(&id).await?;
            if !json {
                v = with_human_times(v, crmsync_queue::now_ms());
            }
            println!("{}", serde_json::to_string_pretty(&v).context("rendering")?);
        }
        TenantCmd::Remove { id, yes } => remove(env, &id, yes).await?,
    }
    Ok(())
}
