//! The dashboard's actions over HTTP against a real Redis: what they change there, what the
//! audit stream records, and the cross-site checks a browser session must pass.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE as COOKIE_HEADER, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use crmsync_limits::Limiter;
use crmsync_ops::Audit;
use crmsync_queue::JobQueue;
use crmsync_tenants::TenantKeys;
use crmsync_testkit::RedisServer;

use crate::support::{MAINTENANCE_REASON, NS, conn, seed, seed_maintenance_dead_letter};
use crate::web::{TOKEN, start};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Logs in as `name` with `?token=`; returns the session cookie and the page's CSRF token.
async fn login(http: &reqwest::Client, base: &str, token: &str, name: &str) -> (String, String) {
    let r = http
        .get(format!("{base}/?token={token}&as={name}"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "login with {token}");
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let page = http
        .get(format!("{base}/"))
        .header(COOKIE_HEADER, &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("page");
    let csrf = page
        .split("<meta name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("the page carries its session's CSRF token:\n{page}"))
        .to_owned();
    assert_eq!(csrf.len(), 64, "{csrf}");
    (cookie, csrf)
}

async fn pause_reason(redis: &RedisServer, tenant: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(TenantKeys::new(NS, tenant).pause())
        .arg("reason")
        .query_async(&mut conn(redis))
        .await
        .expect("hget")
}

async fn audit_len(redis: &RedisServer) -> usize {
    Audit::new(conn(redis), NS)
        .list(1_000, None)
        .await
        .expect("audit")
        .len()
}

/// A token holding `+` and `/` logs in as written in the URL (and `%2B` too); a wrong one gets
/// the login page. A change made with a session must come from the dashboard's own origin with
/// the session's CSRF token and a JSON body; every refusal leaves Redis and the audit stream as
/// they were. The accepted pause and resume change Redis and are recorded with who did them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_changes_the_fleet_only_from_its_own_page_and_every_change_is_audited() {
    let redis = RedisServer::start();
    let seeded = seed(&redis).await;
    let (base, _stop) = start(&redis).await;
    let http = client();

    // The old complaint: a base64 token with `+` got 401. Both spellings log in now.
    let plus = format!("{base}/?token={}", TOKEN.replace('+', "%2B"));
    assert!(
        TOKEN.contains('+') && TOKEN.contains('/'),
        "the test token has the characters that broke"
    );
    assert_eq!(
        http.get(&plus).send().await.expect("login").status(),
        StatusCode::SEE_OTHER
    );
    let r = http
        .get(format!("{base}/?token=nope-nope-nope-nope"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = r.text().await.expect("401 page");
    assert!(
        page.contains("not this dashboard's token") && page.contains("crmsync keygen"),
        "{page}"
    );
    let r = http.get(format!("{base}/")).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.expect("page").contains("CRMSYNC_DASHBOARD_TOKEN"));

    let (cookie, csrf) = login(&http, &base, TOKEN, "alice").await;
    let (_, other_csrf) = login(&http, &base, TOKEN, "bob").await;
    assert_ne!(csrf, other_csrf, "a CSRF token per session");
    let host = base.trim_start_matches("http://");
    let pause = json!({"tenant": "acme", "reason": "CRM maintenance window"}).to_string();
    let post = |origin: Option<&str>, csrf: Option<&str>, ctype: &str| {
        let mut r = http
            .post(format!("{base}/api/tenants/pause"))
            .header(COOKIE_HEADER, &cookie)
            .header(CONTENT_TYPE, ctype)
            .body(pause.clone());
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        if let Some(c) = csrf {
            r = r.header("X-CSRF-Token", c);
        }
        r
    };
    let own = format!("http://{host}");
    for (what, req) in [
        ("no Origin", post(None, Some(&csrf), "application/json")),
        (
            "another site",
            post(Some("https://evil.example"), Some(&csrf), "application/json"),
        ),
        (
            "a look-alike port",
            post(Some("http://127.0.0.1:1"), Some(&csrf), "application/json"),
        ),
        ("no CSRF token", post(Some(&own), None, "application/json")),
        (
            "another session's CSRF token",
            post(Some(&own), Some(&other_csrf), "application/json"),
        ),
        ("a form body", post(Some(&own), Some(&csrf), "text/plain")),
    ] {
        let r = req.send().await.expect("post");
        let status = r.status();
        let body: Value = r.json().await.expect("json error");
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{what}: {status} {body}"
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
    }
    let r = http
        .post(format!("{base}/api/tenants/pause"))
        .header(CONTENT_TYPE, "application/json")
        .body(pause.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no session, no token");
    assert_eq!(
        pause_reason(&redis, "acme").await,
        None,
        "nothing refused changed Redis"
    );
    assert_eq!(audit_len(&redis).await, 0, "nothing refused was recorded");

    let r = post(Some(&own), Some(&csrf), "application/json")
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("paused")), "{body}");
    assert_eq!(
        pause_reason(&redis, "acme").await.as_deref(),
        Some("CRM maintenance window")
    );
    let status: Value = http
        .get(format!("{base}/api/status"))
        .header(COOKIE_HEADER, &cookie)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let acme = status["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == "acme"))
        .expect("acme");
    assert_eq!(acme["state"]["kind"], "paused", "{acme}");
    assert_eq!(acme["state"]["reason"], "CRM maintenance window");

    // A script with the bearer token needs no Origin or CSRF token (it holds no ambient
    // credential a page could borrow).
    let r = http
        .post(format!("{base}/api/tenants/resume"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .body(json!({"tenant": "acme", "reason": "window over"}).to_string())
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(pause_reason(&redis, "acme").await, None);
    let r = http
        .post(format!("{base}/api/tenants/pause"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .body(json!({"tenant": "nobody", "reason": "x"}).to_string())
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http
        .post(format!("{base}/api/tenants/pause"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let audit: Value = http
        .get(format!("{base}/api/audit"))
        .header(COOKIE_HEADER, &cookie)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{audit}");
    assert_eq!(items[0]["action"], "tenant.resume");
    assert_eq!(items[0]["reason"], "window over");
    assert!(
        items[0]["who"].as_str().is_some_and(|w| w.starts_with("token holder")),
        "{audit}"
    );
    assert_eq!(items[1]["action"], "tenant.pause");
    assert_eq!(items[1]["via"], "dashboard");
    assert_eq!(items[1]["target"], "tenant acme");
    assert_eq!(items[1]["reason"], "CRM maintenance window");
    let who = items[1]["who"].as_str().expect("who");
    assert!(who.starts_with("alice (session ") && who.contains("127.0.0.1"), "{who}");
    assert!(items[1]["at_ms"].as_u64().is_some_and(|t| t > 0));
    assert!(!Limiter::new(conn(&redis), NS).resume("acme").await.expect("resume"));

    seeded.gate.add_permits(10);
    seeded.writes_worker.stop().await;
}

/// Dead letters listed with code, reason, attempts and payload, per queue and tenant; one
/// retried (its job is queued again), a backfill page of a run that no longer exists refused
/// with why, the rest purged as "all matching"; a rejected record retried (re-read requested,
/// rejection forgotten); a run cancelled. Each is in the audit stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_rejected_records_and_runs_are_handled_from_the_api() {
    let redis = RedisServer::start();
    let seeded = seed(&redis).await;
    let maintenance_dead = seed_maintenance_dead_letter(&redis, "globex").await;
    let (base, _stop) = start(&redis).await;
    let http = client();
    let bearer = format!("Bearer {TOKEN}");
    let get = |path: &str| http.get(format!("{base}{path}")).header(AUTHORIZATION, &bearer);
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .header(AUTHORIZATION, &bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
    };

    let all: Value = get("/api/dead").send().await.expect("dead").json().await.expect("json");
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{all}");
    assert_eq!(items[0]["dead_id"], maintenance_dead.as_str(), "newest first");
    assert_eq!(items[0]["queue"], "maintenance");
    assert_eq!(items[0]["tenant"], "globex");
    assert_eq!(items[0]["reason"], MAINTENANCE_REASON);
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["payload"]["dest"], "zoho-old", "the payload as JSON");
    assert_eq!(items[1]["queue"], "backfill");
    assert_eq!(items[1]["tenant"], "hooli");
    assert_eq!(items[1]["code"], "INVALID_DATA");
    assert!(items[1]["code_meaning"].as_str().is_some_and(|m| !m.is_empty()));
    let hooli: Value = get("/api/dead?tenant=hooli")
        .send()
        .await
        .expect("dead")
        .json()
        .await
        .expect("json");
    assert_eq!(hooli["items"].as_array().map(Vec::len), Some(1));
    let writes: Value = get("/api/dead?queue=writes")
        .send()
        .await
        .expect("dead")
        .json()
        .await
        .expect("json");
    assert_eq!(writes["items"].as_array().map(Vec::len), Some(0));
    let r = get("/api/dead?code=NOT_A_CODE").send().await.expect("dead");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = get("/api/dead?queue=elsewhere").send().await.expect("dead");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Retry one: the maintenance job is queued again; the id is no dead letter any more.
    let r = post(
        "/api/dead/retry",
        json!({"items": [{"queue": "maintenance", "dead_id": maintenance_dead}]}),
    )
    .send()
    .await
    .expect("retry");
    assert_eq!(r.status(), StatusCode::OK);
    let out: Value = r.json().await.expect("json");
    assert_eq!(out["done"], 1, "{out}");
    let maintenance =
        JobQueue::<crmsync_producer::Maintenance>::new(conn(&redis), crmsync_producer::maintenance_queue(NS));
    assert!(
        maintenance
            .dead_letter(&maintenance_dead)
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(maintenance.stats().await.expect("stats").pending, 1, "queued again");

    // The backfill page's run does not exist: not retried, and the answer says why.
    let r = post("/api/dead/retry", json!({"all": true, "tenant": "hooli"}))
        .send()
        .await
        .expect("retry");
    let out: Value = r.json().await.expect("json");
    assert_eq!(out["done"], 0, "{out}");
    assert!(
        out["skipped"][0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("no longer exists")),
        "{out}"
    );
    assert!(post("/api/dead/retry", json!({})).send().await.expect("retry").status() == StatusCode::BAD_REQUEST);

    // Purge all matching the queue filter.
    let out: Value = post(
        "/api/dead/purge",
        json!({"all": true, "queue": "backfill", "reason": "run is gone"}),
    )
    .send()
    .await
    .expect("purge")
    .json()
    .await
    .expect("json");
    assert_eq!(out["done"], 1, "{out}");
    let left: Value = get("/api/dead").send().await.expect("dead").json().await.expect("json");
    assert_eq!(left["items"].as_array().map(Vec::len), Some(0), "{left}");

    // Rejected records: listed for every tenant; retried by contact.
    let rejected: Value = get("/api/rejected")
        .send()
        .await
        .expect("rejected")
        .json()
        .await
        .expect("json");
    let items = rejected["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{rejected}");
    assert_eq!(items[0]["tenant"], "acme");
    assert_eq!(items[0]["contact_id"], "c-17");
    assert_eq!(items[0]["code"], "INVALID_DATA");
    let r = get("/api/rejected?tenant=nobody").send().await.expect("rejected");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let out: Value = post("/api/rejected/retry", json!({"tenant": "acme", "contacts": ["c-17"]}))
        .send()
        .await
        .expect("retry")
        .json()
        .await
        .expect("json");
    assert_eq!(out["done"], 1, "{out}");
    assert_eq!(out["forgotten"], 1, "{out}");
    let rejected: Value = get("/api/rejected?tenant=acme")
        .send()
        .await
        .expect("rejected")
        .json()
        .await
        .expect("json");
    assert_eq!(rejected["items"].as_array().map(Vec::len), Some(0));

    // Cancel acme's run.
    let out: Value = post(
        "/api/runs/cancel",
        json!({"run_id": seeded.acme_run, "reason": "wrong org"}),
    )
    .send()
    .await
    .expect("cancel")
    .json()
    .await
    .expect("json");
    assert!(
        out["message"].as_str().is_some_and(|m| m.contains("cancelled")),
        "{out}"
    );
    let run = crmsync_producer::RunStore::new(conn(&redis), NS)
        .get("acme", &seeded.acme_run)
        .await
        .expect("run");
    assert_eq!(run.status, crmsync_producer::RunStatus::Cancelled);
    assert_eq!(run.error.as_deref(), Some("wrong org"));
    let r = post("/api/runs/cancel", json!({"run_id": "no-such-run"}))
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let audit = Audit::new(conn(&redis), NS).list(50, None).await.expect("audit");
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["run.cancel", "rejected.retry", "dead.purge", "dead.retry", "dead.retry"],
        "{audit:#?}"
    );
    assert_eq!(audit[2].reason, "run is gone");
    assert!(audit[2].target.contains("queue backfill"), "{:?}", audit[2]);
    assert!(
        audit[4].outcome.starts_with("1 dead letter(s) retried"),
        "{:?}",
        audit[4]
    );

    seeded.gate.add_permits(10);
    seeded.writes_worker.stop().await;
}
