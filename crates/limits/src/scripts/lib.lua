-- Shared by the limiter's scripts (prepended to each; Redis scripts cannot `require`): one
-- definition of the ledger, the rate, the leases, AIMD and the retry budget, whichever script
-- uses them.

-- The credit ledger: a hash of buckets (`b:<n>`, each bucket_ms wide) plus their running
-- `sum`, and a zset indexing the buckets so old ones are dropped without scanning. A bucket's
-- credits leave the window when the whole bucket is older than the window, i.e. up to one
-- bucket later than the exact moment: the ledger errs on the side of spending less.
-- `L` = {ledger = key, index = key, window = ms, bms = bucket ms}.
local function ledger_span(L)
  return math.floor(L.window / L.bms) + 1          -- buckets that may hold live credits
end
-- Drops the buckets that left the window (a bounded number per call); returns the credits
-- used in the window.
local function ledger_trim(L, now)
  local cur = math.floor(now / L.bms)
  local old = redis.call('ZRANGEBYSCORE', L.index, '-inf', '(' .. (cur - ledger_span(L) + 1), 'LIMIT', 0, 500)
  for _, b in ipairs(old) do
    local v = tonumber(redis.call('HGET', L.ledger, 'b:' .. b) or '0')
    if v ~= 0 then redis.call('HINCRBY', L.ledger, 'sum', -v) end
    redis.call('HDEL', L.ledger, 'b:' .. b)
    redis.call('ZREM', L.index, b)
  end
  return tonumber(redis.call('HGET', L.ledger, 'sum') or '0')
end
local function ledger_add(L, b, n)
  redis.call('HINCRBY', L.ledger, 'b:' .. b, n)
  redis.call('HINCRBY', L.ledger, 'sum', n)
  redis.call('ZADD', L.index, b, b)
  redis.call('PEXPIRE', L.ledger, L.window * 2)
  redis.call('PEXPIRE', L.index, L.window * 2)
end
-- When `need` credits will have left the window: walk the live buckets from the oldest.
local function ledger_freed_at(L, now, need)
  local freed = 0
  for _, b in ipairs(redis.call('ZRANGE', L.index, 0, -1)) do
    freed = freed + tonumber(redis.call('HGET', L.ledger, 'b:' .. b) or '0')
    if freed >= need then return (tonumber(b) + ledger_span(L)) * L.bms end
  end
  return now + L.window
end
-- Gives back a reservation whose request was never sent (unless its bucket left already).
local function ledger_release(L, b, cost)
  if redis.call('ZSCORE', L.index, b) then
    redis.call('HINCRBY', L.ledger, 'b:' .. b, -cost)
    redis.call('HINCRBY', L.ledger, 'sum', -cost)
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
  end
  ledger_add(L, cur, cost)
end
-- The CRM said how much the org has left (counting every integration of the org): makes the
-- ledger's usage at least daily - remaining. The missing credits are booked now, so they
-- leave the window no earlier than they really do. Returns the credits added.
local function ledger_reconcile(L, now, daily, remaining)
  local used = tonumber(redis.call('HGET', L.ledger, 'sum') or '0')
  local missing = (daily - remaining) - used
  if missing <= 0 then return 0 end
  ledger_add(L, math.floor(now / L.bms), missing)
  return missing
end

-- The AIMD factor on rate and concurrency (1: full), in the hash's field `f`.
local function aimd_factor(aimd)
  return tonumber(redis.call('HGET', aimd, 'f') or '1')
end

-- The fleet-wide rate (GCRA, the interval scaled by the AIMD factor): takes the next slot and
-- returns the wait for it, so callers queue fairly instead of retrying in a herd.
local function gcra(rate, f, now, interval, burst)
  local step = interval / f
  local tat = tonumber(redis.call('GET', rate) or '0')
  if tat < now then tat = now end
  local wait = tat - (burst - 1) * step - now
  if wait < 0 then wait = 0 end
  local next_tat = tat + step
  redis.call('SET', rate, string.format('%d', math.ceil(next_tat)), 'PX', math.ceil(next_tat - now) + 1000)
  return math.ceil(wait)
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
