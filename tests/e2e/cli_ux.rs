//! What the CLI shows a person (issue 15, "trust what the CLI shows"): refused nonsense,
//! quiet closed pipes, one error line with a hint, consistent unknown-tenant errors, a
//! confirmation before a tenant is removed, completions, plain logs in pipes, the environment
//! in `--help`, human times and runs' counts.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crmsync_testkit::RedisServer;

use crate::support::{crmsync, crmsync_output};

/// `tenant add` of a tenant that needs no simulator (nothing is called when it is added).
fn add_tenant(redis: &RedisServer, key: &str, id: &str) {
    let (code, out, err) = crmsync_output(
        redis,
        key,
        &[
            "tenant",
            "add",
            id,
            "--nylas-grant-id",
            &format!("grant-{id}"),
            "--nylas-api-key",
            "nyk",
            "--zoho-region",
            "us",
            "--zoho-client-id",
            "cid",
            "--zoho-client-secret",
            "csecret",
            "--daily-credits",
            "40000",
        ],
    );
    assert_eq!(code, 0, "tenant add: {out}{err}");
}

/// `--watch 0` would refresh in a busy loop: refused as bad usage (2). `status --watch 1
/// --json | head -1` ends quietly when `head` has its line: no panic, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_zero_is_refused_and_a_closed_pipe_ends_status_quietly() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let (code, _, err) = crmsync_output(&redis, &key, &["status", "--watch", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--watch"), "{err}");

    // A real pipe, closed early by its reader; the pipeline's first status is crmsync's.
    let bin = crmsync_testkit::bin_path("crmsync");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#""$CRMSYNC_BIN" status --watch 1 --json | head -1; exit "${PIPESTATUS[0]}""#)
        .env("CRMSYNC_BIN", &bin)
        .env("CRMSYNC_REDIS_URL", redis.url())
        .env("CRMSYNC_SECRET_KEY", &key)
        .env_remove("CRMSYNC_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("pipeline");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout.trim(), "{", "head printed the JSON's first line");
    assert!(!stderr.contains("panicked"), "a panic on the closed pipe:\n{stderr}");
    assert!(stderr.trim().is_empty(), "nothing on stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "crmsync's exit code: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it ended at its next refresh"
    );
}

/// Every command naming a tenant that does not exist says so the same way, on one line,
/// and exits 1 (`runs x` used to print an empty table and exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tenant_is_one_consistent_error_everywhere() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_tenant(&redis, &key, "acme");
    let commands: [&[&str]; 11] = [
        &["runs", "nosuch"],
        &["backfill", "nosuch"],
        &["reconcile", "nosuch", "--dry-run"],
        &["feed", "nosuch"],
        &["budget", "nosuch"],
        &["pause", "nosuch"],
        &["resume", "nosuch"],
        &["rejected", "list", "nosuch"],
        &["tenant", "show", "nosuch"],
        &["tenant", "set", "nosuch", "--budget-share", "0.9"],
        &["tenant", "remove", "nosuch", "--yes"],
    ];
    for args in commands {
        let (code, out, err) = crmsync_output(&redis, &key, args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(
            err.trim_end(),
            "error: no tenant `nosuch`; list tenants with `crmsync tenant list`",
            "{args:?}"
        );
    }
}

/// `tenant remove` deletes everything of a tenant: on a terminal it asks; where nobody can
/// answer it refuses without `--yes` (2) and the tenant stays; with `--yes` it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_remove_needs_a_confirmation() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_tenant(&redis, &key, "acme");
    let out = crmsync(&redis, &key)
        .args(["tenant", "remove", "acme"])
        .stdin(Stdio::null())
        .output()
        .expect("remove");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--yes") && err.contains("no terminal"), "{err}");
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "show", "acme"]);
    assert_eq!(code, 0, "the tenant is still there: {err}");

    let (code, out, err) = crmsync_output(&redis, &key, &["tenant", "remove", "acme", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tenant `acme` removed"), "{out}");
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "show", "acme"]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant `acme`"), "{err}");
}

/// `crmsync completions <shell>` prints a completion script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_printed_for_the_shells() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let (code, out, err) = crmsync_output(&redis, &key, &["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("_crmsync()") && out.contains("complete -F _crmsync") && out.contains("backfill"),
        "{out}"
    );
    let (code, out, _) = crmsync_output(&redis, &key, &["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(out.contains("#compdef crmsync"), "{out}");
    let (code, _, err) = crmsync_output(&redis, &key, &["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is bad usage: {err}");
}

/// Redis down: one `error:` line naming the URL without its password and where the URL
/// comes from, not the same cause four times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_one_line_with_a_hint_and_no_password() {
    let port = crmsync_testkit::free_port();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{port}/");
    let key = crmsync_tenants::SecretKey::generate();
    for args in [
        &["status"][..],
        &["runs"],
        &["tenant", "list"],
        &["dead", "list"],
        &["budget"],
    ] {
        let started = Instant::now();
        let out = Command::new(crmsync_testkit::bin_path("crmsync"))
            .env("CRMSYNC_REDIS_URL", &url)
            .env("CRMSYNC_SECRET_KEY", &key)
            .env_remove("CRMSYNC_LOG")
            .env_remove("CRMSYNC_NAMESPACE")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line:\n{err}");
        assert_eq!(
            lines[0],
            format!(
                "error: cannot reach Redis at redis://****@127.0.0.1:{port}/ (connection refused); is it running? \
                 check CRMSYNC_REDIS_URL or --redis-url"
            ),
            "{args:?}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// Text logs written to a pipe (or a file) carry no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_pipe_have_no_colour_codes() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let mut child = crmsync(&redis, &key)
        .env_remove("NO_COLOR")
        .args(["worker", "--drain-secs", "1", "--log-format", "text"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    // Its start is logged at info; then it is stopped and drains.
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let q: crmsync_queue::JobQueue<serde_json::Value> =
        crmsync_queue::JobQueue::new(conn, crmsync_producer::backfill_queue("crmsync"));
    crmsync_testkit::eventually(Duration::from_secs(15), "the worker to register", || async {
        q.stats().await.ok()?.workers.into_iter().next()
    })
    .await;
    crmsync_testkit::signal(child.id(), "TERM");
    let status = child.wait().expect("wait");
    let lines = reader.join().expect("reader");
    assert!(status.success(), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("INFO")), "{lines:?}");
    for line in &lines {
        assert!(!line.contains("\x1b["), "a colour code in a piped log line: {line:?}");
    }
}

/// The environment is documented in `--help`; the global options are listed once, in the
/// top-level help, and still work after a subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_documents_the_environment_and_lists_global_options_once() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    let (code, help, _) = crmsync_output(&redis, &key, &["--help"]);
    assert_eq!(code, 0);
    for var in [
        "CRMSYNC_REDIS_URL",
        "CRMSYNC_NAMESPACE",
        "CRMSYNC_SECRET_KEY",
        "CRMSYNC_SECRET_KEY_FILE",
        "CRMSYNC_LOG",
        "CRMSYNC_DASHBOARD_TOKEN",
        "--redis-url",
        "--namespace",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
    let (code, sub, _) = crmsync_output(&redis, &key, &["tenant", "list", "--help"]);
    assert_eq!(code, 0);
    assert!(!sub.contains("--redis-url") && !sub.contains("--namespace"), "{sub}");
    assert!(sub.contains("CRMSYNC_SECRET_KEY"), "{sub}");
    let (code, sub, _) = crmsync_output(&redis, &key, &["tenant", "show", "--help"]);
    assert_eq!(code, 0);
    assert!(sub.contains("The tenant's id"), "arguments have help: {sub}");

    // After the subcommand, overriding a Redis that is not there.
    let out = crmsync(&redis, &key)
        .env(
            "CRMSYNC_REDIS_URL",
            format!("redis://127.0.0.1:{}/", crmsync_testkit::free_port()),
        )
        .args(["status", "--redis-url", &redis.url(), "--json"])
        .output()
        .expect("status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `tenant show` gives its times as UTC dates with how long ago (the JSON for scripts keeps
/// epoch ms); `runs` counts pages read, records written, waiting and unchanged apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_show_has_human_times_and_runs_count_records_apart_from_pages() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_tenant(&redis, &key, "acme");
    let (code, show, err) = crmsync_output(&redis, &key, &["tenant", "show", "acme"]);
    assert_eq!(code, 0, "{err}");
    let created = show
        .lines()
        .find(|l| l.trim_start().starts_with("\"created_at\":"))
        .unwrap_or_else(|| panic!("no human creation time:\n{show}"));
    assert!(
        created.contains(" UTC (") && (created.contains("ago)") || created.contains("just now)")),
        "{created}"
    );
    assert!(show.contains("\"created_at_ms\": "), "{show}");
    let (code, json, _) = crmsync_output(&redis, &key, &["tenant", "show", "acme", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(v["created_at_ms"].is_u64() && v.get("created_at").is_none(), "{json}");

    let (code, out, _) = crmsync_output(&redis, &key, &["runs", "acme"]);
    assert_eq!(code, 0);
    assert!(out.contains("no runs yet"), "{out}");
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    let runs = crmsync_producer::RunStore::new(conn, "crmsync");
    let run = match runs.start("acme", false).await.expect("start") {
        crmsync_producer::StartOutcome::Started(r) => r,
        other => panic!("{other:?}"),
    };
    let _: () = redis::cmd("SET")
        .arg(crmsync_tenants::TenantKeys::new("crmsync", "acme").run_buffered(&run.id))
        .arg(1234)
        .query(&mut redis.conn())
        .expect("set");
    let (code, out, err) = crmsync_output(&redis, &key, &["runs", "acme"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    for col in [
        "PAGES",
        "READ",
        "WRITTEN",
        "WAITING",
        "UNCHANGED",
        "REJECTED",
        "CREDITS",
    ] {
        assert!(header.contains(&col), "{col} missing: {out}");
    }
    assert!(!header.contains(&"DONE"), "{out}");
    let row = lines.next().expect("row");
    assert!(
        row.starts_with(&run.id) && row.contains("1,234") && row.contains("running"),
        "the waiting records with a thousands separator: {out}"
    );
    let (code, json, _) = crmsync_output(&redis, &key, &["runs", "acme", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["waiting"], 1234, "{json}");
    assert!(v[0]["started_at_ms"].is_u64(), "{json}");
}

/// Operator actions from the CLI are recorded in the audit log with the login that did them,
/// and `crmsync audit` lists them newest first (and as JSON with the raw times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_actions_are_recorded_in_the_audit_log() {
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_tenant(&redis, &key, "acme");
    add_tenant(&redis, &key, "gone");
    let (code, out, err) = crmsync_output(&redis, &key, &["audit"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tenant.add"), "{out}");

    let run = |args: &[&str]| {
        let out = crmsync(&redis, &key)
            .args(args)
            .env("USER", "alice")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["pause", "acme", "--reason", "CRM migration"]);
    run(&["resume", "acme", "--reason", "migration done"]);
    run(&["tenant", "remove", "gone", "--yes"]);
    let (code, _, err) = crmsync_output(&redis, &key, &["pause", "nobody"]);
    assert_eq!(code, 1, "{err}");

    let (code, out, err) = crmsync_output(&redis, &key, &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let entries: serde_json::Value = serde_json::from_str(&out).expect("json");
    let actions: Vec<&str> = entries
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.remove",
            "tenant.resume",
            "tenant.pause",
            "tenant.add",
            "tenant.add"
        ],
        "{out}"
    );
    assert_eq!(entries[2]["reason"], "CRM migration");
    assert_eq!(entries[1]["reason"], "migration done");
    assert_eq!(entries[0]["target"], "tenant gone");
    for e in &entries.as_array().expect("list")[..3] {
        assert_eq!(e["via"], "cli");
        assert!(e["who"].as_str().is_some_and(|w| w.starts_with("alice@")), "{e}");
        assert!(e["at_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
    }
    let (code, out, _) = crmsync_output(&redis, &key, &["audit", "--limit", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains("tenant.remove") && out.contains("UTC"), "{out}");
    assert!(!out.contains("tenant.pause"), "limited to 2: {out}");
    assert!(out.contains("crmsync audit --before"), "{out}");
}

/// A Redis that wants a password, given none or a wrong one: one line saying so, naming where
/// the URL comes from, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_refusing_the_credentials_is_one_line_with_a_hint() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-password")
        .query(&mut redis.conn())
        .expect("requirepass");
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .expect("port")
        .trim_end_matches('/')
        .to_owned();
    for (url, why) in [
        (format!("redis://127.0.0.1:{port}/"), "it needs a password"),
        (
            format!("redis://:wrong-password@127.0.0.1:{port}/"),
            "wrong user or password",
        ),
    ] {
        let out = Command::new(crmsync_testkit::bin_path("crmsync"))
            .args(["status"])
            .env("CRMSYNC_REDIS_URL", &url)
            .env_remove("CRMSYNC_NAMESPACE")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(why) && err.contains("CRMSYNC_REDIS_URL"), "{err}");
        assert!(!err.contains("wrong-password"), "{err}");
    }
    let right = format!("redis://:right-password@127.0.0.1:{port}/");
    let out = Command::new(crmsync_testkit::bin_path("crmsync"))
        .args(["status"])
        .env("CRMSYNC_REDIS_URL", &right)
        .env_remove("CRMSYNC_NAMESPACE")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
