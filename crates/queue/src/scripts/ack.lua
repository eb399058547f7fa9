-- Acknowledge a batch of successfully processed entries (the caller bounds the batch).
-- KEYS[1] stream, KEYS[2] per-second stats hash
-- ARGV[1] group, ARGV[2] stats TTL seconds, ARGV[3..] entry ids
-- Returns how many entries were still ours (an entry reclaimed by another worker is not).
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'done', n)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return n
