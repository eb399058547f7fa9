-- A concurrency lease: at most `limit` (scaled by the AIMD factor) at once. Leases expire, so
-- a killed worker's lease frees itself.
-- KEYS[1] leases zset (id -> expiry ms), KEYS[2] AIMD state hash
-- ARGV[1] now ms, ARGV[2] ttl ms, ARGV[3] limit, ARGV[4] lease id, ARGV[5] scale by AIMD (0/1)
-- Returns 1 when leased, else 0.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[3])
if ARGV[5] == '1' then
  local f = tonumber(redis.call('HGET', KEYS[2], 'f') or '1')
  limit = math.max(1, math.floor(limit * f))
end
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
