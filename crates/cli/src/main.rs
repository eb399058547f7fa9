//! `crmsync`: the one binary of the fleet. Subcommands are thin: they parse flags, wire the
//! library crates together and map errors to exit codes (0 ok, 1 failed, 2 bad usage).

/// `println!` for the whole crate (it shadows std's): a reader that closes the pipe early
/// (`crmsync runs | head -3`) ends the process quietly with 0, as Unix tools do, instead of
/// std's panic. Defined before the modules so that they all use it.
macro_rules! println {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the whole crate, as [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

mod audit;
mod backfill;
mod budget;
mod dashboard;
mod dead;
mod errors;
mod feed;
mod keys;
mod logging;
mod out;
mod reconcile;
mod rejected;
mod runs;
mod salesforce;
mod status;
mod tenant;
mod webhook;
mod worker;
mod zoho;

use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// The environment every command reads, listed once in `crmsync --help`.
const ENVIRONMENT: &str = "\
Environment:
  CRMSYNC_REDIS_URL        The fleet's Redis, as --redis-url (may hold a password; never printed)
  CRMSYNC_NAMESPACE        The key namespace, as --namespace
  CRMSYNC_SECRET_KEY       The fleet's secret key (base64 of 32 random bytes, `crmsync keygen`):
                           seals and opens the tenants' secrets (worker, webhook, tenant, keys,
                           zoho, salesforce)
  CRMSYNC_SECRET_KEY_FILE  A file holding the secret key, read when CRMSYNC_SECRET_KEY is unset
  CRMSYNC_SECRET_KEY_OLD   During a key rotation, the previous keys, comma-separated
  CRMSYNC_LOG              The log filter, e.g. `info` or `crmsync_worker=debug,warn` [default:
                           info for worker, webhook and dashboard; warn for the other commands]
  CRMSYNC_LOG_FORMAT       text or json, for worker, webhook and dashboard [default: text]
  CRMSYNC_DASHBOARD_TOKEN  The dashboard's token (dashboard; webhook --with-dashboard)
  CRMSYNC_DASHBOARD_SECURE_COOKIE
                           1 or true: the dashboard's cookie is Secure (served over HTTPS)
  NO_COLOR                 Set and not empty: no colours in text logs (there are none unless
                           stderr is a terminal)
  COLUMNS                  The width tables are laid out for [default: the terminal's]
Every other variable a flag reads is shown in that flag's help as [env: NAME=].";

/// Under every subcommand's help: the global options are listed once, in `crmsync --help`.
const GLOBAL_FOOTER: &str = "\
Every command also takes the global options (see `crmsync --help`): the fleet's Redis from
CRMSYNC_REDIS_URL, its namespace from CRMSYNC_NAMESPACE, the log filter from CRMSYNC_LOG.";

/// Under the help of commands that open the tenants' secrets.
const SECRET_KEY_HELP: &str = "\
Environment:
  CRMSYNC_SECRET_KEY       The fleet's secret key (base64 of 32 random bytes, `crmsync keygen`)
  CRMSYNC_SECRET_KEY_FILE  A file holding it, read when CRMSYNC_SECRET_KEY is unset
  CRMSYNC_SECRET_KEY_OLD   During a key rotation, the previous keys, comma-separated";

/// Under the help of the long-running servers, which log.
const SERVER_ENV_HELP: &str = "\
Environment:
  CRMSYNC_SECRET_KEY       The fleet's secret key (base64 of 32 random bytes, `crmsync keygen`)
  CRMSYNC_SECRET_KEY_FILE  A file holding it, read when CRMSYNC_SECRET_KEY is unset
  CRMSYNC_SECRET_KEY_OLD   During a key rotation, the previous keys, comma-separated
  CRMSYNC_LOG              The log filter [default: info]
  NO_COLOR                 Set and not empty: no colours in text logs";

/// Under the dashboard's help.
const DASHBOARD_ENV_HELP: &str = "\
Environment:
  CRMSYNC_LOG                      The log filter [default: info]
  CRMSYNC_DASHBOARD_SECURE_COOKIE  1 or true: the cookie is Secure (serve it over HTTPS)
  NO_COLOR                         Set and not empty: no colours in text logs";

/// The global options' ids, listed in `crmsync --help` only.
const GLOBAL_ARGS: [&str; 2] = ["redis_url", "namespace"];

#[derive(Parser)]
#[command(
    name = "crmsync",
    version,
    about = "Keep CRMs populated from mailbox address books",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Redis URL of the fleet (redis://, rediss://, with credentials if any).
    #[arg(
        long,
        global = true,
        env = "CRMSYNC_REDIS_URL",
        // The URL may hold a password: `--help` must not print the environment's value.
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/",
        help_heading = "Global options"
    )]
    redis_url: String,
    /// Key namespace, when several deployments share one Redis.
    #[arg(
        long,
        global = true,
        env = "CRMSYNC_NAMESPACE",
        default_value = "crmsync",
        help_heading = "Global options"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a worker process (until SIGTERM/SIGINT, then drain).
    #[command(after_help = SERVER_ENV_HELP)]
    Worker(worker::WorkerArgs),
    /// Run the Nylas webhook receiver (the change feed's entry point).
    #[command(after_help = SERVER_ENV_HELP)]
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
    #[command(after_help = DASHBOARD_ENV_HELP)]
    Dashboard(dashboard::DashboardArgs),
    /// Pause a tenant: no CRM call is made for it until it is resumed.
    Pause(budget::PauseArgs),
    /// Resume a paused tenant.
    Resume(budget::ResumeArgs),
    /// Credits used and allowed in the rolling window, and why a tenant is paused.
    Budget(budget::BudgetArgs),
    /// Add, change, list, show and remove tenants.
    #[command(subcommand, after_help = SECRET_KEY_HELP)]
    Tenant(tenant::TenantCmd),
    /// Zoho OAuth helpers.
    #[command(subcommand, after_help = SECRET_KEY_HELP)]
    Zoho(zoho::ZohoCmd),
    /// Salesforce OAuth helpers.
    #[command(subcommand, after_help = SECRET_KEY_HELP)]
    Salesforce(salesforce::SalesforceCmd),
    /// Operator actions, newest first: who did what, when, and what came of it (from the CLI
    /// and the dashboard).
    Audit(audit::AuditArgs),
    /// Print a new random secret key for CRMSYNC_SECRET_KEY, or a dashboard token (URL-safe).
    Keygen,
    /// The secret key: rotate it (re-seal every tenant with a new key).
    #[command(subcommand, after_help = SECRET_KEY_HELP)]
    Keys(keys::KeysCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// For example `crmsync completions bash > /etc/bash_completion.d/crmsync`; for zsh, into
    /// a directory of $fpath as `_crmsync`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The command line as parsed and shown: the global options are listed once, in `crmsync
/// --help`, and still taken by every subcommand (`crmsync status --redis-url ...`).
fn command() -> clap::Command {
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| GLOBAL_ARGS.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    cmd.mut_subcommands(|sc| hide_globals(sc, &globals))
}

/// Gives `cmd` and its subcommands hidden copies of the global options (clap copies a global
/// option into a subcommand only where it has none of that name, and a copy would show in its
/// help), and names them in a footer. Values given after a subcommand still reach the
/// top-level options: clap hands global values up by name.
fn hide_globals(mut cmd: clap::Command, globals: &[clap::Arg]) -> clap::Command {
    for a in globals {
        cmd = cmd.arg(a.clone().hide(true));
    }
    let footer = match cmd.get_after_help() {
        Some(h) => format!("{h}\n\n{GLOBAL_FOOTER}"),
        None => GLOBAL_FOOTER.to_owned(),
    };
    cmd.after_help(footer).mut_subcommands(|sc| hide_globals(sc, globals))
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
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
                Command::Resume(args) => budget::resume(&env, args).await,
                Command::Audit(args) => audit::run(&env, args).await,
                Command::Budget(args) => budget::show(&env, args).await,
                Command::Zoho(cmd) => zoho::run(&env, cmd).await,
                Command::Salesforce(cmd) => salesforce::run(&env, cmd).await,
                Command::Keys(cmd) => keys::run(&env, cmd).await,
                Command::Keygen => {
                    println!("{}", crmsync_tenants::SecretKey::generate());
                    Ok(())
                }
                Command::Completions { shell } => {
                    let mut script = Vec::new();
                    clap_complete::generate(shell, &mut command(), "crmsync", &mut script);
                    out::write_bytes(&script);
                    Ok(())
                }
                Command::Worker(_) | Command::Webhook(_) | Command::Dashboard(_) => Ok(()),
            }
        }
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", errors::report(&e, &env.redis_url));
            errors::exit_code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument a person can see says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !a.is_hide_set() && !builtin && a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sc in cmd.get_subcommands() {
                check(sc, &format!("{path} {}", sc.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&command(), "crmsync", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn global_options_show_once_and_parse_everywhere() {
        let mut cmd = command();
        let root = cmd.render_long_help().to_string();
        assert!(
            root.contains("--redis-url") && root.contains("CRMSYNC_SECRET_KEY_FILE"),
            "{root}"
        );
        let tenant = cmd
            .find_subcommand_mut("tenant")
            .and_then(|t| t.find_subcommand_mut("list"))
            .expect("tenant list")
            .render_long_help()
            .to_string();
        assert!(!tenant.contains("--redis-url"), "{tenant}");
        assert!(tenant.contains("CRMSYNC_REDIS_URL"), "{tenant}");

        let m = command()
            .try_get_matches_from(["crmsync", "status", "--redis-url", "redis://h:1/", "--namespace", "x"])
            .expect("parse");
        let cli = Cli::from_arg_matches(&m).expect("cli");
        assert_eq!((cli.redis_url.as_str(), cli.namespace.as_str()), ("redis://h:1/", "x"));
    }

    #[test]
    fn watch_takes_at_least_a_second() {
        let err = command()
            .try_get_matches_from(["crmsync", "status", "--watch", "0"])
            .expect_err("refused");
        assert_eq!(err.exit_code(), 2);
        assert!(
            command()
                .try_get_matches_from(["crmsync", "status", "--watch", "1"])
                .is_ok()
        );
    }
}
