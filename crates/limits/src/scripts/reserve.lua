-- Reserve `cost` credits in a tenant's rolling window, unless that would pass the cap.
-- The ledger is a hash of buckets (`b:<n>`, each bucket_ms wide) plus their running `sum`,
-- and a zset indexing the buckets so old ones are dropped without scanning.
-- A bucket's credits leave the window when the whole bucket is older than the window, i.e.
-- up to one bucket later than the exact moment: the ledger errs on the side of spending less.
-- KEYS[1] ledger hash, KEYS[2] bucket index zset, KEYS[3] the tenant's pending change-feed
-- work (the headroom applies only while there is some: near the cap it goes first),
-- KEYS[4] the last budget pause (for display; set when a reservation is refused)
-- ARGV[1] now ms, ARGV[2] cost, ARGV[3] cap (credits allowed), ARGV[4] window ms,
-- ARGV[5] bucket ms, ARGV[6] headroom (credits this caller must leave for others),
-- ARGV[7] mode: `reserve`, or `peek` (only report)
-- Returns {1, bucket, used after} when reserved, {0, resume at ms (-1: never), used} when not;
-- peek returns {used, when the oldest credits leave (-1: none), how many}.
local now, cost, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, bms, headroom = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local span = math.floor(window / bms) + 1          -- buckets that may hold live credits
local cur = math.floor(now / bms)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (cur - span + 1), 'LIMIT', 0, 500)
for _, b in ipairs(old) do
  local v = tonumber(redis.call('HGET', KEYS[1], 'b:' .. b) or '0')
  if v ~= 0 then redis.call('HINCRBY', KEYS[1], 'sum', -v) end
  redis.call('HDEL', KEYS[1], 'b:' .. b)
  redis.call('ZREM', KEYS[2], b)
end
local used = tonumber(redis.call('HGET', KEYS[1], 'sum') or '0')
if ARGV[7] == 'peek' then
  for _, b in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local v = tonumber(redis.call('HGET', KEYS[1], 'b:' .. b) or '0')
    if v > 0 then return {used, (tonumber(b) + span) * bms, v} end
  end
  return {used, -1, 0}
end
if redis.call('EXISTS', KEYS[3]) == 0 then headroom = 0 end
local limit = cap - headroom
if used + cost <= limit then
  redis.call('HINCRBY', KEYS[1], 'b:' .. cur, cost)
  redis.call('HINCRBY', KEYS[1], 'sum', cost)
  redis.call('ZADD', KEYS[2], cur, cur)
  redis.call('PEXPIRE', KEYS[1], window * 2)
  redis.call('PEXPIRE', KEYS[2], window * 2)
  return {1, cur, used + cost}
end
if cost > limit then return {0, -1, used} end
-- When do enough credits leave? Walk the live buckets from the oldest.
local need = used + cost - limit
local freed = 0
local resume_at = now + window
for _, b in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  freed = freed + tonumber(redis.call('HGET', KEYS[1], 'b:' .. b) or '0')
  if freed >= need then
    resume_at = (tonumber(b) + span) * bms
    break
  end
end
redis.call('HSET', KEYS[4], 'until', resume_at, 'used', used, 'allowed', cap)
redis.call('PEXPIREAT', KEYS[4], resume_at)
return {0, resume_at, used}
