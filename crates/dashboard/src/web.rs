//! `crmsync dashboard`: the fleet in a browser, and an operator's hands on it. One
//! self-contained page (inline CSS and JS, charts drawn as inline SVG, nothing fetched from
//! elsewhere) that refreshes itself from a small JSON API:
//!
//! - `GET /` — the page (`/?token=<token>[&as=<name>]` logs in);
//! - `GET /api/status` — [`FleetStatus`](crate::FleetStatus);
//! - `GET /api/series?tenant=<id>` — [`Series`](crate::Series) (every tenant summed without
//!   `tenant`; 404 for an unknown tenant);
//! - `GET /api/dead?queue=&tenant=&code=&limit=` — dead letters with code, reason, attempts and
//!   payload; `POST /api/dead/retry`, `POST /api/dead/purge` — one, selected (`items`) or all
//!   matching (`all` with the filters);
//! - `GET /api/rejected?tenant=&code=&limit=` — records the CRM rejected;
//!   `POST /api/rejected/retry`;
//! - `POST /api/tenants/pause`, `POST /api/tenants/resume` (with a reason),
//!   `POST /api/runs/cancel`;
//! - `GET /api/audit?limit=&before=` — the audit stream (who did what, when);
//! - `GET /healthz` — liveness, unauthenticated.
//!
//! Everything else needs the dashboard's token: `Authorization: Bearer <token>` (scripts), or
//! the session cookie that `GET /?token=<token>` sets (HttpOnly, SameSite=Strict, 12 hours; the
//! answer redirects to `/` so the token leaves the address bar). A session is signed with a key
//! derived from the token, so it survives a restart with the same token and ends when the
//! token changes. The token in the query is taken as written: only `%XX` escapes are decoded,
//! so a `+` stays a `+`.
//!
//! A request that changes anything is a `POST` with a JSON body (at most 64 KiB, read within
//! 10 s). With a session cookie it must also come from the dashboard's own page: its `Origin`
//! must be the dashboard's (the `Host` it was asked as, or one listed in
//! `CRMSYNC_DASHBOARD_ORIGINS`) and it must carry the session's CSRF token (`X-CSRF-Token`,
//! which the page gets in a meta tag); else 403. A bearer token is no ambient credential, so
//! scripts need neither. Every action is recorded in the audit stream by `crmsync_ops`.
//!
//! Tokens, cookies and CSRF tokens are compared in constant time; a wrong or missing one gets
//! 401. The token is never logged. Answers are cached briefly (status 1 s, series 5 s; an
//! action clears them), so many open pages cost Redis no more than one.

// Handlers' helpers return the early answer (a refusal) as their error: a `Response` is large,
// but it is built once per request and returned at once.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crmsync_ops::dead::{DeadFilter, DeadLetters, DeadRef, QueueName};
use crmsync_ops::rejected::{Pick, RejectedRecords};
use crmsync_ops::tenant::{Outcome, TenantOps};
use crmsync_ops::{Actor, Audit, OpsError};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::fleet::{Fleet, FleetError};

type HmacSha256 = Hmac<Sha256>;

/// The page, with `{{NONCE}}`, `{{CSRF}}` and `{{WHO}}` filled in per answer.
const PAGE: &str = include_str!("web/page.html");
/// Shortest token accepted (`crmsync keygen` prints 43 characters).
pub const MIN_TOKEN_LEN: usize = 16;
/// Name of the session cookie.
pub const COOKIE: &str = "crmsync_dashboard";
/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const STATUS_TTL: Duration = Duration::from_secs(1);
const SERIES_TTL: Duration = Duration::from_secs(5);
/// Largest action body, and the time a client has to send it.
const BODY_MAX: usize = 64 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most rows a list answers, and most items one action names.
const LIST_MAX: usize = 500;
const ITEMS_MAX: usize = 1_000;

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

/// Who is asking: a script with the token, or a browser session.
#[derive(Debug, Clone)]
enum Caller {
    Bearer,
    Session { sid: String, name: String },
}

/// A session as its cookie carries it: `<sid>.<issued ms>.<name>.<mac>`, the MAC over the rest
/// under a key derived from the token.
struct Auth {
    /// Random per process: tokens are compared as MACs under it, in constant time, so neither
    /// the content nor the length of the token leaks through timing.
    compare_key: [u8; 32],
    token_mac: Vec<u8>,
    /// Derived from the token: signs sessions and CSRF tokens.
    session_key: Vec<u8>,
}

/// An operator's name as given at login: letters, digits and `._@-`, at most 40.
fn clean_name(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        .take(40)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Auth {
    fn new(token: &str) -> Result<Self, TokenError> {
        // A token pasted with a trailing newline or space is the same token.
        let token = token.trim();
        check_token(token)?;
        let compare_key: [u8; 32] = rand::random();
        let mut derive = HmacSha256::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
        derive.update(b"crmsync-dashboard-session-v2");
        let mut auth = Self {
            compare_key,
            token_mac: Vec::new(),
            session_key: derive.finalize().into_bytes().to_vec(),
        };
        auth.token_mac = auth.compare_mac(token.as_bytes()).finalize().into_bytes().to_vec();
        Ok(auth)
    }

    fn compare_mac(&self, v: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.compare_key).expect("HMAC takes keys of any length");
        m.update(v);
        m
    }

    fn session_mac(&self, parts: &[&str]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.session_key).expect("HMAC takes keys of any length");
        for p in parts {
            m.update(p.as_bytes());
            m.update(b"\0");
        }
        m
    }

    fn token_ok(&self, given: &str) -> bool {
        self.compare_mac(given.trim().as_bytes())
            .verify_slice(&self.token_mac)
            .is_ok()
    }

    /// A new session's cookie value.
    fn new_session(&self, name: &str, now_ms: u64) -> String {
        let sid = format!("{:032x}", rand::random::<u128>());
        let issued = now_ms.to_string();
        let name = clean_name(name);
        let mac = hex(&self
            .session_mac(&["session", &sid, &issued, &name])
            .finalize()
            .into_bytes());
        format!("{sid}.{issued}.{name}.{mac}")
    }

    /// The session a cookie value names, if it is ours and not expired.
    fn session(&self, value: &str, now_ms: u64) -> Option<Caller> {
        let mut parts = value.split('.');
        let (sid, issued, name, mac) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sid.len() != 32 || name != clean_name(name) {
            return None;
        }
        self.session_mac(&["session", sid, issued, name])
            .verify_slice(&unhex(mac)?)
            .ok()?;
        let issued_ms: u64 = issued.parse().ok()?;
        if now_ms.saturating_sub(issued_ms) >= SESSION_TTL.as_millis() as u64 || issued_ms > now_ms + 60_000 {
            return None;
        }
        Some(Caller::Session {
            sid: sid.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The CSRF token of a session.
    fn csrf(&self, sid: &str) -> String {
        hex(&self.session_mac(&["csrf", sid]).finalize().into_bytes())
    }

    fn csrf_ok(&self, sid: &str, given: &str) -> bool {
        match unhex(given.trim()) {
            Some(g) => self.session_mac(&["csrf", sid]).verify_slice(&g).is_ok(),
            None => false,
        }
    }

    /// A bearer token or a session cookie.
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_ok(t.trim()));
        if bearer {
            return Some(Caller::Bearer);
        }
        let now = crmsync_queue::now_ms();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(name, _)| *name == COOKIE)
            .find_map(|(_, value)| self.session(value, now))
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

    fn clear(&self) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
    dead: DeadLetters,
    tenants: TenantOps,
    audit: Audit,
    /// Mark the session cookie `Secure` (`CRMSYNC_DASHBOARD_SECURE_COOKIE=1`: the dashboard is
    /// reached over HTTPS, behind a proxy that ends TLS).
    secure_cookie: bool,
    /// Origins allowed besides the one the request was asked as (`CRMSYNC_DASHBOARD_ORIGINS`,
    /// comma-separated: the public address behind a proxy).
    origins: Vec<String>,
}

impl Dashboard {
    /// A dashboard over `fleet`, guarded by `token`; refuses a token shorter than
    /// [`MIN_TOKEN_LEN`].
    pub fn new(fleet: Fleet, token: &str) -> Result<Arc<Self>, TokenError> {
        let conn = fleet.conn.clone();
        let ns = fleet.namespace.clone();
        Ok(Arc::new(Self {
            auth: Auth::new(token)?,
            status: Cache::new(STATUS_TTL),
            series: Cache::new(SERIES_TTL),
            dead: DeadLetters::new(conn.clone(), &ns),
            tenants: TenantOps::new(conn.clone(), &ns).with_limiter(fleet.limiter.clone()),
            audit: Audit::new(conn, &ns),
            fleet,
            secure_cookie: std::env::var("CRMSYNC_DASHBOARD_SECURE_COOKIE")
                .is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true")),
            origins: std::env::var("CRMSYNC_DASHBOARD_ORIGINS")
                .unwrap_or_default()
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        }))
    }

    /// After an action: the next status and series are read afresh.
    fn changed(&self) {
        self.status.clear();
        self.series.clear();
    }
}

/// The dashboard's own routes, to serve alone or merged into another server
/// (`crmsync webhook --with-dashboard`).
pub fn routes(d: Arc<Dashboard>) -> Router {
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/series", get(series))
        .route("/api/dead", get(dead_list))
        .route("/api/dead/retry", post(dead_retry))
        .route("/api/dead/purge", post(dead_purge))
        .route("/api/rejected", get(rejected_list))
        .route("/api/rejected/retry", post(rejected_retry))
        .route("/api/tenants/pause", post(tenant_pause))
        .route("/api/tenants/resume", post(tenant_resume))
        .route("/api/runs/cancel", post(run_cancel))
        .route("/api/audit", get(audit_list))
        // Authentication (and, for changes, the cross-site checks) before anything reads a
        // body.
        .route_layer(axum::middleware::from_fn_with_state(d.clone(), guard));
    Router::new().route("/", get(page)).merge(api).with_state(d)
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

fn error_json(status: StatusCode, message: impl Into<String>) -> Response {
    no_store((status, axum::Json(json!({"error": message.into()}))).into_response())
}

fn unauthorized_json() -> Response {
    let mut r = error_json(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token (or the session ended): send `Authorization: Bearer <token>`, or open /?token=<token> in the browser again",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"crmsync dashboard\""),
    );
    r
}

/// The page a browser gets without a session: what happened and how to log in.
fn unauthorized_page(wrong_token: bool) -> Response {
    let what = if wrong_token {
        "<p class=bad>That token is not this dashboard's token.</p>"
    } else {
        "<p>You are not logged in, or your session ended (sessions last 12 hours, and end when the dashboard's token changes).</p>"
    };
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>crmsync dashboard: log in</title>\
         <body style=\"font:15px/1.5 system-ui,sans-serif;max-width:640px;margin:48px auto;padding:0 16px;color:#1d2733\">\
         <h1 style=\"font-size:20px\">crmsync dashboard: log in</h1>{what}\
         <p>Log in with the dashboard's token: the value of <code>CRMSYNC_DASHBOARD_TOKEN</code> (or <code>--token</code>) \
         the dashboard was started with. Make one with <code>crmsync keygen</code>.</p>\
         <form method=get action=\"/\">\
         <p><label>Token<br><input name=token type=password autocomplete=off required size=48></label></p>\
         <p><label>Your name, for the audit log (optional)<br><input name=as size=24 maxlength=40></label></p>\
         <p><button type=submit>Log in</button></p></form>\
         <p>Or open <code>/?token=&lt;token&gt;</code> once (add <code>&amp;as=&lt;your name&gt;</code> to be named in the audit log); \
         a session cookie keeps you in. Scripts send <code>Authorization: Bearer &lt;token&gt;</code>.</p></body></html>"
    );
    let mut r = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"crmsync dashboard\""),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The form may send the token to this page, and nowhere else.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    no_store(r)
}

fn unavailable(e: &FleetError) -> Response {
    warn!(error = %e, "Reading the fleet failed");
    error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("could not read the fleet: {e}"),
    )
}

fn ops_error(e: OpsError) -> Response {
    match e {
        OpsError::NotFound(m) => error_json(StatusCode::NOT_FOUND, m),
        OpsError::Invalid(m) => error_json(StatusCode::BAD_REQUEST, m),
        e => {
            warn!(error = %e, "An operator action failed");
            error_json(StatusCode::SERVICE_UNAVAILABLE, format!("the action failed: {e}"))
        }
    }
}

/// One parameter of a raw query string, `%XX` escapes decoded and nothing else (a `+` stays a
/// `+`: tokens are base64 and may hold one).
fn query_param(raw: &str, name: &str) -> Option<String> {
    raw.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(x) = v.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `&`, `<`, `>`, `"` and `'` as entities.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

async fn page(State(d): State<Arc<Dashboard>>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let raw = raw.unwrap_or_default();
    if let Some(token) = query_param(&raw, "token") {
        if !d.auth.token_ok(&token) {
            return unauthorized_page(true);
        }
        // Trade the token for a session cookie and take it out of the address bar. `Secure`
        // when the dashboard is served over HTTPS (then a browser never sends it in clear).
        let name = query_param(&raw, "as").unwrap_or_default();
        let secure = if d.secure_cookie { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            d.auth.new_session(&name, crmsync_queue::now_ms()),
            SESSION_TTL.as_secs()
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
    let (csrf, who) = match d.auth.caller(&headers) {
        None => return unauthorized_page(false),
        Some(Caller::Bearer) => (String::new(), "token holder".to_owned()),
        Some(Caller::Session { sid, name }) => (
            d.auth.csrf(&sid),
            if name.is_empty() { "operator".to_owned() } else { name },
        ),
    };
    let nonce = format!("{:032x}", rand::random::<u128>());
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE.replace("{{NONCE}}", &nonce)
            .replace("{{CSRF}}", &csrf)
            .replace("{{WHO}}", &html_escape(&who)),
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    no_store(r)
}

/// The origin (`scheme://host[:port]`, lower case) a request was asked as, by its `Host`.
fn own_origins(headers: &HeaderMap) -> Vec<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.is_empty() {
        return Vec::new();
    }
    vec![format!("http://{host}"), format!("https://{host}")]
}

/// Authenticates every API request; a change made with a session cookie must also come from
/// the dashboard's page (same origin, the session's CSRF token, a JSON body). The caller is
/// left in the request's extensions.
async fn guard(State(d): State<Arc<Dashboard>>, mut req: Request, next: Next) -> Response {
    let Some(caller) = d.auth.caller(req.headers()) else {
        return unauthorized_json();
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Caller::Session { sid, .. } = &caller {
            let h = req.headers();
            let origin = h
                .get(header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
            let allowed = origin
                .as_ref()
                .is_some_and(|o| own_origins(h).contains(o) || d.origins.contains(o));
            if !allowed {
                warn!(origin = ?origin.as_deref().map(|o| crmsync_ops::clean(o, 80)), "Refused a cross-site change");
                return error_json(
                    StatusCode::FORBIDDEN,
                    "refused: a change must come from the dashboard's own page (its Origin did not match; behind a proxy, list the public address in CRMSYNC_DASHBOARD_ORIGINS)",
                );
            }
            let csrf = h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !d.auth.csrf_ok(sid, csrf) {
                return error_json(
                    StatusCode::FORBIDDEN,
                    "refused: missing or wrong CSRF token (reload the page and try again)",
                );
            }
        }
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return error_json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send a JSON body (Content-Type: application/json)",
            );
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The actor an action is recorded as.
fn actor(caller: &Caller, peer: Option<SocketAddr>) -> Actor {
    let from = peer.map(|p| format!(", {}", p.ip())).unwrap_or_default();
    Actor::dashboard(match caller {
        Caller::Bearer => format!("token holder (API{from})"),
        Caller::Session { sid, name } => {
            let name = if name.is_empty() { "operator" } else { name };
            format!("{name} (session {}{from})", &sid[..8])
        }
    })
}

/// Reads a JSON body within [`BODY_MAX`] bytes and [`BODY_TIMEOUT`].
async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_MAX)).await {
        Err(_) => {
            return Err(error_json(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            ));
        }
        Ok(Err(_)) => {
            return Err(error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {BODY_MAX} bytes"),
            ));
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes).map_err(|e| error_json(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// The parts of an action request: who, and the body.
struct Action<T> {
    actor: Actor,
    body: T,
}

async fn action<T: DeserializeOwned>(req: Request) -> Result<Action<T>, Response> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(unauthorized_json)?;
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let body = read_json(req.into_body()).await?;
    Ok(Action {
        actor: actor(&caller, peer),
        body,
    })
}

fn json_answer(v: Arc<serde_json::Value>) -> Response {
    no_store(axum::Json(v.as_ref()).into_response())
}

fn ok_json(v: serde_json::Value) -> Response {
    no_store(axum::Json(v).into_response())
}

async fn status(State(d): State<Arc<Dashboard>>) -> Response {
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

async fn series(State(d): State<Arc<Dashboard>>, Query(q): Query<SeriesQuery>) -> Response {
    let tenant = q.tenant.filter(|t| !t.is_empty());
    let key = tenant.clone().unwrap_or_default();
    if let Some(v) = d.series.get(&key) {
        return json_answer(v);
    }
    match d.fleet.series(tenant.as_deref()).await {
        Ok(s) if tenant.is_some() && s.tenants == 0 => error_json(
            StatusCode::NOT_FOUND,
            format!("no tenant `{}`", crmsync_ops::clean(&tenant.unwrap_or_default(), 80)),
        ),
        Ok(s) => {
            let v = Arc::new(serde_json::to_value(&s).unwrap_or_default());
            d.series.put(&key, v.clone());
            json_answer(v)
        }
        Err(e) => unavailable(&e),
    }
}

/// Filters of the dead-letter list and of "all matching" actions.
#[derive(Deserialize, Default)]
struct DeadQuery {
    queue: Option<String>,
    tenant: Option<String>,
    code: Option<String>,
    limit: Option<usize>,
}

fn dead_filter(queue: Option<&str>, tenant: Option<&str>, code: Option<&str>) -> Result<DeadFilter, Response> {
    let queue = match queue.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => Some(
            q.parse::<QueueName>()
                .map_err(|e| error_json(StatusCode::BAD_REQUEST, e))?,
        ),
        None => None,
    };
    DeadFilter::new(queue, tenant, code).map_err(ops_error)
}

async fn dead_list(State(d): State<Arc<Dashboard>>, Query(q): Query<DeadQuery>) -> Response {
    let f = match dead_filter(q.queue.as_deref(), q.tenant.as_deref(), q.code.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, LIST_MAX);
    match d.dead.list(&f, Some(limit)).await {
        Ok((items, more)) => {
            let mut codes: Vec<&str> = items.iter().map(|v| v.code).collect();
            codes.sort_unstable();
            codes.dedup();
            ok_json(json!({"items": items, "more": more, "codes": codes}))
        }
        Err(e) => ops_error(e),
    }
}

/// A retry or purge: named dead letters, or all matching the filters.
#[derive(Deserialize)]
struct DeadAction {
    #[serde(default)]
    items: Vec<DeadRef>,
    #[serde(default)]
    all: bool,
    queue: Option<String>,
    tenant: Option<String>,
    code: Option<String>,
    #[serde(default)]
    reason: String,
}

/// The dead letters an action takes, and how it is described in the audit stream.
async fn dead_selection(
    d: &Dashboard,
    a: &DeadAction,
) -> Result<
    (
        Vec<crmsync_ops::dead::DeadView>,
        Vec<crmsync_ops::dead::Skipped>,
        String,
    ),
    Response,
> {
    if a.items.len() > ITEMS_MAX {
        return Err(error_json(
            StatusCode::BAD_REQUEST,
            format!("at most {ITEMS_MAX} dead letters at once; use `all` with filters for more"),
        ));
    }
    match (a.all, a.items.is_empty()) {
        (true, true) => {
            let f = dead_filter(a.queue.as_deref(), a.tenant.as_deref(), a.code.as_deref())?;
            let (chosen, skipped) = d.dead.select(&f, &[]).await.map_err(ops_error)?;
            Ok((chosen, skipped, format!("every one of the {}", f.describe())))
        }
        (false, false) => {
            let f = dead_filter(None, None, None)?;
            let (chosen, skipped) = d.dead.select(&f, &a.items).await.map_err(ops_error)?;
            let ids: Vec<&str> = a.items.iter().map(|r| r.dead_id.as_str()).collect();
            Ok((chosen, skipped, format!("dead letters {}", ids.join(", "))))
        }
        _ => Err(error_json(
            StatusCode::BAD_REQUEST,
            "name dead letters in `items`, or send `all: true` with filters (not both)",
        )),
    }
}

/// A retry or a purge of dead letters.
#[derive(Clone, Copy)]
enum DeadVerb {
    Retry,
    Purge,
}

async fn dead_retry(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    dead_act(&d, req, DeadVerb::Retry).await
}

async fn dead_purge(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    dead_act(&d, req, DeadVerb::Purge).await
}

async fn dead_act(d: &Dashboard, req: Request, verb: DeadVerb) -> Response {
    let a: Action<DeadAction> = match action(req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (chosen, skipped, what) = match dead_selection(d, &a.body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (out, done) = match verb {
        DeadVerb::Retry => (
            d.dead.retry(&a.actor, &what, chosen, skipped).await,
            "retried: queued again with fresh attempts",
        ),
        DeadVerb::Purge => (
            d.dead.purge(&a.actor, &what, &a.body.reason, chosen, skipped).await,
            "purged",
        ),
    };
    match out {
        Ok(out) => {
            d.changed();
            info!(who = ?a.actor.who, count = out.count, "Dead letters {done} from the dashboard");
            let message = format!("{} dead letter(s) {done}{}", out.count, skipped_text(&out.skipped));
            ok_json(json!({"done": out.count, "items": out.done, "skipped": out.skipped, "message": message}))
        }
        Err(e) => ops_error(e),
    }
}

fn skipped_text(skipped: &[crmsync_ops::dead::Skipped]) -> String {
    match skipped {
        [] => String::new(),
        [one] => format!("; 1 not: {} ({})", one.why, one.dead_id),
        [first, rest @ ..] => format!("; {} not, e.g. {} ({})", rest.len() + 1, first.why, first.dead_id),
    }
}

#[derive(Deserialize)]
struct RejectedQuery {
    tenant: Option<String>,
    code: Option<String>,
    limit: Option<usize>,
}

async fn rejected_list(State(d): State<Arc<Dashboard>>, Query(q): Query<RejectedQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, LIST_MAX);
    let code = q.code.filter(|c| !c.trim().is_empty());
    let keep = |r: &crmsync_producer::Rejection| code.as_deref().is_none_or(|c| r.code.eq_ignore_ascii_case(c.trim()));
    let tenants = match q.tenant.filter(|t| !t.trim().is_empty()) {
        Some(t) => vec![t],
        None => match d.fleet.tenant_ids().await {
            Ok(ids) => ids,
            Err(e) => return unavailable(&e),
        },
    };
    let one = tenants.len() == 1;
    // Every tenant's at once (one multiplexed connection: pipelined), not one after another.
    let lists = futures_util::future::join_all(tenants.iter().map(|t| async {
        let records = RejectedRecords::of(d.fleet.conn.clone(), &d.fleet.namespace, t).await?;
        records.list(Some(limit), keep).await
    }))
    .await;
    let mut items = Vec::new();
    let mut more = false;
    for list in lists {
        match list {
            Ok((list, m)) => {
                more |= m;
                items.extend(list);
            }
            // Removed meanwhile: only an error when it was asked for by name.
            Err(OpsError::NotFound(_)) if !one => continue,
            Err(e) => return ops_error(e),
        }
    }
    items.sort_by(|a, b| b.rejected_at_ms.cmp(&a.rejected_at_ms).then_with(|| b.id.cmp(&a.id)));
    if items.len() > limit {
        items.truncate(limit);
        more = true;
    }
    ok_json(json!({"items": items, "more": more}))
}

#[derive(Deserialize)]
struct RejectedAction {
    tenant: String,
    #[serde(default)]
    contacts: Vec<String>,
    #[serde(default)]
    all: bool,
    code: Option<String>,
}

async fn rejected_retry(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    let a: Action<RejectedAction> = match action(req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let b = &a.body;
    if b.contacts.len() > ITEMS_MAX {
        return error_json(StatusCode::BAD_REQUEST, format!("at most {ITEMS_MAX} contacts at once"));
    }
    let pick = match (
        b.all,
        b.contacts.is_empty(),
        b.code.as_deref().filter(|c| !c.trim().is_empty()),
    ) {
        (true, true, None) => Pick::All,
        (false, false, None) => Pick::Contacts(&b.contacts),
        (false, true, Some(c)) => Pick::Code(c),
        _ => {
            return error_json(
                StatusCode::BAD_REQUEST,
                "say which rejected records: `contacts`, `code` or `all: true` (one of them)",
            );
        }
    };
    let records = match RejectedRecords::of(d.fleet.conn.clone(), &d.fleet.namespace, &b.tenant).await {
        Ok(r) => r,
        Err(e) => return ops_error(e),
    };
    match records.retry(&a.actor, pick).await {
        Ok(out) => {
            d.changed();
            info!(who = ?a.actor.who, contacts = out.contacts.len(), "Rejected records retried from the dashboard");
            ok_json(
                json!({"done": out.contacts.len(), "forgotten": out.forgotten, "unknown": out.unknown, "message": out.message}),
            )
        }
        Err(e) => ops_error(e),
    }
}

#[derive(Deserialize)]
struct TenantAction {
    tenant: String,
    #[serde(default)]
    reason: String,
}

/// The answer to a pause, resume or cancel.
fn outcome(d: &Dashboard, actor: &Actor, what: &str, target: &str, out: Result<Outcome, OpsError>) -> Response {
    match out {
        Ok(out) => {
            d.changed();
            info!(who = ?actor.who, target = ?crmsync_ops::clean(target, 80), changed = out.changed, "{what} from the dashboard");
            ok_json(json!({"changed": out.changed, "message": out.message}))
        }
        Err(e) => ops_error(e),
    }
}

async fn tenant_pause(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    let a: Action<TenantAction> = match action(req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let out = d.tenants.pause(&a.actor, &a.body.tenant, &a.body.reason).await;
    outcome(&d, &a.actor, "Tenant pause", &a.body.tenant, out)
}

async fn tenant_resume(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    let a: Action<TenantAction> = match action(req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let out = d.tenants.resume(&a.actor, &a.body.tenant, &a.body.reason).await;
    outcome(&d, &a.actor, "Tenant resume", &a.body.tenant, out)
}

#[derive(Deserialize)]
struct CancelAction {
    run_id: String,
    #[serde(default)]
    reason: String,
}

async fn run_cancel(State(d): State<Arc<Dashboard>>, req: Request) -> Response {
    let a: Action<CancelAction> = match action(req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let out = d.tenants.cancel(&a.actor, &a.body.run_id, &a.body.reason).await;
    outcome(&d, &a.actor, "Run cancel", &a.body.run_id, out)
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
    before: Option<String>,
}

async fn audit_list(State(d): State<Arc<Dashboard>>, Query(q): Query<AuditQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, LIST_MAX);
    match d.audit.list(limit, q.before.as_deref()).await {
        Ok(items) => ok_json(json!({ "items": items })),
        Err(e) => ops_error(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sessions_and_csrf_tokens_are_checked_exactly() {
        assert!(Auth::new("short").is_err());
        assert!(Auth::new("                    ").is_err());
        let a = Auth::new("0123456789abcdefXYZ").expect("auth");
        assert!(a.token_ok("0123456789abcdefXYZ"));
        assert!(!a.token_ok("0123456789abcdefXY"));
        assert!(!a.token_ok("0123456789abcdefXYZ0"));
        assert!(!a.token_ok(""));

        let now = 1_800_000_000_000;
        let cookie = a.new_session("alice", now);
        assert!(
            !cookie.contains("0123456789abcdef"),
            "the cookie does not carry the token"
        );
        let Some(Caller::Session { sid, name }) = a.session(&cookie, now + 1_000) else {
            panic!("a fresh session is valid")
        };
        assert_eq!(name, "alice");
        assert!(
            a.session(&cookie, now + SESSION_TTL.as_millis() as u64).is_none(),
            "expired"
        );
        // Any change to a signed part, or a session signed under another token, is refused.
        assert!(a.session(&cookie.replace("alice", "mallory"), now).is_none());
        let other = Auth::new("another-token-0123456789").expect("auth");
        assert!(other.session(&cookie, now).is_none());
        assert!(a.session("garbage", now).is_none());
        assert!(a.session("", now).is_none());

        let csrf = a.csrf(&sid);
        assert!(a.csrf_ok(&sid, &csrf));
        assert!(!a.csrf_ok(&sid, ""));
        assert!(!a.csrf_ok(&sid, &csrf[..csrf.len() - 2]));
        let other_sid = format!("{:032x}", 7u128);
        assert!(!a.csrf_ok(&other_sid, &csrf), "a CSRF token is its session's");

        let mut h = HeaderMap::new();
        assert!(a.caller(&h).is_none());
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE}={}", a.new_session("", crmsync_queue::now_ms())))
                .expect("hv"),
        );
        assert!(matches!(a.caller(&h), Some(Caller::Session { .. })));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdefXYZ"),
        );
        assert!(matches!(a.caller(&h), Some(Caller::Bearer)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic 0123456789abcdefXYZ"),
        );
        assert!(a.caller(&h).is_none());
    }

    #[test]
    fn a_query_token_keeps_its_plus_signs() {
        assert_eq!(
            query_param("token=ab+c/d%2Be%3D&as=al", "token").as_deref(),
            Some("ab+c/d+e=")
        );
        assert_eq!(query_param("token=ab+c/d%2Be%3D&as=al", "as").as_deref(), Some("al"));
        assert_eq!(query_param("x=1", "token"), None);
        assert_eq!(query_param("token=abc=", "token").as_deref(), Some("abc="));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn names_are_cleaned_and_html_is_escaped() {
        assert_eq!(clean_name("ali ce<script>"), "alicescript");
        assert_eq!(
            html_escape("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
