-- job_finish: finish the running job, fenced.
--
-- KEYS[1] lock              (hash; field fencing_token)
-- KEYS[2] job:{id}          (hash)
-- KEYS[3] job:{id}:output   (stream)
-- KEYS[4] metrics           (hash; shared/src/metrics.rs)
-- ARGV[1] the caller's fencing token
-- ARGV[2] the exception ('' = the command succeeded)
-- ARGV[3] the job duration histogram's bucket bounds in seconds, space-separated
--
-- Returns 1, or 0 when the token is not the lock's (nothing changed).
--
-- Guarantees: only the lock holder finishes the job; the state, exception
-- and finish time change together with the release of the lock; a control
-- entry (field `control` = `finished`) wakes every waiter blocked on the
-- output stream (XREAD BLOCK), so nobody polls; the job's outcome
-- (`ok`/`exception`) and duration are counted in `metrics` in the same step.

-- >>> metrics (shared/src/metrics.rs): count the job's outcome and observe
-- its duration (since its first claim, else since it was accepted) in the
-- histogram bucket of the first bound (seconds, ARGV) it does not exceed
local function count_outcome(metrics, job, result, now, bounds)
  if not metrics then
    return -- no metrics key given: count nothing rather than fail mid-script
  end
  local cmd = redis.call('HGET', job, 'cmd') or 'unknown'
  local since = redis.call('HGET', job, 'started_at') or redis.call('HGET', job, 'created_at') or now
  local ms = math.max(0, tonumber(now) - tonumber(since))
  local bucket = '+Inf'
  for bound in string.gmatch(bounds, '%S+') do
    if ms <= tonumber(bound) * 1000 then
      bucket = bound
      break
    end
  end
  local duration = 'duration:' .. cmd .. ':'
  redis.call('HINCRBY', metrics, 'jobs:' .. cmd .. ':' .. result, 1)
  redis.call('HINCRBY', metrics, duration .. 'le:' .. bucket, 1)
  redis.call('HINCRBY', metrics, duration .. 'count', 1)
  redis.call('HINCRBY', metrics, duration .. 'sum_ms', ms)
end
-- <<< metrics

if redis.call('HGET', KEYS[1], 'fencing_token') ~= ARGV[1] then
  return 0
end
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
redis.call('HSET', KEYS[2], 'state', 'finished', 'finished_at', now)
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'exception', ARGV[2])
end
-- >>> metrics
count_outcome(KEYS[4], KEYS[2], ARGV[2] == '' and 'ok' or 'exception', now, ARGV[3])
-- <<< metrics
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[3], '*', 'control', 'finished')
return 1
