//! Zoho CRM behind the seam. One file per concern:
//! - [`mapping`]: field limits and the record's JSON;
//! - [`request`]: the calls ([`ZohoCall`]) and what each costs (1 credit per 10 records
//!   written, 1 per delete), known before it is sent;
//! - [`service`]: [`ZohoHttp`], the tower service that sends a call with the tenant's token;
//! - `retry`: every failure classified once into what the caller does next;
//! - [`token`]: the fleet-wide token cache ([`TokenBroker`]) and the grant-code exchange;
//! - `dto`: Zoho's answers, read by hand;
//! - this file: Zoho's strategies — records are matched on Email (upsert with
//!   `duplicate_check_fields: ["Email"]`), a contact whose email changed has its record
//!   updated by id so it follows the new email, and a record crmsync knows no id for is
//!   created (a move) or left alone (a delete: crmsync never wrote it).
//!
//! **Reads** (for reconcile, [`CrmSink::read`]): Get Records of Contacts with the six fields
//! crmsync writes, 200 a page in ascending id order, 1 credit a page (a 204 too); the cursor
//! is Zoho's `next_page_token` as it is (the only way past 2,000 records, up to 100,000).
//! Records without an Email are not crmsync's and are left out. A token Zoho refuses
//! (expired after 24 h, or bound to other parameters) is `PAGE_TOKEN_EXPIRED`.

mod dto;
pub mod mapping;
pub mod request;
mod retry;
pub mod service;
pub mod token;

use std::future::poll_fn;

use tower_service::Service;

pub use mapping::{LIMITS, record_json};
pub use request::{LIST_FIELDS, LIST_PAGE, MAX_BATCH, ZohoCall, ZohoOp, write_cost};
pub use retry::{CODES, ZohoError};
pub use service::{ZohoHttp, ZohoReply, http_client};
pub use token::{AccessToken, TokenBroker, ZohoOrg, exchange_code};

use crate::{
    BoxFuture, CrmKind, CrmPage, CrmRecord, CrmSink, MatchKey, Outcome, Priority, SinkError, SinkProfile, Write,
    Written,
};

/// Zoho's profile: matched on Email, 100 records per call, credits; every field comparable.
pub const PROFILE: SinkProfile = SinkProfile {
    kind: CrmKind::Zoho,
    match_key: MatchKey::Email,
    max_batch: MAX_BATCH,
    max_take: MAX_BATCH,
    field_limits: LIMITS,
    unit: "credits",
    comparable: keep_all,
};

/// Zoho keeps all six fields as crmsync writes them.
fn keep_all(r: &CrmRecord) -> CrmRecord {
    r.clone()
}

/// The largest answer read from Zoho's API: a 100-record answer is about 30 KB.
pub(crate) const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The largest answer read from Zoho's token endpoint.
pub(crate) const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// A tenant's Zoho org as a sink, over a service that sends its calls (normally
/// [`ZohoHttp`] inside the fleet's limit layer).
#[derive(Clone)]
pub struct ZohoSink<S> {
    svc: S,
}

impl<S> ZohoSink<S>
where
    S: Service<ZohoCall, Response = ZohoReply, Error = SinkError> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    pub fn new(svc: S) -> Self {
        Self { svc }
    }

    async fn call(&self, op: ZohoOp, priority: Priority) -> Result<ZohoReply, SinkError> {
        let mut svc = self.svc.clone();
        poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(ZohoCall { op, priority }).await
    }

    async fn write_batch(&self, batch: &[Write], p: Priority) -> Result<Written, SinkError> {
        let mut out: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut w = Written::default();
        // Upserts, and moves of records crmsync knows no id for: created (or found) by email.
        let by_email: Vec<usize> = (0..batch.len())
            .filter(|i| matches!(&batch[*i], Write::Upsert { .. } | Write::Move { rid: None, .. }))
            .collect();
        // Moves of known records: updated by id, new email included.
        let by_id: Vec<usize> = (0..batch.len())
            .filter(|i| matches!(&batch[*i], Write::Move { rid: Some(_), .. }))
            .collect();
        let deletes: Vec<usize> = (0..batch.len())
            .filter(|i| matches!(&batch[*i], Write::Delete { .. }))
            .collect();
        for chunk in by_email.chunks(MAX_BATCH) {
            let records: Vec<_> = chunk
                .iter()
                .filter_map(|i| match &batch[*i] {
                    Write::Upsert { record, .. } | Write::Move { record, .. } => Some(record.clone()),
                    Write::Delete { .. } => None,
                })
                .collect();
            let n = records.len();
            let reply = self.call(ZohoOp::Upsert(records), p).await?;
            w.calls += 1;
            w.cost += write_cost(n);
            for (i, o) in chunk.iter().zip(dto::parse_upsert(reply.status, &reply.body, n)?) {
                out[*i] = Some(o);
            }
        }
        for chunk in by_id.chunks(MAX_BATCH) {
            let pairs: Vec<_> = chunk
                .iter()
                .filter_map(|i| match &batch[*i] {
                    Write::Move {
                        record, rid: Some(rid), ..
                    } => Some((rid.clone(), record.clone())),
                    _ => None,
                })
                .collect();
            let n = pairs.len();
            let reply = self.call(ZohoOp::Update(pairs), p).await?;
            w.calls += 1;
            w.cost += write_cost(n);
            for (i, o) in chunk.iter().zip(dto::parse_upsert(reply.status, &reply.body, n)?) {
                out[*i] = Some(o);
            }
        }
        let known: Vec<(usize, String)> = deletes
            .iter()
            .filter_map(|i| match &batch[*i] {
                Write::Delete { rid: Some(rid), .. } => Some((*i, rid.clone())),
                _ => None,
            })
            .collect();
        for chunk in known.chunks(MAX_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            let reply = self.call(ZohoOp::Delete(ids.clone()), p).await?;
            w.calls += 1;
            w.cost += 1;
            for r in dto::parse_delete(reply.status, &reply.body, &ids)? {
                let (id, outcome) = match r {
                    dto::DeleteResult::Deleted { id } => (id, Outcome::Deleted),
                    // Already gone (deleted in the CRM by hand, or by an earlier attempt).
                    dto::DeleteResult::Rejected { id, code, .. } if code == "INVALID_DATA" => (id, Outcome::Deleted),
                    dto::DeleteResult::Rejected { id, code, message } => (
                        id,
                        Outcome::Rejected {
                            code,
                            field: None,
                            message,
                        },
                    ),
                };
                for (i, rid) in chunk {
                    if *rid == id {
                        out[*i] = Some(outcome.clone());
                    }
                }
            }
        }
        w.outcomes = out
            .into_iter()
            .map(|o| {
                // A delete of a record crmsync knows nothing of (it never wrote one there): done.
                o.unwrap_or(Outcome::Deleted)
            })
            .collect();
        Ok(w)
    }

    async fn read_page(&self, cursor: Option<&str>, p: Priority) -> Result<CrmPage, SinkError> {
        let page_token = match cursor {
            None => None,
            Some(c) if dto::is_page_token(c) => Some(c.to_owned()),
            Some(c) => return Err(crate::bad_cursor(c)),
        };
        let reply = self.call(ZohoOp::List { page_token }, p).await?;
        let (records, next) = dto::parse_list(reply.status, &reply.body)?;
        Ok(CrmPage {
            records,
            next,
            calls: 1,
            cost: 1,
        })
    }
}

impl<S> CrmSink for ZohoSink<S>
where
    S: Service<ZohoCall, Response = ZohoReply, Error = SinkError> + Clone + Send + Sync + 'static,
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
