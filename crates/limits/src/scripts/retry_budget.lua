-- A retry budget (as Finagle's): successes deposit a fraction of a retry, each retry takes a
-- whole one, and a small allowance refills with time, so a failing API gets a bounded number
-- of retries instead of a storm.
-- KEYS[1] budget hash (tokens, at); ARGV[1] now ms, ARGV[2] op (deposit|withdraw),
-- ARGV[3] deposit per success, ARGV[4] refill per second, ARGV[5] max tokens
-- Returns 1 when a retry may go now (withdraw), else 0; deposits return 1.
local now = tonumber(ARGV[1])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[5])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
tokens = math.min(tonumber(ARGV[5]), tokens + (now - at) / 1000 * tonumber(ARGV[4]))
local ok = 1
if ARGV[2] == 'deposit' then
  tokens = math.min(tonumber(ARGV[5]), tokens + tonumber(ARGV[3]))
elseif tokens >= 1 then
  tokens = tokens - 1
else
  ok = 0
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], 3600000)
return ok
