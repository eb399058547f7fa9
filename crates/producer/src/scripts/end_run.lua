-- End a running run (failed or cancelled) and free the tenant for a new one.
-- KEYS[1] run hash, KEYS[2] active-run key
-- ARGV[1] new status, ARGV[2] now ms, ARGV[3] run id, ARGV[4] reason
-- Returns 1 when the run was running.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' and status ~= 'draining' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'updated_at', ARGV[2], 'error', ARGV[4])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
