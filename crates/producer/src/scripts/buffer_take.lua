-- Take a batch from a tenant's write buffer for one flush (or resume the flush's batch):
-- entries of one kind (upsert, move or delete: one Zoho call), at most ARGV[2], none unless
-- at least ARGV[3] are available. An entry whose key or email (or former email) is being
-- written by another flush waits, so writes to one record land in order. Batches of flushes
-- whose lease expired (their job is gone) go back to the buffer first, unless replaced.
-- Reads and writes go a chunk or a whole batch per command, not one per entry: this script
-- runs for every 100 records a backfill writes.
-- KEYS[1] buffer, KEYS[2] sources, KEYS[3] order, KEYS[4] in flight (key -> flush, and
-- `@<email>` -> flush for each email whose record is being written), KEYS[5] this flush's
-- batch (key -> source \n value), KEYS[6] flushes zset (id -> lease end), KEYS[7] buffer
-- email index
-- ARGV[1] flush id, ARGV[2] max, ARGV[3] min, ARGV[4] now ms, ARGV[5] lease ms,
-- ARGV[6] batch key prefix, ARGV[7] backfill score base, ARGV[8] run key prefix,
-- ARGV[9] feed counter key
-- Returns the batch as [key, source \n value, ...] (empty: nothing to do).
local now, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local max, min = tonumber(ARGV[2]), tonumber(ARGV[3])
local function counter(src)
  if src == 'feed' then return ARGV[9] end
  return ARGV[8] .. string.sub(src, 5) .. ':buffered'
end
local function parts(v)
  local t = {}
  for part in string.gmatch(v, '([^\t]*)\t?') do
    t[#t + 1] = part
    if #t == 3 then break end
  end
  return t[1], t[2], t[3]
end
-- The in-flight fields an entry holds while written: its key, its email, its former email.
local function lock_fields(key, v)
  local _, email, from = parts(v)
  local f = {key, '@' .. email}
  if from ~= '' then f[3] = '@' .. from end
  return f
end

if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[5], lease * 2)
  return redis.call('HGETALL', KEYS[5])
end
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 5)) do
  local batch = redis.call('HGETALL', ARGV[6] .. stale)
  for i = 1, #batch, 2 do
    local key, v = batch[i], batch[i + 1]
    local nl = string.find(v, '\n', 1, true)
    local src, value = string.sub(v, 1, nl - 1), string.sub(v, nl + 1)
    local fields = lock_fields(key, value)
    local held = redis.call('HMGET', KEYS[4], unpack(fields))
    local mine = {}
    for j, f in ipairs(fields) do
      if held[j] == stale then mine[#mine + 1] = f end
    end
    if #mine > 0 then redis.call('HDEL', KEYS[4], unpack(mine)) end
    if redis.call('HEXISTS', KEYS[1], key) == 0 then
      local _, email = parts(value)
      redis.call('HSET', KEYS[1], key, value)
      redis.call('HSET', KEYS[2], key, src)
      redis.call('HSET', KEYS[7], email, key)
      local base = 0
      if src ~= 'feed' then base = tonumber(ARGV[7]) end
      redis.call('ZADD', KEYS[3], 'LT', base + now, key)
    else
      redis.call('DECR', counter(src))   -- replaced by a newer change: never written
    end
  end
  redis.call('DEL', ARGV[6] .. stale)
  redis.call('ZREM', KEYS[6], stale)
end

-- Scan the oldest waiting entries a chunk at a time: one read of the values and one of the
-- in-flight fields per chunk.
local picked, values, emails, lock, kind, locked = {}, {}, {}, {}, nil, {}
local CHUNK = 100
for c = 0, 499, CHUNK do
  local keys = redis.call('ZRANGE', KEYS[3], c, c + CHUNK - 1)
  if #keys == 0 then break end
  local vals = redis.call('HMGET', KEYS[1], unpack(keys))
  local fields, at, ops, mails, froms = {}, {}, {}, {}, {}
  for i, key in ipairs(keys) do
    at[i] = #fields + 1
    if vals[i] then
      ops[i], mails[i], froms[i] = parts(vals[i])
      fields[#fields + 1] = key
      fields[#fields + 1] = '@' .. mails[i]
      if froms[i] ~= '' then fields[#fields + 1] = '@' .. froms[i] end
    end
  end
  local held = {}
  if #fields > 0 then held = redis.call('HMGET', KEYS[4], unpack(fields)) end
  for i, key in ipairs(keys) do
    if vals[i] then
      local op, email, from = ops[i], mails[i], froms[i]
      local busy = held[at[i]] or held[at[i] + 1] or locked[email]
        or (from ~= '' and (held[at[i] + 2] or locked[from]))
      if not busy and (kind == nil or kind == op) then
        kind = op
        picked[#picked + 1] = key
        values[#values + 1] = vals[i]
        emails[#emails + 1] = email
        locked[email] = true
        for _, f in ipairs({key, '@' .. email}) do
          lock[#lock + 1] = f
          lock[#lock + 1] = ARGV[1]
        end
        if from ~= '' then
          locked[from] = true
          lock[#lock + 1] = '@' .. from
          lock[#lock + 1] = ARGV[1]
        end
        if #picked >= max then break end
      end
    end
  end
  if #picked >= max or #keys < CHUNK then break end
end
if #picked < min then return {} end

local srcs = redis.call('HMGET', KEYS[2], unpack(picked))
local batch = {}
for i, key in ipairs(picked) do
  batch[#batch + 1] = key
  batch[#batch + 1] = srcs[i] .. '\n' .. values[i]
end
redis.call('HSET', KEYS[5], unpack(batch))
redis.call('HSET', KEYS[4], unpack(lock))
-- The email index points at the waiting entry that writes an email: drop what points here.
local idx = redis.call('HMGET', KEYS[7], unpack(emails))
local gone = {}
for i, key in ipairs(picked) do
  if idx[i] == key then gone[#gone + 1] = emails[i] end
end
if #gone > 0 then redis.call('HDEL', KEYS[7], unpack(gone)) end
redis.call('HDEL', KEYS[1], unpack(picked))
redis.call('HDEL', KEYS[2], unpack(picked))
redis.call('ZREM', KEYS[3], unpack(picked))
redis.call('PEXPIRE', KEYS[5], lease * 2)
redis.call('ZADD', KEYS[6], now + lease, ARGV[1])
return batch
