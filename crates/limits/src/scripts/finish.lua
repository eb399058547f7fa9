-- How a call went, recorded in one step: its leases go back; its reservation is given back
-- (never sent, or a 429, which the CRM does not charge) or booked at completion (answered,
-- or sent without an answer, which the CRM may have charged); an answer raises the AIMD
-- factor, deposits into the retry budget and reconciles the ledger with what the CRM says the
-- org has left; a 429 halves the factor (at most once a second), sets the fleet's cooldown
-- and counts it in the minute's 429 counter.
local K = {
  ledger = KEYS[1],
  index = KEYS[2],
  aimd = KEYS[3],          -- hash: f (factor), last_dec, streak (429s in a row)
  cooldown = KEYS[4],
  throttled = KEYS[5],     -- string: 429s of the current minute
  retry_budget = KEYS[6],
  leases = KEYS[7],
  capped = KEYS[8],
}
local A = {
  now = tonumber(ARGV[1]),
  outcome = ARGV[2],             -- answered | throttled | not_sent | failed
  bucket = tonumber(ARGV[3]),
  cost = tonumber(ARGV[4]),
  window = tonumber(ARGV[5]),
  bms = tonumber(ARGV[6]),
  lease_id = ARGV[7],            -- '' when none
  capped_id = ARGV[8],
  daily = tonumber(ARGV[9]),
  remaining = tonumber(ARGV[10]), -- what the CRM says is left (-1: it did not say)
  retry_after = tonumber(ARGV[11]), -- ms (0: not given)
  backoff_base = tonumber(ARGV[12]),
  backoff_cap = tonumber(ARGV[13]),
  jitter = tonumber(ARGV[14]),   -- in [0.5, 1]: the share of the backoff to wait
  aimd_step = tonumber(ARGV[15]),
  aimd_min = tonumber(ARGV[16]),
  throttled_ttl = tonumber(ARGV[17]),
  deposit = tonumber(ARGV[18]),
  refill = tonumber(ARGV[19]),
  retry_max = tonumber(ARGV[20]),
}
-- Returns {credits reconciled, factor × 1000, cooldown end ms (0: none)}.

if A.lease_id ~= '' then redis.call('ZREM', K.leases, A.lease_id) end
if A.capped_id ~= '' then redis.call('ZREM', K.capped, A.capped_id) end
local L = {ledger = K.ledger, index = K.index, window = A.window, bms = A.bms}
if A.outcome == 'not_sent' or A.outcome == 'throttled' then
  ledger_release(L, A.bucket, A.cost)
else
  ledger_rebook(L, A.bucket, A.cost, A.now)
end
if A.outcome == 'not_sent' or A.outcome == 'failed' then return {0, 0, 0} end

local added = 0
if A.remaining >= 0 then added = ledger_reconcile(L, A.now, A.daily, A.remaining) end
local f = aimd_factor(K.aimd)
local streak = tonumber(redis.call('HGET', K.aimd, 'streak') or '0')
local until_ms = 0
if A.outcome == 'throttled' then
  -- Without Retry-After: full jitter over base · 2^streak, at most the cap.
  local cd = A.retry_after
  if cd <= 0 then
    cd = math.floor(math.min(A.backoff_cap, A.backoff_base * 2 ^ math.min(streak, 10)) * A.jitter)
  end
  streak = streak + 1
  -- The TTL is set once, when the minute's counter is created.
  if redis.call('INCR', K.throttled) == 1 then redis.call('EXPIRE', K.throttled, A.throttled_ttl) end
  local last = tonumber(redis.call('HGET', K.aimd, 'last_dec') or '0')
  if A.now - last >= 1000 then
    f = math.max(A.aimd_min, f * 0.5)
    redis.call('HSET', K.aimd, 'last_dec', A.now)
  end
  if cd > 0 and cd > redis.call('PTTL', K.cooldown) then
    redis.call('SET', K.cooldown, A.now + cd, 'PX', cd)
  end
  until_ms = tonumber(redis.call('GET', K.cooldown) or '0')
else
  streak = 0
  f = math.min(1, f + A.aimd_step)
  retry_budget({key = K.retry_budget, deposit = A.deposit, refill = A.refill, max = A.retry_max}, A.now, 'deposit')
end
redis.call('HSET', K.aimd, 'f', tostring(f), 'streak', streak)
redis.call('PEXPIRE', K.aimd, 86400000)
return {added, math.floor(f * 1000), until_ms}
