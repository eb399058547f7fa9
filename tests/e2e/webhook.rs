//! The webhook receiver: Nylas's challenge, signatures, bad input, deduplication.

use std::io::Write;
use std::time::Duration;

use crmsync_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::{crmsync_output, webhook_server};

const SECRET: &str = "whsec-current-0123456789";
const NEXT: &str = "whsec-next-9876543210";

fn contact_event(id: &str, grant: &str, contact: &str, email: &str, time: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0", "type": "contact.updated", "source": "/google/contacts/incremental",
        "id": id, "time": time, "webhook_delivery_attempt": 1,
        "data": {"application_id": "app", "object": {
            "id": contact, "grant_id": grant, "object": "contact",
            "given_name": "Ada", "surname": "Lovelace", "emails": [{"email": email, "type": "work"}]
        }}
    }))
    .expect("json")
}

/// What the receiver recorded for tenant `acme`: buffered changes, known contacts, seen ids.
fn recorded(redis: &RedisServer) -> (u64, u64, usize) {
    let mut c = redis.conn();
    let t = crmsync_tenants::TenantKeys::new("crmsync", "acme");
    let dest: String = redis::cmd("GET").arg(t.live()).query(&mut c).expect("live");
    let d = t.dest(&dest);
    let buffered: u64 = redis::cmd("HLEN").arg(d.queue()).query(&mut c).expect("hlen");
    // The contact state lives in buckets: count every bucket's entries.
    let buckets: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", d.contacts_prefix()))
        .query(&mut c)
        .expect("keys");
    let mut contacts = 0;
    for b in buckets {
        let n: u64 = redis::cmd("HLEN").arg(b).query(&mut c).expect("hlen");
        contacts += n;
    }
    let seen: usize = redis::cmd("ZCARD").arg(t.seen()).query(&mut c).expect("zcard");
    (buffered, contacts, seen)
}

/// `GET <url>?challenge=<c>` answers 200 with exactly `c`.
async fn answers_challenge(http: &reqwest::Client, url: &str, challenge: &str) {
    let r = http
        .get(format!("{url}?challenge={challenge}"))
        .send()
        .await
        .expect("challenge");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("text"), challenge);
}

/// Adds tenant `acme` (grant `grant-acme`, webhook secret [`SECRET`]).
fn add_acme(redis: &RedisServer, key: &str) {
    let (code, out, err) = crmsync_output(
        redis,
        key,
        &[
            "tenant",
            "add",
            "acme",
            "--nylas-grant-id",
            "grant-acme",
            "--nylas-api-key",
            "nyk",
            "--zoho-region",
            "us",
            "--zoho-client-id",
            "cid",
            "--zoho-client-secret",
            "cs",
            "--webhook-secret",
            SECRET,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// Nylas's challenge is echoed raw; a signed notification is recorded once; a wrong or
/// missing signature, malformed JSON, an unknown event type and an oversize body are refused
/// with the right status and record nothing; an unknown grant is acknowledged and counted; the
/// server keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_refuses_bad_input_and_records_good_notifications_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);
    let (_server, base) = webhook_server(&redis, &key, &["--max-body-bytes", "4096"]).await;
    let url = format!("{base}/webhooks/nylas");
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>, sig: Option<String>, gzip: bool| {
        let mut req = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(s) = sig {
            req = req.header("x-nylas-signature", s);
        }
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        req.send()
    };
    let sign = |secret: &str, body: &[u8]| crmsync_webhook::signature::sign(secret, body);

    answers_challenge(&http, &url, "abc-XYZ_123").await;

    let good = contact_event("n1", "grant-acme", "c1", "ada@example.com", 1_700_000_000);
    let r = post(good.clone(), Some(sign(SECRET, &good)), false)
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(recorded(&redis), (1, 1, 1));

    let cases: Vec<(Vec<u8>, Option<String>, u16)> = vec![
        // Wrong secret, a signature of another body, none at all.
        (
            contact_event("n2", "grant-acme", "c2", "b@example.com", 1),
            Some(sign("wrong", b"x")),
            401,
        ),
        (
            contact_event("n3", "grant-acme", "c3", "c@example.com", 1),
            Some(sign(SECRET, &good)),
            401,
        ),
        (contact_event("n4", "grant-acme", "c4", "d@example.com", 1), None, 401),
        // Malformed JSON, an unknown type, an oversize body.
        (b"{\"id\": \"n5\", \"type\": ".to_vec(), None, 400),
        {
            let b = serde_json::to_vec(&json!({"id":"n6","type":"grant.expired","time":1,"data":{"object":{"grant_id":"grant-acme","id":"x"}}})).expect("json");
            let s = sign(SECRET, &b);
            (b, Some(s), 400)
        },
        {
            let mut b = contact_event("n7", "grant-acme", "c7", "e@example.com", 1);
            b.extend(std::iter::repeat_n(b' ', 5000));
            let s = sign(SECRET, &b);
            (b, Some(s), 413)
        },
    ];
    for (body, sig, want) in cases {
        let r = post(body, sig, false).await.expect("post");
        assert_eq!(r.status().as_u16(), want);
    }
    assert_eq!(recorded(&redis), (1, 1, 1), "nothing recorded for refused requests");

    // Hardening: a signed notification with an implausible time (u64::MAX would wrap in
    // milliseconds and freeze the contact) is refused with a clear status; a real time later
    // is still taken.
    for (id, time) in [("n10", u64::MAX), ("n11", 0), ("n12", 4_102_444_800)] {
        let b = contact_event(id, "grant-acme", "c1", "ada@example.com", time);
        let r = post(b.clone(), Some(sign(SECRET, &b)), false).await.expect("post");
        assert_eq!(r.status(), 400, "time {time}");
        assert!(r.text().await.expect("text").contains("implausible notification time"));
    }
    assert_eq!(recorded(&redis), (1, 1, 1), "an implausible time records nothing");

    // An unknown grant is acknowledged (so Nylas does not retry it for days) and counted.
    let stray = contact_event("n8", "grant-nobody", "c8", "f@example.com", 1);
    let r = post(stray.clone(), Some(sign(SECRET, &stray)), false)
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["reason"], "unknown grant");
    let stats: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg("crmsync:webhook:stats")
        .query(&mut redis.conn())
        .expect("stats");
    assert_eq!(stats.get("unknown_grant"), Some(&1));
    assert_eq!(stats.get("bad_signature"), Some(&2));
    assert_eq!(stats.get("unsigned"), Some(&1));

    // A duplicate delivery is acknowledged and not recorded again.
    let r = post(good.clone(), Some(sign(SECRET, &good)), false)
        .await
        .expect("post");
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "duplicate");
    assert_eq!(recorded(&redis), (1, 1, 1));

    // Rotation: the next secret is accepted alongside the current one; compressed delivery
    // is signed over the gzip bytes.
    let (code, _, err) = crmsync_output(&redis, &key, &["tenant", "set", "acme", "--webhook-secret-next", NEXT]);
    assert_eq!(code, 0, "{err}");
    let next = contact_event("n9", "grant-acme", "c9", "g@example.com", 1_700_000_100);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&next).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let r = post(gz.clone(), Some(sign(NEXT, &gz)), true).await.expect("post");
    assert_eq!(r.status(), 200);
    let r = post(b"not gzip".to_vec(), Some(sign(NEXT, b"not gzip")), true)
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(recorded(&redis), (2, 2, 2));
    assert_eq!(
        http.get(format!("{base}/readyz")).send().await.expect("ready").status(),
        200
    );
}

/// `crmsync webhook --with-dashboard` serves the dashboard on the receiver's port behind its
/// token, and keeps answering Nylas there; without the flag the port has no dashboard, and the
/// flag without a token is refused with a message naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_is_served_beside_the_webhook_only_when_asked_and_behind_its_token() {
    const TOKEN: &str = "beside-token-0123456789abcdef";
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);

    let (code, out, err) = crmsync_output(
        &redis,
        &key,
        &["webhook", "--listen", "127.0.0.1:0", "--with-dashboard"],
    );
    assert_ne!(code, 0, "no token: refused\n{out}");
    assert!(err.contains("CRMSYNC_DASHBOARD_TOKEN"), "{err}");

    let http = reqwest::Client::new();
    let (_plain, base) = webhook_server(&redis, &key, &[]).await;
    let r = http
        .get(format!("{base}/api/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404, "no dashboard unless asked for");

    let (_both, base) = webhook_server(&redis, &key, &["--with-dashboard", "--dashboard-token", TOKEN]).await;
    let r = http.get(format!("{base}/api/status")).send().await.expect("get");
    assert_eq!(r.status(), 401, "the token guards the dashboard beside the webhook");
    let authorized = |path: &str| http.get(format!("{base}{path}")).bearer_auth(TOKEN).send();
    let status: Value = authorized("/api/status")
        .await
        .expect("status")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(status["tenants"][0]["id"], "acme");
    assert_eq!(status["queues"][0]["queue"], "backfill");
    let page = authorized("/").await.expect("page").error_for_status().expect("200");
    assert!(page.text().await.expect("page").contains("crmsync"));

    // Nylas is still answered on the same port.
    answers_challenge(&http, &format!("{base}/webhooks/nylas"), "still-here").await;
    let body = contact_event("b1", "grant-acme", "c1", "ada@example.com", 1_700_000_000);
    let r = http
        .post(format!("{base}/webhooks/nylas"))
        .header("content-type", "application/json")
        .header("x-nylas-signature", crmsync_webhook::signature::sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(recorded(&redis).1, 1, "the change was recorded");
}

/// Hardening: 200 unsigned gzip bombs at once are refused without inflating past the body
/// limit or together, so the receiver's peak RSS stays under 256 MiB; it answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gzip_bombs_keep_the_receivers_memory_bounded() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);
    let (server, base) = webhook_server(&redis, &key, &[]).await;
    let pid = server.pid().expect("pid");
    // Just under 1 MiB on the wire (random bytes that do not compress, under the body limit),
    // then 64 MiB of zeros: 200 of them held and inflated at once would take gigabytes.
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"id\":\"").expect("gzip");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        gz.write_all(&noise).expect("gzip");
        let zeros = vec![b'0'; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&zeros).expect("gzip");
        }
        gz.finish().expect("gzip")
    };
    assert!(
        (500_000..1024 * 1024).contains(&bomb.len()),
        "the bomb must pass the body limit to reach inflation: {} bytes",
        bomb.len()
    );
    let http = reqwest::Client::new();
    let url = format!("{base}/webhooks/nylas");
    let posts = (0..200).map(|_| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
    });
    let answers = futures_util::future::join_all(posts).await;
    for a in answers {
        let status = a.expect("answered").status().as_u16();
        assert!(status == 413 || status == 503, "a bomb answered {status}");
    }
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(peak_kib < 256 * 1024, "the receiver peaked at {} MiB", peak_kib / 1024);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}

/// Hardening, servers: clients sending partial headers are closed after the header timeout;
/// connections past the cap are answered 503 at once; a body promised and not sent is answered
/// 408; after SIGTERM with idle keep-alive clients the receiver exits within its drain
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_receiver() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);
    let (mut server, base) = webhook_server(
        &redis,
        &key,
        &[
            "--header-timeout-secs",
            "1",
            "--max-connections",
            "40",
            "--drain-secs",
            "2",
        ],
    )
    .await;
    let addr = base.trim_start_matches("http://").to_owned();
    // 40 connections hold the cap with half a request head each.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        s.write_all(b"POST /webhooks/nylas HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One more is refused at once, with an answer.
    let mut over = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), over.read_to_end(&mut answer))
        .await
        .expect("answered at once")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"),
        "{answer:?}"
    );
    // The header timeout closes the slow ones; the receiver answers again.
    for s in &mut slow {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within the header timeout")
            .unwrap_or(0);
        let _ = n;
    }
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    // A body promised and not sent.
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    s.write_all(
        b"POST /webhooks/nylas HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
    )
    .await
    .expect("write");
    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut answer))
        .await
        .expect("answered within the body timeout")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{:?}",
        &answer[..n]
    );
    // Idle keep-alive clients do not hold a shutdown.
    let clients: Vec<reqwest::Client> = (0..5).map(|_| reqwest::Client::new()).collect();
    for c in &clients {
        assert_eq!(
            c.get(format!("{base}/healthz")).send().await.expect("healthz").status(),
            200
        );
    }
    let started = std::time::Instant::now();
    crmsync_testkit::signal(server.pid().expect("pid"), "TERM");
    let code = server.wait(Duration::from_secs(10));
    assert!(code.is_some(), "still running 10 s after SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        started.elapsed()
    );
    drop(clients);
}

/// Hardening, servers: 1,000 idle connections (nothing sent) against a receiver capped at 512:
/// the ones past the cap are refused at once, the held ones are closed by the header timeout,
/// and `/healthz` answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_are_closed_and_healthz_answers() {
    use tokio::io::AsyncReadExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);
    let (_server, base) = webhook_server(&redis, &key, &["--header-timeout-secs", "2"]).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1_000 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => idle.push(s),
            // A machine with a low descriptor limit: as many as it allows, past the cap.
            Err(e) if idle.len() > 600 => {
                eprintln!("stopped at {} connections: {e}", idle.len());
                break;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Every one ends: refused at once (503) past the cap, closed by the header timeout below.
    let ended = futures_util::future::join_all(idle.iter_mut().map(|s| async move {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .is_ok()
    }))
    .await;
    assert!(ended.iter().all(|e| *e), "an idle connection was held past the timeout");
    drop(idle);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
}

/// Hardening, logs: a stranger's notification id reaches the log escaped and cut short, on the
/// unknown-grant and the bad-signature paths: a `\n` in it forges no line, and 20 requests with
/// a 100 KB id grow the log by kilobytes, not megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_notification_id_is_escaped_and_bounded_in_logs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let key = crmsync_tenants::SecretKey::generate();
    add_acme(&redis, &key);
    let (server, base) = webhook_server(&redis, &key, &[]).await;
    let url = format!("{base}/webhooks/nylas");
    let http = reqwest::Client::new();
    let forged = "n1\n2026-12-03T00:00:00Z  INFO FORGED: tenant acme wiped";
    let long = "x".repeat(100_000);
    for (grant, id) in [("grant-nobody", forged), ("grant-acme", forged)] {
        let body = contact_event(id, grant, "c1", "ada@example.com", 1_700_000_000);
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-nylas-signature", "00")
            .body(body)
            .send()
            .await
            .expect("post");
        assert!(r.status() == 200 || r.status() == 401, "{}", r.status());
    }
    let before = server.output().len();
    for grant in std::iter::repeat_n(["grant-nobody", "grant-acme"], 10).flatten() {
        let body = contact_event(&long, grant, "c1", "ada@example.com", 1_700_000_000);
        http.post(&url)
            .header("content-type", "application/json")
            .header("x-nylas-signature", "00")
            .body(body)
            .send()
            .await
            .expect("post");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.output();
    assert!(
        !log.lines().any(|l| l.contains("FORGED") && !l.contains("notification")),
        "a forged line:\n{log}"
    );
    assert!(
        log.contains("\\n"),
        "the newline is escaped in the line it belongs to:\n{log}"
    );
    let grown = log.len() - before;
    assert!(
        grown < 20 * 1_000,
        "20 requests with a 100 KB id grew the log by {grown} bytes"
    );
}
