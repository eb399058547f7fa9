-- Move a reservation to the bucket of `now`, once the call is done. Zoho charges when it
-- serves the call, which may be well after the reservation (rate and lease waits, latency);
-- booking the credits at completion keeps them in the window at least as long as Zoho does.
-- KEYS[1] ledger hash, KEYS[2] bucket index; ARGV[1] old bucket, ARGV[2] cost, ARGV[3] now ms,
-- ARGV[4] bucket ms, ARGV[5] window ms
local cur = math.floor(tonumber(ARGV[3]) / tonumber(ARGV[4]))
local old, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur == old then return 0 end
if redis.call('ZSCORE', KEYS[2], old) then
  redis.call('HINCRBY', KEYS[1], 'b:' .. old, -cost)
else
  redis.call('HINCRBY', KEYS[1], 'sum', cost)   -- it had already left the window: it is back
end
redis.call('HINCRBY', KEYS[1], 'b:' .. cur, cost)
redis.call('ZADD', KEYS[2], cur, cur)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) * 2)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]) * 2)
return 1
