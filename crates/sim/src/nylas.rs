//! The fake Nylas v3 Contacts API: list (paginated) and get, per region, with Nylas's error
//! envelope and seeded faults.
//!
//! Order of checks: latency; the API key must be some tenant's key (else 401); the grant
//! must exist in this region (else 404); the key must be the grant's (else 401); the grant's
//! fault dice; then the request itself.
//!
//! Cursors are opaque: URL-safe base64 of `v1:<grant tag>:<offset>:<check>`, where the grant
//! tag and the check are keyed hashes of the simulator seed, the grant and the offset. A
//! cursor of another grant, a forged or a mangled one is `400 invalid page_token`. The offset
//! is a slot of the [`AddressBook`]: a page is the next `limit` live contacts from that slot,
//! so while the book does not change the same cursor (with the same limit) always returns the
//! same contacts. When it changes during a read (see `mutations`), deleted contacts drop out
//! of later pages, created ones appear at the end, and the rest are served exactly once. The
//! last page carries no cursor: depending on a seeded hash of the grant and the page's offset,
//! the `next_cursor` key is absent or `null`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::clock::{derive_seed, splitmix64};
use crate::config::{NYLAS_REGIONS, SimConfig, TenantConfig};
use crate::faults::{self, Dice, NylasFault};
use crate::generate::address_book;
use crate::{Sim, lock};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 30;
/// Largest page; larger limits are clamped to it.
pub const MAX_LIMIT: usize = 200;

/// A grant's contacts, in page order, with an index by id.
///
/// The book is a list of slots: the generated contacts in generation order, then contacts
/// created at run time, appended. A deleted contact leaves an empty slot (never reused or
/// compacted), so a slot number stays a stable position: cursors point at slots, and a book
/// changed during a read neither repeats nor skips the contacts that stay.
#[derive(Debug, Default)]
pub struct AddressBook {
    slots: Vec<Option<Value>>,
    by_id: HashMap<String, usize>,
    live: usize,
    /// Serials of emails made at run time (unique per book).
    serial: u64,
}

impl AddressBook {
    pub fn new(contacts: Vec<Value>) -> AddressBook {
        let mut book = AddressBook::default();
        for c in contacts {
            book.insert(c);
        }
        book
    }

    /// Contacts in the book now (deleted ones excluded).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Slots ever used: live contacts plus deleted ones.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.by_id
            .get(id)
            .and_then(|&i| self.slots.get(i))
            .and_then(Option::as_ref)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The live contacts in page order.
    pub fn contacts(&self) -> impl Iterator<Item = &Value> {
        self.slots.iter().flatten()
    }

    /// The id of the contact in slot `slot`, if it is live.
    pub fn id_at(&self, slot: usize) -> Option<&str> {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str)
    }

    /// Up to `limit` live contacts from slot `start` on, and the slot to continue from when
    /// live contacts remain after them.
    pub fn page(&self, start: usize, limit: usize) -> (Vec<Value>, Option<usize>) {
        let mut data = Vec::with_capacity(limit.min(self.live));
        let mut pos = start.min(self.slots.len());
        while pos < self.slots.len() && data.len() < limit {
            if let Some(c) = &self.slots[pos] {
                data.push(c.clone());
            }
            pos += 1;
        }
        let more = self
            .slots
            .get(pos..)
            .is_some_and(|rest| rest.iter().any(Option::is_some));
        (data, more.then_some(pos))
    }

    /// Appends a contact; replaces it in place if its id is already in the book. A contact
    /// without a string `id` is ignored.
    pub fn insert(&mut self, contact: Value) {
        let Some(id) = contact.get("id").and_then(Value::as_str).map(String::from) else {
            return;
        };
        if let Some(&slot) = self.by_id.get(&id) {
            self.slots[slot] = Some(contact);
            return;
        }
        self.by_id.insert(id, self.slots.len());
        self.slots.push(Some(contact));
        self.live += 1;
    }

    /// Replaces the contact with `contact`'s id; false if there is none.
    pub fn replace(&mut self, contact: Value) -> bool {
        let id = contact.get("id").and_then(Value::as_str).unwrap_or_default();
        if !self.by_id.contains_key(id) {
            return false;
        }
        self.insert(contact);
        true
    }

    /// A new serial for an email made at run time.
    pub fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Deletes a contact, leaving its slot empty.
    pub fn remove(&mut self, id: &str) -> Option<Value> {
        let slot = self.by_id.remove(id)?;
        let removed = self.slots.get_mut(slot).and_then(Option::take);
        if removed.is_some() {
            self.live -= 1;
        }
        removed
    }
}

/// Per-grant counters.
#[derive(Debug, Default)]
pub struct GrantStats {
    pub list: u64,
    pub get: u64,
    pub faults_injected: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Mutations applied to the book, by kind (`create`, `update`, `email_change`, `delete`).
    pub mutations: BTreeMap<String, u64>,
}

/// One Nylas grant.
#[derive(Debug)]
pub struct Grant {
    pub cfg: TenantConfig,
    pub book: RwLock<AddressBook>,
    pub stats: Mutex<GrantStats>,
    pub faults: Dice,
    /// Keys cursors to this grant and this seed.
    cursor_key: u64,
}

impl Grant {
    fn count(&self, status: StatusCode) {
        *lock(&self.stats).by_status.entry(status.as_u16()).or_default() += 1;
    }

    fn tag(&self) -> u64 {
        splitmix64(self.cursor_key)
    }

    fn check(&self, offset: usize) -> u32 {
        (splitmix64(self.cursor_key ^ splitmix64(offset as u64)) >> 32) as u32
    }

    /// The cursor of the page starting at `offset`.
    pub fn cursor(&self, offset: usize) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{:016x}:{offset}:{:08x}", self.tag(), self.check(offset)))
    }

    /// The offset a cursor points at, if it is one of this grant's.
    pub fn decode_cursor(&self, cursor: &str) -> Option<usize> {
        let raw = URL_SAFE_NO_PAD.decode(cursor.trim_end_matches('=')).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut parts = text.split(':');
        let (Some("v1"), Some(tag), Some(offset), Some(check), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let offset: usize = offset.parse().ok()?;
        let ok = u64::from_str_radix(tag, 16).ok()? == self.tag()
            && u32::from_str_radix(check, 16).ok()? == self.check(offset);
        ok.then_some(offset)
    }

    /// Whether the last page starting at `offset` sends `"next_cursor": null` (else omits it).
    fn null_cursor_at_end(&self, offset: usize) -> bool {
        splitmix64(self.cursor_key ^ 0x5eed ^ offset as u64) & 1 == 1
    }

    /// The grant's counters as JSON.
    pub fn inspect(&self) -> Value {
        let s = lock(&self.stats);
        let by_status: Map<String, Value> = s.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        json!({
            "grant_id": self.cfg.grant_id,
            "region": self.cfg.nylas_region,
            "contacts": self.book.read().map(|b| b.len()).unwrap_or(0),
            "calls": {"list": s.list, "get": s.get, "faults_injected": s.faults_injected, "by_status": by_status},
            "mutations": s.mutations,
        })
    }
}

/// Every grant, and the API keys that exist.
#[derive(Debug)]
pub struct NylasState {
    pub grants: HashMap<String, Arc<Grant>>,
    keys: HashSet<String>,
}

impl NylasState {
    /// Generates every tenant's address book.
    pub fn new(cfg: &SimConfig) -> NylasState {
        let grants = cfg
            .tenants
            .iter()
            .map(|t| {
                let grant = Grant {
                    cfg: t.clone(),
                    book: RwLock::new(AddressBook::new(address_book(t, cfg.seed))),
                    stats: Mutex::new(GrantStats::default()),
                    faults: Dice::new(cfg.seed, &format!("faults/nylas/{}", t.grant_id)),
                    cursor_key: derive_seed(cfg.seed, &format!("cursor/{}", t.grant_id)),
                };
                (t.grant_id.clone(), Arc::new(grant))
            })
            .collect();
        let keys = cfg.tenants.iter().map(|t| t.nylas_api_key.clone()).collect();
        NylasState { grants, keys }
    }
}

/// Nylas's error envelope.
pub fn error(sim: &Sim, status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"request_id": sim.request_id(), "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/nylas/{region}/v3/grants/{grant_id}/contacts", get(list))
        .route(
            "/nylas/{region}/v3/grants/{grant_id}/contacts/{contact_id}",
            get(get_one),
        )
}

/// Latency, authentication, grant lookup and faults, shared by both endpoints.
async fn begin(sim: &Sim, region: &str, grant_id: &str, headers: &HeaderMap) -> Result<Arc<Grant>, Response> {
    faults::pause(sim.latency.draw()).await;
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorized = || {
        error(
            sim,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized: the API key is missing or invalid",
        )
    };
    let Some(key) = key.filter(|k| sim.nylas.keys.contains(*k)) else {
        return Err(unauthorized());
    };
    let grant = sim
        .nylas
        .grants
        .get(grant_id)
        .filter(|g| NYLAS_REGIONS.contains(&region) && g.cfg.nylas_region == region);
    let Some(grant) = grant else {
        return Err(error(
            sim,
            StatusCode::NOT_FOUND,
            "api.not_found_error",
            "grant not found",
        ));
    };
    if grant.cfg.nylas_api_key != key {
        grant.count(StatusCode::UNAUTHORIZED);
        return Err(unauthorized());
    }
    if let Some(fault) = faults::nylas_fault(&sim.cfg.faults, grant.faults.roll()) {
        lock(&grant.stats).faults_injected += 1;
        let resp = match fault {
            NylasFault::NylasRateLimit => error(
                sim,
                StatusCode::TOO_MANY_REQUESTS,
                "nylas_rate_limit_exceeded",
                "Too many requests",
            ),
            NylasFault::ProviderRateLimit => {
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({"error": {
                        "type": "rate_limit_error",
                        "message": "The provider is throttling requests for this grant",
                        "provider_error": {"error": {"code": 429, "message": "Quota exceeded"}},
                    }})),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                resp
            }
            NylasFault::Internal => error(
                sim,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An internal error occurred. Please try again.",
            ),
        };
        grant.count(resp.status());
        return Err(resp);
    }
    Ok(grant.clone())
}

/// `GET {api_uri}/v3/grants/{grant_id}/contacts?limit=&page_token=`
async fn list(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((region, grant_id))) = path else {
        return error(&sim, StatusCode::NOT_FOUND, "api.not_found_error", "not found");
    };
    let grant = match begin(&sim, &region, &grant_id, &headers).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    let resp = list_page(&sim, &grant, query.ok().map(|Query(q)| q).as_ref());
    grant.count(resp.status());
    resp
}

fn list_page(sim: &Sim, grant: &Grant, query: Option<&HashMap<String, String>>) -> Response {
    let Some(query) = query else {
        return error(
            sim,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid query string",
        );
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(0) | Err(_) => {
                return error(
                    sim,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "limit must be a positive integer",
                );
            }
            Ok(n) => n.min(MAX_LIMIT as u64) as usize,
        },
    };
    let offset = match query.get("page_token").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match grant.decode_cursor(token) {
            Some(o) => o,
            None => {
                return error(
                    sim,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid page_token",
                );
            }
        },
    };
    lock(&grant.stats).list += 1;
    let Ok(book) = grant.book.read() else {
        return error(
            sim,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "address book unavailable",
        );
    };
    let (data, next) = book.page(offset, limit);
    drop(book);
    let mut body = Map::new();
    body.insert("request_id".into(), json!(sim.request_id()));
    body.insert("data".into(), Value::Array(data));
    if let Some(next) = next {
        body.insert("next_cursor".into(), json!(grant.cursor(next)));
    } else if grant.null_cursor_at_end(offset) {
        body.insert("next_cursor".into(), Value::Null);
    }
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// `GET {api_uri}/v3/grants/{grant_id}/contacts/{id}`
async fn get_one(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((region, grant_id, contact_id))) = path else {
        return error(&sim, StatusCode::NOT_FOUND, "api.not_found_error", "not found");
    };
    let grant = match begin(&sim, &region, &grant_id, &headers).await {
        Ok(g) => g,
        Err(resp) => return resp,
    };
    lock(&grant.stats).get += 1;
    let found = grant.book.read().ok().and_then(|b| b.get(&contact_id).cloned());
    let resp = match found {
        Some(contact) => (
            StatusCode::OK,
            Json(json!({"request_id": sim.request_id(), "data": contact})),
        )
            .into_response(),
        None => error(&sim, StatusCode::NOT_FOUND, "api.not_found_error", "contact not found"),
    };
    grant.count(resp.status());
    resp
}
