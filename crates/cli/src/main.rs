//! `crmsync`: the one binary of the fleet. Subcommands are thin: they parse flags, wire the
//! library crates together and map errors to exit codes (0 ok, 1 failed, 2 bad usage).

mod backfill;
mod budget;
mod dashboard;
mod dead;
mod feed;
mod keys;
mod logging;
mod reconcile;
mod rejected;
mod runs;
mod salesforce;
mod site;
mod status;
mod tenant;
mod webhook;
mod worker;
mod zoho;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crmsync", version, about = "Keep CRMs populated from mailbox address books")]
struct Cli {
    /// Redis URL of the fleet (redis://, rediss://, with credentials if any).
    #[arg(
        long,
        global = true,
        env = "CRMSYNC_REDIS_URL",
        // The URL may hold a password: `--help` must not print the environment's value.
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Key namespace, when several deployments share one Redis.
    #[arg(long, global = true, env = "CRMSYNC_NAMESPACE", default_value = "crmsync")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a worker process (until SIGTERM/SIGINT, then drain).
    Worker(worker::WorkerArgs),
    /// Run the Nylas webhook receiver (the change feed's entry point).
    Webhook(webhook::WebhookArgs),
    /// Start a backfill of tenants' whole address books.
    Backfill(backfill::BackfillArgs),
    /// Compare a tenant's CRM with its address book and write only the differences (missing,
    /// stale, edited in the CRM, orphaned); `--dry-run` only reports them.
    Reconcile(reconcile::ReconcileArgs),
    /// List backfill runs with their counts.
    Runs(runs::RunsArgs),
    /// Cancel a backfill run: its remaining pages are not read; what it read is still written.
    Cancel(runs::CancelArgs),
    /// Dead letters of both queues: list, show, retry after a fix, purge.
    #[command(subcommand)]
    Dead(dead::DeadCmd),
    /// Records the CRM rejected, per tenant: list, and retry after a fix.
    #[command(subcommand)]
    Rejected(rejected::RejectedCmd),
    /// The change feed per tenant: changes received, skipped as unchanged or stale, written.
    Feed(feed::FeedArgs),
    /// The fleet at a glance: queues, tenants (paused and why, credits, run progress, last
    /// error) and workers, read straight from Redis.
    Status(status::StatusArgs),
    /// Serve the fleet dashboard (a web page with charts; needs --token).
    Dashboard(dashboard::DashboardArgs),
    /// Pause a tenant: no CRM call is made for it until it is resumed.
    Pause(budget::PauseArgs),
    /// Resume a paused tenant.
    Resume { tenant: String },
    /// Credits used and allowed in the rolling window, and why a tenant is paused.
    Budget(budget::BudgetArgs),
    /// Add, change, list, show and remove tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCmd),
    /// Zoho OAuth helpers.
    #[command(subcommand)]
    Zoho(zoho::ZohoCmd),
    /// Salesforce OAuth helpers.
    #[command(subcommand)]
    Salesforce(salesforce::SalesforceCmd),
    /// Print a new random secret key for CRMSYNC_SECRET_KEY.
    Keygen,
    /// The secret key: rotate it (re-seal every tenant with a new key).
    #[command(subcommand)]
    Keys(keys::KeysCmd),
}

/// Connection and settings every subcommand shares.
pub struct Env {
    pub redis_url: String,
    pub namespace: String,
}

impl Env {
    pub fn conn(&self) -> anyhow::Result<crmsync_queue::RedisConn> {
        // The error names the problem, never the URL (it may hold a password).
        let target = crmsync_queue::RedisTarget::parse(&self.redis_url)
            .context("invalid Redis URL (--redis-url or CRMSYNC_REDIS_URL)")?;
        Ok(crmsync_queue::connect(&target, Duration::from_secs(5))?)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A worker runs its jobs on one thread: the Monitor polls every job in one task, so with
    // more threads each Redis or HTTP answer would wake that task from another thread (a
    // context switch per round trip). A fleet scales by processes, one per core.
    let runtime = match cli.command {
        Command::Worker(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let env = Env {
        redis_url: cli.redis_url,
        namespace: cli.namespace,
    };
    let res = match cli.command {
        Command::Worker(args) => worker::run(&env, args).await,
        Command::Webhook(args) => webhook::run(&env, args).await,
        Command::Dashboard(args) => dashboard::run(&env, args).await,
        other => {
            logging::init(logging::Format::Text, "warn");
            match other {
                Command::Backfill(args) => backfill::run(&env, args).await,
                Command::Reconcile(args) => reconcile::run(&env, args).await,
                Command::Runs(args) => runs::run(&env, args).await,
                Command::Cancel(args) => runs::cancel(&env, args).await,
                Command::Dead(cmd) => dead::run(&env, cmd).await,
                Command::Rejected(cmd) => rejected::run(&env, cmd).await,
                Command::Feed(args) => feed::run(&env, args).await,
                Command::Status(args) => status::run(&env, args).await,
                Command::Tenant(cmd) => tenant::run(&env, cmd).await,
                Command::Pause(args) => budget::pause(&env, args).await,
                Command::Resume { tenant } => budget::resume(&env, &tenant).await,
                Command::Budget(args) => budget::show(&env, args).await,
                Command::Zoho(cmd) => zoho::run(&env, cmd).await,
                Command::Salesforce(cmd) => salesforce::run(&env, cmd).await,
                Command::Keys(cmd) => keys::run(&env, cmd).await,
                Command::Keygen => {
                    println!("{}", crmsync_tenants::SecretKey::generate());
                    Ok(())
                }
                Command::Worker(_) | Command::Webhook(_) | Command::Dashboard(_) => Ok(()),
            }
        }
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
