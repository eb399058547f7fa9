//! The operator CLI: tenants and their secrets, the Zoho code exchange, worker settings.

use std::time::Duration;

use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_testkit::{RedisServer, TempDir, eventually};

use crate::support::crmsync_output;

/// Secrets go in, sealed, and never come out: not in `tenant show`, `tenant list`, errors, or
/// Redis. A grant code becomes the tenant's refresh token without being printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_cli_seals_secrets_and_exchange_code_stores_the_refresh_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let t = TenantConfig::named("acme");
    let sim = RunningSim::start(
        SimConfig {
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    let nylas_key = "nyk-acme";
    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &[
            "tenant",
            "add",
            "acme",
            "--nylas-grant-id",
            &t.grant_id,
            "--nylas-api-key",
            nylas_key,
            "--nylas-api-uri",
            &sim.nylas_api_uri("us"),
            "--zoho-region",
            "us",
            "--zoho-accounts-url",
            &sim.zoho_accounts_url("us"),
            "--zoho-client-id",
            &t.zoho.client_id,
            "--zoho-client-secret",
            &t.zoho.client_secret,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = crmsync_output(&redis, &key, &["zoho", "exchange-code", "acme", "--code", "code-acme"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("refresh token stored") && !out.contains(&t.zoho.refresh_token),
        "{out}"
    );
    let (code, _, err) = crmsync_output(&redis, &key, &["zoho", "exchange-code", "acme", "--code", "code-acme"]);
    assert_eq!(code, 1, "a used code is refused");
    assert!(err.contains("invalid_code"), "{err}");

    let (code, show, _) = crmsync_output(&redis, &key, &["tenant", "show", "acme"]);
    assert_eq!(code, 0);
    let (_, list, _) = crmsync_output(&redis, &key, &["tenant", "list"]);
    let raw: String = redis::cmd("GET")
        .arg("{crmsync:t:acme}:tenant")
        .query(&mut redis.conn())
        .expect("raw");
    for secret in [nylas_key, t.zoho.client_secret.as_str(), t.zoho.refresh_token.as_str()] {
        assert!(
            !show.contains(secret) && !list.contains(secret) && !raw.contains(secret),
            "secret {secret} leaked"
        );
    }
    assert!(show.contains("\"refresh_token\": \"****\""), "{show}");

    // Out-of-range settings are refused with a clear message and change nothing.
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "set", "acme", "--budget-share", "0.3"]);
    assert_eq!(code, 1);
    assert!(err.contains("budget share 0.3 is out of range"), "{err}");
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "set", "acme", "--daily-credits", "-5"]);
    assert_eq!(code, 1);
    assert!(err.contains("daily credits must be a positive number"), "{err}");

    // The wrong key, or none, is a clear error.
    let other = crmsync_tenants::SecretKey::generate();
    let (code, _, err) = crmsync_output(&redis, &other, &["tenant", "set", "acme", "--budget-share", "0.9"]);
    assert_eq!(code, 1);
    assert!(err.contains("not the key the tenants were stored with"), "{err}");
    let (code, _, err) = crmsync_output(&redis, "", &["tenant", "set", "acme", "--budget-share", "0.9"]);
    assert_eq!(code, 1);
    assert!(err.contains("no secret key: set CRMSYNC_SECRET_KEY"), "{err}");
}

/// `crmsync worker` reads its settings from a config file when flags and environment leave
/// them unset, and writes JSON log lines on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_takes_settings_from_a_config_file_and_logs_json() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let dir = TempDir::new("cfg");
    let path = dir.path().join("worker.toml");
    std::fs::write(
        &path,
        format!(
            "redis_url = \"{}\"\nconcurrency = 3\nlog_format = \"json\"\n",
            redis.url()
        ),
    )
    .expect("write");
    let mut cmd = crate::support::crmsync(&redis, &key);
    cmd.env_remove("CRMSYNC_REDIS_URL")
        .arg("worker")
        .arg("--config")
        .arg(&path);
    let mut w = crmsync_testkit::ChildProcess::spawn("worker", cmd);
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let q: crmsync_queue::JobQueue<serde_json::Value> =
        crmsync_queue::JobQueue::new(conn, crmsync_producer::backfill_queue("crmsync"));
    let worker = eventually(Duration::from_secs(15), "the worker to register", || async {
        q.stats().await.ok()?.workers.into_iter().next()
    })
    .await;
    assert_eq!(worker.concurrency, 3, "concurrency from the file");
    assert_eq!(w.terminate(Duration::from_secs(15)), Some(0));
    let lines = w.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}
