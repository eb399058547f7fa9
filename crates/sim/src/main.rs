//! `crmsync-sim`: runs the Nylas + Zoho + Salesforce simulator as a process.
//!
//! `crmsync-sim serve --config sim.json [--listen 127.0.0.1:0]` prints exactly one line,
//! `listening on http://127.0.0.1:PORT`, to stdout once bound, logs to stderr, and stops on
//! SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use crmsync_sim::{RunningSim, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "crmsync-sim",
    version,
    about = "Fake Nylas v3 Contacts API, Zoho CRM and Salesforce for demos, tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the simulated APIs until SIGTERM/SIGINT.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// JSON config file (every field optional; without a file, one default tenant `acme`).
    #[arg(long, env = "CRMSYNC_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0", env = "CRMSYNC_SIM_LISTEN")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => SimConfig::from_file(path)?,
        None => SimConfig::default(),
    };
    let sim = RunningSim::start(cfg, args.listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.base_url()).context("cannot write to stdout")?;
        out.flush().context("cannot flush stdout")?;
    }
    shutdown_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
