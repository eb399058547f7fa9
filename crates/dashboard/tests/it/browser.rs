//! `crmsync dashboard` as a process, and its page in a real browser (headless Chromium).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crmsync_testkit::{ChildProcess, RedisServer, TempDir, bin_path, eventually, free_port};

use crate::support::{DEAD_REASON, NS, PAUSE_REASON, seed, seed_history};
use crate::web::TOKEN;

/// Debian's `chromium` package: the browser the page is checked in. Missing, the test fails
/// (it never skips): `make test` installs it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "headless Chromium is missing: install Debian's `chromium` package \
             (apt-get install chromium), or run `make test`, which installs it"
        )
    })
}

/// The workspace's target directory (the test binary runs from `target/<profile>/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Runs Chromium headless on `url` with `args`; returns what it printed on stdout.
async fn run_chromium(profile: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=8000",
        "--window-size=1400,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finished within 2 minutes")
        .expect("chromium ran");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dashboard(redis: &RedisServer, port: u16) -> ChildProcess {
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
        .env("CRMSYNC_REDIS_URL", redis.url())
        .env("CRMSYNC_NAMESPACE", NS)
        .env("CRMSYNC_DASHBOARD_TOKEN", TOKEN)
        .env("CRMSYNC_LOG", "debug");
    ChildProcess::spawn("crmsync-dashboard", cmd)
}

/// The page in a real browser: its script fetches the API with the session cookie that
/// `?token=` set, and renders the tenants (with a paused tenant's reason, a budget pause and a
/// run's progress), the queues, the workers and the charts as SVG. The screenshot is kept in
/// `target/dashboard-screenshot.png` for a person to look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_the_fleet_in_headless_chromium() {
    let browser = chromium();
    let redis = RedisServer::start();
    let seeded = seed(&redis).await;
    seed_history(&redis).await;

    let port = free_port();
    let mut child = dashboard(&redis, port);
    let base = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the dashboard answers /healthz", || {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(child.is_running(), "dashboard exited: {}", child.output());

    let url = format!("{base}/?token={TOKEN}");
    let dir = TempDir::new("chromium");
    let shot = dir.path().join("dashboard.png");
    run_chromium(
        &dir.path().join("profile-shot"),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    )
    .await;
    let dom = run_chromium(&dir.path().join("profile-dom"), &url, &["--dump-dom"]).await;

    // The script ran and fetched the API (everything below is built from its answers).
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page never loaded its data:\n{dom}"
    );
    for tenant in ["acme", "globex", "hooli", "initech"] {
        assert!(
            dom.contains(&format!("data-tenant=\"{tenant}\"")),
            "no row for {tenant}"
        );
    }
    for text in [
        PAUSE_REASON,
        "budget paused",
        "budget used: crmsync used 98 of 100",
        "429 cooldown",
        "50% · page 4/8",
        " / 800 credits (",
        DEAD_REASON,
        "record rejected",
        "data-queue=\"backfill\"",
        "data-queue=\"writes\"",
        "<span class=\"badge ok\">alive</span>",
        "<span class=\"badge stopped\">stopped</span>",
    ] {
        assert!(dom.contains(text), "{text:?} not rendered:\n{dom}");
    }
    // Charts: SVG drawn by the script from /api/series.
    for chart in ["chart-throughput", "chart-429", "chart-credits", "chart-window"] {
        let at = dom
            .find(&format!("id=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart}"));
        let svg = &dom[at..at + dom[at..].find("</svg>").expect("closed svg")];
        assert!(
            svg.contains("<polyline") || svg.contains("<rect"),
            "{chart} has nothing drawn: {svg}"
        );
    }
    assert!(dom.contains("data-series=\"backfill\"") && dom.contains("data-series=\"writes\""));
    assert!(dom.contains("class=\"ref\""), "the budget line is drawn");

    // A link to one tenant's charts: its credits against its own budget.
    let one = run_chromium(
        &dir.path().join("profile-tenant"),
        &format!("{url}#tenant=initech"),
        &["--dump-dom"],
    )
    .await;
    assert!(
        one.contains("98 of 100 allowed (98.0%)"),
        "initech's window chart:\n{one}"
    );
    assert!(one.contains("last hour · tenant initech"), "initech's 429 chart");

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 30_000,
        "a screenshot of a whole page, not a blank one: {} bytes",
        png.len()
    );
    let kept = target_dir().join("dashboard-screenshot.png");
    std::fs::copy(&shot, &kept).expect("keep the screenshot");
    println!("screenshot: {}", kept.display());

    assert!(!child.output().contains(TOKEN), "the token is never logged");
    drop(browser);
    child.kill();
    seeded.gate.add_permits(10);
    seeded.writes_worker.stop().await;
}

/// `crmsync dashboard` refuses to start without a token, or with one too short to be secret.
#[test]
fn dashboard_refuses_to_start_without_a_real_token() {
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(bin_path("crmsync"));
        cmd.args(["dashboard", "--listen", &format!("127.0.0.1:{}", free_port())])
            .env("CRMSYNC_REDIS_URL", "redis://127.0.0.1:1/")
            .env_remove("CRMSYNC_DASHBOARD_TOKEN");
        if let Some(t) = token {
            cmd.env("CRMSYNC_DASHBOARD_TOKEN", t);
        }
        let out = cmd.output().expect("run crmsync");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--token"), "{err}");
    let (code, err) = run(Some("tiny"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("crmsync keygen"), "{err}");
}
