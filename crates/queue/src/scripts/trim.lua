-- Trim finished entries from the stream, keeping those that are both younger than the age
-- limit and among the newest `keep` delivered entries. Never trims past the oldest entry a
-- worker still holds or the first entry not yet delivered, so only finished jobs go.
-- At most ARGV[5] entries per call (XTRIM ... LIMIT); the caller loops.
-- KEYS[1] stream, KEYS[2] checkpoint zset (entries-read -> last delivered id)
-- ARGV[1] group, ARGV[2] now ms, ARGV[3] max age ms (0 = no age limit),
-- ARGV[4] keep count (0 = no count limit), ARGV[5] limit
-- Returns {trimmed, cut id}.
local function cmp(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  if ams ~= bms then return ams < bms and -1 or 1 end
  if aseq ~= bseq then return aseq < bseq and -1 or 1 end
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local last, read = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local t = {}
  for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
  if t['name'] == ARGV[1] then
    last = t['last-delivered-id']
    read = t['entries-read']
  end
end
if not last then return {0, ''} end
local safe = last
local pend = redis.call('XPENDING', KEYS[1], ARGV[1])
if pend[1] > 0 then safe = pend[2] end
local cut = nil
local age = tonumber(ARGV[3])
if age > 0 then
  cut = tostring(math.max(0, tonumber(ARGV[2]) - age)) .. '-0'
end
local keep = tonumber(ARGV[4])
if keep > 0 and type(read) == 'number' then
  redis.call('ZADD', KEYS[2], read, last)
  local target = read - keep
  if target > 0 then
    local c = redis.call('ZREVRANGEBYSCORE', KEYS[2], target, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if c[1] then
      if cut == nil or cmp(c[1], cut) > 0 then cut = c[1] end
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. c[2])
    end
  end
end
if cut == nil then return {0, ''} end
if cmp(cut, safe) > 0 then cut = safe end
local n = redis.call('XTRIM', KEYS[1], 'MINID', '~', cut, 'LIMIT', tonumber(ARGV[5]))
return {n, cut}
