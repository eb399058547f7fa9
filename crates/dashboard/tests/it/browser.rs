//! `crmsync dashboard` as a process, and its page in a real browser: headless Chromium driven
//! over WebDriver (see [`crate::webdriver`]), clicked as an operator would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crmsync_producer::{BackfillPage, FlushWrites, Maintenance};
use crmsync_queue::JobQueue;
use crmsync_tenants::TenantKeys;
use crmsync_testkit::{ChildProcess, RedisServer, bin_path, eventually, free_port};
use serde_json::Value;

use crate::support::{
    DEAD_REASON, MAINTENANCE_REASON, NS, PAUSE_REASON, WRITES_REASON, conn, seed, seed_history,
    seed_maintenance_dead_letter, seed_writes_dead_letter,
};
use crate::webdriver::Browser;

/// The operator name the test logs in as (`/?token=...&as=`), expected in the audit.
const OPERATOR: &str = "browser-test";
const PAUSE_WHY: &str = "browser test: Zoho maintenance window";
const RESUME_WHY: &str = "browser test: maintenance over";
const PURGE_WHY: &str = "browser test: the old destination is gone";
const PURGE_ALL_WHY: &str = "browser test: hooli's run is gone";
const CANCEL_WHY: &str = "browser test: enough for today";

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

fn dashboard(redis: &RedisServer, port: u16, token: &str) -> ChildProcess {
    let mut cmd = Command::new(bin_path("crmsync"));
    cmd.args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
        .env("CRMSYNC_REDIS_URL", redis.url())
        .env("CRMSYNC_NAMESPACE", NS)
        .env("CRMSYNC_DASHBOARD_TOKEN", token)
        .env("CRMSYNC_LOG", "debug");
    ChildProcess::spawn("crmsync-dashboard", cmd)
}

/// A token as an operator makes one: `crmsync keygen`.
fn keygen() -> String {
    let out = Command::new(bin_path("crmsync"))
        .arg("keygen")
        .env_remove("CRMSYNC_REDIS_URL")
        .output()
        .expect("run crmsync keygen");
    assert!(
        out.status.success(),
        "crmsync keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert!(token.len() >= 32, "a long token: {token:?}");
    token
}

/// Nothing needs a horizontal scroll: not the page, not any table's section.
const OVERFLOW: &str = r#"
    const d = document.documentElement, out = [];
    if (d.scrollWidth > window.innerWidth || d.scrollWidth > d.clientWidth)
        out.push("page " + d.scrollWidth + " > " + d.clientWidth + " (inner " + window.innerWidth + ")");
    for (const s of document.querySelectorAll("section.tbl"))
        if (s.scrollWidth > s.clientWidth)
            out.push((s.id || s.querySelector("h2").textContent) + " " + s.scrollWidth + " > " + s.clientWidth);
    for (const e of document.querySelectorAll(".panel .sub, td, th"))
        if (e.scrollWidth > e.clientWidth + 1)
            out.push("clipped " + e.tagName + " " + (e.id || e.className) + ": " + e.textContent.slice(0, 60));
    return out;"#;

async fn assert_nothing_clipped(b: &Browser, width: u32) {
    let wide = b.js(OVERFLOW).await;
    assert_eq!(
        wide.as_array().map(Vec::len),
        Some(0),
        "at {width} px something is wider than its box: {wide}"
    );
}

/// Waits until the page has refreshed itself once more (it does every 3 s).
async fn after_a_refresh(b: &Browser) {
    let before = b.js("return document.getElementById('live-text').textContent").await;
    let script = format!("return document.getElementById('live-text').textContent !== {before}");
    b.until("the page to refresh itself", &script).await;
}

/// What the flash says after an action: whether it went through, and the server's message
/// (the flash is dismissed then, so that the next action's is its own).
async fn flash(b: &Browser, what: &str) -> (bool, String) {
    let v = b
        .until(
            what,
            "const f = document.getElementById('flash'); \
             return !f.hidden && f.dataset.ok ? [f.dataset.ok, document.getElementById('flash-text').textContent] : null",
        )
        .await;
    b.click("#flash-close").await;
    (v[0] == "1", v[1].as_str().unwrap_or_default().to_owned())
}

/// The flash says the action went through; returns its text.
async fn flash_ok(b: &Browser, what: &str) -> String {
    let (ok, text) = flash(b, what).await;
    assert!(ok, "{what}: the page says it failed: {text}");
    text
}

/// Opens the confirmation dialog with `button`, types `reason` (when given) and confirms.
async fn confirm(b: &Browser, button: &str, reason: Option<&str>) {
    b.click(button).await;
    b.until(
        "the confirmation dialog",
        "return document.getElementById('confirm').open",
    )
    .await;
    if let Some(r) = reason {
        b.type_into("#confirm-reason", r).await;
    }
    b.click("#confirm-ok").await;
    b.until("the dialog to close", "return !document.getElementById('confirm').open")
        .await;
}

/// A script answering the tenant's `data-state` on the page.
fn state_of(tenant: &str) -> String {
    format!("return document.querySelector('#tenants tr[data-tenant=\"{tenant}\"]')?.dataset.state")
}

/// A script answering whether the tenant's row shows `state`.
fn shows_state(tenant: &str, state: &str) -> String {
    format!("{} === '{state}'", state_of(tenant))
}

/// The page in a real browser, clicked: log in with a `crmsync keygen` token; see the fleet
/// (tenants with their states and run bars, queues, workers, charts, dead letters, rejected
/// records); a refresh keeps an open dialog, a ticked box and an open payload; pause (a reason
/// is required) and resume a tenant; retry a dead letter whose run is gone (refused, and said
/// why) and one that can be (back in its queue); filter by code; purge a ticked dead letter,
/// then every one matching a tenant filter; retry a ticked rejected record; cancel a run. Each is checked in Redis and in the audit stream, and
/// nothing needs a horizontal scroll at 1,280 px. Screenshots: `target/dashboard-1280.png`,
/// `target/dashboard-1920.png` (whole pages, after the actions) and
/// `target/dashboard-1280-start.png` (before them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_pauses_and_resumes_by_clicking_in_chromium() {
    let redis = RedisServer::start();
    let writes_dead = seed_writes_dead_letter(&redis).await;
    let seeded = seed(&redis).await;
    seed_history(&redis).await;
    let maintenance_dead = seed_maintenance_dead_letter(&redis, "globex").await;
    // One more, left on the page for the screenshots.
    let kept_dead = seed_maintenance_dead_letter(&redis, "initech").await;
    let c = conn(&redis);
    let backfill = JobQueue::<BackfillPage>::new(c.clone(), crmsync_producer::backfill_queue(NS));
    let maintenance = JobQueue::<Maintenance>::new(c.clone(), crmsync_producer::maintenance_queue(NS));
    let writes = JobQueue::<FlushWrites>::new(c.clone(), crmsync_producer::writes_queue(NS));
    let writes_job = writes
        .dead_letter(&writes_dead)
        .await
        .expect("read")
        .expect("dead flush")
        .job_id;
    let writes_pending = writes.stats().await.expect("stats").pending;
    let hooli_dead = backfill.dead_letters(10).await.expect("dead letters");
    let [hooli_dead] = hooli_dead.as_slice() else {
        panic!("one dead backfill page: {hooli_dead:?}")
    };

    let token = keygen();
    let port = free_port();
    let mut child = dashboard(&redis, port, &token);
    let base = format!("http://127.0.0.1:{port}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the dashboard answers /healthz", || {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(child.is_running(), "dashboard exited: {}", child.output());

    let b = Browser::start(1280, 900).await;

    // Log in: the token is traded for a session cookie and leaves the address bar.
    b.goto(&format!("{base}/?token={token}&as={OPERATOR}")).await;
    b.until("the page's data", "return document.body.dataset.loaded === '1'")
        .await;
    let url = b.client.current_url().await.expect("url");
    assert_eq!(url.as_str(), format!("{base}/"), "the token left the address bar");
    b.until(
        "the dead letters listed",
        "return document.querySelectorAll('#dead-table tr[data-dead-id]').length === 4",
    )
    .await;

    // ---- what the page shows ----
    let dom = b.dom().await;
    for tenant in ["acme", "globex", "hooli", "initech"] {
        assert!(
            dom.contains(&format!("data-tenant=\"{tenant}\"")),
            "no row for {tenant}"
        );
    }
    for text in [
        PAUSE_REASON,
        "budget used: crmsync used 98 of 100",
        "the CRM answered 429",
        "pages read",
        "4 / 8",
        " / 800 credits (",
        DEAD_REASON,
        MAINTENANCE_REASON,
        WRITES_REASON,
        "record rejected",
        "broken@example.com",
        "data-queue=\"backfill\"",
        "data-queue=\"writes\"",
        "data-queue=\"maintenance\"",
        "<span class=\"badge ok\">alive</span>",
        "<span class=\"badge stopped\">stopped</span>",
    ] {
        assert!(dom.contains(text), "{text:?} not rendered:\n{dom}");
    }
    // Each tenant's state.
    for (tenant, state) in [
        ("acme", "running"),
        ("globex", "paused"),
        ("hooli", "cooldown"),
        ("initech", "budget"),
    ] {
        assert_eq!(b.js(&state_of(tenant)).await, state, "{tenant}'s state");
    }
    // Charts: SVG drawn by the script from /api/series.
    for chart in ["chart-throughput", "chart-429", "chart-credits", "chart-window"] {
        let drawn = b
            .js(&format!(
                "return document.querySelectorAll('#{chart} polyline, #{chart} rect').length"
            ))
            .await;
        assert!(drawn.as_u64() > Some(0), "{chart} has nothing drawn");
    }
    assert!(dom.contains("data-series=\"backfill\"") && dom.contains("data-series=\"writes\""));
    assert!(dom.contains("class=\"ref\""), "the budget line is drawn");
    assert_nothing_clipped(&b, 1280).await;
    // The fleet before any action (a run in progress, dead letters waiting): the README's
    // picture is made from this one.
    b.screenshot_page(1280, 900, &target_dir().join("dashboard-1280-start.png"))
        .await;

    // ---- a refresh keeps what the operator has open ----
    let maint_row = format!("#dead-table tr[data-dead-id=\"{maintenance_dead}\"][data-queue=\"maintenance\"]");
    b.click(&format!("{maint_row} input.pick")).await;
    b.click(&format!("{maint_row} button[data-action=dead-payload]")).await;
    let payload = b
        .until(
            "the payload shown",
            &format!(
                "const p = document.querySelector('tr[data-payload-of=\"maintenance/{maintenance_dead}\"]'); \
                 return p && !p.hidden && p.textContent"
            ),
        )
        .await;
    assert!(
        payload.as_str().is_some_and(|p| p.contains("\"zoho-old\"")),
        "the payload, pretty-printed: {payload}"
    );
    b.click("#tenants tr[data-tenant=\"acme\"] button[data-action=tenant-pause]")
        .await;
    b.until("the pause dialog", "return document.getElementById('confirm').open")
        .await;
    after_a_refresh(&b).await;
    after_a_refresh(&b).await;
    let kept = b
        .js(&format!(
            "return [document.getElementById('confirm').open, \
                     document.querySelector('{maint_row} input.pick').checked, \
                     !document.querySelector('tr[data-payload-of=\"maintenance/{maintenance_dead}\"]').hidden]"
        ))
        .await;
    assert_eq!(
        kept,
        serde_json::json!([true, true, true]),
        "dialog open, box ticked, payload open"
    );

    // ---- pause acme (the dialog is open): a reason is required ----
    b.click("#confirm-ok").await;
    let err = b
        .until(
            "the dialog to ask for a reason",
            "return document.getElementById('confirm-error').textContent",
        )
        .await;
    assert!(err.as_str().is_some_and(|e| e.contains("reason")), "{err}");
    b.type_into("#confirm-reason", PAUSE_WHY).await;
    b.click("#confirm-ok").await;
    flash_ok(&b, "acme paused").await;
    let pause_key = TenantKeys::new(NS, "acme").pause();
    let reason: Option<String> = redis::cmd("HGET")
        .arg(&pause_key)
        .arg("reason")
        .query(&mut redis.conn())
        .expect("pause");
    assert_eq!(
        reason.as_deref(),
        Some(PAUSE_WHY),
        "acme is paused in Redis with the reason"
    );
    b.until("acme shown paused", &shows_state("acme", "paused")).await;
    b.until(
        "acme's reason shown",
        &format!(
            "return document.querySelector('#tenants tr[data-tenant=\"acme\"]').textContent.includes('{PAUSE_WHY}')"
        ),
    )
    .await;
    // Its run's bars take the paused colour, not green.
    let bars = b
        .js(
            "return Array.from(document.querySelectorAll('#tenants tr[data-tenant=\"acme\"] .bar.k-paused > span'))\
               .map(s => getComputedStyle(s).backgroundColor)",
        )
        .await;
    let bars = bars.as_array().cloned().unwrap_or_default();
    assert!(!bars.is_empty(), "acme's run bars are in the paused colour");
    for c in &bars {
        assert_ne!(c, "rgb(31, 157, 85)", "a paused tenant's bar is not green");
    }

    // ---- resume acme ----
    confirm(
        &b,
        "#tenants tr[data-tenant=\"acme\"] button[data-action=tenant-resume]",
        Some(RESUME_WHY),
    )
    .await;
    flash_ok(&b, "acme resumed").await;
    let paused: bool = redis::cmd("EXISTS")
        .arg(&pause_key)
        .query(&mut redis.conn())
        .expect("exists");
    assert!(!paused, "acme is no longer paused in Redis");
    b.until("acme shown running", &shows_state("acme", "running")).await;

    // ---- retry hooli's dead backfill page: refused, its run is gone; the page says why ----
    let hooli_row = format!(
        "#dead-table tr[data-dead-id=\"{}\"][data-queue=\"backfill\"]",
        hooli_dead.dead_id
    );
    confirm(&b, &format!("{hooli_row} button[data-action=dead-retry]"), None).await;
    let (ok, said) = flash(&b, "the retry refused").await;
    assert!(!ok && said.contains("hooli-run no longer exists"), "{said}");
    assert!(
        backfill.dead_letter(&hooli_dead.dead_id).await.expect("read").is_some(),
        "a refused retry leaves the dead letter"
    );

    // ---- retry acme's dead flush: it leaves the dead letters and is back in its queue ----
    let row = format!("#dead-table tr[data-dead-id=\"{writes_dead}\"][data-queue=\"writes\"]");
    confirm(&b, &format!("{row} button[data-action=dead-retry]"), None).await;
    let said = flash_ok(&b, "the dead letter retried").await;
    assert!(said.contains("retried"), "the server's message is shown: {said}");
    assert_eq!(
        writes.dead_letter(&writes_dead).await.expect("read"),
        None,
        "the dead letter left the dead-letter stream"
    );
    let stats = writes.stats().await.expect("stats");
    // The live writes worker holds two flushes (its concurrency): the retried one waits.
    assert_eq!(
        (stats.dead, stats.pending),
        (0, writes_pending + 1),
        "the flush is back in its queue"
    );
    let job_id = writes_job.clone().expect("a job id");
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&writes.keys().stream)
        .arg("-")
        .arg("+")
        .query(&mut redis.conn())
        .expect("xrange");
    assert!(
        entries.iter().any(|(_, f)| f.iter().any(|(_, v)| *v == job_id)),
        "job {job_id} is in the writes stream again"
    );
    b.until(
        "the retried row gone",
        &format!("return !document.querySelector('{row}')"),
    )
    .await;

    // ---- the filters: by code (each code's meaning on hover) ----
    let meaning = b
        .js(&format!(
            "return document.querySelector('{hooli_row} td[title]')?.title"
        ))
        .await;
    assert_eq!(meaning, "Zoho refused the request's data", "INVALID_DATA's meaning");
    b.find("#dead-code")
        .await
        .select_by_value("REDIS")
        .await
        .expect("choose a code");
    b.until(
        "only the REDIS dead letters",
        "const rows = Array.from(document.querySelectorAll('#dead-table tr[data-dead-id]')); \
         return rows.length === 2 && rows.every(r => r.dataset.queue === 'maintenance')",
    )
    .await;
    b.find("#dead-code")
        .await
        .select_by_value("")
        .await
        .expect("every code");
    b.until(
        "every dead letter again",
        "return document.querySelectorAll('#dead-table tr[data-dead-id]').length === 3",
    )
    .await;

    // ---- purge the ticked maintenance dead letter (still ticked after all that) ----
    assert_eq!(
        b.js(&format!(
            "return document.querySelector('{maint_row} input.pick').checked"
        ))
        .await,
        true
    );
    confirm(&b, "#dead-purge-selected", Some(PURGE_WHY)).await;
    flash_ok(&b, "the dead letter purged").await;
    assert_eq!(
        maintenance.dead_letter(&maintenance_dead).await.expect("read"),
        None,
        "the purged dead letter is gone"
    );
    let stats = maintenance.stats().await.expect("stats");
    assert_eq!(
        (stats.dead, stats.pending),
        (1, 0),
        "the other stays; the purged one was not run"
    );

    // ---- purge every dead letter matching a filter: hooli's only; initech's stays ----
    b.find("#dead-tenant")
        .await
        .select_by_value("hooli")
        .await
        .expect("choose a tenant");
    b.until(
        "only hooli's dead letter",
        "const rows = Array.from(document.querySelectorAll('#dead-table tr[data-dead-id]')); \
         return rows.length === 1 && rows[0].dataset.queue === 'backfill'",
    )
    .await;
    confirm(&b, "#dead-purge-all", Some(PURGE_ALL_WHY)).await;
    flash_ok(&b, "hooli's dead letters purged").await;
    assert_eq!(
        backfill.dead_letter(&hooli_dead.dead_id).await.expect("read"),
        None,
        "hooli's dead letter is gone"
    );
    assert_eq!(
        maintenance.stats().await.expect("stats").dead,
        1,
        "the other tenant's stays"
    );
    b.find("#dead-tenant")
        .await
        .select_by_value("")
        .await
        .expect("every tenant");
    b.until(
        "initech's dead letter, alone",
        "return document.querySelectorAll('#dead-table tr[data-dead-id]').length === 1",
    )
    .await;

    // ---- retry acme's rejected record, ticked: forgotten, and a flush re-reads the contact ----
    let rejected_key = crate::support::dest(&redis, "acme").await.rejected();
    b.click("#rejected-table tr[data-tenant=\"acme\"][data-contact=\"c-17\"] input.pick")
        .await;
    confirm(&b, "#rejected-retry-selected", None).await;
    flash_ok(&b, "the rejected record retried").await;
    let left: u64 = redis::cmd("XLEN")
        .arg(&rejected_key)
        .query(&mut redis.conn())
        .expect("xlen");
    assert_eq!(left, 0, "acme's rejection is forgotten");
    assert_eq!(
        writes.stats().await.expect("stats").pending,
        writes_pending + 2,
        "a flush to re-read it is scheduled"
    );
    b.until(
        "the rejected row gone",
        "return !document.querySelector('#rejected-table tr[data-contact=\"c-17\"]')",
    )
    .await;

    // ---- cancel acme's run ----
    confirm(
        &b,
        "#tenants tr[data-tenant=\"acme\"] button[data-action=run-cancel]",
        Some(CANCEL_WHY),
    )
    .await;
    flash_ok(&b, "acme's run cancelled").await;
    let run = crmsync_producer::RunStore::new(c.clone(), NS)
        .get("acme", &seeded.acme_run)
        .await
        .expect("acme's run");
    assert!(!run.status.is_active(), "acme's run ended: {:?}", run.status);
    b.until(
        "acme's Cancel button gone",
        "return !document.querySelector('#tenants tr[data-tenant=\"acme\"] button[data-action=run-cancel]')",
    )
    .await;

    // ---- the audit: on the page, and in Redis ----
    b.until(
        "eight actions in the audit section",
        "return document.querySelectorAll('#audit-table tr[data-audit-id]').length === 8",
    )
    .await;
    let audit_text = b.js("return document.getElementById('audit-table').textContent").await;
    let audit_text = audit_text.as_str().unwrap_or_default();
    for text in [
        OPERATOR,
        PAUSE_WHY,
        RESUME_WHY,
        PURGE_WHY,
        PURGE_ALL_WHY,
        CANCEL_WHY,
        "acme",
    ] {
        assert!(
            audit_text.contains(text),
            "{text:?} not in the audit section: {audit_text}"
        );
    }
    let audit = crmsync_ops::Audit::new(c.clone(), NS)
        .list(50, None)
        .await
        .expect("audit stream");
    let actions: Vec<(&str, &str, &str)> = audit
        .iter()
        .rev()
        .map(|e| (e.who.as_str(), e.via.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions.iter().map(|a| a.2).collect::<Vec<_>>(),
        [
            "tenant.pause",
            "tenant.resume",
            "dead.retry",
            "dead.retry",
            "dead.purge",
            "dead.purge",
            "rejected.retry",
            "run.cancel"
        ],
        "the audit stream, oldest first: {audit:?}"
    );
    for (who, via, action) in actions {
        assert!(who.contains(OPERATOR), "{action} recorded as done by {who}");
        assert_eq!(via, "dashboard", "{action}");
    }
    let pause = audit.iter().find(|e| e.action == "tenant.pause").expect("pause");
    assert!(pause.target.contains("acme") && pause.reason == PAUSE_WHY, "{pause:?}");

    // ---- nothing clipped at 1,280 px, with everything shown; screenshots ----
    // The dead letter left, with its payload open.
    let kept_row = format!("#dead-table tr[data-dead-id=\"{kept_dead}\"][data-queue=\"maintenance\"]");
    b.click(&format!("{kept_row} button[data-action=dead-payload]")).await;
    assert_nothing_clipped(&b, 1280).await;
    let target = target_dir();
    for (w, h) in [(1280, 900), (1920, 1080)] {
        b.viewport(w, h).await;
        assert_nothing_clipped(&b, w).await;
        let shot = target.join(format!("dashboard-{w}.png"));
        b.screenshot_page(w, h, &shot).await;
        let png = std::fs::read(&shot).expect("screenshot written");
        assert!(png.len() > 30_000, "a whole page, not a blank one: {} bytes", png.len());
        println!("screenshot: {}", shot.display());
    }

    // ---- one tenant's charts by link: its credits against its own budget ----
    b.goto("about:blank").await;
    b.goto(&format!("{base}/#tenant=initech")).await;
    b.until(
        "initech's window chart",
        "return document.getElementById('sub-window').textContent.includes('98 of 100 allowed (98.0%)')",
    )
    .await;
    let sub = b.js("return document.getElementById('sub-429').textContent").await;
    assert_eq!(sub, Value::from("last hour · tenant initech"), "initech's 429 chart");

    b.close().await;
    assert!(!child.output().contains(&token), "the token is never logged");
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
