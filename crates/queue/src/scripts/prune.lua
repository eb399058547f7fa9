-- Forget workers that stopped heartbeating long ago, once they hold no entries: drop them from
-- the registry and delete their consumer from the group (never one with pending entries:
-- deleting it would lose those jobs; the reclaimer empties it first).
-- KEYS[1] stream, KEYS[2] workers zset
-- ARGV[1] group, ARGV[2] forget-before ms, ARGV[3] limit, ARGV[4] worker hash key prefix
-- Returns the number of workers forgotten.
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
local has_stream = redis.call('EXISTS', KEYS[1]) == 1
for _, name in ipairs(stale) do
  local held = {}
  if has_stream then
    held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, name)
  end
  if #held == 0 then
    if has_stream then
      pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    end
    redis.call('ZREM', KEYS[2], name)
    redis.call('DEL', ARGV[4] .. name)
    n = n + 1
  end
end
return n
