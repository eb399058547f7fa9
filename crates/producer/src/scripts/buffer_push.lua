-- Push records into a tenant's write buffer, one entry per email (the Zoho match key). The
-- contact with the smallest Nylas id owns an email: a push by a larger id is skipped, a
-- push by the owner (or a smaller id) replaces what waits. Claiming and pushing in one step
-- keeps the owner's write last, whatever order pages run in.
-- KEYS[1] buffer (email -> entry JSON), KEYS[2] sources (email -> `run:<id>` | `feed`),
-- KEYS[3] order zset, KEYS[4] email owners, KEYS[5] pushed counter
-- ARGV[1] now ms, ARGV[2] source, ARGV[3] score base (feed 0, backfill 1e13: feed goes first),
-- ARGV[4] run key prefix (`<tag>:run:`), ARGV[5] feed counter key, ARGV[6..] email, contact id, entry
-- Returns {pushed, skipped as shared, buffer size, pushed counter}.
local function counter(src)
  if src == 'feed' then return ARGV[5] end
  return ARGV[4] .. string.sub(src, 5) .. ':buffered'
end
local pushed, shared = 0, 0
local score = tonumber(ARGV[3]) + tonumber(ARGV[1])
for i = 6, #ARGV, 3 do
  local email, cid, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local owner = redis.call('HGET', KEYS[4], email)
  if owner and owner < cid then
    shared = shared + 1
  else
    if owner ~= cid then redis.call('HSET', KEYS[4], email, cid) end
    local prev = redis.call('HGET', KEYS[2], email)
    if prev then redis.call('DECR', counter(prev)) end
    redis.call('HSET', KEYS[1], email, entry)
    redis.call('HSET', KEYS[2], email, ARGV[2])
    redis.call('ZADD', KEYS[3], 'LT', score, email)
    redis.call('INCR', counter(ARGV[2]))
    pushed = pushed + 1
  end
end
local total = redis.call('INCRBY', KEYS[5], pushed)
return {pushed, shared, redis.call('HLEN', KEYS[1]), total}
