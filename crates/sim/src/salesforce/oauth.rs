//! The Salesforce login server: `POST {login}/services/oauth2/token` for the `refresh_token`
//! and `authorization_code` grants, and the access tokens (sessions) it issues.
//!
//! Parameters come from the form body (the query string is read too; the body wins). Checks,
//! in order, all answered HTTP 400 with `{"error","error_description"}`:
//! - `grant_type` other than the two: `unsupported_grant_type` / `grant type not supported`;
//! - a wrong `client_id`: `invalid_client_id` / `client identifier invalid`;
//! - a wrong `client_secret`: `invalid_client` / `invalid client credentials`;
//! - a wrong refresh token: `invalid_grant` / `expired access/refresh token`;
//! - an unknown code: `invalid_grant` / `invalid authorization code`; a code already used:
//!   `invalid_grant` / `expired authorization code` (Salesforce's wording for a reused code).
//!
//! Success: `{"access_token","signature","instance_url","id","token_type":"Bearer","issued_at"}`
//! (plus `refresh_token` for a code), and, as Salesforce documents, no `expires_in`: a client
//! learns that a session ended from a 401 `INVALID_SESSION_ID`. `issued_at` is milliseconds
//! of simulated Unix time as a string; `signature` is base64 HMAC-SHA256 of `id` followed by
//! `issued_at`, keyed with the client secret (Salesforce's definition). `redirect_uri` is not
//! checked.
//!
//! Sessions last `session_secs` simulated seconds from their issue. (Salesforce's timeout
//! counts from the last activity; a fixed lifetime is the stricter case a client must handle
//! anyway.) `RunningSim::expire_salesforce_sessions` ends every session of an org at once.
//! Token requests are not API requests: they do not count against the daily limit. There is
//! no token-request limit (Salesforce documents none comparable to Zoho's).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::Sha256;

use super::SfOrg;
use crate::clock::derive_seed;
use crate::zoho::accounts::parse_urlencoded;
use crate::{Sim, faults, lock};

#[derive(Debug, Clone)]
struct Session {
    org_id: String,
    expires_at: f64,
}

#[derive(Debug)]
struct Inner {
    sessions: HashMap<String, Session>,
    used_codes: HashSet<String>,
    rng: StdRng,
}

/// Every org's sessions and used authorization codes.
#[derive(Debug)]
pub struct Sessions(Mutex<Inner>);

impl Sessions {
    pub fn new(seed: u64) -> Sessions {
        Sessions(Mutex::new(Inner {
            sessions: HashMap::new(),
            used_codes: HashSet::new(),
            rng: StdRng::seed_from_u64(derive_seed(seed, "salesforce/sessions")),
        }))
    }

    /// Whether `token` is a live session of `org_id`.
    pub fn check(&self, token: &str, org_id: &str, now: f64) -> bool {
        let mut inner = lock(&self.0);
        match inner.sessions.get(token) {
            Some(s) if s.expires_at <= now => {
                inner.sessions.remove(token);
                false
            }
            Some(s) => s.org_id == org_id,
            None => false,
        }
    }

    /// Ends every session of `org_id`; returns how many were live.
    pub fn expire_org(&self, org_id: &str, now: f64) -> usize {
        let mut inner = lock(&self.0);
        let live = inner
            .sessions
            .values()
            .filter(|s| s.org_id == org_id && s.expires_at > now)
            .count();
        inner.sessions.retain(|_, s| s.org_id != org_id);
        live
    }

    /// Issues a session token of the form Salesforce uses: `<org id>!<opaque>`.
    fn issue(&self, org: &SfOrg, now: f64) -> String {
        let mut inner = lock(&self.0);
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
        let opaque: String = (0..96)
            .map(|_| char::from(ALPHABET[inner.rng.random_range(0..ALPHABET.len())]))
            .collect();
        let token = format!("{}!{opaque}", &org.organization_id[..15]);
        inner.sessions.insert(
            token.clone(),
            Session {
                org_id: org.cfg.org_id.clone(),
                expires_at: now + org.cfg.session_secs as f64,
            },
        );
        token
    }

    /// Marks `code` used; false if it already was.
    fn use_code(&self, code: &str) -> bool {
        lock(&self.0).used_codes.insert(code.to_string())
    }
}

/// Base64 HMAC-SHA256 of `id` then `issued_at`, keyed with the client secret.
pub fn signature(secret: &[u8], id: &str, issued_at: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty signature would only make
    // a client's verification fail, never crash the simulator.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /salesforce/{org}/login/services/oauth2/token`
pub async fn token(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    faults::pause(sim.latency.draw()).await;
    let org = path
        .ok()
        .and_then(|Path(org_id)| sim.salesforce.orgs.get(&org_id).cloned());
    let Some(org) = org else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "error_description": "unknown login host"})),
        )
            .into_response();
    };
    let mut params: HashMap<String, String> = HashMap::new();
    params.extend(parse_urlencoded(query.as_deref().unwrap_or("")));
    params.extend(parse_urlencoded(&String::from_utf8_lossy(&body)));
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    lock(&org.state).stats.token_requests += 1;

    let grant = get("grant_type");
    if !matches!(grant, Some("refresh_token" | "authorization_code")) {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if get("client_id") != Some(org.cfg.client_id.as_str()) {
        return oauth_error("invalid_client_id", "client identifier invalid");
    }
    if get("client_secret") != Some(org.cfg.client_secret.as_str()) {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    let with_refresh_token = if grant == Some("refresh_token") {
        if get("refresh_token") != Some(org.cfg.refresh_token.as_str()) {
            return oauth_error("invalid_grant", "expired access/refresh token");
        }
        false
    } else {
        let Some(code) = get("code").filter(|c| org.cfg.grant_codes.iter().any(|g| g == c)) else {
            return oauth_error("invalid_grant", "invalid authorization code");
        };
        if !sim.salesforce.sessions.use_code(code) {
            return oauth_error("invalid_grant", "expired authorization code");
        }
        true
    };
    let access_token = sim.salesforce.sessions.issue(&org, sim.clock.now());
    lock(&org.state).stats.token += 1;
    let issued_at = format!("{}", (sim.clock.unix_now() * 1000.0) as u64);
    let id = format!(
        "{}/id/{}/{}",
        sim.salesforce_login_url(&org.cfg.org_id),
        org.organization_id,
        org.user_id
    );
    let signature = signature(org.cfg.client_secret.as_bytes(), &id, &issued_at);
    let mut body = json!({
        "access_token": access_token,
        "signature": signature,
        "instance_url": sim.salesforce_instance_url(&org.cfg.org_id),
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
    });
    if with_refresh_token && let Value::Object(m) = &mut body {
        m.insert("refresh_token".into(), json!(org.cfg.refresh_token));
    }
    (StatusCode::OK, Json(body)).into_response()
}
