-- Enqueue one job, optionally delayed and optionally idempotent.
-- KEYS[1] stream, KEYS[2] delayed zset, KEYS[3] job hash (used only when delayed),
-- KEYS[4] idempotency key (present only when the job has one)
-- ARGV[1] run-at ms (0 = now), ARGV[2] now ms, ARGV[3] idempotency TTL ms, ARGV[4] job id,
-- ARGV[5..] envelope field/value pairs
-- Returns {1, job id, stream id | "delayed"} for a new job, {0, existing job id} for a duplicate.
if #KEYS >= 4 then
  local ok = redis.call('SET', KEYS[4], ARGV[4], 'NX', 'PX', ARGV[3])
  if not ok then
    return {0, redis.call('GET', KEYS[4]) or ''}
  end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
if tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
  return {1, ARGV[4], 'delayed'}
end
return {1, ARGV[4], redis.call('XADD', KEYS[1], '*', unpack(fields))}
