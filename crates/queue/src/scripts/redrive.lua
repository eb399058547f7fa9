-- Move dead letters back into the queue as fresh jobs (an operator's retry). Per dead letter,
-- in one atomic step: the job is added to the stream with its attempts reset, its last error
-- and dead-letter fields dropped and a new enqueue time, then the dead letter is deleted. So
-- a job is never in both places, nor in neither. The job keeps its id (a flush's id names the
-- batch it holds, which the redriven flush resumes), payload, idempotency key and policy.
-- The caller decodes the payload first and passes only the ids of decodable jobs, at most a
-- bounded number per call; an entry without the envelope's fields is refused here as well.
-- KEYS[1] stream, KEYS[2] dead-letter stream
-- ARGV[1] now ms, ARGV[2..] dead-letter ids
-- Returns, per dead-letter id in order: the job's new stream entry id, `missing` (not in the
-- dead-letter stream, e.g. already redriven or purged) or `not_a_job`.
local out = {}
for i = 2, #ARGV do
  local entry = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #entry == 0 then
    out[#out + 1] = 'missing'
  else
    local fields = entry[1][2]
    local job, has = {}, {}
    for j = 1, #fields, 2 do
      local k = fields[j]
      has[k] = true
      if k ~= 'a' and k ~= 'e' and k ~= 'c' and k ~= 't' and k ~= 'src' and k ~= 'dead_at' and k ~= 'queue' then
        job[#job + 1] = k
        job[#job + 1] = fields[j + 1]
      end
    end
    if has['id'] and has['p'] and has['a'] and has['m'] then
      job[#job + 1] = 'a'
      job[#job + 1] = '0'
      job[#job + 1] = 't'
      job[#job + 1] = ARGV[1]
      out[#out + 1] = redis.call('XADD', KEYS[1], '*', unpack(job))
      redis.call('XDEL', KEYS[2], ARGV[i])
    else
      out[#out + 1] = 'not_a_job'
    end
  end
end
return out
