//! `make demo`: crmsync's main job end to end, on a machine with nothing running.
//!
//! Starts its own `redis-server` and the simulator (`crmsync-sim`: 3 Zoho tenants across the
//! US and EU data centers and a Salesforce tenant, 2,500–4,000 messy contacts each), registers
//! the tenants with `crmsync tenant add`, starts 2 `crmsync worker` processes, runs `crmsync
//! backfill ... --follow` (live progress, then each run's summary), checks the simulated CRMs
//! against the runs' counts (Zoho records; Salesforce Contacts vs Leads, API requests and
//! rejected records), then keeps one CRM current from the change feed: the simulator changes
//! acme's address book 500 times and delivers signed webhooks (duplicated, out of order, some
//! forged) to `crmsync webhook`; the demo waits until the CRM equals the address book again and
//! shows what became of the changes. It ends with what to try next.
//!
//! `crmsync-demo` stops everything it started; `crmsync-demo --keep` (`make demo KEEP=1`)
//! leaves Redis, the simulator, the workers, the webhook receiver and a dashboard running, and
//! prints how to reach them; `crmsync-demo stop` (`make demo-stop`) stops them. Its files are
//! in `target/demo/`: `logs/`, `pids`, `state.env` (the shell settings), `secret-key`.

mod fleet;
mod sim;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crmsync_producer::{Run, RunStore};
use crmsync_redis::num::thousands;
use crmsync_sim::{MutationPlan, SalesforceConfig, SimConfig, TenantConfig, WebhookConfig};
use crmsync_testkit::free_port;

use crate::fleet::{DemoDir, Fleet};
use crate::sim::Sim;

const WEBHOOK_SECRET: &str = "whsec-demo";
const NAMESPACE: &str = "crmsync";
const WORKERS: usize = 2;

const USAGE: &str = "\
crmsync-demo: crmsync end to end on the simulator (`make demo`)

Usage:
  crmsync-demo          run the demo, then stop everything it started
  crmsync-demo --keep   run the demo and leave Redis, the simulator, the workers, the webhook
                        receiver and a dashboard running (`make demo KEEP=1`)
  crmsync-demo stop     stop what `--keep` left running (`make demo-stop`)

Files: target/demo/ (logs/, pids, state.env, secret-key).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => false,
        ["--keep"] => true,
        ["stop"] | ["--stop"] => return stop(),
        ["-h"] | ["--help"] | ["help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(keep)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `make demo-stop`.
fn stop() -> ExitCode {
    let dir = match DemoDir::locate() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let n = fleet::stop_kept(&dir, Duration::from_secs(10));
    if n == 0 {
        println!("Nothing of the demo was running.");
    } else {
        println!(
            "Stopped the demo's {n} processes (logs stay in {}).",
            dir.shown(&dir.logs())
        );
    }
    ExitCode::SUCCESS
}

fn tenant(name: &str, dc: &str, contacts: usize) -> TenantConfig {
    let mut t = TenantConfig::named(name);
    t.nylas_region = dc.into();
    t.zoho.dc = dc.into();
    t.contacts = contacts;
    t
}

/// The binaries the demo runs, next to its own.
struct Bins {
    crmsync: PathBuf,
    sim: PathBuf,
}

impl Bins {
    fn find() -> anyhow::Result<Bins> {
        let exe = std::env::current_exe().context("cannot find the demo's own binary")?;
        let dir = exe.parent().context("the demo binary has no directory")?;
        let bins = Bins {
            crmsync: dir.join("crmsync"),
            sim: dir.join("crmsync-sim"),
        };
        for b in [&bins.crmsync, &bins.sim] {
            anyhow::ensure!(
                b.exists(),
                "{} is not built; run `make demo` (it builds crmsync, crmsync-sim and crmsync-demo)",
                b.display()
            );
        }
        Ok(bins)
    }
}

/// How every crmsync process of the demo reaches the fleet: no setting of the caller's shell
/// (an earlier demo's `state.env`, say) leaks in.
#[derive(Debug, Clone)]
struct Conn {
    crmsync: PathBuf,
    redis_url: String,
    key_file: PathBuf,
}

impl Conn {
    fn crmsync(&self) -> Command {
        let mut cmd = Command::new(&self.crmsync);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CRMSYNC_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CRMSYNC_REDIS_URL", &self.redis_url)
            .env("CRMSYNC_NAMESPACE", NAMESPACE)
            .env("CRMSYNC_SECRET_KEY_FILE", &self.key_file);
        cmd
    }

    fn crmsync_keygen(&self) -> Command {
        let mut cmd = self.crmsync();
        cmd.arg("keygen");
        cmd
    }

    fn redis(&self) -> anyhow::Result<crmsync_redis::RedisConn> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        Ok(crmsync_redis::connect(client, Duration::from_secs(5))?)
    }
}

/// Runs a crmsync command to completion; its stdout, or an error with its stderr.
async fn output(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .with_context(|| format!("running crmsync {what}"))?;
    anyhow::ensure!(
        out.status.success(),
        "crmsync {what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops the fleet on Ctrl-C or SIGTERM (its processes are in their own process groups, so
/// the terminal's signal does not reach them).
fn stop_on_signal(fleet: &Fleet) {
    let fleet = fleet.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("\n• interrupted: stopping everything the demo started");
        fleet.stop_all(Duration::from_secs(5));
        std::process::exit(130);
    });
}

/// Starts `redis-server` on a free port, its data and log in `target/demo`.
async fn start_redis(fleet: &Fleet, dir: &DemoDir) -> anyhow::Result<(u16, String)> {
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_port();
        let name = if attempt == 0 {
            "redis".to_owned()
        } else {
            format!("redis-{attempt}")
        };
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.redis_data())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        fleet.spawn(&name, cmd).context(
            "redis-server is not installed or not on PATH; `make demo` installs Debian's redis-server package",
        )?;
        let url = format!("redis://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && fleet.running(&name) {
            if ping(&url) {
                return Ok((port, url));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last = std::fs::read_to_string(fleet.log(&name)).unwrap_or_default();
        fleet.stop_one(&name, Duration::from_secs(2));
    }
    anyhow::bail!(
        "redis-server did not start: {}",
        last.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    )
}

fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

async fn wait_for_port(fleet: &Fleet, name: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(fleet.running(name), "{name} exited: see {}", fleet.log(name).display());
        anyhow::ensure!(
            Instant::now() < deadline,
            "{name} did not listen on port {port} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn demo(keep: bool) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = Instant::now();
    let bins = Bins::find()?;
    // A kept demo lives in target/demo (one at a time: a new one replaces it); any other in a
    // private directory, so demos that keep nothing can run side by side.
    let dir = if keep {
        let dir = DemoDir::locate()?;
        if std::fs::metadata(dir.pids()).is_ok() {
            let n = fleet::stop_kept(&dir, Duration::from_secs(10));
            if n > 0 {
                println!("• stopped the demo an earlier `make demo KEEP=1` left running ({n} processes)");
            }
        }
        dir
    } else {
        DemoDir::temp()
    };
    dir.prepare()?;
    let fleet = Fleet::new(&dir);
    stop_on_signal(&fleet);
    let result = run(&fleet, &dir, &bins, keep, started).await;
    match &result {
        Err(_) => {
            // Even with KEEP: a demo that failed half-way is nothing to explore.
            eprintln!(
                "\n• the demo failed: stopping everything it started (logs in {})",
                dir.shown(&dir.logs())
            );
            fleet.stop_all(Duration::from_secs(5));
        }
        Ok(()) if !keep => dir.remove(),
        Ok(()) => {}
    }
    result
}

async fn run(fleet: &Fleet, dir: &DemoDir, bins: &Bins, keep: bool, started: Instant) -> anyhow::Result<()> {
    let (redis_port, redis_url) = start_redis(fleet, dir).await?;
    if keep {
        println!(
            "• redis-server started on 127.0.0.1:{redis_port} (its own; its files and every log in {})",
            dir.shown(dir.path())
        );
    } else {
        println!("• redis-server started on 127.0.0.1:{redis_port} (its own, in a temp dir)");
    }

    // The fleet's secret key, in a file only we can read: the processes and the operator's
    // shell take it from there, and it is never printed.
    let key_file = dir.secret_key();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_file)
            .with_context(|| format!("cannot write {}", key_file.display()))?;
        writeln!(f, "{}", crmsync_tenants::SecretKey::generate())?;
    }
    let conn = Conn {
        crmsync: bins.crmsync.clone(),
        redis_url: redis_url.clone(),
        key_file: key_file.clone(),
    };

    let tenants = vec![
        tenant("acme", "us", 4_000),
        tenant("globex", "eu", 3_000),
        tenant("initech", "us", 2_500),
    ];
    // A Salesforce org beside them: Contacts under the Accounts whose domains match, Leads
    // for the rest.
    let mut umbrella = TenantConfig::named("umbrella");
    umbrella.contacts = 3_000;
    umbrella.salesforce = Some(SalesforceConfig::named("umbrella"));
    let mut everyone = tenants.clone();
    everyone.push(umbrella.clone());
    let hook_port = free_port();
    let hook_url = format!("http://127.0.0.1:{hook_port}/webhooks/nylas");
    let sim = Sim::start(
        fleet,
        &bins.sim,
        &SimConfig {
            seed: 2026,
            tenants: everyone.clone(),
            webhooks: Some(WebhookConfig::new(hook_url.clone(), WEBHOOK_SECRET)),
            ..SimConfig::default()
        },
        &dir.sim_config(),
    )
    .await?;
    println!(
        "• simulator (fake Nylas, Zoho CRM and Salesforce) on {}",
        sim.base_url()
    );

    for t in &tenants {
        let mut cmd = conn.crmsync();
        cmd.args(["tenant", "add", &t.name])
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
            // Secrets from the environment, as an operator would pass them.
            .env("CRMSYNC_NYLAS_API_KEY", &t.nylas_api_key)
            .env("CRMSYNC_ZOHO_CLIENT_SECRET", &t.zoho.client_secret)
            .env("CRMSYNC_ZOHO_REFRESH_TOKEN", &t.zoho.refresh_token)
            .env("CRMSYNC_WEBHOOK_SECRET", WEBHOOK_SECRET);
        let out = output(cmd, "tenant add").await?;
        println!(
            "• {} ({} contacts, Nylas {}, Zoho {})",
            out.trim(),
            thousands(t.contacts as u64),
            t.nylas_region.to_uppercase(),
            t.zoho.dc.to_uppercase()
        );
    }
    {
        let sf = umbrella.salesforce.as_ref().context("salesforce")?;
        let mut cmd = conn.crmsync();
        cmd.args(["tenant", "add", &umbrella.name, "--crm", "salesforce"])
            .args(["--nylas-grant-id", &umbrella.grant_id])
            .args(["--nylas-api-uri", &sim.nylas_api_uri(&umbrella.nylas_region)])
            .args(["--sf-login-url", &sim.salesforce_login_url(&sf.org_id)])
            .args(["--sf-client-id", &sf.client_id])
            .args(["--sf-external-id-field", &sf.ext_id_field])
            .args(["--daily-requests", &sf.daily_requests.to_string()])
            .env("CRMSYNC_NYLAS_API_KEY", &umbrella.nylas_api_key)
            .env("CRMSYNC_SF_CLIENT_SECRET", &sf.client_secret)
            .env("CRMSYNC_SF_REFRESH_TOKEN", &sf.refresh_token)
            .env("CRMSYNC_WEBHOOK_SECRET", WEBHOOK_SECRET);
        let out = output(cmd, "tenant add").await?;
        println!(
            "• {} ({} contacts, Nylas {}, Salesforce)",
            out.trim(),
            thousands(umbrella.contacts as u64),
            umbrella.nylas_region.to_uppercase()
        );
    }

    for i in 1..=WORKERS {
        let mut cmd = conn.crmsync();
        cmd.args(["worker", "--concurrency", "4"]).env("CRMSYNC_LOG", "info");
        fleet.spawn(&format!("worker-{i}"), cmd)?;
    }
    {
        let mut cmd = conn.crmsync();
        cmd.args(["webhook", "--listen", &format!("127.0.0.1:{hook_port}")])
            .env("CRMSYNC_LOG", "info");
        fleet.spawn("webhook", cmd)?;
    }
    wait_for_port(fleet, "webhook", hook_port).await?;
    println!("• {WORKERS} `crmsync worker` processes and `crmsync webhook` on port {hook_port} started\n");

    let names: Vec<&str> = everyone.iter().map(|t| t.name.as_str()).collect();
    let status = {
        let mut cmd = tokio::process::Command::from(conn.crmsync());
        cmd.arg("backfill").args(&names).arg("--follow").stdin(Stdio::null());
        cmd.status().await.context("running crmsync backfill")?
    };

    let redis_conn = conn.redis()?;
    let runs = RunStore::new(redis_conn.clone(), NAMESPACE);
    let mut last_runs = BTreeMap::new();
    for t in &everyone {
        if let Some(run) = runs.list(&t.name, 1).await?.into_iter().next() {
            last_runs.insert(t.name.clone(), run);
        }
    }
    zoho_table(&sim, &tenants, &last_runs).await?;
    salesforce_table(&redis_conn, &sim, &umbrella, last_runs.get(&umbrella.name)).await?;

    let feed_ok = if status.success() {
        change_feed(&redis_conn, &sim, &tenants[0]).await?
    } else {
        false
    };
    anyhow::ensure!(status.success(), "the backfill did not complete");
    anyhow::ensure!(
        feed_ok,
        "the change feed did not bring the CRM back to the address book"
    );

    if !keep {
        fleet.stop_all(Duration::from_secs(30));
        println!(
            "\n• stopped the workers, the webhook receiver, the simulator and redis-server ({:.1} s in all)",
            started.elapsed().as_secs_f64()
        );
        what_next(None);
        return Ok(());
    }

    // KEEP: a dashboard too, then everything stays up.
    let token = output(conn.crmsync_keygen(), "keygen").await?.trim().to_owned();
    let dash_port = free_port();
    {
        let mut cmd = conn.crmsync();
        cmd.args(["dashboard", "--listen", &format!("127.0.0.1:{dash_port}")])
            .env("CRMSYNC_DASHBOARD_TOKEN", &token)
            .env("CRMSYNC_LOG", "info");
        fleet.spawn("dashboard", cmd)?;
    }
    wait_for_port(fleet, "dashboard", dash_port).await?;
    let kept = Kept {
        dir: dir.clone(),
        redis_url,
        sim_url: sim.base_url().to_owned(),
        hook_url,
        dashboard_url: format!("http://127.0.0.1:{dash_port}/"),
        login_url: format!("http://127.0.0.1:{dash_port}/?token={}", percent_encode(&token)),
        bin_dir: bins.crmsync.parent().map(Path::to_path_buf).unwrap_or_default(),
        key_file,
    };
    kept.write(fleet)?;
    fleet.keep();
    println!(
        "\n• the demo ran in {:.1} s; everything is still running",
        started.elapsed().as_secs_f64()
    );
    what_next(Some(&kept));
    Ok(())
}

/// What `--keep` leaves running, and how to reach it.
struct Kept {
    dir: DemoDir,
    redis_url: String,
    sim_url: String,
    hook_url: String,
    dashboard_url: String,
    login_url: String,
    bin_dir: PathBuf,
    key_file: PathBuf,
}

impl Kept {
    /// The lines to paste into a shell: the CLI finds the fleet with them.
    fn env_block(&self) -> String {
        format!(
            "export PATH={}:\"$PATH\"\nexport CRMSYNC_REDIS_URL={} CRMSYNC_NAMESPACE={NAMESPACE}\nexport CRMSYNC_SECRET_KEY_FILE={}\nexport SIM={}\n",
            sh_quote(&self.bin_dir.display().to_string()),
            self.redis_url,
            sh_quote(&self.key_file.display().to_string()),
            self.sim_url
        )
    }

    /// `target/demo/pids` and `target/demo/state.env` (readable by us alone: the dashboard's
    /// login link is in it).
    fn write(&self, fleet: &Fleet) -> anyhow::Result<()> {
        std::fs::write(self.dir.pids(), fleet.pids_file())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.dir.state_env())?;
        write!(
            f,
            "# crmsync demo left running by `make demo KEEP=1`; `make demo-stop` stops it.\n\
             # source this file (or paste the exports) to use the crmsync CLI on it.\n\
             # redis-server      {}\n\
             # simulator         {}\n\
             # webhook receiver  {}\n\
             # dashboard         {}\n\
             # dashboard login   {}\n\
             {}",
            self.redis_url,
            self.sim_url,
            self.hook_url,
            self.dashboard_url,
            self.login_url,
            self.env_block()
        )?;
        Ok(())
    }
}

/// The closing section: what to try, on a kept demo or after `make demo KEEP=1`.
fn what_next(kept: Option<&Kept>) {
    println!("\nWhat next");
    match kept {
        None => {
            println!(
                "  Everything above is stopped now. `make demo KEEP=1` runs the same demo and leaves it running:\n  \
                 redis-server, the simulator, the workers, the webhook receiver and a dashboard. It prints their\n  \
                 URLs, the dashboard's login link and the shell settings for the CLI (kept in target/demo/state.env);\n  \
                 `make demo-stop` stops it all. Then try:"
            );
        }
        Some(k) => {
            let shown = |p: &Path| k.dir.shown(p);
            println!(
                "  Left running (`make demo-stop` stops it all; logs in {}/):",
                shown(&k.dir.logs())
            );
            println!("    redis-server      {}", k.redis_url);
            println!(
                "    simulator         {}  (acme's Zoho org: $SIM/_sim/orgs/org-acme)",
                k.sim_url
            );
            println!("    workers           {WORKERS} × `crmsync worker`");
            println!(
                "    webhook receiver  {}  (the simulator's webhooks go there)",
                k.hook_url
            );
            println!("    dashboard         {}", k.dashboard_url);
            println!("    pids              {}", shown(&k.dir.pids()));
            println!("\n  Open the dashboard (the link signs you in):\n    {}", k.login_url);
            println!("\n  Paste into your shell (or `source {}`):", shown(&k.dir.state_env()));
            for line in k.env_block().lines() {
                println!("    {line}");
            }
            println!("\n  Then try:");
        }
    }
    for (cmd, what) in [
        ("crmsync status", "queues, tenants, workers"),
        ("crmsync runs acme", "acme's backfill runs and their counts"),
        ("crmsync feed acme", "the change feed's counters"),
        ("crmsync dead list", "jobs that failed for good (none, we hope)"),
        ("crmsync rejected list umbrella", "records Salesforce refused"),
        ("crmsync budget", "credits and requests used, per tenant"),
        ("crmsync tenant show acme", "a tenant's settings, secrets masked"),
    ] {
        println!("    {cmd:<34} {what}");
    }
    println!(
        "    curl -sX POST $SIM/_sim/nylas/grant-acme/mutations -d '{{\"count\":50,\"seed\":7}}' >/dev/null\n    \
         {:<34} 50 more changes to acme's book, as webhooks; then `crmsync feed acme`",
        ""
    );
    println!("  More in README.md (pointing crmsync at real Nylas, Zoho and Salesforce accounts).");
}

/// A shell word: as is when it is plain, else single-quoted.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+,=@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The least a CRM's calls can cost for a run's writes — 1 Zoho credit per 10 records
/// written, as `crmsync backfill`'s summary counts it. One figure, computed from the run's
/// own counts, for the summary and the table alike.
fn min_credits(run: &Run) -> u64 {
    (run.inserted + run.updated).div_ceil(10)
}

/// The emails (as crmsync writes them) two or more contacts of `book` share.
fn shared_emails(book: &[serde_json::Value]) -> BTreeSet<String> {
    use crmsync_domain::{MapOutcome, map_contact};
    let mut seen: HashMap<String, u32> = HashMap::new();
    for c in book {
        let Ok(contact) = crmsync_nylas::parse_contact(c) else {
            continue;
        };
        if let MapOutcome::Mapped { record, .. } = map_contact(&contact, &crmsync_sink::zoho::LIMITS) {
            *seen.entry(record.email.to_lowercase()).or_default() += 1;
        }
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(e, _)| e).collect()
}

/// The Zoho orgs after the backfill, reconciled with the runs' counts: the records are the
/// ones the runs inserted, and every update is explained.
async fn zoho_table(sim: &Sim, tenants: &[TenantConfig], runs: &BTreeMap<String, Run>) -> anyhow::Result<()> {
    println!("\nThe simulated Zoho CRMs (each empty before its backfill):");
    println!(
        "{:<10} {:>3} {:>8} {:>9} {:>8} {:>8} {:>6} {:>8} {:>12}",
        "TENANT", "DC", "RECORDS", "INSERTED", "UPDATED", "SHARING", "CALLS", "CREDITS", "MIN CREDITS"
    );
    let mut notes = Vec::new();
    let (mut updated_all, mut rewritten_shared) = (0, 0);
    for t in tenants {
        let org = sim.zoho_org(&t.zoho.org_id).await?;
        let records = org["records"].as_array().cloned().unwrap_or_default();
        let book = sim.book(&t.grant_id).await?;
        let shared = shared_emails(&book);
        let mut emails: HashMap<String, u32> = HashMap::new();
        let (mut api_updates, mut on_shared) = (0, 0);
        for r in &records {
            let email = r["Email"].as_str().unwrap_or("").to_lowercase();
            let n = r["api_updates"].as_u64().unwrap_or(0);
            api_updates += n;
            if shared.contains(&email) {
                on_shared += n;
            }
            *emails.entry(email).or_default() += 1;
        }
        let duplicates: u32 = emails.values().map(|n| n - 1).sum();
        let Some(run) = runs.get(&t.name) else {
            notes.push(format!("{}: no backfill run found", t.name));
            continue;
        };
        let sharing = run.skipped.get("shared_email").copied().unwrap_or(0);
        println!(
            "{:<10} {:>3} {:>8} {:>9} {:>8} {:>8} {:>6} {:>8} {:>12}",
            t.name,
            t.zoho.dc.to_uppercase(),
            thousands(records.len() as u64),
            thousands(run.inserted),
            thousands(run.updated),
            thousands(sharing),
            thousands(org["calls"]["upsert"].as_u64().unwrap_or(0)),
            thousands(org["credits_used_total"].as_u64().unwrap_or(0)),
            thousands(min_credits(run))
        );
        if records.len() as u64 != run.inserted {
            notes.push(format!(
                "{}: {} records, but the run inserted {}",
                t.name,
                thousands(records.len() as u64),
                thousands(run.inserted)
            ));
        }
        if duplicates > 0 {
            notes.push(format!(
                "{}: {duplicates} records hold an email another record holds",
                t.name
            ));
        }
        if api_updates != run.updated {
            notes.push(format!(
                "{}: Zoho counts {} updates of records, the run {}",
                t.name,
                thousands(api_updates),
                thousands(run.updated)
            ));
        }
        if api_updates > on_shared {
            notes.push(format!(
                "{}: {} updates went to records whose email no other contact has (a write sent again after a retry)",
                t.name,
                thousands(api_updates - on_shared)
            ));
        }
        updated_all += run.updated;
        rewritten_shared += on_shared;
    }
    if notes.is_empty() {
        println!("  RECORDS = INSERTED: one record per email address, and no two records share one.");
    }
    println!(
        "  SHARING: contacts whose email a contact with a smaller Nylas id also has: that contact owns the email\n  \
         and its record, and they get no record of their own (the summary's `shared_email`)."
    );
    if updated_all > 0 {
        println!(
            "  UPDATED: records this backfill had just inserted and wrote again. Pages are read in parallel, so a\n  \
             shared email's record may first be written for a contact that does not own it; when the owner's page\n  \
             comes, the record is rewritten with the owner's fields (Zoho answers `update`). {} of these {} updates\n  \
             went to records of shared emails; how many happen varies from run to run.",
            thousands(rewritten_shared),
            thousands(updated_all)
        );
    }
    println!("  MIN CREDITS: 1 credit per 10 records written (inserted + updated), as in each run's summary.");
    for n in notes {
        println!("  ! {n}");
    }
    Ok(())
}

/// The Salesforce org after the backfill: Contacts (under an Account) vs Leads, API requests
/// used (crmsync's, against the org's Max) and the records Salesforce refused.
async fn salesforce_table(
    conn: &crmsync_redis::RedisConn,
    sim: &Sim,
    t: &TenantConfig,
    run: Option<&Run>,
) -> anyhow::Result<()> {
    let sf = t.salesforce.as_ref().context("salesforce")?;
    let doc = sim.salesforce_org(&sf.org_id).await?;
    let (mut contacts, mut with_account, mut leads) = (0u64, 0u64, 0u64);
    for (object, list) in [("Contact", &doc["contacts"]), ("Lead", &doc["leads"])] {
        for r in list.as_array().cloned().unwrap_or_default() {
            if r["IsConverted"].as_bool() == Some(true) {
                continue;
            }
            if object == "Contact" {
                contacts += 1;
                if r["AccountId"].is_string() {
                    with_account += 1;
                }
            } else {
                leads += 1;
            }
        }
    }
    let rejected = crmsync_e2e::rejections(conn, NAMESPACE, &t.name, 10_000).await;
    println!("\nThe simulated Salesforce org:");
    println!(
        "{:<10} {:>9} {:>16} {:>7} {:>9} {:>13} {:>12}",
        "TENANT", "CONTACTS", "UNDER AN ACCOUNT", "LEADS", "REJECTED", "API REQUESTS", "MIN UPSERTS"
    );
    let requests = doc["api_usage"]["total"].as_u64().unwrap_or(0);
    let written = run.map_or(0, |r| r.inserted + r.updated);
    let max_batch = crmsync_sink::profile(crmsync_tenants::CrmKind::Salesforce).max_batch as u64;
    println!(
        "{:<10} {:>9} {:>16} {:>7} {:>9} {:>13} {:>12}",
        t.name,
        thousands(contacts),
        thousands(with_account),
        thousands(leads),
        thousands(rejected.len() as u64),
        format!(
            "{}/{}",
            thousands(requests),
            thousands(doc["api_usage"]["max"].as_u64().unwrap_or(0))
        ),
        thousands(written.div_ceil(max_batch))
    );
    let calls = &doc["calls"];
    let by_call: Vec<String> = [
        ("upsert", "upsert", "upserts"),
        ("single_upsert", "single upsert", "single upserts"),
        ("delete", "delete", "deletes"),
        ("query", "Account query", "Account queries"),
        ("limits", "usage read", "usage reads"),
    ]
    .iter()
    .filter_map(|(k, one, many)| {
        let n = calls[*k].as_u64().unwrap_or(0);
        (n > 0).then(|| format!("{} {}", thousands(n), if n == 1 { one } else { many }))
    })
    .collect();
    println!(
        "  Salesforce matches on the contact id (an external-id field): every contact with a usable email has\n  \
         its own record, a Contact under the Account of its email's domain or else a Lead.\n  \
         API REQUESTS: {}. MIN UPSERTS: 1 request per {max_batch} records written, as in the run's summary.",
        by_call.join(", ")
    );
    for r in rejected.iter().take(3) {
        println!("  rejected {}: {} {}", r.contact_id, r.code, r.message);
    }
    Ok(())
}

/// The change feed act: 500 mutations of `t`'s address book, delivered as webhooks; waits until
/// the CRM equals the address book (one record per email, the mapped fields) and shows what
/// became of the changes. Returns whether the CRM caught up.
async fn change_feed(conn: &crmsync_redis::RedisConn, sim: &Sim, t: &TenantConfig) -> anyhow::Result<bool> {
    // Events are stamped in whole seconds: keep them apart from the backfill's reads.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let credits_of = |org: &serde_json::Value| org["credits_used_total"].as_u64().unwrap_or(0);
    let credits_before = credits_of(&sim.zoho_org(&t.zoho.org_id).await?);
    let before = feed_counters(conn, &t.name).await?;
    let report = sim
        .mutate(
            &t.grant_id,
            &MutationPlan {
                count: 500,
                seed: 5,
                ..MutationPlan::default()
            },
        )
        .await?;
    let kind = |k: &str| report.by_kind.get(k).copied().unwrap_or(0);
    println!(
        "\nChange feed: {} changes to {}'s address book ({} created, {} updated, {} email changes, {} deleted),\n\
         sent as {} signed webhooks ({} duplicates, {} out of order, {} forged)",
        report.mutations,
        t.name,
        kind("create"),
        kind("update"),
        kind("email_change"),
        kind("delete"),
        report.deliveries,
        report.duplicates,
        report.reordered,
        report.forged,
    );
    let sent = Instant::now();
    let mut caught_up_after = None;
    let caught_up = loop {
        if caught_up_after.is_none() && crm_equals_book(sim, t).await? {
            caught_up_after = Some(sent.elapsed());
        }
        // Then until nothing of the feed waits, so its counters are final.
        if caught_up_after.is_some() {
            let c = feed_counters(conn, &t.name).await?;
            if c.waiting_feed == 0 && c.to_refresh == 0 {
                break true;
            }
        }
        if sent.elapsed() > Duration::from_secs(60) {
            break caught_up_after.is_some();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let credits = credits_of(&sim.zoho_org(&t.zoho.org_id).await?) - credits_before;
    match caught_up_after {
        Some(after) => {
            let calls = feed_counters(conn, &t.name).await?.get("calls") - before.get("calls");
            println!(
                "• {}'s CRM equals its address book again, {:.1} s after the last webhook; {} Zoho calls and {} credits for {} changes",
                t.name,
                after.as_secs_f64(),
                thousands(calls),
                thousands(credits),
                report.mutations
            )
        }
        None => println!("• {}'s CRM did not catch up with its address book within 60 s", t.name),
    }
    let after = feed_counters(conn, &t.name).await?;
    let d = |k: &str| after.get(k).saturating_sub(before.get(k));
    let failed = after.failed().saturating_sub(before.failed());
    let receivers = after
        .receivers
        .iter()
        .map(|(k, n)| {
            format!(
                "{k} {}",
                thousands(n.saturating_sub(before.receivers.get(k).copied().unwrap_or(0)))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "\nWhat became of them (`crmsync feed {}` counts since the tenant's first change):",
        t.name
    );
    println!("  webhooks: {receivers}");
    let changes = d("changes") + d("refreshed");
    println!(
        "  {} changes{} = {} unchanged + {} stale + {} shared + {} nothing to write + {} queued",
        thousands(d("changes")),
        if d("refreshed") > 0 {
            format!(" + {} re-read", thousands(d("refreshed")))
        } else {
            String::new()
        },
        thousands(d("unchanged")),
        thousands(d("stale")),
        thousands(d("shared")),
        thousands(d("noop")),
        thousands(d("queued")),
    );
    let waiting = after.waiting_feed;
    println!(
        "  {} writes queued = {} inserted + {} updated + {} deleted + {} failed + {} coalesced + {} waiting",
        thousands(d("pushed")),
        thousands(d("inserted")),
        thousands(d("updated")),
        thousands(d("deleted")),
        thousands(failed),
        thousands(d("coalesced")),
        thousands(waiting)
    );
    println!(
        "  unchanged: the record already held it; stale: older than a change already applied (out of order);\n  \
         shared: the contact's email is owned by another contact; nothing to write: a deletion (or a loss of\n  \
         its email) of a contact with no record. A queued change writes its record, and an email change may\n  \
         also delete the record it left; coalesced: replaced by a newer change of the same contact (or record)\n  \
         before it was written."
    );
    let adds_up = changes == d("unchanged") + d("stale") + d("shared") + d("noop") + d("queued")
        && d("pushed") == d("inserted") + d("updated") + d("deleted") + failed + d("coalesced") + waiting;
    if !adds_up {
        println!("  ! these counts do not add up: a flush may have been cut short (see the worker logs)");
    }
    Ok(caught_up)
}

/// Whether `t`'s Zoho org holds exactly what its address book maps to.
async fn crm_equals_book(sim: &Sim, t: &TenantConfig) -> anyhow::Result<bool> {
    let book = sim.book(&t.grant_id).await?;
    let (expected, _) = crmsync_e2e::expected_crm(&book);
    let org = sim.zoho_org(&t.zoho.org_id).await?;
    let records = org["records"].as_array().cloned().unwrap_or_default();
    let actual: BTreeMap<String, serde_json::Value> = records
        .iter()
        .map(|r| {
            let fields = ["First_Name", "Last_Name", "Email", "Phone", "Account_Name", "Title"]
                .iter()
                .map(|f| (f.to_string(), r.get(*f).cloned().unwrap_or(serde_json::Value::Null)))
                .collect::<serde_json::Map<_, _>>();
            (
                r["Email"].as_str().unwrap_or("").to_owned(),
                serde_json::Value::Object(fields),
            )
        })
        .collect();
    Ok(actual.len() == records.len() && actual == expected)
}

/// A tenant's change-feed counters (the hash `crmsync feed` shows), the webhook receivers'
/// counters and what waits, read from Redis.
#[derive(Debug, Default)]
struct FeedCounters {
    counters: BTreeMap<String, u64>,
    receivers: BTreeMap<String, u64>,
    /// Change-feed entries waiting or being written.
    waiting_feed: u64,
    /// Contacts waiting to be re-read.
    to_refresh: u64,
}

impl FeedCounters {
    fn get(&self, k: &str) -> u64 {
        self.counters.get(k).copied().unwrap_or(0)
    }

    fn failed(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with("failed:"))
            .map(|(_, n)| n)
            .sum()
    }
}

async fn feed_counters(conn: &crmsync_redis::RedisConn, tenant: &str) -> anyhow::Result<FeedCounters> {
    let dest = crmsync_e2e::dest_of(conn, NAMESPACE, tenant)
        .await
        .with_context(|| format!("tenant `{tenant}` has no destination"))?;
    let profile = crmsync_sink::profile(crmsync_tenants::CrmKind::Zoho);
    let buffer = crmsync_producer::WriteBuffer::new(
        conn.clone(),
        NAMESPACE,
        tenant,
        &dest,
        profile.match_key,
        profile.max_take,
    );
    let waiting = buffer.waiting().await?;
    let receivers: BTreeMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{NAMESPACE}:webhook:stats"))
        .query_async(&mut conn.clone())
        .await?;
    Ok(FeedCounters {
        counters: buffer.feed_stats().await?,
        receivers,
        waiting_feed: waiting.feed,
        to_refresh: waiting.refresh,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_paths_are_shown_safely() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(sh_quote("/work/main/target/release"), "/work/main/target/release");
        assert_eq!(sh_quote("/my dir/it's"), "'/my dir/it'\\''s'");
    }
}
