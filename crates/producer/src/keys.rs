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

    /// Hash: progress of one page that writes in several calls (`done` batches and their
    /// counts), so a page resumed after a deferral or a crash skips what it already wrote.
    pub fn page_progress(&self, run_id: &str, page: u32) -> String {
        format!("{}:run:{run_id}:page:{page}", self.tag)
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
