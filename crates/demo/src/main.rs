//! `make demo`: crmsync's main job end to end, on a machine with nothing running.
//!
//! Starts its own `redis-server` and the simulator (3 tenants across the US and EU data
//! centers, 2,000–5,000 messy contacts each), registers the tenants with `crmsync tenant add`,
//! starts 2 `crmsync worker` processes, runs `crmsync backfill ... --follow` (live progress,
//! then each run's summary), checks the simulated CRMs, and stops everything it started.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{ChildProcess, RedisServer, bin_path};

fn tenant(name: &str, dc: &str, contacts: usize) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.nylas_region = dc.into();
    t.zoho.dc = dc.into();
    t.contacts = contacts;
    t
}

fn crmsync(redis: &RedisServer, key: &str) -> Command {
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.env("CRMSYNC_REDIS_URL", redis.url()).env("CRMSYNC_SECRET_KEY", key);
    cmd
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let redis = RedisServer::start();
    println!(
        "• redis-server started on 127.0.0.1:{} (its own, in a temp dir)",
        redis.port()
    );

    let tenants = vec![
        tenant("acme", "us", 4_000),
        tenant("globex", "eu", 3_000),
        tenant("initech", "us", 2_500),
    ];
    let sim = RunningSim::start(
        SimConfig {
            seed: 2026,
            tenants: tenants.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    println!("• simulator (fake Nylas + Zoho CRM) on {}", sim.base_url());

    let key = crmsync_tenants::SecretKey::generate();
    for t in &tenants {
        let out = crmsync(&redis, &key)
            .args(["tenant", "add", &t.name])
            .args([
                "--nylas-grant-id",
                &t.grant_id,
                "--nylas-api-uri",
                &sim.nylas_api_uri(&t.nylas_region),
            ])
            .args([
                "--zoho-region",
                &t.zoho.dc,
                "--zoho-accounts-url",
                &sim.zoho_accounts_url(&t.zoho.dc),
            ])
            .args(["--zoho-client-id", &t.zoho.client_id])
            .env("CRMSYNC_NYLAS_API_KEY", &t.nylas_api_key)
            .env("CRMSYNC_ZOHO_CLIENT_SECRET", &t.zoho.client_secret)
            .env("CRMSYNC_ZOHO_REFRESH_TOKEN", &t.zoho.refresh_token)
            .output()
            .context("running crmsync tenant add")?;
        anyhow::ensure!(
            out.status.success(),
            "tenant add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "• {} ({} contacts, Nylas {}, Zoho {})",
            String::from_utf8_lossy(&out.stdout).trim(),
            t.contacts,
            t.nylas_region.to_uppercase(),
            t.zoho.dc.to_uppercase()
        );
    }

    let mut workers: Vec<ChildProcess> = (1..=2)
        .map(|i| {
            let mut cmd = crmsync(&redis, &key);
            cmd.args(["worker", "--concurrency", "4"]).env("CRMSYNC_LOG", "warn");
            ChildProcess::spawn(&format!("worker-{i}"), cmd)
        })
        .collect();
    println!("• 2 `crmsync worker` processes started\n");

    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let status = crmsync(&redis, &key)
        .arg("backfill")
        .args(&names)
        .arg("--follow")
        .stdin(Stdio::null())
        .status()
        .context("running crmsync backfill")?;

    println!("\nThe simulated CRMs:");
    println!(
        "{:<10} {:>4} {:>10} {:>10} {:>11} {:>8} {:>12}",
        "TENANT", "DC", "RECORDS", "DUPLICATES", "ZOHO CALLS", "CREDITS", "MIN CREDITS"
    );
    for t in &tenants {
        let org = sim.inspect_org(&t.zoho.org_id).unwrap_or_default();
        let records = org["records"].as_array().cloned().unwrap_or_default();
        let mut emails: HashMap<String, u32> = HashMap::new();
        for r in &records {
            *emails
                .entry(r["Email"].as_str().unwrap_or("").to_lowercase())
                .or_default() += 1;
        }
        let duplicates: u32 = emails.values().map(|n| n - 1).sum();
        println!(
            "{:<10} {:>4} {:>10} {:>10} {:>11} {:>8} {:>12}",
            t.name,
            t.zoho.dc.to_uppercase(),
            records.len(),
            duplicates,
            org["calls"]["upsert"].as_u64().unwrap_or(0),
            org["credits_used_total"].as_u64().unwrap_or(0),
            (records.len() as u64).div_ceil(10)
        );
    }

    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    sim.shutdown().await;
    drop(redis);
    println!(
        "\n• stopped the workers, the simulator and redis-server ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(status.success(), "the backfill did not complete");
    Ok(())
}
