-- job_claim: a worker takes the current job, if it may, and becomes the
-- holder of the global lock with a new fencing token.
--
-- KEYS[1] job:current            (string)
-- KEYS[2] lock                   (hash job_id, worker_id, fencing_token; PEXPIRE = lease)
-- KEYS[3] lock:fencing_counter   (string counter)
-- KEYS[4] metrics                (hash; shared/src/metrics.rs)
-- ARGV[1] the key base `{PREFIX}:` (job keys as in shared/src/keys.rs)
-- ARGV[2] worker id
-- ARGV[3] the worker's registry fingerprint
-- ARGV[4] lease in ms (WORKER_LOCK_TTL_MS)
-- ARGV[5] how many takeovers a job may have before it is abandoned
-- ARGV[6] the job duration histogram's bucket bounds in seconds, space-separated
--
-- Returns one of
--   {'idle'}                       no current job, or it has finished
--   {'busy', id}                   the job is running under a live lease
--   {'refused', id, fingerprint}   registry mismatch: the job was finished with an exception
--   {'abandoned', id}              too many takeovers: finished with an exception
--   {'claimed', id, cmd, verbose, fencing_token, attempts, output_lines}
--
-- Guarantees: a job is claimed only when it is queued, or running with an
-- expired lease (takeover, counted in `attempts`, said in the output); every
-- claim increments the fencing counter, so every earlier holder is fenced out;
-- a job is never run by a worker whose registry differs from the api's that
-- accepted it. A refused job counts as an `exception`, an abandoned one as
-- `abandoned`, and every takeover in `takeovers`, in `metrics`, in the same
-- step.

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

local id = redis.call('GET', KEYS[1])
if not id then return {'idle'} end
local job = ARGV[1] .. 'job:' .. id
local output = job .. ':output'
local state = redis.call('HGET', job, 'state')
if state ~= 'queued' and state ~= 'running' then return {'idle'} end

if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HGET', KEYS[2], 'job_id') == id then
    return {'busy', id}
  end
  -- A lease naming another job cannot outlive that job (finishing deletes
  -- it); if one does, it is stale: replacing it fences its holder out.
end

local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local worker = ARGV[2]

local function append(line)
  redis.call('XADD', output, '*', 'line', line)
  redis.call('HINCRBY', job, 'output_lines', 1)
end

local function finish(exception)
  redis.call('HSET', job, 'state', 'finished', 'finished_at', now, 'exception', exception)
  redis.call('DEL', KEYS[2])
  redis.call('XADD', output, '*', 'control', 'finished')
end

local job_fingerprint = redis.call('HGET', job, 'fingerprint') or ''
if job_fingerprint ~= ARGV[3] then
  local message = 'Migrations fingerprint mismatch: job ' .. id ..
    ' was accepted with migrations fingerprint ' .. job_fingerprint ..
    ' but worker ' .. worker .. ' has migrations fingerprint ' .. ARGV[3] ..
    '; deploy the same MIGRATIONS_FILE to the api and the workers'
  append('Worker ' .. worker .. ' refuses job ' .. id .. ': ' .. message)
  finish(message)
  count_outcome(KEYS[4], job, 'exception', now, ARGV[6]) -- metrics
  return {'refused', id, job_fingerprint}
end

local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
local previous = redis.call('HGET', job, 'worker_id') or ''
if state == 'running' then
  local max_takeovers = tonumber(ARGV[5])
  if attempts >= max_takeovers then
    local message = 'Job ' .. id .. ' abandoned: the lease of its worker (last: ' ..
      previous .. ') expired again after ' .. attempts .. ' takeovers'
    append(message)
    finish(message)
    count_outcome(KEYS[4], job, 'abandoned', now, ARGV[6]) -- metrics
    return {'abandoned', id}
  end
  attempts = attempts + 1
  redis.call('HSET', job, 'attempts', attempts)
  if KEYS[4] then redis.call('HINCRBY', KEYS[4], 'takeovers', 1) end -- metrics
  append('Worker ' .. worker .. ' took the job over from worker ' .. previous ..
    ' (its lease expired; takeover ' .. attempts .. ' of ' .. max_takeovers .. ')')
elseif previous ~= '' then
  append('Worker ' .. worker .. ' continues job ' .. id .. ' (handed back by worker ' .. previous .. ')')
else
  append('Worker ' .. worker .. ' started job ' .. id)
end

local token = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'job_id', id, 'worker_id', worker, 'fencing_token', token)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('HSET', job, 'state', 'running', 'worker_id', worker)
if not redis.call('HGET', job, 'started_at') then
  redis.call('HSET', job, 'started_at', now)
end
return {'claimed', id, redis.call('HGET', job, 'cmd'), redis.call('HGET', job, 'verbose'),
  token, attempts, tonumber(redis.call('HGET', job, 'output_lines'))}
