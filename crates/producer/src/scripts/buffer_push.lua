-- Push changes into a tenant's write buffer. One entry waits per contact (a newer change
-- replaces it: changes collapse to the latest, by event time, then arrival), plus one entry
-- per email whose record must be deleted. Every record is keyed by email in Zoho, and the
-- contact with the smallest Nylas id owns an email: its fields are what the record holds.
--
-- Values are `op \t email \t move-from \t JSON`; op is `upsert`, `move` (update the record
-- known by id to a new email: the contact changed its email, so no orphan stays behind) or
-- `delete` (the record of `email` must go: its last contact left it).
--
-- KEYS[1] buffer (key -> value), KEYS[2] sources (key -> `run:<id>`|`feed`), KEYS[3] order,
-- KEYS[4] email owners, KEYS[5] pushed counter, KEYS[6] buffer email index (email -> key),
-- KEYS[7] in flight (key -> flush), KEYS[8] contacts (cid -> `at email`), KEYS[9] tombstones
-- (cid -> deleted at), KEYS[10] written (cid -> `hash email`), KEYS[11] refresh set,
-- KEYS[12] change-feed counters
-- ARGV[1] now ms, ARGV[2] source, ARGV[3] score base, ARGV[4] run key prefix, ARGV[5] feed
-- counter key, ARGV[6] members key prefix, ARGV[7] force (0/1), ARGV[8] tombstone horizon ms,
-- ARGV[9..] per change: op (upsert|delete|unmap), cid, at ms, email, hash, JSON
-- Returns {pushed, shared, unchanged, stale, waiting, pushed counter}.
local now, src, force = tonumber(ARGV[1]), ARGV[2], ARGV[7] == '1'
local score = tonumber(ARGV[3]) + now
local pushed, shared, unchanged, stale = 0, 0, 0, 0

local function counter(s)
  if s == 'feed' then return ARGV[5] end
  return ARGV[4] .. string.sub(s, 5) .. ':buffered'
end
local function field(v, n)
  local i = 1
  for part in string.gmatch(v, '([^\t]*)\t?') do
    if i == n then return part end
    i = i + 1
  end
  return nil
end
-- Drops the waiting entry under `key` (a newer change replaces it, or it became moot). Only
-- waiting entries are in the buffer: one being written stays with its flush. `old` is the
-- entry when the caller already read it (false: none), nil when unknown.
local function drop(key, old)
  if old == nil then old = redis.call('HGET', KEYS[1], key) end
  if not old then return end
  redis.call('DECR', counter(redis.call('HGET', KEYS[2], key)))
  local email = field(old, 2)
  if redis.call('HGET', KEYS[6], email) == key then redis.call('HDEL', KEYS[6], email) end
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
end
local function put(key, op, email, from, json, old)
  drop(key, old)
  redis.call('HSET', KEYS[1], key, op .. '\t' .. email .. '\t' .. from .. '\t' .. json)
  redis.call('HSET', KEYS[2], key, src)
  redis.call('HSET', KEYS[6], email, key)
  redis.call('ZADD', KEYS[3], 'LT', score, key)
  redis.call('INCR', counter(src))
  pushed = pushed + 1
end
local function delete_record(email, cid)
  put('x:' .. email, 'delete', email, '', '{"c":"' .. cid .. '"}')
end
-- The contact leaves an email. Returns `promoted` (another member now owns it and is queued
-- for a re-read, to write its fields), `vacated` (nobody is left: its record must go or move)
-- or `none` (it did not own it).
local function leave(cid, email)
  local mkey = ARGV[6] .. email
  local others = {}
  if redis.call('EXISTS', mkey) == 1 then
    redis.call('SREM', mkey, cid)
    others = redis.call('SMEMBERS', mkey)
    if #others <= 1 then redis.call('DEL', mkey) end
  end
  if redis.call('HGET', KEYS[4], email) ~= cid then return 'none' end
  if #others > 0 then
    table.sort(others)
    redis.call('HSET', KEYS[4], email, others[1])
    -- the record holds the leaver's fields, not the new owner's: it must be rewritten
    redis.call('HDEL', KEYS[10], others[1])
    redis.call('SADD', KEYS[11], others[1])
    return 'promoted'
  end
  redis.call('HDEL', KEYS[4], email)
  return 'vacated'
end

redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - tonumber(ARGV[8]))
-- Most pushes (a backfill's) meet no tombstone at all: skip the per-contact lookup then.
local any_tomb = redis.call('ZCARD', KEYS[9]) > 0
for i = 9, #ARGV, 6 do
  local op, cid, at, email, hash, json = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local prev = redis.call('HGET', KEYS[8], cid)
  local prev_at, prev_email = nil, nil
  if prev then
    local sp = string.find(prev, ' ', 1, true)
    prev_at, prev_email = tonumber(string.sub(prev, 1, sp - 1)), string.sub(prev, sp + 1)
    if prev_email == '-' then prev_email = nil end
  end
  -- A forced push is a fresh read: at least as new as anything recorded for the contact.
  if force and prev_at and at < prev_at then at = prev_at end
  local tomb = false
  if any_tomb then tomb = redis.call('ZSCORE', KEYS[9], cid) end
  if (prev_at and at < prev_at) or (op == 'upsert' and tomb and at <= tonumber(tomb)) then
    stale = stale + 1
  elseif op == 'delete' or op == 'unmap' then
    if op == 'delete' then
      redis.call('ZADD', KEYS[9], at, cid)
      any_tomb = true
    end
    redis.call('HSET', KEYS[8], cid, at .. ' -')
    -- A waiting change is cancelled; if it was a move that never ran, the contact's record
    -- still sits under its former email, and that is the record to delete.
    local carried = nil
    local w = redis.call('HGET', KEYS[1], cid)
    if w and field(w, 3) ~= '' then carried = field(w, 3) end
    drop(cid, w)
    if prev_email then
      local left = leave(cid, prev_email)
      if left == 'vacated' then
        delete_record(carried or prev_email, cid)
      elseif carried then
        delete_record(carried, cid)
      end
    end
  else
    if tomb then redis.call('ZREM', KEYS[9], cid) end
    -- Events are stamped in whole seconds: two in one second may have arrived in either
    -- order, so the contact is re-read to learn which state is the latest.
    if not force and prev_at == at then redis.call('SADD', KEYS[11], cid) end
    -- A waiting move has not run yet: the record still sits under its former email.
    local carried = nil
    local w = redis.call('HGET', KEYS[1], cid)
    if w and field(w, 3) ~= '' then carried = field(w, 3) end
    local from = nil
    if prev_email and prev_email ~= email and leave(cid, prev_email) == 'vacated' then from = prev_email end
    if carried then from = carried end
    if from == email then from = nil end
    redis.call('HSET', KEYS[8], cid, at .. ' ' .. email)
    local owner = redis.call('HGET', KEYS[4], email)
    local took_over = false
    if owner and owner < cid then
      redis.call('SADD', ARGV[6] .. email, owner, cid)
      drop(cid, w)
      if from then delete_record(from, cid) end
      shared = shared + 1
    else
      if not owner then
        redis.call('HSET', KEYS[4], email, cid)
        -- a waiting deletion of this email's record is moot: the email has a contact again
        drop('x:' .. email)
      elseif owner ~= cid then
        redis.call('SADD', ARGV[6] .. email, owner, cid)
        redis.call('HSET', KEYS[4], email, cid)
        redis.call('HDEL', KEYS[10], owner)   -- its record is about to hold our fields
        took_over = true
        local k = redis.call('HGET', KEYS[6], email)
        if k and k ~= cid then drop(k) end
      end
      local opname = 'upsert'
      if from then
        -- Another contact's record already holds the new email: ours under `from` must go.
        -- Otherwise ours moves there.
        if owner and owner ~= cid then delete_record(from, cid) else opname = 'move' end
      end
      -- `w` is still the contact's waiting entry: nothing above dropped or replaced it.
      local waiting = w or redis.call('HEXISTS', KEYS[7], cid) == 1
      local written = redis.call('HGET', KEYS[10], cid)
      if not force and opname == 'upsert' and not took_over and not waiting and written
        and string.sub(written, 1, #hash + 1) == hash .. ' ' then
        unchanged = unchanged + 1
      else
        put(cid, opname, email, from or '', json, w)
      end
    end
  end
end
local total = redis.call('INCRBY', KEYS[5], pushed)
if src == 'feed' then
  local kind = 'changes'
  if force then kind = 'refreshed' end
  local counts = {{kind, (#ARGV - 8) / 6}, {'pushed', pushed}, {'unchanged', unchanged}, {'stale', stale}, {'shared', shared}}
  for _, c in ipairs(counts) do
    if c[2] > 0 then redis.call('HINCRBY', KEYS[12], c[1], c[2]) end
  end
end
return {pushed, shared, unchanged, stale, redis.call('HLEN', KEYS[1]), total}
