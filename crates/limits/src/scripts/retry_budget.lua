-- Takes a retry from a destination's retry budget (see `retry_budget` in lib.lua).
-- KEYS[1] budget hash (tokens, at); ARGV[1] now ms, ARGV[2] op (deposit|withdraw),
-- ARGV[3] deposit per success, ARGV[4] refill per second, ARGV[5] max tokens
-- Returns 1 when a retry may go now (withdraw), else 0; deposits return 1.
return retry_budget({key = KEYS[1], deposit = tonumber(ARGV[3]), refill = tonumber(ARGV[4]), max = tonumber(ARGV[5])},
  tonumber(ARGV[1]), ARGV[2])
