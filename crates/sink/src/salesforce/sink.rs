//! Salesforce's write strategies (see the folder's docs): upserts by external id, routed to
//! Contact or Lead and sticky to what crmsync wrote, converted Leads followed to their Contact,
//! and deletes by id or by external id.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::sync::Arc;

use crmsync_domain::CrmRecord;
use serde_json::Value;
use tower_service::Service;

use super::accounts::{ACCOUNTS_SOQL, AccountDomains, MAX_PAGES, SfAccounts};
use super::mapping::{contact_json, lead_json};
use super::read::{self, Cursor};
use super::request::{SfCall, SfObject, SfOp, is_record_id, soql_literal};
use super::service::SfReply;
use super::token::SfOrg;
use super::{MAX_BATCH, PROFILE, dto, retry};
use crate::{BoxFuture, CrmPage, CrmSink, Outcome, Priority, SinkError, SinkProfile, Write, Written};
use crmsync_tenants::Routing;

/// External ids per lookup query (they go into the URL).
const LOOKUP_IDS: usize = 100;
/// Most pages of a lookup query (100 ids match at most 100 rows per object: one page).
const LOOKUP_PAGES: usize = 10;
/// Salesforce's per-record answer for an upsert of a Lead a user converted.
const CONVERTED: &str = "CANNOT_UPDATE_CONVERTED_LEAD";
/// Per-record delete answers that mean the record is already gone.
const GONE: &[&str] = &["ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"];

/// A tenant's Salesforce org as a sink, over a service that sends its calls (normally
/// [`super::SalesforceHttp`] inside the fleet's limit layer). Every call of a write, the
/// Account and lookup queries included, goes through that service, so the limiter counts them
/// all, and [`Written`] reports them all (1 unit each).
#[derive(Clone)]
pub struct SalesforceSink<S> {
    svc: S,
    org: Arc<SfOrg>,
    accounts: SfAccounts,
}

/// One upsert to send: where it comes from in the batch and what it writes.
struct Pending<'a> {
    index: usize,
    contact_id: &'a str,
    record: &'a CrmRecord,
    object: SfObject,
    account: Option<String>,
}

impl<'a> Pending<'a> {
    fn json(&self, ext_field: &str) -> Value {
        match self.object {
            SfObject::Contact => contact_json(self.record, ext_field, self.contact_id, self.account.as_deref()),
            SfObject::Lead => lead_json(self.record, ext_field, self.contact_id),
        }
    }
}

/// Calls made for one batch.
#[derive(Default)]
struct Calls(u64);

impl<S> SalesforceSink<S>
where
    S: Service<SfCall, Response = SfReply, Error = SinkError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    /// `svc`: the org's calls (the limited [`super::SalesforceHttp`] of `org`); `org`: the
    /// tenant's org (routing, external-id field, keys); `accounts`: the process's Account cache.
    pub fn new(svc: S, org: &SfOrg, accounts: SfAccounts) -> Self {
        Self {
            svc,
            org: Arc::new(org.clone()),
            accounts,
        }
    }

    async fn call(&self, op: SfOp, priority: Priority, calls: &mut Calls) -> Result<SfReply, SinkError> {
        let mut svc = self.svc.clone();
        poll_fn(|cx| svc.poll_ready(cx)).await?;
        calls.0 += 1;
        svc.call(SfCall { op, priority }).await
    }

    /// Every row of a query, following `nextRecordsUrl`, at most `max_pages` pages; `take`
    /// sees each page and says whether to read on.
    async fn query(
        &self,
        soql: String,
        p: Priority,
        calls: &mut Calls,
        max_pages: usize,
        mut take: impl FnMut(&[Value]) -> bool,
    ) -> Result<bool, SinkError> {
        let mut op = SfOp::Query { soql };
        for _ in 0..max_pages {
            let reply = self.call(op, p, calls).await?;
            let page = dto::parse_page(&reply.body)?;
            if !take(&page.records) {
                return Ok(false);
            }
            match page.next {
                Some(url) => op = SfOp::QueryMore { url },
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    async fn read_accounts(&self, p: Priority, calls: &mut Calls) -> Result<AccountDomains, SinkError> {
        let mut d = AccountDomains::default();
        let complete = self
            .query(ACCOUNTS_SOQL.into(), p, calls, MAX_PAGES, |rows| {
                for r in rows {
                    if let (Some(id), Some(website)) = (r["Id"].as_str(), r["Website"].as_str()) {
                        d.add(id, website);
                    }
                }
                !d.is_full()
            })
            .await?;
        d.truncated |= !complete;
        Ok(d)
    }

    async fn write_batch(&self, batch: &[Write], p: Priority) -> Result<Written, SinkError> {
        let mut calls = Calls::default();
        let mut out: Vec<Option<Outcome>> = vec![None; batch.len()];
        self.upserts(batch, p, &mut calls, &mut out).await?;
        self.deletes(batch, p, &mut calls, &mut out).await?;
        let outcomes = out
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.ok_or_else(|| retry::decode(format!("no result for write {i} of the batch"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Written {
            outcomes,
            calls: calls.0,
            cost: calls.0,
        })
    }

    /// Upserts and moves: routed, grouped by object, ≤ 200 per call, each external id once per
    /// call (a contact twice in a batch is written twice, in order).
    async fn upserts(
        &self,
        batch: &[Write],
        p: Priority,
        calls: &mut Calls,
        out: &mut [Option<Outcome>],
    ) -> Result<(), SinkError> {
        let writes: Vec<(usize, &str, &CrmRecord, Option<SfObject>)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Write::Upsert {
                    contact_id,
                    record,
                    rid,
                }
                | Write::Move {
                    contact_id,
                    record,
                    rid,
                } => Some((i, contact_id.as_str(), record, rid.as_deref().and_then(SfObject::of_id))),
                Write::Delete { .. } => None,
            })
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        // Accounts are needed only to route a record crmsync has not written yet.
        let needs_accounts = self.org.routing != Routing::Lead && writes.iter().any(|w| w.3.is_none());
        let domains = if needs_accounts {
            let mut read_calls = Calls::default();
            let d = self
                .accounts
                .domains(&self.org, self.read_accounts(p, &mut read_calls))
                .await?;
            calls.0 += read_calls.0;
            Some(d)
        } else {
            None
        };
        // Rounds: the n-th write of an external id goes in round n.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut rounds: Vec<Vec<Pending<'_>>> = Vec::new();
        for (index, contact_id, record, sticky) in writes {
            let (object, account) = match sticky {
                Some(object) => (object, None),
                None => {
                    let account = domains
                        .as_ref()
                        .and_then(|d| d.account_for(&record.email))
                        .map(str::to_owned);
                    match self.org.routing {
                        Routing::Lead => (SfObject::Lead, None),
                        Routing::Contact => (SfObject::Contact, account),
                        Routing::ContactOrLead if account.is_some() => (SfObject::Contact, account),
                        Routing::ContactOrLead => (SfObject::Lead, None),
                    }
                }
            };
            let n = seen.entry(contact_id).or_default();
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            rounds[*n].push(Pending {
                index,
                contact_id,
                record,
                object,
                account,
            });
            *n += 1;
        }
        for round in rounds {
            let mut by_object: BTreeMap<SfObject, Vec<Pending<'_>>> = BTreeMap::new();
            for w in round {
                by_object.entry(w.object).or_default().push(w);
            }
            let mut converted: Vec<Pending<'_>> = Vec::new();
            for (object, items) in by_object {
                for chunk in items.chunks(MAX_BATCH) {
                    for (w, r) in chunk.iter().zip(self.upsert(object, chunk, p, calls).await?) {
                        match r {
                            Err(e) if object == SfObject::Lead && e.code == CONVERTED => converted.push(Pending {
                                index: w.index,
                                contact_id: w.contact_id,
                                record: w.record,
                                object: SfObject::Contact,
                                account: None,
                            }),
                            r => out[w.index] = Some(outcome(r)),
                        }
                    }
                }
            }
            // Leads a user converted: their Contact holds the external id; it is updated (its
            // Account left as the conversion set it), and no new Lead is made.
            for chunk in converted.chunks(MAX_BATCH) {
                for (w, r) in chunk.iter().zip(self.upsert(SfObject::Contact, chunk, p, calls).await?) {
                    out[w.index] = Some(outcome(r));
                }
            }
        }
        Ok(())
    }

    async fn upsert(
        &self,
        object: SfObject,
        chunk: &[Pending<'_>],
        p: Priority,
        calls: &mut Calls,
    ) -> Result<Vec<dto::Upserted>, SinkError> {
        let records = chunk.iter().map(|w| w.json(&self.org.ext_id_field)).collect();
        let reply = self.call(SfOp::Upsert { object, records }, p, calls).await?;
        dto::parse_upsert(&reply.body, chunk.len())
    }

    /// Deletes: a known Contact by id; anything else found by external id first (a Lead may
    /// have been converted: its Contact goes, the converted Lead stays as history).
    async fn deletes(
        &self,
        batch: &[Write],
        p: Priority,
        calls: &mut Calls,
        out: &mut [Option<Outcome>],
    ) -> Result<(), SinkError> {
        let mut targets: Vec<(usize, String)> = Vec::new();
        let mut lookups: Vec<(usize, &str)> = Vec::new();
        for (i, w) in batch.iter().enumerate() {
            if let Write::Delete { contact_id, rid } = w {
                match rid.as_deref() {
                    Some(id) if SfObject::of_id(id) == Some(SfObject::Contact) => targets.push((i, id.to_owned())),
                    _ => lookups.push((i, contact_id)),
                }
            }
        }
        if targets.is_empty() && lookups.is_empty() {
            return Ok(());
        }
        let found = self.find(&lookups, p, calls).await?;
        for (i, contact_id) in &lookups {
            for id in found.get(*contact_id).into_iter().flatten() {
                targets.push((*i, id.clone()));
            }
        }
        let mut ids: Vec<&str> = targets.iter().map(|(_, id)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut results: HashMap<&str, Option<dto::ItemError>> = HashMap::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|s| (*s).to_owned()).collect();
            let reply = self.call(SfOp::Delete { ids }, p, calls).await?;
            for (id, r) in chunk.iter().zip(dto::parse_delete(&reply.body, chunk.len())?) {
                results.insert(id, r.err().filter(|e| !GONE.contains(&e.code.as_str())));
            }
        }
        for (i, w) in batch.iter().enumerate() {
            if matches!(w, Write::Delete { .. }) {
                // Nothing found, or everything gone: deleted; else the first refusal.
                let refused = targets
                    .iter()
                    .filter(|(t, _)| *t == i)
                    .find_map(|(_, id)| results.get(id.as_str()).cloned().flatten());
                out[i] = Some(refused.map_or(Outcome::Deleted, dto::ItemError::into_outcome));
            }
        }
        Ok(())
    }

    /// The Contacts and unconverted Leads holding these external ids: external id → ids.
    async fn find(
        &self,
        lookups: &[(usize, &str)],
        p: Priority,
        calls: &mut Calls,
    ) -> Result<HashMap<String, Vec<String>>, SinkError> {
        let ext = &self.org.ext_id_field;
        let mut wanted: Vec<&str> = lookups.iter().map(|(_, c)| *c).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in wanted.chunks(LOOKUP_IDS) {
            let list = chunk.iter().map(|c| soql_literal(c)).collect::<Vec<_>>().join(", ");
            for soql in [
                format!("SELECT Id, {ext} FROM Contact WHERE {ext} IN ({list})"),
                format!("SELECT Id, {ext} FROM Lead WHERE {ext} IN ({list}) AND IsConverted = false"),
            ] {
                let complete = self
                    .query(soql, p, calls, LOOKUP_PAGES, |rows| {
                        for r in rows {
                            // SOQL compares text ignoring case; external ids are exact.
                            if let (Some(id), Some(cid)) = (r["Id"].as_str(), r[ext.as_str()].as_str())
                                && is_record_id(id)
                                && chunk.contains(&cid)
                            {
                                found.entry(cid.to_owned()).or_default().push(id.to_owned());
                            }
                        }
                        true
                    })
                    .await?;
                if !complete {
                    return Err(retry::decode(
                        "a lookup by external id answered more pages than it has ids",
                    ));
                }
            }
        }
        Ok(found)
    }

    /// One page of a read (see `super::read`): the page the cursor names, and where the next
    /// one is.
    async fn read_page(&self, cursor: Option<&str>, p: Priority) -> Result<CrmPage, SinkError> {
        let ext = &self.org.ext_id_field;
        let (object, op) = match Cursor::decode(cursor)? {
            Cursor::Start(object) => (
                object,
                SfOp::Query {
                    soql: read::soql(object, ext),
                },
            ),
            Cursor::More(object, url) => (object, SfOp::QueryMore { url }),
        };
        let mut calls = Calls::default();
        let reply = self.call(op, p, &mut calls).await?;
        let page = dto::parse_page(&reply.body)?;
        if let Some(url) = &page.next
            && !super::request::is_next_records_url(url)
        {
            return Err(retry::decode(format!(
                "nextRecordsUrl `{}` is not a query path",
                crate::clean(url, 120)
            )));
        }
        Ok(CrmPage {
            records: read::sides(&page.records, object, ext)?,
            next: Cursor::after(object, page.next).map(|c| c.encode()),
            calls: calls.0,
            cost: calls.0,
        })
    }
}

fn outcome(r: dto::Upserted) -> Outcome {
    match r {
        Ok((rid, inserted)) => Outcome::Written { rid, inserted },
        Err(e) => e.into_outcome(),
    }
}

impl<S> CrmSink for SalesforceSink<S>
where
    S: Service<SfCall, Response = SfReply, Error = SinkError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    fn profile(&self) -> &'static SinkProfile {
        &PROFILE
    }

    fn write<'a>(&'a self, batch: &'a [Write], priority: Priority) -> BoxFuture<'a, Result<Written, SinkError>> {
        Box::pin(self.write_batch(batch, priority))
    }

    fn read<'a>(&'a self, cursor: Option<&'a str>, priority: Priority) -> BoxFuture<'a, Result<CrmPage, SinkError>> {
        Box::pin(self.read_page(cursor, priority))
    }
}
