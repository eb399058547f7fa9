-- The fleet-wide rate of a key: takes the next slot (see `rate_slot` in lib.lua) and says how
-- long to wait for it.
-- KEYS[1] the latest grants (list), KEYS[2] AIMD state hash (field f: rate factor)
-- ARGV[1] requests per second, ARGV[2] margin ms
-- Returns the wait in ms.
local n, window = rate_shape(tonumber(ARGV[1]), aimd_factor(KEYS[2]))
return rate_slot(KEYS[1], n, window, tonumber(ARGV[2]))
