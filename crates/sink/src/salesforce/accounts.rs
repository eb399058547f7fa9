//! The org's Accounts by website domain, for routing a new record: a contact whose email domain
//! is an Account's website goes to a Contact under that Account ([`super::Routing`]).
//!
//! The Accounts are read with SOQL (`SELECT Id, Name, Website FROM Account WHERE Website !=
//! null ORDER BY Id`, every `nextRecordsUrl` page; each page is a call through the tenant's
//! limited service, so it is counted like any call) and reduced to `domain → Account Id`:
//! the website's host, lowercased, without `www.`; unreadable websites are skipped; when
//! several Accounts share a domain the smallest Id wins, so the choice is stable.
//!
//! Kept per destination, fleet-wide in Redis and in each process's memory:
//! - re-read once older than [`REFRESH_AFTER`] (1 hour), by one worker at a time (a lock); the
//!   others keep using the older copy meanwhile, or wait for the first one;
//! - bounded: at most [`MAX_DOMAINS`] domains (50,000; the first Accounts by Id win), read in
//!   at most [`MAX_PAGES`] pages; an org with more routes by those only;
//! - a copy nobody refreshes (Salesforce unreachable) is dropped after [`KEEP_FOR`].
//!
//! Keys (per destination prefix `D`): `D:sf:accounts` (hash: domain → Account Id, and `@at`:
//! when it was read, ms; expires [`KEEP_FOR`] after the read), `D:sf:accounts:lock` (string,
//! [`LOCK_TTL`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crmsync_redis::{RedisConn, now_ms};
use redis::Script;
use tracing::{info, warn};

use super::mapping::email_domain;
use super::retry;
use super::token::SfOrg;
use crate::guarded::{LOCK, UNLOCK};
use crate::{Next, SinkError};

/// Re-read the Accounts once the copy is this old.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);
/// Drop a copy this long after it was read (nobody could refresh it).
pub const KEEP_FOR: Duration = Duration::from_secs(6 * 3600);
/// Most domains kept per org.
pub const MAX_DOMAINS: usize = 50_000;
/// Most query pages read per refresh (Salesforce pages hold up to 2,000 rows).
pub const MAX_PAGES: usize = 100;
/// The SOQL that reads them.
pub const ACCOUNTS_SOQL: &str = "SELECT Id, Name, Website FROM Account WHERE Website != null ORDER BY Id";
/// How long one refresh may hold the lock (its pages go through the limiter).
const LOCK_TTL: Duration = Duration::from_secs(120);
/// How long a worker with no copy at all waits for another worker's read.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(30);
/// The hash field holding the read time (no domain contains `@`).
const AT: &str = "@at";
/// Domain/Id pairs per `HSET` in the store script (well within Lua's `unpack` limit).
const PAIRS_PER_HSET: usize = 500;
/// Most destinations a process keeps in memory; past it, the stale ones go, then all.
const LOCAL_MAX: usize = 256;

/// Replaces the Accounts unless the tenant moved on. KEYS[1] hash, KEYS[2] live destination;
/// ARGV[1] destination, ARGV[2] TTL ms, ARGV[3] read at (ms), ARGV[4] pairs per HSET, then
/// domain/id pairs.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local step = tonumber(ARGV[4]) * 2
for i = 5, #ARGV, step do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + step - 1, #ARGV)))
end
redis.call('HSET', KEYS[1], '@at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1",
    )
});

/// The domain a website names: scheme, `www.`, port, path, query and fragment removed,
/// lowercased; `None` if nothing domain-like is left.
pub fn website_domain(website: &str) -> Option<String> {
    let w = website.trim().to_lowercase();
    let rest = match w.split_once("://") {
        Some((_, rest)) => rest,
        None => &w,
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next().unwrap_or_default().trim_end_matches('.');
    let host = host.strip_prefix("www.").unwrap_or(host);
    let ok = host.contains('.')
        && !host.starts_with('.')
        && !host.contains("..")
        && host.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    ok.then(|| host.to_owned())
}

/// One org's Accounts by domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDomains {
    by_domain: HashMap<String, String>,
    /// When they were read (ms).
    pub read_at_ms: u64,
    /// Some Accounts were left out (over [`MAX_DOMAINS`] or [`MAX_PAGES`]).
    pub truncated: bool,
}

impl AccountDomains {
    /// Adds an Account: its website's domain maps to it unless an Account with a smaller Id
    /// has it. Past [`MAX_DOMAINS`] new domains are left out.
    pub fn add(&mut self, id: &str, website: &str) {
        let Some(domain) = website_domain(website) else {
            return;
        };
        if !super::request::is_record_id(id) {
            return;
        }
        let full = self.is_full();
        match self.by_domain.get_mut(&domain) {
            Some(have) if id < have.as_str() => *have = id.to_owned(),
            Some(_) => {}
            None if full => self.truncated = true,
            None => {
                self.by_domain.insert(domain, id.to_owned());
            }
        }
    }

    /// Whether no more domains fit.
    pub fn is_full(&self) -> bool {
        self.by_domain.len() >= MAX_DOMAINS
    }

    /// The Account whose website has the email's domain.
    pub fn account_for(&self, email: &str) -> Option<&str> {
        self.by_domain.get(&email_domain(email)?).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_domain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }
}

/// The fleet-wide Account cache. Cheap to clone; one per process.
#[derive(Clone)]
pub struct SfAccounts {
    conn: RedisConn,
    /// By the destination's hash key (see [`LOCAL_MAX`]).
    local: Arc<Mutex<HashMap<String, Arc<AccountDomains>>>>,
    /// Salesforce seconds per real second (a simulator's compressed day): [`REFRESH_AFTER`] and
    /// [`KEEP_FOR`] shrink alike; locks and waits do not.
    time_scale: f64,
}

impl SfAccounts {
    pub fn new(conn: RedisConn) -> Self {
        Self {
            conn,
            local: Arc::default(),
            time_scale: 1.0,
        }
    }

    /// See `time_scale`; only for simulators.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        self.time_scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
        self
    }

    fn scaled(&self, d: Duration) -> u64 {
        (d.as_millis() as f64 / self.time_scale).ceil() as u64
    }

    fn local_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AccountDomains>>> {
        match self.local.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn remember(&self, key: &str, d: Arc<AccountDomains>) {
        let mut map = self.local_map();
        if map.len() >= LOCAL_MAX && !map.contains_key(key) {
            let oldest_fresh = now_ms().saturating_sub(self.scaled(REFRESH_AFTER));
            map.retain(|_, d| d.read_at_ms > oldest_fresh);
            if map.len() >= LOCAL_MAX {
                map.clear();
            }
        }
        map.insert(key.to_owned(), d);
    }

    /// The org's Accounts: this process's copy, the fleet's, or a fresh read made with `read`
    /// (a future polled only when this worker is the one to read; it returns the Accounts).
    pub async fn domains<F>(&self, org: &SfOrg, read: F) -> Result<Arc<AccountDomains>, SinkError>
    where
        F: Future<Output = Result<AccountDomains, SinkError>>,
    {
        let key = org.key("sf:accounts");
        let max_age = self.scaled(REFRESH_AFTER);
        let local = self.local_map().get(&key).cloned();
        if let Some(d) = &local
            && now_ms() < d.read_at_ms + max_age
        {
            return Ok(d.clone());
        }
        let mut read = Some(read);
        let deadline = now_ms() + WAIT_FOR_OTHERS.as_millis() as u64;
        let mut conn = self.conn.clone();
        loop {
            let at: Option<u64> = redis::cmd("HGET")
                .arg(&key)
                .arg(AT)
                .query_async(&mut conn)
                .await
                .map_err(retry::redis)?;
            if let Some(at) = at
                && now_ms() < at + max_age
            {
                return self.load(&key, at, local.as_ref()).await;
            }
            let lock_id = format!("{:016x}", rand::random::<u64>());
            let got: i64 = LOCK
                .key(org.key("sf:accounts:lock"))
                .key(&org.live_key)
                .arg(&org.dest)
                .arg(&lock_id)
                .arg(LOCK_TTL.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(retry::redis)?;
            if got < 0 {
                return Err(retry::moved());
            }
            if got == 1
                && let Some(read) = read.take()
            {
                let res = self.refresh(org, &key, read).await;
                let _: Result<i64, _> = UNLOCK
                    .key(org.key("sf:accounts:lock"))
                    .arg(&lock_id)
                    .invoke_async(&mut conn)
                    .await;
                return res;
            }
            if let Some(at) = at {
                // Another worker is reading them again: the older copy serves meanwhile.
                return self.load(&key, at, local.as_ref()).await;
            }
            if now_ms() > deadline {
                return Err(SinkError::new(
                    Next::Retry,
                    "SF_ACCOUNTS",
                    "timed out waiting for another worker's read of the org's Accounts",
                )
                .not_sent());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The copy in Redis read at `at` (this process's when it is the same).
    async fn load(
        &self,
        key: &str,
        at: u64,
        local: Option<&Arc<AccountDomains>>,
    ) -> Result<Arc<AccountDomains>, SinkError> {
        if let Some(d) = local
            && d.read_at_ms == at
        {
            return Ok(d.clone());
        }
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(retry::redis)?;
        let mut d = AccountDomains {
            read_at_ms: at,
            ..AccountDomains::default()
        };
        for (domain, id) in all {
            if domain != AT {
                d.by_domain.insert(domain, id);
            }
        }
        let d = Arc::new(d);
        self.remember(key, d.clone());
        Ok(d)
    }

    /// Reads the Accounts with `read` and stores them; the caller holds the lock.
    async fn refresh<F>(&self, org: &SfOrg, key: &str, read: F) -> Result<Arc<AccountDomains>, SinkError>
    where
        F: Future<Output = Result<AccountDomains, SinkError>>,
    {
        let mut d = read.await.map_err(|e| SinkError {
            message: format!(
                "reading the org's Accounts for routing (`--sf-routing lead` needs none): {}",
                e.message
            ),
            ..e
        })?;
        d.read_at_ms = now_ms();
        if d.truncated {
            warn!(tenant = %org.tenant, domains = d.len(), "The org has more Accounts than crmsync keeps for routing; the first ones by Id are used");
        }
        let mut store = STORE.prepare_invoke();
        store
            .key(key)
            .key(&org.live_key)
            .arg(&org.dest)
            .arg(self.scaled(KEEP_FOR))
            .arg(d.read_at_ms)
            .arg(PAIRS_PER_HSET);
        for (domain, id) in &d.by_domain {
            store.arg(domain).arg(id);
        }
        let mut conn = self.conn.clone();
        let stored: i64 = store.invoke_async(&mut conn).await.map_err(retry::redis)?;
        if stored == 0 {
            return Err(retry::moved());
        }
        info!(tenant = %org.tenant, dest = %org.dest, domains = d.len(), "Salesforce Accounts read for routing");
        let d = Arc::new(d);
        self.remember(key, d.clone());
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websites_reduce_to_their_domain() {
        for (w, d) in [
            ("https://www.Acme.com/about", Some("acme.com")),
            ("http://acme.io/", Some("acme.io")),
            ("acme.io", Some("acme.io")),
            ("www.initech.test:8080?x=1", Some("initech.test")),
            ("HTTPS://user@shop.example.co.uk#top", Some("shop.example.co.uk")),
            ("acme.com.", Some("acme.com")),
            ("", None),
            ("localhost", None),
            ("not a website", None),
            ("http://", None),
            ("https://.com", None),
        ] {
            assert_eq!(website_domain(w).as_deref(), d, "{w}");
        }
    }

    #[test]
    fn the_smallest_id_wins_a_shared_domain_and_the_map_is_bounded() {
        let mut d = AccountDomains::default();
        d.add("001AB0000000002AAA", "https://acme.com");
        d.add("001AB0000000001AAA", "www.acme.com");
        d.add("001AB0000000003AAA", "acme.com/");
        d.add("001AB0000000004AAA", "nonsense");
        d.add("not an id", "other.com");
        assert_eq!(d.account_for("ada@ACME.com"), Some("001AB0000000001AAA"));
        assert_eq!(d.account_for("ada@other.com"), None);
        assert_eq!(d.len(), 1);
        for i in 0..MAX_DOMAINS + 10 {
            d.add("001AB0000000009AAA", &format!("d{i}.example.com"));
        }
        assert_eq!(d.len(), MAX_DOMAINS);
        assert!(d.truncated && d.is_full());
        assert_eq!(d.account_for("x@acme.com"), Some("001AB0000000001AAA"), "kept");
    }
}
