//! Tenant store tests against a real Redis.

use std::time::Duration;

use crmsync_tenants::{NylasSettings, Secret, SecretError, SecretKey, StoreError, Tenant, TenantStore, ZohoSettings};
use crmsync_testkit::RedisServer;

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        nylas: NylasSettings {
            grant_id: "grant-1".into(),
            api_key: Secret::new("nyk_v0_SECRET_API_KEY_123"),
            api_uri: "https://api.us.nylas.com".into(),
        },
        zoho: ZohoSettings {
            region: Some("eu".into()),
            accounts_url: None,
            api_domain: None,
            client_id: "1000.CLIENTID".into(),
            client_secret: Secret::new("CLIENT_SECRET_VALUE_xyz"),
            refresh_token: Some(Secret::new("1000.REFRESH_TOKEN_VALUE_abc")),
        },
        daily_credits: 50_000,
        budget_share: 0.8,
        edition: None,
        users: None,
        requests_per_second: crmsync_tenants::DEFAULT_RPS,
        concurrency: None,
        webhook_secret: None,
        webhook_secret_next: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn store(redis: &RedisServer, key: Option<SecretKey>) -> TenantStore {
    let conn = crmsync_queue::connect(redis.client(), Duration::from_secs(5)).expect("conn");
    TenantStore::new(conn, "crmsync", key)
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
    assert_eq!(got.accounts_url().as_deref(), Some("https://accounts.zoho.eu"));
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

    assert!(s.remove("acme").await.expect("remove"));
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
    t.zoho.region = Some("mars".into());
    assert!(
        s.add(t)
            .await
            .expect_err("refused")
            .to_string()
            .contains("unknown Zoho region `mars`")
    );
    assert!(s.ids().await.expect("ids").is_empty(), "nothing stored");
}
