-- Everything one CRM call needs, in one step when nothing waits: the operator's pause and the
-- fleet's 429 cooldown are checked, `cost` credits reserved in the rolling window (refused
-- past the cap, with when enough credits leave it), the concurrency leases taken (the
-- destination's, and for a call of a capped class one among at most `cap`), and then the
-- fleet-wide rate's next slot. A call that finds no lease free keeps its reservation and
-- takes no slot: the caller retries the leases alone (`lease.lua`), then the slot
-- (`gcra.lua`).
local K = {
  pause = KEYS[1],         -- hash: the operator's pause of the tenant (reason, since)
  cooldown = KEYS[2],      -- string: end of the fleet's 429 cooldown (ms)
  ledger = KEYS[3],        -- hash: credits per bucket, and their sum
  index = KEYS[4],         -- zset: the ledger's buckets
  feed = KEYS[5],          -- string: change-feed entries waiting (headroom applies only then)
  budget_pause = KEYS[6],  -- hash: the last refusal for budget (for display)
  rate = KEYS[7],          -- string: GCRA theoretical arrival time
  aimd = KEYS[8],          -- hash: AIMD factor
  leases = KEYS[9],        -- zset: the destination's leases
  capped = KEYS[10],       -- zset: the capped class's leases
}
local A = {
  now = tonumber(ARGV[1]),
  cost = tonumber(ARGV[2]),
  allowed = tonumber(ARGV[3]),   -- credits the tenant may use in a window
  window = tonumber(ARGV[4]),
  bms = tonumber(ARGV[5]),
  headroom = tonumber(ARGV[6]),  -- credits a backfill call leaves the change feed
  interval = tonumber(ARGV[7]),  -- ms between calls at full rate
  ttl = tonumber(ARGV[8]),       -- lease TTL ms
  concurrency = tonumber(ARGV[9]),
  cap = tonumber(ARGV[10]),      -- leases of the capped class (0: the call has none)
  lease_id = ARGV[11],
  capped_id = ARGV[12],
}
-- Returns {'paused', reason} | {'cooldown', until} | {'too_large', used} |
-- {'budget', until, used} | {'ok', bucket, rate wait ms (-1: not leased, no slot taken)}.

local reason = redis.call('HGET', K.pause, 'reason')
if reason then return {'paused', reason} end
local cooldown = tonumber(redis.call('GET', K.cooldown) or '0')
if cooldown > A.now then return {'cooldown', cooldown} end

local L = {ledger = K.ledger, index = K.index, window = A.window, bms = A.bms}
local used = ledger_trim(L, A.now)
local headroom = A.headroom
if redis.call('EXISTS', K.feed) == 0 then headroom = 0 end
local limit = A.allowed - headroom
if used + A.cost > limit then
  if A.cost > limit then return {'too_large', used} end
  local resume_at = ledger_freed_at(L, A.now, used + A.cost - limit)
  redis.call('HSET', K.budget_pause, 'until', resume_at, 'used', used, 'allowed', A.allowed)
  redis.call('PEXPIREAT', K.budget_pause, resume_at)
  return {'budget', resume_at, used}
end
local bucket = math.floor(A.now / A.bms)
ledger_add(L, bucket, A.cost)

local f = aimd_factor(K.aimd)
if lease(K.leases, A.now, A.ttl, math.max(1, math.floor(A.concurrency * f)), A.lease_id) == 0 then
  return {'ok', bucket, -1}
end
if A.cap > 0 and lease(K.capped, A.now, A.ttl, A.cap, A.capped_id) == 0 then
  redis.call('ZREM', K.leases, A.lease_id)
  return {'ok', bucket, -1}
end
return {'ok', bucket, gcra(K.rate, f, A.now, A.interval, 1)}
