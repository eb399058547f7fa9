-- A destination's credits used in the window — ours and the org's other integrations' — and
-- when the oldest leave (buckets that left the window are dropped on the way).
-- KEYS[1] ledger hash, KEYS[2] bucket index zset; ARGV[1] now ms, ARGV[2] window ms,
-- ARGV[3] bucket ms
-- Returns {ours, others, when the oldest credits leave (-1: none), how many}.
local L = {ledger = KEYS[1], index = KEYS[2], window = tonumber(ARGV[2]), bms = tonumber(ARGV[3])}
local ours, others = ledger_trim(L, tonumber(ARGV[1]))
for _, b in ipairs(redis.call('ZRANGE', L.index, 0, -1)) do
  local v = redis.call('HMGET', L.ledger, 'b:' .. b, 'o:' .. b)
  local n = num(v[1]) + num(v[2])
  if n > 0 then return {ours, others, (tonumber(b) + ledger_span(L)) * L.bms, n} end
end
return {ours, others, -1, 0}
