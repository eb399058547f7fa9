-- A destination's credits used in the window, and when the oldest leave (buckets that left
-- the window are dropped on the way).
-- KEYS[1] ledger hash, KEYS[2] bucket index zset; ARGV[1] now ms, ARGV[2] window ms,
-- ARGV[3] bucket ms
-- Returns {used, when the oldest credits leave (-1: none), how many}.
local L = {ledger = KEYS[1], index = KEYS[2], window = tonumber(ARGV[2]), bms = tonumber(ARGV[3])}
local used = ledger_trim(L, tonumber(ARGV[1]))
for _, b in ipairs(redis.call('ZRANGE', L.index, 0, -1)) do
  local v = tonumber(redis.call('HGET', L.ledger, 'b:' .. b) or '0')
  if v > 0 then return {used, (tonumber(b) + ledger_span(L)) * L.bms, v} end
end
return {used, -1, 0}
