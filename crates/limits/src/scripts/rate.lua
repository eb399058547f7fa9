-- The fleet-wide rate of a key: takes the next slot (see `rate_slot` in lib.lua) and says how
-- long to wait for it.
-- KEYS[1] the latest grants (list), KEYS[2] AIMD state hash (field f: rate factor), KEYS[3]
-- the change-feed counter (a backfill call lets change-feed calls go first while it exists)
-- ARGV[1] requests per second, ARGV[2] margin ms, ARGV[3] how far ahead a backfill call may
-- take a slot while change-feed records wait (ms; 0: any)
-- Returns the wait in ms, or minus the ms after which to ask again (no slot taken).
local n, window = rate_shape(tonumber(ARGV[1]), aimd_factor(KEYS[2]))
local ahead = tonumber(ARGV[3] or '0')
if ahead > 0 and KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  local later = rate_later(KEYS[1], n, window, tonumber(ARGV[2]), ahead)
  if later > 0 then return -later end
end
return rate_slot(KEYS[1], n, window, tonumber(ARGV[2]))
