-- Once nothing more is coming (a run read its last page), every waiting entry should be
-- covered by a scheduled flush, partial batches included. Returns how many flushes are
-- missing: the caller schedules them, and counts them once enqueued (`scheduled.lua`), so
-- that flushes finishing together do not each chain one more (those would find nothing).
local K = {
  queue = KEYS[1],      -- hash: buffer key -> entry
  scheduled = KEYS[2],  -- set: slots of flushes scheduled, not started
}
local A = {
  batch = tonumber(ARGV[1]),
}
local want = math.ceil(redis.call('HLEN', K.queue) / A.batch)
local have = redis.call('SCARD', K.scheduled)
if want <= have then return 0 end
return want - have
