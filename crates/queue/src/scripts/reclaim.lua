-- Recover entries whose worker stopped heartbeating for longer than the visibility timeout
-- (killed, partitioned, frozen). Each such delivery counts as an attempt: the job goes back
-- into the stream with its attempt count raised, or to the dead-letter stream once it has
-- used all its attempts, so a job that crashes its worker cannot crash-loop the fleet.
-- At most ARGV[3] entries per call.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] stats hash
-- ARGV[1] group, ARGV[2] min idle ms, ARGV[3] count, ARGV[4] now ms, ARGV[5] dead max len,
-- ARGV[6] stats TTL s, ARGV[7] queue name
-- Returns {examined, requeued, dead}.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[2]), '-', '+', tonumber(ARGV[3]))
local requeued, dead = 0, 0
for _, row in ipairs(pending) do
  local id, consumer = row[1], row[2]
  local entry = redis.call('XRANGE', KEYS[1], id, id)
  redis.call('XACK', KEYS[1], ARGV[1], id)
  if #entry > 0 then
    local fields = entry[1][2]
    local attempts, max, last = 0, 1, ''
    for i = 1, #fields, 2 do
      local k = fields[i]
      if k == 'a' then attempts = tonumber(fields[i + 1]) or 0
      elseif k == 'm' then max = tonumber(fields[i + 1]) or 1
      elseif k == 'e' then last = fields[i + 1] end
    end
    local used = attempts + 1
    local note = 'lease expired: worker ' .. consumer .. ' stopped during attempt ' .. used
    if last ~= '' then note = note .. '; previous error: ' .. last end
    local out = {}
    for i = 1, #fields, 2 do
      local k = fields[i]
      if k ~= 'a' and k ~= 'e' and k ~= 'c' then
        out[#out + 1] = k
        out[#out + 1] = fields[i + 1]
      end
    end
    out[#out + 1] = 'a'
    out[#out + 1] = tostring(used)
    out[#out + 1] = 'c'
    out[#out + 1] = 'LEASE_EXPIRED'
    out[#out + 1] = 'e'
    if used >= max then
      out[#out + 1] = note .. ' (all ' .. max .. ' attempts used)'
      out[#out + 1] = 'src'
      out[#out + 1] = id
      out[#out + 1] = 'dead_at'
      out[#out + 1] = ARGV[4]
      out[#out + 1] = 'queue'
      out[#out + 1] = ARGV[7]
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(out))
      dead = dead + 1
    else
      out[#out + 1] = note
      redis.call('XADD', KEYS[1], '*', unpack(out))
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then redis.call('HINCRBY', KEYS[3], 'reclaimed', requeued) end
if dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead', dead) end
if requeued + dead > 0 then redis.call('EXPIRE', KEYS[3], ARGV[6]) end
return {#pending, requeued, dead}
