//! Per-tenant Redis keys. All carry the tenant's hash tag, so a tenant's keys share a slot.

use crmsync_tenants::tenant_tag;

/// Key names of one tenant (see ARCHITECTURE.md, "Redis key layout").
#[derive(Debug, Clone)]
pub struct TenantKeys {
    tag: String,
}

impl TenantKeys {
    pub fn new(namespace: &str, tenant: &str) -> Self {
        Self {
            tag: tenant_tag(namespace, tenant),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Hash: one backfill run's progress.
    pub fn run(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}", self.tag)
    }

    /// Hash: pages of a run already counted (page -> time).
    pub fn run_pages(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:pages", self.tag)
    }

    /// Prefix of run keys (`<prefix><run id>`), for scripts that reach several runs.
    pub fn run_prefix(&self) -> String {
        format!("{}:run:", self.tag)
    }

    /// String: how many of a run's records wait in the write buffer (or a flush).
    pub fn run_buffered(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:buffered", self.tag)
    }

    /// Hash: the write buffer, key -> `op \t email \t move-from \t JSON`; the key is a
    /// contact id, or `x:<email>` for the deletion of an email's record.
    pub fn buffer(&self) -> String {
        format!("{}:buffer", self.tag)
    }

    /// Hash: key -> source of its buffered entry (`run:<id>` or `feed`).
    pub fn buffer_sources(&self) -> String {
        format!("{}:buffer:src", self.tag)
    }

    /// Zset: buffered keys in flush order (change-feed entries first).
    pub fn buffer_order(&self) -> String {
        format!("{}:buffer:order", self.tag)
    }

    /// Hash: what is being written, -> flush id: buffer keys, and `@<email>` for each email
    /// (new or former) whose record a flush is writing.
    pub fn buffer_in_flight(&self) -> String {
        format!("{}:buffer:inflight", self.tag)
    }

    /// Hash: email -> key of the waiting entry that writes it.
    pub fn buffer_emails(&self) -> String {
        format!("{}:buffer:email", self.tag)
    }

    /// Hash: Nylas contact id -> `<event ms> <email or ->`: the latest change applied.
    pub fn contacts(&self) -> String {
        format!("{}:contacts", self.tag)
    }

    /// Zset: deleted contact ids -> deletion time (kept past Nylas's 72-hour retry horizon).
    pub fn tombstones(&self) -> String {
        format!("{}:deleted", self.tag)
    }

    /// Hash: contact id -> `<hash> <email>` of the record last written for it (skips
    /// unchanged writes; a move or deletion uses the record id only if the email matches).
    pub fn written(&self) -> String {
        format!("{}:written", self.tag)
    }

    /// Set: contact ids to re-read from Nylas (they now own an email another contact left,
    /// or two of their events fell in one second).
    pub fn refresh(&self) -> String {
        format!("{}:refresh", self.tag)
    }

    /// Prefix of the member sets of shared emails (`<prefix><email>`).
    pub fn members_prefix(&self) -> String {
        format!("{}:members:", self.tag)
    }

    /// String: entries pushed ever (paces the flushes).
    pub fn buffer_pushed(&self) -> String {
        format!("{}:buffer:pushed", self.tag)
    }

    /// String: change-feed entries waiting (absent when none). The limiter reads it: while
    /// change-feed work waits, backfill leaves it the last part of the budget.
    pub fn buffer_feed(&self) -> String {
        format!("{}:buffer:feed", self.tag)
    }

    /// Hash: the change feed's counters: `changes` (received), `refreshed` (re-read from
    /// Nylas), `pushed` (buffer entries made), `unchanged`, `stale`, `shared` (from pushes);
    /// `inserted`, `updated`, `deleted`, `failed:<code>`, `zoho_calls`, `credits` (from
    /// flushes).
    pub fn feed_stats(&self) -> String {
        format!("{}:feed:stats", self.tag)
    }

    /// Prefix of flush batches (`<prefix><flush id>`).
    pub fn flush_prefix(&self) -> String {
        format!("{}:flush:", self.tag)
    }

    /// Hash: one flush's batch, key -> `source\nvalue`.
    pub fn flush(&self, flush_id: &str) -> String {
        format!("{}:flush:{flush_id}", self.tag)
    }

    /// Zset: flushes holding a batch, -> lease end ms.
    pub fn flushes(&self) -> String {
        format!("{}:flushes", self.tag)
    }

    /// Set: distinct emails of the contacts a run mapped (deleted when the run completes).
    pub fn run_emails(&self, run_id: &str) -> String {
        format!("{}:run:{run_id}:emails", self.tag)
    }

    /// Zset: the tenant's runs by start time.
    pub fn runs(&self) -> String {
        format!("{}:runs", self.tag)
    }

    /// String: the id of the run in progress (with a TTL refreshed by progress).
    pub fn active_run(&self) -> String {
        format!("{}:active_run", self.tag)
    }

    /// Hash: email -> Nylas id of the contact that owns the CRM record for it.
    pub fn email_owner(&self) -> String {
        format!("{}:email_owner", self.tag)
    }

    /// Hash: Nylas contact id -> Zoho record id.
    pub fn zoho_ids(&self) -> String {
        format!("{}:zoho_ids", self.tag)
    }

    /// Stream: records Zoho rejected, with the reason (capped).
    pub fn rejected(&self) -> String {
        format!("{}:rejected", self.tag)
    }
}
