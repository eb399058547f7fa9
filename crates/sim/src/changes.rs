//! Explicit address-book changes: put one chosen contact (insert it, or replace the contact
//! with its `id`) or delete one, and optionally deliver the change as one signed genuine
//! notification.
//!
//! Mutation plans (see [`crate::mutations`]) pick ids and values at random; tests of edge cases
//! need exact ones instead (ids holding `"`, `\`, tabs, newlines or non-ASCII text, a contact
//! with only a few fields). A change here is applied exactly as a mutation is:
//! - a put appends a contact with a new id at the end of the book (later pages serve it) or
//!   replaces one in place; it fills `grant_id` and `object: "contact"` when they are missing
//!   and otherwise serves the contact exactly as given (no other field is added);
//! - a delete empties the contact's slot (`get` then answers 404);
//! - the notification (`contact.updated` with the contact as list/get serve it, or
//!   `contact.deleted` with ids only) gets a fresh notification id and the next second of the
//!   shared logical clock, so `time` keeps strictly increasing across mutations and changes;
//! - with `deliver` (and `webhooks` configured) it is sent through the same delivery code as
//!   plans (signature, compression, timeouts, retries), and the call returns once the
//!   delivery has its final answer.
//!
//! A delete of an id that is not in the book changes nothing but still makes (and, when asked,
//! delivers) its `contact.deleted` notification: Nylas delivers at least once, so a receiver
//! must cope with a delete of a contact it never saw or already removed. The report says
//! `existed: false`.
//!
//! HTTP: `PUT /_sim/nylas/{grant_id}/contacts/{contact_id}` (body: the contact; the path id
//! wins over the body's) and `DELETE /_sim/nylas/{grant_id}/contacts/{contact_id}`, both with
//! `?deliver=true|false` (default `true`); ids in the path are percent-encoded.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mutations::MutationKind;
use crate::nylas::Grant;
use crate::webhooks::Notification;
use crate::webhooks::deliver::{DeliveryRecord, deliver_all};
use crate::webhooks::schedule::{Schedule, Send as ScheduledSend, SendKind};
use crate::zoho::accounts::parse_urlencoded;
use crate::{Sim, lock};

/// What an explicit change (a put or a delete) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutReport {
    pub grant_id: String,
    pub contact_id: String,
    /// `create` (a new id, appended to the book), `update` (replaced in place) or `delete`.
    pub kind: MutationKind,
    /// Whether the id was in the book before the change.
    pub existed: bool,
    /// The contact as list/get serve it after a put; `None` after a delete.
    pub contact: Option<Value>,
    pub notification_id: String,
    /// The notification's `time` (logical clock, strictly increasing).
    pub time: i64,
    /// Whether anything was sent (`deliver` asked for it and `webhooks` is configured).
    pub delivered: bool,
    /// The HTTP status of the last attempt (200 once acknowledged); `None` when nothing was
    /// sent or the last attempt got no answer (timeout, connection error).
    pub status: Option<u16>,
    /// `webhook_delivery_attempt` of the last attempt (0 when nothing was sent).
    pub attempts: u32,
    /// The last attempt's status as text, `timeout` or `error`; `None` when nothing was sent.
    pub outcome: Option<String>,
    /// Every attempt, in send order.
    pub log: Vec<DeliveryRecord>,
}

impl Sim {
    fn grant(&self, grant_id: &str) -> anyhow::Result<Arc<Grant>> {
        self.nylas
            .grants
            .get(grant_id)
            .cloned()
            .ok_or_else(|| anyhow!("grant `{grant_id}` is not configured"))
    }

    /// Inserts `contact` into the book of `grant_id` (appended if its `id` is new, replaced
    /// in place otherwise), filling `grant_id` and `object: "contact"` when missing; with
    /// `deliver`, sends one signed `contact.updated` and returns once it was answered.
    pub async fn put_contact(&self, grant_id: &str, contact: Value, deliver: bool) -> anyhow::Result<PutReport> {
        let grant = self.grant(grant_id)?;
        let Value::Object(mut map) = contact else {
            bail!("a contact must be a JSON object");
        };
        let id = match map.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => bail!("a contact needs a non-empty string `id`"),
        };
        map.entry("grant_id").or_insert_with(|| json!(grant_id));
        map.entry("object").or_insert_with(|| json!("contact"));
        let contact = Value::Object(map);
        let (existed, notification) = {
            let mut book = grant
                .book
                .write()
                .map_err(|_| anyhow!("the address book of `{grant_id}` is unavailable"))?;
            let existed = book.contains(&id);
            book.insert(contact.clone());
            // The second is taken under the book's lock: two changes of one book get their
            // times in the order they were applied.
            let time = self.webhooks.reserve_times(self.clock.unix_now().floor() as i64, 1);
            let n = Notification::updated(self.webhooks.notification_id(), time, grant_id, contact.clone());
            (existed, n)
        };
        let kind = if existed {
            MutationKind::Update
        } else {
            MutationKind::Create
        };
        self.deliver_change(&grant, kind, existed, Some(contact), notification, deliver)
            .await
    }

    /// Removes contact `contact_id` from the book of `grant_id`; with `deliver`, sends one
    /// signed `contact.deleted` and returns once it was answered. An id not in the book
    /// changes nothing, but its notification is still made (`existed: false`).
    pub async fn delete_contact(&self, grant_id: &str, contact_id: &str, deliver: bool) -> anyhow::Result<PutReport> {
        let grant = self.grant(grant_id)?;
        let (existed, notification) = {
            let mut book = grant
                .book
                .write()
                .map_err(|_| anyhow!("the address book of `{grant_id}` is unavailable"))?;
            let existed = book.remove(contact_id).is_some();
            let time = self.webhooks.reserve_times(self.clock.unix_now().floor() as i64, 1);
            let n = Notification::deleted(self.webhooks.notification_id(), time, grant_id, contact_id);
            (existed, n)
        };
        self.deliver_change(&grant, MutationKind::Delete, existed, None, notification, deliver)
            .await
    }

    async fn deliver_change(
        &self,
        grant: &Grant,
        kind: MutationKind,
        existed: bool,
        contact: Option<Value>,
        n: Notification,
        deliver: bool,
    ) -> anyhow::Result<PutReport> {
        if existed || kind != MutationKind::Delete {
            *lock(&grant.stats)
                .mutations
                .entry(kind.as_str().to_string())
                .or_default() += 1;
        }
        let log = match self.cfg.webhooks.as_ref().filter(|_| deliver) {
            None => Vec::new(),
            Some(cfg) => {
                let sched = Schedule {
                    sends: vec![ScheduledSend {
                        notification: 0,
                        kind: SendKind::Genuine,
                    }],
                    ..Schedule::default()
                };
                let client = self.webhooks.client()?;
                deliver_all(client, cfg, std::slice::from_ref(&n), &sched, 1, None)
                    .await
                    .with_context(|| format!("delivering notification `{}`", n.id))?
            }
        };
        let last = log.last();
        Ok(PutReport {
            grant_id: n.grant_id.clone(),
            contact_id: n.contact_id.clone(),
            kind,
            existed,
            contact,
            time: n.time,
            delivered: !log.is_empty(),
            status: last.and_then(|r| r.status),
            attempts: last.map_or(0, |r| r.attempt),
            outcome: last.map(|r| r.outcome.clone()),
            notification_id: n.id,
            log,
        })
    }
}

pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route(
        "/_sim/nylas/{grant_id}/contacts/{contact_id}",
        put(put_handler).delete(delete_handler),
    )
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `?deliver=true|false`, default `true`.
fn deliver_param(query: Option<&str>) -> Result<bool, (StatusCode, String)> {
    let value = parse_urlencoded(query.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "deliver")
        .map(|(_, v)| v);
    match value.as_deref() {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err((
            StatusCode::BAD_REQUEST,
            format!("deliver must be true or false, got `{other}`"),
        )),
    }
}

type ChangePath = Result<Path<(String, String)>, PathRejection>;

/// Checks the path, the grant and `deliver`.
fn change_target(
    sim: &Sim,
    path: ChangePath,
    query: Option<&str>,
) -> Result<(String, String, bool), (StatusCode, String)> {
    let Ok(Path((grant_id, contact_id))) = path else {
        return Err((StatusCode::BAD_REQUEST, "invalid path".into()));
    };
    if !sim.nylas.grants.contains_key(&grant_id) {
        return Err((StatusCode::NOT_FOUND, format!("grant `{grant_id}` not found")));
    }
    let deliver = deliver_param(query)?;
    Ok((grant_id, contact_id, deliver))
}

fn report_response(result: anyhow::Result<PutReport>) -> Response {
    match result {
        Ok(report) => Json(report).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// `PUT /_sim/nylas/{grant_id}/contacts/{contact_id}[?deliver=false]` with the contact.
async fn put_handler(
    State(sim): State<Arc<Sim>>,
    path: ChangePath,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (grant_id, contact_id, deliver) = match change_target(&sim, path, query.as_deref()) {
        Ok(t) => t,
        Err((status, message)) => return problem(status, message),
    };
    let mut contact = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return problem(StatusCode::BAD_REQUEST, "the contact must be a JSON object".into()),
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("the contact is not valid JSON: {e}")),
    };
    contact.insert("id".into(), json!(contact_id));
    report_response(sim.put_contact(&grant_id, Value::Object(contact), deliver).await)
}

/// `DELETE /_sim/nylas/{grant_id}/contacts/{contact_id}[?deliver=false]`
async fn delete_handler(State(sim): State<Arc<Sim>>, path: ChangePath, RawQuery(query): RawQuery) -> Response {
    let (grant_id, contact_id, deliver) = match change_target(&sim, path, query.as_deref()) {
        Ok(t) => t,
        Err((status, message)) => return problem(status, message),
    };
    report_response(sim.delete_contact(&grant_id, &contact_id, deliver).await)
}
