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
