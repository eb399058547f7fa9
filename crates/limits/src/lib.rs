//! Per-destination limits on CRM calls, for the whole fleet at once, applied as a tower layer
//! ([`LimitLayer`]) around every sink call.
//!
//! Before every CRM call a worker holds, in this order (one script, `acquire.lua`, when
//! nothing waits):
//! 1. **a credit reservation** in the destination's rolling-window ledger in Redis (per-bucket
//!    counts summed over the window, atomic). The cost is known before the call (the sink's
//!    cost model). If the reservation would pass `budget_share × daily_credits`, the call is
//!    not made: the caller is told the moment enough credits leave the window, and the tenant
//!    shows as paused until then. A reservation whose request was never sent is given back.
//! 2. **concurrency leases** within the destination's limit, plus one of at most the class's
//!    cap for a call of a capped class (Zoho's upserts of more than 10 records); leases expire,
//!    so a killed worker frees its leases. None free: the reservation stays and the leases are
//!    retried alone (`lease.lua`);
//! 3. **the fleet-wide rate** (GCRA in Redis): the next slot, and the wait for it;
//! 4. **governor**: a per-process limiter per destination smooths local bursts.
//!
//! After the call, [`Limiter::finish`] records the outcome in one script (`finish.lua`): the
//! org's usage the CRM reports reconciles the ledger (so other integrations' usage counts); a
//! 429 sets a cooldown shared
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
pub use limiter::{
    Ask, Budget, BudgetKind, CallOutcome, DAY, Ledger, LimitSettings, Limiter, Pause, Permit, Priority, Wait, Waited,
};
