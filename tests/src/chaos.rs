//! The chaos run: a fleet of `crmsync worker` processes backfills many tenants against a
//! simulator that fails a share of its calls (429s, 5xx, timeouts), while a random worker is
//! killed with SIGKILL and restarted every few seconds and Redis (AOF on) is killed and
//! restarted once mid-run. One tenant's credit budget is too small for its backfill, on a
//! compressed Zoho day, so it pauses and resumes during the chaos.
//!
//! At the end it compares every CRM with what its address book must produce. `make chaos`
//! runs the full size (4 workers, 10 tenants, 20,000 contacts) through `crmsync-chaos`; the
//! e2e tests run a small one. Both fail on any [`ChaosReport::violations`].

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use crmsync_producer::{RunStatus, RunStore};
use crmsync_queue::{DeadLetter, JobQueue};
use crmsync_sim::{FaultConfig, RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{ChildProcess, RedisOptions, RedisServer, bin_path};
use serde_json::Value;

use crate::expected_crm;

/// The size and the violence of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub workers: usize,
    pub tenants: usize,
    /// Contacts per tenant.
    pub contacts: usize,
    /// Share of simulator calls that fail (split evenly between 429, 5xx and timeouts on Zoho;
    /// 429 and 5xx on Nylas).
    pub fault_rate: f64,
    /// A random worker is killed (SIGKILL) and restarted this often.
    pub kill_every: Duration,
    /// Redis is killed and restarted once, this long into the run.
    pub redis_restart_after: Duration,
    /// Simulated seconds per real second (the budget-bound tenant's credits come back as the
    /// compressed day moves on).
    pub time_scale: f64,
    /// How long the whole run may take.
    pub deadline: Duration,
    pub seed: u64,
}

impl ChaosConfig {
    /// `make chaos`: 4 workers, 10 tenants, 20,000 contacts, 10% faults, a kill every 3 s.
    pub fn full() -> Self {
        ChaosConfig {
            workers: 4,
            tenants: 10,
            contacts: 2_000,
            fault_rate: 0.10,
            kill_every: Duration::from_secs(3),
            redis_restart_after: Duration::from_secs(10),
            time_scale: 1_440.0,
            deadline: Duration::from_secs(900),
            seed: 77,
        }
    }

    /// The version inside `make test`.
    pub fn small() -> Self {
        ChaosConfig {
            workers: 3,
            tenants: 4,
            contacts: 600,
            // Few calls in a small run: a higher rate makes sure faults land.
            fault_rate: 0.30,
            kill_every: Duration::from_secs(2),
            redis_restart_after: Duration::from_secs(4),
            time_scale: 5_760.0,
            deadline: Duration::from_secs(240),
            seed: 78,
        }
    }
}

/// What happened to one tenant.
#[derive(Debug, Clone)]
pub struct TenantOutcome {
    pub name: String,
    pub run_status: String,
    /// Records the address book must produce (one per usable email).
    pub expected: usize,
    pub records: usize,
    /// Extra records with an email another record already has.
    pub duplicates: usize,
    /// Expected records absent from the CRM.
    pub missing: usize,
    /// Records present with other fields than expected.
    pub mismatched: usize,
    /// Records no contact should have produced.
    pub unexpected: usize,
    pub credits: u64,
    /// Most credits spent in any rolling 24 h window, as the simulator charged them.
    pub max_window: u64,
    /// share × daily credits.
    pub allowed: u64,
    /// Records Zoho refused (kept, with the reason, in the tenant's rejected stream).
    pub rejected: u64,
    /// Zoho API calls the simulator answered, and how many of them with 429 / 5xx.
    pub zoho_calls: u64,
    pub zoho_429: u64,
    pub zoho_5xx: u64,
}

/// The figures of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub config: ChaosConfig,
    pub elapsed: Duration,
    pub worker_kills: u32,
    pub redis_restarts: u32,
    pub faults_injected: u64,
    pub nylas_faults_injected: u64,
    pub tenants: Vec<TenantOutcome>,
    /// Dead letters of both queues.
    pub dead_letters: Vec<DeadLetter>,
}

impl ChaosReport {
    /// Everything that must not happen: a run not completed, a duplicate, a lost, wrong or
    /// stray record, a budget overshoot, a dead letter.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for t in &self.tenants {
            if t.run_status != "completed" {
                v.push(format!("{}: run {}", t.name, t.run_status));
            }
            for (what, n) in [
                ("duplicate", t.duplicates),
                ("missing", t.missing),
                ("mismatched", t.mismatched),
                ("unexpected", t.unexpected),
            ] {
                if n > 0 {
                    v.push(format!("{}: {n} {what} records", t.name));
                }
            }
            if t.max_window > t.allowed {
                v.push(format!(
                    "{}: {} credits in one window, {} allowed",
                    t.name, t.max_window, t.allowed
                ));
            }
        }
        // Every record of the simulator's books is valid or skipped before Zoho sees it, so
        // no job has a reason to die: any dead letter is a defect.
        for d in &self.dead_letters {
            v.push(format!("dead letter {}: {}", d.dead_id, d.reason));
        }
        v
    }

    /// The figures as a Markdown table.
    pub fn render(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "## Chaos: {} workers, {} tenants × {} contacts, {:.0}% simulator faults, a worker SIGKILLed every {:.0} s ({} kills), Redis killed and restarted {} time(s) (AOF), {:.1} s\n\n",
            c.workers,
            c.tenants,
            c.contacts,
            c.fault_rate * 100.0,
            c.kill_every.as_secs_f64(),
            self.worker_kills,
            self.redis_restarts,
            self.elapsed.as_secs_f64()
        );
        out.push_str("| tenant | run | expected records | CRM records | duplicates | missing | mismatched | unexpected | rejected by Zoho | Zoho calls (429 / 5xx) | credits | max in a window | allowed |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for t in &self.tenants {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({} / {}) | {} | {} | {} |\n",
                t.name,
                t.run_status,
                t.expected,
                t.records,
                t.duplicates,
                t.missing,
                t.mismatched,
                t.unexpected,
                t.rejected,
                t.zoho_calls,
                t.zoho_429,
                t.zoho_5xx,
                t.credits,
                t.max_window,
                t.allowed
            ));
        }
        let sum = |f: fn(&TenantOutcome) -> usize| self.tenants.iter().map(f).sum::<usize>();
        out.push_str(&format!(
            "\nTotals: {} expected, {} in the CRMs, {} duplicates, {} lost, {} wrong; faults injected by the simulator: {} on Zoho, {} on Nylas; {} dead letters.\n",
            sum(|t| t.expected),
            sum(|t| t.records),
            sum(|t| t.duplicates),
            sum(|t| t.missing),
            sum(|t| t.mismatched),
            self.faults_injected,
            self.nylas_faults_injected,
            self.dead_letters.len()
        ));
        let violations = self.violations();
        if violations.is_empty() {
            out.push_str("No violation: every CRM equals its address book, no budget was overshot.\n");
        } else {
            out.push_str(&format!("{} violations:\n", violations.len()));
            for v in violations {
                out.push_str(&format!("- {v}\n"));
            }
        }
        out
    }
}

fn crmsync(redis: &RedisServer, key: &str) -> Command {
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.env("CRMSYNC_REDIS_URL", redis.url())
        .env("CRMSYNC_SECRET_KEY", key)
        .env("CRMSYNC_LOG", "warn")
        .env_remove("CRMSYNC_NAMESPACE");
    cmd
}

fn run_cli(redis: &RedisServer, key: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = crmsync(redis, key).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "crmsync {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn worker(redis: &RedisServer, key: &str, i: usize, time_scale: f64) -> ChildProcess {
    let mut cmd = crmsync(redis, key);
    cmd.args([
        "worker",
        "--concurrency",
        "4",
        "--page-size",
        "100",
        "--visibility-timeout-secs",
        "3",
    ])
    .env("CRMSYNC_TIME_SCALE", time_scale.to_string());
    ChildProcess::spawn(&format!("worker-{i}"), cmd)
}

/// Runs the chaos and reports what it left.
pub async fn run(cfg: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let mut redis = RedisServer::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    });
    let key = crmsync_tenants::SecretKey::generate();
    // Tenant 0's budget covers about half of its backfill in a window.
    let tenants: Vec<(TenantConfig, f64)> = (0..cfg.tenants)
        .map(|i| {
            let mut t = TenantConfig::named(&format!("chaos{i:02}"));
            t.contacts = cfg.contacts;
            if i == 0 {
                t.zoho.daily_credits = (cfg.contacts as u64 / 10).max(20);
                (t, 0.5)
            } else {
                t.zoho.daily_credits = 10_000_000;
                (t, 0.8)
            }
        })
        .collect();
    let r = cfg.fault_rate;
    let sim = RunningSim::start(
        SimConfig {
            seed: cfg.seed,
            time_scale: cfg.time_scale,
            tenants: tenants.iter().map(|(t, _)| t.clone()).collect(),
            faults: FaultConfig {
                zoho_429_rate: r / 3.0,
                zoho_5xx_rate: r / 3.0,
                zoho_timeout_rate: r / 3.0,
                nylas_429_rate: r / 2.0,
                nylas_5xx_rate: r / 2.0,
                timeout_ms: 1_000,
                ..FaultConfig::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    for (t, share) in &tenants {
        let mut args = crate::sim_tenant_add_args(&sim, t);
        for extra in [
            "--budget-share",
            &share.to_string(),
            "--rps",
            "50",
            "--concurrency",
            "20",
        ] {
            args.push(extra.to_owned());
        }
        run_cli(&redis, &key, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let mut workers: Vec<ChildProcess> = (0..cfg.workers)
        .map(|i| worker(&redis, &key, i, cfg.time_scale))
        .collect();
    let names: Vec<&str> = tenants.iter().map(|(t, _)| t.name.as_str()).collect();
    let mut args = vec!["backfill"];
    args.extend(&names);
    run_cli(&redis, &key, &args)?;

    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(2))?;
    let runs = RunStore::new(conn.clone(), "crmsync");
    let (mut kills, mut restarts) = (0u32, 0u32);
    let mut next_kill = Instant::now() + cfg.kill_every;
    let chaos_started = Instant::now();
    let mut rng_state = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let finished: Vec<crmsync_producer::Run> = loop {
        if restarts == 0 && chaos_started.elapsed() >= cfg.redis_restart_after {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            redis.start_again();
            restarts += 1;
        }
        if Instant::now() >= next_kill {
            // xorshift: a reproducible choice of victim without another dependency
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let i = (rng_state % workers.len() as u64) as usize;
            workers[i].kill();
            workers[i] = worker(&redis, &key, i, cfg.time_scale);
            kills += 1;
            next_kill = Instant::now() + cfg.kill_every;
        }
        let mut all = Vec::new();
        for (t, _) in &tenants {
            match runs.list(&t.name, 1).await {
                Ok(list) => all.extend(list.into_iter().next()),
                Err(_) => break, // Redis is restarting
            }
        }
        if all.len() == tenants.len() && all.iter().all(|r| !r.status.is_active()) {
            break all;
        }
        if started.elapsed() > cfg.deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }

    let status: HashMap<String, RunStatus> = finished.iter().map(|r| (r.tenant.clone(), r.status)).collect();
    let mut outcomes = Vec::new();
    let (mut faults, mut nylas_faults) = (0, 0);
    for (t, share) in &tenants {
        let (expected, _) = expected_crm(&crmsync_sim::address_book(t, cfg.seed));
        let org = sim.inspect_org(&t.zoho.org_id).unwrap_or_default();
        faults += org["calls"]["faults_injected"].as_u64().unwrap_or(0);
        let grant = sim.inspect_grant(&t.grant_id).unwrap_or_default();
        nylas_faults += grant["calls"]["faults_injected"].as_u64().unwrap_or(0);
        let by_status: BTreeMap<String, u64> = org["calls"]["by_status"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default();
        let records = org["records"].as_array().cloned().unwrap_or_default();
        let mut by_email: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for r in &records {
            by_email
                .entry(r["Email"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(r);
        }
        let duplicates = by_email.values().map(|v| v.len() - 1).sum();
        let missing = expected.keys().filter(|e| !by_email.contains_key(*e)).count();
        let unexpected = by_email.keys().filter(|e| !expected.contains_key(*e)).count();
        let mismatched = expected
            .iter()
            .filter(|(e, want)| {
                by_email.get(*e).is_some_and(|have| {
                    ["First_Name", "Last_Name", "Phone", "Account_Name", "Title"]
                        .iter()
                        .any(|f| have[0].get(*f).unwrap_or(&Value::Null) != &want[*f])
                })
            })
            .count();
        outcomes.push(TenantOutcome {
            name: t.name.clone(),
            run_status: status
                .get(&t.name)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "unknown".into()),
            expected: expected.len(),
            records: records.len(),
            duplicates,
            missing,
            mismatched,
            unexpected,
            credits: org["credits_used_total"].as_u64().unwrap_or(0),
            max_window: org["max_credits_used_window"].as_u64().unwrap_or(0),
            allowed: (t.zoho.daily_credits as f64 * share).floor() as u64,
            rejected: crate::rejections(&conn, "crmsync", &t.name, 100_000).await.len() as u64,
            zoho_calls: by_status.values().sum(),
            zoho_429: by_status.get("429").copied().unwrap_or(0),
            zoho_5xx: by_status
                .iter()
                .filter(|(k, _)| k.starts_with('5'))
                .map(|(_, n)| n)
                .sum(),
        });
    }
    let mut dead_letters = Vec::new();
    for q in [
        crmsync_producer::backfill_queue("crmsync"),
        crmsync_producer::writes_queue("crmsync"),
    ] {
        let q: JobQueue<Value> = JobQueue::new(conn.clone(), q);
        dead_letters.extend(q.dead_letters(1_000).await?);
    }
    Ok(ChaosReport {
        config: cfg.clone(),
        elapsed: started.elapsed(),
        worker_kills: kills,
        redis_restarts: restarts,
        faults_injected: faults,
        nylas_faults_injected: nylas_faults,
        tenants: outcomes,
        dead_letters,
    })
}
