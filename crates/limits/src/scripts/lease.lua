-- The leases of a call that found none free at first (`acquire.lua`), all or none: the
-- destination's (scaled by the AIMD factor) and, for a call of a capped class, one among at
-- most `cap`.
-- KEYS[1] leases, KEYS[2] capped leases, KEYS[3] AIMD state hash
-- ARGV[1] now ms, ARGV[2] ttl ms, ARGV[3] concurrency, ARGV[4] lease id, ARGV[5] cap (0: none),
-- ARGV[6] capped lease id
-- Returns 1 when leased, else 0.
local now, ttl, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local limit = math.max(1, math.floor(tonumber(ARGV[3]) * aimd_factor(KEYS[3])))
if lease(KEYS[1], now, ttl, limit, ARGV[4]) == 0 then return 0 end
if cap > 0 and lease(KEYS[2], now, ttl, cap, ARGV[6]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[4])
  return 0
end
return 1
