-- Zoho said how many credits the org has left (X-API-CREDITS-REMAINING, counting every
-- integration of the org): make the ledger's usage at least daily - remaining. The missing
-- credits are booked now, so they leave the window no earlier than they really do.
-- KEYS[1] ledger hash, KEYS[2] bucket index; ARGV[1] now ms, ARGV[2] daily, ARGV[3] remaining,
-- ARGV[4] window ms, ARGV[5] bucket ms
-- Returns the credits added.
local used = tonumber(redis.call('HGET', KEYS[1], 'sum') or '0')
local org_used = tonumber(ARGV[2]) - tonumber(ARGV[3])
local missing = org_used - used
if missing <= 0 then return 0 end
local cur = math.floor(tonumber(ARGV[1]) / tonumber(ARGV[5]))
redis.call('HINCRBY', KEYS[1], 'b:' .. cur, missing)
redis.call('HINCRBY', KEYS[1], 'sum', missing)
redis.call('ZADD', KEYS[2], cur, cur)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 2)
return missing
