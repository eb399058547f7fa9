//! The backfill benchmark: 10 tenants × 10,000 contacts through `crmsync worker` processes
//! into the simulator with its limits off. Reports contacts/s, Zoho calls and credits per
//! 1,000 contacts (the minimum is 100 credits per 1,000 records written: 10 per full
//! 100-record upsert), each worker's peak RSS, and what the backfill costs Redis: CPU per
//! 1,000 contacts (`INFO cpu` of the bench's own server, before and after), the persistent
//! sync state per contact (`used_memory` delta once the queues' finished entries are gone),
//! and flush jobs that took nothing (scraped from the workers' `/metrics`).

use std::process::Command;
use std::time::{Duration, Instant};

use crmsync_producer::{BackfillPage, RunStatus, RunStore, StartOutcome};
use crmsync_queue::{EnqueueOptions, JobQueue};
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_tenants::{Crm, NylasSettings, Secret, SecretKey, Tenant, TenantStore, ZohoConnection};
use crmsync_testkit::{ChildProcess, RedisServer, bin_path};

#[derive(clap::Args)]
pub struct BackfillBench {
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    #[arg(long, default_value_t = 10_000)]
    contacts: usize,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Backfill pages per worker process at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

/// Peak resident set size of a process (VmHWM), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time a process has used (user + system), seconds.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which may hold spaces) end with `)`
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Registers a simulator tenant in the tenant store.
pub(crate) async fn register(
    store: &TenantStore,
    sim: &RunningSim,
    t: &TenantConfig,
    rps: f64,
    concurrency: u32,
    share: f64,
) -> anyhow::Result<()> {
    let mut tenant = Tenant::new(
        t.name.clone(),
        NylasSettings {
            grant_id: t.grant_id.clone(),
            api_key: Secret::new(t.nylas_api_key.clone()),
            api_uri: sim.nylas_api_uri(&t.nylas_region),
        },
        Crm::Zoho(ZohoConnection {
            region: Some(t.zoho.dc.clone()),
            accounts_url: Some(sim.zoho_accounts_url(&t.zoho.dc)),
            api_domain: None,
            client_id: t.zoho.client_id.clone(),
            client_secret: Secret::new(t.zoho.client_secret.clone()),
            refresh_token: Some(Secret::new(t.zoho.refresh_token.clone())),
        }),
    );
    tenant.daily_credits = t.zoho.daily_credits;
    tenant.budget_share = share;
    tenant.requests_per_second = rps;
    tenant.concurrency = Some(concurrency);
    store.add(tenant).await?;
    Ok(())
}

/// Starts `crmsync worker` processes.
pub(crate) fn start_workers(
    redis: &RedisServer,
    key: &str,
    n: usize,
    concurrency: usize,
    extra: &[&str],
) -> Vec<ChildProcess> {
    (0..n)
        .map(|i| {
            let mut cmd = Command::new(bin_path("crmsync"));
            cmd.arg("worker")
                .arg("--concurrency")
                .arg(concurrency.to_string())
                .args(extra)
                .env("CRMSYNC_REDIS_URL", redis.url())
                .env("CRMSYNC_SECRET_KEY", key)
                .env("CRMSYNC_LOG", "warn");
            ChildProcess::spawn(&format!("worker-{i}"), cmd)
        })
        .collect()
}

/// Starts a backfill run per tenant; returns (tenant, run id) pairs.
pub(crate) async fn start_runs(
    runs: &RunStore,
    queue: &JobQueue<BackfillPage>,
    tenants: &[TenantConfig],
) -> anyhow::Result<Vec<(String, String)>> {
    start_runs_with(runs, queue, tenants, false).await
}

/// Starts a backfill run per tenant, forced (every contact written even if unchanged) or not.
pub(crate) async fn start_runs_with(
    runs: &RunStore,
    queue: &JobQueue<BackfillPage>,
    tenants: &[TenantConfig],
    force: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut ids = Vec::new();
    for t in tenants {
        let StartOutcome::Started(run) = runs.start(&t.name, force).await? else {
            anyhow::bail!("a run was already active");
        };
        let first = BackfillPage {
            tenant: t.name.clone(),
            run_id: run.id.clone(),
            page: 0,
            cursor: None,
            force,
            mode: crmsync_producer::PageMode::Backfill,
        };
        queue
            .enqueue_with(
                &first,
                EnqueueOptions::default().idempotency_key(first.idempotency_key()),
            )
            .await?;
        ids.push((t.name.clone(), run.id));
    }
    Ok(ids)
}

/// Waits until every run has ended.
pub(crate) async fn wait_runs(
    runs: &RunStore,
    ids: &[(String, String)],
    limit: Duration,
) -> anyhow::Result<Vec<crmsync_producer::Run>> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for (t, id) in ids {
            all.push(runs.get(t, id).await?);
        }
        if all.iter().all(|r| !r.status.is_active()) {
            return Ok(all);
        }
        anyhow::ensure!(start.elapsed() < limit, "backfill did not finish in {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis's CPU seconds so far (user + system, every thread).
pub(crate) fn redis_cpu_secs(redis: &RedisServer) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut redis.conn())?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}

/// Redis's busiest commands (scripts and the commands they run), for `CRMSYNC_BENCH_PROFILE=1`.
fn print_command_stats(redis: &RedisServer) -> anyhow::Result<()> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut redis.conn())?;
    let mut rows: Vec<(f64, String)> = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let get = |k: &str| -> f64 {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            };
            Some((
                get("usec"),
                format!(
                    "{name:<20} calls {:>10} usec {:>12} per call {:>8.2}",
                    get("calls"),
                    get("usec"),
                    get("usec_per_call")
                ),
            ))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cpu: String = redis::cmd("INFO").arg("cpu").query(&mut redis.conn())?;
    eprintln!(
        "Redis CPU since start: {}",
        cpu.lines()
            .filter(|l| l.starts_with("used_cpu_"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("Redis command stats (scripts include the commands they run):");
    for (_, r) in rows.iter().take(25) {
        eprintln!("  {r}");
    }
    Ok(())
}

/// Time per script (by the first key's kind and SHA), from the slow log, for `CRMSYNC_BENCH_PROFILE=1`.
fn print_script_stats(redis: &RedisServer) -> anyhow::Result<()> {
    type Entry = (u64, u64, u64, Vec<Vec<u8>>, String, String);
    let log: Vec<Entry> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query(&mut redis.conn())?;
    let mut by: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for (_, _, micros, args, _, _) in log {
        let args: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.first().is_some_and(|a| a.eq_ignore_ascii_case("evalsha")) {
            continue;
        }
        let sha = args.get(1).map(|s| &s[..8.min(s.len())]).unwrap_or("?");
        // The key after the count, with the tenant and destination cut out: a hint of the script.
        let key = args
            .get(3)
            .map(|k| {
                let tail = k.rsplit('}').next().unwrap_or(k);
                match tail.strip_prefix(":d:") {
                    Some(rest) => rest.split(':').nth(1).unwrap_or("").to_string(),
                    None => tail.to_string(),
                }
            })
            .unwrap_or_default();
        let e = by.entry(format!("{sha} {key}")).or_default();
        e.0 += 1;
        e.1 += micros;
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    eprintln!("Scripts (slow log, all calls):");
    for (k, (n, us)) in rows.iter().take(20) {
        eprintln!(
            "  {k:<40} calls {n:>7} usec {us:>10} per call {:>8.1}",
            *us as f64 / *n as f64
        );
    }
    Ok(())
}

/// Redis's `used_memory`, bytes.
pub(crate) fn redis_used_memory(redis: &RedisServer) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query(&mut redis.conn())?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Every key matching `pattern`.
fn keys(redis: &RedisServer, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut c = redis.conn();
    let (mut out, mut cursor) = (Vec::new(), 0u64);
    loop {
        let (next, mut k): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)?;
        out.append(&mut k);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// The sum of a worker's `crmsync_flush_takes_total` by outcome, from its `/metrics`.
pub(crate) async fn flush_takes(ports: &[u16]) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for port in ports {
        let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
            continue;
        };
        let Ok(text) = resp.text().await else { continue };
        for line in text.lines().filter(|l| l.starts_with("crmsync_flush_takes_total{")) {
            let outcome = line.split('"').nth(1).unwrap_or("?").to_owned();
            let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *out.entry(outcome).or_default() += n;
        }
    }
    out
}

pub async fn run(b: BackfillBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let tenants: Vec<TenantConfig> = (0..b.tenants)
        .map(|i| {
            let mut t = TenantConfig::named(&format!("bench{i:02}"));
            t.contacts = b.contacts;
            t.zoho.limits = false;
            t.zoho.daily_credits = 10_000_000;
            t
        })
        .collect();
    let sim = RunningSim::start(
        SimConfig {
            seed: 11,
            tenants: tenants.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let key = SecretKey::generate();
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    for t in &tenants {
        register(&store, &sim, t, 100.0, 25, 1.0).await?;
    }
    let ports: Vec<u16> = (0..b.workers).map(|_| crmsync_testkit::free_port()).collect();
    let mut workers: Vec<ChildProcess> = ports
        .iter()
        .flat_map(|port| {
            let listen = format!("127.0.0.1:{port}");
            start_workers(&redis, &key, 1, b.concurrency, &["--metrics-listen", &listen])
        })
        .collect();
    let runs = RunStore::new(conn.clone(), "crmsync");
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let profile = std::env::var_os("CRMSYNC_BENCH_PROFILE").is_some();
    if profile {
        let mut c = redis.conn();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .query(&mut c)?;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-max-len")
            .arg(500_000)
            .query(&mut c)?;
        let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c)?;
    }
    let (mem_before, cpu_before) = (redis_used_memory(&redis)?, redis_cpu_secs(&redis)?);
    let workers_cpu = |ws: &[ChildProcess]| -> f64 { ws.iter().filter_map(|w| w.pid().and_then(cpu_secs)).sum() };
    let own_cpu = || cpu_secs(std::process::id()).unwrap_or(0.0);
    let (workers_before, own_before) = (workers_cpu(&workers), own_cpu());
    let start = Instant::now();
    let ids = start_runs(&runs, &queue, &tenants).await?;
    let finished = wait_runs(&runs, &ids, Duration::from_secs(900)).await?;
    let elapsed = start.elapsed();
    let cpu = redis_cpu_secs(&redis)? - cpu_before;
    let (workers_used, own_used) = (workers_cpu(&workers) - workers_before, own_cpu() - own_before);
    if profile {
        let mut triggers: std::collections::BTreeMap<String, u64> = Default::default();
        for k in keys(&redis, "{crmsync:writes}:idem:*")? {
            let kind = k
                .rsplit("flush:")
                .next()
                .and_then(|r| r.split(':').nth(1))
                .unwrap_or("?")
                .to_string();
            *triggers.entry(kind).or_default() += 1;
        }
        eprintln!("Flushes enqueued with a trigger key, by kind: {triggers:?}");
        print_command_stats(&redis)?;
        print_script_stats(&redis)?;
    }
    let takes = flush_takes(&ports).await;
    let rss: Vec<u64> = workers.iter().filter_map(|w| w.pid().and_then(peak_rss_kib)).collect();
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    // What stays: the sync state. The queues keep finished entries for an hour (retention,
    // not state): they go first, as their trimming would.
    let mut c = redis.conn();
    for q in ["backfill", "writes", "maintenance"] {
        for k in keys(&redis, &format!("{{crmsync:{q}}}*"))? {
            let _: () = redis::cmd("UNLINK").arg(k).query(&mut c)?;
        }
    }
    let state_keys = keys(&redis, "{crmsync:t:*}:d:*")?;
    let mut by_kind: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for k in &state_keys {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut c)?;
        let kind = match k.rsplit_once(":d:").and_then(|(_, rest)| rest.split(':').nth(1)) {
            Some("c") => "contact state",
            Some("r") => "record state",
            Some("m") => "shared-email members",
            _ => "other (limits, tokens)",
        };
        let e = by_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += usage.unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mem_after = redis_used_memory(&redis)?;
    let read: u64 = finished.iter().map(|r| r.contacts_read).sum();
    let written: u64 = finished.iter().map(|r| r.inserted + r.updated).sum();
    let (mut calls, mut credits) = (0u64, 0u64);
    for t in &tenants {
        let org = sim.inspect_org(&t.zoho.org_id).unwrap_or_default();
        calls += org["calls"]["upsert"].as_u64().unwrap_or(0);
        credits += org["credits_used_total"].as_u64().unwrap_or(0);
    }
    let completed = finished.iter().filter(|r| r.status == RunStatus::Completed).count();
    println!(
        "## Backfill: {} tenants × {} contacts, {} `crmsync worker` processes × {} pages, simulator limits off\n",
        b.tenants, b.contacts, b.workers, b.concurrency
    );
    println!(
        "| runs completed | contacts read | records written | time | contacts/s | Zoho calls / 1k contacts | credits / 1k contacts | credits / 1k records written (min 100) | worker peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {completed}/{} | {read} | {written} | {:.1} s | **{:.0}** | {:.1} | {:.1} | {:.1} | {} |\n",
        b.tenants,
        elapsed.as_secs_f64(),
        read as f64 / elapsed.as_secs_f64(),
        calls as f64 * 1000.0 / read.max(1) as f64,
        credits as f64 * 1000.0 / read.max(1) as f64,
        credits as f64 * 1000.0 / written.max(1) as f64,
        rss.iter()
            .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Bar: worker peak RSS under 64 MiB per process; credits per 1k records written = 100 is the minimum.\n");
    let per_k = |x: f64| x * 1000.0 / read.max(1) as f64;
    println!("### What the backfill costs Redis\n");
    println!(
        "| Redis CPU / 1k contacts | state / contact (used_memory delta) | flush takes: batch | idle / 1k contacts | blocked / 1k contacts |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| **{:.1} ms** | **{:.0} B** | {:.0} | {:.2} | {:.2} |\n",
        per_k(cpu * 1000.0),
        mem_after.saturating_sub(mem_before) as f64 / read.max(1) as f64,
        takes.get("batch").copied().unwrap_or(0.0),
        per_k(takes.get("idle").copied().unwrap_or(0.0)),
        per_k(takes.get("blocked").copied().unwrap_or(0.0)),
    );
    println!(
        "CPU per 1k contacts while the runs ran: Redis {:.1} ms, the workers {:.1} ms, this process (simulator, polling) {:.1} ms.\n",
        per_k(cpu * 1000.0),
        per_k(workers_used * 1000.0),
        per_k(own_used * 1000.0)
    );
    println!("State keys by kind (MEMORY USAGE, bytes per contact read):\n");
    println!("| kind | keys | bytes / contact |");
    println!("|---|---:|---:|");
    for (kind, (n, bytes)) in &by_kind {
        println!("| {kind} | {n} | {:.1} |", *bytes as f64 / read.max(1) as f64);
    }
    println!(
        "\nBars: state ≤ 150 B per contact, Redis CPU ≤ 30 ms per 1,000 contacts, no flush taking nothing while work waits (`blocked`: a full flush meeting records still being written or a short batch while pages are read; `idle`: nothing left to write).\n"
    );
    Ok(())
}
