//! `crmsync dashboard`: the fleet in a browser. One self-contained page (inline CSS and JS,
//! charts drawn as inline SVG, nothing fetched from elsewhere) that refreshes itself from a
//! small JSON API:
//!
//! - `GET /` — the page;
//! - `GET /api/status` — [`FleetStatus`](crate::FleetStatus);
//! - `GET /api/series?tenant=<id>` — [`Series`](crate::Series) (every tenant summed without
//!   `tenant`; 404 for an unknown tenant);
//! - `GET /healthz` — liveness, unauthenticated.
//!
//! Everything else needs the dashboard's token: `Authorization: Bearer <token>`, or the
//! session cookie that `GET /?token=<token>` sets (HttpOnly, SameSite=Strict; the answer
//! redirects to `/` so the token leaves the address bar). Tokens and cookies are compared in
//! constant time; a wrong or missing one gets 401. The token is never logged.
//!
//! Answers are cached briefly (status 1 s, series 5 s), so many open pages cost Redis no more
//! than one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::fleet::{Fleet, FleetError};

type HmacSha256 = Hmac<Sha256>;

/// The page, with `{{NONCE}}` where each answer puts its script and style nonce.
const PAGE: &str = include_str!("web/page.html");
/// Shortest token accepted (`crmsync keygen` prints 44 characters).
pub const MIN_TOKEN_LEN: usize = 16;
/// Name of the session cookie.
pub const COOKIE: &str = "crmsync_dashboard";
const STATUS_TTL: Duration = Duration::from_secs(1);
const SERIES_TTL: Duration = Duration::from_secs(5);

/// The token is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the dashboard needs a token of at least {MIN_TOKEN_LEN} characters (--token or CRMSYNC_DASHBOARD_TOKEN); make one with `crmsync keygen`"
    )]
    TooShort,
}

/// Refuses a token too short to be a secret.
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.trim().chars().count() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort);
    }
    Ok(())
}

/// Checks tokens and session cookies in constant time. Each candidate is MACed under a key
/// drawn at start and checked with `verify_slice` (constant time), so neither the content nor
/// the length of the token leaks through timing.
struct Auth {
    key: [u8; 32],
    token_mac: Vec<u8>,
    /// The cookie's value: a digest of the token, so the cookie does not carry the token
    /// itself; it stays valid across restarts with the same token.
    session: String,
    session_mac: Vec<u8>,
}

impl Auth {
    fn new(token: &str) -> Result<Self, TokenError> {
        // A token pasted with a trailing newline or space is the same token.
        let token = token.trim();
        check_token(token)?;
        let key: [u8; 32] = rand::random();
        let digest = Sha256::digest([b"crmsync-dashboard-session\0".as_slice(), token.as_bytes()].concat());
        let session: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let mut auth = Self {
            key,
            token_mac: Vec::new(),
            session_mac: Vec::new(),
            session,
        };
        auth.token_mac = auth.mac(token.as_bytes()).finalize().into_bytes().to_vec();
        auth.session_mac = auth.mac(auth.session.as_bytes()).finalize().into_bytes().to_vec();
        Ok(auth)
    }

    fn mac(&self, v: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        m.update(v);
        m
    }

    fn token_ok(&self, given: &str) -> bool {
        self.mac(given.trim().as_bytes()).verify_slice(&self.token_mac).is_ok()
    }

    fn session_ok(&self, given: &str) -> bool {
        self.mac(given.as_bytes()).verify_slice(&self.session_mac).is_ok()
    }

    /// A bearer token or the session cookie.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_ok(t.trim()));
        bearer
            || headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .any(|(name, value)| name == COOKIE && self.session_ok(value))
    }
}

/// A small time-to-live cache of JSON answers by key.
struct Cache {
    ttl: Duration,
    slots: Mutex<HashMap<String, (Instant, Arc<serde_json::Value>)>>,
}

impl Cache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::default(),
        }
    }

    fn get(&self, key: &str) -> Option<Arc<serde_json::Value>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: &str, v: Arc<serde_json::Value>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > 256 {
            slots.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        slots.insert(key.to_owned(), (Instant::now(), v));
    }
}

/// The dashboard's state, shared by every request.
pub struct Dashboard {
    fleet: Fleet,
    auth: Auth,
    status: Cache,
    series: Cache,
    /// Mark the session cookie `Secure` (`CRMSYNC_DASHBOARD_SECURE_COOKIE=1`: the dashboard is
    /// reached over HTTPS, behind a proxy that ends TLS).
    secure_cookie: bool,
}

impl Dashboard {
    /// A dashboard over `fleet`, guarded by `token`; refuses a token shorter than
    /// [`MIN_TOKEN_LEN`].
    pub fn new(fleet: Fleet, token: &str) -> Result<Arc<Self>, TokenError> {
        Ok(Arc::new(Self {
            fleet,
            auth: Auth::new(token)?,
            status: Cache::new(STATUS_TTL),
            series: Cache::new(SERIES_TTL),
            secure_cookie: std::env::var("CRMSYNC_DASHBOARD_SECURE_COOKIE")
                .is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true")),
        }))
    }
}

/// The dashboard's own routes (`/`, `/api/status`, `/api/series`), to serve alone or merged
/// into another server (`crmsync webhook --with-dashboard`).
pub fn routes(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/series", get(series))
        .with_state(d)
}

/// The routes of the standalone server: the dashboard's and `/healthz`.
pub fn router(d: Arc<Dashboard>) -> Router {
    routes(d).route("/healthz", get(|| async { "ok" }))
}

/// Serves the dashboard on `listen` until `shutdown` resolves.
pub async fn serve(
    d: Arc<Dashboard>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(addr = %listener.local_addr()?, namespace = d.fleet.namespace(), "Dashboard listening");
    crmsync_http::serve(listener, router(d), crmsync_http::Limits::default(), shutdown).await
}

/// Every dashboard answer: not cached, not sniffed as another type, never framed.
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    r
}

fn unauthorized_json() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"error": "missing or wrong token: send `Authorization: Bearer <token>`, or open /?token=<token>"}),
        ),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"crmsync dashboard\""),
    );
    no_store(r)
}

fn unauthorized_page() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><meta charset=utf-8><title>crmsync dashboard</title>\
         <p style=\"font-family:sans-serif\">This dashboard needs its token: open \
         <code>/?token=&lt;token&gt;</code> once (a session cookie keeps you in), or send \
         <code>Authorization: Bearer &lt;token&gt;</code>.</p>",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"crmsync dashboard\""),
    );
    no_store(r)
}

fn unavailable(e: &FleetError) -> Response {
    warn!(error = %e, "Reading the fleet failed");
    no_store(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": format!("could not read the fleet: {e}")})),
        )
            .into_response(),
    )
}

#[derive(Deserialize)]
struct PageQuery {
    token: Option<String>,
}

async fn page(State(d): State<Arc<Dashboard>>, Query(q): Query<PageQuery>, headers: HeaderMap) -> Response {
    if let Some(token) = q.token {
        if !d.auth.token_ok(&token) {
            return unauthorized_page();
        }
        // Trade the token for the session cookie and take it out of the address bar.
        // Kept 12 hours; `Secure` when the dashboard is served over HTTPS (then a browser never
        // sends it in clear).
        let secure = if d.secure_cookie { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}",
            d.auth.session
        );
        let mut r = StatusCode::SEE_OTHER.into_response();
        let h = r.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.insert(header::SET_COOKIE, v);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        return no_store(r);
    }
    if !d.auth.authorized(&headers) {
        return unauthorized_page();
    }
    let nonce = format!("{:032x}", rand::random::<u128>());
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE.replace("{{NONCE}}", &nonce),
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    no_store(r)
}

fn json_answer(v: Arc<serde_json::Value>) -> Response {
    no_store(axum::Json(v.as_ref()).into_response())
}

async fn status(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !d.auth.authorized(&headers) {
        return unauthorized_json();
    }
    if let Some(v) = d.status.get("") {
        return json_answer(v);
    }
    match d.fleet.status().await {
        Ok(s) => {
            let v = Arc::new(serde_json::to_value(&s).unwrap_or_default());
            d.status.put("", v.clone());
            json_answer(v)
        }
        Err(e) => unavailable(&e),
    }
}

#[derive(Deserialize)]
struct SeriesQuery {
    tenant: Option<String>,
}

async fn series(State(d): State<Arc<Dashboard>>, Query(q): Query<SeriesQuery>, headers: HeaderMap) -> Response {
    if !d.auth.authorized(&headers) {
        return unauthorized_json();
    }
    let tenant = q.tenant.filter(|t| !t.is_empty());
    let key = tenant.clone().unwrap_or_default();
    if let Some(v) = d.series.get(&key) {
        return json_answer(v);
    }
    match d.fleet.series(tenant.as_deref()).await {
        Ok(s) if tenant.is_some() && s.tenants == 0 => no_store(
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": format!("no tenant `{}`", tenant.unwrap_or_default())})),
            )
                .into_response(),
        ),
        Ok(s) => {
            let v = Arc::new(serde_json::to_value(&s).unwrap_or_default());
            d.series.put(&key, v.clone());
            json_answer(v)
        }
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_cookies_are_checked_exactly() {
        assert!(Auth::new("short").is_err());
        assert!(Auth::new("                    ").is_err());
        let a = Auth::new("0123456789abcdefXYZ").expect("auth");
        assert!(a.token_ok("0123456789abcdefXYZ"));
        assert!(!a.token_ok("0123456789abcdefXY"));
        assert!(!a.token_ok("0123456789abcdefXYZ0"));
        assert!(!a.token_ok(""));
        assert!(
            !a.session.contains("0123456789abcdef"),
            "the cookie does not carry the token"
        );
        let mut h = HeaderMap::new();
        assert!(!a.authorized(&h));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={}", a.session)).expect("hv"),
        );
        assert!(a.authorized(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdefXYZ"),
        );
        assert!(a.authorized(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic 0123456789abcdefXYZ"),
        );
        assert!(!a.authorized(&h));
    }
}
