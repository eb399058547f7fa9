-- Give back what a permit dropped before its call holds: its leases and its reservation.
-- KEYS[1] ledger, KEYS[2] bucket index, KEYS[3] leases, KEYS[4] capped leases
-- ARGV[1] bucket, ARGV[2] cost, ARGV[3] lease id ('' none), ARGV[4] capped lease id ('' none)
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('ZREM', KEYS[4], ARGV[4]) end
ledger_release({ledger = KEYS[1], index = KEYS[2]}, tonumber(ARGV[1]), tonumber(ARGV[2]))
return 1
