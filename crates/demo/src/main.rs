//! `make demo`: crmsync's main job end to end, on a machine with nothing running.
//!
//! Starts its own `redis-server` and the simulator (3 Zoho tenants across the US and EU data
//! centers and a Salesforce tenant, 2,000–5,000 messy contacts each), registers the tenants
//! with `crmsync tenant add`,
//! starts 2 `crmsync worker` processes, runs `crmsync backfill ... --follow` (live progress,
//! then each run's summary), checks the simulated CRMs (Zoho records; Salesforce Contacts vs
//! Leads, API requests and rejected records), then keeps one CRM current from the change
//! feed: the simulator changes acme's address book 500 times and delivers signed
//! webhooks (duplicated, out of order, some forged) to `crmsync webhook`; the demo waits until
//! the CRM equals the address book again and shows `crmsync feed`. It stops everything it
//! started.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crmsync_sim::{MutationPlan, RunningSim, SalesforceConfig, SimConfig, TenantConfig, WebhookConfig};
use crmsync_testkit::{ChildProcess, RedisServer, bin_path, free_port};

const WEBHOOK_SECRET: &str = "whsec-demo";

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
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    // A Salesforce org beside them: Contacts under the Accounts whose domains match, Leads
    // for the rest.
    let mut umbrella = TenantConfig::named("umbrella");
    umbrella.contacts = 3_000;
    umbrella.salesforce = Some(SalesforceConfig::named("umbrella"));
    let mut everyone = tenants.clone();
    everyone.push(umbrella.clone());
    let hook_port = free_port();
    let sim = RunningSim::start(
        SimConfig {
            seed: 2026,
            tenants: everyone.clone(),
            webhooks: Some(WebhookConfig::new(
                format!("http://127.0.0.1:{hook_port}/webhooks/nylas"),
                WEBHOOK_SECRET,
            )),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    println!(
        "• simulator (fake Nylas, Zoho CRM and Salesforce) on {}",
        sim.base_url()
    );

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
            .env("CRMSYNC_WEBHOOK_SECRET", WEBHOOK_SECRET)
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

    {
        let mut args = crmsync_e2e::sim_salesforce_tenant_add_args(&sim, &umbrella);
        // Secrets from the environment, as an operator would pass them.
        let secret_flags = ["--nylas-api-key", "--sf-client-secret", "--sf-refresh-token"];
        let mut i = 0;
        while i < args.len() {
            if secret_flags.contains(&args[i].as_str()) {
                args.drain(i..i + 2);
            } else {
                i += 1;
            }
        }
        let sf = umbrella.salesforce.as_ref().expect("salesforce");
        let out = crmsync(&redis, &key)
            .args(&args)
            .env("CRMSYNC_NYLAS_API_KEY", &umbrella.nylas_api_key)
            .env("CRMSYNC_SF_CLIENT_SECRET", &sf.client_secret)
            .env("CRMSYNC_SF_REFRESH_TOKEN", &sf.refresh_token)
            .env("CRMSYNC_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .output()
            .context("running crmsync tenant add")?;
        anyhow::ensure!(
            out.status.success(),
            "tenant add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "• {} ({} contacts, Nylas {}, Salesforce)",
            String::from_utf8_lossy(&out.stdout).trim(),
            umbrella.contacts,
            umbrella.nylas_region.to_uppercase()
        );
    }

    let mut workers: Vec<ChildProcess> = (1..=2)
        .map(|i| {
            let mut cmd = crmsync(&redis, &key);
            cmd.args(["worker", "--concurrency", "4"]).env("CRMSYNC_LOG", "warn");
            ChildProcess::spawn(&format!("worker-{i}"), cmd)
        })
        .collect();
    let mut hook = {
        let mut cmd = crmsync(&redis, &key);
        cmd.args(["webhook", "--listen", &format!("127.0.0.1:{hook_port}")])
            .env("CRMSYNC_LOG", "warn");
        ChildProcess::spawn("webhook", cmd)
    };
    println!("• 2 `crmsync worker` processes and `crmsync webhook` on port {hook_port} started\n");

    let names: Vec<&str> = everyone.iter().map(|t| t.name.as_str()).collect();
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

    salesforce_table(&redis, &sim, &umbrella).await?;

    let feed_ok = if status.success() {
        change_feed(&redis, &key, &sim, &tenants[0]).await?
    } else {
        false
    };

    hook.terminate(Duration::from_secs(10));
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
    anyhow::ensure!(
        feed_ok,
        "the change feed did not bring the CRM back to the address book"
    );
    Ok(())
}

/// The change feed act: 500 mutations of `t`'s address book, delivered as webhooks; waits until
/// the CRM equals the address book (one record per email, the mapped fields) and shows the
/// tenant's feed counters. Returns whether the CRM caught up.
async fn change_feed(redis: &RedisServer, key: &str, sim: &RunningSim, t: &TenantConfig) -> anyhow::Result<bool> {
    // Events are stamped in whole seconds: keep them apart from the backfill's reads.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let credits_before = sim.inspect_org(&t.zoho.org_id).unwrap_or_default()["credits_used_total"]
        .as_u64()
        .unwrap_or(0);
    let report = sim
        .mutate(
            &t.grant_id,
            MutationPlan {
                count: 500,
                seed: 5,
                ..MutationPlan::default()
            },
        )
        .await?;
    println!(
        "\nChange feed: {} changes to {}'s address book ({} created, {} updated, {} email changes, {} deleted), sent as {} signed webhooks ({} duplicates, {} out of order, {} forged)",
        report.mutations,
        t.name,
        report.by_kind.get("create").copied().unwrap_or(0),
        report.by_kind.get("update").copied().unwrap_or(0),
        report.by_kind.get("email_change").copied().unwrap_or(0),
        report.by_kind.get("delete").copied().unwrap_or(0),
        report.deliveries,
        report.duplicates,
        report.reordered,
        report.forged,
    );
    let sent = Instant::now();
    let book_url = format!("{}/_sim/nylas/{}/contacts", sim.base_url(), t.grant_id);
    let caught_up = loop {
        let book: Vec<serde_json::Value> = reqwest_get_json(&book_url).await?;
        let (expected, _) = crmsync_e2e::expected_crm(&book);
        let org = sim.inspect_org(&t.zoho.org_id).unwrap_or_default();
        let records = org["records"].as_array().cloned().unwrap_or_default();
        let actual: std::collections::BTreeMap<String, serde_json::Value> = records
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
        if actual.len() == records.len() && actual == expected {
            break true;
        }
        if sent.elapsed() > Duration::from_secs(60) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let credits = sim.inspect_org(&t.zoho.org_id).unwrap_or_default()["credits_used_total"]
        .as_u64()
        .unwrap_or(0)
        - credits_before;
    if caught_up {
        println!(
            "• {}'s CRM equals its address book again, {:.1} s after the last webhook; {credits} Zoho credits for {} changes\n",
            t.name,
            sent.elapsed().as_secs_f64(),
            report.mutations
        );
    } else {
        println!(
            "• {}'s CRM did not catch up with its address book within 60 s\n",
            t.name
        );
    }
    let out = crmsync(redis, key).args(["feed", &t.name]).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(caught_up)
}

/// The Salesforce org after the backfill: Contacts (under an Account) vs Leads, API requests
/// used (crmsync's, against the org's Max) and the records Salesforce refused.
async fn salesforce_table(redis: &RedisServer, sim: &RunningSim, t: &TenantConfig) -> anyhow::Result<()> {
    let sf = t.salesforce.as_ref().expect("salesforce");
    let doc = sim.inspect_salesforce(&sf.org_id).unwrap_or_default();
    let (records, counts) = crmsync_e2e::salesforce_records(sim, &sf.org_id, &sf.ext_id_field);
    let conn = crmsync_redis::connect(redis.client(), Duration::from_secs(5))?;
    let rejected = crmsync_e2e::rejections(&conn, "crmsync", &t.name, 10_000).await;
    println!("\nThe simulated Salesforce org:");
    println!(
        "{:<10} {:>9} {:>16} {:>7} {:>9} {:>13} {:>9}",
        "TENANT", "CONTACTS", "UNDER AN ACCOUNT", "LEADS", "REJECTED", "API REQUESTS", "PER 1K"
    );
    let requests = doc["api_usage"]["total"].as_u64().unwrap_or(0);
    println!(
        "{:<10} {:>9} {:>16} {:>7} {:>9} {:>13} {:>9.1}",
        t.name,
        counts.contacts,
        counts.contacts_with_account,
        counts.leads,
        rejected.len(),
        format!("{requests}/{}", doc["api_usage"]["max"].as_u64().unwrap_or(0)),
        requests as f64 * 1000.0 / records.len().max(1) as f64
    );
    for r in rejected.iter().take(3) {
        println!("  rejected {}: {} {}", r.contact_id, r.code, r.message);
    }
    Ok(())
}

async fn reqwest_get_json(url: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}
