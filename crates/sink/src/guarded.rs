//! Redis scripts the CRM clients share for their fleet-wide caches (tokens, Salesforce's
//! Accounts): every write is guarded by the tenant's live destination, so a worker that loaded a
//! tenant before it was re-pointed or removed stores nothing afterwards.

use std::sync::LazyLock;

use redis::Script;

/// Stores a hash unless the tenant moved on. KEYS[1] the hash, KEYS[2] the tenant's live
/// destination; ARGV[1] destination, ARGV[2] expires at (ms), then field/value pairs. Returns 1
/// when stored.
pub(crate) static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1",
    )
});

/// Takes a lock unless the tenant moved on. KEYS[1] lock, KEYS[2] live destination; ARGV[1]
/// destination, ARGV[2] lock id, ARGV[3] TTL ms. Returns 1 when taken, 0 when held by another,
/// -1 when the tenant moved on.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0",
    )
});

/// Releases a lock if it is still ours. KEYS[1] lock; ARGV[1] lock id.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// Deletes a cached token if it is still the one refused. KEYS[1] the token hash; ARGV[1] its
/// sealed value (another worker may have replaced it meanwhile: then nothing happens).
pub(crate) static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'sealed') == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

/// Most tokens a process keeps in memory (one per destination it writes to); past it, the
/// ones due for refresh go, and if that is not enough, all.
pub(crate) const LOCAL_MAX: usize = 4096;

/// A token as this process keeps it.
pub(crate) trait HeldToken: Clone {
    /// When it is due for refresh (ms).
    fn refresh_at_ms(&self) -> u64;
    /// Its sealed form, as cached in Redis: names it for a compare-and-delete.
    fn sealed(&self) -> &str;
}

/// The tokens this process used, by token key and connection revision (so a token never
/// outlives the credentials it was issued to), at most [`LOCAL_MAX`]. Cheap to clone: clones
/// share the map.
pub(crate) struct LocalTokens<T> {
    map: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, T>>>,
}

impl<T> Clone for LocalTokens<T> {
    fn clone(&self) -> Self {
        Self { map: self.map.clone() }
    }
}

impl<T> Default for LocalTokens<T> {
    fn default() -> Self {
        Self {
            map: Default::default(),
        }
    }
}

impl<T: HeldToken> LocalTokens<T> {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, T>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token kept under `key`, if not yet due for refresh.
    pub(crate) fn fresh(&self, key: &str) -> Option<T> {
        self.map()
            .get(key)
            .filter(|t| t.refresh_at_ms() > crmsync_redis::now_ms())
            .cloned()
    }

    /// Keeps `t` under `key`; at [`LOCAL_MAX`], the tokens due for refresh go first, then all.
    pub(crate) fn keep(&self, key: String, t: T) {
        let mut map = self.map();
        if map.len() >= LOCAL_MAX {
            let now = crmsync_redis::now_ms();
            map.retain(|_, t| t.refresh_at_ms() > now);
            if map.len() >= LOCAL_MAX {
                map.clear();
            }
        }
        map.insert(key, t);
    }

    /// Forgets the token whose sealed form is `sealed` (refused by the CRM), under any key.
    pub(crate) fn forget(&self, sealed: &str) {
        self.map().retain(|_, t| t.sealed() != sealed);
    }
}
