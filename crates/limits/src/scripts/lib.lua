-- Shared by the limiter's scripts (prepended to each; Redis scripts cannot `require`): one
-- definition of the ledger, the rate, the leases, AIMD and the retry budget, whichever script
-- uses them.

-- The ledger of the org's usage in the rolling window: a hash of buckets (each bucket_ms
-- wide) holding our credits (`b:<n>`, summed in `sum`) and the org's other integrations'
-- (`o:<n>`, summed in `osum`), and a zset indexing the buckets so old ones are dropped without
-- scanning. A bucket's credits leave the window when the whole bucket is older than the
-- window, i.e. up to one bucket later than the exact moment: the ledger errs on the side of
-- spending less. Others' credits are booked when a reading shows them (they were spent then
-- or before: they leave no earlier than booked), and taken out oldest first when a reading
-- shows fewer.
-- Every 60 consecutive buckets also keep their total (`g:<n / 60>`, ours and others'), so
-- finding when enough credits leave reads at most 25 group totals and 60 buckets, not the
-- window's 1,440.
-- `L` = {ledger = key, index = key, window = ms, bms = bucket ms}.
local function ledger_span(L)
  return math.floor(L.window / L.bms) + 1          -- buckets that may hold live credits
end
local function num(v)
  return tonumber(v or '0') or 0
end
-- The totals are kept once a ledger has them all (`gv`): a ledger written before (or by an
-- older version) gets them built once, on its first `ledger_freed_at`.
local GROUP = 60
local function group_add(L, b, n)
  if n ~= 0 and redis.call('HEXISTS', L.ledger, 'gv') == 1 then
    redis.call('HINCRBY', L.ledger, 'g:' .. math.floor(tonumber(b) / GROUP), n)
  end
end
local function groups_build(L)
  local totals = {}
  for _, b in ipairs(redis.call('ZRANGE', L.index, 0, -1)) do
    local v = redis.call('HMGET', L.ledger, 'b:' .. b, 'o:' .. b)
    local g = math.floor(tonumber(b) / GROUP)
    totals[g] = (totals[g] or 0) + num(v[1]) + num(v[2])
  end
  for g, t in pairs(totals) do redis.call('HSET', L.ledger, 'g:' .. g, t) end
  redis.call('HSET', L.ledger, 'gv', 1)
end
-- Drops the buckets that left the window (a bounded number per call); returns the credits
-- used in the window: ours, and others'.
local function ledger_trim(L, now)
  local cur = math.floor(now / L.bms)
  local old = redis.call('ZRANGEBYSCORE', L.index, '-inf', '(' .. (cur - ledger_span(L) + 1), 'LIMIT', 0, 500)
  for _, b in ipairs(old) do
    local v = redis.call('HMGET', L.ledger, 'b:' .. b, 'o:' .. b)
    if num(v[1]) ~= 0 then redis.call('HINCRBY', L.ledger, 'sum', -num(v[1])) end
    if num(v[2]) ~= 0 then redis.call('HINCRBY', L.ledger, 'osum', -num(v[2])) end
    group_add(L, b, -(num(v[1]) + num(v[2])))
    redis.call('HDEL', L.ledger, 'b:' .. b, 'o:' .. b)
    redis.call('ZREM', L.index, b)
    -- A group whose buckets all left goes too.
    local g = math.floor(tonumber(b) / GROUP)
    if #redis.call('ZRANGEBYSCORE', L.index, g * GROUP, g * GROUP + GROUP - 1, 'LIMIT', 0, 1) == 0 then
      redis.call('HDEL', L.ledger, 'g:' .. g)
    end
  end
  local sums = redis.call('HMGET', L.ledger, 'sum', 'osum')
  return num(sums[1]), math.max(0, num(sums[2]))
end
local function ledger_book(L, field, total, b, n)
  redis.call('HINCRBY', L.ledger, field .. b, n)
  redis.call('HINCRBY', L.ledger, total, n)
  group_add(L, b, n)
  redis.call('ZADD', L.index, b, b)
  redis.call('PEXPIRE', L.ledger, L.window * 2)
  redis.call('PEXPIRE', L.index, L.window * 2)
end
local function ledger_add(L, b, n)
  ledger_book(L, 'b:', 'sum', b, n)
end
-- When `need` credits (ours and others') will have left the window: the group totals from the
-- oldest find the group where enough have left, then its buckets the bucket.
local function ledger_freed_at(L, now, need)
  if redis.call('HEXISTS', L.ledger, 'gv') == 0 then groups_build(L) end
  local first = redis.call('ZRANGE', L.index, 0, 0)[1]
  local last = redis.call('ZRANGE', L.index, -1, -1)[1]
  if not first then return now + L.window end
  local g0, g1 = math.floor(tonumber(first) / GROUP), math.floor(tonumber(last) / GROUP)
  local fields = {}
  for g = g0, g1 do fields[#fields + 1] = 'g:' .. g end
  local totals = redis.call('HMGET', L.ledger, unpack(fields))
  local freed = 0
  for i, t in ipairs(totals) do
    local g = g0 + i - 1
    if freed + num(t) >= need then
      for _, b in ipairs(redis.call('ZRANGEBYSCORE', L.index, g * GROUP, g * GROUP + GROUP - 1)) do
        local v = redis.call('HMGET', L.ledger, 'b:' .. b, 'o:' .. b)
        freed = freed + num(v[1]) + num(v[2])
        if freed >= need then return (tonumber(b) + ledger_span(L)) * L.bms end
      end
      return (g * GROUP + GROUP - 1 + ledger_span(L)) * L.bms
    end
    freed = freed + num(t)
  end
  return now + L.window
end
-- Gives back a reservation whose request was never sent (unless its bucket left already).
local function ledger_release(L, b, cost)
  if redis.call('ZSCORE', L.index, b) then
    redis.call('HINCRBY', L.ledger, 'b:' .. b, -cost)
    redis.call('HINCRBY', L.ledger, 'sum', -cost)
    group_add(L, b, -cost)
  end
end
-- Moves a reservation to the bucket of `now`, once the call is done. The CRM charges when it
-- serves the call, which may be well after the reservation (rate and lease waits, latency);
-- booking the credits at completion keeps them in the window at least as long as it does.
local function ledger_rebook(L, old, cost, now)
  local cur = math.floor(now / L.bms)
  if cur == old then return end
  if redis.call('ZSCORE', L.index, old) then
    redis.call('HINCRBY', L.ledger, 'b:' .. old, -cost)
    redis.call('HINCRBY', L.ledger, 'sum', -cost)
    group_add(L, old, -cost)
  end
  ledger_add(L, cur, cost)
end
-- Sets the others' credits in the window to `target`: more are booked now; fewer are taken
-- out oldest first (the oldest leave the CRM's window first).
local function ledger_set_others(L, now, target)
  local _, others = ledger_trim(L, now)
  local delta = target - others
  if delta > 0 then
    ledger_book(L, 'o:', 'osum', math.floor(now / L.bms), delta)
  elseif delta < 0 then
    local drop = -delta
    for _, b in ipairs(redis.call('ZRANGE', L.index, 0, -1)) do
      if drop <= 0 then break end
      local v = num(redis.call('HGET', L.ledger, 'o:' .. b))
      if v > 0 then
        local take = math.min(v, drop)
        redis.call('HINCRBY', L.ledger, 'o:' .. b, -take)
        redis.call('HINCRBY', L.ledger, 'osum', -take)
        group_add(L, b, -take)
        drop = drop - take
      end
    end
  end
end

-- Our calls in flight (`<permit id>:<cost>` -> expiry): their credits are in our ledger from
-- the reservation on, but the CRM charges them only when it serves them.
local function in_flight_add(key, now, ttl, id, cost)
  redis.call('ZADD', key, now + ttl, id .. ':' .. cost)
  redis.call('PEXPIRE', key, ttl * 2)
end
local function in_flight_remove(key, id, cost)
  redis.call('ZREM', key, id .. ':' .. cost)
end
local function in_flight_sum(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    sum = sum + num(string.match(m, ':(%d+)$'))
  end
  return sum
end

-- A reading of the org's usage (all integrations) from the CRM: `used` exactly, or only that
-- it is below `below` (Zoho sends no header under half the day's credits). What the org used
-- beyond our credits the CRM has charged (our ledger minus our calls in flight) is the
-- others': the ledger follows it. Returns the others' credits now.
local function account_reading(L, A, now, used, below)
  local ours, others = ledger_trim(L, now)
  local charged = math.max(0, ours - in_flight_sum(A.in_flight, now))
  if used then
    others = math.max(0, used - charged)
    ledger_set_others(L, now, others)
    redis.call('HSET', A.key, 'at', now, 'org_used', used, 'others', others)
    redis.call('PEXPIRE', A.key, L.window * 2)
  elseif below then
    local bound = math.max(0, below - 1 - charged)
    if others > bound then
      others = bound
      ledger_set_others(L, now, others)
    end
  end
  return others
end

-- The AIMD factor on rate and concurrency (1: full), in the hash's field `f`.
local function aimd_factor(aimd)
  return tonumber(redis.call('HGET', aimd, 'f') or '1')
end

-- The fleet-wide rate, as the CRM counts it: at most `n` calls in any `window` ms. `key`
-- lists the times of the latest grants (Redis's clock, so every machine agrees), newest first;
-- a call goes at the latest of now, the newest grant, and the n-th newest + window + `margin`
-- (room for a late send). Returns the wait in ms.
local function rate_next(key, n, window, margin)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local at = now
  local newest = tonumber(redis.call('LINDEX', key, 0) or '0')
  if newest > at then at = newest end
  if redis.call('LLEN', key) >= n then
    local nth = tonumber(redis.call('LINDEX', key, n - 1))
    if nth + window + margin > at then at = nth + window + margin end
  end
  return at, now
end
-- A backfill call while change-feed records wait takes a slot only within `ahead` ms: slots
-- go in order of asking, so without this a change would queue behind every backfill call
-- already holding a later slot. Returns how long to wait before asking again (0: ask now).
local function rate_later(key, n, window, margin, ahead)
  local at, now = rate_next(key, n, window, margin)
  if at - now > ahead then return at - now - ahead end
  return 0
end
local function rate_slot(key, n, window, margin)
  local at, now = rate_next(key, n, window, margin)
  redis.call('LPUSH', key, at)
  redis.call('LTRIM', key, 0, n - 1)
  redis.call('PEXPIRE', key, at - now + window + margin + 1000)
  return at - now
end
-- The count and window of a rate of `rps` calls per second scaled by the AIMD factor `f`: the
-- whole calls per second, or one call per 1/rps seconds below one a second.
local function rate_shape(rps, f)
  local r = rps * f
  if r >= 1 then return math.floor(r), 1000 end
  return 1, math.ceil(1000 / math.max(r, 0.0001))
end

-- A concurrency lease: at most `limit` at once (expired ones go first). Leases expire, so a
-- killed worker's lease frees itself. Returns 1 when leased, else 0.
local function lease(key, now, ttl, limit, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then return 0 end
  redis.call('ZADD', key, now + ttl, id)
  redis.call('PEXPIRE', key, ttl * 2)
  return 1
end

-- A retry budget (as Finagle's): successes deposit a fraction of a retry, each retry takes a
-- whole one, and a small allowance refills with time, so a failing API gets a bounded number
-- of retries instead of a storm. `R` = {key, deposit, refill (per second), max}.
-- Returns 1 when a retry may go now (withdraw), else 0; deposits return 1.
local function retry_budget(R, now, op)
  local tokens = tonumber(redis.call('HGET', R.key, 'tokens') or R.max)
  local at = tonumber(redis.call('HGET', R.key, 'at') or now)
  tokens = math.min(R.max, tokens + (now - at) / 1000 * R.refill)
  local ok = 1
  if op == 'deposit' then
    tokens = math.min(R.max, tokens + R.deposit)
  elseif tokens >= 1 then
    tokens = tokens - 1
  else
    ok = 0
  end
  redis.call('HSET', R.key, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', R.key, 3600000)
  return ok
end
