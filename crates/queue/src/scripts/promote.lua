-- Move due delayed jobs into the stream, at most ARGV[2] per call (the caller loops), so no
-- call ever handles an unbounded number of ids.
-- KEYS[1] delayed zset, KEYS[2] stream
-- ARGV[1] now ms, ARGV[2] limit, ARGV[3] job hash key prefix (same hash tag as KEYS)
-- Returns {promoted, next due ms or -1}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local due = -1
if nxt[2] then due = tonumber(nxt[2]) end
return {#ids, due}
