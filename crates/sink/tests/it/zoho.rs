//! The Zoho sink against the simulator, with the token broker on a real Redis.

use std::sync::Arc;
use std::time::Duration;

use crmsync_domain::CrmRecord;
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_sink::zoho::{MAX_BATCH, PROFILE, TokenBroker, ZohoHttp, ZohoOrg, ZohoSink};
use crmsync_sink::{CrmPage, CrmSink, Next, Outcome, Priority, Write};
use crmsync_tenants::SecretKey;
use crmsync_testkit::RedisServer;
use serde_json::{Value, json};

use crate::read_all;

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

fn broker_for(s: &Setup, http: reqwest::Client) -> TokenBroker {
    let key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
    let conn = crmsync_redis::connect(s.redis.client(), Duration::from_secs(5)).expect("conn");
    TokenBroker::new(conn, http, Arc::new(key))
}

/// A sink with its own Redis connection, as a separate worker process would have.
fn sink_for(s: &Setup, org: ZohoOrg) -> ZohoSink<ZohoHttp> {
    let http = crmsync_sink::zoho::http_client(Duration::from_secs(10)).expect("http");
    ZohoSink::new(ZohoHttp::new(http.clone(), broker_for(s, http), org))
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn credits_used(s: &Setup) -> u64 {
    sim_org(s)["credits_used_total"].as_u64().expect("credits")
}

/// Hand-made records (another user's, in Zoho's UI: no credits), `n` of them with an Email.
fn hand_records(s: &Setup, n: usize) {
    for i in 0..n {
        let fields = json!({"Last_Name": format!("Hand{i}"), "Email": format!("hand{i}@example.com")});
        s.sim
            .create_zoho_record(&s.tenant.zoho.org_id, object(fields))
            .expect("record");
    }
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

/// A read walks every record, 200 a page in id order, at 1 credit a page: each record as it
/// was written (through the profile's `comparable`), under the id the write reported, keyed on
/// its email. Records without an Email (another user's) are left out. An empty org reads as
/// one empty last page, which costs its credit too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_pages_through_every_record_at_one_credit_a_page() {
    let s = setup("us", 50_000).await;
    let sink = sink_for(&s, org(&s));
    let empty = sink.read(None, Priority::Backfill).await.expect("empty org");
    assert_eq!(
        empty,
        CrmPage {
            records: vec![],
            next: None,
            calls: 1,
            cost: 1
        }
    );
    assert_eq!(credits_used(&s), 1, "a 204 costs a credit");

    let records: Vec<CrmRecord> = (0..450)
        .map(|i| CrmRecord {
            first_name: (i % 3 != 0).then(|| format!("First{i}")),
            last_name: format!("Last{i}"),
            email: format!("person{i}@example.com"),
            phone: (i % 2 == 0).then(|| format!("+1 555 01{i:03}")),
            company: (i % 5 != 0).then(|| format!("Company {}", i % 7)),
            title: (i % 4 == 0).then(|| "Engineer".to_owned()),
        })
        .collect();
    let batch: Vec<Write> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Write::Upsert {
            contact_id: format!("c{i}"),
            record: r.clone(),
            rid: None,
        })
        .collect();
    let mut rids = Vec::new();
    for chunk in batch.chunks(MAX_BATCH) {
        let w = sink.write(chunk, Priority::Backfill).await.expect("write");
        rids.extend(w.outcomes.iter().map(rid));
    }
    s.sim
        .create_zoho_record(&s.tenant.zoho.org_id, object(json!({"Last_Name": "Not crmsync's"})))
        .expect("hand record");

    let before = credits_used(&s);
    let (by_key, pages) = read_all(&sink).await;
    assert_eq!(
        pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(),
        vec![200, 200, 50],
        "the record without an Email is not listed"
    );
    assert_eq!(pages.iter().fold((0, 0), |(c, u), p| (c + p.calls, u + p.cost)), (3, 3));
    assert_eq!(credits_used(&s) - before, 3, "1 credit a page");
    assert_eq!(sim_org(&s)["calls"]["list"], 4);
    let ids: Vec<u64> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r.rid.parse().expect("numeric id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending ids");
    assert_eq!(by_key.len(), 450);
    for (r, id) in records.iter().zip(&rids) {
        let side = &by_key[&r.email];
        assert_eq!(&side.rid, id);
        assert_eq!(
            (PROFILE.comparable)(&side.record),
            (PROFILE.comparable)(r),
            "{}",
            r.email
        );
        assert_eq!(&side.record, r, "Zoho keeps every field");
    }
}

/// A page token Zoho refuses (made for other parameters, e.g. by another version's read) is
/// `PAGE_TOKEN_EXPIRED`; a cursor that is not a page token is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_zoho_refuses_fails_and_a_bad_cursor_is_not_sent() {
    let s = setup("us", 50_000).await;
    hand_records(&s, 3);
    let http = crmsync_sink::zoho::http_client(Duration::from_secs(10)).expect("http");
    let token = broker_for(&s, http.clone()).token(&org(&s)).await.expect("token");
    let res = http
        .get(format!("{}/crm/v6/Contacts", token.api_domain))
        .query(&[
            ("fields", "Email"),
            ("per_page", "1"),
            ("sort_by", "id"),
            ("sort_order", "asc"),
        ])
        .header("Authorization", format!("Zoho-oauthtoken {}", token.value()))
        .send()
        .await
        .expect("get records");
    let body: Value = serde_json::from_slice(&res.bytes().await.expect("body")).expect("json");
    let other = body["info"]["next_page_token"].as_str().expect("a token").to_owned();

    let sink = sink_for(&s, org(&s));
    let err = sink
        .read(Some(&other), Priority::Backfill)
        .await
        .expect_err("bound to other parameters");
    assert_eq!((err.next, err.code), (Next::FailJob, "PAGE_TOKEN_EXPIRED"), "{err}");
    assert!(err.message.contains("TOKEN_BOUND_DATA_MISMATCH"), "{err}");

    let lists = sim_org(&s)["calls"]["list"].clone();
    for bad in ["", "two words", "tab\there", &"x".repeat(1025)] {
        let err = sink.read(Some(bad), Priority::Backfill).await.expect_err("bad cursor");
        assert_eq!((err.next, err.code, err.not_sent), (Next::FailJob, "BAD_CURSOR", true));
    }
    assert_eq!(sim_org(&s)["calls"]["list"], lists, "nothing sent");
}

/// Page tokens live 24 hours (here 3 seconds): a read resumed later is `PAGE_TOKEN_EXPIRED`,
/// and one started again reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_page_token_is_page_token_expired() {
    let s = setup_with("us", 50_000, 28_800.0).await;
    hand_records(&s, 201);
    let sink = sink_for(&s, org(&s));
    let first = sink.read(None, Priority::Backfill).await.expect("first page");
    assert_eq!(first.records.len(), 200);
    let next = first.next.expect("more");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let err = sink.read(Some(&next), Priority::Backfill).await.expect_err("expired");
    assert_eq!((err.next, err.code), (Next::FailJob, "PAGE_TOKEN_EXPIRED"), "{err}");
    assert!(err.message.contains("EXPIRED_VALUE"), "{err}");
    let (by_key, pages) = read_all(&sink).await;
    assert_eq!((by_key.len(), pages.len()), (201, 2));
}
