-- The fleet-wide rate of a tenant (GCRA). Takes the next slot and says how long to wait for
-- it, so callers queue fairly instead of retrying in a herd.
-- KEYS[1] theoretical arrival time, KEYS[2] AIMD state hash (field f: rate factor)
-- ARGV[1] now ms, ARGV[2] base interval ms (1000 / requests per second), ARGV[3] burst
-- Returns the wait in ms.
local now = tonumber(ARGV[1])
local f = tonumber(redis.call('HGET', KEYS[2], 'f') or '1')
local interval = tonumber(ARGV[2]) / f
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - (tonumber(ARGV[3]) - 1) * interval - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', math.ceil(next_tat)), 'PX', math.ceil(next_tat - now) + 1000)
return math.ceil(wait)
