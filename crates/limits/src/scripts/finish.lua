-- How a call went, recorded in one step: its leases go back; its reservation is given back
-- (never sent, or a 429, which the CRM does not charge) or booked at completion (answered,
-- or sent without an answer, which the CRM may have charged); what the answer said of the
-- org's usage updates the others' credits in the ledger; an answer raises the AIMD factor and
-- deposits into the retry budget; a 429 halves the factor (at most once a second), sets the
-- fleet's cooldown and counts it in the minute's 429 counter.
local K = {
  ledger = KEYS[1],
  index = KEYS[2],
  aimd = KEYS[3],          -- hash: f (factor), last_dec, streak (429s in a row)
  cooldown = KEYS[4],
  throttled = KEYS[5],     -- string: 429s of the current minute
  retry_budget = KEYS[6],
  leases = KEYS[7],
  capped = KEYS[8],
  in_flight = KEYS[9],
  account = KEYS[10],
}
local A = {
  now = tonumber(ARGV[1]),
  outcome = ARGV[2],             -- answered | throttled | not_sent | failed
  bucket = tonumber(ARGV[3]),
  cost = tonumber(ARGV[4]),
  window = tonumber(ARGV[5]),
  bms = tonumber(ARGV[6]),
  permit = ARGV[7],              -- the permit's id (its lease's too; '' when not leased)
  leased = ARGV[8] == '1',
  capped_id = ARGV[9],           -- '' when none
  used = tonumber(ARGV[10]),     -- the org's usage the CRM reported (-1: not reported)
  below = tonumber(ARGV[11]),    -- or only that it is below this (-1: not that either)
  retry_after = tonumber(ARGV[12]), -- ms (0: not given)
  backoff_base = tonumber(ARGV[13]),
  backoff_cap = tonumber(ARGV[14]),
  jitter = tonumber(ARGV[15]),   -- in [0.5, 1]: the share of the backoff to wait
  aimd_step = tonumber(ARGV[16]),
  aimd_min = tonumber(ARGV[17]),
  throttled_ttl = tonumber(ARGV[18]),
  deposit = tonumber(ARGV[19]),
  refill = tonumber(ARGV[20]),
  retry_max = tonumber(ARGV[21]),
  max = tonumber(ARGV[22]),      -- the daily allowance the CRM reported (0: not reported)
}
-- Returns {others' credits in the window (-1: no reading), factor × 1000, cooldown end ms (0: none)}.

if A.leased then redis.call('ZREM', K.leases, A.permit) end
if A.capped_id ~= '' then redis.call('ZREM', K.capped, A.capped_id) end
in_flight_remove(K.in_flight, A.permit, A.cost)
local L = {ledger = K.ledger, index = K.index, window = A.window, bms = A.bms}
if A.outcome == 'not_sent' or A.outcome == 'throttled' then
  ledger_release(L, A.bucket, A.cost)
else
  ledger_rebook(L, A.bucket, A.cost, A.now)
end
if A.outcome == 'not_sent' or A.outcome == 'failed' then return {-1, 0, 0} end

local others = -1
if A.used >= 0 then
  others = account_reading(L, {key = K.account, in_flight = K.in_flight}, A.now, A.used, nil)
  if A.max > 0 then redis.call('HSET', K.account, 'max', A.max) end
elseif A.below >= 0 then
  others = account_reading(L, {key = K.account, in_flight = K.in_flight}, A.now, nil, A.below)
end
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
return {others, math.floor(f * 1000), until_ms}
