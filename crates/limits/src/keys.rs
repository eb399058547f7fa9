//! Per-tenant keys of the limiter (all under the tenant's hash tag).

use crmsync_tenants::tenant_tag;

#[derive(Debug, Clone)]
pub struct LimitKeys {
    tag: String,
}

impl LimitKeys {
    pub fn new(namespace: &str, tenant: &str) -> Self {
        Self {
            tag: tenant_tag(namespace, tenant),
        }
    }

    /// Hash: credit buckets `b:<n>` and their `sum`.
    pub fn ledger(&self) -> String {
        format!("{}:credits", self.tag)
    }

    /// Zset: live bucket numbers.
    pub fn ledger_index(&self) -> String {
        format!("{}:credits:idx", self.tag)
    }

    /// String: the GCRA theoretical arrival time, ms.
    pub fn rate(&self) -> String {
        format!("{}:rate", self.tag)
    }

    /// Zset: concurrency leases (id -> expiry ms).
    pub fn leases(&self) -> String {
        format!("{}:leases", self.tag)
    }

    /// Zset: leases of upserts of more than 10 records.
    pub fn complex_leases(&self) -> String {
        format!("{}:leases:complex", self.tag)
    }

    /// Hash: AIMD factor `f`, `last_dec`, 429 `streak`.
    pub fn aimd(&self) -> String {
        format!("{}:aimd", self.tag)
    }

    /// String (with TTL): a 429 cooldown; the value is when it ends, ms.
    pub fn cooldown(&self) -> String {
        format!("{}:cooldown", self.tag)
    }

    /// String (with TTL): 429s Zoho answered the tenant in one minute (`epoch_minute` = ms /
    /// 60,000), for the dashboard's chart.
    pub fn throttled(&self, epoch_minute: u64) -> String {
        format!("{}:429s:{epoch_minute}", self.tag)
    }

    /// Hash: an operator's pause (`reason`, `since`).
    pub fn pause(&self) -> String {
        format!("{}:pause", self.tag)
    }

    /// Hash (with TTL): the last budget pause (`until`, `used`, `allowed`), for display.
    pub fn budget_pause(&self) -> String {
        format!("{}:budget_pause", self.tag)
    }

    /// Change-feed records waiting in the tenant's write buffer (a counter, absent when
    /// none; kept by `crmsync-producer`): while some wait, backfill leaves them the last part
    /// of the budget.
    pub fn changes_pending(&self) -> String {
        format!("{}:buffer:feed", self.tag)
    }

    /// Hash: the retry budget (`tokens`, `at`).
    pub fn retry_budget(&self) -> String {
        format!("{}:retry_budget", self.tag)
    }
}
