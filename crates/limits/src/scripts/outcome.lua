-- Record how a call went: additive increase of the rate factor on success, multiplicative
-- decrease (at most once a second) and a fleet-wide cooldown on a 429, counted per minute for
-- the dashboard's 429 chart.
-- KEYS[1] AIMD hash (f, last_dec, streak), KEYS[2] cooldown key, KEYS[3] the 429 counter of
-- the current minute (`429s:<epoch minute>`)
-- ARGV[1] now ms, ARGV[2] throttled (0/1), ARGV[3] cooldown ms (when throttled),
-- ARGV[4] increase step, ARGV[5] minimum factor, ARGV[6] the counter's TTL, seconds
-- Returns {factor * 1000, streak}.
local now = tonumber(ARGV[1])
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '1')
local streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0')
if ARGV[2] == '1' then
  streak = streak + 1
  -- The TTL is set once, when the minute's counter is created.
  if redis.call('INCR', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[6]) end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_dec') or '0')
  if now - last >= 1000 then
    f = math.max(tonumber(ARGV[5]), f * 0.5)
    redis.call('HSET', KEYS[1], 'last_dec', now)
  end
  local cd = tonumber(ARGV[3])
  local current = redis.call('PTTL', KEYS[2])
  if cd > 0 and cd > current then
    redis.call('SET', KEYS[2], now + cd, 'PX', cd)
  end
else
  streak = 0
  f = math.min(1, f + tonumber(ARGV[4]))
end
redis.call('HSET', KEYS[1], 'f', tostring(f), 'streak', streak)
redis.call('PEXPIRE', KEYS[1], 86400000)
return {math.floor(f * 1000), streak}
