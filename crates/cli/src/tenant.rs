//! `crmsync tenant add|set|list|show|remove`. Secrets can come from the environment instead
//! of flags (flags are visible in process lists and shell history); they are never printed.

use anyhow::Context as _;
use clap::Subcommand;
use crmsync_producer::{FlushWrites, Maintenance, RunStatus, RunStore};
use crmsync_queue::JobQueue;
use crmsync_tenants::{
    Crm, Edition, NylasSettings, Secret, SecretKey, Tenant, TenantStore, UpdateOptions, Updated, ZohoConnection,
};

use crate::Env;

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Add a tenant.
    Add(TenantFlags),
    /// Change settings of a tenant (only the flags given).
    Set(TenantFlags),
    /// List tenants.
    List,
    /// Show a tenant (secrets masked).
    Show { id: String },
    /// Remove a tenant and every key it has in Redis (a re-added id starts from nothing).
    Remove {
        id: String,
        /// Remove it even though a backfill is running (the run is cancelled first).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
pub struct TenantFlags {
    /// Tenant id: lowercase letters, digits, `-`, `_`.
    id: String,
    /// The CRM the tenant writes to: zoho [add default: zoho].
    #[arg(long)]
    crm: Option<String>,
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
    #[arg(long)]
    zoho_client_id: Option<String>,
    /// (or CRMSYNC_ZOHO_CLIENT_SECRET)
    #[arg(long, env = "CRMSYNC_ZOHO_CLIENT_SECRET", hide_env_values = true)]
    zoho_client_secret: Option<String>,
    /// (or CRMSYNC_ZOHO_REFRESH_TOKEN; or use `crmsync zoho exchange-code`)
    #[arg(long, env = "CRMSYNC_ZOHO_REFRESH_TOKEN", hide_env_values = true)]
    zoho_refresh_token: Option<String>,
    /// The org's daily API credits [add default: from --edition and --users, else 50000].
    #[arg(long, allow_hyphen_values = true)]
    daily_credits: Option<i64>,
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

fn credits(n: i64) -> anyhow::Result<u64> {
    anyhow::ensure!(n > 0, "daily credits must be a positive number, got {n}");
    Ok(n as u64)
}

fn nylas_uri(s: &str) -> String {
    crmsync_nylas::api_uri(s)
}

impl TenantFlags {
    fn apply(self, t: &mut Tenant) -> anyhow::Result<()> {
        if let Some(c) = &self.crm {
            let kind =
                crmsync_tenants::CrmKind::parse(c).ok_or_else(|| anyhow::anyhow!("unknown CRM `{c}`: use zoho"))?;
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
        let Crm::Zoho(z) = &mut t.crm;
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
            z.refresh_token = Some(Secret::new(v));
        }
        let plan_changed = self.edition.is_some() || self.users.is_some();
        if let Some(v) = self.edition {
            t.edition = Some(Edition::parse(&v).ok_or_else(|| {
                anyhow::anyhow!("unknown edition `{v}`: use free, standard, professional, enterprise or ultimate")
            })?);
        }
        if let Some(v) = self.users {
            anyhow::ensure!(v >= 1, "users must be at least 1, got {v}");
            t.users = Some(v as u32);
        }
        match (self.daily_credits, t.edition) {
            (Some(v), _) => t.daily_credits = credits(v)?,
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
        if let Some(v) = self.concurrency {
            anyhow::ensure!(
                (1..=25).contains(&v),
                "concurrency {v} is out of range: Zoho allows 1 to 25 concurrent calls"
            );
            t.concurrency = Some(v as u32);
        }
        Ok(())
    }
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

/// Removes a tenant: its settings first (from then on nothing of it is written), then every
/// key under its hash tag, a bounded batch at a time.
async fn remove(env: &Env, id: &str, yes: bool) -> anyhow::Result<()> {
    let conn = env.conn()?;
    let runs = RunStore::new(conn.clone(), &env.namespace);
    if let Some(run) = runs.active(id).await? {
        anyhow::ensure!(
            yes,
            "tenant `{id}` has a backfill running (run {}); pass --yes to cancel it and remove the tenant",
            run.id
        );
        if runs
            .end(id, &run.id, RunStatus::Cancelled, "cancelled: the tenant was removed")
            .await?
        {
            println!("backfill run {} cancelled", run.id);
        }
    }
    let s = TenantStore::new(conn.clone(), &env.namespace, None);
    anyhow::ensure!(
        s.remove(id).await?.is_some(),
        "no tenant `{id}`; list tenants with `crmsync tenant list`"
    );
    let forgotten = runs.forget_tenant(id).await?;
    let purged = s.purge(id, PURGE_BATCH).await?;
    println!(
        "tenant `{id}` removed: {} key(s) deleted ({forgotten} run(s) forgotten); a re-added `{id}` starts from nothing",
        purged.deleted
    );
    Ok(())
}

pub async fn run(env: &Env, cmd: TenantCmd) -> anyhow::Result<()> {
    match cmd {
        TenantCmd::Add(flags) => {
            anyhow::ensure!(
                !flags.same_org,
                "--same-org is for `tenant set` (a new tenant has no org yet)"
            );
            let mut t = Tenant::new(
                flags.id.clone(),
                NylasSettings {
                    grant_id: String::new(),
                    api_key: Secret::new(""),
                    api_uri: nylas_uri("us"),
                },
                Crm::Zoho(ZohoConnection {
                    region: None,
                    accounts_url: None,
                    api_domain: None,
                    client_id: String::new(),
                    client_secret: Secret::new(""),
                    refresh_token: None,
                }),
            );
            flags.apply(&mut t)?;
            let id = t.id.clone();
            store(env)?.add(t).await?;
            println!("tenant `{id}` added");
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
            flags.apply(&mut t)?;
            let limits_changed = limits(&t) != before;
            let allowed = t.allowed_credits();
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
            println!("tenant `{id}` updated");
            after_update(env, &id, &updated).await?;
            if limits_changed && updated.old_dest.is_none() {
                let conn = env.conn()?;
                let writes: JobQueue<FlushWrites> =
                    JobQueue::new(conn.clone(), crmsync_producer::writes_queue(&env.namespace));
                let dest = crmsync_tenants::TenantKeys::new(&env.namespace, &id).dest(&updated.dest);
                let woken = crmsync_producer::waits::wake(&conn, &writes, &dest).await?;
                println!(
                    "  limits changed ({allowed} credits allowed in any 24 hours): the fleet applies them from its next call{}",
                    if woken > 0 {
                        format!("; {woken} waiting write(s) run again now")
                    } else {
                        String::new()
                    }
                );
            }
        }
        TenantCmd::List => {
            let s = TenantStore::new(env.conn()?, &env.namespace, SecretKey::from_env().ok());
            let ids = s.ids().await?;
            if ids.is_empty() {
                println!("no tenants; add one with `crmsync tenant add <id> ...`");
            }
            println!(
                "{:<24} {:<28} {:<8} {:>12} {:>6}",
                "TENANT", "NYLAS GRANT", "ZOHO DC", "CREDITS/DAY", "SHARE"
            );
            for id in ids {
                let v = s.view(&id).await?;
                let dc = v["zoho"]["region"].as_str().unwrap_or("custom").to_owned();
                println!(
                    "{:<24} {:<28} {:<8} {:>12} {:>6}",
                    id,
                    v["nylas"]["grant_id"].as_str().unwrap_or(""),
                    dc,
                    v["daily_credits"],
                    v["budget_share"]
                );
            }
        }
        TenantCmd::Show { id } => {
            let s = TenantStore::new(env.conn()?, &env.namespace, SecretKey::from_env().ok());
            let v = s.view(&id).await?;
            println!("{}", serde_json::to_string_pretty(&v).context("rendering")?);
        }
        TenantCmd::Remove { id, yes } => remove(env, &id, yes).await?,
    }
    Ok(())
}
