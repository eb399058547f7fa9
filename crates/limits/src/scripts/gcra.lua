-- The fleet-wide rate of a key (GCRA): takes the next slot and says how long to wait for it.
-- KEYS[1] theoretical arrival time, KEYS[2] AIMD state hash (field f: rate factor)
-- ARGV[1] now ms, ARGV[2] base interval ms (1000 / requests per second), ARGV[3] burst
-- Returns the wait in ms.
return gcra(KEYS[1], aimd_factor(KEYS[2]), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
