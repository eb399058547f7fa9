-- Trim finished entries from the stream, keeping those that are both younger than the age
-- limit and among the newest `keep` finished entries. Never trims past the oldest entry a
-- worker still holds or the first entry not yet delivered, so only finished jobs go.
-- At most ARGV[5] entries per call (XTRIM MINID ~ ... LIMIT); the caller loops.
-- The cut for the count limit is estimated from the ids (cheap); when the estimate falls
-- inside the first stream node, so `~` would trim nothing however often it ran, the cut is
-- read exactly instead from the oldest entries, at most EXACT_MAX of them per call.
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] now ms, ARGV[3] max age ms (0 = no age limit),
-- ARGV[4] keep count (0 = no count limit), ARGV[5] limit
-- Returns {trimmed, cut id}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function cmp(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if ams ~= bms then return ams < bms and -1 or 1 end
  if aseq ~= bseq then return aseq < bseq and -1 or 1 end
  return 0
end
local EXACT_MAX = 1000
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local last, lag = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local t = {}
  for i = 1, #g, 2 do t[g[i]] = g[i + 1] end
  if t['name'] == ARGV[1] then
    last = t['last-delivered-id']
    lag = t['lag']
  end
end
if not last then return {0, ''} end
local pend = redis.call('XPENDING', KEYS[1], ARGV[1])
local safe = last
if pend[1] > 0 then safe = pend[2] end
local cut = nil
local age = tonumber(ARGV[3])
if age > 0 then
  cut = string.format('%d-0', math.max(0, tonumber(ARGV[2]) - age))
end
local keep = tonumber(ARGV[4])
local excess = 0
if keep > 0 and type(lag) == 'number' then
  -- Finished entries = length - not yet delivered - held by workers (exact: the queue never
  -- deletes from the middle of the stream). The oldest `excess` of them should go; their ids
  -- are estimated by interpolating between the first entry and the trim limit. An uneven
  -- spread of ids makes one pass inexact, and the next pass corrects it.
  local retained = redis.call('XLEN', KEYS[1]) - lag - pend[1]
  excess = retained - keep
  if excess > 0 then
    local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if first[1] and cmp(first[1][1], safe) < 0 then
      local fms, fseq = parse(first[1][1])
      local sms, sseq = parse(safe)
      local c
      if sms > fms then
        c = string.format('%d-0', fms + math.floor((sms - fms) * excess / retained))
      else
        c = string.format('%d-%d', fms, fseq + math.floor((sseq - fseq) * excess / retained))
      end
      if cut == nil or cmp(c, cut) > 0 then cut = c end
    end
  end
end
if cut == nil then return {0, ''} end
if cmp(cut, safe) > 0 then cut = safe end
local n = redis.call('XTRIM', KEYS[1], 'MINID', '~', cut, 'LIMIT', tonumber(ARGV[5]))
if n == 0 and excess > 0 then
  -- Ids spread unevenly (bursts of enqueues): read where the `excess` oldest entries end.
  local oldest = redis.call('XRANGE', KEYS[1], '-', safe, 'COUNT', math.min(excess, EXACT_MAX))
  local last = oldest[#oldest]
  if last and cmp(last[1], cut) > 0 then
    cut = last[1]
    n = redis.call('XTRIM', KEYS[1], 'MINID', '~', cut, 'LIMIT', tonumber(ARGV[5]))
  end
end
return {n, cut}
