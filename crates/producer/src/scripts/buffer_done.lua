-- Record a written batch, once: its per-run counts, the calls and credits it cost, and the
-- end of each run it drained. A flush that runs again after recording finds nothing to do.
-- KEYS[1] this flush's batch, KEYS[2] in flight (key or `@<email>` -> flush), KEYS[3] flushes
-- zset, KEYS[4] change-feed counters
-- ARGV[1] flush id, ARGV[2] now ms, ARGV[3] run key prefix (`<tag>:run:`), ARGV[4] feed counter,
-- ARGV[5] active-run key, ARGV[6] number of count triples, then (source, field, n) triples
-- Returns the ids of runs this flush completed.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local function counter(src)
  if src == 'feed' then return ARGV[4] end
  return ARGV[3] .. string.sub(src, 5) .. ':buffered'
end
local runs, held_fields, left_by_src = {}, {}, {}
local batch = redis.call('HGETALL', KEYS[1])
for i = 1, #batch, 2 do
  local key, v = batch[i], batch[i + 1]
  local nl = string.find(v, '\n', 1, true)
  local src = string.sub(v, 1, nl - 1)
  held_fields[#held_fields + 1] = key
  local fields = {}
  for part in string.gmatch(string.sub(v, nl + 1), '([^\t]*)\t?') do
    fields[#fields + 1] = part
    if #fields == 3 then break end
  end
  for _, e in ipairs({fields[2], fields[3]}) do
    if e and e ~= '' then held_fields[#held_fields + 1] = '@' .. e end
  end
  left_by_src[src] = (left_by_src[src] or 0) + 1
  if src ~= 'feed' then runs[string.sub(src, 5)] = true end
end
-- Release what this flush holds (one read, one delete), and count the records off their
-- sources (one decrement per source).
if #held_fields > 0 then
  local held = redis.call('HMGET', KEYS[2], unpack(held_fields))
  local mine = {}
  for i, f in ipairs(held_fields) do
    if held[i] == ARGV[1] then mine[#mine + 1] = f end
  end
  if #mine > 0 then redis.call('HDEL', KEYS[2], unpack(mine)) end
end
for src, n in pairs(left_by_src) do
  local left = redis.call('DECRBY', counter(src), n)
  if src == 'feed' and left <= 0 then redis.call('DEL', ARGV[4]) end
end
local n = tonumber(ARGV[6])
for i = 7, 6 + n * 3, 3 do
  local src, field, by = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if src ~= 'feed' then
    redis.call('HINCRBY', ARGV[3] .. string.sub(src, 5), field, by)
  else
    redis.call('HINCRBY', KEYS[4], field, by)
  end
end
local completed = {}
for run, _ in pairs(runs) do
  local key = ARGV[3] .. run
  redis.call('HSET', key, 'updated_at', ARGV[2])
  local left = tonumber(redis.call('GET', key .. ':buffered') or '0')
  if left <= 0 and redis.call('HGET', key, 'status') == 'draining' then
    redis.call('HSET', key, 'status', 'completed', 'finished_at', ARGV[2])
    redis.call('DEL', key .. ':buffered')
    if redis.call('GET', ARGV[5]) == run then redis.call('DEL', ARGV[5]) end
    completed[#completed + 1] = run
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return completed
