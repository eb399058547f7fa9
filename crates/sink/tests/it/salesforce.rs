//! The Salesforce sink against the simulator's org, with its session and Account caches on a
//! real Redis. Every test asserts what the org holds afterwards.

use std::sync::Arc;
use std::time::Duration;

use crmsync_domain::CrmRecord;
use crmsync_sim::{AccountConfig, DuplicateRule, FaultConfig, RunningSim, SalesforceConfig, SimConfig, TenantConfig};
use crmsync_sink::salesforce::{
    SalesforceHttp, SalesforceSink, SfAccounts, SfCall, SfOp, SfOrg, SfTokens, exchange_code,
};
use crmsync_sink::{CrmSink, Next, Outcome, Priority, SinkResponse, Usage, Write};
use crmsync_tenants::{Crm, NylasSettings, Routing, SalesforceConnection, Secret, SecretKey, Tenant};
use crmsync_testkit::RedisServer;
use serde_json::Value;
use tower_service::Service;

const NS: &str = "crmsync";
const DEST: &str = "0123456789ab";
const LIVE: &str = "{crmsync:t:acme}:live";
const ORG: &str = "sforg-acme";
const EXT: &str = "Nylas_Contact_Id__c";

struct Setup {
    redis: RedisServer,
    sim: RunningSim,
    sf: SalesforceConfig,
}

/// Accounts of the org: two with websites written the ways people type them, one without.
fn accounts() -> Vec<AccountConfig> {
    vec![
        AccountConfig {
            name: "Acme Inc.".into(),
            website: Some("https://www.acme.com/".into()),
        },
        AccountConfig {
            name: "Initech".into(),
            website: Some("initech.test".into()),
        },
        AccountConfig {
            name: "No Website Ltd".into(),
            website: None,
        },
    ]
}

async fn setup(tweak: impl FnOnce(&mut SalesforceConfig)) -> Setup {
    setup_with(tweak, FaultConfig::default()).await
}

async fn setup_with(tweak: impl FnOnce(&mut SalesforceConfig), faults: FaultConfig) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg(LIVE)
        .arg(DEST)
        .query(&mut redis.conn())
        .expect("live");
    let mut sf = SalesforceConfig::named("acme");
    sf.accounts = Some(accounts());
    tweak(&mut sf);
    let mut tenant = TenantConfig::named("acme");
    tenant.contacts = 0;
    tenant.salesforce = Some(sf.clone());
    let sim = RunningSim::start(
        SimConfig {
            tenants: vec![tenant],
            faults,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    Setup { redis, sim, sf }
}

/// The tenant as the store would hold it, with its connection set up by `tweak`.
fn tenant(s: &Setup, tweak: impl FnOnce(&mut SalesforceConnection)) -> Tenant {
    let mut c = SalesforceConnection::new(
        s.sim.salesforce_login_url(ORG),
        s.sf.client_id.clone(),
        Secret::new(s.sf.client_secret.clone()),
    );
    c.refresh_token = Some(Secret::new(s.sf.refresh_token.clone()));
    tweak(&mut c);
    let nylas = NylasSettings {
        grant_id: "grant-acme".into(),
        api_key: Secret::new("nyk-acme"),
        api_uri: "http://127.0.0.1:1".into(),
    };
    let mut t = Tenant::new("acme", nylas, Crm::Salesforce(c));
    t.dest = DEST.into();
    t.crm_rev = 1;
    t
}

fn org(s: &Setup, tweak: impl FnOnce(&mut SalesforceConnection)) -> SfOrg {
    SfOrg::of(NS, &tenant(s, tweak)).expect("org")
}

fn routed(routing: Routing) -> impl FnOnce(&mut SalesforceConnection) {
    move |c| c.routing = routing
}

/// One worker process: its own Redis connection, session broker and Account cache.
struct Worker {
    http: SalesforceHttp,
    sink: SalesforceSink<SalesforceHttp>,
}

fn worker(s: &Setup, org: &SfOrg) -> Worker {
    worker_scaled(s, org, 1.0)
}

fn worker_scaled(s: &Setup, org: &SfOrg, accounts_time_scale: f64) -> Worker {
    let key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
    let conn = crmsync_redis::connect(s.redis.client(), Duration::from_secs(5)).expect("conn");
    let client = crmsync_sink::zoho::http_client(Duration::from_secs(10)).expect("http");
    let tokens = SfTokens::new(conn.clone(), client.clone(), Arc::new(key));
    let accounts = SfAccounts::new(conn).with_time_scale(accounts_time_scale);
    let http = SalesforceHttp::new(client, tokens, org.clone());
    Worker {
        sink: SalesforceSink::new(http.clone(), org, accounts),
        http,
    }
}

fn record(email: &str, last: &str, company: Option<&str>) -> CrmRecord {
    CrmRecord {
        first_name: Some("Ada".into()),
        last_name: last.into(),
        email: email.into(),
        phone: None,
        company: company.map(str::to_owned),
        title: None,
    }
}

fn upsert(cid: &str, email: &str, rid: Option<&str>) -> Write {
    Write::Upsert {
        contact_id: cid.into(),
        record: record(email, "Lovelace", None),
        rid: rid.map(str::to_owned),
    }
}

fn delete(cid: &str, rid: Option<&str>) -> Write {
    Write::Delete {
        contact_id: cid.into(),
        rid: rid.map(str::to_owned),
    }
}

fn rid(o: &Outcome) -> String {
    match o {
        Outcome::Written { rid, .. } => rid.clone(),
        other => panic!("not written: {other:?}"),
    }
}

fn inspect(s: &Setup) -> Value {
    s.sim.inspect_salesforce(ORG).expect("org")
}

/// The org's records of `object` (`contacts`, `leads`, `accounts`).
fn records(s: &Setup, object: &str) -> Vec<Value> {
    inspect(s)[object].as_array().cloned().unwrap_or_default()
}

/// The record of `object` holding external id `cid`.
fn by_ext(s: &Setup, object: &str, cid: &str) -> Value {
    records(s, object)
        .into_iter()
        .find(|r| r[EXT] == cid)
        .unwrap_or_else(|| panic!("no {object} with {EXT} {cid}"))
}

fn account_id(s: &Setup, name: &str) -> String {
    records(s, "accounts")
        .into_iter()
        .find(|a| a["Name"] == name)
        .and_then(|a| a["Id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no Account {name}"))
}

/// Contact-or-lead routing: an email at an Account's website domain makes a Contact under it,
/// any other a Lead whose Company is the record's or, failing that, the email's domain. A
/// record stays on the object crmsync wrote (the rid), and an email change updates the same
/// record. The Accounts are read once and cached; every call is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_sends_account_domains_to_contacts_and_others_to_leads() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, |_| {}));
    let batch = vec![
        upsert("c-ada", "ada@acme.com", None),
        upsert("c-bob", "bob@other.org", None),
        Write::Upsert {
            contact_id: "c-eve".into(),
            record: record("eve@initech.test", "Hacker", Some("Initech Corp")),
            rid: None,
        },
        Write::Upsert {
            contact_id: "c-kim".into(),
            record: record("kim@gmail.com", "Kim", Some("Kim's Bakery")),
            rid: None,
        },
    ];
    let out = w.sink.write(&batch, Priority::Backfill).await.expect("write");
    assert_eq!(
        (out.calls, out.cost),
        (3, 3),
        "one Account query, one Contact and one Lead upsert"
    );
    let ids: Vec<String> = out.outcomes.iter().map(rid).collect();
    assert!(ids[0].starts_with("003") && ids[2].starts_with("003"), "{ids:?}");
    assert!(ids[1].starts_with("00Q") && ids[3].starts_with("00Q"), "{ids:?}");
    assert!(
        out.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Written { inserted: true, .. }))
    );

    let ada = by_ext(&s, "contacts", "c-ada");
    assert_eq!(
        (ada["Id"].as_str(), ada["Email"].as_str()),
        (Some(ids[0].as_str()), Some("ada@acme.com"))
    );
    assert_eq!(ada["AccountId"], account_id(&s, "Acme Inc."));
    assert_eq!(by_ext(&s, "contacts", "c-eve")["AccountId"], account_id(&s, "Initech"));
    assert_eq!(
        by_ext(&s, "leads", "c-bob")["Company"],
        "other.org",
        "the email's domain"
    );
    assert_eq!(by_ext(&s, "leads", "c-kim")["Company"], "Kim's Bakery");
    assert_eq!(records(&s, "contacts").len(), 2);
    assert_eq!(records(&s, "leads").len(), 2);

    // Bob's email moves to Acme's domain: his record is still the Lead crmsync wrote, updated.
    let again = vec![
        Write::Move {
            contact_id: "c-bob".into(),
            record: record("bob@acme.com", "Builder", None),
            rid: Some(ids[1].clone()),
        },
        upsert("c-ada", "ada.lovelace@acme.com", Some(&ids[0])),
    ];
    let out = w.sink.write(&again, Priority::Change).await.expect("update");
    assert_eq!(
        out.calls, 2,
        "the Accounts are cached; no query needed for known records"
    );
    assert_eq!(
        out.outcomes,
        vec![
            Outcome::Written {
                rid: ids[1].clone(),
                inserted: false
            },
            Outcome::Written {
                rid: ids[0].clone(),
                inserted: false
            }
        ]
    );
    let bob = by_ext(&s, "leads", "c-bob");
    assert_eq!(
        (bob["Email"].as_str(), bob["LastName"].as_str()),
        (Some("bob@acme.com"), Some("Builder"))
    );
    assert_eq!(bob["Company"], "acme.com");
    assert_eq!(by_ext(&s, "contacts", "c-ada")["Email"], "ada.lovelace@acme.com");
    assert_eq!(
        records(&s, "contacts").len() + records(&s, "leads").len(),
        4,
        "no new records"
    );
    assert_eq!(inspect(&s)["calls"]["query"], 1);
}

/// Contact routing makes Contacts whatever the domain (under the Account when one matches);
/// Lead routing never reads the Accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_and_lead_routing() {
    let s = setup(|_| {}).await;
    let contacts = worker(&s, &org(&s, routed(Routing::Contact)));
    let out = contacts
        .sink
        .write(
            &[upsert("c1", "a@acme.com", None), upsert("c2", "b@nowhere.org", None)],
            Priority::Backfill,
        )
        .await
        .expect("contacts");
    assert_eq!(out.calls, 2);
    assert_eq!(by_ext(&s, "contacts", "c1")["AccountId"], account_id(&s, "Acme Inc."));
    assert_eq!(by_ext(&s, "contacts", "c2")["AccountId"], Value::Null);

    let leads = worker(&s, &org(&s, routed(Routing::Lead)));
    let out = leads
        .sink
        .write(&[upsert("c3", "c@acme.com", None)], Priority::Backfill)
        .await
        .expect("leads");
    assert_eq!(out.calls, 1, "no Account query");
    assert_eq!(by_ext(&s, "leads", "c3")["Company"], "acme.com");
    assert_eq!(
        inspect(&s)["calls"]["query"],
        1,
        "only the Contact-routing worker read Accounts"
    );
}

/// Records are matched on the contact, not the email: two contacts sharing an email are two
/// records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_sharing_an_email_are_separate_records() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    let out = w
        .sink
        .write(
            &[
                upsert("c1", "shared@example.com", None),
                upsert("c2", "shared@example.com", None),
            ],
            Priority::Backfill,
        )
        .await
        .expect("write");
    assert_ne!(rid(&out.outcomes[0]), rid(&out.outcomes[1]));
    let leads = records(&s, "leads");
    assert_eq!(leads.len(), 2);
    assert!(leads.iter().all(|l| l["Email"] == "shared@example.com"));
}

/// A record Salesforce refuses is rejected with Salesforce's code and field, and the other
/// records of the call are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_is_rejected_with_salesforces_code_and_the_others_are_written() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    let batch = vec![
        Write::Upsert {
            contact_id: "long".into(),
            record: record("long@example.com", &"L".repeat(81), None),
            rid: None,
        },
        upsert("bad-email", "not an email", None),
        upsert("good", "good@example.com", None),
    ];
    let out = w.sink.write(&batch, Priority::Backfill).await.expect("write");
    assert_eq!(out.calls, 1);
    match &out.outcomes[0] {
        Outcome::Rejected { code, field, message } => {
            assert_eq!((code.as_str(), field.as_deref()), ("STRING_TOO_LONG", Some("LastName")));
            assert!(message.contains("max length=80"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&out.outcomes[1], Outcome::Rejected { code, field, .. } if code == "INVALID_EMAIL_ADDRESS" && field.as_deref() == Some("Email")),
        "{:?}",
        out.outcomes[1]
    );
    assert!(matches!(out.outcomes[2], Outcome::Written { inserted: true, .. }));
    let leads = records(&s, "leads");
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0][EXT], "good");
}

/// An `alert` duplicate rule refuses a second record with the same email unless the connection
/// allows duplicates (`Sforce-Duplicate-Rule-Header: allowSave=true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_duplicate_rules_refuse_unless_duplicates_are_allowed() {
    let s = setup(|sf| sf.duplicate_rule = DuplicateRule::Alert).await;
    let strict = worker(&s, &org(&s, routed(Routing::Lead)));
    strict
        .sink
        .write(&[upsert("c1", "dup@example.com", None)], Priority::Backfill)
        .await
        .expect("first");
    let out = strict
        .sink
        .write(&[upsert("c2", "DUP@example.com", None)], Priority::Backfill)
        .await
        .expect("second");
    assert!(
        matches!(&out.outcomes[0], Outcome::Rejected { code, .. } if code == "DUPLICATES_DETECTED"),
        "{:?}",
        out.outcomes
    );
    assert_eq!(records(&s, "leads").len(), 1);

    let lenient = worker(
        &s,
        &org(&s, |c| {
            c.routing = Routing::Lead;
            c.allow_duplicates = true;
        }),
    );
    let out = lenient
        .sink
        .write(&[upsert("c2", "DUP@example.com", None)], Priority::Backfill)
        .await
        .expect("allowed");
    assert!(matches!(out.outcomes[0], Outcome::Written { inserted: true, .. }));
    assert_eq!(records(&s, "leads").len(), 2);
}

/// A `block` duplicate rule refuses whatever the header says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_duplicate_rules_refuse_even_with_allow_save() {
    let s = setup(|sf| sf.duplicate_rule = DuplicateRule::Block).await;
    let w = worker(
        &s,
        &org(&s, |c| {
            c.routing = Routing::Lead;
            c.allow_duplicates = true;
        }),
    );
    w.sink
        .write(&[upsert("c1", "dup@example.com", None)], Priority::Backfill)
        .await
        .expect("first");
    let out = w
        .sink
        .write(&[upsert("c2", "dup@example.com", None)], Priority::Backfill)
        .await
        .expect("second");
    assert!(
        matches!(&out.outcomes[0], Outcome::Rejected { code, .. } if code == "DUPLICATES_DETECTED"),
        "{:?}",
        out.outcomes
    );
    assert_eq!(records(&s, "leads").len(), 1);
    assert_eq!(inspect(&s)["duplicates_blocked"], 1);
}

/// A refresh token Salesforce refuses asks for re-authorization, saying how; a wrong client
/// asks for new credentials; an authorization code exchanges once for the refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_grants_ask_for_re_authorization_and_codes_exchange_once() {
    let s = setup(|_| {}).await;
    let revoked = org(&s, |c| c.refresh_token = Some(Secret::new("sfrt-revoked")));
    let err = worker(&s, &revoked)
        .sink
        .write(&[upsert("x", "x@example.com", None)], Priority::Backfill)
        .await
        .expect_err("refused");
    assert_eq!((err.next, err.code), (Next::Reauthorize, "SF_INVALID_GRANT"));
    assert!(err.not_sent, "no API request was made");
    assert!(err.message.contains("crmsync salesforce exchange-code acme"), "{err}");
    assert!(!err.message.contains("sfrt-revoked"), "no secret in messages: {err}");

    let wrong_secret = org(&s, |c| c.client_secret = Secret::new("sfcs-wrong"));
    let err = worker(&s, &wrong_secret)
        .sink
        .write(&[upsert("x", "x@example.com", None)], Priority::Backfill)
        .await
        .expect_err("refused");
    assert_eq!((err.next, err.code), (Next::Reauthorize, "SF_INVALID_CLIENT"));
    assert!(err.message.contains("crmsync tenant set"), "{err}");
    let state = inspect(&s);
    assert_eq!(
        (state["calls"]["token"].as_u64(), state["records_upserted"].as_u64()),
        (Some(0), Some(0))
    );

    let client = crmsync_sink::zoho::http_client(Duration::from_secs(5)).expect("http");
    let t = tenant(&s, |c| c.refresh_token = None);
    assert!(SfOrg::of(NS, &t).is_err(), "no refresh token, no org");
    let conn = t.crm.salesforce().expect("salesforce").clone();
    let rt = exchange_code(&client, &conn, "sfcode-acme", Some("https://crmsync.example/cb"))
        .await
        .expect("exchange");
    assert_eq!(rt.expose(), s.sf.refresh_token);
    let again = exchange_code(&client, &conn, "sfcode-acme", None)
        .await
        .expect_err("a code works once");
    assert_eq!((again.next, again.code), (Next::Reauthorize, "SF_INVALID_GRANT"));
}

/// A session that ends mid-run (401 `INVALID_SESSION_ID`) is refreshed once and the call
/// retried: the write succeeds and exactly one new token is issued. A worker still holding the
/// old session in memory learns of the end later: it drops only its own copy (not the fleet's
/// new token) and uses the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refreshed_once_and_the_write_retried() {
    let s = setup(|_| {}).await;
    let o = org(&s, routed(Routing::Lead));
    let (w, straggler) = (worker(&s, &o), worker(&s, &o));
    for (cid, w) in [("a", &w), ("z", &straggler)] {
        w.sink
            .write(&[upsert(cid, "a@example.com", None)], Priority::Backfill)
            .await
            .expect("first");
    }
    assert_eq!(inspect(&s)["calls"]["token"], 1);
    assert_eq!(s.sim.expire_salesforce_sessions(ORG).expect("expire"), 1);
    let out = w
        .sink
        .write(&[upsert("b", "b@example.com", None)], Priority::Backfill)
        .await
        .expect("second");
    assert!(matches!(out.outcomes[0], Outcome::Written { inserted: true, .. }));
    assert_eq!(out.calls, 1, "the retry is part of the same call");
    let state = inspect(&s);
    assert_eq!(state["calls"]["by_status"]["401"], 1, "{}", state["calls"]);
    assert_eq!(state["calls"]["token"], 2, "one refresh after the refusal");

    straggler
        .sink
        .write(&[upsert("y", "y@example.com", None)], Priority::Backfill)
        .await
        .expect("straggler");
    let state = inspect(&s);
    assert_eq!(state["calls"]["by_status"]["401"], 2, "{}", state["calls"]);
    assert_eq!(state["calls"]["token"], 2, "the straggler uses the fleet's new token");
    w.sink
        .write(&[upsert("c", "c@example.com", None)], Priority::Backfill)
        .await
        .expect("third");
    let state = inspect(&s);
    assert_eq!(state["calls"]["by_status"]["401"], 2, "the new token still works");
    assert_eq!(records(&s, "leads").len(), 5);
}

/// Many workers at once make one token request between them, read the Accounts once, and
/// after the org's sessions end they again share one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_share_one_token_refresh_and_one_account_read() {
    let s = setup(|_| {}).await;
    let o = org(&s, |_| {});
    let workers: Vec<Worker> = (0..6).map(|_| worker(&s, &o)).collect();
    let round = |tag: &'static str| {
        let workers = &workers;
        async move {
            let calls = workers.iter().enumerate().map(|(i, w)| async move {
                let batch = [upsert(&format!("{tag}{i}"), &format!("{tag}{i}@acme.com"), None)];
                w.sink.write(&batch, Priority::Backfill).await
            });
            for r in futures_util::future::join_all(calls).await {
                let out = r.expect("write");
                assert!(rid(&out.outcomes[0]).starts_with("003"), "routed to Acme");
            }
        }
    };
    round("a").await;
    let state = inspect(&s);
    assert_eq!(state["calls"]["token"], 1, "one token for the whole fleet");
    assert_eq!(state["calls"]["query"], 1, "one Account read for the whole fleet");

    s.sim.expire_salesforce_sessions(ORG).expect("expire");
    round("b").await;
    let state = inspect(&s);
    assert_eq!(state["calls"]["token"], 2, "one refresh for the whole fleet");
    assert_eq!(records(&s, "contacts").len(), 12);
}

/// A token is kept for its destination and connection revision only: new credentials get a
/// new token at once, and a refresh for a destination the tenant left stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_belong_to_their_destination_and_connection_revision() {
    let s = setup(|_| {}).await;
    let o = org(&s, routed(Routing::Lead));
    let batch = [upsert("a", "a@example.com", None)];
    worker(&s, &o)
        .sink
        .write(&batch, Priority::Backfill)
        .await
        .expect("first");
    worker(&s, &o)
        .sink
        .write(&batch, Priority::Backfill)
        .await
        .expect("cached");
    assert_eq!(
        inspect(&s)["calls"]["token"],
        1,
        "another process uses the fleet's token"
    );
    let sealed: String = redis::cmd("HGET")
        .arg(format!("{{crmsync:t:acme}}:d:{DEST}:sf:token"))
        .arg("sealed")
        .query(&mut s.redis.conn())
        .expect("sealed");
    assert!(!sealed.contains('!'), "sealed, not the session id itself");

    let mut rotated = o.clone();
    rotated.rev = 2;
    worker(&s, &rotated)
        .sink
        .write(&batch, Priority::Backfill)
        .await
        .expect("new revision");
    assert_eq!(
        inspect(&s)["calls"]["token"],
        2,
        "changed credentials: a new token at once"
    );

    let _: () = redis::cmd("SET")
        .arg(LIVE)
        .arg("ffffffffffff")
        .query(&mut s.redis.conn())
        .expect("live");
    let mut gone = o.clone();
    gone.rev = 3;
    let err = worker(&s, &gone)
        .sink
        .write(&batch, Priority::Backfill)
        .await
        .expect_err("the tenant moved on");
    assert_eq!((err.next, err.code), (Next::Retry, "DEST_CHANGED"));
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{crmsync:t:acme}}:d:{DEST}:sf:lock*"))
        .query(&mut s.redis.conn())
        .expect("keys");
    assert!(keys.is_empty(), "no lock left for a destination that is gone: {keys:?}");
}

/// A Lead a user converted answers `CANNOT_UPDATE_CONVERTED_LEAD`: it is written to the
/// converted Contact (which keeps the external id) in one more call, and no new Lead appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_lead_is_updated_as_its_contact() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, |_| {}));
    let first = w
        .sink
        .write(
            &[
                upsert("c1", "lee@startup.io", None),
                upsert("c2", "sam@startup.io", None),
            ],
            Priority::Backfill,
        )
        .await
        .expect("leads");
    let (lead1, lead2) = (rid(&first.outcomes[0]), rid(&first.outcomes[1]));
    assert!(lead1.starts_with("00Q"));
    let contact1 = s.sim.convert_salesforce_lead(ORG, &lead1).expect("convert");
    let contact2 = s.sim.convert_salesforce_lead(ORG, &lead2).expect("convert");

    let batch = vec![
        Write::Upsert {
            contact_id: "c1".into(),
            record: CrmRecord {
                title: Some("CTO".into()),
                ..record("lee@startup.io", "Lee", None)
            },
            rid: Some(lead1.clone()),
        },
        // The rid lost (or never known): routing says Lead, the conversion is found all the same.
        upsert("c2", "sam@startup.io", None),
        upsert("c3", "new@startup.io", None),
    ];
    let out = w.sink.write(&batch, Priority::Change).await.expect("write");
    assert_eq!(
        out.outcomes[..2],
        [
            Outcome::Written {
                rid: contact1.clone(),
                inserted: false
            },
            Outcome::Written {
                rid: contact2.clone(),
                inserted: false
            }
        ]
    );
    assert!(matches!(out.outcomes[2], Outcome::Written { inserted: true, .. }));
    assert_eq!(
        out.calls, 2,
        "the Lead upsert, then one Contact upsert for both conversions"
    );
    let c1 = by_ext(&s, "contacts", "c1");
    assert_eq!(
        (c1["Id"].as_str(), c1["Title"].as_str()),
        (Some(contact1.as_str()), Some("CTO"))
    );
    assert_ne!(c1["AccountId"], Value::Null, "the conversion's Account is kept");
    let leads = records(&s, "leads");
    assert_eq!(leads.len(), 3, "the two converted Leads and the new one: {leads:?}");
    assert_eq!(leads.iter().filter(|l| l["IsConverted"] == true).count(), 2);
    assert_eq!(records(&s, "contacts").len(), 2);

    // The next write goes straight to the Contact (sticky by the rid now held).
    let out = w
        .sink
        .write(&[upsert("c1", "lee@startup.io", Some(&contact1))], Priority::Change)
        .await
        .expect("again");
    assert_eq!((out.calls, rid(&out.outcomes[0])), (1, contact1));
}

/// Deletes: a known Contact by its id; a contact without a known record, or whose Lead may have
/// been converted, found by external id first (across query pages); already-gone records count
/// as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_by_contact_id_and_by_external_id() {
    let s = setup(|sf| sf.query_page_size = 1).await;
    let w = worker(&s, &org(&s, |_| {}));
    let out = w
        .sink
        .write(
            &[
                upsert("c1", "ada@acme.com", None),
                upsert("c2", "bob@other.org", None),
                upsert("c3", "cy@other.org", None),
                upsert("c4", "dee@other.org", None),
                upsert("c5'\\x", "oneil@other.org", None),
            ],
            Priority::Backfill,
        )
        .await
        .expect("write");
    let ids: Vec<String> = out.outcomes.iter().map(rid).collect();
    let converted = s.sim.convert_salesforce_lead(ORG, &ids[2]).expect("convert");
    let deletes = vec![
        delete("c1", Some(&ids[0])),
        delete("c2", None),
        delete("c3", Some(&ids[2])),
        delete("c5'\\x", Some("not-an-id")),
        delete("c9", None),
    ];
    let out = w.sink.write(&deletes, Priority::Change).await.expect("delete");
    assert_eq!(out.outcomes, vec![Outcome::Deleted; 5]);
    // Contact lookup: 1 page (c3's converted Contact); Lead lookup: 2 pages (c2, c5, one row a
    // page; the quote and backslash of c5's id escaped); one delete.
    assert_eq!(out.calls, 4, "lookups across pages and one delete");
    assert!(
        records(&s, "contacts").is_empty(),
        "c1 and c3's converted Contact are gone"
    );
    let leads: Vec<String> = records(&s, "leads")
        .iter()
        .map(|l| l[EXT].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        leads,
        vec!["c3", "c4"],
        "c3's converted Lead stays as history; c4 is not deleted"
    );
    assert!(records(&s, "contacts").iter().all(|c| c["Id"] != converted));

    let again = w.sink.write(&deletes[..2], Priority::Change).await.expect("again");
    assert_eq!(again.outcomes, vec![Outcome::Deleted; 2], "already gone");
}

/// With the org's daily allowance spent (here by another integration), Salesforce answers 403
/// `REQUEST_LIMIT_EXCEEDED`: the call is throttled and reports the org's usage for the
/// limiter. Every answer carries the usage, the `limits` probe's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_limit_is_throttled_with_the_orgs_usage() {
    let s = setup(|sf| sf.daily_requests = 10).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    let mut http = w.http.clone();
    std::future::poll_fn(|cx| http.poll_ready(cx)).await.expect("ready");
    let probe = http
        .call(SfCall {
            op: SfOp::Limits,
            priority: Priority::Backfill,
        })
        .await
        .expect("limits");
    assert_eq!(probe.usage(), Some(Usage::Used { used: 1, max: 10 }));
    let body: Value = serde_json::from_slice(&probe.body).expect("json");
    assert_eq!(body["DailyApiRequests"]["Max"], 10);

    w.sink
        .write(&[upsert("a", "a@example.com", None)], Priority::Backfill)
        .await
        .expect("within the allowance");
    s.sim.spend_salesforce_requests(ORG, 100).expect("spend");
    let err = w
        .sink
        .write(&[upsert("b", "b@example.com", None)], Priority::Backfill)
        .await
        .expect_err("over the allowance");
    assert_eq!(err.next, Next::Throttled { retry_after: None }, "{err}");
    assert_eq!(err.code, "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(err.usage, Some(Usage::Used { used: 10, max: 10 }));
    let state = inspect(&s);
    assert_eq!(state["calls"]["rejected_limit"], 1);
    assert_eq!(records(&s, "leads").len(), 1);
}

/// Over the org's concurrency Salesforce answers 403 `REQUEST_LIMIT_EXCEEDED`
/// (`ConcurrentPerOrgLongTxn`): throttled, with its own code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_orgs_concurrency_is_throttled() {
    let faults = FaultConfig {
        latency_ms: [300, 300],
        ..FaultConfig::default()
    };
    let s = setup_with(|sf| sf.concurrency = 1, faults).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    let mut http = w.http.clone();
    std::future::poll_fn(|cx| http.poll_ready(cx)).await.expect("ready");
    let (first, second) = (
        [upsert("a", "a@example.com", None)],
        [upsert("b", "b@example.com", None)],
    );
    let (a, b) = tokio::join!(
        w.sink.write(&first, Priority::Backfill),
        w.sink.write(&second, Priority::Backfill),
    );
    let errors: Vec<_> = [a, b].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].next, errors[0].code),
        (Next::Throttled { retry_after: None }, "SF_CONCURRENCY")
    );
    assert_eq!(inspect(&s)["calls"]["rejected_concurrency"], 1);
    assert_eq!(records(&s, "leads").len(), 1);
}

/// 200 records go in one call, 201 in two; an external id twice in a batch goes in two calls,
/// in order (Salesforce refuses one twice in a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_records_per_call_and_each_external_id_once_per_call() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    let batch = |n: usize, tag: &str| -> Vec<Write> {
        (0..n)
            .map(|i| upsert(&format!("{tag}{i}"), &format!("{tag}{i}@example.com"), None))
            .collect()
    };
    let out = w.sink.write(&batch(200, "a"), Priority::Backfill).await.expect("200");
    assert_eq!((out.calls, out.outcomes.len()), (1, 200));
    let out = w.sink.write(&batch(201, "b"), Priority::Backfill).await.expect("201");
    assert_eq!((out.calls, out.outcomes.len()), (2, 201));
    assert!(
        out.outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Written { inserted: true, .. }))
    );
    assert_eq!(records(&s, "leads").len(), 401);

    let twice = vec![
        upsert("x", "x@example.com", None),
        upsert("y", "y@example.com", None),
        Write::Upsert {
            contact_id: "x".into(),
            record: record("x2@example.com", "Later", None),
            rid: None,
        },
    ];
    let out = w.sink.write(&twice, Priority::Change).await.expect("twice");
    assert_eq!(out.calls, 2);
    assert_eq!(rid(&out.outcomes[0]), rid(&out.outcomes[2]));
    assert!(matches!(out.outcomes[2], Outcome::Written { inserted: false, .. }));
    assert_eq!(
        by_ext(&s, "leads", "x")["Email"],
        "x2@example.com",
        "the later write wins"
    );
}

/// The Accounts are read across query pages into Redis (bounded by a TTL), shared with other
/// processes, and read again once the copy is an hour old (a second, at this time scale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_read_across_pages_and_again_when_an_hour_old() {
    let s = setup(|sf| sf.query_page_size = 1).await;
    let o = org(&s, |_| {});
    let a = worker_scaled(&s, &o, 3_600.0);
    let out = a
        .sink
        .write(&[upsert("c1", "x@initech.test", None)], Priority::Backfill)
        .await
        .expect("write");
    assert_eq!(
        out.calls,
        2 + 1,
        "two pages of Accounts (two have websites), one upsert"
    );
    let key = format!("{{crmsync:t:acme}}:d:{DEST}:sf:accounts");
    let acme: Option<String> = redis::cmd("HGET")
        .arg(&key)
        .arg("acme.com")
        .query(&mut s.redis.conn())
        .expect("hget");
    assert_eq!(acme, Some(account_id(&s, "Acme Inc.")));
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut s.redis.conn()).expect("ttl");
    assert!(ttl > 0, "the copy expires: {ttl}");

    let b = worker_scaled(&s, &o, 3_600.0);
    let out = b
        .sink
        .write(&[upsert("c2", "y@acme.com", None)], Priority::Backfill)
        .await
        .expect("write");
    assert_eq!(out.calls, 1, "another process uses the fleet's copy");
    assert_eq!(inspect(&s)["calls"]["query"], 2);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let out = b
        .sink
        .write(&[upsert("c3", "z@acme.com", None)], Priority::Backfill)
        .await
        .expect("write");
    assert_eq!(out.calls, 3, "read again: two pages, then the upsert");
    assert_eq!(inspect(&s)["calls"]["query"], 4);
    assert_eq!(records(&s, "contacts").len(), 3);
}

/// A read lists every external id once: the Contacts, then the unconverted Leads, a page of
/// `query_page_size` (here 200) per request, each record as it was written (through the
/// profile's `comparable`: no company) under the id the write reported; a converted Lead is
/// left out and its Contact listed instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_lists_contacts_then_unconverted_leads_once_each() {
    let s = setup(|sf| sf.query_page_size = 200).await;
    let w = worker(&s, &org(&s, |_| {}));
    // 200 at Acme's domain (Contacts under its Account), 100 elsewhere (Leads).
    let records: Vec<(String, CrmRecord)> = (0..300)
        .map(|i| {
            let domain = if i % 3 == 0 { "elsewhere.org" } else { "acme.com" };
            let r = CrmRecord {
                first_name: (i % 4 != 0).then(|| format!("First{i}")),
                last_name: format!("Last{i}"),
                email: format!("p{i}@{domain}"),
                phone: (i % 2 == 0).then(|| format!("+1 555 01{i:03}")),
                company: (i % 5 != 0).then(|| format!("Company {}", i % 7)),
                title: (i % 6 == 0).then(|| "Engineer".to_owned()),
            };
            (format!("c-{i:03}"), r)
        })
        .collect();
    let batch: Vec<Write> = records
        .iter()
        .map(|(cid, r)| Write::Upsert {
            contact_id: cid.clone(),
            record: r.clone(),
            rid: None,
        })
        .collect();
    let out = w.sink.write(&batch, Priority::Backfill).await.expect("write");
    let mut rids: Vec<String> = out.outcomes.iter().map(rid).collect();
    assert_eq!(rids.iter().filter(|r| r.starts_with("003")).count(), 200);
    let converted = s.sim.convert_salesforce_lead(ORG, &rids[3]).expect("convert");
    rids[3] = converted;

    let queries = inspect(&s)["calls"]["query"].as_u64().expect("queries");
    let (by_key, pages) = crate::read_all(&w.sink).await;
    assert_eq!(
        pages.iter().map(|p| p.records.len()).collect::<Vec<_>>(),
        vec![200, 1, 99],
        "two pages of Contacts (the converted Lead's among them), one of unconverted Leads"
    );
    assert_eq!(
        pages
            .iter()
            .map(|p| p.next.as_deref().map(|n| n.split(':').next().unwrap_or("")))
            .collect::<Vec<_>>(),
        vec![Some("contact"), Some("lead"), None]
    );
    assert_eq!(pages[1].next.as_deref(), Some("lead:"), "the Leads' first page");
    assert_eq!(pages.iter().map(|p| p.calls).sum::<u64>(), 3);
    assert_eq!(pages.iter().map(|p| p.cost).sum::<u64>(), 3, "1 request a page");
    assert_eq!(inspect(&s)["calls"]["query"].as_u64().expect("queries") - queries, 3);
    assert_eq!(by_key.len(), 300, "every external id once");
    let comparable = crmsync_sink::salesforce::PROFILE.comparable;
    for ((cid, r), id) in records.iter().zip(&rids) {
        let side = &by_key[cid];
        assert_eq!(&side.rid, id, "{cid}");
        assert_eq!(side.record.company, None);
        assert_eq!(comparable(&side.record), comparable(r), "{cid}");
    }
    assert!(
        by_key[&records[3].0].rid.starts_with("003"),
        "the converted Lead's Contact"
    );
}

/// A cursor the sink did not make is refused before anything is sent; the Leads' phase can be
/// started from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_cursors_are_checked_before_anything_is_sent() {
    let s = setup(|_| {}).await;
    let w = worker(&s, &org(&s, routed(Routing::Lead)));
    w.sink
        .write(&[upsert("c1", "a@example.com", None)], Priority::Backfill)
        .await
        .expect("write");
    let queries = inspect(&s)["calls"]["query"].clone();
    for bad in [
        "",
        "/services/data/v60.0/query/01gD0000002HU6KIAW-2000",
        "account:",
        "lead:https://evil.example.com/services/data/v60.0/query/x",
        "contact:/services/data/v60.0/sobjects/User",
        "contact:/services/data/v60.0/query/../../limits",
    ] {
        let err = w.sink.read(Some(bad), Priority::Backfill).await.expect_err(bad);
        assert_eq!(
            (err.next, err.code, err.not_sent),
            (Next::FailJob, "BAD_CURSOR", true),
            "{bad}"
        );
    }
    assert_eq!(inspect(&s)["calls"]["query"], queries, "nothing sent");
    let leads = w.sink.read(Some("lead:"), Priority::Backfill).await.expect("leads");
    assert_eq!(
        (leads.records.len(), leads.records[0].key.as_str(), leads.next),
        (1, "c1", None)
    );
}
