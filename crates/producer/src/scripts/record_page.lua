-- Count one page of a run, once: a page job that runs again (after a crash, a retry) does not
-- count its contacts twice. When every page up to the last is counted, the run completes, or
-- drains (`draining`) while its records still wait in the write buffer.
-- KEYS[1] run hash, KEYS[2] counted-pages hash, KEYS[3] active-run key, KEYS[4] run's email set,
-- KEYS[5] the run's buffered-records counter
-- ARGV[1] page, ARGV[2] has next page (0/1), ARGV[3] now ms, ARGV[4] active TTL ms, ARGV[5] run id,
-- ARGV[6..] counter/increment pairs
-- Returns {counted (0/1), status}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'missing'} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[3]) == 0 then return {0, status} end
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
local done = redis.call('HINCRBY', KEYS[1], 'pages_done', 1)
if ARGV[2] == '0' then redis.call('HSET', KEYS[1], 'last_page', ARGV[1]) end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_page') or '-1')
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
if status == 'running' and last >= 0 and done >= last + 1 then
  -- Contacts that mapped to a record, less distinct emails: those merged into a record
  -- another contact of the book owns (exact, whatever order pages ran in).
  local mapped = tonumber(redis.call('HGET', KEYS[1], 'mapped') or '0')
  local shared = mapped - redis.call('SCARD', KEYS[4])
  if shared > 0 then redis.call('HSET', KEYS[1], 'skipped:shared_email', shared) end
  -- UNLINK: a run's email set can hold a whole book; Redis frees it in the background.
  redis.call('UNLINK', KEYS[4])
  if tonumber(redis.call('GET', KEYS[5]) or '0') > 0 then
    redis.call('HSET', KEYS[1], 'status', 'draining')
    if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
    return {1, 'draining'}
  end
  redis.call('DEL', KEYS[5])
  redis.call('HSET', KEYS[1], 'status', 'completed', 'finished_at', ARGV[3])
  if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
  return {1, 'completed'}
end
if status == 'running' and redis.call('GET', KEYS[3]) == ARGV[5] then
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return {1, status}
