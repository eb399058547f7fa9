//! Mutable address books and the mutation driver: a seeded [`MutationPlan`] of creates,
//! updates, email changes and deletes is applied to a grant's book, in order, and each
//! mutation becomes one Nylas notification, then delivered as signed webhooks (see
//! [`crate::webhooks`]) with duplicates, reordering and forgeries as the plan asks.
//!
//! - `create`: a new contact with a new unique id, as messy as the generated ones but with a
//!   plausible email unique in the book (`contact.updated`: there is no `contact.created`);
//! - `update`: new names, company, title and/or phones for an existing contact; its emails
//!   stay (`contact.updated`);
//! - `email_change`: the first email of an existing contact is replaced by a new unique one
//!   (`contact.updated`);
//! - `delete`: an existing contact is removed (`contact.deleted`, ids only); it is not
//!   targeted again, and `get` answers 404.
//!
//! Targets: half the time one of the (up to 8) contacts the plan touched or created most
//! recently, otherwise any contact of the book, so one contact often changes several times in
//! a plan, and a created contact is often updated or deleted by the same plan. With
//! `distinct`, every mutation targets a contact the plan has not touched yet (a burst of
//! changes to distinct contacts); when none is left it creates one.
//!
//! Each mutation gets its own second on a logical clock (`time`): the first mutation of a call
//! gets the current simulated Unix time or the second after the last one handed out, each next
//! one a second more, so `time` strictly increases across all notifications of a simulator.
//! Every notification is built when its mutation is applied: a `contact.updated` carries the
//! contact exactly as list and get served it right after that mutation.
//!
//! All mutations of a plan are applied before the first delivery starts. A book changed while
//! a client pages through it stays consistent (see [`crate::nylas`]): deleted contacts drop
//! out of later pages and created ones appear on the last.
//!
//! `POST /_sim/nylas/{grant_id}/mutations` with a plan as JSON (every field optional) runs one
//! and answers the [`MutationReport`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, ensure};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::derive_seed;
use crate::generate::{created_contact, fresh_email, fresh_fields, fresh_id};
use crate::nylas::AddressBook;
use crate::webhooks::Notification;
use crate::webhooks::deliver::{DeliveryRecord, deliver_all};
use crate::webhooks::schedule::{SendKind, schedule};
use crate::{Sim, lock};

/// Most mutations one plan may ask for.
pub const MAX_COUNT: usize = 1_000_000;
/// Most deliveries one plan may keep in flight.
pub const MAX_CONCURRENCY: usize = 1024;
/// Recently touched contacts a mutation may target again.
const HOT_SET: usize = 8;
/// Share of mutations that target the hot set (when it is not empty).
const HOT_SHARE: f64 = 0.5;

/// What to change and how to deliver it. Every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MutationPlan {
    /// Mutations to apply (each gives one notification).
    pub count: usize,
    /// Seeds which mutations, their targets and values, and the delivery schedule.
    pub seed: u64,
    pub mix: Mix,
    /// Each mutation targets a contact the plan has not touched yet.
    pub distinct: bool,
    /// Share of notifications delivered twice (an identical second POST, attempt 1).
    pub duplicate_rate: f64,
    /// Share of notifications held back behind later ones.
    pub reorder_rate: f64,
    /// Share of notifications shadowed by an extra forged POST (bad or no signature).
    pub forged_rate: f64,
    /// POSTs in flight at once.
    pub concurrency: usize,
    /// POSTs started per second at most; `null`: as fast as `concurrency` allows.
    pub rate_per_sec: Option<f64>,
    /// `false`: change the book without sending anything (events lost to a failed endpoint,
    /// which only a reconciliation can catch up with).
    pub deliver: bool,
    /// Include every applied mutation and every POST in the report.
    pub log: bool,
}

impl Default for MutationPlan {
    fn default() -> Self {
        MutationPlan {
            count: 100,
            seed: 1,
            mix: Mix::default(),
            distinct: false,
            duplicate_rate: 0.1,
            reorder_rate: 0.2,
            forged_rate: 0.05,
            concurrency: 8,
            rate_per_sec: None,
            deliver: true,
            log: false,
        }
    }
}

/// Relative weights of the mutation kinds. A kind left out of a given `mix` weighs 0; without
/// `mix` the default is `{create 0.2, update 0.4, email_change 0.15, delete 0.25}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub create: f64,
    #[serde(default)]
    pub update: f64,
    #[serde(default)]
    pub email_change: f64,
    #[serde(default)]
    pub delete: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            create: 0.2,
            update: 0.4,
            email_change: 0.15,
            delete: 0.25,
        }
    }
}

impl MutationPlan {
    /// Checks ranges: rates within 0..=1, weights non-negative with a positive sum, at least
    /// one delivery in flight, a positive rate.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.count <= MAX_COUNT,
            "count must be at most {MAX_COUNT}, got {}",
            self.count
        );
        for (name, rate) in [
            ("duplicate_rate", self.duplicate_rate),
            ("reorder_rate", self.reorder_rate),
            ("forged_rate", self.forged_rate),
        ] {
            ensure!((0.0..=1.0).contains(&rate), "{name} must be within 0..=1, got {rate}");
        }
        let m = &self.mix;
        let weights = [m.create, m.update, m.email_change, m.delete];
        ensure!(
            weights.iter().all(|w| w.is_finite() && *w >= 0.0),
            "mix weights must be non-negative numbers"
        );
        ensure!(
            self.count == 0 || weights.iter().sum::<f64>() > 0.0,
            "mix weights must not all be 0"
        );
        ensure!(
            (1..=MAX_CONCURRENCY).contains(&self.concurrency),
            "concurrency must be within 1..={MAX_CONCURRENCY}, got {}",
            self.concurrency
        );
        if let Some(r) = self.rate_per_sec {
            ensure!(
                r.is_finite() && r > 0.0,
                "rate_per_sec must be a positive number, got {r}"
            );
        }
        Ok(())
    }
}

/// A kind of mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationKind {
    Create,
    Update,
    EmailChange,
    Delete,
}

impl MutationKind {
    pub const ALL: [MutationKind; 4] = [
        MutationKind::Create,
        MutationKind::Update,
        MutationKind::EmailChange,
        MutationKind::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MutationKind::Create => "create",
            MutationKind::Update => "update",
            MutationKind::EmailChange => "email_change",
            MutationKind::Delete => "delete",
        }
    }
}

/// One applied mutation (in the report's `applied` when the plan asks for a log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedMutation {
    pub kind: MutationKind,
    pub contact_id: String,
    pub notification_id: String,
    pub time: i64,
}

/// Latency of genuine deliveries answered 200: from sending to the answer, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    fn of(mut samples: Vec<f64>) -> LatencySummary {
        if samples.is_empty() {
            return LatencySummary::default();
        }
        samples.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        LatencySummary {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// What a plan did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MutationReport {
    pub grant_id: String,
    /// Mutations applied.
    pub mutations: u64,
    /// Mutations by kind (`create`, `update`, `email_change`, `delete`; all four present).
    pub by_kind: BTreeMap<String, u64>,
    /// Notifications built (one per mutation).
    pub notifications: u64,
    /// POSTs sent: genuine attempts (retries included), duplicates and forgeries.
    pub deliveries: u64,
    pub duplicates: u64,
    /// Notifications held back behind later ones.
    pub reordered: u64,
    pub forged: u64,
    /// Retry attempts sent (attempt ≥ 2).
    pub retried: u64,
    /// Answers of every POST by status (`"200"`, `"401"`, ...; `timeout`, `error` without one).
    pub by_status: BTreeMap<String, u64>,
    /// Notifications whose genuine delivery never got a 200, retries included.
    pub failed: u64,
    /// Notifications not sent at all (no `webhooks` configured, or `deliver: false`).
    pub undelivered: u64,
    /// `time` of the first and the last notification.
    pub first_time: Option<i64>,
    pub last_time: Option<i64>,
    pub latency_ms: LatencySummary,
    /// From the first send to the last answer.
    pub elapsed_ms: f64,
    /// Every mutation in order (only with `log: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied: Vec<AppliedMutation>,
    /// Every POST in send order (only with `log: true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<DeliveryRecord>,
}

/// Draws a mutation kind from the mix.
fn draw_kind(rng: &mut StdRng, mix: &Mix) -> MutationKind {
    let weights = [mix.create, mix.update, mix.email_change, mix.delete];
    let total: f64 = weights.iter().sum();
    let mut roll = rng.random::<f64>() * total;
    for (kind, w) in MutationKind::ALL.into_iter().zip(weights) {
        if roll < w {
            return kind;
        }
        roll -= w;
    }
    // Rounding left the roll at the very top: the last kind with weight.
    MutationKind::ALL
        .into_iter()
        .zip(weights)
        .rev()
        .find(|(_, w)| *w > 0.0)
        .map_or(MutationKind::Create, |(k, _)| k)
}

/// Any live contact of the book, uniformly (by slot, retrying deleted slots).
fn random_live(rng: &mut StdRng, book: &AddressBook) -> Option<String> {
    let n = book.slots();
    if book.is_empty() || n == 0 {
        return None;
    }
    for _ in 0..64 {
        if let Some(id) = book.id_at(rng.random_range(0..n)) {
            return Some(id.to_string());
        }
    }
    let start = rng.random_range(0..n);
    (start..n).chain(0..start).find_map(|s| book.id_at(s)).map(String::from)
}

/// The plan's state while it is applied.
struct Mutator<'a> {
    rng: StdRng,
    grant_id: &'a str,
    book: &'a mut AddressBook,
    /// Most recently touched contacts, oldest first.
    hot: Vec<String>,
    /// With `distinct`: every contact the plan touched.
    touched: Option<std::collections::HashSet<String>>,
}

impl Mutator<'_> {
    fn target(&mut self) -> Option<String> {
        if let Some(touched) = &self.touched {
            for _ in 0..64 {
                match random_live(&mut self.rng, self.book) {
                    Some(id) if !touched.contains(&id) => return Some(id),
                    Some(_) => continue,
                    None => return None,
                }
            }
            return (0..self.book.slots())
                .filter_map(|s| self.book.id_at(s))
                .find(|id| !touched.contains(*id))
                .map(String::from);
        }
        if !self.hot.is_empty() && self.rng.random_bool(HOT_SHARE) {
            let i = self.rng.random_range(0..self.hot.len());
            return Some(self.hot[i].clone());
        }
        random_live(&mut self.rng, self.book)
    }

    fn touch(&mut self, id: &str) {
        if let Some(touched) = &mut self.touched {
            touched.insert(id.to_string());
        }
        self.hot.retain(|h| h != id);
        self.hot.push(id.to_string());
        if self.hot.len() > HOT_SET {
            self.hot.remove(0);
        }
    }

    /// Applies one mutation; returns its kind, the contact id and the notification's object
    /// (`None` for a delete).
    fn apply(&mut self, kind: MutationKind) -> (MutationKind, String, Option<Value>) {
        let target = match kind {
            MutationKind::Create => None,
            _ => self.target(),
        };
        let Some(id) = target else {
            // Nothing left to change: create instead.
            return self.create();
        };
        match kind {
            MutationKind::Create => self.create(),
            MutationKind::Update => self.update(&id),
            MutationKind::EmailChange => self.email_change(&id),
            MutationKind::Delete => {
                self.book.remove(&id);
                self.hot.retain(|h| *h != id);
                (MutationKind::Delete, id, None)
            }
        }
    }

    fn create(&mut self) -> (MutationKind, String, Option<Value>) {
        let id = loop {
            let id = fresh_id(&mut self.rng);
            if !self.book.contains(&id) {
                break id;
            }
        };
        let serial = self.book.next_serial();
        let contact = created_contact(&mut self.rng, self.grant_id, id.clone(), serial);
        self.book.insert(contact.clone());
        self.touch(&id);
        (MutationKind::Create, id, Some(contact))
    }

    fn update(&mut self, id: &str) -> (MutationKind, String, Option<Value>) {
        let Some(Value::Object(old)) = self.book.get(id).cloned() else {
            return self.create();
        };
        const GROUPS: [&[&str]; 4] = [
            &["given_name", "surname", "display_name"],
            &["company_name"],
            &["job_title"],
            &["phone_numbers"],
        ];
        let mut contact = old.clone();
        // A few tries at an actual change: the value pools are small.
        for _ in 0..8 {
            let fresh = fresh_fields(&mut self.rng);
            let mut chosen: Vec<usize> = (0..GROUPS.len()).filter(|_| self.rng.random_bool(0.5)).collect();
            if chosen.is_empty() {
                chosen.push(self.rng.random_range(0..GROUPS.len()));
            }
            for g in chosen {
                for &field in GROUPS[g] {
                    if let Some(v) = fresh.get(field) {
                        contact.insert(field.to_string(), v.clone());
                    }
                }
            }
            if contact != old {
                break;
            }
        }
        let contact = Value::Object(contact);
        self.book.replace(contact.clone());
        self.touch(id);
        (MutationKind::Update, id.to_string(), Some(contact))
    }

    fn email_change(&mut self, id: &str) -> (MutationKind, String, Option<Value>) {
        let Some(Value::Object(mut contact)) = self.book.get(id).cloned() else {
            return self.create();
        };
        let serial = self.book.next_serial();
        let email = fresh_email(&mut self.rng, serial);
        match contact.get_mut("emails") {
            Some(Value::Array(list)) if list.first().is_some_and(Value::is_object) => {
                if let Some(Value::Object(first)) = list.first_mut() {
                    first.insert("email".into(), json!(email));
                }
            }
            Some(Value::Array(list)) if !list.is_empty() => list[0] = json!({"email": email, "type": "work"}),
            _ => {
                contact.insert("emails".into(), json!([{"email": email, "type": "work"}]));
            }
        }
        let contact = Value::Object(contact);
        self.book.replace(contact.clone());
        self.touch(id);
        (MutationKind::EmailChange, id.to_string(), Some(contact))
    }
}

impl Sim {
    /// Applies `plan` to the book of `grant_id`, then delivers its notifications to the
    /// configured webhook destination (if any and `plan.deliver`); returns when every
    /// delivery has finished, retries included.
    pub async fn mutate(&self, grant_id: &str, plan: MutationPlan) -> anyhow::Result<MutationReport> {
        plan.validate()?;
        let grant = self
            .nylas
            .grants
            .get(grant_id)
            .ok_or_else(|| anyhow!("grant `{grant_id}` is not configured"))?
            .clone();
        let first_time = self
            .webhooks
            .reserve_times(self.clock.unix_now().floor() as i64, plan.count);
        let mut notifications = Vec::with_capacity(plan.count);
        let mut applied = Vec::with_capacity(plan.count);
        {
            let mut book = grant
                .book
                .write()
                .map_err(|_| anyhow!("the address book of `{grant_id}` is unavailable"))?;
            let mut m = Mutator {
                rng: StdRng::seed_from_u64(derive_seed(plan.seed, &format!("mutations/{grant_id}"))),
                grant_id,
                book: &mut book,
                hot: Vec::new(),
                touched: plan.distinct.then(Default::default),
            };
            for k in 0..plan.count {
                let kind = draw_kind(&mut m.rng, &plan.mix);
                let (kind, contact_id, object) = m.apply(kind);
                let time = first_time + k as i64;
                let id = self.webhooks.notification_id();
                let n = match object {
                    Some(contact) => Notification::updated(id, time, grant_id, contact),
                    None => Notification::deleted(id, time, grant_id, &contact_id),
                };
                applied.push(AppliedMutation {
                    kind,
                    contact_id,
                    notification_id: n.id.clone(),
                    time,
                });
                notifications.push(n);
            }
        }
        let mut report = MutationReport {
            grant_id: grant_id.to_string(),
            mutations: applied.len() as u64,
            by_kind: MutationKind::ALL.iter().map(|k| (k.as_str().to_string(), 0)).collect(),
            notifications: notifications.len() as u64,
            first_time: notifications.first().map(|n| n.time),
            last_time: notifications.last().map(|n| n.time),
            ..MutationReport::default()
        };
        {
            let mut stats = lock(&grant.stats);
            for a in &applied {
                *report.by_kind.entry(a.kind.as_str().to_string()).or_default() += 1;
                *stats.mutations.entry(a.kind.as_str().to_string()).or_default() += 1;
            }
        }

        let destination = self.cfg.webhooks.as_ref().filter(|_| plan.deliver);
        let records = match destination {
            None => {
                report.undelivered = report.notifications;
                Vec::new()
            }
            Some(cfg) => {
                let mut rng = StdRng::seed_from_u64(derive_seed(plan.seed, &format!("deliveries/{grant_id}")));
                let sched = schedule(
                    &mut rng,
                    notifications.len(),
                    plan.duplicate_rate,
                    plan.reorder_rate,
                    plan.forged_rate,
                );
                report.duplicates = sched.duplicates as u64;
                report.reordered = sched.reordered as u64;
                report.forged = sched.forged as u64;
                let client = self.webhooks.client()?;
                deliver_all(client, cfg, &notifications, &sched, plan.concurrency, plan.rate_per_sec)
                    .await
                    .with_context(|| format!("delivering the notifications of `{grant_id}`"))?
            }
        };
        summarize(&mut report, &notifications, &records);
        if plan.log {
            report.applied = applied;
            report.log = records;
        }
        Ok(report)
    }
}

/// Fills the delivery counters of `report` from the POSTs' records.
fn summarize(report: &mut MutationReport, notifications: &[Notification], records: &[DeliveryRecord]) {
    let genuine = SendKind::Genuine.label();
    let mut acknowledged = std::collections::HashSet::new();
    let mut latencies = Vec::new();
    for r in records {
        report.deliveries += 1;
        *report.by_status.entry(r.outcome.clone()).or_default() += 1;
        if r.kind == genuine {
            if r.attempt > 1 {
                report.retried += 1;
            }
            if r.acknowledged() {
                acknowledged.insert(r.notification_id.as_str());
                if let Some(answered) = r.answered_ms {
                    latencies.push(answered - r.sent_ms);
                }
            }
        }
    }
    if !records.is_empty() {
        report.failed = notifications
            .iter()
            .filter(|n| !acknowledged.contains(n.id.as_str()))
            .count() as u64;
    }
    report.latency_ms = LatencySummary::of(latencies);
    let first = records.iter().map(|r| r.sent_ms).fold(f64::INFINITY, f64::min);
    let last = records
        .iter()
        .map(|r| r.answered_ms.unwrap_or(r.sent_ms))
        .fold(0.0, f64::max);
    report.elapsed_ms = if first.is_finite() {
        (last - first).max(0.0)
    } else {
        0.0
    };
}

pub fn routes() -> Router<Arc<Sim>> {
    Router::new().route("/_sim/nylas/{grant_id}/mutations", post(mutate))
}

fn problem(status: StatusCode, message: String) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// `POST /_sim/nylas/{grant_id}/mutations` with a [`MutationPlan`] (an empty body is the
/// default plan) → the [`MutationReport`].
async fn mutate(State(sim): State<Arc<Sim>>, path: Result<Path<String>, PathRejection>, body: Bytes) -> Response {
    let Ok(Path(grant_id)) = path else {
        return problem(StatusCode::NOT_FOUND, "grant not found".into());
    };
    if !sim.nylas.grants.contains_key(&grant_id) {
        return problem(StatusCode::NOT_FOUND, format!("grant `{grant_id}` not found"));
    }
    let plan = if body.iter().all(u8::is_ascii_whitespace) {
        MutationPlan::default()
    } else {
        match serde_json::from_slice::<MutationPlan>(&body) {
            Ok(p) => p,
            Err(e) => return problem(StatusCode::BAD_REQUEST, format!("invalid mutation plan: {e}")),
        }
    };
    if let Err(e) = plan.validate() {
        return problem(StatusCode::BAD_REQUEST, format!("invalid mutation plan: {e:#}"));
    }
    match sim.mutate(&grant_id, plan).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}
