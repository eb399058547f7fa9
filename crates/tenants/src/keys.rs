//! Every Redis key of a tenant, named in one place (ARCHITECTURE.md, "Redis key layout").
//!
//! All carry the tenant's hash tag `T` = `{<namespace>:t:<id>}`, so a tenant's keys share one
//! Cluster slot and every script touching them runs on one node. Keys that describe the
//! remote CRM org — what was written there, under which record id, which contact owns an
//! email, the credit ledger, cached tokens — live under the tenant's destination,
//! `D` = `T:d:<dest>` ([`DestKeys`]): a re-pointed tenant gets a new destination and never
//! reads the old one's state, and removing a tenant deletes everything under `T`.
//!
//! **Invariant:** a script that writes under `T` first checks that `T:live` still names the
//! destination the caller loaded (see [`crate::TenantStore::live_key`]), so nothing is
//! written for a removed tenant or a destination it left.

use crmsync_redis::tenant_tag;

/// Tenant-level keys: settings, runs, the operator's pause, change-feed counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeys {
    id: String,
    tag: String,
}

impl TenantKeys {
    pub fn new(namespace: &str, tenant: &str) -> Self {
        Self {
            id: tenant.to_owned(),
            tag: tenant_tag(namespace, tenant),
        }
    }

    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hash tag, `{<namespace>:t:<id>}`: every key of the tenant starts with it.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// String: the tenant (JSON; secrets sealed).
    pub fn tenant(&self) -> String {
        format!("{}:tenant", self.tag)
    }

    /// String: the live destination id.
    pub fn live(&self) -> String {
        format!("{}:live", self.tag)
    }

    /// The keys of one of the tenant's destinations.
    pub fn dest(&self, dest: &str) -> DestKeys {
        DestKeys {
            prefix: format!("{}:d:{dest}", self.tag),
            tenant: self.clone(),
            dest: dest.to_owned(),
        }
    }

    /// Hash: one backfill run's progress.
    pub fn run(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}", self.tag)
    }

    /// Prefix of run keys (`<prefix><run id>`), for scripts that reach several runs.
    pub fn run_prefix(&self) -> String {
        format!("{}:run:", self.tag)
    }

    /// Hash: pages of a run already counted (page -> time).
    pub fn run_pages(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:pages", self.tag)
    }

    /// Set: hashes of the distinct emails a run mapped (deleted when the run completes).
    pub fn run_emails(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:emails", self.tag)
    }

    /// Hash: a reconcile run's copy of the CRM: match-key value -> `<record id> <hash of what
    /// the CRM holds>`; entries leave as book contacts claim them (deleted when the run's sweep
    /// ends, or after a day).
    pub fn run_crm(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:crm", self.tag)
    }

    /// Set: the match-key values of CRM records some contact of the book maps to (deleted with
    /// `run_crm`).
    pub fn run_claimed(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:claimed", self.tag)
    }

    /// Set: the contact ids a reconcile run read from the book (deleted with `run_crm`).
    pub fn run_seen(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:seen", self.tag)
    }

    /// Hash: a reconcile run's examples by kind of drift (kind -> JSON list of at most 5).
    pub fn run_examples(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:examples", self.tag)
    }

    /// String: the lease of the fleet's reconcile scheduler on this tenant (a minute).
    pub fn reconcile_lease(&self) -> String {
        format!("{}:reconcile:lease", self.tag)
    }

    /// String: how many of a run's records wait in the write buffer (or a flush).
    pub fn run_buffered(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:buffered", self.tag)
    }

    /// Zset: the tenant's runs by start time.
    pub fn runs(&self) -> String {
        format!("{}:runs", self.tag)
    }

    /// String: the id of the run in progress (with a TTL refreshed by progress).
    pub fn active_run(&self) -> String {
        format!("{}:active_run", self.tag)
    }

    /// Hash: an operator's pause (`reason`, `since`).
    pub fn pause(&self) -> String {
        format!("{}:pause", self.tag)
    }

    /// Hash: the change feed's counters: `changes` (received), `refreshed` (re-read from
    /// Nylas), `pushed` (buffer entries made), `unchanged`, `stale`, `shared` (from pushes);
    /// `inserted`, `updated`, `deleted`, `failed:<code>`, `calls`, `credits` (from flushes).
    /// They add up: `changes + refreshed = stale + shared + unchanged + queued + noop` (each
    /// change once: `queued` made an entry, `noop` had nothing to write), and `pushed =
    /// inserted + updated + deleted + failed + coalesced + waiting` (`coalesced`: an entry
    /// replaced or cancelled by a newer change before it was written).
    pub fn feed_stats(&self) -> String {
        format!("{}:feed:stats", self.tag)
    }

    /// Zset: webhook notification ids already recorded -> when they may be forgotten (ms).
    pub fn seen(&self) -> String {
        format!("{}:seen", self.tag)
    }
}

/// The keys of one destination of a tenant: the sync state of one remote org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestKeys {
    prefix: String,
    tenant: TenantKeys,
    dest: String,
}

impl DestKeys {
    /// `{<namespace>:t:<id>}:d:<dest>`: every key of the destination starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The destination id.
    pub fn dest(&self) -> &str {
        &self.dest
    }

    /// The tenant's live-destination key, which every state-writing script checks.
    pub fn live(&self) -> String {
        self.tenant.live()
    }

    /// The tenant's own keys.
    pub fn tenant(&self) -> &TenantKeys {
        &self.tenant
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Prefix of the contact-state buckets (`<prefix><n>`, hashes: contact id -> the latest
    /// change applied).
    pub fn contacts_prefix(&self) -> String {
        self.key("c:")
    }

    /// Prefix of the record-state buckets (`<prefix><n>`, hashes: record key -> owner, hash of
    /// what was written, record id).
    pub fn records_prefix(&self) -> String {
        self.key("r:")
    }

    /// Prefix of the member sets of shared emails (`<prefix><record key>`).
    pub fn members_prefix(&self) -> String {
        self.key("m:")
    }

    /// Zset: deleted contact ids -> deletion time (kept past Nylas's 72-hour retry horizon).
    pub fn tombstones(&self) -> String {
        self.key("t")
    }

    /// Set: contact ids to re-read from Nylas.
    pub fn refresh(&self) -> String {
        self.key("refresh")
    }

    /// Hash: the write buffer, `c:<contact id>` or `x:<record key>` -> entry.
    pub fn queue(&self) -> String {
        self.key("q")
    }

    /// List: buffered keys of the change feed, in flush order (they go first).
    pub fn queue_feed(&self) -> String {
        self.key("q:feed")
    }

    /// List: buffered keys of backfills, in flush order.
    pub fn queue_backfill(&self) -> String {
        self.key("q:backfill")
    }

    /// String: change-feed entries waiting (absent when none). The limiter reads it: while
    /// change-feed work waits, backfill leaves it the last part of the budget.
    pub fn feed_waiting(&self) -> String {
        self.key("feed")
    }

    /// Set: the slots of flushes scheduled (by a push, or once nothing more is coming) and not
    /// started yet; what waits is covered by them.
    pub fn scheduled(&self) -> String {
        self.key("sched")
    }

    /// Set: slots of flushes that started before they were counted in [`Self::scheduled`]
    /// (the count comes after the enqueue): not to be counted then.
    pub fn started_early(&self) -> String {
        self.key("sched:early")
    }

    /// Hash: what is being written -> flush id: buffer keys, and `@<record key>` for each
    /// record a flush is writing.
    pub fn in_flight(&self) -> String {
        self.key("inf")
    }

    /// Prefix of flush batches (`<prefix><flush id>`).
    pub fn flush_prefix(&self) -> String {
        self.key("f:")
    }

    /// Hash: one flush's batch, buffer key -> entry.
    pub fn flush(&self, flush_id: &str) -> String {
        format!("{}{flush_id}", self.flush_prefix())
    }

    /// Zset: flushes holding a batch -> lease end ms.
    pub fn flushes(&self) -> String {
        self.key("flushes")
    }

    /// Stream: records the CRM rejected, with the reason (capped).
    pub fn rejected(&self) -> String {
        self.key("rejected")
    }

    /// A key of the CRM client's own (token cache, lock), e.g. `zoho:token`.
    pub fn crm(&self, name: &str) -> String {
        self.key(name)
    }

    /// Hash: the org's usage in the rolling window, per bucket: ours `b:<n>` (reserved, then
    /// booked when the CRM served the call) and their `sum`; the org's other integrations'
    /// `o:<n>` (learned from the CRM's usage readings) and their `osum`.
    pub fn ledger(&self) -> String {
        self.key("credits")
    }

    /// Zset: our calls in flight, `<permit id>:<cost>` -> expiry ms (a dead worker's expire):
    /// the part of our ledger the CRM may not have charged yet when it reports usage.
    pub fn in_flight_credits(&self) -> String {
        self.key("credits:inflight")
    }

    /// Hash: the last usage reading (`at`, `org_used`, `others`, `daily`) and when the next
    /// probe may go (`probe_at`).
    pub fn account(&self) -> String {
        self.key("account")
    }

    /// Zset: live bucket numbers.
    pub fn ledger_index(&self) -> String {
        self.key("credits:idx")
    }

    /// List: the times (ms, Redis's clock) of the latest calls granted, newest first: at most
    /// the rate's count in any window.
    pub fn rate(&self) -> String {
        self.key("rate:log")
    }

    /// Zset: concurrency leases (id -> expiry ms).
    pub fn leases(&self) -> String {
        self.key("leases")
    }

    /// Zset: leases of "complex" calls (Zoho: upserts of more than 10 records).
    pub fn complex_leases(&self) -> String {
        self.key("leases:complex")
    }

    /// Hash: AIMD factor `f`, `last_dec`, 429 `streak`.
    pub fn aimd(&self) -> String {
        self.key("aimd")
    }

    /// String (with TTL): a 429 cooldown; the value is when it ends, ms.
    pub fn cooldown(&self) -> String {
        self.key("cooldown")
    }

    /// String (with TTL): 429s the CRM answered in one minute (`epoch_minute` = ms / 60,000).
    pub fn throttled(&self, epoch_minute: u64) -> String {
        format!("{}:429s:{epoch_minute}", self.prefix)
    }

    /// Hash (with TTL): the last budget pause (`until`, `used` ours, `others`, `allowed`,
    /// `kind`: `budget` when our own spend reached the share, `account` when the org's other
    /// integrations' did, `probe`: when a probe call reads the org's usage again), for display.
    pub fn budget_pause(&self) -> String {
        self.key("budget_pause")
    }

    /// Hash: why the destination's writes wait right now (`code`, `reason`, `until` ms or
    /// absent, `since` ms), set by the flush that met it, cleared by the next write that goes.
    pub fn blocked(&self) -> String {
        self.key("blocked")
    }

    /// Set: ids of flush jobs deferred for the budget or an operator's pause, woken at once
    /// when either is lifted (`tenant set`, `resume`).
    pub fn waiters(&self) -> String {
        self.key("waiters")
    }

    /// Hash: the retry budget (`tokens`, `at`).
    pub fn retry_budget(&self) -> String {
        self.key("retry_budget")
    }
}

/// The guard every script writing a tenant's state starts with: its last key is the tenant's
/// live-destination key and its last argument the destination the caller loaded; when they
/// differ (the tenant was removed or pointed elsewhere) the script fails with `GONE` and
/// changes nothing.
pub const LIVE_GUARD: &str = "if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then \
return redis.error_reply('GONE the tenant was removed or pointed at another destination') end\n";

/// Whether a Redis error is the [`LIVE_GUARD`]'s refusal.
pub fn is_gone(e: &redis::RedisError) -> bool {
    e.code() == Some("GONE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_tenant_tag_and_state_the_destination() {
        let t = TenantKeys::new("crmsync", "acme");
        let d = t.dest("0a1b2c3d4e5f");
        assert_eq!(d.prefix(), "{crmsync:t:acme}:d:0a1b2c3d4e5f");
        assert_eq!(d.live(), "{crmsync:t:acme}:live");
        for k in [
            d.queue(),
            d.ledger(),
            d.flush("j1"),
            d.contacts_prefix(),
            d.crm("zoho:token"),
        ] {
            assert!(k.starts_with("{crmsync:t:acme}:d:0a1b2c3d4e5f:"), "{k}");
        }
        for k in [t.tenant(), t.run("r1"), t.pause(), t.seen()] {
            assert!(k.starts_with("{crmsync:t:acme}:"), "{k}");
        }
    }
}
