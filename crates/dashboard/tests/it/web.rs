//! The dashboard's HTTP surface: authentication and the JSON API.

use std::net::SocketAddr;
use std::time::Duration;

use crmsync_dashboard::web::{self, COOKIE, Dashboard};
use crmsync_testkit::{RedisServer, free_port};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_SECURITY_POLICY, COOKIE as COOKIE_HEADER, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::support::{add_tenants, fleet};

/// Holds `+` and `/`, as standard base64 tokens do (they once failed to log in).
pub const TOKEN: &str = "test+token/0123456789abcdef";

/// Starts the dashboard in this process on a free port; stops when the returned sender drops.
pub async fn start(redis: &RedisServer) -> (String, tokio::sync::oneshot::Sender<()>) {
    let d = Dashboard::new(fleet(redis), TOKEN).expect("dashboard");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(web::serve(d, addr, async {
        let _ = rx.await;
    }));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    crmsync_testkit::eventually(Duration::from_secs(10), "the dashboard answers", || {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    (base, tx)
}

/// No token or a wrong one: 401 everywhere but /healthz. The right bearer token opens the API;
/// `/?token=` trades the token for an HttpOnly, SameSite=Strict session cookie (and redirects
/// it out of the address bar), and the cookie opens the page and the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_page_need_the_token_or_its_cookie() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    add_tenants(&redis, &[("acme", 1_000, 0.8)]).await;
    let (base, _stop) = start(&redis).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let get = |path: &str| http.get(format!("{base}{path}"));

    assert_eq!(get("/healthz").send().await.expect("healthz").status(), StatusCode::OK);
    for path in ["/", "/api/status", "/api/series"] {
        let r = get(path).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} without a token");
        let body = r.text().await.expect("body");
        assert!(!body.contains(TOKEN));
        for wrong in [
            "Bearer test+token/0123456789abcdeX",
            "Bearer test+token/0123456789abcde",
            "Bearer test token/0123456789abcdef",
            "Bearer ",
            "test+token/0123456789abcdef",
        ] {
            let r = get(path).header(AUTHORIZATION, wrong).send().await.expect("request");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with {wrong:?}");
        }
        let r = get(path)
            .header(COOKIE_HEADER, format!("{COOKIE}=0000"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with a forged cookie");
    }
    assert_eq!(
        get("/?token=wrong-token-0123456789")
            .send()
            .await
            .expect("page")
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let bearer = format!("Bearer {TOKEN}");
    let r = get("/api/status")
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::OK);
    let status: Value = r.json().await.expect("json");
    assert_eq!(status["tenants"][0]["id"], "acme");
    assert_eq!(status["tenants"][0]["credits"]["allowed"], 800);
    assert_eq!(status["queues"][0]["queue"], "backfill");
    let r = get("/api/series?tenant=acme")
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .expect("series");
    assert_eq!(r.status(), StatusCode::OK);
    let series: Value = r.json().await.expect("json");
    assert_eq!(series["credits"]["allowed"], 800);
    assert_eq!(series["throttled"].as_array().map(Vec::len), Some(60));
    let r = get("/api/series?tenant=nobody")
        .header(AUTHORIZATION, &bearer)
        .send()
        .await
        .expect("series");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = get(&format!("/?token={TOKEN}")).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/");
    let set_cookie = r.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
    assert!(set_cookie.starts_with(&format!("{COOKIE}=")), "{set_cookie}");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(TOKEN), "the cookie does not carry the token");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();

    let r = get("/api/status")
        .header(COOKIE_HEADER, &cookie)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::OK);
    let r = get("/").header(COOKIE_HEADER, &cookie).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[CONTENT_SECURITY_POLICY].to_str().expect("ascii").to_owned();
    let page = r.text().await.expect("page");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|n| n.split('\'').next())
        .expect("a script nonce");
    assert!(
        page.contains(&format!("<script nonce=\"{nonce}\">")),
        "the page's script carries the nonce"
    );
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    for external in ["http://", "https://", "//cdn", "@import"] {
        let outside = page
            .match_indices(external)
            .any(|(i, _)| !page[i..].starts_with("http://www.w3.org/2000/svg"));
        assert!(!outside, "the page fetches nothing from elsewhere ({external})");
    }
}

/// A dashboard cannot be started without a real token.
#[test]
fn a_short_or_empty_token_is_refused() {
    for token in ["", "   ", "short-token"] {
        let err = match web::check_token(token) {
            Ok(()) => panic!("accepted {token:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("crmsync keygen"), "{err}");
    }
}

/// Hardening: every answer (401s and JSON included) says `nosniff` and may not be framed; the
/// session cookie expires; a token pasted with trailing whitespace still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_nosniff_and_unframeable_and_a_token_with_trailing_whitespace_logs_in() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = RedisServer::start();
    add_tenants(&redis, &[("acme", 1_000, 0.8)]).await;
    let (base, _stop) = start(&redis).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let bearer = format!("Bearer {TOKEN}");
    for (path, auth) in [
        ("/api/status", None),
        ("/api/status", Some(bearer.as_str())),
        ("/api/series", Some(bearer.as_str())),
        ("/", None),
    ] {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let r = req.send().await.expect("request");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path} {auth:?}");
        assert_eq!(h["x-frame-options"], "DENY", "{path} {auth:?}");
        assert!(
            h[CONTENT_SECURITY_POLICY]
                .to_str()
                .expect("ascii")
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }
    for pasted in [format!("{TOKEN}%20"), format!("{TOKEN}%0A")] {
        let r = http.get(format!("{base}/?token={pasted}")).send().await.expect("login");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{pasted}");
        let set_cookie = r.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
        assert!(set_cookie.contains("Max-Age=43200"), "{set_cookie}");
    }
}
