//! Tenant store tests against a real Redis.

use std::time::Duration;

use crmsync_tenants::{
    Crm, NylasSettings, Routing, SalesforceConnection, Secret, SecretError, SecretKey, StoreError, Tenant, TenantKeys,
    TenantStore, ZohoConnection,
};
use crmsync_testkit::RedisServer;

fn tenant(id: &str) -> Tenant {
    Tenant::new(
        id,
        NylasSettings {
            grant_id: "grant-1".into(),
            api_key: Secret::new("nyk_v0_SECRET_API_KEY_123"),
            api_uri: "https://api.us.nylas.com".into(),
        },
        Crm::Zoho(ZohoConnection {
            region: Some("eu".into()),
            accounts_url: None,
            api_domain: None,
            client_id: "1000.CLIENTID".into(),
            client_secret: Secret::new("CLIENT_SECRET_VALUE_xyz"),
            refresh_token: Some(Secret::new("1000.REFRESH_TOKEN_VALUE_abc")),
        }),
    )
}

fn zoho(t: &mut Tenant) -> &mut ZohoConnection {
    match &mut t.crm {
        Crm::Zoho(z) => z,
        other => panic!("not Zoho: {other:?}"),
    }
}

fn store(redis: &RedisServer, key: Option<SecretKey>) -> TenantStore {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    TenantStore::new(conn, "crmsync", key)
}

#[tokio::test]
async fn salesforce_tenants_round_trip_sealed_and_a_new_org_is_a_new_destination() {
    let redis = RedisServer::start();
    let key = SecretKey::from_base64(&SecretKey::generate()).expect("key");
    let s = store(&redis, Some(key));
    let mut sf = SalesforceConnection::new(
        "https://test.salesforce.com",
        "3MVG9.CLIENT",
        Secret::new("SF_CLIENT_SECRET_value"),
    );
    sf.refresh_token = Some(Secret::new("5Aep861.SF_REFRESH_value"));
    sf.routing = Routing::Lead;
    sf.allow_duplicates = true;
    let mut t = tenant("globex");
    t.crm = Crm::Salesforce(sf.clone());
    s.add(t).await.expect("add");
    let raw: String = redis::cmd("GET")
        .arg("{crmsync:t:globex}:tenant")
        .query(&mut redis.conn())
        .expect("raw");
    for secret in ["SF_CLIENT_SECRET_value", "5Aep861.SF_REFRESH_value"] {
        assert!(!raw.contains(secret), "secret stored in plain text: {raw}");
    }
    let got = s.get("globex").await.expect("get");
    assert_eq!(got.crm, Crm::Salesforce(sf.clone()));
    let view = s.view("globex").await.expect("view");
    assert_eq!(view["crm"]["kind"], "salesforce");
    assert_eq!(view["crm"]["routing"], "lead");
    assert!(!view.to_string().contains("SF_REFRESH_value"), "{view}");

    // A new API version keeps the destination; another org's grant does not.
    let dest = got.dest.clone();
    let mut newer = got.clone();
    if let Crm::Salesforce(c) = &mut newer.crm {
        c.api_version = "v61.0".into();
    }
    let up = s.update(newer).await.expect("update");
    assert_eq!((up.dest.as_str(), up.old_dest.as_deref()), (dest.as_str(), None));
    let mut other = s.get("globex").await.expect("get");
    if let Crm::Salesforce(c) = &mut other.crm {
        c.refresh_token = Some(Secret::new("another org's grant"));
    }
    let up = s.update(other).await.expect("update");
    assert_ne!(up.dest, dest);
    assert_eq!(up.old_dest.as_deref(), Some(dest.as_str()));
}

#[tokio::test]
async fn tenants_round_trip_with_secrets_sealed_at_rest() {
    let redis = RedisServer::start();
    let key = SecretKey::from_base64(&SecretKey::generate()).expect("key");
    let s = store(&redis, Some(key.clone()));
    s.add(tenant("acme")).await.expect("add");
    assert!(matches!(s.add(tenant("acme")).await, Err(StoreError::Exists(_))));

    let raw: String = redis::cmd("GET")
        .arg("{crmsync:t:acme}:tenant")
        .query(&mut redis.conn())
        .expect("raw");
    for secret in [
        "nyk_v0_SECRET_API_KEY_123",
        "CLIENT_SECRET_VALUE_xyz",
        "1000.REFRESH_TOKEN_VALUE_abc",
    ] {
        assert!(!raw.contains(secret), "secret stored in plain text");
    }
    let got = s.get("acme").await.expect("get");
    assert_eq!(got.nylas.api_key.expose(), "nyk_v0_SECRET_API_KEY_123");
    assert_eq!(
        got.crm.zoho().and_then(|z| z.accounts_url()).as_deref(),
        Some("https://accounts.zoho.eu")
    );
    assert!(format!("{got:?}").contains("<redacted>") && !format!("{got:?}").contains("SECRET_API_KEY"));

    let view = s.view("acme").await.expect("view").to_string();
    assert!(view.contains("****_123") && !view.contains("SECRET_API_KEY"), "{view}");

    let mut changed = got.clone();
    changed.budget_share = 0.9;
    s.update(changed).await.expect("update");
    assert_eq!(s.get("acme").await.expect("get").budget_share, 0.9);
    assert_eq!(s.ids().await.expect("ids"), vec!["acme".to_string()]);
    assert_eq!(
        s.tenant_of_grant("grant-1").await.expect("grant").as_deref(),
        Some("acme")
    );
    let mut moved = s.get("acme").await.expect("get");
    moved.nylas.grant_id = "grant-2".into();
    s.update(moved).await.expect("update");
    assert_eq!(s.tenant_of_grant("grant-1").await.expect("grant"), None);
    assert_eq!(
        s.tenant_of_grant("grant-2").await.expect("grant").as_deref(),
        Some("acme")
    );

    // The wrong key says so clearly; no key at all too.
    let wrong = store(
        &redis,
        Some(SecretKey::from_base64(&SecretKey::generate()).expect("key")),
    );
    assert!(matches!(
        wrong.get("acme").await,
        Err(StoreError::Secret(SecretError::WrongKey))
    ));
    let none = store(&redis, None);
    assert!(matches!(
        none.get("acme").await,
        Err(StoreError::Secret(SecretError::Missing))
    ));
    assert!(none.view("acme").await.expect("view").to_string().contains("(sealed)"));

    assert!(s.remove("acme").await.expect("remove").is_some());
    assert_eq!(s.tenant_of_grant("grant-2").await.expect("grant"), None);
    assert!(matches!(s.get("acme").await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn out_of_range_settings_are_refused_with_a_clear_message() {
    let redis = RedisServer::start();
    let s = store(
        &redis,
        Some(SecretKey::from_base64(&SecretKey::generate()).expect("key")),
    );
    let mut t = tenant("low-share");
    t.budget_share = 0.3;
    let err = s.add(t).await.expect_err("refused").to_string();
    assert!(err.contains("budget share 0.3 is out of range"), "{err}");
    let mut t = tenant("no-credits");
    t.daily_credits = 0;
    assert!(
        s.add(t)
            .await
            .expect_err("refused")
            .to_string()
            .contains("daily credits must be a positive number")
    );
    let mut t = tenant("Bad Id");
    t.id = "Bad Id".into();
    assert!(
        s.add(t)
            .await
            .expect_err("refused")
            .to_string()
            .contains("invalid tenant id")
    );
    let mut t = tenant("mars");
    zoho(&mut t).region = Some("mars".into());
    assert!(
        s.add(t)
            .await
            .expect_err("refused")
            .to_string()
            .contains("unknown Zoho region `mars`")
    );
    assert!(s.ids().await.expect("ids").is_empty(), "nothing stored");
}

fn live(redis: &RedisServer, id: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(TenantKeys::new("crmsync", id).live())
        .query(&mut redis.conn())
        .expect("GET")
}

/// A tenant's destination names the org it writes to: kept while settings that do not change
/// the org change (a budget, a rotated client secret: cached tokens are dropped then), new when
/// it points elsewhere (another accounts server, client or grant), and new again when a removed
/// id is added back.
#[tokio::test]
async fn the_destination_follows_where_the_tenant_writes() {
    let redis = RedisServer::start();
    let s = store(
        &redis,
        Some(SecretKey::from_base64(&SecretKey::generate()).expect("key")),
    );
    let added = s.add(tenant("acme")).await.expect("add");
    assert_eq!(added.dest.len(), 12);
    assert_eq!(live(&redis, "acme").as_deref(), Some(added.dest.as_str()));

    let mut t = s.get("acme").await.expect("get");
    t.budget_share = 0.9;
    let u = s.update(t).await.expect("update");
    assert_eq!((u.old_dest.as_deref(), u.connection_changed), (None, false));
    assert_eq!(u.dest, added.dest);

    let mut t = s.get("acme").await.expect("get");
    let rev = t.crm_rev;
    zoho(&mut t).client_secret = Secret::new("ROTATED_SECRET");
    let u = s.update(t).await.expect("update");
    assert_eq!((u.old_dest.as_deref(), u.connection_changed), (None, true));
    let t = s.get("acme").await.expect("get");
    assert_eq!((t.dest.as_str(), t.crm_rev), (added.dest.as_str(), rev + 1));

    let mut dests = vec![added.dest.clone()];
    for change in [
        |z: &mut ZohoConnection| z.accounts_url = Some("https://accounts.example.test".into()),
        |z: &mut ZohoConnection| z.client_id = "1000.OTHER".into(),
        |z: &mut ZohoConnection| z.refresh_token = Some(Secret::new("1000.ANOTHER_GRANT")),
    ] {
        let mut t = s.get("acme").await.expect("get");
        let before = t.dest.clone();
        change(zoho(&mut t));
        let u = s.update(t).await.expect("update");
        assert_eq!(u.old_dest.as_deref(), Some(before.as_str()));
        assert!(u.connection_changed);
        assert!(!dests.contains(&u.dest), "a destination is never reused");
        assert_eq!(live(&redis, "acme").as_deref(), Some(u.dest.as_str()));
        dests.push(u.dest);
    }

    let removed = s.remove("acme").await.expect("remove").expect("it existed");
    assert_eq!(&removed.dest, dests.last().expect("dest"));
    assert_eq!(live(&redis, "acme"), None, "nothing may write for it any more");
    let stale = s.get("acme").await;
    assert!(matches!(stale, Err(StoreError::NotFound(_))));
    let again = s.add(tenant("acme")).await.expect("re-add");
    assert!(!dests.contains(&again.dest), "a re-added tenant is a new one");
}

/// An update racing another one is refused instead of overwriting it.
#[tokio::test]
async fn concurrent_updates_never_lose_one_silently() {
    let redis = RedisServer::start();
    let s = store(
        &redis,
        Some(SecretKey::from_base64(&SecretKey::generate()).expect("key")),
    );
    s.add(tenant("acme")).await.expect("add");
    let (mut a, mut b) = (s.get("acme").await.expect("get"), s.get("acme").await.expect("get"));
    a.budget_share = 0.6;
    b.daily_credits = 7;
    s.update(a).await.expect("first");
    assert!(matches!(s.update(b).await, Err(StoreError::Conflict(_))));
    let t = s.get("acme").await.expect("get");
    assert_eq!((t.budget_share, t.daily_credits), (0.6, 50_000));
}

/// A tenant stored before destinations existed (Zoho settings in `zoho_*` fields) is read as
/// a Zoho connection and gets a destination once, for every reader.
#[tokio::test]
async fn a_tenant_stored_before_destinations_gets_one_when_first_read() {
    let redis = RedisServer::start();
    let key = SecretKey::from_base64(&SecretKey::generate()).expect("key");
    let s = store(&redis, Some(key.clone()));
    let ctx = |f: &str| format!("tenant:old:{f}");
    let legacy = serde_json::json!({
        "id": "old",
        "nylas_grant_id": "grant-old",
        "nylas_api_key": key.seal(&ctx("nylas.api_key"), "nyk_old"),
        "nylas_api_uri": "https://api.us.nylas.com",
        "zoho_region": "us",
        "zoho_accounts_url": null,
        "zoho_api_domain": null,
        "zoho_client_id": "1000.OLD",
        "zoho_client_secret": key.seal(&ctx("zoho.client_secret"), "cs_old"),
        "zoho_refresh_token": key.seal(&ctx("zoho.refresh_token"), "rt_old"),
        "daily_credits": 5000,
        "budget_share": 0.8
    });
    let _: () = redis::cmd("SET")
        .arg(TenantKeys::new("crmsync", "old").tenant())
        .arg(legacy.to_string())
        .query(&mut redis.conn())
        .expect("SET");
    let t = s.get("old").await.expect("get");
    assert_eq!(t.dest.len(), 12);
    assert_eq!(live(&redis, "old").as_deref(), Some(t.dest.as_str()));
    let z = t.crm.zoho().expect("zoho");
    assert_eq!((z.client_id.as_str(), z.client_secret.expose()), ("1000.OLD", "cs_old"));
    assert_eq!(s.get("old").await.expect("again").dest, t.dest, "once for every reader");
}

/// Purging a removed tenant deletes every key under its hash tag, and nobody else's.
#[tokio::test]
async fn purge_deletes_every_key_of_the_tenant_and_no_other() {
    let redis = RedisServer::start();
    let s = store(
        &redis,
        Some(SecretKey::from_base64(&SecretKey::generate()).expect("key")),
    );
    s.add(tenant("acme")).await.expect("add");
    let mut other = tenant("acme2");
    other.nylas.grant_id = "grant-2".into();
    s.add(other).await.expect("add");
    let mut c = redis.conn();
    for i in 0..1_234 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{crmsync:t:acme}}:d:x:k{i}"))
            .arg(1)
            .query(&mut c)
            .expect("SET");
    }
    s.remove("acme").await.expect("remove");
    let report = s.purge("acme", 100).await.expect("purge");
    assert_eq!(report.deleted, 1_234);
    let left: Vec<String> = redis::cmd("KEYS").arg("{crmsync:t:acme}*").query(&mut c).expect("KEYS");
    assert!(left.is_empty(), "{left:?}");
    assert!(s.get("acme2").await.is_ok(), "another tenant's keys stay");
}
