-- Take a batch from a tenant's write buffer for one flush (or resume the flush's batch). An
-- email whose earlier write is still in flight is left for a later flush, so writes of one
-- email land in push order. Batches of flushes whose lease expired (their job is gone) go
-- back to the buffer first, unless a newer entry replaced them.
-- KEYS[1] buffer, KEYS[2] sources, KEYS[3] order, KEYS[4] in flight (email -> flush id),
-- KEYS[5] this flush's batch (email -> source \n entry), KEYS[6] flushes zset (id -> lease end)
-- ARGV[1] flush id, ARGV[2] max, ARGV[3] min, ARGV[4] now ms, ARGV[5] lease ms,
-- ARGV[6] batch key prefix (`<tag>:flush:`), ARGV[7] backfill score base,
-- ARGV[8] run key prefix (`<tag>:run:`), ARGV[9] feed counter key
-- Returns the batch as [email, source \n entry, ...] (empty: nothing to do).
local now, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local function counter(src)
  if src == 'feed' then return ARGV[9] end
  return ARGV[8] .. string.sub(src, 5) .. ':buffered'
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[5], lease * 2)
  return redis.call('HGETALL', KEYS[5])
end
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 5)) do
  local batch = redis.call('HGETALL', ARGV[6] .. stale)
  for i = 1, #batch, 2 do
    local email, v = batch[i], batch[i + 1]
    local nl = string.find(v, '\n', 1, true)
    local src = string.sub(v, 1, nl - 1)
    if redis.call('HGET', KEYS[4], email) == stale then redis.call('HDEL', KEYS[4], email) end
    if redis.call('HEXISTS', KEYS[1], email) == 0 then
      redis.call('HSET', KEYS[1], email, string.sub(v, nl + 1))
      redis.call('HSET', KEYS[2], email, src)
      local base = 0
      if src ~= 'feed' then base = tonumber(ARGV[7]) end
      redis.call('ZADD', KEYS[3], 'LT', base + now, email)
    else
      -- replaced by a newer entry: this one will never be written
      redis.call('DECR', counter(src))
    end
  end
  redis.call('DEL', ARGV[6] .. stale)
  redis.call('ZREM', KEYS[6], stale)
end
local picked = {}
for _, email in ipairs(redis.call('ZRANGE', KEYS[3], 0, 499)) do
  if redis.call('HEXISTS', KEYS[4], email) == 0 then
    picked[#picked + 1] = email
    if #picked >= tonumber(ARGV[2]) then break end
  end
end
if #picked < tonumber(ARGV[3]) then return {} end
for _, email in ipairs(picked) do
  local entry = redis.call('HGET', KEYS[1], email)
  local src = redis.call('HGET', KEYS[2], email)
  redis.call('HSET', KEYS[5], email, src .. '\n' .. entry)
  redis.call('HSET', KEYS[4], email, ARGV[1])
  redis.call('HDEL', KEYS[1], email)
  redis.call('HDEL', KEYS[2], email)
  redis.call('ZREM', KEYS[3], email)
end
redis.call('PEXPIRE', KEYS[5], lease * 2)
redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
return redis.call('HGETALL', KEYS[5])
