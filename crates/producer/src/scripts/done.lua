-- Record a written batch, once: what each record now holds (its hash and record id, in the
-- destination's record state), what the CRM refused, the counts and cost per source, and the
-- end of each run the batch drained; then release the batch. A flush that runs again after
-- recording finds nothing to do.
local K = {
  batch = KEYS[1],
  in_flight = KEYS[2],
  flushes = KEYS[3],
  feed_stats = KEYS[4],
  feed_waiting = KEYS[5],
  active_run = KEYS[6],
  rejected = KEYS[7],        -- stream: records the CRM refused
  blocked = KEYS[8],         -- hash: why the destination's writes waited (they went now)
}
local A = {
  flush = ARGV[1],
  now = ARGV[2],
  run_prefix = ARGV[3],
  records = ARGV[4],
  rejected_max = ARGV[5],
  entries = tonumber(ARGV[6]),    -- then 7 per entry: src, cid, result (w: written, m: written by
                                  -- a move from `from`, d: deleted, r: refused), rk, from, rid, hash
  counts = tonumber(ARGV[7]),     -- then 3 per count: source, field, n
  rejections = tonumber(ARGV[8]), -- then 6 per rejection: source, contact, email, code, field, message
  first = 9,
}
if redis.call('EXISTS', K.batch) == 0 then return {} end

local runs, fields, left_by_src = {}, {}, {}
local i = A.first
local last_src = nil
for _ = 1, A.entries do
  local src, cid, result, rk, from, rid, hash =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  fields[#fields + 1] = '@' .. rk
  if from ~= '' then fields[#fields + 1] = '@' .. from end
  left_by_src[src] = (left_by_src[src] or 0) + 1
  if src ~= last_src then
    last_src = src
    if src ~= 'feed' then runs[sub(src, 5)] = true end
  end
  if result == 'w' or result == 'm' then
    local r = rstate_get(A.records, rk)
    if r and r.owner == cid then
      rstate_set(A.records, rk, {hash = hash, rid = rid, owner = cid})
    else
      -- taken over (or left) while it was written: it does not hold its owner's fields
      rstate_set(A.records, rk, {hash = '-', rid = rid, owner = r and r.owner or ''})
    end
    if result == 'm' then
      -- the record left its former key: nothing of it is there any more
      local f = rstate_get(A.records, from)
      if f and (f.rid == rid or f.rid == '-') then
        if f.owner == '' then
          rstate_del(A.records, from)
        else
          rstate_set(A.records, from, {hash = '-', rid = '-', owner = f.owner})
        end
      end
    end
  elseif result == 'd' then
    local r = rstate_get(A.records, rk)
    if r then
      if r.owner == '' then
        rstate_del(A.records, rk)
      else
        rstate_set(A.records, rk, {hash = '-', rid = '-', owner = r.owner})
      end
    end
  end
end

-- Release what this flush holds (one read, one delete), and count the records off their
-- sources (one decrement per source).
if #fields > 0 then
  local held = redis.call('HMGET', K.in_flight, unpack(fields))
  local mine = {}
  for j, f in ipairs(fields) do
    if held[j] == A.flush then mine[#mine + 1] = f end
  end
  if #mine > 0 then redis.call('HDEL', K.in_flight, unpack(mine)) end
end
for src, n in pairs(left_by_src) do
  local left = redis.call('DECRBY', counter_key(A.run_prefix, K.feed_waiting, src), n)
  if src == 'feed' and left <= 0 then redis.call('DEL', K.feed_waiting) end
end
for _ = 1, A.counts do
  local src, field, by = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if src == 'feed' then
    redis.call('HINCRBY', K.feed_stats, field, by)
  else
    redis.call('HINCRBY', A.run_prefix .. sub(src, 5), field, by)
  end
end
for _ = 1, A.rejections do
  redis.call('XADD', K.rejected, 'MAXLEN', '~', A.rejected_max, '*', 'run', ARGV[i], 'contact', ARGV[i + 1],
    'email', ARGV[i + 2], 'code', ARGV[i + 3], 'field', ARGV[i + 4], 'message', ARGV[i + 5])
  i = i + 6
end
local completed = {}
for run, _ in pairs(runs) do
  local key = A.run_prefix .. run
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'updated_at', A.now)
    local left = tonumber(redis.call('GET', key .. ':buffered') or '0')
    if left <= 0 and redis.call('HGET', key, 'status') == 'draining' then
      redis.call('HSET', key, 'status', 'completed', 'finished_at', A.now)
      redis.call('DEL', key .. ':buffered')
      if redis.call('GET', K.active_run) == run then redis.call('DEL', K.active_run) end
      completed[#completed + 1] = run
    end
  end
end
redis.call('DEL', K.batch, K.blocked)
redis.call('ZREM', K.flushes, A.flush)
return completed
