-- Take a batch for one flush (or resume the flush's own batch): entries of one kind (upsert,
-- move or delete: one kind of CRM call), at most `max`, none unless at least `min` are
-- available. An entry whose key, record or former record is being written by another flush
-- waits, so writes to one record land in push order. Batches of flushes whose lease expired
-- (their job is gone) go back to the buffer first, unless a newer change replaced them.
-- Change-feed entries go before backfill entries.
local K = {
  queue = KEYS[1],
  queue_feed = KEYS[2],
  queue_backfill = KEYS[3],
  in_flight = KEYS[4],
  batch = KEYS[5],          -- hash: this flush's batch, key -> entry
  flushes = KEYS[6],        -- zset: flush id -> lease end
  feed_waiting = KEYS[7],
  scheduled = KEYS[8],      -- set: slots of flushes scheduled, not started
  started_early = KEYS[9],  -- set: slots of flushes that started before they were counted
  feed_stats = KEYS[10],    -- hash: change-feed counters
}
local A = {
  flush = ARGV[1],
  max = tonumber(ARGV[2]),
  min = tonumber(ARGV[3]),
  now = tonumber(ARGV[4]),
  lease = tonumber(ARGV[5]),
  batch_prefix = ARGV[6],
  run_prefix = ARGV[7],
  records = ARGV[8],        -- record-state bucket prefix
  slot = ARGV[9],           -- the slot this flush is counted under ('' for none)
  upsert_ids = ARGV[10] == '1', -- upserts carry their record's id too (a CRM matching on contacts)
}
-- Keys scanned per call: enough to fill a take of `max` past entries that must wait.
local CHUNK, SCAN_MAX = 100, math.max(500, A.max * 2)

-- The in-flight fields an entry holds while written: its record and its former record. (Its
-- key needs no lock: a newer entry of the same contact writes the same record, or moves it
-- from the one being written, or writes another record, which may go at once.)
local function lock_fields(e)
  local f = {'@' .. e.rk}
  if e.from ~= '' then f[2] = '@' .. e.from end
  return f
end

-- Each entry with the record id a move or a deletion acts on (`-`: none known; an upsert
-- finds its record by its key, and gets its id only when `upsert_ids`). A batch holds one kind
-- of entry.
local function with_ids(batch)
  local out = {}
  local upserts = #batch > 0 and sub(batch[2], 1, 7) == 'upsert\t'
  for i = 1, #batch, 2 do
    local rid = '-'
    if not upserts or A.upsert_ids then
      local e = head(batch[i + 1])
      local target = e.rk
      if e.op == 'move' then target = e.from end
      local r = rstate_get(A.records, target)
      if r then rid = r.rid end
    end
    out[#out + 1] = batch[i]
    out[#out + 1] = batch[i + 1]
    out[#out + 1] = rid
  end
  return out
end

-- This flush stops counting among the scheduled ones; if it was not counted yet (its
-- scheduler counts after the enqueue), it must not be.
if A.slot ~= '' and redis.call('SREM', K.scheduled, A.slot) == 0 and redis.call('EXISTS', K.batch) == 0 then
  redis.call('SADD', K.started_early, A.slot)
  redis.call('PEXPIRE', K.started_early, 3600 * 1000)
end
if redis.call('EXISTS', K.batch) == 1 then
  redis.call('ZADD', K.flushes, A.now + A.lease, A.flush)
  redis.call('PEXPIRE', K.batch, A.lease * 2)
  return with_ids(redis.call('HGETALL', K.batch))
end

-- Batches of flushes gone for good come back (a few per call).
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', K.flushes, '-inf', A.now, 'LIMIT', 0, 5)) do
  local batch = redis.call('HGETALL', A.batch_prefix .. stale)
  local back_feed, back_backfill = {}, {}
  for i = 1, #batch, 2 do
    local key, v = batch[i], batch[i + 1]
    local e = head(v)
    local fields = lock_fields(e)
    local held = redis.call('HMGET', K.in_flight, unpack(fields))
    local mine = {}
    for j, f in ipairs(fields) do
      if held[j] == stale then mine[#mine + 1] = f end
    end
    if #mine > 0 then redis.call('HDEL', K.in_flight, unpack(mine)) end
    if redis.call('HSETNX', K.queue, key, v) == 1 then
      if e.src == 'feed' then back_feed[#back_feed + 1] = key else back_backfill[#back_backfill + 1] = key end
    else
      -- replaced by a newer change while it was held: never written
      local left = redis.call('DECR', counter_key(A.run_prefix, K.feed_waiting, e.src))
      if e.src == 'feed' and left <= 0 then redis.call('DEL', K.feed_waiting) end
      if e.src == 'feed' then redis.call('HINCRBY', K.feed_stats, 'coalesced', 1) end
    end
  end
  if #back_feed > 0 then redis.call('LPUSH', K.queue_feed, unpack(back_feed)) end
  if #back_backfill > 0 then redis.call('LPUSH', K.queue_backfill, unpack(back_backfill)) end
  redis.call('DEL', A.batch_prefix .. stale)
  redis.call('ZREM', K.flushes, stale)
end

-- Scan the oldest waiting keys a chunk at a time (change feed first): pop chunks, take what
-- can be written now, and put the rest back at the front, in order, once the scan is over
-- (put back earlier, they would be popped again by the scan itself).
local picked, values, kind, locked, lock = {}, {}, nil, {}, {}
local scanned, seen, keep = 0, {}, {}
for _, list in ipairs({K.queue_feed, K.queue_backfill}) do
  keep[list] = {}
  while #picked < A.max and scanned < SCAN_MAX do
    local keys = redis.call('LPOP', list, CHUNK)
    if not keys then break end
    scanned = scanned + #keys
    local vals = redis.call('HMGET', K.queue, unpack(keys))
    local entries, fields, at = {}, {}, {}
    for i, key in ipairs(keys) do
      if vals[i] then
        entries[i] = head(vals[i])
        at[i] = #fields + 1
        for _, f in ipairs(lock_fields(entries[i])) do fields[#fields + 1] = f end
      end
    end
    local held = {}
    if #fields > 0 then held = redis.call('HMGET', K.in_flight, unpack(fields)) end
    for i, key in ipairs(keys) do
      local e = entries[i]
      -- A key listed twice (its first place counts), or whose entry is gone (taken,
      -- cancelled): dropped from the list.
      if e and not seen[key] then
        seen[key] = true
        local busy = held[at[i]] or locked[e.rk] or (e.from ~= '' and (held[at[i] + 1] or locked[e.from]))
        if #picked < A.max and not busy and (kind == nil or kind == e.op) then
          kind = e.op
          picked[#picked + 1] = key
          values[#values + 1] = vals[i]
          locked[e.rk] = true
          for _, f in ipairs(lock_fields(e)) do
            lock[#lock + 1] = f
            lock[#lock + 1] = A.flush
          end
          if e.from ~= '' then locked[e.from] = true end
        else
          keep[list][#keep[list] + 1] = key
        end
      end
    end
    if #keys < CHUNK then break end
  end
end
local enough = #picked > 0 and #picked >= A.min
if not enough then
  -- Not enough for this flush: what it picked goes back too, where it was.
  for i, key in ipairs(picked) do
    local list = K.queue_backfill
    if head(values[i]).src == 'feed' then list = K.queue_feed end
    table.insert(keep[list], key)
  end
end
for list, keys in pairs(keep) do
  if #keys > 0 then
    local rev = {}
    for i = #keys, 1, -1 do rev[#rev + 1] = keys[i] end
    redis.call('LPUSH', list, unpack(rev))
  end
end
if not enough then return {} end

local batch = {}
for i, key in ipairs(picked) do
  batch[#batch + 1] = key
  batch[#batch + 1] = values[i]
end
redis.call('HSET', K.batch, unpack(batch))
redis.call('HSET', K.in_flight, unpack(lock))
redis.call('HDEL', K.queue, unpack(picked))
redis.call('PEXPIRE', K.batch, A.lease * 2)
redis.call('ZADD', K.flushes, A.now + A.lease, A.flush)
return with_ids(batch)
