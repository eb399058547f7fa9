//! Get Records: `GET /crm/{v6|v8}/Contacts` — the parameters, page tokens and the answer
//! (the handler, with authentication, faults, limits and the credit, is [`super::api::get_records`]).
//!
//! Parameters, as Zoho documents them (Get Records API, v3 on):
//! - `fields` (required): comma-separated API names, at most 50. Missing or empty: 400
//!   `REQUIRED_PARAM_MISSING` `{"param_name":"fields"}`; more: 400 `LIMIT_EXCEEDED`
//!   `{"limit":50,"param_name":"fields"}`. `id` is always served; unknown names are dropped.
//! - `per_page`: 1–200, default 200; else 400 `INVALID_DATA` `{"param_name":"per_page"}`.
//! - `page`: 1-based, default 1; else 400 `INVALID_DATA` `{"param_name":"page"}`. Without a
//!   page token only the first 2,000 records can be reached: `page × per_page > 2000` is 400
//!   `DISCRETE_PAGINATION_LIMIT_EXCEEDED` `{"limit":2000}`.
//! - `page_token`: from `info.next_page_token` (or `previous_page_token`); with `page` too:
//!   400 `AMBIGUITY_DURING_PROCESSING`. Not ours (garbled, another org's): 400 `INVALID_DATA`
//!   `{"param_name":"page_token"}`; older than 24 simulated hours: 400 `EXPIRED_VALUE`
//!   `{"api_name":"page_token","json_path":"$.query.page_token"}`; any other parameter
//!   added, changed or left out since the request that made it (`page` excepted): 400
//!   `TOKEN_BOUND_DATA_MISMATCH` `{"param_name":"page_token"}`; past the first 100,000
//!   records: 400 `PAGINATION_LIMIT_EXCEEDED` `{"param_name":"page_token"}`.
//! - `sort_by`: `id` (default), `Created_Time`, `Modified_Time` (ties by id); `sort_order`:
//!   `desc` (default) or `asc`; anything else is 400 `INVALID_DATA` with `supported_values`.
//! - `ids`: comma-separated record ids, at most 100 (else 400 `LIMIT_EXCEEDED`
//!   `{"limit":100,"param_name":"ids"}`): only those records (unknown ids are skipped).
//! - Other parameters (`cvid`, `converted`, `territory_id`, ...) and `If-Modified-Since` are
//!   not simulated: they are ignored (but bind page tokens like any parameter).
//!
//! A page token is opaque (URL-safe base64, 60 characters) and self-contained: it holds the
//! direction, the page number it leads to, when it was made, a hash of the parameters it is
//! bound to and the [`Position`] of the record it continues from (the last one served, or the
//! first for a previous-page token), sealed with a per-org key. The next page is the records
//! after that position in the current order, so a walk stays consistent while records change:
//! records deleted meanwhile are skipped, records added or moved (by a new `Modified_Time`)
//! behind the position are served, those ahead of it are not. Tokens can be used again (a
//! retried page) until they expire.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::error_body;
use super::records::{Position, RecordStore, SortBy, Start};
use crate::clock::{hash_str, splitmix64};

/// The most records a page holds, and the default.
pub const MAX_PER_PAGE: usize = 200;
/// The most API names `fields` may list.
pub const MAX_FIELDS: usize = 50;
/// The most ids `ids` may list.
pub const MAX_IDS: usize = 100;
/// Records reachable with `page` alone.
pub const DISCRETE_LIMIT: usize = 2_000;
/// Records reachable with page tokens.
pub const TOKEN_RECORD_LIMIT: usize = 100_000;
/// How long a page token lives, in simulated seconds.
pub const PAGE_TOKEN_LIFETIME_SECS: u64 = 86_400;

/// A checked Get Records request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub fields: Vec<String>,
    pub per_page: usize,
    pub page: Option<usize>,
    pub page_token: Option<String>,
    pub sort_by: SortBy,
    pub desc: bool,
    pub ids: Option<Vec<String>>,
    /// Hash of the module and every parameter but `page` and `page_token`: what a page token
    /// is bound to.
    pub binding: u64,
}

fn invalid_param(name: &str) -> Value {
    error_body("INVALID_DATA", json!({"param_name": name}), "invalid data")
}

fn invalid_choice(name: &str, supported: &[&str]) -> Value {
    error_body(
        "INVALID_DATA",
        json!({"param_name": name, "supported_values": supported}),
        "invalid data",
    )
}

fn comma_list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !out.iter().any(|o| o == part) {
            out.push(part.to_string());
        }
    }
    out
}

fn binding_of(module: &str, params: &[(String, String)]) -> u64 {
    let mut bound: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "page" && k != "page_token")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    bound.sort();
    hash_str(&format!("{}\n{}", module.to_ascii_lowercase(), bound.join("&")))
}

/// Checks the query parameters of a Get Records request (the first occurrence of each
/// counts); an error is the 400 body to answer with.
pub fn parse_request(module: &str, params: &[(String, String)]) -> Result<ListRequest, Value> {
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let fields = comma_list(param("fields").unwrap_or(""));
    if fields.is_empty() {
        return Err(error_body(
            "REQUIRED_PARAM_MISSING",
            json!({"param_name": "fields"}),
            "One of the expected parameter is missing",
        ));
    }
    if fields.len() > MAX_FIELDS {
        return Err(error_body(
            "LIMIT_EXCEEDED",
            json!({"limit": MAX_FIELDS, "param_name": "fields"}),
            "Fields limit exceeded",
        ));
    }
    let per_page = match param("per_page") {
        None => MAX_PER_PAGE,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PER_PAGE).contains(&n) => n,
            _ => return Err(invalid_param("per_page")),
        },
    };
    let page = match param("page") {
        None => None,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(invalid_param("page")),
        },
    };
    let sort_by = match param("sort_by") {
        None => SortBy::Id,
        Some(v) => SortBy::parse(v).ok_or_else(|| invalid_choice("sort_by", &SortBy::API_NAMES))?,
    };
    let desc = match param("sort_order") {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(invalid_choice("sort_order", &["asc", "desc"])),
    };
    let ids = match param("ids") {
        None => None,
        Some(v) => {
            let ids = comma_list(v);
            if ids.is_empty() {
                return Err(invalid_param("ids"));
            }
            if ids.len() > MAX_IDS {
                return Err(error_body(
                    "LIMIT_EXCEEDED",
                    json!({"limit": MAX_IDS, "param_name": "ids"}),
                    "Record count exceeded",
                ));
            }
            Some(ids)
        }
    };
    let page_token = match param("page_token") {
        None => None,
        Some(t) if t.trim().is_empty() => return Err(invalid_token()),
        Some(t) => Some(t.trim().to_string()),
    };
    if page.is_some() && page_token.is_some() {
        return Err(error_body(
            "AMBIGUITY_DURING_PROCESSING",
            json!({"ambiguity_due_to": [{"param_name": "page"}, {"param_name": "page_token"}]}),
            "You cannot use both page and page_token",
        ));
    }
    if page_token.is_none() && page.unwrap_or(1).saturating_mul(per_page) > DISCRETE_LIMIT {
        return Err(error_body(
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            json!({"limit": DISCRETE_LIMIT}),
            "You can only get the first 2000 records without using page_token param.",
        ));
    }
    Ok(ListRequest {
        fields,
        per_page,
        page,
        page_token,
        sort_by,
        desc,
        ids,
        binding: binding_of(module, params),
    })
}

fn invalid_token() -> Value {
    error_body(
        "INVALID_DATA",
        json!({"param_name": "page_token"}),
        "The token given seems to be invalid.",
    )
}

/// What a page token holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// A previous-page token: the page ends just before `anchor`.
    pub backward: bool,
    /// The page number the token leads to (`info.page` of that page).
    pub page: u32,
    /// When it was made, in simulated milliseconds since the simulator started.
    pub issued_ms: u64,
    pub binding: u64,
    pub anchor: Position,
}

const TOKEN_VERSION: u8 = 1;
const TOKEN_BYTES: usize = 1 + 4 + 8 * 5;

fn seal(key: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(splitmix64(key), |h, b| splitmix64(h ^ u64::from(*b)))
}

impl PageToken {
    /// The token's text, sealed with the org's key.
    pub fn encode(&self, key: u64) -> String {
        let mut b = Vec::with_capacity(TOKEN_BYTES);
        b.push((TOKEN_VERSION << 1) | u8::from(self.backward));
        b.extend(self.page.to_be_bytes());
        for n in [self.issued_ms, self.binding, self.anchor.key, self.anchor.id] {
            b.extend(n.to_be_bytes());
        }
        let mac = seal(key, &b);
        b.extend(mac.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Reads a token made with `key`; `None` for anything else.
    pub fn decode(text: &str, key: u64) -> Option<PageToken> {
        let b = URL_SAFE_NO_PAD.decode(text).ok()?;
        if b.len() != TOKEN_BYTES || b[0] >> 1 != TOKEN_VERSION {
            return None;
        }
        let u64_at = |i: usize| -> Option<u64> { Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
        if seal(key, &b[..TOKEN_BYTES - 8]) != u64_at(TOKEN_BYTES - 8)? {
            return None;
        }
        Some(PageToken {
            backward: b[0] & 1 == 1,
            page: u32::from_be_bytes(b.get(1..5)?.try_into().ok()?),
            issued_ms: u64_at(5)?,
            binding: u64_at(13)?,
            anchor: Position {
                key: u64_at(21)?,
                id: u64_at(29)?,
            },
        })
    }
}

/// Checks the request's page token at `now_ms` (simulated ms since the start); an error is
/// the 400 body to answer with.
pub fn check_token(req: &ListRequest, text: &str, key: u64, now_ms: u64) -> Result<PageToken, Value> {
    let token = PageToken::decode(text, key)
        .filter(|t| t.issued_ms <= now_ms && t.page >= 1)
        .ok_or_else(invalid_token)?;
    if now_ms >= token.issued_ms.saturating_add(PAGE_TOKEN_LIFETIME_SECS * 1000) {
        return Err(error_body(
            "EXPIRED_VALUE",
            json!({"api_name": "page_token", "json_path": "$.query.page_token"}),
            "Page token expired",
        ));
    }
    if token.binding != req.binding {
        return Err(error_body(
            "TOKEN_BOUND_DATA_MISMATCH",
            json!({"param_name": "page_token"}),
            "The page_token given seems to be invalid or input param is added, altered, or deleted",
        ));
    }
    if (token.page as usize).saturating_mul(req.per_page) > TOKEN_RECORD_LIMIT {
        return Err(error_body(
            "PAGINATION_LIMIT_EXCEEDED",
            json!({"param_name": "page_token"}),
            "You can only get up to first 100000 records using page_token param.",
        ));
    }
    Ok(token)
}

/// When the tokens made now expire, and the time to stamp them with.
#[derive(Debug, Clone)]
pub struct TokenClock {
    pub now_ms: u64,
    /// RFC 3339 time 24 h from now (`info.page_token_expiry`).
    pub expiry: String,
}

/// The answer to a checked request: the body (`None` for an empty page: 204 No Content) and
/// the number of records served.
pub fn answer(
    store: &RecordStore,
    req: &ListRequest,
    token: Option<PageToken>,
    key: u64,
    clock: &TokenClock,
) -> (Option<Value>, usize) {
    let (start, page_no) = match token {
        Some(t) if t.backward => (Start::Before(t.anchor), t.page as usize),
        Some(t) => (Start::After(t.anchor), t.page as usize),
        None => {
            let p = req.page.unwrap_or(1);
            (Start::Offset((p - 1) * req.per_page), p)
        }
    };
    let page = store.page(req.sort_by, req.desc, req.ids.as_deref(), start, req.per_page);
    let (Some(first), Some(last)) = (page.records.first(), page.records.last()) else {
        return (None, 0);
    };
    let make = |backward: bool, page: usize, anchor: Position| {
        PageToken {
            backward,
            page: u32::try_from(page).unwrap_or(u32::MAX),
            issued_ms: clock.now_ms,
            binding: req.binding,
            anchor,
        }
        .encode(key)
    };
    let next = page.after.then(|| make(false, page_no + 1, last.position(req.sort_by)));
    let previous = page
        .before
        .then(|| make(true, page_no.saturating_sub(1).max(1), first.position(req.sort_by)));
    let expiry = (next.is_some() || previous.is_some()).then(|| clock.expiry.clone());
    let data: Vec<Value> = page.records.iter().map(|r| store.list_item(r, &req.fields)).collect();
    let count = data.len();
    let mut info = Map::new();
    info.insert("call".into(), json!(false));
    info.insert("per_page".into(), json!(req.per_page));
    info.insert("next_page_token".into(), json!(next));
    info.insert("count".into(), json!(count));
    info.insert("sort_by".into(), json!(req.sort_by.api_name()));
    info.insert("page".into(), json!(page_no));
    info.insert("previous_page_token".into(), json!(previous));
    info.insert("page_token_expiry".into(), json!(expiry));
    info.insert("sort_order".into(), json!(if req.desc { "desc" } else { "asc" }));
    info.insert("email".into(), json!(false));
    info.insert("more_records".into(), json!(page.after));
    (Some(json!({"data": data, "info": info})), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn code(r: Result<ListRequest, Value>) -> String {
        match r {
            Ok(_) => "OK".into(),
            Err(e) => e["code"].as_str().unwrap_or("").into(),
        }
    }

    #[test]
    fn parameters_are_checked_as_zoho_documents() {
        let parse = |q: &[(&str, &str)]| code(parse_request("Contacts", &params(q)));
        assert_eq!(parse(&[]), "REQUIRED_PARAM_MISSING");
        assert_eq!(parse(&[("fields", " , ")]), "REQUIRED_PARAM_MISSING");
        assert_eq!(parse(&[("fields", "Email")]), "OK");
        let many = (0..51).map(|i| format!("F{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(parse(&[("fields", &many)]), "LIMIT_EXCEEDED");
        assert_eq!(parse(&[("fields", "Email"), ("per_page", "0")]), "INVALID_DATA");
        assert_eq!(parse(&[("fields", "Email"), ("per_page", "201")]), "INVALID_DATA");
        assert_eq!(parse(&[("fields", "Email"), ("page", "0")]), "INVALID_DATA");
        assert_eq!(parse(&[("fields", "Email"), ("page", "10")]), "OK");
        assert_eq!(
            parse(&[("fields", "Email"), ("page", "11")]),
            "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
        );
        assert_eq!(parse(&[("fields", "Email"), ("page", "20"), ("per_page", "100")]), "OK");
        assert_eq!(
            parse(&[("fields", "Email"), ("page", "1"), ("page_token", "x")]),
            "AMBIGUITY_DURING_PROCESSING"
        );
        assert_eq!(parse(&[("fields", "Email"), ("sort_by", "Email")]), "INVALID_DATA");
        assert_eq!(parse(&[("fields", "Email"), ("sort_order", "up")]), "INVALID_DATA");
        let ids = (0..101).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(parse(&[("fields", "Email"), ("ids", &ids)]), "LIMIT_EXCEEDED");
        let r = parse_request("Contacts", &params(&[("fields", "Email,Email, Last_Name")])).expect("ok");
        assert_eq!(r.fields, ["Email", "Last_Name"]);
        assert_eq!((r.per_page, r.sort_by, r.desc), (200, SortBy::Id, true));
    }

    #[test]
    fn tokens_round_trip_and_are_bound_sealed_and_expire() {
        let req = parse_request("Contacts", &params(&[("fields", "Email"), ("sort_order", "asc")])).expect("ok");
        let t = PageToken {
            backward: false,
            page: 12,
            issued_ms: 5_000,
            binding: req.binding,
            anchor: Position {
                key: 20_240_501_102_030,
                id: 1_234_567_000_001_000_001,
            },
        };
        let text = t.encode(7);
        assert!(text.len() <= 96, "{text}");
        assert_eq!(PageToken::decode(&text, 7), Some(t));
        assert_eq!(PageToken::decode(&text, 8), None, "another org's key");
        let mut tampered = text.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(PageToken::decode(&String::from_utf8(tampered).expect("utf8"), 7), None);

        let err = |r: Result<PageToken, Value>| r.err().map(|e| e["code"].clone());
        assert_eq!(check_token(&req, &text, 7, 6_000), Ok(t));
        assert_eq!(err(check_token(&req, &text, 7, 4_000)), Some(json!("INVALID_DATA")));
        assert_eq!(
            err(check_token(&req, &text, 7, 5_000 + 86_400_000)),
            Some(json!("EXPIRED_VALUE"))
        );
        let other = parse_request(
            "Contacts",
            &params(&[("fields", "Email"), ("sort_order", "asc"), ("per_page", "200")]),
        )
        .expect("ok");
        assert_eq!(
            err(check_token(&other, &text, 7, 6_000)),
            Some(json!("TOKEN_BOUND_DATA_MISMATCH"))
        );
        let far = PageToken { page: 501, ..t }.encode(7);
        assert_eq!(
            err(check_token(&req, &far, 7, 6_000)),
            Some(json!("PAGINATION_LIMIT_EXCEEDED"))
        );
    }
}
