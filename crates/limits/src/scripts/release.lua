-- Give back a reservation whose request was never sent.
-- KEYS[1] ledger hash, KEYS[2] bucket index; ARGV[1] bucket, ARGV[2] cost
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'b:' .. ARGV[1], -tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'sum', -tonumber(ARGV[2]))
  return 1
end
return 0
