-- Settle one delivered entry that did not simply succeed: requeue it (retry, deferral,
-- release at shutdown) with a rewritten envelope, or move it to the dead-letter stream.
-- The entry's fields are read from the stream itself, so a payload that cannot be decoded
-- is dead-lettered byte for byte.
-- KEYS[1] stream, KEYS[2] delayed zset, KEYS[3] dead-letter stream, KEYS[4] stats hash
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] mode: requeue | dead, ARGV[4] run-at ms,
-- ARGV[5] now ms, ARGV[6] attempts consumed ('' keeps the entry's own), ARGV[7] error / reason text,
-- ARGV[8] dead-letter max length, ARGV[9] stats TTL s, ARGV[10] stats counter,
-- ARGV[11] job hash key prefix, ARGV[12] queue name, ARGV[13] the error's code ('' for none)
-- Returns 1 when settled, 0 when the entry was no longer ours (reclaimed by another worker).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local fields = {}
if #entry > 0 then fields = entry[1][2] end
local out = {}
local job_id = nil
for i = 1, #fields, 2 do
  local k = fields[i]
  if k == 'id' then job_id = fields[i + 1] end
  if k ~= 'e' and k ~= 'c' and not (k == 'a' and ARGV[6] ~= '') then
    out[#out + 1] = k
    out[#out + 1] = fields[i + 1]
  end
end
if ARGV[6] ~= '' then
  out[#out + 1] = 'a'
  out[#out + 1] = ARGV[6]
end
if ARGV[7] ~= '' then
  out[#out + 1] = 'e'
  out[#out + 1] = ARGV[7]
end
if ARGV[13] ~= '' then
  out[#out + 1] = 'c'
  out[#out + 1] = ARGV[13]
end
if ARGV[3] == 'dead' then
  out[#out + 1] = 'src'
  out[#out + 1] = ARGV[2]
  out[#out + 1] = 'dead_at'
  out[#out + 1] = ARGV[5]
  out[#out + 1] = 'queue'
  out[#out + 1] = ARGV[12]
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', unpack(out))
else
  if tonumber(ARGV[4]) > tonumber(ARGV[5]) and job_id then
    local key = ARGV[11] .. job_id
    redis.call('DEL', key)
    redis.call('HSET', key, unpack(out))
    redis.call('ZADD', KEYS[2], ARGV[4], job_id)
  else
    redis.call('XADD', KEYS[1], '*', unpack(out))
  end
end
redis.call('HINCRBY', KEYS[4], ARGV[10], 1)
redis.call('EXPIRE', KEYS[4], ARGV[9])
return 1
