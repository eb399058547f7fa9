-- Shared by every write-buffer script (prepended to each; Redis scripts cannot `require`).
-- One parser of buffer entries and of the per-destination state, so the scripts cannot
-- disagree on a format.
--
-- The guard: a script's last key is the tenant's live-destination key and its last argument
-- the destination the caller loaded; when they differ (the tenant was removed or pointed
-- elsewhere) the script fails with GONE and changes nothing.
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then
  return redis.error_reply('GONE the tenant was removed or pointed at another destination')
end

local sub, find = string.sub, string.find

-- Buckets of the state hashes: small hashes stay in Redis's compact listpack encoding, so a
-- contact's state costs its bytes plus a few, not a hash-table entry (~60 bytes more).
local NBUCKETS = 1024
local function bucket(s)
  return tonumber(sub(redis.sha1hex(s), 1, 3), 16) % NBUCKETS
end

-- A buffer entry: what a flush writes for one buffer key (`c:<contact id>`, or `x:<record
-- key>` for the deletion of a record nobody holds any more). JSON through cjson only.
--   op    upsert | move | delete
--   src   feed | run:<id>
--   cid   the contact (for a deletion: the contact that left the record)
--   rk    the record key written: the email's hash (match on email) or the contact id
--   from  for a move: the record key the record leaves ('' otherwise)
--   at    event time, s
--   hash  hash of the record ('' for a deletion)
--   rec   the record's JSON, opaque here ('' for a deletion)
local function entry_encode(e)
  return cjson.encode({e.op, e.src, e.cid, e.rk, e.from, e.at, e.hash, e.rec})
end
local function entry_decode(v)
  local t = cjson.decode(v)
  return {op = t[1], src = t[2], cid = t[3], rk = t[4], from = t[5], at = t[6], hash = t[7], rec = t[8]}
end

-- Contact state, `<contacts prefix><bucket>`: contact id -> `<at s> <rk>`, the latest change
-- applied (rk `-`: the contact maps to no record).
local function cstate_get(prefix, cid)
  local v = redis.call('HGET', prefix .. bucket(cid), cid)
  if not v then return nil end
  local sp = find(v, ' ', 1, true)
  local rk = sub(v, sp + 1)
  if rk == '-' then rk = nil end
  return tonumber(sub(v, 1, sp - 1)), rk
end
local function cstate_set(prefix, cid, at, rk)
  redis.call('HSET', prefix .. bucket(cid), cid, at .. ' ' .. (rk or '-'))
end
local function cstate_del(prefix, cid)
  redis.call('HDEL', prefix .. bucket(cid), cid)
end

-- Record state, `<records prefix><bucket>`: record key -> `<hash> <rid> <owner>`: the hash
-- of what crmsync last wrote there (`-`: nothing, or not what its owner would write), the
-- CRM's record id (`-`: none known) and the contact that owns it (empty: nobody; the record
-- waits for its deletion).
local function rstate_get(prefix, rk)
  local v = redis.call('HGET', prefix .. bucket(rk), rk)
  if not v then return nil end
  local a = find(v, ' ', 1, true)
  local b = find(v, ' ', a + 1, true)
  return {hash = sub(v, 1, a - 1), rid = sub(v, a + 1, b - 1), owner = sub(v, b + 1)}
end
local function rstate_set(prefix, rk, r)
  redis.call('HSET', prefix .. bucket(rk), rk, r.hash .. ' ' .. r.rid .. ' ' .. r.owner)
end
local function rstate_del(prefix, rk)
  redis.call('HDEL', prefix .. bucket(rk), rk)
end

-- Where a source's waiting-entry counter is: the run's `buffered` key, or the destination's
-- change-feed counter.
local function counter_key(run_prefix, feed_key, src)
  if src == 'feed' then return feed_key end
  return run_prefix .. sub(src, 5) .. ':buffered'
end
