//! `crmsync`: the one binary of the fleet. Subcommands are thin: they parse flags, wire the
//! library crates together and map errors to exit codes.

mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crmsync", version, about = "Keep CRMs populated from mailbox address books")]
struct Cli {
    /// Redis URL of the fleet (redis://, rediss://, with credentials if any).
    #[arg(
        long,
        global = true,
        env = "CRMSYNC_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis_url: String,
    /// Key namespace, when several deployments share one Redis.
    #[arg(long, global = true, env = "CRMSYNC_NAMESPACE", default_value = "crmsync")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show queue depths, throughput and workers, read straight from Redis.
    Status(status::StatusArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CRMSYNC_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Status(args) => status::run(&cli.redis_url, &cli.namespace, args).await,
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
