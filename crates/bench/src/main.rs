//! `crmsync-bench`, run by `make bench`: measures, never asserts. Each section starts its own
//! `redis-server` and worker processes and prints a table.

mod backfill;
mod buffer;
mod limits;
mod queue;
mod reconcile;
mod salesforce;
mod webhook;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crmsync-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Queue throughput (1 and 4 worker processes), enqueue-to-start latency, Redis memory.
    Queue(queue::QueueBench),
    /// A backfill of 100,000 contacts across 10 tenants against the simulator, limits off.
    Backfill(backfill::BackfillBench),
    /// A Salesforce backfill, limits off: API requests per 1,000 contacts and contacts/s.
    Salesforce(salesforce::SalesforceBench),
    /// Reconcile of a 100,000-contact book in sync and with 1% drift: credits per 1,000
    /// contacts and contacts/s.
    Reconcile(reconcile::ReconcileBench),
    /// The write buffer's scripts alone: Redis CPU per contact for push, take and done.
    Buffer(buffer::BufferBench),
    /// A backfill of a tenant limited to R requests/s and C concurrent calls.
    Limits(limits::LimitsBench),
    /// The change feed: webhook ingest rate and latency; credits and webhook-to-CRM time of a
    /// burst of 1,000 changes against one upsert per event.
    Webhook(webhook::WebhookBench),
    /// A no-op worker process (spawned by the queue benchmark).
    Worker(queue::WorkerArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CRMSYNC_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Queue(b) => queue::run(b).await,
        Command::Worker(w) => queue::worker(w).await,
        Command::Backfill(b) => backfill::run(b).await,
        Command::Limits(b) => limits::run(b).await,
        Command::Buffer(b) => buffer::run(b).await,
        Command::Salesforce(b) => salesforce::run(b).await,
        Command::Reconcile(b) => reconcile::run(b).await,
        Command::Webhook(b) => webhook::run(b).await,
    }
}
