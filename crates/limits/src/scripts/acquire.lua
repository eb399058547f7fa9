-- Everything one CRM call needs, in one step when nothing waits: the operator's pause and the
-- fleet's 429 cooldown are checked, `cost` credits reserved in the rolling window against the
-- org's whole usage (ours and its other integrations'; refused past the cap, with when enough
-- credits leave it), the concurrency leases taken (the destination's, and for a call of a
-- capped class one among at most `cap`), and then the fleet-wide rate's next slot. A call
-- that finds no lease free keeps its reservation and takes no slot: the caller retries the
-- leases alone (`lease.lua`), then the slot (`rate.lua`).
--
-- When the org's other integrations fill the share and nothing of ours leaves the window
-- soon, one caller at a time (at most every `probe_ms`) is told to probe: a 1-credit call
-- that reads the org's usage again (`force` then skips the cap for that call, which was
-- checked here: the probe fits in the share, or the others alone fill it).
local K = {
  pause = KEYS[1],         -- hash: the operator's pause of the tenant (reason, since)
  cooldown = KEYS[2],      -- string: end of the fleet's 429 cooldown (ms)
  ledger = KEYS[3],        -- hash: credits per bucket, ours and others', and their sums
  index = KEYS[4],         -- zset: the ledger's buckets
  feed = KEYS[5],          -- string: change-feed entries waiting (headroom applies only then)
  budget_pause = KEYS[6],  -- hash: the last refusal for budget (for display)
  rate = KEYS[7],          -- list: times of the latest grants
  aimd = KEYS[8],          -- hash: AIMD factor
  leases = KEYS[9],        -- zset: the destination's leases
  capped = KEYS[10],       -- zset: the capped class's leases
  in_flight = KEYS[11],    -- zset: our calls in flight and their cost
  account = KEYS[12],      -- hash: the last usage reading, the next probe
}
local A = {
  now = tonumber(ARGV[1]),
  cost = tonumber(ARGV[2]),
  allowed = tonumber(ARGV[3]),   -- credits the org may use in a window (share × daily)
  window = tonumber(ARGV[4]),
  bms = tonumber(ARGV[5]),
  headroom = tonumber(ARGV[6]),  -- credits a backfill call leaves the change feed
  rps = tonumber(ARGV[7]),
  ttl = tonumber(ARGV[8]),       -- lease TTL ms
  concurrency = tonumber(ARGV[9]),
  cap = tonumber(ARGV[10]),      -- leases of the capped class (0: the call has none)
  permit = ARGV[11],             -- the permit's id (its lease's too)
  capped_id = ARGV[12],
  force = ARGV[13] == '1',       -- a probe: reserved whatever the cap
  probe_ms = tonumber(ARGV[14]), -- least time between probes (0: this call cannot probe)
  margin = tonumber(ARGV[15]),   -- rate: room for a late send, ms
  ahead = tonumber(ARGV[16]),    -- rate: how far ahead a backfill call may take a slot while
                                 -- change-feed records wait (ms)
}
-- Returns {'paused', reason} | {'cooldown', until} | {'too_large', ours, others} |
-- {'budget', until, ours, others, kind} | {'probe'} |
-- {'ok', bucket, rate wait ms (-1: not leased, no slot taken; -2: leased, no slot taken yet,
-- ask the rate again in the 4th field's ms)}.

local STALE_READING_MS = 1000

local reason = redis.call('HGET', K.pause, 'reason')
if reason then return {'paused', reason} end
local cooldown = tonumber(redis.call('GET', K.cooldown) or '0')
if cooldown > A.now then return {'cooldown', cooldown} end

local L = {ledger = K.ledger, index = K.index, window = A.window, bms = A.bms}
local ours, others = ledger_trim(L, A.now)
local headroom = A.headroom
if redis.call('EXISTS', K.feed) == 0 then headroom = 0 end
local limit = A.allowed - headroom
if not A.force and ours + others + A.cost > limit then
  if A.cost > limit then return {'too_large', ours, others} end
  local resume_at = ledger_freed_at(L, A.now, ours + others + A.cost - limit)
  -- Whose spend keeps us out: ours (it leaves the window at known times), or the org's
  -- other integrations' (booked when seen: they may leave sooner; a probe tells).
  local kind = 'budget'
  if others > 0 and ours + A.cost <= limit then kind = 'account' end
  local until_ms = resume_at
  if kind == 'account' and A.probe_ms > 0 and resume_at > A.now + A.probe_ms then
    -- A probe costs a credit: it must fit in the share, unless the others alone fill it
    -- (then the org is past the share whatever crmsync does); otherwise it waits until
    -- enough of ours leaves for it to fit.
    local fits = others + 1 > limit or ours + others + 1 <= limit
    local probe_at = tonumber(redis.call('HGET', K.account, 'probe_at') or '0')
    if not fits then
      until_ms = math.min(resume_at, ledger_freed_at(L, A.now, ours + others + 1 - limit))
    elseif probe_at <= A.now then
      redis.call('HSET', K.account, 'probe_at', A.now + A.probe_ms)
      redis.call('PEXPIRE', K.account, A.window * 2)
      return {'probe'}
    else
      kind = 'probe'
      until_ms = probe_at
    end
  end
  redis.call('HSET', K.budget_pause, 'until', until_ms, 'used', ours, 'others', others, 'allowed', A.allowed,
    'kind', kind)
  redis.call('PEXPIREAT', K.budget_pause, until_ms)
  return {'budget', until_ms, ours, others, kind}
end
-- Near the cap with the org's other integrations spending, a reading older than a second may
-- miss their latest spend (after a pause, all of it): one call at a time goes until an answer
-- brings a fresh reading; the others wait a moment.
if not A.force and others > 0 and ours + others + A.cost > limit * 0.9 then
  local read_at = tonumber(redis.call('HGET', K.account, 'at') or '0')
  if A.now - read_at > STALE_READING_MS and in_flight_sum(K.in_flight, A.now) > 0 then
    return {'budget', A.now + 250, ours, others, 'account'}
  end
end
local bucket = math.floor(A.now / A.bms)
ledger_add(L, bucket, A.cost)
in_flight_add(K.in_flight, A.now, A.ttl, A.permit, A.cost)

local f = aimd_factor(K.aimd)
if lease(K.leases, A.now, A.ttl, math.max(1, math.floor(A.concurrency * f)), A.permit) == 0 then
  return {'ok', bucket, -1}
end
if A.cap > 0 and lease(K.capped, A.now, A.ttl, A.cap, A.capped_id) == 0 then
  redis.call('ZREM', K.leases, A.permit)
  return {'ok', bucket, -1}
end
local n, window = rate_shape(A.rps, f)
-- `headroom` is set only for a backfill call while change-feed records wait: the feed's calls
-- go first in the rate too.
if headroom > 0 and A.ahead > 0 then
  local later = rate_later(K.rate, n, window, A.margin, A.ahead)
  if later > 0 then return {'ok', bucket, -2, later} end
end
return {'ok', bucket, rate_slot(K.rate, n, window, A.margin)}
