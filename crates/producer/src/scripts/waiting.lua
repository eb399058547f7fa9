-- What waits in a destination's write buffer, and whether its tenant's backfill is still
-- reading pages (then a flush waits for full batches), in one read.
local K = {
  queue = KEYS[1],         -- hash: buffer key -> entry
  feed_waiting = KEYS[2],  -- string: change-feed entries waiting
  refresh = KEYS[3],       -- set: contacts to re-read
  active_run = KEYS[4],    -- string: the tenant's active run id
}
local A = {
  run_prefix = ARGV[1],    -- `<tag>:run:`
}
local reading = 0
local run = redis.call('GET', K.active_run)
if run and redis.call('HGET', A.run_prefix .. run, 'status') == 'running' then reading = 1 end
return {redis.call('HLEN', K.queue), tonumber(redis.call('GET', K.feed_waiting) or '0'),
  redis.call('SCARD', K.refresh), reading}
