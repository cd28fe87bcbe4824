-- job_enqueue: accept a migration command (migrate/finalize/reset) as the new
-- current job, or refuse it, in one atomic step (SPEC 4.2).
--
-- KEYS[1] job:current   (string: id of the current job)
-- KEYS[2] job:wakeup    (list: wake-up signals for idle workers)
-- ARGV[1] the key base `{PREFIX}:` (job keys are `{base}job:{id}` and
--         `{base}job:{id}:output`, as in shared/src/keys.rs; same hash slot)
-- ARGV[2] new job id (uuid v4)
-- ARGV[3] command: migrate | finalize | reset
-- ARGV[4] verbose: 0 | 1
-- ARGV[5] registry fingerprint of the api that accepts the command
-- ARGV[6] the first output line (written at the moment of acceptance)
--
-- Returns {'running', id} when the current job is queued or running,
-- {'not_read', id} when it finished but its final result was never returned,
-- {'accepted', new_id} otherwise.
--
-- Guarantees: never two queued/running jobs; a finished result is never
-- dropped before a caller saw it; accepting a job deletes the previous job's
-- record and output (the output is cleared when a new command is accepted);
-- the new job's output is never empty.

local current = redis.call('GET', KEYS[1])
if current then
  local job = ARGV[1] .. 'job:' .. current
  local state = redis.call('HGET', job, 'state')
  if state == 'queued' or state == 'running' then
    return {'running', current}
  end
  if state == 'finished' and redis.call('HGET', job, 'result_read') ~= '1' then
    return {'not_read', current}
  end
  redis.call('DEL', job, job .. ':output')
end

local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))

local id = ARGV[2]
local job = ARGV[1] .. 'job:' .. id
redis.call('DEL', job, job .. ':output')
redis.call('HSET', job,
  'id', id, 'cmd', ARGV[3], 'verbose', ARGV[4], 'fingerprint', ARGV[5],
  'state', 'queued', 'attempts', '0', 'created_at', now, 'result_read', '0',
  'output_lines', '1')
redis.call('XADD', job .. ':output', '*', 'line', ARGV[6])
redis.call('SET', KEYS[1], id)
redis.call('LPUSH', KEYS[2], id)
redis.call('LTRIM', KEYS[2], 0, 15)
return {'accepted', id}
