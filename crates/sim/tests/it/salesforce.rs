//! The Salesforce org: helpers shared by the `salesforce_*` tests, and OAuth and sessions.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crmsync_sim::{RunningSim, SalesforceConfig, SimConfig, TenantConfig};
use hmac::{Hmac, KeyInit as _, Mac as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{Answer, answer, client, config, start, tenant};

pub const VERSION: &str = "v60.0";
pub const EXT: &str = "Nylas_Contact_Id__c";
pub const ORG: &str = "sforg-acme";

/// Tenant `acme` with a Salesforce org set up by `tweak`.
pub fn sf_tenant(contacts: usize, tweak: impl FnOnce(&mut SalesforceConfig)) -> TenantConfig {
    let mut t = tenant("acme", contacts);
    let mut sf = SalesforceConfig::named("acme");
    tweak(&mut sf);
    t.salesforce = Some(sf);
    t
}

/// A simulator with tenant `acme` and its Salesforce org.
pub async fn sf_sim(tweak: impl FnOnce(&mut SalesforceConfig)) -> RunningSim {
    start(config(vec![sf_tenant(5, tweak)])).await
}

pub async fn sf_sim_with(cfg: SimConfig) -> RunningSim {
    start(cfg).await
}

/// `POST {login}/services/oauth2/token` with form parameters.
pub async fn token_request(sim: &RunningSim, org: &str, params: &[(&str, &str)]) -> Answer {
    let resp = client()
        .post(format!("{}/services/oauth2/token", sim.salesforce_login_url(org)))
        .form(params)
        .send()
        .await
        .expect("token request");
    answer(resp).await
}

/// A fresh access token of org `sforg-acme` (refresh-token grant).
pub async fn sf_token(sim: &RunningSim) -> String {
    let a = token_request(
        sim,
        ORG,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "sfrt-acme"),
            ("client_id", "sfcid-acme"),
            ("client_secret", "sfcs-acme"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json["access_token"].as_str().expect("access_token").to_string()
}

/// `{instance}/services/data/v60.0/{rest}`.
pub fn data_url(sim: &RunningSim, rest: &str) -> String {
    format!("{}/services/data/{VERSION}/{rest}", sim.salesforce_instance_url(ORG))
}

/// A request to the instance with the token.
pub async fn sf_call(
    sim: &RunningSim,
    token: &str,
    method: reqwest::Method,
    rest: &str,
    body: Option<&Value>,
) -> Answer {
    let mut req = client().request(method, data_url(sim, rest)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    answer(req.send().await.expect("salesforce request")).await
}

/// `PATCH composite/sobjects/{object}/Nylas_Contact_Id__c` with `records` (typed for you).
pub async fn upsert(sim: &RunningSim, token: &str, object: &str, records: Vec<Value>) -> Answer {
    let records: Vec<Value> = records
        .into_iter()
        .map(|mut r| {
            r["attributes"] = json!({"type": object});
            r
        })
        .collect();
    let body = json!({"allOrNone": false, "records": records});
    sf_call(
        sim,
        token,
        reqwest::Method::PATCH,
        &format!("composite/sobjects/{object}/{EXT}"),
        Some(&body),
    )
    .await
}

/// `GET query?q=...`
pub async fn query(sim: &RunningSim, token: &str, soql: &str) -> Answer {
    let resp = client()
        .get(data_url(sim, "query"))
        .query(&[("q", soql)])
        .bearer_auth(token)
        .send()
        .await
        .expect("query");
    answer(resp).await
}

/// `GET {instance}{nextRecordsUrl}`
pub async fn query_more(sim: &RunningSim, token: &str, next: &str) -> Answer {
    let resp = client()
        .get(format!("{}{next}", sim.salesforce_instance_url(ORG)))
        .bearer_auth(token)
        .send()
        .await
        .expect("query more");
    answer(resp).await
}

/// A Contact as crmsync sends it.
pub fn contact(ext: &str, last: &str, email: &str) -> Value {
    json!({EXT: ext, "FirstName": "Test", "LastName": last, "Email": email})
}

/// A Lead as crmsync sends it.
pub fn lead(ext: &str, last: &str, email: &str, company: &str) -> Value {
    json!({EXT: ext, "FirstName": "Test", "LastName": last, "Email": email, "Company": company})
}

/// The `Sforce-Limit-Info` header.
pub fn usage(a: &Answer) -> Option<String> {
    a.headers
        .get("sforce-limit-info")
        .map(|h| h.to_str().expect("ascii").to_string())
}

/// The inspection document.
pub fn inspect(sim: &RunningSim) -> Value {
    sim.inspect_salesforce(ORG).expect("org")
}

/// The `statusCode` of the first error of each result.
pub fn codes(a: &Answer) -> Vec<String> {
    a.json
        .as_array()
        .expect("result array")
        .iter()
        .map(|r| {
            if r["success"] == true {
                "OK".to_string()
            } else {
                r["errors"][0]["statusCode"].as_str().unwrap_or("?").to_string()
            }
        })
        .collect()
}

#[tokio::test]
async fn refresh_token_grant_answers_salesforces_token_document_without_expires_in() {
    let sim = sf_sim(|_| {}).await;
    let a = token_request(
        &sim,
        ORG,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "sfrt-acme"),
            ("client_id", "sfcid-acme"),
            ("client_secret", "sfcs-acme"),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let doc = a.json.as_object().expect("object");
    let mut keys: Vec<&str> = doc.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "id",
            "instance_url",
            "issued_at",
            "signature",
            "token_type"
        ]
    );
    assert_eq!(a.json["token_type"], "Bearer");
    assert_eq!(a.json["instance_url"], sim.salesforce_instance_url(ORG));
    let id = a.json["id"].as_str().expect("id");
    let rest = id
        .strip_prefix(&format!("{}/id/", sim.salesforce_login_url(ORG)))
        .expect("id under the login URL");
    let (org_id, user_id) = rest.split_once('/').expect("org/user");
    assert!(org_id.starts_with("00D") && org_id.len() == 18, "{org_id}");
    assert!(user_id.starts_with("005") && user_id.len() == 18, "{user_id}");
    let token = a.json["access_token"].as_str().expect("token");
    assert!(token.starts_with(&format!("{}!", &org_id[..15])), "{token}");
    let issued_at = a.json["issued_at"].as_str().expect("issued_at as a string");
    let ms: u64 = issued_at.parse().expect("milliseconds");
    assert!(ms > 1_600_000_000_000);
    // signature = base64(HMAC-SHA256(client_secret, id + issued_at)), computed here.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"sfcs-acme").expect("key");
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    assert_eq!(a.json["signature"], STANDARD.encode(mac.finalize().into_bytes()));
    // The token works.
    let limits = sf_call(&sim, token, reqwest::Method::GET, "limits", None).await;
    assert_eq!(limits.status, StatusCode::OK);
    let org = inspect(&sim);
    assert_eq!(
        (org["token_requests"].clone(), org["calls"]["token"].clone()),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn authorization_code_exchanges_once_and_adds_the_refresh_token() {
    let sim = sf_sim(|_| {}).await;
    let exchange = |code: &'static str| {
        let sim = &sim;
        async move {
            token_request(
                sim,
                ORG,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("client_id", "sfcid-acme"),
                    ("client_secret", "sfcs-acme"),
                    ("redirect_uri", "https://app.example/callback"),
                ],
            )
            .await
        }
    };
    let a = exchange("sfcode-acme").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["refresh_token"], "sfrt-acme");
    assert!(a.json.get("expires_in").is_none());
    let again = exchange("sfcode-acme").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json,
        json!({"error": "invalid_grant", "error_description": "expired authorization code"})
    );
    let unknown = exchange("sfcode-nobody").await;
    assert_eq!(
        unknown.json,
        json!({"error": "invalid_grant", "error_description": "invalid authorization code"})
    );
}

#[tokio::test]
async fn token_failures_are_400_with_salesforces_error_codes() {
    let sim = sf_sim(|_| {}).await;
    /// Form parameters, then the expected `error` and `error_description`.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 4] = [
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "sfrt-dead"),
                ("client_id", "sfcid-acme"),
                ("client_secret", "sfcs-acme"),
            ],
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "sfrt-acme"),
                ("client_id", "sfcid-other"),
                ("client_secret", "sfcs-acme"),
            ],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "sfrt-acme"),
                ("client_id", "sfcid-acme"),
                ("client_secret", "wrong"),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            &[("grant_type", "password"), ("client_id", "sfcid-acme")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ];
    for (params, error, description) in cases {
        let a = token_request(&sim, ORG, params).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{params:?}");
        assert_eq!(a.json, json!({"error": error, "error_description": description}));
    }
    let org = inspect(&sim);
    assert_eq!(
        (org["token_requests"].clone(), org["calls"]["token"].clone()),
        (json!(4), json!(0))
    );
    let unknown_org = token_request(&sim, "sforg-nobody", &[("grant_type", "refresh_token")]).await;
    assert_eq!(unknown_org.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_missing_or_foreign_sessions_are_401_invalid_session_id() {
    let mut cfg = config(vec![sf_tenant(1, |_| {}), {
        let mut t = tenant("globex", 1);
        t.salesforce = Some(SalesforceConfig::named("globex"));
        t
    }]);
    cfg.seed = 3;
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    let ok = sf_call(&sim, &token, reqwest::Method::GET, "limits", None).await;
    assert_eq!(ok.status, StatusCode::OK);
    let expected = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
    assert_eq!(sim.expire_salesforce_sessions(ORG).expect("org"), 1);
    let expired = sf_call(&sim, &token, reqwest::Method::GET, "limits", None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json, expected);
    assert_eq!(usage(&expired), None, "not authenticated: no usage header");
    // Refresh and retry once, as a client must.
    let fresh = sf_token(&sim).await;
    assert_eq!(
        sf_call(&sim, &fresh, reqwest::Method::GET, "limits", None).await.status,
        StatusCode::OK
    );
    // No token, a made-up one, and another org's.
    let none = answer(client().get(data_url(&sim, "limits")).send().await.expect("send")).await;
    assert_eq!(
        (none.status, none.json.clone()),
        (StatusCode::UNAUTHORIZED, expected.clone())
    );
    let made_up = sf_call(&sim, "00Dxx!nope", reqwest::Method::GET, "limits", None).await;
    assert_eq!(made_up.status, StatusCode::UNAUTHORIZED);
    let globex = token_request(
        &sim,
        "sforg-globex",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "sfrt-globex"),
            ("client_id", "sfcid-globex"),
            ("client_secret", "sfcs-globex"),
        ],
    )
    .await;
    let foreign = globex.json["access_token"].as_str().expect("token");
    assert_eq!(
        sf_call(&sim, foreign, reqwest::Method::GET, "limits", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let org = inspect(&sim);
    assert_eq!(org["calls"]["by_status"]["401"], 4);
    assert_eq!(org["api_usage"]["used"], 2, "401s are not API usage");

    // Over HTTP too.
    let resp = client()
        .post(format!("{}/_sim/salesforce/{ORG}/expire_sessions", sim.base_url()))
        .send()
        .await
        .expect("expire");
    assert_eq!(resp.json::<Value>().await.expect("json"), json!({"expired": 1}));
    assert!(sim.expire_salesforce_sessions("sforg-nobody").is_err());
}

#[tokio::test]
async fn sessions_end_after_session_secs_of_simulated_time() {
    let mut cfg = config(vec![sf_tenant(1, |sf| sf.session_secs = 10)]);
    cfg.time_scale = 50.0; // 10 simulated seconds = 200 real ms
    let sim = sf_sim_with(cfg).await;
    let token = sf_token(&sim).await;
    assert_eq!(
        sf_call(&sim, &token, reqwest::Method::GET, "limits", None).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = sf_call(&sim, &token, reqwest::Method::GET, "limits", None).await;
    assert_eq!(late.status, StatusCode::UNAUTHORIZED);
    assert_eq!(late.json[0]["errorCode"], "INVALID_SESSION_ID");
}
