-- job_enqueue: accept a migration command (migrate/finalize/reset) as the new
-- current job, or refuse it, in one atomic step (SPEC 4.2).
--
-- KEYS[1] job:current              (string: id of the current job)
-- KEYS[2] job:wakeup               (list: wake-up signals for idle workers)
-- KEYS[3] job:{new id}             (hash)
-- KEYS[4] job:{new id}:output      (stream)
-- KEYS[5] job:{current id}         (hash; only when ARGV[1] is not '')
-- KEYS[6] job:{current id}:output  (stream; only when ARGV[1] is not '')
-- ARGV[1] the current job id the caller read ('' = none; re-checked here)
-- ARGV[2] new job id (uuid v4)
-- ARGV[3] command: migrate | finalize | reset
-- ARGV[4] verbose: 0 | 1
-- ARGV[5] registry fingerprint of the api that accepts the command
-- ARGV[6] the first output line (written at the moment of acceptance)
--
-- Returns {'stale'} when job:current is no longer ARGV[1] (read it again
-- and retry), {'running', id} when the current job is queued or running,
-- {'not_read', id} when it finished but its final result was never returned,
-- {'accepted', new_id} otherwise.
--
-- Guarantees: never two queued/running jobs; a finished result is never
-- dropped before a caller saw it; accepting a job deletes the previous job's
-- record and output (UNLINK: a long output is freed in the background) (the
-- output is cleared when a new command is accepted); the new job's output is
-- never empty.

local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return {'stale'} end
if current ~= '' then
  local state = redis.call('HGET', KEYS[5], 'state')
  if state == 'queued' or state == 'running' then
    return {'running', current}
  end
  if state == 'finished' and redis.call('HGET', KEYS[5], 'result_read') ~= '1' then
    return {'not_read', current}
  end
  redis.call('UNLINK', KEYS[5], KEYS[6])
end

local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))

local id = ARGV[2]
redis.call('UNLINK', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[3],
  'id', id, 'cmd', ARGV[3], 'verbose', ARGV[4], 'fingerprint', ARGV[5],
  'state', 'queued', 'attempts', '0', 'created_at', now, 'result_read', '0',
  'output_lines', '1')
redis.call('XADD', KEYS[4], '*', 'line', ARGV[6])
redis.call('SET', KEYS[1], id)
redis.call('LPUSH', KEYS[2], id)
redis.call('LTRIM', KEYS[2], 0, 15)
return {'accepted', id}
