//! The Zoho client against the simulator, with the token broker on a real Redis.

use std::sync::Arc;
use std::time::Duration;

use crmsync_domain::ZohoContact;
use crmsync_sim::{RunningSim, SimConfig, TenantConfig};
use crmsync_tenants::SecretKey;
use crmsync_testkit::RedisServer;
use crmsync_zoho::{Next, RecordResult, TokenBroker, ZohoClient, ZohoError, ZohoOrg};

struct Setup {
    _redis: RedisServer,
    sim: RunningSim,
    client: ZohoClient,
    tenant: TenantConfig,
    redis_url: String,
}

fn record(email: &str, last: &str) -> ZohoContact {
    ZohoContact {
        first_name: Some("Ada".into()),
        last_name: last.into(),
        email: email.into(),
        phone: None,
        account_name: Some("Analytical Engines".into()),
        title: None,
    }
}

async fn setup(dc: &str, daily_credits: u64) -> Setup {
    setup_with(dc, daily_credits, 1.0).await
}

async fn setup_with(dc: &str, daily_credits: u64, time_scale: f64) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
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
    let client = client_for(&redis.url());
    Setup {
        redis_url: redis.url(),
        _redis: redis,
        sim,
        client,
        tenant,
    }
}

/// A client with its own Redis connection, as a separate worker process would have.
fn client_for(redis_url: &str) -> ZohoClient {
    let key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("key");
    let conn =
        crmsync_queue::connect(redis::Client::open(redis_url).expect("url"), Duration::from_secs(5)).expect("conn");
    let http = ZohoClient::http_client(Duration::from_secs(10)).expect("http");
    ZohoClient::new(http.clone(), TokenBroker::new(conn, http, Arc::new(key)))
}

fn org(s: &Setup) -> ZohoOrg {
    ZohoOrg {
        tenant: "acme".into(),
        key_tag: "{crmsync:t:acme}".into(),
        accounts_url: s.sim.zoho_accounts_url(&s.tenant.zoho.dc),
        api_domain_override: None,
        client_id: s.tenant.zoho.client_id.clone(),
        client_secret: s.tenant.zoho.client_secret.clone(),
        refresh_token: s.tenant.zoho.refresh_token.clone(),
    }
}

fn sim_org(s: &Setup) -> serde_json::Value {
    s.sim.inspect_org(&s.tenant.zoho.org_id).expect("org")
}

/// The token endpoint's `api_domain` is where calls go: a tenant in the EU data center works
/// with its EU token, per-record outcomes come back in request order, and a bad record does
/// not block the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_reports_each_record_in_order_on_the_tenants_data_center() {
    let s = setup("eu", 50_000).await;
    let o = org(&s);
    let batch = vec![
        record("ada@example.com", "Lovelace"),
        record("bad@example.com", ""),
        record("ADA@example.com", "Byron"),
    ];
    let reply = s.client.upsert_contacts(&o, &batch).await.expect("upsert");
    assert_eq!(reply.http_status, 207);
    assert!(matches!(reply.results[0], RecordResult::Inserted { .. }));
    assert_eq!(
        reply.results[1],
        RecordResult::Rejected {
            code: "MANDATORY_NOT_FOUND".into(),
            field: Some("Last_Name".into()),
            message: "required field not found".into()
        }
    );
    assert!(
        matches!(reply.results[2], RecordResult::Updated { .. }),
        "same email, another case: an update"
    );
    assert_eq!(reply.results[1].next(), Some(Next::RejectRecord));
    let state = sim_org(&s);
    assert_eq!(state["dc"], "eu");
    assert_eq!(state["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(state["workflows_triggered"], 0);

    let ids = s.client.search_by_email(&o, "ada@example.com").await.expect("search");
    assert_eq!(ids.len(), 1);
    assert!(
        s.client
            .search_by_email(&o, "nobody@example.com")
            .await
            .expect("204")
            .is_empty()
    );
    let deleted = s
        .client
        .delete_contacts(&o, &[ids[0].clone(), "123".into()])
        .await
        .expect("delete");
    assert_eq!(deleted.http_status, 207);
}

/// Many workers asking for the tenant's token at once make one token request between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_share_one_token_refresh() {
    let s = setup("us", 50_000).await;
    let o = org(&s);
    let clients: Vec<ZohoClient> = (0..6).map(|_| client_for(&s.redis_url)).collect();
    let calls = clients.iter().enumerate().map(|(i, c)| {
        let o = o.clone();
        async move {
            c.upsert_contacts(&o, &[record(&format!("w{i}@example.com"), "Worker")])
                .await
        }
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
    let o = org(&s);
    s.client
        .upsert_contacts(&o, &[record("a@example.com", "A")])
        .await
        .expect("first");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let reply = s
        .client
        .upsert_contacts(&o, &[record("b@example.com", "B")])
        .await
        .expect("second");
    assert!(matches!(reply.results[0], RecordResult::Inserted { .. }));
    let state = sim_org(&s);
    assert_eq!(
        state["calls"]["by_status"]["401"], 1,
        "one refused call: {}",
        state["calls"]
    );
    assert_eq!(state["token_requests"], 2, "one refresh after the refusal");
}

/// Over the org's credit allowance Zoho answers 429, which the client reports as "retry later".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_credit_allowance_is_a_retry_later() {
    let s = setup("us", 2).await;
    let o = org(&s);
    let batch: Vec<ZohoContact> = (0..15).map(|i| record(&format!("c{i}@example.com"), "C")).collect();
    s.client.upsert_contacts(&o, &batch).await.expect("2 credits");
    let err = s
        .client
        .upsert_contacts(&o, &batch)
        .await
        .expect_err("over the allowance");
    assert!(matches!(err, ZohoError::RateLimited { .. }), "{err}");
    assert_eq!(err.next(), Next::RetryLater(None));
}

/// A refresh token Zoho refuses is a job failure with a message saying how to fix it; a grant
/// code exchanges once for the refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_token_fails_the_job_and_grant_codes_exchange_once() {
    let s = setup("us", 50_000).await;
    let mut o = org(&s);
    o.refresh_token = "rt-revoked".into();
    let err = s
        .client
        .upsert_contacts(&o, &[record("x@example.com", "X")])
        .await
        .expect_err("refused");
    assert_eq!(err.next(), Next::FailJob);
    assert!(err.to_string().contains("crmsync zoho exchange-code"), "{err}");

    let http = ZohoClient::http_client(Duration::from_secs(5)).expect("http");
    let rt = crmsync_zoho::exchange_code(
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
    let again = crmsync_zoho::exchange_code(
        &http,
        &o.accounts_url,
        &o.client_id,
        &o.client_secret,
        "code-acme",
        None,
    )
    .await;
    assert!(matches!(again, Err(ZohoError::Auth { .. })), "a code works once");
}
