-- Give back what a permit dropped before its call holds: its leases, its place among the
-- calls in flight and its reservation.
-- KEYS[1] ledger, KEYS[2] bucket index, KEYS[3] leases, KEYS[4] capped leases, KEYS[5] calls
-- in flight
-- ARGV[1] bucket, ARGV[2] cost, ARGV[3] permit id, ARGV[4] leased (0/1), ARGV[5] capped lease
-- id ('' none)
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], ARGV[3]) end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[4], ARGV[5]) end
in_flight_remove(KEYS[5], ARGV[3], ARGV[2])
ledger_release({ledger = KEYS[1], index = KEYS[2]}, tonumber(ARGV[1]), tonumber(ARGV[2]))
return 1
