//! Per-destination limits on CRM calls, for the whole fleet at once, applied as a tower layer
//! ([`LimitLayer`]) around every sink call.
//!
//! Before every CRM call a worker holds, in this order:
//! 1. **a credit reservation** in the tenant's rolling-window ledger in Redis (`reserve.lua`,
//!    per-bucket counts summed over the window, atomic). The cost is known before the call
//!    (⌈records/10⌉ for an upsert, 1 otherwise). If the reservation would pass
//!    `budget_share × daily_credits`, the call is not made: the caller is told the moment
//!    enough credits leave the window, and the tenant shows as paused until then. A
//!    reservation whose request was never sent is given back.
//! 2. **the fleet-wide rate** (GCRA in Redis, `gcra.lua`);
//! 3. **a concurrency lease** within the tenant's limit, plus one of at most 10 for upserts
//!    of more than 10 records (Zoho's sub-concurrency); leases expire, so a killed worker
//!    frees its leases;
//! 4. **governor**: a per-process limiter per tenant smooths local bursts.
//!
//! After the call, [`Limiter::finish`] records the outcome: `X-API-CREDITS-REMAINING`
//! reconciles the ledger (so other integrations' usage counts); a 429 sets a cooldown shared
//! by every worker and halves the tenant's effective rate and concurrency, successes raise
//! them again (AIMD); 5xx and timeouts draw on a retry budget. Each 429 is also counted per
//! minute (`429s:<epoch minute>`, kept 25 hours) for the dashboard.
//!
//! Near the cap (less than 10% of the allowed credits left), backfill calls must leave that
//! headroom to change-feed calls ([`Priority`]).

//!
//! Every key is the destination's ([`crmsync_tenants::DestKeys`]): the ledger describes the
//! org's spend, so a re-pointed tenant starts a new one; every script writing them checks the
//! tenant's live destination first.

mod layer;
mod limiter;

pub use layer::{LimitLayer, LimitService, wait_error};
pub use limiter::{Budget, CallOutcome, DAY, Ledger, LimitSettings, Limiter, Pause, Permit, Priority, Wait, Waited};
