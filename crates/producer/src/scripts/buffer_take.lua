-- Take a batch from a tenant's write buffer for one flush (or resume the flush's batch):
-- entries of one kind (upsert, move or delete: one Zoho call), at most ARGV[2], none unless
-- at least ARGV[3] are available. An entry whose key or email (or former email) is being
-- written by another flush waits, so writes to one record land in order. Batches of flushes
-- whose lease expired (their job is gone) go back to the buffer first, unless replaced.
-- KEYS[1] buffer, KEYS[2] sources, KEYS[3] order, KEYS[4] in flight (key -> flush),
-- KEYS[5] this flush's batch (key -> source \n value), KEYS[6] flushes zset (id -> lease end),
-- KEYS[7] emails in flight (email -> flush), KEYS[8] buffer email index
-- ARGV[1] flush id, ARGV[2] max, ARGV[3] min, ARGV[4] now ms, ARGV[5] lease ms,
-- ARGV[6] batch key prefix, ARGV[7] backfill score base, ARGV[8] run key prefix,
-- ARGV[9] feed counter key
-- Returns the batch as [key, source \n value, ...] (empty: nothing to do).
local now, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local function counter(src)
  if src == 'feed' then return ARGV[9] end
  return ARGV[8] .. string.sub(src, 5) .. ':buffered'
end
local function parts(v)
  local t = {}
  for part in string.gmatch(v, '([^\t]*)\t?') do
    t[#t + 1] = part
    if #t == 3 then break end
  end
  return t[1], t[2], t[3]
end
local function unlock(flush, v)
  local _, email, from = parts(v)
  for _, e in ipairs({email, from}) do
    if e ~= '' and redis.call('HGET', KEYS[7], e) == flush then redis.call('HDEL', KEYS[7], e) end
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[5], lease * 2)
  return redis.call('HGETALL', KEYS[5])
end
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 5)) do
  local batch = redis.call('HGETALL', ARGV[6] .. stale)
  for i = 1, #batch, 2 do
    local key, v = batch[i], batch[i + 1]
    local nl = string.find(v, '\n', 1, true)
    local src, value = string.sub(v, 1, nl - 1), string.sub(v, nl + 1)
    if redis.call('HGET', KEYS[4], key) == stale then redis.call('HDEL', KEYS[4], key) end
    unlock(stale, value)
    if redis.call('HEXISTS', KEYS[1], key) == 0 then
      local _, email = parts(value)
      redis.call('HSET', KEYS[1], key, value)
      redis.call('HSET', KEYS[2], key, src)
      redis.call('HSET', KEYS[8], email, key)
      local base = 0
      if src ~= 'feed' then base = tonumber(ARGV[7]) end
      redis.call('ZADD', KEYS[3], 'LT', base + now, key)
    else
      redis.call('DECR', counter(src))   -- replaced by a newer change: never written
    end
  end
  redis.call('DEL', ARGV[6] .. stale)
  redis.call('ZREM', KEYS[6], stale)
end
local picked, kind, locked = {}, nil, {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[3], 0, 499)) do
  local v = redis.call('HGET', KEYS[1], key)
  if v and redis.call('HEXISTS', KEYS[4], key) == 0 then
    local op, email, from = parts(v)
    local busy = redis.call('HEXISTS', KEYS[7], email) == 1 or locked[email]
      or (from ~= '' and (redis.call('HEXISTS', KEYS[7], from) == 1 or locked[from]))
    if not busy and (kind == nil or kind == op) then
      kind = op
      picked[#picked + 1] = key
      locked[email] = true
      if from ~= '' then locked[from] = true end
      if #picked >= tonumber(ARGV[2]) then break end
    end
  end
end
if #picked < tonumber(ARGV[3]) then return {} end
for _, key in ipairs(picked) do
  local v = redis.call('HGET', KEYS[1], key)
  local src = redis.call('HGET', KEYS[2], key)
  local _, email, from = parts(v)
  redis.call('HSET', KEYS[5], key, src .. '\n' .. v)
  redis.call('HSET', KEYS[4], key, ARGV[1])
  redis.call('HSET', KEYS[7], email, ARGV[1])
  if from ~= '' then redis.call('HSET', KEYS[7], from, ARGV[1]) end
  if redis.call('HGET', KEYS[8], email) == key then redis.call('HDEL', KEYS[8], email) end
  redis.call('HDEL', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
end
redis.call('PEXPIRE', KEYS[5], lease * 2)
redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
return redis.call('HGETALL', KEYS[5])
