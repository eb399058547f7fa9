//! The Zoho sink against the simulator, with the token broker on a real Redis.

use std::sync::Arc;
use std::time::Duration;

use crmsync_domain::CrmRecord;
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_sink::zoho::{TokenBroker, ZohoHttp, ZohoOrg, ZohoSink};
use crmsync_sink::{CrmSink, Next, Outcome, Priority, Write};
use crmsync_tenants::SecretKey;
use crmsync_testkit::RedisServer;

const DEST: &str = "0123456789ab";
const LIVE: &str = "{crmsync:t:acme}:live";

struct Setup {
    redis: RedisServer,
    sim: RunningSim,
    tenant: TenantConfig,
}

fn record(email: &str, last: &str) -> CrmRecord {
    CrmRecord {
        first_name: Some("Ada".into()),
        last_name: last.into(),
        email: email.into(),
        phone: None,
        company: Some("Analytical Engines".into()),
        title: None,
    }
}

fn upsert(cid: &str, email: &str, last: &str) -> Write {
    Write::Upsert {
        contact_id: cid.into(),
        record: record(email, last),
        rid: None,
    }
}

async fn setup(dc: &str, daily_credits: u64) -> Setup {
    setup_with(dc, daily_credits, 1.0).await
}

async fn setup_with(dc: &str, daily_credits: u64, time_scale: f64) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg(LIVE)
        .arg(DEST)
        .query(&mut redis.conn())
        .expect("live");
    let mut tenant = TenantConfig::named("acme");
    tenant.zoho.dc = dc.into();
    tenant.zoho.daily_credits = daily_credits;
    tenant.contacts = 0;
    let sim = RunningSim::start(
        SimConfig {
            tenants: vec![tenant.clone()],
            time_scale,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    Setup { redis, sim, tenant }
}

fn org(s: &Setup) -> ZohoOrg {
    ZohoOrg {
        tenant: "acme".into(),
        dest_prefix: format!("{{crmsync:t:acme}}:d:{DEST}"),
        live_key: LIVE.into(),
        dest: DEST.into(),
        rev: 1,
        accounts_url: s.sim.zoho_accounts_url(&s.tenant.zoho.dc),
        api_domain_override: None,
        client_id: s.tenant.zoho.client_id.clone(),
        client_secret: s.tenant.zoho.client_secret.clone(),
        refresh_token: s.tenant.zoho.refresh_token.clone(),
    }
}

/// A sink with its own Redis connection, as a separate worker process would have.
fn sink_for(s: &Setup, org: ZohoOrg) -> ZohoSink<ZohoHttp> {
    let key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
    let conn = crmsync_redis::connect(s.redis.client(), Duration::from_secs(5)).expect("conn");
    let http = crmsync_sink::zoho::http_client(Duration::from_secs(10)).expect("http");
    ZohoSink::new(ZohoHttp::new(
        http.clone(),
        TokenBroker::new(conn, http, Arc::new(key)),
        org,
    ))
}

fn sim_org(s: &Setup) -> serde_json::Value {
    s.sim.inspect_org(&s.tenant.zoho.org_id).expect("org")
}

fn rid(o: &Outcome) -> String {
    match o {
        Outcome::Written { rid, .. } => rid.clone(),
        other => panic!("not written: {other:?}"),
    }
}

/// The token endpoint's `api_domain` is where calls go: a tenant in the EU data center works
/// with its EU token, per-record outcomes come back in request order, a bad record does not
/// block the others, and known records are deleted by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_reports_each_record_in_order_on_the_tenants_data_center() {
    let s = setup("eu", 50_000).await;
    let sink = sink_for(&s, org(&s));
    let batch = vec![
        upsert("c1", "ada@example.com", "Lovelace"),
        upsert("c2", "bad@example.com", ""),
        upsert("c3", "ADA@example.com", "Byron"),
    ];
    let w = sink.write(&batch, Priority::Backfill).await.expect("upsert");
    assert_eq!((w.calls, w.cost), (1, 1));
    assert!(matches!(w.outcomes[0], Outcome::Written { inserted: true, .. }));
    assert_eq!(
        w.outcomes[1],
        Outcome::Rejected {
            code: "MANDATORY_NOT_FOUND".into(),
            field: Some("Last_Name".into()),
            message: "required field not found".into()
        }
    );
    assert!(
        matches!(w.outcomes[2], Outcome::Written { inserted: false, .. }),
        "same email, another case: an update"
    );
    let state = sim_org(&s);
    assert_eq!(state["dc"], "eu");
    assert_eq!(state["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(state["workflows_triggered"], 0);

    let deletes = vec![
        Write::Delete {
            contact_id: "c1".into(),
            rid: Some(rid(&w.outcomes[0])),
        },
        Write::Delete {
            contact_id: "c9".into(),
            rid: None,
        },
    ];
    let d = sink.write(&deletes, Priority::Change).await.expect("delete");
    assert_eq!(d.outcomes, vec![Outcome::Deleted, Outcome::Deleted]);
    assert_eq!(d.calls, 1, "a record crmsync knows no id of costs no call");
    assert_eq!(sim_org(&s)["records"].as_array().map(Vec::len), Some(0));
    let again = sink.write(&deletes[..1], Priority::Change).await.expect("delete");
    assert_eq!(
        again.outcomes,
        vec![Outcome::Deleted],
        "a record already gone counts as deleted"
    );
}

/// A contact whose email changed has its record updated by id (it follows the new email); a
/// move without a known record creates one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_update_known_records_by_id_and_create_unknown_ones() {
    let s = setup("us", 50_000).await;
    let sink = sink_for(&s, org(&s));
    let w = sink
        .write(&[upsert("c1", "old@example.com", "Mover")], Priority::Change)
        .await
        .expect("upsert");
    let moves = vec![
        Write::Move {
            contact_id: "c1".into(),
            record: record("new@example.com", "Mover"),
            rid: Some(rid(&w.outcomes[0])),
        },
        Write::Move {
            contact_id: "c2".into(),
            record: record("fresh@example.com", "Fresh"),
            rid: None,
        },
    ];
    let m = sink.write(&moves, Priority::Change).await.expect("move");
    assert_eq!(m.calls, 2, "one update by id, one upsert");
    assert_eq!(rid(&m.outcomes[0]), rid(&w.outcomes[0]), "the same record");
    assert!(matches!(m.outcomes[1], Outcome::Written { inserted: true, .. }));
    let mut emails: Vec<String> = sim_org(&s)["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Email"].as_str().unwrap_or("").to_owned())
        .collect();
    emails.sort();
    assert_eq!(
        emails,
        vec!["fresh@example.com", "new@example.com"],
        "nothing left under the old email"
    );
}

/// Many workers asking for the tenant's token at once make one token request between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_share_one_token_refresh() {
    let s = setup("us", 50_000).await;
    let sinks: Vec<_> = (0..6).map(|_| sink_for(&s, org(&s))).collect();
    let calls = sinks.iter().enumerate().map(|(i, sink)| async move {
        let batch = [upsert(&format!("c{i}"), &format!("w{i}@example.com"), "Worker")];
        sink.write(&batch, Priority::Backfill).await
    });
    for r in futures_util::future::join_all(calls).await {
        r.expect("upsert");
    }
    assert_eq!(sim_org(&s)["token_requests"], 1, "one refresh for the whole fleet");
}

/// A token Zoho no longer accepts (here: one that expired early, in a simulator whose hour
/// lasts a second) is answered with one refresh and one retry, transparently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_token_is_refreshed_once_and_the_call_retried() {
    let s = setup_with("us", 50_000, 3_600.0).await;
    let sink = sink_for(&s, org(&s));
    sink.write(&[upsert("a", "a@example.com", "A")], Priority::Backfill)
        .await
        .expect("first");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let w = sink
        .write(&[upsert("b", "b@example.com", "B")], Priority::Backfill)
        .await
        .expect("second");
    assert!(matches!(w.outcomes[0], Outcome::Written { inserted: true, .. }));
    let state = sim_org(&s);
    assert_eq!(
        state["calls"]["by_status"]["401"], 1,
        "one refused call: {}",
        state["calls"]
    );
    assert_eq!(state["token_requests"], 2, "one refresh after the refusal");
}

/// A token cached for one destination or connection revision is never used for another: new
/// credentials get a new token at once, and a refresh for a destination the tenant left (or a
/// removed tenant) stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_belong_to_their_destination_and_connection_revision() {
    let s = setup("us", 50_000).await;
    let batch = [upsert("a", "a@example.com", "A")];
    sink_for(&s, org(&s))
        .write(&batch, Priority::Backfill)
        .await
        .expect("first");
    sink_for(&s, org(&s))
        .write(&batch, Priority::Backfill)
        .await
        .expect("cached");
    assert_eq!(sim_org(&s)["token_requests"], 1);
    let mut rotated = org(&s);
    rotated.rev = 2;
    sink_for(&s, rotated)
        .write(&batch, Priority::Backfill)
        .await
        .expect("new revision");
    assert_eq!(
        sim_org(&s)["token_requests"],
        2,
        "changed credentials: a new token at once"
    );

    let _: () = redis::cmd("SET")
        .arg(LIVE)
        .arg("ffffffffffff")
        .query(&mut s.redis.conn())
        .expect("live");
    let mut old = org(&s);
    old.rev = 3;
    let err = sink_for(&s, old)
        .write(&batch, Priority::Backfill)
        .await
        .expect_err("the tenant moved on");
    assert_eq!((err.next, err.code), (Next::Retry, "DEST_CHANGED"));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{crmsync:t:acme}}:d:{DEST}:zoho:lock*"))
        .query(&mut s.redis.conn())
        .expect("keys");
    assert!(keys.is_empty(), "no lock left for a destination that is gone: {keys:?}");
}

/// Over the org's credit allowance Zoho answers 429: the org is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_credit_allowance_is_throttled() {
    let s = setup("us", 2).await;
    let sink = sink_for(&s, org(&s));
    let batch: Vec<Write> = (0..15)
        .map(|i| upsert(&format!("c{i}"), &format!("c{i}@example.com"), "C"))
        .collect();
    sink.write(&batch, Priority::Backfill).await.expect("2 credits");
    let err = sink
        .write(&batch, Priority::Backfill)
        .await
        .expect_err("over the allowance");
    assert_eq!(err.next, Next::Throttled { retry_after: None }, "{err}");
    assert_eq!(err.code, "TOO_MANY_REQUESTS");
}

/// A refresh token Zoho refuses asks for re-authorization with a message saying how; a grant
/// code exchanges once for the refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_token_asks_for_re_authorization_and_grant_codes_exchange_once() {
    let s = setup("us", 50_000).await;
    let mut o = org(&s);
    o.refresh_token = "rt-revoked".into();
    let err = sink_for(&s, o.clone())
        .write(&[upsert("x", "x@example.com", "X")], Priority::Backfill)
        .await
        .expect_err("refused");
    assert_eq!((err.next, err.code), (Next::Reauthorize, "INVALID_CODE"));
    assert!(err.to_string().contains("crmsync zoho exchange-code"), "{err}");

    let http = crmsync_sink::zoho::http_client(Duration::from_secs(5)).expect("http");
    let rt = crmsync_sink::zoho::exchange_code(
        &http,
        &o.accounts_url,
        &o.client_id,
        &o.client_secret,
        "code-acme",
        None,
    )
    .await
    .expect("exchange");
    assert_eq!(rt, s.tenant.zoho.refresh_token);
    let again = crmsync_sink::zoho::exchange_code(
        &http,
        &o.accounts_url,
        &o.client_id,
        &o.client_secret,
        "code-acme",
        None,
    )
    .await;
    assert!(again.is_err(), "a code works once");
}
