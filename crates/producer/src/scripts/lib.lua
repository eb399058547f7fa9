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

local sub, find, byte = string.sub, string.find, string.byte

-- The state lives in buckets, small hashes that Redis keeps in its compact listpack encoding,
-- so a contact costs its bytes plus a few rather than a hash-table entry (~60 bytes more).
-- A record key is base64url of a hash: its bucket is its first character and 4 bits of its
-- second, as two characters (1,024 buckets; built from strings, as a number would be
-- formatted on every use). A contact's bucket comes from the caller (it hashes the id).
local HEX = {}
do
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  local hex = '0123456789abcdef'
  for i = 1, 64 do
    local d = (i - 1) % 16 + 1
    HEX[byte(alphabet, i)] = sub(hex, d, d)
  end
end
local function rbucket(rk)
  return sub(rk, 1, 1) .. (HEX[byte(rk, 2)] or '0')
end

-- A buffer entry: what a flush writes for one buffer key (`c:<contact id>`, or `x:<record
-- key>` for the deletion of a record nobody holds any more):
--   `op \t src \t rk \t from \t at \t <JSON>`
-- op (upsert | move | delete), src (feed | run:<id>), rk (the record key written), from (for a
-- move, the record key the record leaves; '' otherwise) and at (event time, s, base 36) are the
-- fields the scripts decide on; none can hold a tab (record keys are base64url, run ids are the
-- fleet's own). The JSON (`{"c": contact, "h": hash, "r": record}`) is built by the caller,
-- never here, and opaque to the scripts: `head` leaves it where it is (`body` cuts it out).
local function head(v)
  local a = find(v, '\t', 1, true)
  local b = find(v, '\t', a + 1, true)
  local c = find(v, '\t', b + 1, true)
  local d = find(v, '\t', c + 1, true)
  return {op = sub(v, 1, a - 1), src = sub(v, a + 1, b - 1), rk = sub(v, b + 1, c - 1), from = sub(v, c + 1, d - 1),
    value = v, at_end = d}
end
local function body(e)
  return sub(e.value, find(e.value, '\t', e.at_end + 1, true) + 1)
end
local function entry(op, src, rk, from, at36, json)
  return op .. '\t' .. src .. '\t' .. rk .. '\t' .. from .. '\t' .. at36 .. '\t' .. json
end

-- Contact state, `<contacts prefix><bucket>`: contact id -> `<at> <rk>`, the latest change
-- applied (at: event time in seconds, base 36 to keep it short, as the caller passes it; rk
-- `-`: the contact maps to no record).
local function cstate_get(prefix, b, cid)
  local v = redis.call('HGET', prefix .. b, cid)
  if not v then return nil end
  local sp = find(v, ' ', 1, true)
  local rk = sub(v, sp + 1)
  if rk == '-' then rk = nil end
  local at36 = sub(v, 1, sp - 1)
  return tonumber(at36, 36), rk, at36
end
local function cstate_set(prefix, b, cid, at36, rk)
  redis.call('HSET', prefix .. b, cid, at36 .. ' ' .. (rk or '-'))
end
local function cstate_del(prefix, b, cid)
  redis.call('HDEL', prefix .. b, cid)
end

-- Record state, `<records prefix><bucket>`: record key -> `<hash> <rid> <owner>`: the hash
-- of what crmsync last wrote there (`-`: nothing, or not what its owner would write), the
-- CRM's record id (`-`: none known) and the contact that owns it (empty: nobody; the record
-- waits for its deletion).
local function rstate_get(prefix, rk)
  local v = redis.call('HGET', prefix .. rbucket(rk), rk)
  if not v then return nil end
  local a = find(v, ' ', 1, true)
  local b = find(v, ' ', a + 1, true)
  return {hash = sub(v, 1, a - 1), rid = sub(v, a + 1, b - 1), owner = sub(v, b + 1)}
end
local function rstate_set(prefix, rk, r)
  redis.call('HSET', prefix .. rbucket(rk), rk, r.hash .. ' ' .. r.rid .. ' ' .. r.owner)
end
local function rstate_del(prefix, rk)
  redis.call('HDEL', prefix .. rbucket(rk), rk)
end

-- Where a source's waiting-entry counter is: the run's `buffered` key, or the destination's
-- change-feed counter.
local function counter_key(run_prefix, feed_key, src)
  if src == 'feed' then return feed_key end
  return run_prefix .. sub(src, 5) .. ':buffered'
end
