-- Push changes into a destination's write buffer. One entry waits per contact (a newer change
-- replaces it: changes collapse to the latest, by event time, then arrival), plus one per
-- record whose deletion is due. Decides, per change, with the destination's state:
--   stale      older than the latest change applied to the contact (or an update not newer
--              than its deletion);
--   shared     (email matching) a contact with a smaller id owns the email: its record
--              holds that contact's fields;
--   unchanged  the record already holds exactly this (unless forced);
--   a move     the contact left an email nobody else has: its record follows it (updated by
--              id) instead of being orphaned; when another record already holds the new
--              email, the old record is deleted instead.
local K = {
  queue = KEYS[1],          -- hash: buffer key -> entry
  queue_feed = KEYS[2],     -- list: change-feed keys in order
  queue_backfill = KEYS[3], -- list: backfill keys in order
  in_flight = KEYS[4],      -- hash: key / @rk -> flush writing it
  tombstones = KEYS[5],     -- zset: deleted contact -> deleted at (ms)
  refresh = KEYS[6],        -- set: contacts to re-read
  feed_waiting = KEYS[7],   -- string: change-feed entries waiting
  scheduled = KEYS[8],      -- set: slots of flushes scheduled, not started
  feed_stats = KEYS[9],     -- hash: change-feed counters
  seen = KEYS[10],          -- zset: webhook notification ids recorded -> forget at (ms)
}
local A = {
  now = tonumber(ARGV[1]),
  src = ARGV[2],
  force = ARGV[3] == '1',
  mode = ARGV[4],               -- email | contact
  contacts = ARGV[5],           -- contact-state bucket prefix
  records = ARGV[6],            -- record-state bucket prefix
  members = ARGV[7],            -- shared-email member zset prefix
  run_prefix = ARGV[8],         -- `<tag>:run:`
  batch = tonumber(ARGV[9]),    -- records per full batch
  tombstone_ms = tonumber(ARGV[10]),
  notification = ARGV[11],      -- webhook notification id ('' for none)
  seen_ms = tonumber(ARGV[12]), -- how long a notification id is remembered
  first = 13,                   -- then 7 per change: op, cid, at (s, base 36), contact bucket, rk, hash,
                                -- entry JSON (`{"c":..}` for a deletion)
  last = #ARGV - 1,             -- (the last argument is the guard's destination)
}
local STEP = 7

-- A webhook notification already recorded is a duplicate: nothing else happens.
if A.notification ~= '' then
  if redis.call('ZSCORE', K.seen, A.notification) then return {'duplicate'} end
  local expired = redis.call('ZRANGEBYSCORE', K.seen, '-inf', A.now, 'LIMIT', 0, 100)
  if #expired > 0 then redis.call('ZREM', K.seen, unpack(expired)) end
  redis.call('ZADD', K.seen, A.now + A.seen_ms, A.notification)
end

local counts = {pushed = 0, shared = 0, unchanged = 0, stale = 0}
-- Per change, exactly one of stale, shared, unchanged, queued (it put an entry in the buffer)
-- or noop (nothing to write: a deletion of a contact owning no record); and change-feed entries
-- replaced or cancelled by a newer change before they were written (`coalesced`), whatever
-- pushes the newer change.
local queued, noop, coalesced = 0, 0, 0
local deltas = {}            -- source -> change of its waiting-entry counter
local new_feed, new_backfill = {}, {}
local run_rks = {}

-- The buffer through a write-back cache: read once, written once at the end. `busy`: whether
-- a change's record (`@<rk>`) is being written by a flush.
local cache, dirty, busy = {}, {}, {}
local function qget(key)
  local v = cache[key]
  if v == nil then
    v = redis.call('HGET', K.queue, key) or false
    cache[key] = v
  end
  return v
end
local function qset(key, v)
  cache[key] = v
  dirty[key] = true
end
local function count(src, n)
  deltas[src] = (deltas[src] or 0) + n
end

-- Drops the waiting entry under `key` (one being written stays with its flush).
local function drop(key)
  local v = qget(key)
  if not v then return nil end
  local e = head(v)
  count(e.src, -1)
  if e.src == 'feed' then coalesced = coalesced + 1 end
  qset(key, false)
  return e
end
local function put(key, op, rk, from, at36, json)
  local old = drop(key)
  qset(key, entry(op, A.src, rk, from, at36, json))
  count(A.src, 1)
  if not old or old.src ~= A.src then
    if A.src == 'feed' then new_feed[#new_feed + 1] = key else new_backfill[#new_backfill + 1] = key end
  end
  counts.pushed = counts.pushed + 1
end
-- The record `rk` must go; `json` names the contact that left it.
local function delete_record(rk, at36, json)
  put('x:' .. rk, 'delete', rk, '', at36, json)
end

-- The contact leaves record `rk`. Returns `promoted` (another contact sharing it owns it now
-- and is re-read, to write its fields), `vacated` (nobody is left: the record must go or
-- move) or `none` (it did not own it).
local function leave(cid, rk)
  local mkey = A.members .. rk
  local next_owner = nil
  if redis.call('EXISTS', mkey) == 1 then
    redis.call('ZREM', mkey, cid)
    next_owner = redis.call('ZRANGE', mkey, 0, 0)[1]
    if redis.call('ZCARD', mkey) <= 1 then redis.call('DEL', mkey) end
  end
  local r = rstate_get(A.records, rk)
  if not r or r.owner ~= cid then return 'none' end
  if next_owner then
    -- the record holds the leaver's fields, not the new owner's: it must be rewritten
    rstate_set(A.records, rk, {hash = '-', rid = r.rid, owner = next_owner})
    redis.call('SADD', K.refresh, next_owner)
    return 'promoted'
  end
  rstate_set(A.records, rk, {hash = r.hash, rid = r.rid, owner = ''})
  return 'vacated'
end

-- What the changes' own buffer keys hold, and which are being written, read at once (a
-- backfill page pushes 200 contacts: two commands instead of four hundred).
do
  local keys, xkeys = {}, {}
  for i = A.first, A.last, STEP do
    keys[#keys + 1] = 'c:' .. ARGV[i + 1]
    if ARGV[i + 4] ~= '' then xkeys[#xkeys + 1] = 'x:' .. ARGV[i + 4] end
  end
  for _, list in ipairs({keys, xkeys}) do
    if #list > 0 then
      local vals = redis.call('HMGET', K.queue, unpack(list))
      for j, key in ipairs(list) do
        if cache[key] == nil then cache[key] = vals[j] or false end
      end
    end
  end
  if #xkeys > 0 then
    local fields = {}
    for j, x in ipairs(xkeys) do fields[j] = '@' .. sub(x, 3) end
    local held = redis.call('HMGET', K.in_flight, unpack(fields))
    for j, f in ipairs(fields) do busy[f] = held[j] and true or false end
  end
end

-- Most pushes (a backfill's) meet no tombstone at all: skip the per-contact lookup then.
local any_tomb = redis.call('EXISTS', K.tombstones) == 1
if any_tomb then
  local expired = redis.call('ZRANGEBYSCORE', K.tombstones, '-inf', A.now - A.tombstone_ms, 'LIMIT', 0, 100)
  if #expired > 0 then redis.call('ZREM', K.tombstones, unpack(expired)) end
end
local is_run = sub(A.src, 1, 4) == 'run:'

for i = A.first, A.last, STEP do
  local op, cid, at36, cb, rk, hash, json = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6]
  local at = tonumber(at36, 36)
  local key = 'c:' .. cid
  local decided = counts.stale + counts.shared + counts.unchanged
  local pushed_before = counts.pushed
  -- a run counts the distinct records its contacts map to (its shared-email count)
  if is_run and op == 'upsert' then run_rks[#run_rks + 1] = rk end
  local prev_at, prev_rk, prev36 = cstate_get(A.contacts, cb, cid)
  -- A forced push is a fresh read: at least as new as anything recorded for the contact.
  if A.force and prev_at and at < prev_at then at, at36 = prev_at, prev36 end
  local tomb = false
  if any_tomb then tomb = redis.call('ZSCORE', K.tombstones, cid) end
  if (prev_at and at < prev_at) or (op == 'upsert' and tomb and at * 1000 <= tonumber(tomb)) then
    counts.stale = counts.stale + 1
  elseif op == 'delete' or op == 'unmap' then
    if op == 'delete' then
      redis.call('ZADD', K.tombstones, at * 1000, cid)
      any_tomb = true
      cstate_del(A.contacts, cb, cid)
    else
      cstate_set(A.contacts, cb, cid, at36, nil)
    end
    -- A waiting change is cancelled; if it was a move that never ran, the record still sits
    -- under its former key, and that is the record to delete.
    local w = drop(key)
    local carried = nil
    if w and w.from ~= '' then carried = w.from end
    if prev_rk then
      local left = leave(cid, prev_rk)
      if left == 'vacated' then
        delete_record(carried or prev_rk, at36, json)
      elseif carried then
        delete_record(carried, at36, json)
      end
    end
  else
    if tomb then redis.call('ZREM', K.tombstones, cid) end
    -- Events are stamped in whole seconds: two in one second may have arrived in either
    -- order, so the contact is re-read to learn which state is the latest.
    if not A.force and prev_at == at then redis.call('SADD', K.refresh, cid) end
    local wv = qget(key)
    local w = wv and head(wv) or nil
    -- A waiting move has not run yet: the record still sits under its former key.
    local carried = nil
    if w and w.from ~= '' then carried = w.from end
    local from = nil
    if prev_rk and prev_rk ~= rk and leave(cid, prev_rk) == 'vacated' then from = prev_rk end
    if carried then from = carried end
    if from == rk then from = nil end
    if not (prev36 == at36 and prev_rk == rk) then cstate_set(A.contacts, cb, cid, at36, rk) end
    local r = rstate_get(A.records, rk)
    local owner = r and r.owner ~= '' and r.owner or nil
    if A.mode == 'email' and owner and owner < cid then
      redis.call('ZADD', A.members .. rk, 0, owner, 0, cid)
      drop(key)
      if from then delete_record(from, at36, json) end
      counts.shared = counts.shared + 1
    else
      local took_over = false
      if not owner then
        rstate_set(A.records, rk, {hash = r and r.hash or '-', rid = r and r.rid or '-', owner = cid})
        -- a waiting deletion of this record is moot: it has a contact again
        drop('x:' .. rk)
      elseif owner ~= cid then
        redis.call('ZADD', A.members .. rk, 0, owner, 0, cid)
        -- the record is about to hold our fields, not the former owner's
        rstate_set(A.records, rk, {hash = '-', rid = r.rid, owner = cid})
        took_over = true
        -- the former owner's waiting write of this record would overwrite ours; a move of
        -- its record into this email becomes the deletion of the record it left
        local ov = qget('c:' .. owner)
        if ov then
          local oe = head(ov)
          if oe.rk == rk then
            drop('c:' .. owner)
            if oe.from ~= '' then delete_record(oe.from, at36, body(oe)) end
          end
        end
      end
      local op_name = 'upsert'
      if from then
        -- Another contact's record already holds the new key: ours under `from` must go.
        -- Otherwise ours moves there.
        if owner and owner ~= cid then delete_record(from, at36, json) else op_name = 'move' end
      end
      local waiting = w or busy['@' .. rk]
      if not A.force and op_name == 'upsert' and not took_over and not waiting and owner == cid
        and r and r.hash == hash then
        counts.unchanged = counts.unchanged + 1
      else
        put(key, op_name, rk, from or '', at36, json)
      end
    end
  end
  if counts.stale + counts.shared + counts.unchanged == decided then
    if counts.pushed > pushed_before then queued = queued + 1 else noop = noop + 1 end
  end
end

-- Write back: the buffer, the order lists, the counters.
local sets, dels = {}, {}
for key, _ in pairs(dirty) do
  local v = cache[key]
  if v then
    sets[#sets + 1] = key
    sets[#sets + 1] = v
  else
    dels[#dels + 1] = key
  end
end
if #dels > 0 then redis.call('HDEL', K.queue, unpack(dels)) end
if #sets > 0 then redis.call('HSET', K.queue, unpack(sets)) end
if #new_feed > 0 then redis.call('RPUSH', K.queue_feed, unpack(new_feed)) end
if #new_backfill > 0 then redis.call('RPUSH', K.queue_backfill, unpack(new_backfill)) end
for src, n in pairs(deltas) do
  if n ~= 0 then
    local left = redis.call('INCRBY', counter_key(A.run_prefix, K.feed_waiting, src), n)
    if src == 'feed' and left <= 0 then redis.call('DEL', K.feed_waiting) end
  end
end
if #run_rks > 0 then
  local emails = A.run_prefix .. sub(A.src, 5) .. ':emails'
  redis.call('SADD', emails, unpack(run_rks))
  redis.call('PEXPIRE', emails, 7 * 24 * 3600 * 1000)
end
if A.src == 'feed' then
  local kind = 'changes'
  if A.force then kind = 'refreshed' end
  local changes = (A.last - A.first + 1) / STEP
  for name, n in pairs({[kind] = changes, pushed = counts.pushed, unchanged = counts.unchanged,
      stale = counts.stale, shared = counts.shared, queued = queued, noop = noop}) do
    if n > 0 then redis.call('HINCRBY', K.feed_stats, name, n) end
  end
end
if coalesced > 0 then redis.call('HINCRBY', K.feed_stats, 'coalesced', coalesced) end
-- Full batches waiting that no scheduled flush covers yet: the caller schedules them, and
-- counts them once enqueued (`scheduled.lua`).
local waiting = redis.call('HLEN', K.queue)
local want = math.floor(waiting / A.batch)
local have = redis.call('SCARD', K.scheduled)
local schedule = 0
if want > have then schedule = want - have end
return {'ok', counts.pushed, counts.shared, counts.unchanged, counts.stale, waiting, schedule}
