//! The change-feed benchmark, in two parts.
//!
//! **Ingest**: `crmsync webhook` alone (no worker runs) under a bounded load on loopback:
//! signed `contact.updated` notifications, each verified, deduplicated and recorded. Two
//! loads: a closed loop of N requests in flight (its throughput), and an open loop paced
//! below it (latency measured from each request's scheduled start, so a stall counts for
//! every request it delays).
//!
//! **Burst**: after a backfill, the simulator changes 1,000 distinct contacts and delivers
//! their signed webhooks (with duplicates, reordering and forgeries) within a minute to
//! `crmsync webhook` and two `crmsync worker` processes. Side by side in the same run, the
//! per-event recipe (one single-record Zoho upsert per event) writes the same changes into a
//! second org. Reports Zoho calls and credits of both, and the time from each webhook to the
//! moment the CRM shows its change (the simulator's org, polled every 25 ms).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crmsync_domain::{CrmRecord, MapOutcome, map_contact};
use crmsync_producer::{BackfillPage, RunStore, WriteBuffer};
use crmsync_queue::JobQueue;
use crmsync_sim::webhooks::Notification;
use crmsync_sim::{Mix, MutationPlan, RunningSim, SimConfig, TenantConfig, WebhookConfig};
use crmsync_sink::CrmSink;
use crmsync_tenants::{Secret, SecretKey, TenantStore};
use crmsync_testkit::{ChildProcess, RedisServer, bin_path, free_port};
use serde_json::Value;

use crate::backfill::{register, start_runs, start_workers, wait_runs};

const SECRET: &str = "whsec-bench";

#[derive(clap::Args)]
pub struct WebhookBench {
    /// Notifications posted in each ingest run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight at once in the closed-loop ingest run.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests per second in the paced ingest run.
    #[arg(long, default_value_t = 1_000.0)]
    paced_rps: f64,
    /// Contacts changed in the burst (each once).
    #[arg(long, default_value_t = 1_000)]
    burst: usize,
    /// Burst deliveries started per second.
    #[arg(long, default_value_t = 50.0)]
    burst_rate: f64,
    /// The tenant's Zoho request rate in the burst (its configured requests/s).
    #[arg(long, default_value_t = 10.0)]
    zoho_rps: f64,
}

pub async fn run(b: WebhookBench) -> anyhow::Result<()> {
    ingest(&b).await?;
    burst(&b).await
}

/// Starts `crmsync webhook` on a free port; returns it with its notification URL once ready.
async fn receiver(redis: &RedisServer, key: &str) -> anyhow::Result<(ChildProcess, String)> {
    let port = free_port();
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.arg("webhook")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("CRMSYNC_REDIS_URL", redis.url())
        .env("CRMSYNC_SECRET_KEY", key)
        .env("CRMSYNC_LOG", "warn");
    let child = ChildProcess::spawn("webhook", cmd);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = Instant::now();
    while !matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success()) {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "crmsync webhook did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, format!("{base}/webhooks/nylas")))
}

async fn set_webhook_secret(store: &TenantStore, tenant: &str) -> anyhow::Result<()> {
    let mut t = store.get(tenant).await?;
    t.webhook_secret = Some(Secret::new(SECRET.to_owned()));
    store.update(t).await?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Signed notification bodies: `n` contact.updated events over the tenant's contacts.
fn bodies(t: &TenantConfig, n: usize, run: &str) -> Vec<(Vec<u8>, String)> {
    let book = crmsync_sim::address_book(t, 1);
    (0..n)
        .map(|i| {
            let contact = book[i % book.len()].clone();
            let note = Notification::updated(format!("{run}-{i}"), 1_700_000_000 + i as i64, &t.grant_id, contact);
            let body = note.json_body("app-bench", 1);
            let sig = crmsync_sim::webhooks::sign(SECRET.as_bytes(), &body);
            (body, sig)
        })
        .collect()
}

struct LoadResult {
    elapsed: f64,
    latencies_ms: Vec<f64>,
    failed: usize,
}

/// Posts every body; `pace` None: `concurrency` requests in flight back to back; Some(rps):
/// request i is due at i / rps, and its latency counts from then.
async fn load(url: &str, bodies: Vec<(Vec<u8>, String)>, concurrency: usize, pace: Option<f64>) -> LoadResult {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("http client");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, bodies, next, url) = (http.clone(), bodies.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, sig)) = bodies.get(i) else { break };
                let due = match pace {
                    Some(rps) => {
                        let due = start + Duration::from_secs_f64(i as f64 / rps);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-nylas-signature", sig)
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                lat.push(due.elapsed().as_secs_f64() * 1000.0);
                failed += usize::from(!ok);
            }
            (lat, failed)
        }));
    }
    let mut out = LoadResult {
        elapsed: 0.0,
        latencies_ms: Vec::new(),
        failed: 0,
    };
    for t in tasks {
        let (lat, failed) = t.await.expect("load task");
        out.latencies_ms.extend(lat);
        out.failed += failed;
    }
    out.elapsed = start.elapsed().as_secs_f64();
    out.latencies_ms.sort_by(f64::total_cmp);
    out
}

async fn ingest(b: &WebhookBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let key = SecretKey::generate();
    let t = TenantConfig::named("ingest");
    // Registered against a simulator that is never called: no worker runs in this part.
    let sim = RunningSim::start(
        SimConfig {
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    register(&store, &sim, &t, 10.0, 5, 1.0).await?;
    set_webhook_secret(&store, &t.name).await?;
    let (mut hook, url) = receiver(&redis, &key).await?;
    // Warm up connections and the receiver's tenant cache.
    load(&url, bodies(&t, 500, "warm"), b.concurrency, None).await;
    let closed = load(&url, bodies(&t, b.requests, "closed"), b.concurrency, None).await;
    let paced = load(&url, bodies(&t, b.requests, "paced"), 64, Some(b.paced_rps)).await;
    let rss = hook.pid().and_then(crate::backfill::peak_rss_kib);
    hook.terminate(Duration::from_secs(10));
    let recorded: u64 = redis::cmd("HGET")
        .arg("crmsync:webhook:stats")
        .arg("accepted")
        .query_async(&mut conn.clone())
        .await
        .unwrap_or(0);

    println!(
        "## Webhook ingest: `crmsync webhook` verifying HMAC-SHA256 signatures, deduplicating and recording each change in Redis; load generator on the same 2 cores\n"
    );
    println!("| load | requests | non-200 | time | requests/s | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        (format!("closed loop, {} in flight", b.concurrency), &closed),
        (format!("paced at {:.0}/s", b.paced_rps), &paced),
    ] {
        println!(
            "| {name} | {} | {} | {:.2} s | **{:.0}** | {:.2} ms | {:.2} ms | {:.1} ms |",
            r.latencies_ms.len(),
            r.failed,
            r.elapsed,
            r.latencies_ms.len() as f64 / r.elapsed,
            percentile(&r.latencies_ms, 0.50),
            percentile(&r.latencies_ms, 0.99),
            r.latencies_ms.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!(
        "\nRecorded {recorded} changes (warm-up included); receiver peak RSS {}.\n",
        rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    );
    Ok(())
}

/// A record's mapped fields, as the simulator's inspection shows them.
fn fingerprint(r: &Value) -> String {
    ["First_Name", "Last_Name", "Email", "Phone", "Account_Name", "Title"]
        .iter()
        .map(|f| r[*f].as_str().unwrap_or("\u{0}").to_owned())
        .collect::<Vec<_>>()
        .join("\t")
}

fn record_fingerprint(r: &CrmRecord) -> String {
    [
        r.first_name.as_deref(),
        Some(r.last_name.as_str()),
        Some(r.email.as_str()),
        r.phone.as_deref(),
        r.company.as_deref(),
        r.title.as_deref(),
    ]
    .iter()
    .map(|v| v.unwrap_or("\u{0}").to_owned())
    .collect::<Vec<_>>()
    .join("\t")
}

fn org_totals(sim: &RunningSim, org: &str) -> (u64, u64) {
    let o = sim.inspect_org(org).unwrap_or_default();
    let calls = o["calls"]["by_status"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    (calls, o["credits_used_total"].as_u64().unwrap_or(0))
}

async fn burst(b: &WebhookBench) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let key = SecretKey::generate();
    let port = free_port();
    let mut t = TenantConfig::named("burst");
    t.contacts = 20_000;
    t.zoho.daily_credits = 1_000_000;
    let mut per_event = TenantConfig::named("perevent");
    per_event.contacts = 0;
    per_event.zoho.daily_credits = 1_000_000;
    let sim = RunningSim::start(
        SimConfig {
            seed: 31,
            tenants: vec![t.clone(), per_event.clone()],
            webhooks: Some(WebhookConfig::new(
                format!("http://127.0.0.1:{port}/webhooks/nylas"),
                SECRET,
            )),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(10))?;
    let store = TenantStore::new(conn.clone(), "crmsync", Some(SecretKey::from_base64(&key)?));
    register(&store, &sim, &t, b.zoho_rps, 5, 1.0).await?;
    register(&store, &sim, &per_event, b.zoho_rps, 5, 1.0).await?;
    set_webhook_secret(&store, &t.name).await?;
    let mut workers = start_workers(&redis, &key, 2, 8, &[]);
    let mut hook = {
        let mut cmd = Command::new(bin_path("crmsync"));
        cmd.arg("webhook")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("CRMSYNC_REDIS_URL", redis.url())
            .env("CRMSYNC_SECRET_KEY", &key)
            .env("CRMSYNC_LOG", "warn");
        ChildProcess::spawn("webhook", cmd)
    };

    // The backfill that the change feed keeps current.
    let runs = RunStore::new(conn.clone(), "crmsync");
    let queue: JobQueue<BackfillPage> = JobQueue::new(conn.clone(), crmsync_producer::backfill_queue("crmsync"));
    let ids = start_runs(&runs, &queue, std::slice::from_ref(&t)).await?;
    wait_runs(&runs, &ids, Duration::from_secs(300)).await?;
    // Events are stamped in whole seconds: keep them apart from the backfill's reads.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let sim = Arc::new(sim);
    let tenant = store.get(&t.name).await?;
    let buffer = WriteBuffer::new(
        conn.clone(),
        "crmsync",
        &t.name,
        &tenant.dest,
        crmsync_sink::zoho::PROFILE.match_key,
        crmsync_sink::zoho::PROFILE.max_batch,
    );
    let (calls_before, credits_before) = org_totals(&sim, &t.zoho.org_id);
    let quiet = burst_phase(&sim, &t, &buffer, &conn, b, 7, None).await?;
    let (calls_after, credits_after) = org_totals(&sim, &t.zoho.org_id);
    // The same again while a forced backfill of the tenant rewrites every record.
    let during = burst_phase(&sim, &t, &buffer, &conn, b, 8, Some((&runs, &queue))).await?;
    let records = quiet.records.clone();

    // The per-event recipe, side by side: one single-record upsert per event, other org.
    let baseline_org = crmsync_sink::zoho::ZohoOrg::of("crmsync", &store.get(&per_event.name).await?)?;
    let http = crmsync_sink::zoho::http_client(Duration::from_secs(30))?;
    let zoho = crmsync_sink::zoho::ZohoSink::new(crmsync_sink::zoho::ZohoHttp::new(
        http.clone(),
        crmsync_sink::zoho::TokenBroker::new(conn.clone(), http, Arc::new(SecretKey::from_base64(&key)?)),
        baseline_org,
    ));
    for (i, r) in records.iter().enumerate() {
        let one = [crmsync_sink::Write::Upsert {
            contact_id: format!("c{i}"),
            record: r.clone(),
            rid: None,
        }];
        zoho.write(&one, crmsync_sink::Priority::Change).await?;
    }
    let (base_calls, base_credits) = org_totals(&sim, &per_event.zoho.org_id);
    for w in &mut workers {
        w.terminate(Duration::from_secs(30));
    }
    hook.terminate(Duration::from_secs(10));

    let (calls, credits) = (calls_after - calls_before, credits_after - credits_before);
    println!(
        "## Change-feed burst: {} updates to distinct contacts delivered in {:.1} s ({} duplicate and {} forged deliveries, {} held back), 2 workers, Zoho at {} requests/s\n",
        quiet.report.mutations,
        quiet.delivered_in.as_secs_f64(),
        quiet.report.duplicates,
        quiet.report.forged,
        quiet.report.reordered,
        b.zoho_rps
    );
    println!("| recipe | Zoho calls | Zoho credits | credits vs per-event |");
    println!("|---|---:|---:|---:|");
    println!("| one upsert per event (measured on a second org) | {base_calls} | {base_credits} | 1.00 |");
    println!(
        "| crmsync: coalesced, 100 per call | {calls} | {credits} | **{:.3}** |\n",
        credits as f64 / base_credits.max(1) as f64
    );
    println!(
        "| burst | changes | feed credits (its share of calls) | credits / change | webhook → CRM: timed | p50 | p99 | max | unchanged | email owned by another contact | not matching the book |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let during_name = format!(
        "during a forced backfill of {} contacts (it ran {:.0} s of the burst's {:.0} s)",
        t.contacts,
        during.backfill_ran.unwrap_or_default().as_secs_f64(),
        during.delivered_in.as_secs_f64()
    );
    for (name, p) in [("alone", &quiet), (during_name.as_str(), &during)] {
        let l = &p.latencies;
        println!(
            "| {name} | {} | {:.1} | **{:.3}** | {} | {:.2} s | **{:.2} s** | {:.2} s | {} | {} | {} |",
            p.changes,
            p.feed_credits,
            p.feed_credits / p.changes.max(1) as f64,
            l.len(),
            percentile(l, 0.50),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(f64::NAN),
            p.unchanged,
            p.shared,
            p.mismatched
        );
    }
    println!();
    println!(
        "Bars: crmsync's credits ≤ 1/5 of the per-event recipe's; ≤ 0.12 credits per change with or without a backfill; p99 webhook → CRM ≤ 5 s within budget.\n"
    );
    Ok(())
}

/// What one burst of changes cost and how fast it reached the CRM.
struct Phase {
    report: crmsync_sim::MutationReport,
    delivered_in: Duration,
    /// How long the concurrent backfill ran from the burst's start, if one ran.
    backfill_ran: Option<Duration>,
    changes: u64,
    /// The change feed's credits (its share of the calls it rode in), in credits.
    feed_credits: f64,
    latencies: Vec<f64>,
    unchanged: usize,
    shared: usize,
    mismatched: usize,
    records: Vec<CrmRecord>,
}

/// One burst of `b.burst` updates to distinct contacts (seeded by `seed`), measured from the
/// first delivery to the CRM showing each change; with `backfill`, a forced backfill of the
/// tenant runs meanwhile.
async fn burst_phase(
    sim: &Arc<RunningSim>,
    t: &TenantConfig,
    buffer: &WriteBuffer,
    conn: &crmsync_queue::RedisConn,
    b: &WebhookBench,
    seed: u64,
    backfill: Option<(&RunStore, &JobQueue<BackfillPage>)>,
) -> anyhow::Result<Phase> {
    let stats_before = buffer.feed_stats().await?;
    let milli = |s: &std::collections::BTreeMap<String, u64>| {
        s.get("credits_milli").copied().unwrap_or(0) + 1000 * s.get("credits").copied().unwrap_or(0)
            - 1000 * ((s.get("credits_milli").copied().unwrap_or(0) + 500) / 1000)
    };
    let changes_of = |s: &std::collections::BTreeMap<String, u64>| s.get("changes").copied().unwrap_or(0);
    // Watch the CRM: when each record last changed.
    let changed: Arc<std::sync::Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (sim, changed, stop, org) = (sim.clone(), changed.clone(), stop.clone(), t.zoho.org_id.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let snapshot = sim.inspect_org(&org).unwrap_or_default();
                {
                    let mut changed = changed.lock().expect("watcher map");
                    for r in snapshot["records"].as_array().into_iter().flatten() {
                        let email = r["Email"].as_str().unwrap_or_default().to_lowercase();
                        let fp = fingerprint(r);
                        match changed.get(&email) {
                            Some((old, _)) if *old == fp => {}
                            _ => {
                                changed.insert(email, (fp, now));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let run_ids = match backfill {
        Some((runs, queue)) => {
            Some(crate::backfill::start_runs_with(runs, queue, std::slice::from_ref(t), true).await?)
        }
        None => None,
    };

    let plan = MutationPlan {
        count: b.burst,
        seed,
        distinct: true,
        mix: Mix {
            create: 0.0,
            update: 1.0,
            email_change: 0.0,
            delete: 0.0,
        },
        rate_per_sec: Some(b.burst_rate),
        concurrency: 16,
        log: true,
        ..MutationPlan::default()
    };
    let t0 = Instant::now();
    let report = sim.mutate(&t.grant_id, plan).await?;
    let delivered_in = t0.elapsed();
    let mut backfill_ran = None;
    if let (Some(ids), Some((runs, _))) = (&run_ids, backfill) {
        wait_runs(runs, ids, Duration::from_secs(600)).await?;
        backfill_ran = Some(t0.elapsed());
    }

    // Settled: nothing waits in the buffer and no writes job is left.
    let writes: JobQueue<Value> = JobQueue::new(conn.clone(), crmsync_producer::writes_queue("crmsync"));
    let settle_start = Instant::now();
    loop {
        let w = buffer.waiting().await?;
        let s = writes.stats().await?;
        if w.entries == 0 && w.refresh == 0 && s.pending == 0 && s.in_flight == 0 && s.delayed == 0 {
            break;
        }
        anyhow::ensure!(
            settle_start.elapsed() < Duration::from_secs(300),
            "the burst was not written in 5 minutes (waiting {w:?}, writes queue {s:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await?;
    let stats_after = buffer.feed_stats().await?;

    // Webhook → CRM: from a notification's first send to the CRM showing its contact's state.
    let book: Vec<Value> = reqwest::get(format!("{}/_sim/nylas/{}/contacts", sim.base_url(), t.grant_id))
        .await?
        .json()
        .await?;
    // Each mapped contact's record, and each email's owner (the smallest contact id).
    let mut mapped: HashMap<String, CrmRecord> = HashMap::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for c in &book {
        let Ok(parsed) = crmsync_nylas::parse_contact(c) else {
            continue;
        };
        if let MapOutcome::Mapped { record, .. } = map_contact(&parsed, &crmsync_sink::zoho::LIMITS) {
            let o = owner.entry(record.email.clone()).or_insert_with(|| parsed.id.clone());
            if parsed.id < *o {
                *o = parsed.id.clone();
            }
            mapped.insert(parsed.id.clone(), record);
        }
    }
    let mut first_sent: HashMap<&str, f64> = HashMap::new();
    for d in report.log.iter().filter(|d| d.kind != "forged") {
        let e = first_sent.entry(d.contact_id.as_str()).or_insert(d.sent_ms);
        *e = e.min(d.sent_ms);
    }
    let changed = changed.lock().expect("watcher map").clone();
    let (mut latencies, mut unchanged, mut shared, mut mismatched) = (Vec::new(), 0usize, 0usize, 0usize);
    let mut records = Vec::new();
    for m in &report.applied {
        let Some(record) = mapped.get(&m.contact_id) else {
            continue;
        };
        records.push(record.clone());
        if owner.get(&record.email) != Some(&m.contact_id) {
            shared += 1; // another contact owns the email: its fields stay
            continue;
        }
        let sent = t0 + Duration::from_secs_f64(first_sent.get(m.contact_id.as_str()).copied().unwrap_or(0.0) / 1000.0);
        match changed.get(&record.email.to_lowercase()) {
            Some((fp, at)) if *fp == record_fingerprint(record) => {
                if *at < sent {
                    unchanged += 1; // its mapped fields did not change: nothing to write
                } else {
                    latencies.push(at.duration_since(sent).as_secs_f64());
                }
            }
            _ => mismatched += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        report,
        delivered_in,
        backfill_ran,
        changes: changes_of(&stats_after) - changes_of(&stats_before),
        feed_credits: (milli(&stats_after) as f64 - milli(&stats_before) as f64) / 1000.0,
        latencies,
        unchanged,
        shared,
        mismatched,
        records,
    })
}
