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

/// Hardening, CLI: `--help` never prints the Redis URL from the environment (it may hold a
/// password); `--users` out of range is refused, not wrapped; `tenant show` refuses to run
/// without the key (or with a malformed one) instead of printing "(sealed)" and exiting 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_hides_the_redis_password_users_are_range_checked_and_show_needs_the_key() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let out = crate::support::crmsync(&redis, &key)
        .env("CRMSYNC_REDIS_URL", "redis://:hunter2-secret@127.0.0.1:1/")
        .args(["worker", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("CRMSYNC_REDIS_URL"), "{help}");
    assert!(!help.contains("hunter2"), "the password is printed:\n{help}");

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
    crate::support::add_sim_tenant(&redis, &key, &sim, &t);
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "set", "acme", "--users", "4294967297"]);
    assert_ne!(code, 0);
    assert!(err.contains("users 4294967297 is out of range"), "{err}");
    let (code, show, _) = crmsync_output(&redis, &key, &["tenant", "show", "acme"]);
    assert_eq!(code, 0);
    assert!(show.contains("\"users\": null"), "unchanged: {show}");

    for bad in ["", "not-a-key"] {
        let out = crate::support::crmsync(&redis, &key)
            .env("CRMSYNC_SECRET_KEY", bad)
            .env_remove("CRMSYNC_SECRET_KEY_FILE")
            .args(["tenant", "show", "acme"])
            .output()
            .expect("show");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`tenant show` with key {bad:?} exited 0");
        assert!(err.contains("CRMSYNC_SECRET_KEY"), "{err}");
    }
    let out = crate::support::crmsync(&redis, &key)
        .env("CRMSYNC_SECRET_KEY", "not-a-key")
        .args(["tenant", "list"])
        .output()
        .expect("list");
    assert!(!out.status.success(), "`tenant list` with a malformed key exited 0");
}

/// Hardening: a worker started with a well-formed key that is not the fleet's refuses to start
/// (its every job would fail on the tenants' secrets), the receiver says it is not ready, and
/// `tenant add` refuses to seal a tenant with another key than the fleet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_key_refuses_to_start_and_the_receiver_is_not_ready() {
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
    crate::support::add_sim_tenant(&redis, &key, &sim, &t);
    let other = crmsync_tenants::SecretKey::generate();
    let out = crate::support::crmsync(&redis, &other)
        .args(["worker", "--drain-secs", "1"])
        .output()
        .expect("worker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the worker started with another key");
    assert!(err.contains("cannot open the fleet's tenants"), "{err}");

    let (_server, base) = crate::support::webhook_server(&redis, &key, &[]).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/readyz")).send().await.expect("ready").status(),
        200
    );
    let (_wrong, wrong_base) = {
        let port = crmsync_testkit::free_port();
        let mut cmd = crate::support::crmsync(&redis, &other);
        cmd.args(["webhook", "--listen", &format!("127.0.0.1:{port}")]);
        let p = crmsync_testkit::ChildProcess::spawn("webhook-other-key", cmd);
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(15), "the receiver to answer", || async {
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        (p, base)
    };
    let r = http.get(format!("{wrong_base}/readyz")).send().await.expect("ready");
    assert_eq!(r.status(), 503);
    assert!(r.text().await.expect("text").contains("not ready"));

    let mut second = TenantConfig::named("globex");
    second.grant_id = "grant-globex".into();
    let mut args = crmsync_e2e::sim_tenant_add_args(&sim, &second);
    args[2] = "globex".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = crmsync_output(&redis, &other, &args);
    assert_ne!(code, 0, "a tenant sealed with another key was added");
    assert!(err.contains("not the key the tenants were stored with"), "{err}");
}

/// Hardening: the secret key rotates. With the new key and the old one beside it, every
/// process reads both; `crmsync keys rotate` re-seals every tenant with the new key (reporting
/// progress), after which the new key alone opens everything and the old one nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_rotates_and_the_old_one_retires() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let old = crmsync_tenants::SecretKey::generate();
    let new = crmsync_tenants::SecretKey::generate();
    let mut tenants = Vec::new();
    for name in ["acme", "globex", "initech"] {
        let mut t = TenantConfig::named(name);
        t.grant_id = format!("grant-{name}");
        tenants.push(t);
    }
    let sim = RunningSim::start(
        SimConfig {
            tenants: tenants.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    for t in &tenants {
        crate::support::add_sim_tenant(&redis, &old, &sim, t);
    }
    let show = |key: &str, old_keys: Option<&str>| {
        let mut cmd = crate::support::crmsync(&redis, key);
        if let Some(o) = old_keys {
            cmd.env("CRMSYNC_SECRET_KEY_OLD", o);
        }
        cmd.args(["tenant", "show", "globex"]).output().expect("show")
    };
    let before = show(&new, None);
    assert!(String::from_utf8_lossy(&before.stdout).contains("(sealed with another key)"));

    let out = crate::support::crmsync(&redis, &new)
        .env("CRMSYNC_SECRET_KEY_OLD", &old)
        .args(["keys", "rotate", "--batch", "2"])
        .output()
        .expect("rotate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("2/3 tenant(s) checked") && text.contains("3/3 tenant(s) checked, 3 re-sealed"),
        "{text}"
    );

    let after = show(&new, None);
    let shown = String::from_utf8_lossy(&after.stdout);
    assert!(
        after.status.success() && !shown.contains("sealed with another key"),
        "{shown}"
    );
    assert!(
        shown.contains("****"),
        "secrets masked, opened with the new key alone: {shown}"
    );
    let raw: String = redis::cmd("GET")
        .arg("{crmsync:t:globex}:tenant")
        .query(&mut redis.conn())
        .expect("raw");
    let new_id = crmsync_tenants::SecretKey::from_base64(&new)
        .expect("key")
        .id()
        .to_owned();
    assert!(raw.contains(&format!("v2:{new_id}:")), "{raw}");
    let retired = show(&old, None);
    assert!(String::from_utf8_lossy(&retired.stdout).contains("(sealed with another key)"));
    // Workers start with the new key alone.
    let out = crate::support::crmsync(&redis, &old)
        .args(["worker", "--drain-secs", "1"])
        .output()
        .expect("worker");
    assert!(!out.status.success(), "a worker with the retired key started");
    // A second rotation finds nothing to do.
    let out = crate::support::crmsync(&redis, &new)
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    assert!(String::from_utf8_lossy(&out.stdout).contains("3/3 tenant(s) checked, 0 re-sealed"));
}
