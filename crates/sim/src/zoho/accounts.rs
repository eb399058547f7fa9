//! The Zoho accounts server: `POST {accounts}/oauth/v2/token` for the `refresh_token`,
//! `authorization_code` and `client_credentials` grants, with Zoho's limits.
//!
//! Parameters are read from the query string and from a form body (the body wins). Errors
//! follow Zoho: HTTP 200 `{"error":"invalid_code"}` for a wrong refresh token, code, client
//! or secret, or one belonging to another DC; HTTP 400 `Access Denied` past the request
//! limit.
//!
//! Limits are kept per credential: the refresh token (for `refresh_token`, and for
//! `authorization_code`, which hands out that refresh token) or the client id (for
//! `client_credentials`). Per credential, at most 10 token requests per window of 10
//! simulated minutes that opens at the first request (refused requests do not count and do
//! not extend it), and at most 10 live access tokens: issuing an 11th invalidates the
//! oldest. Tokens live `expires_in` = 3600 simulated seconds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::Org;
use crate::clock::derive_seed;
use crate::config::ZOHO_DCS;
use crate::{Sim, faults, lock};

/// Zoho allows 10 token requests per 10 minutes per refresh token.
pub const TOKEN_REQUESTS_PER_WINDOW: u32 = 10;
pub const TOKEN_WINDOW_SECS: f64 = 600.0;
/// Zoho keeps at most 10 live access tokens per refresh token.
pub const MAX_LIVE_TOKENS: usize = 10;
/// Access-token lifetime in simulated seconds.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;

/// An issued access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub org_id: String,
    pub dc: String,
    pub expires_at: f64,
}

#[derive(Debug, Default)]
struct RequestWindow {
    start: f64,
    count: u32,
}

#[derive(Debug)]
struct AccountsInner {
    tokens: HashMap<String, AccessToken>,
    live: HashMap<String, VecDeque<String>>,
    windows: HashMap<String, RequestWindow>,
    used_codes: HashSet<String>,
    rng: StdRng,
}

/// The token store shared by every DC's accounts server and API domain.
#[derive(Debug)]
pub struct Accounts(Mutex<AccountsInner>);

/// Why an access token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Unknown, expired, invalidated or another DC's; the org it was issued to, when known.
    Invalid { org_id: Option<String> },
}

impl Accounts {
    pub fn new(seed: u64) -> Accounts {
        Accounts(Mutex::new(AccountsInner {
            tokens: HashMap::new(),
            live: HashMap::new(),
            windows: HashMap::new(),
            used_codes: HashSet::new(),
            rng: StdRng::seed_from_u64(derive_seed(seed, "zoho/tokens")),
        }))
    }

    /// The org of a live access token presented to `dc`'s API domain.
    pub fn check(&self, token: &str, dc: &str, now: f64) -> Result<String, TokenError> {
        let inner = lock(&self.0);
        let Some(t) = inner.tokens.get(token) else {
            return Err(TokenError::Invalid { org_id: None });
        };
        if t.expires_at <= now {
            // Kept (not removed) so a later use is still attributed to its org.
            return Err(TokenError::Invalid {
                org_id: Some(t.org_id.clone()),
            });
        }
        if t.dc != dc {
            return Err(TokenError::Invalid {
                org_id: Some(t.org_id.clone()),
            });
        }
        Ok(t.org_id.clone())
    }
}

/// What a grant resolved to before the limits apply.
struct Grant {
    org: Arc<Org>,
    credential: String,
    refresh_token: Option<String>,
    code: Option<String>,
}

fn invalid_code() -> Response {
    (StatusCode::OK, Json(json!({"error": "invalid_code"}))).into_response()
}

/// Parses `application/x-www-form-urlencoded` text.
pub fn parse_urlencoded(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /zoho/{dc}/accounts/oauth/v2/token`
pub async fn token(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    faults::pause(sim.latency.draw()).await;
    let Ok(Path(dc)) = path else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "invalid_url"}))).into_response();
    };
    if !ZOHO_DCS.contains(&dc.as_str()) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "invalid_url"}))).into_response();
    }
    let mut params: HashMap<String, String> = HashMap::new();
    params.extend(parse_urlencoded(query.as_deref().unwrap_or("")));
    params.extend(parse_urlencoded(&String::from_utf8_lossy(&body)));
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());

    let client_matches = |org: &Org| {
        get("client_id") == Some(org.cfg.client_id.as_str())
            && get("client_secret") == Some(org.cfg.client_secret.as_str())
    };
    let grant = match get("grant_type") {
        Some("refresh_token") => {
            let Some(rt) = get("refresh_token") else {
                return invalid_code();
            };
            let Some(org) = sim.zoho.orgs_in(&dc).find(|o| o.cfg.refresh_token == rt) else {
                return invalid_code();
            };
            Grant {
                org: org.clone(),
                credential: format!("rt:{rt}"),
                refresh_token: None,
                code: None,
            }
        }
        Some("authorization_code") => {
            let Some(code) = get("code") else {
                return invalid_code();
            };
            let Some(org) = sim
                .zoho
                .orgs_in(&dc)
                .find(|o| o.cfg.grant_codes.iter().any(|c| c == code))
            else {
                return invalid_code();
            };
            // A redirect URI is part of the web-server flow; Self Client grant codes are
            // exchanged without one, so an absent one is accepted and an empty one refused.
            if get("redirect_uri").is_some_and(|r| r.trim().is_empty()) {
                return (StatusCode::OK, Json(json!({"error": "invalid_redirect_uri"}))).into_response();
            }
            Grant {
                org: org.clone(),
                credential: format!("rt:{}", org.cfg.refresh_token),
                refresh_token: Some(org.cfg.refresh_token.clone()),
                code: Some(code.to_string()),
            }
        }
        Some("client_credentials") => {
            let Some(org_id) = get("soid").and_then(|s| s.strip_prefix("ZohoCRM.")) else {
                return invalid_code();
            };
            let Some(org) = sim.zoho.orgs_in(&dc).find(|o| o.cfg.org_id == org_id) else {
                return invalid_code();
            };
            if get("scope").is_none() {
                return (StatusCode::OK, Json(json!({"error": "invalid_scope"}))).into_response();
            }
            Grant {
                org: org.clone(),
                credential: format!("cc:{}", org.cfg.client_id),
                refresh_token: None,
                code: None,
            }
        }
        _ => return (StatusCode::OK, Json(json!({"error": "unsupported_grant_type"}))).into_response(),
    };
    let org = grant.org.clone();
    lock(&org.state).stats.token_requests += 1;
    if !client_matches(&org) {
        return invalid_code();
    }
    let now = sim.clock.now();
    let issued = {
        let mut inner = lock(&sim.zoho.accounts.0);
        if let Some(code) = &grant.code
            && inner.used_codes.contains(code)
        {
            return invalid_code();
        }
        let window = inner.windows.entry(grant.credential.clone()).or_default();
        if window.count == 0 || now >= window.start + TOKEN_WINDOW_SECS {
            window.start = now;
            window.count = 0;
        }
        if window.count >= TOKEN_REQUESTS_PER_WINDOW {
            None
        } else {
            window.count += 1;
            if let Some(code) = &grant.code {
                inner.used_codes.insert(code.clone());
            }
            let token = format!(
                "1000.{:032x}.{:032x}",
                inner.rng.random::<u128>(),
                inner.rng.random::<u128>()
            );
            let inner = &mut *inner;
            let live = inner.live.entry(grant.credential.clone()).or_default();
            // Expired tokens stay known (a late use is still attributed to its org) until
            // their refresh token issues the next one.
            let expired: Vec<String> = live
                .iter()
                .filter(|t| !inner.tokens.get(*t).is_some_and(|t| t.expires_at > now))
                .cloned()
                .collect();
            for t in &expired {
                inner.tokens.remove(t);
            }
            live.retain(|t| !expired.contains(t));
            live.push_back(token.clone());
            while live.len() > MAX_LIVE_TOKENS {
                if let Some(oldest) = live.pop_front() {
                    inner.tokens.remove(&oldest);
                }
            }
            inner.tokens.insert(
                token.clone(),
                AccessToken {
                    org_id: org.cfg.org_id.clone(),
                    dc: dc.clone(),
                    expires_at: now + TOKEN_LIFETIME_SECS as f64,
                },
            );
            Some(token)
        }
    };
    let Some(access_token) = issued else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "Access Denied",
                "error_description": "You have made too many requests continuously. Please try again after some time.",
            })),
        )
            .into_response();
    };
    lock(&org.state).stats.token += 1;
    let mut body = json!({
        "access_token": access_token,
        "expires_in": TOKEN_LIFETIME_SECS,
        "api_domain": sim.zoho_api_domain(&dc),
        "token_type": "Bearer",
    });
    if let (Some(rt), Value::Object(m)) = (grant.refresh_token, &mut body) {
        m.insert("refresh_token".into(), json!(rt));
    }
    (StatusCode::OK, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_parsing_decodes_plus_and_percent() {
        let p = parse_urlencoded("a=1&b=x+y&c=%41%2b&d&e=%zz&f=%4");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "A+".into()),
                ("d".into(), "".into()),
                ("e".into(), "%zz".into()),
                ("f".into(), "%4".into()),
            ]
        );
    }
}
