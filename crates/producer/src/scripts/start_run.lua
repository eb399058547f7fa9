-- Start a backfill run unless one is active for the tenant.
-- KEYS[1] active-run key, KEYS[2] run hash, KEYS[3] runs zset, KEYS[4] the tenant's live key
-- ARGV[1] run id, ARGV[2] now ms, ARGV[3] active TTL ms, ARGV[4] tenant, ARGV[5] force (0/1),
-- ARGV[6] kind (backfill | reconcile), ARGV[7] dry run (0/1)
-- Returns {1, run id} when started, {0, active run id} when one is running, {-1, ''} when the
-- tenant does not exist (nothing is written for a removed tenant).
if redis.call('EXISTS', KEYS[4]) == 0 then return {-1, ''} end
local active = redis.call('GET', KEYS[1])
if active then return {0, active} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'tenant', ARGV[4], 'status', 'running', 'started_at', ARGV[2],
  'updated_at', ARGV[2], 'force', ARGV[5], 'last_page', -1, 'pages_done', 0, 'kind', ARGV[6], 'dry_run', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {1, ARGV[1]}
