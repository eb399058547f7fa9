-- Counts flushes as scheduled, by slot, once they are enqueued: counted only then, a
-- scheduler that dies in between leaves them uncounted, and flushes chain more rather than
-- leave entries behind. A flush takes its slot out when it starts (`take.lua`); one that
-- started before it was counted left its slot in `started_early`, and is not counted.
local K = {
  scheduled = KEYS[1],      -- set: slots of flushes scheduled, not started
  started_early = KEYS[2],  -- set: slots of flushes that started before they were counted
}
local A = {
  first = 1,                -- the slots, then the guard's destination
  last = #ARGV - 1,
}
local added = 0
for i = A.first, A.last do
  if redis.call('SREM', K.started_early, ARGV[i]) == 0 then
    added = added + redis.call('SADD', K.scheduled, ARGV[i])
  end
end
-- Slots whose flushes never start (deleted by hand) stop counting in time.
redis.call('PEXPIRE', K.scheduled, 24 * 3600 * 1000)
return added
